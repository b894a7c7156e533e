// Repair: brings a damaged store back to a consistent, writable state,
// keeping every step whose manifest and chunks can still be read intact.
//
// On a healthy store (it opens, every step verifies and every indexed chunk
// reads back intact) it changes nothing. Otherwise it salvages and rebuilds:
//
//   1. Salvage: every record that can be read from every table file and
//      write-ahead log of the store (salvage.h: around bad blocks and
//      damaged log records, RocksDB not involved), the newest version of
//      each key winning; log batches of another store are left out.
//   2. Rebuild, in WORKDIR/repair-<UTC time>/rebuilt/: a new store with the
//      same identity; the intact chunk files linked in as they are, the
//      readable chunks of the others copied into new chunk files; every chunk
//      indexed, then read back and re-hashed (delta chains included), and
//      those that fail removed from the index; the manifests of the steps
//      whose every chunk passed. Nothing in the store changes in this phase:
//      a failure (no space, say) leaves it as it was.
//   3. Swap (repair_files.h): the old database's files move to
//      repair-<time>/old/, the rebuilt ones in; a swap a crash interrupted is
//      finished by the next repair, and refused by every open until then.
//   4. Only the newest kKeptRepairDirs repair folders are kept.
//
// Afterwards every indexed chunk is intact (so no later save deduplicates
// onto a damaged chunk or uses one as a delta base), every chunk file lies in
// the bottom level (so GC can drop it), and readers and writers open it as
// any store. Repair holds the writer lock and keeps readers out throughout.

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
  bool changed = false;    // false: the store was healthy and was not touched
  std::string backup_dir;  // the repair folder ("" when unchanged)
  std::vector<std::string> findings;  // what was wrong, one line each
  std::vector<int64_t> kept_steps;
  std::vector<std::pair<int64_t, std::string>> dropped_steps;  // step, why
  uint64_t chunks_kept = 0;     // indexed, each read back and re-hashed
  uint64_t chunks_dropped = 0;  // found, but damaged (or built on a damaged base)
  uint64_t chunk_files_carried = 0;    // intact chunk files linked in as they were
  uint64_t chunk_files_rewritten = 0;  // damaged ones whose readable chunks were copied
  std::vector<std::string> backups_removed;  // older repair folders removed
  // Whether anything is left: a repair that had to drop every step salvaged
  // nothing.
  bool salvaged_nothing() const { return kept_steps.empty() && !dropped_steps.empty(); }
};

// Repairs the store in `workdir`. NotFound when there is no store (nothing
// is created), FailedPrecondition for a directory that holds something else,
// Busy while a writer or a reader has it open (nothing changed), NotSupported
// for a store of a newer format; another error when repair itself failed
// (the store is then as it was, or, after a failure within the swap, refused
// by every open until a repair finishes the swap).
Result<RepairReport> RepairStore(const std::string& workdir, rocksdb::Env* env = nullptr);

}  // namespace ckptdb

#endif  // CKPTDB_LIB_REPAIR_H_
