#include "store.h"

#include <rocksdb/convenience.h>
#include <rocksdb/db.h>
#include <rocksdb/listener.h>
#include <rocksdb/options.h>
#include <rocksdb/sst_file_writer.h>
#include <rocksdb/table.h>
#include <rocksdb/utilities/options_util.h>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>
#include <set>
#include <sstream>

#include "coding.h"
#include "file_util.h"
#include "recycling_allocator.h"
#include "step_holds.h"

namespace ckptdb {
namespace fs = std::filesystem;

namespace {

constexpr char kFormatVersionKey[] = "ckptdb.format_version";
constexpr char kHashSecretKey[] = "ckptdb.hash_secret";
constexpr char kStoreIdKey[] = "ckptdb.store_id";
constexpr char kNextGenerationKey[] = "ckptdb.next_generation";

constexpr char kChunksFamily[] = "chunks";
constexpr char kIndexFamily[] = "chunk_index";
constexpr char kManifestsFamily[] = "manifests";
constexpr size_t kChunkKeySize = 8 + 16;
constexpr size_t kIndexValueSize = 16;
// Generations stay far below 2^64 so that G + 1 never wraps.
constexpr uint64_t kMaxGeneration = uint64_t{1} << 62;

// The one seam where RocksDB errors become ckptdb errors.
Status FromRocksDb(const rocksdb::Status& s, std::string_view context) {
  if (s.ok()) return Status::OK();
  std::string message = std::string(context) + ": " + s.ToString();
  if (s.IsNotFound()) return Status::NotFound(message);
  if (s.IsCorruption()) return Status::Corruption(message);
  if (s.IsNotSupported()) return Status::NotSupported(message);
  if (s.IsInvalidArgument()) return Status::InvalidArgument(message);
  return Status::IOError(message);
}

std::string StepKey(int64_t step) {
  std::string key;
  AppendBigEndian64(&key, static_cast<uint64_t>(step));
  return key;
}

std::string ChunkKey(uint64_t generation, const ChunkDigest& digest) {
  std::string key;
  key.reserve(kChunkKeySize);
  AppendBigEndian64(&key, generation);
  key += digest.ToBytes();
  return key;
}

std::string EncodeLocation(const ChunkLocation& location) {
  std::string value;
  value.reserve(kIndexValueSize);
  AppendLittleEndian(&value, location.generation, 8);
  AppendLittleEndian(&value, location.raw_size, 4);
  AppendLittleEndian(&value, location.stored_size, 4);
  return value;
}

std::string GenerationStart(uint64_t generation) {
  std::string key;
  AppendBigEndian64(&key, generation);
  return key;
}

rocksdb::ColumnFamilyOptions ChunksFamilyOptions() {
  rocksdb::ColumnFamilyOptions options;
  // Chunks are compressed by ckptdb (chunk_codec.h); RocksDB must not try again.
  options.compression = rocksdb::kNoCompression;
  options.bottommost_compression = rocksdb::kNoCompression;
  // Chunk data only arrives in ingested files, one generation each, in the
  // bottom level; ckptdb's GC decides when to rewrite one. RocksDB must never
  // compact them together (that would copy live data, and merge generations
  // GC could then not drop whole): no automatic compaction, no TTL or
  // periodic compaction (whose defaults would otherwise kick in).
  options.disable_auto_compactions = true;
  options.ttl = 0;
  options.periodic_compaction_seconds = 0;
  rocksdb::BlockBasedTableOptions table;
  // Megabyte values would churn a block cache: chunk reads do not fill it
  // (fill_cache = false) and the OS page cache serves them. The cache is
  // there for its allocator, which RocksDB uses for every block it reads.
  rocksdb::LRUCacheOptions cache;
  cache.capacity = 1u << 20;
  // Keeps the buffers of 16 reads of 4 MiB chunks in flight at once.
  cache.memory_allocator = std::make_shared<RecyclingAllocator>(size_t{64} << 20);
  table.block_cache = rocksdb::NewLRUCache(cache);
  options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  return options;
}

std::vector<rocksdb::ColumnFamilyDescriptor> FamilyDescriptors() {
  return {
      {rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions()},
      {kChunksFamily, ChunksFamilyOptions()},
      {kIndexFamily, rocksdb::ColumnFamilyOptions()},
      {kManifestsFamily, rocksdb::ColumnFamilyOptions()},
  };
}

// Files of ckptdb's own beside RocksDB's (doc/format.md §1).
constexpr char kIdentityFile[] = "CKPTDB";
constexpr char kCreatingMarker[] = "CKPTDB.creating";
constexpr char kWriterLockFile[] = "CKPTDB.lock";
constexpr char kIdentityHeader[] = "ckptdb store\n";

std::string SalvageHint(const std::string& dir) {
  return "; nothing was changed. `ckpt-inspect verify " + dir +
         "` names what is damaged; `ckpt-inspect repair " + dir +
         "` salvages every intact step (doc/ckpt-inspect.md)";
}

// What a workdir holds, judged from its file names alone.
enum class DirKind {
  kMissing,   // no such directory
  kEmpty,     // nothing but ckptdb's writer lock file
  kCreating,  // a store whose creation has not finished (the marker is there)
  kDatabase,  // a RocksDB database: a store, damaged or not, or someone else's
  kForeign,   // other files
};

// The metadata files of a store (RocksDB's and CKPTDB): what a rebuild
// replaces and keeps copies of.
bool IsMetadataFileName(const std::string& name) {
  return name == "CURRENT" || name == "IDENTITY" || name == kIdentityFile ||
         name.starts_with("MANIFEST-") || name.starts_with("OPTIONS-") || name.ends_with(".log");
}

bool IsDatabaseFileName(const std::string& name) {
  return IsMetadataFileName(name) || name.ends_with(".sst");
}

Result<DirKind> ClassifyDirectory(const std::string& dir) {
  std::error_code ec;
  const fs::file_status status = fs::status(dir, ec);
  if (ec == std::errc::no_such_file_or_directory) return DirKind::kMissing;
  if (ec) return Status::IOError("cannot access " + dir + ": " + ec.message());
  if (!fs::is_directory(status)) {
    return Status::FailedPrecondition(dir + " is not a directory; nothing was changed");
  }
  bool empty = true;
  bool creating = false;
  bool database = false;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name == kWriterLockFile) continue;
    empty = false;
    creating = creating || name == kCreatingMarker;
    database = database || IsDatabaseFileName(name);
  }
  if (ec) return Status::IOError("cannot list " + dir + ": " + ec.message());
  if (creating) return DirKind::kCreating;
  if (empty) return DirKind::kEmpty;
  return database ? DirKind::kDatabase : DirKind::kForeign;
}

// The MANIFEST file CURRENT names, for messages ("CURRENT" if unreadable).
std::string CurrentManifest(const std::string& dir) {
  std::ifstream current(fs::path(dir) / "CURRENT");
  std::string name;
  if (!std::getline(current, name) || name.empty()) return (fs::path(dir) / "CURRENT").string();
  return (fs::path(dir) / name).string();
}

std::vector<std::string> ExpectedFamilies() {
  std::vector<std::string> expected = {rocksdb::kDefaultColumnFamilyName, kChunksFamily,
                                       kIndexFamily, kManifestsFamily};
  std::sort(expected.begin(), expected.end());
  return expected;
}

std::string JoinNames(const std::vector<std::string>& names) {
  std::string joined;
  for (const std::string& name : names) joined += (joined.empty() ? "" : ", ") + name;
  return "{" + joined + "}";
}

// The newest OPTIONS-N file of `dir`, or "" when there is none.
Result<std::string> LatestOptionsFile(const std::string& dir) {
  std::error_code ec;
  std::string latest;
  uint64_t latest_number = 0;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (!name.starts_with("OPTIONS-") || name.ends_with(".dbtmp")) continue;
    const std::string digits = name.substr(8);
    uint64_t number = 0;
    const auto [end_of_number, error] =
        std::from_chars(digits.data(), digits.data() + digits.size(), number);
    if (error != std::errc() || end_of_number != digits.data() + digits.size()) continue;
    if (latest.empty() || number > latest_number) {
      latest = it->path().string();
      latest_number = number;
    }
  }
  if (ec) return Status::IOError("cannot list " + dir + ": " + ec.message());
  return latest;
}

// The checks of RocksDB's metadata files made before RocksDB opens them, so
// that a damaged store is refused before anything in it can change. A store
// (CKPTDB present) with damaged metadata is Corruption; a RocksDB database
// that never was a store is FailedPrecondition.
Status CheckDatabaseFiles(const std::string& dir, bool has_identity) {
  const std::string not_a_store = dir + " is a RocksDB database but not a ckptdb store; nothing was changed";
  std::error_code ec;
  if (!fs::exists(fs::path(dir) / "CURRENT", ec)) {
    if (ec) return Status::IOError("cannot access " + dir + "/CURRENT: " + ec.message());
    if (!has_identity) {
      return Status::FailedPrecondition(
          dir + " is not a ckptdb store (it holds other files); nothing was changed");
    }
    return Status::Corruption(dir + "/CURRENT is missing" + SalvageHint(dir));
  }
  std::vector<std::string> families;
  rocksdb::Status listed = rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), dir, &families);
  if (!listed.ok()) {
    if (!has_identity && !listed.IsCorruption()) return FromRocksDb(listed, "reading " + dir);
    return Status::Corruption("cannot read " + dir + "/CURRENT or the MANIFEST it names (" +
                              CurrentManifest(dir) + "): " + listed.ToString() + SalvageHint(dir));
  }
  std::sort(families.begin(), families.end());
  if (families != ExpectedFamilies()) {
    if (!has_identity) return Status::FailedPrecondition(not_a_store);
    return Status::Corruption(CurrentManifest(dir) + " lists the column families " +
                              JoinNames(families) + " where a ckptdb store has " +
                              JoinNames(ExpectedFamilies()) +
                              ": it is damaged or belongs to another database" + SalvageHint(dir));
  }
  // RocksDB never reads its OPTIONS files back (ckptdb passes the options),
  // but a writer would replace them: a damaged one is refused, not dropped.
  Result<std::string> options_file = LatestOptionsFile(dir);
  if (!options_file.ok()) return options_file.status();
  if (!options_file->empty()) {
    rocksdb::ConfigOptions config;
    config.ignore_unknown_options = true;
    config.ignore_unsupported_options = true;
    rocksdb::DBOptions loaded;
    std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
    rocksdb::Status parsed =
        rocksdb::LoadOptionsFromFile(config, *options_file, &loaded, &descriptors);
    std::vector<std::string> named;
    for (const rocksdb::ColumnFamilyDescriptor& descriptor : descriptors) {
      named.push_back(descriptor.name);
    }
    std::sort(named.begin(), named.end());
    if (!parsed.ok()) {
      return Status::Corruption(*options_file + " is damaged (" + parsed.ToString() + ")" +
                                SalvageHint(dir));
    }
    if (named != ExpectedFamilies()) {
      return Status::Corruption(*options_file + " describes the column families " +
                                JoinNames(named) + ", not this store's" + SalvageHint(dir));
    }
  }
  return Status::OK();
}

// CKPTDB: the store's identity and a copy of its metadata (doc/format.md
// §1), so that neither another store's files nor the loss of the table file
// holding the metadata can go unnoticed or lose the store.
struct StoreIdentity {
  uint32_t format_version = 0;
  std::string store_id;  // 16 bytes
  std::string secret;    // ChunkHasher::kSecretSize bytes
};

std::string IdentityText(const StoreIdentity& identity) {
  return std::string(kIdentityHeader) + "format_version " +
         std::to_string(identity.format_version) + "\nstore_id " + HexEncode(identity.store_id) +
         "\nhash_secret " + HexEncode(identity.secret) + "\n";
}

// The identity recorded in CKPTDB; nullopt when the file is absent.
Result<std::optional<StoreIdentity>> ReadIdentityFile(const std::string& dir) {
  const std::string path = (fs::path(dir) / kIdentityFile).string();
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    if (ec) return Status::IOError("cannot access " + path + ": " + ec.message());
    return std::optional<StoreIdentity>();
  }
  std::ifstream in(path, std::ios::binary);
  std::string contents;
  std::getline(in, contents, '\0');  // the whole file (it holds no NUL when intact)
  if (in.bad()) return Status::IOError("cannot read " + path);
  const Status damaged =
      Status::Corruption(path + " is damaged (not a ckptdb identity file)" + SalvageHint(dir));
  std::istringstream lines(contents);
  std::string header, version_name, id_name, secret_name, id_hex, secret_hex;
  uint32_t version = 0;
  if (!std::getline(lines, header) || header + "\n" != kIdentityHeader ||
      !(lines >> version_name >> version >> id_name >> id_hex >> secret_name >> secret_hex) ||
      version_name != "format_version" || id_name != "store_id" || secret_name != "hash_secret") {
    return damaged;
  }
  StoreIdentity identity;
  identity.format_version = version;
  std::optional<std::string> id = HexDecode(id_hex, HexCase::kLowerOnly);
  std::optional<std::string> secret = HexDecode(secret_hex, HexCase::kLowerOnly);
  if (!id || id->size() != 16 || !secret || secret->size() != ChunkHasher::kSecretSize) {
    return damaged;
  }
  identity.store_id = *id;
  identity.secret = *secret;
  if (IdentityText(identity) != contents) return damaged;
  return std::optional<StoreIdentity>(identity);
}

// Readers' private RocksDB files (a secondary instance's) live in
// TMPDIR/ckptdb-reader-XXXXXX, beside a lock file its reader holds (flock)
// for its lifetime, so that a reader that was killed leaves nothing for
// long: every reader's open removes the folders whose lock nobody holds.
constexpr char kReaderDirPrefix[] = "ckptdb-reader-";
constexpr char kReaderLockFile[] = "reader.lock";
// A folder without its lock file is being set up, or was left by an older
// build: removed once it is this old.
constexpr auto kUnlockedReaderDirAge = std::chrono::minutes(10);

// Whether `dir` belongs to a reader that is gone.
bool ReaderIsGone(const fs::path& dir) {
  const int fd = ::open((dir / kReaderLockFile).c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    if (errno != ENOENT) return false;
    std::error_code ec;
    const auto modified = fs::last_write_time(dir, ec);
    return !ec && fs::file_time_type::clock::now() - modified > kUnlockedReaderDirAge;
  }
  const bool unlocked = ::flock(fd, LOCK_EX | LOCK_NB) == 0;
  ::close(fd);
  return unlocked;
}

void RemoveDeadReaderDirs(const fs::path& temporary) {
  std::error_code ec;
  for (fs::directory_iterator it(temporary, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code type_error;
    if (!it->path().filename().string().starts_with(kReaderDirPrefix) ||
        !it->is_directory(type_error) || it->is_symlink(type_error)) {
      continue;
    }
    if (ReaderIsGone(it->path())) {
      std::error_code removed;
      fs::remove_all(it->path(), removed);  // another user's folder stays: fine
    }
  }
}

// A new reader folder and the lock that marks it alive. The lock file is
// locked under a temporary name and then renamed into place, so that the
// name the sweep looks at is never unlocked while its reader lives.
Result<std::pair<std::string, LockedFile>> NewReaderDir(const std::string& store_dir) {
  std::error_code ec;
  const fs::path temporary = fs::temp_directory_path(ec);
  if (ec) return Status::IOError("no temporary directory for a reader of " + store_dir);
  RemoveDeadReaderDirs(temporary);
  std::string pattern = (temporary / (std::string(kReaderDirPrefix) + "XXXXXX")).string();
  if (mkdtemp(pattern.data()) == nullptr) {
    return Status::IOError("cannot create a temporary directory for a reader of " + store_dir +
                           ": " + std::strerror(errno));
  }
  const fs::path dir(pattern);
  const fs::path setup = dir / (std::string(kReaderLockFile) + ".new");
  Result<LockedFile> lock = TryLockExclusive(setup.string());
  if (lock.ok() && ::rename(setup.c_str(), (dir / kReaderLockFile).c_str()) != 0) {
    lock = Status::IOError("cannot set up " + pattern + ": " + std::strerror(errno));
  }
  if (!lock.ok()) {
    fs::remove_all(dir, ec);
    return lock.status();
  }
  return std::pair<std::string, LockedFile>(pattern, std::move(*lock));
}

class NoAutomaticRecovery : public rocksdb::EventListener {
 public:
  void OnErrorRecoveryBegin(rocksdb::BackgroundErrorReason /*reason*/, rocksdb::Status /*error*/,
                            bool* auto_recovery) override {
    *auto_recovery = false;
  }
};

// The RocksDB options every open uses; each guard's reason is in
// doc/format.md §11.
rocksdb::DBOptions BaseDBOptions(rocksdb::Env* env) {
  rocksdb::DBOptions options;
  if (env != nullptr) options.env = env;
  options.info_log_level = rocksdb::InfoLogLevel::WARN_LEVEL;
  options.keep_log_file_num = 2;
  options.max_manifest_file_size = 16 << 20;
  // A secondary instance needs every table file open; a writer's probe opens
  // them all to check each one's footer before anything is written.
  options.max_open_files = -1;
  // The small families rarely fill a memtable; without a cap, their WAL
  // would grow to gigabytes, replayed at every open and reader catch-up.
  options.max_total_wal_size = 64 << 20;
  // After a write error the database stays stopped until reopened, instead
  // of resuming by itself in the background: ckptdb reports the error and a
  // reopen recovers. (7.8's automatic resume, including its wait for free
  // space, trips internal assertions after some errors.)
  options.max_bgerror_resume_count = 0;
  options.listeners.push_back(std::make_shared<NoAutomaticRecovery>());
  // Damage is refused, never rolled back: a write-ahead log record that
  // fails its checksum fails the open (a record cut short at the very end,
  // which only a crash mid-write leaves, is still dropped).
  options.paranoid_checks = true;
  options.wal_recovery_mode = rocksdb::WALRecoveryMode::kTolerateCorruptedTailRecords;
  options.track_and_verify_wals_in_manifest = true;
  options.verify_sst_unique_id_in_manifest = true;
  options.skip_checking_sst_file_sizes_on_db_open = false;
  return options;
}

}  // namespace

class Store::Rep {
 public:
  ~Rep() { CloseDb().PermitUncheckedError(); }

  rocksdb::Status CloseDb() {
    rocksdb::Status closed;
    if (db != nullptr) {
      for (rocksdb::ColumnFamilyHandle* handle : handles) db->DestroyColumnFamilyHandle(handle);
      handles.clear();
      closed = db->Close();
      db.reset();
    }
    if (!secondary_dir.empty()) {
      std::error_code ec;
      fs::remove_all(secondary_dir, ec);
      secondary_dir.clear();
    }
    reader_lock.Release();
    writer_lock.Release();
    return closed;
  }

  rocksdb::ColumnFamilyHandle* meta() const { return handles[0]; }
  rocksdb::ColumnFamilyHandle* chunks() const { return handles[1]; }
  rocksdb::ColumnFamilyHandle* index() const { return handles[2]; }
  rocksdb::ColumnFamilyHandle* manifests() const { return handles[3]; }

  rocksdb::ColumnFamilyOptions chunks_options = ChunksFamilyOptions();
  std::unique_ptr<rocksdb::DB> db;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  LockedFile writer_lock;       // write modes: CKPTDB.lock, held until Close
  std::string secondary_dir;    // read-only mode: the secondary's own files
  LockedFile reader_lock;       // read-only mode: marks secondary_dir alive
  std::string staging_dir;      // write mode: SST files before ingestion
  rocksdb::Env* env = nullptr;  // for SST files written outside the database
  std::string store_id;         // 16 bytes
  uint64_t next_generation = 1;          // the next generation to allocate
  uint64_t durable_next_generation = 0;  // ckptdb.next_generation as stored
  std::atomic<bool> damage_seen{false};  // a chunk read failed since open
};

namespace {

// The store metadata of an open database (doc/format.md §3).
struct StoreMetadata {
  uint32_t format_version = 0;
  std::string secret;
  std::string store_id;
  uint64_t next_generation = 0;  // 0: absent
};

Result<StoreMetadata> ReadStoreMetadata(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* meta,
                                        const std::string& dir) {
  StoreMetadata metadata;
  std::string version;
  rocksdb::Status got = db->Get(rocksdb::ReadOptions(), meta, kFormatVersionKey, &version);
  if (got.IsNotFound()) {
    return Status::Corruption(dir + " has no ckptdb format version" + SalvageHint(dir));
  }
  if (!got.ok()) return FromRocksDb(got, "reading the format version of " + dir);
  if (version.size() != 4) return Status::Corruption("malformed format version in " + dir);
  const uint64_t format = ReadLittleEndian(version.data(), 4);
  if (format > kStoreFormatVersion || format < kOldestStoreFormatVersion) {
    return Status::NotSupported(dir + " has store format version " + std::to_string(format) +
                                "; this build reads versions " +
                                std::to_string(kOldestStoreFormatVersion) + " to " +
                                std::to_string(kStoreFormatVersion));
  }
  metadata.format_version = static_cast<uint32_t>(format);
  got = db->Get(rocksdb::ReadOptions(), meta, kHashSecretKey, &metadata.secret);
  if (!got.ok()) return FromRocksDb(got, "reading the hash secret of " + dir);
  if (metadata.secret.size() != ChunkHasher::kSecretSize) {
    return Status::Corruption("hash secret of " + dir + " has " +
                              std::to_string(metadata.secret.size()) + " bytes");
  }
  got = db->Get(rocksdb::ReadOptions(), meta, kStoreIdKey, &metadata.store_id);
  if (!got.ok()) return FromRocksDb(got, "reading the store id of " + dir);
  if (metadata.store_id.size() != 16) {
    return Status::Corruption("store id of " + dir + " has " +
                              std::to_string(metadata.store_id.size()) + " bytes");
  }
  std::string high_water;
  got = db->Get(rocksdb::ReadOptions(), meta, kNextGenerationKey, &high_water);
  if (got.ok()) {
    if (high_water.size() != 8 || ReadLittleEndian(high_water.data(), 8) >= kMaxGeneration) {
      return Status::Corruption("malformed generation high-water mark in " + dir);
    }
    metadata.next_generation = ReadLittleEndian(high_water.data(), 8);
  } else if (!got.IsNotFound()) {
    return FromRocksDb(got, "reading the generation high-water mark of " + dir);
  }
  return metadata;
}

// Table files that are missing or whose size differs from the MANIFEST's
// record, one line each (stat only): of the chunks family, or of every
// family when `all_families`.
std::vector<std::string> TableFileProblems(rocksdb::DB* db, const std::string& dir,
                                           bool all_families) {
  std::vector<rocksdb::LiveFileMetaData> files;
  db->GetLiveFilesMetaData(&files);
  std::vector<std::string> problems;
  for (const rocksdb::LiveFileMetaData& file : files) {
    if (!all_families && file.column_family_name != kChunksFamily) continue;
    const fs::path path = fs::path(dir) / fs::path(file.name).filename();
    const std::string what = "table file " + path.string() + " of the " +
                             file.column_family_name + " family";
    std::error_code ec;
    const uintmax_t size = fs::file_size(path, ec);
    if (ec) {
      problems.push_back(what + ": " + ec.message());
    } else if (size != file.size) {
      problems.push_back(what + " has " + std::to_string(size) + " bytes where RocksDB recorded " +
                         std::to_string(file.size));
    }
  }
  return problems;
}

// The largest generation in any table file of the chunks family (0: none).
Result<uint64_t> LargestFileGeneration(rocksdb::DB* db, const std::string& dir,
                                       std::string* file_name) {
  std::vector<rocksdb::LiveFileMetaData> files;
  db->GetLiveFilesMetaData(&files);
  uint64_t largest = 0;
  for (const rocksdb::LiveFileMetaData& file : files) {
    if (file.column_family_name != kChunksFamily || file.largestkey.size() < 8) continue;
    const uint64_t generation = ReadBigEndian64(file.largestkey.data());
    if (generation >= kMaxGeneration) {
      return Status::Corruption("chunk file " + file.name + " of " + dir +
                                " holds an impossible generation" + SalvageHint(dir));
    }
    if (generation >= largest) {
      largest = generation;
      *file_name = file.name;
    }
  }
  return largest;
}

// Invariant (doc/format.md §7): every generation in a chunk file is below
// ckptdb.next_generation, which is made durable before the file is
// ingested. A file above it means the write-ahead log lost records that
// were committed (a deleted, truncated or replaced *.log).
Status CheckGenerationHighWater(rocksdb::DB* db, const std::string& dir,
                                const StoreMetadata& metadata) {
  std::string file;
  Result<uint64_t> largest = LargestFileGeneration(db, dir, &file);
  if (!largest.ok()) return largest.status();
  if (*largest == 0 || *largest < metadata.next_generation) return Status::OK();
  return Status::Corruption(
      "chunk file " + dir + file + " holds generation " + std::to_string(*largest) +
      " but the store's records end below generation " + std::to_string(metadata.next_generation) +
      ": committed writes are missing from the write-ahead log (a *.log file was deleted, "
      "truncated or replaced)" + SalvageHint(dir));
}

// The store id in CKPTDB must be the database's: another store's metadata
// files would otherwise pass for this store's.
Status CheckIdentity(const std::string& dir, const std::optional<StoreIdentity>& identity,
                     const StoreMetadata& metadata) {
  if (!identity.has_value() ||
      (identity->store_id == metadata.store_id && identity->secret == metadata.secret)) {
    return Status::OK();
  }
  return Status::Corruption(dir + "/" + kIdentityFile + " names store " +
                            HexEncode(identity->store_id) + " but the database holds store " +
                            HexEncode(metadata.store_id) +
                            ": its metadata files come from another store" + SalvageHint(dir));
}

// Salvage: the store metadata a rebuild could not find comes back from
// CKPTDB (the database's own wins where it has it).
Status RestoreMetadataFromIdentity(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* meta,
                                   const StoreIdentity& identity) {
  rocksdb::WriteBatch batch;
  std::string value;
  if (db->Get(rocksdb::ReadOptions(), meta, kFormatVersionKey, &value).IsNotFound()) {
    std::string version;
    AppendLittleEndian(&version, identity.format_version, 4);
    batch.Put(meta, kFormatVersionKey, version);
  }
  if (db->Get(rocksdb::ReadOptions(), meta, kHashSecretKey, &value).IsNotFound()) {
    batch.Put(meta, kHashSecretKey, identity.secret);
  }
  if (db->Get(rocksdb::ReadOptions(), meta, kStoreIdKey, &value).IsNotFound()) {
    batch.Put(meta, kStoreIdKey, identity.store_id);
  }
  if (batch.Count() == 0) return Status::OK();
  rocksdb::WriteOptions sync;
  sync.sync = true;
  return FromRocksDb(db->Write(sync, &batch), "restoring the store metadata from CKPTDB");
}

// What a probe checks beyond RocksDB's own checks at open and the reading
// of every value of the small families that opening a checkpointer reads.
enum class ProbeChecks {
  kReader,  // store metadata and identity
  kWriter,  // and the generation high-water mark
};

// Reads every entry of `family` with checksums verified.
Status ReadWholeFamily(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* family,
                       const std::string& dir) {
  rocksdb::ReadOptions read;
  read.verify_checksums = true;
  read.fill_cache = false;
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(read, family));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
  }
  if (it->status().ok()) return Status::OK();
  return Status::Corruption("cannot read the " + family->GetName() + " family of " + dir + ": " +
                            it->status().ToString() + SalvageHint(dir));
}

// Opens the database read-only (nothing is written, nothing deleted) with
// every table file opened and checked, runs `checks`, and closes it again.
// RocksDB's secondary instance, which readers use, silently shows an older
// version when a table file is missing or damaged, and a writer's open would
// delete or rewrite files: both open for real only after this passed, so a
// refused open leaves every file as it was.
Status ProbeDatabase(const std::string& dir, rocksdb::Env* env,
                     const std::optional<StoreIdentity>& identity, ProbeChecks checks) {
  rocksdb::DBOptions options = BaseDBOptions(env);
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw_db = nullptr;
  rocksdb::Status opened =
      rocksdb::DB::OpenForReadOnly(options, dir, FamilyDescriptors(), &handles, &raw_db);
  if (!opened.ok()) {
    return Status::Corruption("cannot open " + dir + ": " + opened.ToString() + SalvageHint(dir));
  }
  std::unique_ptr<rocksdb::DB> db(raw_db);
  Result<StoreMetadata> metadata = ReadStoreMetadata(db.get(), handles[0], dir);
  Status status = metadata.status();
  if (status.ok()) status = CheckIdentity(dir, identity, *metadata);
  if (status.ok()) status = ReadWholeFamily(db.get(), handles[0], dir);
  if (status.ok()) status = ReadWholeFamily(db.get(), handles[3], dir);
  if (status.ok() && checks == ProbeChecks::kWriter) {
    status = CheckGenerationHighWater(db.get(), dir, *metadata);
  }
  for (rocksdb::ColumnFamilyHandle* handle : handles) db->DestroyColumnFamilyHandle(handle);
  db->Close().PermitUncheckedError();
  return status;
}

}  // namespace

Store::Store(std::string dir, Mode mode)
    : dir_(std::move(dir)), mode_(mode), rep_(std::make_unique<Rep>()) {}

Store::~Store() = default;

Result<std::unique_ptr<Store>> Store::Open(const std::string& dir, Mode mode, rocksdb::Env* env,
                                           bool owner_only) {
  std::unique_ptr<Store> store(new Store(dir, mode));
  Rep& rep = *store->rep_;
  const bool writing = mode == Mode::kWrite || mode == Mode::kSalvage;
  Result<DirKind> kind = ClassifyDirectory(dir);
  if (!kind.ok()) return kind.status();
  if (*kind == DirKind::kForeign) {
    return Status::FailedPrecondition(
        dir + " is not a ckptdb store (it holds other files); nothing was changed");
  }
  if (!writing && (*kind == DirKind::kMissing || *kind == DirKind::kEmpty)) {
    return Status::NotFound("no ckptdb store in " + dir);
  }
  if (!writing && *kind == DirKind::kCreating) {
    return Status::NotFound("the ckptdb store in " + dir + " is still being created");
  }
  // A new store is created under a marker, removed once it is complete: a
  // writer that finds the marker finishes the creation; nothing else is ever
  // taken for an interrupted creation.
  const bool creating = *kind != DirKind::kDatabase;
  if (writing && creating) {
    std::error_code ec;
    if (fs::create_directories(dir, ec) && owner_only) {
      fs::permissions(dir, fs::perms::owner_all, fs::perm_options::replace, ec);
    }
    if (ec) return Status::IOError("cannot create " + dir + ": " + ec.message());
  }
  if (writing) {
    Result<LockedFile> lock = TryLockExclusive((fs::path(dir) / kWriterLockFile).string());
    if (!lock.ok()) {
      if (lock.status().code() == Status::Code::kBusy) {
        return Status::Busy("another process has " + dir + " open for writing");
      }
      return lock.status();
    }
    rep.writer_lock = std::move(*lock);
  }
  if (writing && creating && *kind != DirKind::kCreating) {
    Status marked = CreateEmptyFileDurably((fs::path(dir) / kCreatingMarker).string());
    if (!marked.ok()) return marked;
  }
  std::optional<StoreIdentity> identity;
  if (!creating) {
    // Salvage rewrites CKPTDB from the database, whatever it holds now.
    Result<std::optional<StoreIdentity>> read = ReadIdentityFile(dir);
    if (!read.ok() && mode != Mode::kSalvage) return read.status();
    if (read.ok()) identity = *read;
    Status checked = mode == Mode::kDiagnose || mode == Mode::kSalvage
                         ? Status::OK()
                         : CheckDatabaseFiles(dir, identity.has_value());
    if (!checked.ok()) return checked;
    if (mode == Mode::kWrite) {
      checked = ProbeDatabase(dir, env, identity, ProbeChecks::kWriter);
    } else if (mode == Mode::kReadOnly) {
      // A live writer can delete a file (GC, compaction) between the
      // probe's reading of the MANIFEST and its opening of the file: damage
      // is what persists across attempts.
      for (int attempt = 0; attempt < 3; ++attempt) {
        checked = ProbeDatabase(dir, env, identity, ProbeChecks::kReader);
        if (checked.ok()) break;
      }
    }
    if (!checked.ok()) return checked;
  }

  rocksdb::DBOptions options = BaseDBOptions(env);
  rep.env = options.env;
  rocksdb::DB* raw_db = nullptr;
  rocksdb::Status opened;
  if (writing) {
    options.create_if_missing = creating;
    // A rebuild leaves out the families it found no data for.
    options.create_missing_column_families = creating || mode == Mode::kSalvage;
    opened = rocksdb::DB::Open(options, dir, FamilyDescriptors(), &rep.handles, &raw_db);
    // RocksDB's words for its LOCK file held by a writer of an older build.
    const std::string error = opened.ToString();
    if (!opened.ok() && (error.find("While lock file") != std::string::npos ||
                         error.find("lock hold by current process") != std::string::npos)) {
      return Status::Busy("another process has " + dir + " open for writing (" + error + ")");
    }
  } else if (mode == Mode::kDiagnose) {
    // Whatever RocksDB can still read, without opening table files up front
    // or checking them: reads from a damaged file then fail one by one.
    options.paranoid_checks = false;
    options.max_open_files = 64;
    opened = rocksdb::DB::OpenForReadOnly(options, dir, FamilyDescriptors(), &rep.handles, &raw_db);
  } else {
    Result<std::pair<std::string, LockedFile>> reader_dir = NewReaderDir(dir);
    if (!reader_dir.ok()) return reader_dir.status();
    rep.secondary_dir = reader_dir->first;
    rep.reader_lock = std::move(reader_dir->second);
    opened = rocksdb::DB::OpenAsSecondary(options, dir, rep.secondary_dir, FamilyDescriptors(),
                                          &rep.handles, &raw_db);
  }
  if (!opened.ok()) {
    if (creating) return FromRocksDb(opened, "creating the store in " + dir);
    return Status::Corruption("cannot open " + dir + ": " + opened.ToString() + SalvageHint(dir));
  }
  rep.db.reset(raw_db);

  if (creating) {
    // A new store, or one whose creation was interrupted before its metadata
    // was written (the marker says so): then it holds no manifest yet.
    std::string version;
    rocksdb::Status got = rep.db->Get(rocksdb::ReadOptions(), rep.meta(), kFormatVersionKey, &version);
    if (got.IsNotFound()) {
      Result<std::vector<int64_t>> steps = store->ListSteps();
      if (!steps.ok()) return steps.status();
      if (!steps->empty()) {
        return Status::Corruption(dir + " has manifests but no ckptdb format version");
      }
      rocksdb::WriteBatch batch;
      std::string version_bytes;
      AppendLittleEndian(&version_bytes, kStoreFormatVersion, 4);
      batch.Put(rep.meta(), kFormatVersionKey, version_bytes);
      batch.Put(rep.meta(), kHashSecretKey, ChunkHasher::NewSecret());
      batch.Put(rep.meta(), kStoreIdKey, ChunkHasher::NewSecret().substr(0, 16));
      rocksdb::WriteOptions sync;
      sync.sync = true;
      rocksdb::Status written = rep.db->Write(sync, &batch);
      if (!written.ok()) return FromRocksDb(written, "initializing the store in " + dir);
    } else if (!got.ok()) {
      return FromRocksDb(got, "reading the format version of " + dir);
    }
  }
  if (mode == Mode::kSalvage && identity.has_value()) {
    Status restored = RestoreMetadataFromIdentity(rep.db.get(), rep.meta(), *identity);
    if (!restored.ok()) return restored;
  }
  Result<StoreMetadata> metadata = ReadStoreMetadata(rep.db.get(), rep.meta(), dir);
  if (!metadata.ok()) return metadata.status();
  if (mode == Mode::kReadOnly) {
    Status checked = CheckIdentity(dir, identity, *metadata);
    // A live writer may have ingested a file whose reservation this reader
    // has not read yet (its log flushed meanwhile): catch up before judging.
    if (checked.ok() && !CheckGenerationHighWater(rep.db.get(), dir, *metadata).ok()) {
      checked = store->CatchUp();
      if (checked.ok()) metadata = ReadStoreMetadata(rep.db.get(), rep.meta(), dir);
      if (checked.ok()) checked = metadata.status();
      if (checked.ok()) checked = CheckGenerationHighWater(rep.db.get(), dir, *metadata);
    }
    if (!checked.ok()) return checked;
  }
  store->hasher_ = std::make_unique<ChunkHasher>(metadata->secret);
  store->format_version_ = metadata->format_version;
  rep.store_id = metadata->store_id;
  rep.durable_next_generation = metadata->next_generation;
  rep.next_generation = std::max<uint64_t>(1, metadata->next_generation);

  if (writing) {
    if (creating || !identity.has_value() || mode == Mode::kSalvage) {
      Status written = WriteFileDurably(
          (fs::path(dir) / kIdentityFile).string(),
          IdentityText({metadata->format_version, metadata->store_id, metadata->secret}));
      if (!written.ok()) return written;
    }
    if (creating) {
      std::error_code ec;
      fs::remove(fs::path(dir) / kCreatingMarker, ec);
      if (ec) return Status::IOError("cannot remove the creation marker of " + dir + ": " + ec.message());
      Status synced = SyncDirectory(dir);
      if (!synced.ok()) return synced;
    }
    // Files left by a save that crashed before ingestion are garbage.
    rep.staging_dir = (fs::path(dir) / "staging").string();
    std::error_code ec;
    fs::remove_all(rep.staging_dir, ec);
    fs::create_directories(rep.staging_dir, ec);
    if (ec) return Status::IOError("cannot create " + rep.staging_dir + ": " + ec.message());
    // Salvage only: generations a lost log no longer records move the
    // high-water mark above them, so that no number is used twice.
    std::string file;
    Result<uint64_t> largest = LargestFileGeneration(rep.db.get(), dir, &file);
    if (!largest.ok()) return largest.status();
    if (*largest >= rep.next_generation) {
      rep.next_generation = *largest + 1;
      Status reserved = store->ReserveGenerations(rep.next_generation);
      if (!reserved.ok()) return reserved;
    }
  }
  return store;
}

Result<std::optional<ChunkLocation>> Store::FindChunk(const ChunkDigest& digest) const {
  std::string value;
  rocksdb::Status s =
      rep_->db->Get(rocksdb::ReadOptions(), rep_->index(), digest.ToBytes(), &value);
  if (s.IsNotFound()) return std::optional<ChunkLocation>();
  if (!s.ok()) return FromRocksDb(s, "looking up chunk " + digest.ToHex());
  if (value.size() != kIndexValueSize) {
    return Status::Corruption("index entry of chunk " + digest.ToHex() + " has " +
                              std::to_string(value.size()) + " bytes");
  }
  ChunkLocation location;
  location.generation = ReadLittleEndian(value.data(), 8);
  location.raw_size = static_cast<uint32_t>(ReadLittleEndian(value.data() + 8, 4));
  location.stored_size = static_cast<uint32_t>(ReadLittleEndian(value.data() + 12, 4));
  return std::optional<ChunkLocation>(location);
}

Status Store::ReadChunk(const ChunkDigest& digest, const ChunkLocation& location,
                        const std::function<Status(std::string_view stored)>& use) const {
  rocksdb::ReadOptions read;
  read.fill_cache = false;
  read.verify_checksums = true;
  rocksdb::PinnableSlice value;
  rocksdb::Status s =
      rep_->db->Get(read, rep_->chunks(), ChunkKey(location.generation, digest), &value);
  if (!s.ok()) rep_->damage_seen = true;
  if (s.IsNotFound()) {
    return Status::NotFound("chunk " + digest.ToHex() + " is missing from generation " +
                            std::to_string(location.generation));
  }
  if (!s.ok()) return FromRocksDb(s, "reading chunk " + digest.ToHex());
  Status used = use(std::string_view(value.data(), value.size()));
  if (used.code() == Status::Code::kCorruption) rep_->damage_seen = true;
  return used;
}

class GenerationWriter::Rep {
 public:
  Rep(rocksdb::Env* env, const rocksdb::ColumnFamilyOptions& options,
      rocksdb::ColumnFamilyHandle* family)
      : writer(rocksdb::EnvOptions(), WriterOptions(env, options), family) {}
  static rocksdb::Options WriterOptions(rocksdb::Env* env,
                                        const rocksdb::ColumnFamilyOptions& options) {
    rocksdb::Options writer_options(rocksdb::DBOptions(), options);
    writer_options.env = env;
    return writer_options;
  }
  rocksdb::SstFileWriter writer;
  std::string path;
  bool opened = false;
  bool finished = false;
};

GenerationWriter::GenerationWriter(Store* store, uint64_t generation)
    : store_(store),
      generation_(generation),
      rep_(std::make_unique<Rep>(store->rep_->env, store->rep_->chunks_options,
                                 store->rep_->chunks())) {
  rep_->path =
      (fs::path(store->rep_->staging_dir) / ("generation-" + std::to_string(generation) + ".sst"))
          .string();
}

GenerationWriter::~GenerationWriter() {
  if (!rep_->finished) {
    std::error_code ec;
    fs::remove(rep_->path, ec);
  }
}

Status GenerationWriter::Add(const ChunkDigest& digest, std::string_view stored) {
  if (!rep_->opened) {
    rocksdb::Status s = rep_->writer.Open(rep_->path);
    if (!s.ok()) return FromRocksDb(s, "creating " + rep_->path);
    rep_->opened = true;
  }
  rocksdb::Status s =
      rep_->writer.Put(ChunkKey(generation_, digest), rocksdb::Slice(stored.data(), stored.size()));
  return FromRocksDb(s, "writing chunk " + digest.ToHex() + " to " + rep_->path);
}

Status GenerationWriter::Finish() {
  if (!rep_->opened) return Status::OK();
  rocksdb::Status s = rep_->writer.Finish();
  if (!s.ok()) return FromRocksDb(s, "finishing " + rep_->path);
  Status reserved = store_->ReserveGenerations(generation_ + 1);
  if (!reserved.ok()) return reserved;
  rocksdb::IngestExternalFileOptions ingest;
  ingest.move_files = true;
  s = store_->rep_->db->IngestExternalFile(store_->rep_->chunks(), {rep_->path}, ingest);
  if (!s.ok()) return FromRocksDb(s, "ingesting generation " + std::to_string(generation_));
  rep_->finished = true;
  std::error_code ec;
  fs::remove(rep_->path, ec);  // the store holds its own link to the file now
  return Status::OK();
}

Result<std::unique_ptr<GenerationWriter>> Store::NewGeneration() {
  if (read_only()) return Status::FailedPrecondition(dir_ + " is open read-only");
  return std::unique_ptr<GenerationWriter>(new GenerationWriter(this, rep_->next_generation++));
}

namespace {

// Every batch ckptdb writes starts by restating the store id: a write-ahead
// log of another store put in this one's place then changes the id, which
// the next open checks against CKPTDB (doc/format.md §11).
rocksdb::WriteBatch StoreBatch(const Store::Rep& rep) {
  rocksdb::WriteBatch batch;
  batch.Put(rep.meta(), kStoreIdKey, rep.store_id);
  return batch;
}

// Index changes always travel with the generation high-water mark, so that a
// generation number is never reused once the index has pointed at it.
rocksdb::WriteBatch IndexBatch(const Store::Rep& rep, const std::vector<IndexEntry>& put,
                               const std::vector<ChunkDigest>& remove) {
  rocksdb::ColumnFamilyHandle* index = rep.index();
  rocksdb::WriteBatch batch = StoreBatch(rep);
  if (put.empty() && remove.empty()) return batch;
  std::string next_generation;
  AppendLittleEndian(&next_generation, rep.next_generation, 8);
  batch.Put(rep.meta(), kNextGenerationKey, next_generation);
  for (const IndexEntry& entry : put) {
    batch.Put(index, entry.digest.ToBytes(), EncodeLocation(entry.location));
  }
  for (const ChunkDigest& digest : remove) batch.Delete(index, digest.ToBytes());
  return batch;
}

Status WriteSynced(rocksdb::DB* db, rocksdb::WriteBatch* batch, std::string_view what) {
  rocksdb::WriteOptions sync;
  sync.sync = true;
  return FromRocksDb(db->Write(sync, batch), what);
}

}  // namespace

Status Store::CommitStep(int64_t step, std::string_view manifest,
                         const std::vector<IndexEntry>& new_chunks) {
  if (read_only()) return Status::FailedPrecondition(dir_ + " is open read-only");
  rocksdb::WriteBatch batch = IndexBatch(*rep_, new_chunks, {});
  batch.Put(rep_->manifests(), StepKey(step), rocksdb::Slice(manifest.data(), manifest.size()));
  Status written = WriteSynced(rep_->db.get(), &batch, "committing step " + std::to_string(step));
  if (written.ok() && !new_chunks.empty()) {
    rep_->durable_next_generation = std::max(rep_->durable_next_generation, rep_->next_generation);
  }
  return written;
}

Status Store::UpdateIndex(const std::vector<IndexEntry>& put,
                          const std::vector<ChunkDigest>& remove) {
  if (read_only()) return Status::FailedPrecondition(dir_ + " is open read-only");
  if (put.empty() && remove.empty()) return Status::OK();
  rocksdb::WriteBatch batch = IndexBatch(*rep_, put, remove);
  Status written = WriteSynced(rep_->db.get(), &batch, "updating the chunk index");
  if (written.ok()) {
    rep_->durable_next_generation = std::max(rep_->durable_next_generation, rep_->next_generation);
  }
  return written;
}

Status Store::ReserveGenerations(uint64_t next) {
  if (read_only()) return Status::FailedPrecondition(dir_ + " is open read-only");
  if (next <= rep_->durable_next_generation) return Status::OK();
  rocksdb::WriteBatch batch = StoreBatch(*rep_);
  std::string value;
  AppendLittleEndian(&value, next, 8);
  batch.Put(rep_->meta(), kNextGenerationKey, value);
  Status written = WriteSynced(rep_->db.get(), &batch, "reserving chunk generation " +
                                                           std::to_string(next - 1) + " in " + dir_);
  if (written.ok()) rep_->durable_next_generation = next;
  return written;
}

Status Store::ForEachIndexEntry(const std::function<Status(const IndexEntry&)>& visit) const {
  rocksdb::ReadOptions read;
  read.fill_cache = false;  // one pass over everything: keep the cache for lookups
  std::unique_ptr<rocksdb::Iterator> it(rep_->db->NewIterator(read, rep_->index()));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    if (it->key().size() != 16 || it->value().size() != kIndexValueSize) {
      return Status::Corruption("malformed chunk index entry in " + dir_);
    }
    IndexEntry entry;
    entry.digest = ChunkDigest::FromBytes(it->key().data());
    const char* value = it->value().data();
    entry.location.generation = ReadLittleEndian(value, 8);
    entry.location.raw_size = static_cast<uint32_t>(ReadLittleEndian(value + 8, 4));
    entry.location.stored_size = static_cast<uint32_t>(ReadLittleEndian(value + 12, 4));
    Status status = visit(entry);
    if (!status.ok()) return status;
  }
  return FromRocksDb(it->status(), "reading the chunk index of " + dir_);
}

Status Store::ForEachStoredChunk(const std::function<Status(const IndexEntry&)>& visit,
                                std::vector<std::string>* unreadable) const {
  for (const ChunkFile& file : ChunkFiles()) {
    const std::string lower = GenerationStart(file.first_generation);
    const std::string upper = GenerationStart(file.last_generation + 1);
    rocksdb::Slice lower_bound(lower);
    rocksdb::Slice upper_bound(upper);
    rocksdb::ReadOptions read;
    read.fill_cache = false;
    read.verify_checksums = true;
    read.iterate_lower_bound = &lower_bound;
    read.iterate_upper_bound = &upper_bound;
    std::unique_ptr<rocksdb::Iterator> it(rep_->db->NewIterator(read, rep_->chunks()));
    for (it->Seek(lower); it->Valid(); it->Next()) {
      if (it->key().size() != kChunkKeySize || it->value().size() < 6) continue;
      IndexEntry entry;
      entry.location.generation = ReadBigEndian64(it->key().data());
      entry.digest = ChunkDigest::FromBytes(it->key().data() + 8);
      entry.location.raw_size = static_cast<uint32_t>(ReadLittleEndian(it->value().data() + 2, 4));
      entry.location.stored_size = static_cast<uint32_t>(it->value().size());
      Status status = visit(entry);
      if (!status.ok()) return status;
    }
    if (!it->status().ok()) unreadable->push_back(file.name + ": " + it->status().ToString());
  }
  return Status::OK();
}

namespace {

// Drops the family behind `*handle` and creates it anew, empty.
Status RecreateFamily(rocksdb::DB* db, rocksdb::ColumnFamilyHandle** handle,
                      const std::string& dir) {
  const std::string name = (*handle)->GetName();
  rocksdb::Status s = db->DropColumnFamily(*handle);
  if (s.ok()) s = db->DestroyColumnFamilyHandle(*handle);
  *handle = nullptr;
  if (s.ok()) s = db->CreateColumnFamily(rocksdb::ColumnFamilyOptions(), name, handle);
  return FromRocksDb(s, "recreating the " + name + " family of " + dir);
}

}  // namespace

Status Store::ReplaceIndex(const std::vector<IndexEntry>& entries) {
  if (read_only()) return Status::FailedPrecondition(dir_ + " is open read-only");
  Status status = RecreateFamily(rep_->db.get(), &rep_->handles[2], dir_);
  if (!status.ok()) return status;
  constexpr size_t kBatch = 4096;
  for (size_t begin = 0; status.ok() && begin < entries.size(); begin += kBatch) {
    const size_t end = std::min(entries.size(), begin + kBatch);
    status = UpdateIndex(std::vector<IndexEntry>(entries.begin() + begin, entries.begin() + end), {});
  }
  return status;
}

Result<std::map<int64_t, std::string>> Store::ReadableManifests(
    std::vector<std::string>* problems) const {
  std::map<int64_t, std::string> manifests;
  rocksdb::ReadOptions read;
  read.verify_checksums = true;
  std::unique_ptr<rocksdb::Iterator> it(rep_->db->NewIterator(read, rep_->manifests()));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    if (it->key().size() != 8) continue;
    manifests[static_cast<int64_t>(ReadBigEndian64(it->key().data()))] = it->value().ToString();
  }
  if (it->status().ok()) return manifests;
  problems->push_back("the manifests family of " + dir_ + " is damaged after step " +
                      (manifests.empty() ? std::string("(none)")
                                         : std::to_string(manifests.rbegin()->first)) +
                      ": " + it->status().ToString());
  const int64_t last_read = manifests.empty() ? -1 : manifests.rbegin()->first;
  it.reset(rep_->db->NewIterator(read, rep_->manifests()));
  for (it->SeekToLast(); it->Valid(); it->Prev()) {
    if (it->key().size() != 8) continue;
    const auto step = static_cast<int64_t>(ReadBigEndian64(it->key().data()));
    if (step <= last_read) break;
    manifests[step] = it->value().ToString();
  }
  return manifests;
}

Status Store::ReplaceManifests(const std::map<int64_t, std::string>& manifests) {
  if (read_only()) return Status::FailedPrecondition(dir_ + " is open read-only");
  Status status = RecreateFamily(rep_->db.get(), &rep_->handles[3], dir_);
  if (!status.ok()) return status;
  rocksdb::WriteBatch batch = StoreBatch(*rep_);
  for (const auto& [step, manifest] : manifests) batch.Put(rep_->manifests(), StepKey(step), manifest);
  return WriteSynced(rep_->db.get(), &batch, "rewriting the manifests of " + dir_);
}

const ChunkFile* FileHolding(const std::vector<ChunkFile>& files, uint64_t generation) {
  for (const ChunkFile& file : files) {
    if (generation >= file.first_generation && generation <= file.last_generation) return &file;
  }
  return nullptr;
}

std::vector<ChunkFile> Store::ChunkFiles() const {
  std::vector<rocksdb::LiveFileMetaData> files;
  rep_->db->GetLiveFilesMetaData(&files);
  std::vector<ChunkFile> chunk_files;
  for (const rocksdb::LiveFileMetaData& file : files) {
    if (file.column_family_name != kChunksFamily || file.smallestkey.size() < 8 ||
        file.largestkey.size() < 8) {
      continue;
    }
    chunk_files.push_back({fs::path(file.name).filename().string(),
                           ReadBigEndian64(file.smallestkey.data()),
                           ReadBigEndian64(file.largestkey.data()), file.size});
  }
  return chunk_files;
}

Status Store::DropGenerations(const std::vector<uint64_t>& generations) {
  if (read_only()) return Status::FailedPrecondition(dir_ + " is open read-only");
  if (generations.empty()) return Status::OK();
  std::vector<std::string> bounds;
  bounds.reserve(2 * generations.size());
  for (uint64_t generation : generations) {
    bounds.push_back(GenerationStart(generation));
    bounds.push_back(GenerationStart(generation + 1));
  }
  std::vector<rocksdb::Slice> slices(bounds.begin(), bounds.end());
  std::vector<rocksdb::RangePtr> ranges;
  for (size_t i = 0; i < slices.size(); i += 2) ranges.emplace_back(&slices[i], &slices[i + 1]);
  rocksdb::Status s = rocksdb::DeleteFilesInRanges(rep_->db.get(), rep_->chunks(), ranges.data(),
                                                   ranges.size(), /*include_end=*/false);
  if (!s.ok()) return FromRocksDb(s, "deleting chunk files of " + dir_);
  // A generation sharing a file with another (which only a RocksDB compaction
  // could cause; chunk files are never compacted) survives that: hide its
  // keys with a range tombstone. Otherwise write nothing to the chunks
  // family, whose memtable must stay empty for ingestion to reach the bottom.
  std::set<uint64_t> dropped(generations.begin(), generations.end());
  rocksdb::WriteBatch batch = StoreBatch(*rep_);
  const uint32_t store_id_only = batch.Count();
  for (const ChunkFile& file : ChunkFiles()) {
    for (uint64_t generation : dropped) {
      if (generation >= file.first_generation && generation <= file.last_generation) {
        batch.DeleteRange(rep_->chunks(), GenerationStart(generation),
                          GenerationStart(generation + 1));
      }
    }
  }
  if (batch.Count() == store_id_only) return Status::OK();
  return WriteSynced(rep_->db.get(), &batch, "dropping chunk generations of " + dir_);
}

Result<std::vector<int64_t>> Store::ListSteps() const {
  std::vector<int64_t> steps;
  std::unique_ptr<rocksdb::Iterator> it(
      rep_->db->NewIterator(rocksdb::ReadOptions(), rep_->manifests()));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    if (it->key().size() != 8) {
      return Status::Corruption("manifest key of " + std::to_string(it->key().size()) +
                                " bytes in " + dir_);
    }
    steps.push_back(static_cast<int64_t>(ReadBigEndian64(it->key().data())));
  }
  if (!it->status().ok()) return FromRocksDb(it->status(), "listing steps in " + dir_);
  return steps;
}

Result<std::optional<std::string>> Store::ReadManifest(int64_t step) const {
  std::string value;
  rocksdb::Status s =
      rep_->db->Get(rocksdb::ReadOptions(), rep_->manifests(), StepKey(step), &value);
  if (s.IsNotFound()) return std::optional<std::string>();
  if (!s.ok()) return FromRocksDb(s, "reading the manifest of step " + std::to_string(step));
  return std::optional<std::string>(std::move(value));
}

Status Store::DeleteManifests(const std::vector<int64_t>& steps) {
  if (read_only()) return Status::FailedPrecondition(dir_ + " is open read-only");
  rocksdb::WriteBatch batch = StoreBatch(*rep_);
  for (int64_t step : steps) batch.Delete(rep_->manifests(), StepKey(step));
  return WriteSynced(rep_->db.get(), &batch, "deleting manifests");
}

Status Store::CatchUp() {
  if (mode_ != Mode::kReadOnly) return Status::OK();
  return FromRocksDb(rep_->db->TryCatchUpWithPrimary(), "catching up with the writer of " + dir_);
}

std::vector<std::string> Store::CheckTableFiles() const {
  // The small families' files come and go with RocksDB's compactions (a
  // live writer's, or this writer's own): only a static store's are stable.
  return TableFileProblems(rep_->db.get(), dir_, mode_ == Mode::kDiagnose);
}

bool Store::damage_seen() const { return rep_->damage_seen; }

namespace {

Status CopyMetadataFiles(const std::string& dir, const std::string& backup_dir) {
  std::error_code ec;
  fs::create_directories(backup_dir, ec);
  if (ec) return Status::IOError("cannot create " + backup_dir + ": " + ec.message());
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (!IsMetadataFileName(name) || !it->is_regular_file()) continue;
    fs::copy_file(it->path(), fs::path(backup_dir) / name, fs::copy_options::overwrite_existing,
                  ec);
    if (ec) return Status::IOError("cannot copy " + it->path().string() + ": " + ec.message());
  }
  if (ec) return Status::IOError("cannot list " + dir + ": " + ec.message());
  return SyncDirectory(backup_dir);
}

}  // namespace

Status Store::BackUpMetadata(const std::string& backup_dir) const {
  return CopyMetadataFiles(dir_, backup_dir);
}

Status Store::Rebuild(const std::string& dir, const std::string& backup_dir, rocksdb::Env* env) {
  Result<LockedFile> lock = TryLockExclusive((fs::path(dir) / kWriterLockFile).string());
  if (!lock.ok()) {
    if (lock.status().code() == Status::Code::kBusy) {
      return Status::Busy("another process has " + dir + " open for writing");
    }
    return lock.status();
  }
  Status copied = CopyMetadataFiles(dir, backup_dir);
  if (!copied.ok()) return copied;
  // OPTIONS files are never read back: a damaged one goes, RocksDB writes a
  // fresh one at the next open. The backup holds the originals.
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path().filename().string().starts_with("OPTIONS-")) fs::remove(it->path(), ec);
  }
  if (ec) return Status::IOError("cannot set aside the OPTIONS files of " + dir + ": " + ec.message());
  rocksdb::DBOptions options = BaseDBOptions(env);
  rocksdb::Status repaired = rocksdb::RepairDB(dir, options, FamilyDescriptors());
  if (!repaired.ok()) return FromRocksDb(repaired, "rebuilding the metadata of " + dir);
  const fs::path lost = fs::path(dir) / "lost";
  if (fs::exists(lost, ec)) {
    fs::rename(lost, fs::path(backup_dir) / "lost", ec);
    if (ec) return Status::IOError("cannot move " + lost.string() + ": " + ec.message());
  }
  return SyncDirectory(dir);
}

Status Store::Close() { return FromRocksDb(rep_->CloseDb(), "closing " + dir_); }

}  // namespace ckptdb
