// The files a store keeps beside RocksDB's (doc/format.md §1): how a
// workdir is classified before anything in it is touched, the checks of
// RocksDB's metadata files made before RocksDB opens them, the identity file
// CKPTDB, readers' scratch folders, and the copies repair keeps.
#ifndef CKPTDB_LIB_STORE_DIRECTORY_H_
#define CKPTDB_LIB_STORE_DIRECTORY_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>

#include "ckptdb/status.h"
#include "step_holds.h"

namespace ckptdb {

// Files of ckptdb's own beside RocksDB's (doc/format.md §1).
inline constexpr char kIdentityFile[] = "CKPTDB";
inline constexpr char kCreatingMarker[] = "CKPTDB.creating";
inline constexpr char kWriterLockFile[] = "CKPTDB.lock";
inline constexpr char kReadersLockFile[] = "CKPTDB.readers";
// Left by `ckpt-inspect repair`: WORKDIR/repair-<UTC time>[-N]/ (repair.h).
inline constexpr char kRepairDirPrefix[] = "repair-";
// In a repair folder while repair moves the rebuilt store's files in.
inline constexpr char kRepairSwapMarker[] = "SWAP";

// "; nothing was changed" and how to find and salvage what is damaged: the
// tail of every message that refuses a damaged store.
std::string SalvageHint(const std::string& dir);

// What a workdir holds, judged from its file names alone.
enum class DirKind {
  kMissing,   // no such directory
  kEmpty,     // nothing but ckptdb's writer lock file
  kCreating,  // a store whose creation has not finished (the marker is there)
  kDatabase,  // a RocksDB database: a store, damaged or not, or someone else's
  kForeign,   // other files
};

// `table_files`, if given, gets the number of table files (*.sst) seen.
Result<DirKind> ClassifyDirectory(const std::string& dir, size_t* table_files = nullptr);

// Whether `name` is a file of the RocksDB database (CURRENT, IDENTITY,
// MANIFEST-*, OPTIONS-*, *.log, *.sst) or CKPTDB.
bool IsDatabaseFileName(const std::string& name);

// Corruption when a repair of `dir` stopped while it swapped the rebuilt
// store's files in (a repair folder holds the swap marker): the store is
// then half old, half new, and only `ckpt-inspect repair` finishes it.
Status CheckNoInterruptedRepair(const std::string& dir);

// The stores this process has open for writing, by canonical path: a flock
// cannot tell another Checkpointer of this process from another process,
// but the error should. Released with the claim.
class WriterClaim {
 public:
  WriterClaim() = default;
  explicit WriterClaim(std::string path) : path_(std::move(path)) {}
  WriterClaim(WriterClaim&& other) noexcept : path_(std::exchange(other.path_, {})) {}
  WriterClaim& operator=(WriterClaim&& other) noexcept;
  ~WriterClaim() { Release(); }
  void Release();

 private:
  std::string path_;  // "" when released
};
// Busy when this process already has `dir` open for writing (or repairs it).
Result<WriterClaim> ClaimWriterInThisProcess(const std::string& dir);

// CKPTDB.readers: every reader holds a shared flock on it while it has the
// store open, so that repair, which rebuilds the store's files, can keep
// them out (and refuse while one is there). A reader that cannot create the
// file (no write access to an older store's folder) reads unlocked.
// Busy while a repair runs.
Result<LockedFile> LockAsReader(const std::string& dir);
// Repair: the exclusive lock; Busy while a reader has the store open.
Result<LockedFile> LockOutReaders(const std::string& dir);

// The checks of RocksDB's metadata files made before RocksDB opens them, so
// that a damaged store is refused before anything in it can change. A store
// (CKPTDB present) with damaged metadata is Corruption; a RocksDB database
// that never was a store is FailedPrecondition.
Status CheckDatabaseFiles(const std::string& dir, bool has_identity);

// The latest OPTIONS file must parse and describe this store's families.
// RocksDB never reads its OPTIONS files back (ckptdb passes the options), but
// a writer's open replaces them: a damaged one is refused there, not dropped
// (Corruption), and verify reports it. Readers, which change no file, skip
// the parse (a millisecond of their 4-6 ms open).
Status CheckOptionsFile(const std::string& dir);

// CKPTDB: the store's identity and a copy of its metadata (doc/format.md
// §1), so that neither another store's files nor the loss of the table file
// holding the metadata can go unnoticed or lose the store.
struct StoreIdentity {
  uint32_t format_version = 0;
  std::string store_id;  // 16 bytes
  std::string secret;    // ChunkHasher::kSecretSize bytes
};

// The text CKPTDB holds for `identity`.
std::string IdentityText(const StoreIdentity& identity);

// The identity recorded in CKPTDB; nullopt when the file is absent.
Result<std::optional<StoreIdentity>> ReadIdentityFile(const std::string& dir);

// Readers' private RocksDB files (a secondary instance's) live in
// TMPDIR/ckptdb-readers-UID/ckptdb-reader-XXXXXX (in TMPDIR itself when
// that parent is not this user's alone) beside a lock its reader holds for
// its lifetime; the folder is removed by Store::Rep::CloseDb, or by a later
// reader's open once the lock is free (the reader was killed).
// A new reader folder and the lock that marks it alive. The lock file is
// locked under a temporary name and then renamed into place, so that the
// name the sweep looks at is never unlocked while its reader lives.
Result<std::pair<std::string, LockedFile>> NewReaderDir(const std::string& store_dir);

}  // namespace ckptdb

#endif  // CKPTDB_LIB_STORE_DIRECTORY_H_
