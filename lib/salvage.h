// Salvage: reading the records of RocksDB's files without RocksDB, around
// damage. Repair (repair.h) reads a damaged store through these functions:
// RocksDB itself gives up on a whole table file for one bad block, and on a
// write-ahead log at its first bad record.
//
// Table files (RocksDB's block-based format, doc/format.md §12): the data
// blocks are found through the file's index when its footer, properties and
// index read; otherwise by walking the file from its start, block after
// block, each block recognized by its structure and its checksum (a damaged
// block is skipped by scanning for the next one that checks). Every block's
// checksum is verified before any of its records is used; a block that fails
// costs only the records in it.
//
// Write-ahead logs (32 KiB blocks of checksummed fragments): every write
// batch whose fragments all check is delivered; a damaged fragment costs only
// the batch it belongs to (past damage, the next fragment is found by
// scanning for one whose checksum checks).
//
// Nothing here trusts a length it reads: every offset is checked against the
// bytes there are, and no block larger than kMaxSalvageBlockBytes is read.

#ifndef CKPTDB_LIB_SALVAGE_H_
#define CKPTDB_LIB_SALVAGE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ckptdb/status.h"

namespace ckptdb {

// No block of a table file, and no batch of a log, is read if larger (a
// manifest of a million leaves is tens of megabytes; a chunk at most 64 MiB).
inline constexpr uint64_t kMaxSalvageBlockBytes = uint64_t{256} << 20;

// One version of one key.
struct SalvagedRecord {
  std::string_view key;    // the user key
  uint64_t sequence = 0;   // RocksDB's sequence number (0 once compacted to the bottom)
  bool deletion = false;   // a tombstone: the key has no value from `sequence` on
  std::string_view value;  // valid only during the call
  // Table files: the column family the file's properties name, once read
  // ("" before, and when they cannot be read). Logs: "".
  std::string_view family;
  // The bytes of the file the record was read from, [begin, end): its block
  // with the trailer (tables), its batch's fragments (logs). Damage outside
  // them does not cost the record.
  uint64_t extent_begin = 0;
  uint64_t extent_end = 0;
};

// Bytes to salvage from: a file (read with pread, a block at a time) or
// memory (tests and fuzzers).
class SalvageSource {
 public:
  virtual ~SalvageSource() = default;
  virtual uint64_t size() const = 0;
  // Reads `length` bytes at `offset` into `out`; false when they are not all
  // there or cannot be read.
  virtual bool Read(uint64_t offset, uint64_t length, std::string* out) const = 0;
  // The file's name, for messages.
  virtual const std::string& name() const = 0;

  static Result<std::unique_ptr<SalvageSource>> OpenFile(const std::string& path);
  static std::unique_ptr<SalvageSource> FromBytes(std::string bytes, std::string name);
};

// What the salvage of a table file found.
struct TableSalvage {
  std::string family;  // the column family named in its properties; "" if unreadable
  std::optional<uint32_t> family_id;
  bool intact = false;  // footer, properties, index and every data block checked
  uint64_t blocks = 0;  // data blocks read
  uint64_t records = 0;
  std::vector<std::string> damage;  // one line per damaged part, naming its bytes
};

// Calls `visit` for every record of every data block of the table file that
// checks, in file order (within a file, key order). A non-OK Status from
// `visit` stops the salvage and is returned.
Result<TableSalvage> SalvageTable(const SalvageSource& source,
                                  const std::function<Status(const SalvagedRecord&)>& visit);

// One record of a log's write batch.
struct LoggedRecord {
  uint32_t family_id = 0;
  SalvagedRecord record;
};

// What the salvage of a log found.
struct LogSalvage {
  uint64_t batches = 0;
  std::vector<std::string> damage;
};

// Calls `visit` with the records of every write batch of the log whose
// fragments all check, in log order; records that only delete ranges or
// carry no key (RocksDB's own markers) are left out.
Result<LogSalvage> SalvageLog(const SalvageSource& source,
                              const std::function<Status(const std::vector<LoggedRecord>&)>& visit);

}  // namespace ckptdb

#endif  // CKPTDB_LIB_SALVAGE_H_
