// Repair: brings a damaged store back to a consistent, writable state,
// keeping every step whose chunks are all present and intact.
//
// On a healthy store it changes nothing. Otherwise it first copies RocksDB's
// metadata files (CURRENT, MANIFEST-*, OPTIONS-*, *.log, IDENTITY, CKPTDB)
// into WORKDIR/repair-<UTC time>/; if the store cannot be opened, it
// rebuilds RocksDB's metadata from the files present (RocksDB's RepairDB;
// files RocksDB cannot use move into the same folder); then it points the
// chunk index at every referenced chunk the chunk files hold; verifies
// every step, re-hashing every chunk, deletes the manifests of the steps it
// cannot restore completely, and removes from the chunk index every chunk
// that is missing or damaged, so no later save deduplicates onto one.
// Nothing else is deleted: unreferenced chunks are left to GC.

#ifndef CKPTDB_LIB_REPAIR_H_
#define CKPTDB_LIB_REPAIR_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "ckptdb/status.h"

namespace rocksdb {
class Env;
}  // namespace rocksdb

namespace ckptdb {

struct RepairReport {
  bool changed = false;     // false: the store was healthy and was not touched
  bool rebuilt = false;     // RocksDB's metadata was rebuilt from the files present
  std::string backup_dir;   // where the replaced files went ("" when unchanged)
  std::vector<std::string> findings;  // what was wrong, one line each
  std::vector<int64_t> kept_steps;
  std::vector<std::pair<int64_t, std::string>> dropped_steps;  // step, why
  uint64_t index_entries_removed = 0;
  // Index entries pointed (back) at chunks the chunk files hold.
  uint64_t index_entries_restored = 0;
  // Whether anything is left: a repair that had to drop every step salvaged
  // nothing.
  bool salvaged_nothing() const { return kept_steps.empty() && !dropped_steps.empty(); }
};

// Repairs the store in `workdir` (no writer may have it open: Busy).
// FailedPrecondition for a directory that is not a store, NotFound for none;
// another error when the store could not be brought back (its files are then
// as the rebuild left them, the originals in the backup folder).
Result<RepairReport> RepairStore(const std::string& workdir, rocksdb::Env* env = nullptr);

}  // namespace ckptdb

#endif  // CKPTDB_LIB_REPAIR_H_
