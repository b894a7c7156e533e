// Opening a store: classification, the read-only probe that refuses damage
// before anything can change, creation, and the metadata checks; the
// rebuild repair uses; RocksDB's configuration.
#include <rocksdb/convenience.h>
#include <rocksdb/db.h>
#include <rocksdb/listener.h>
#include <rocksdb/options.h>
#include <rocksdb/table.h>

#include <algorithm>
#include <filesystem>

#include "coding.h"
#include "file_util.h"
#include "recycling_allocator.h"
#include "store_directory.h"
#include "store_internal.h"

namespace ckptdb {
namespace fs = std::filesystem;

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
  // Chunk reads go through the block cache only to pin the block they read
  // (Store::ReadChunk): a read that does not fill the cache gets a copy of
  // the value instead. At 1 MiB the cache keeps no megabyte block past its
  // reader's release, so nothing churns, and the OS page cache serves
  // repeated reads. Its allocator recycles the buffers of every block read.
  rocksdb::LRUCacheOptions cache;
  cache.capacity = 1u << 20;
  // Keeps the buffers of 16 reads of 4 MiB chunks in flight at once.
  cache.memory_allocator = std::make_shared<RecyclingAllocator>(size_t{64} << 20);
  table.block_cache = rocksdb::NewLRUCache(cache);
  options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  return options;
}

// The small families (metadata, index, manifests). Uncompressed, so that
// repair can find every block of a damaged table file by walking it
// (salvage.h); their bytes are few beside the chunks', and the chunk digests
// that fill index and manifests do not compress anyway.
rocksdb::ColumnFamilyOptions SmallFamilyOptions() {
  rocksdb::ColumnFamilyOptions options;
  options.compression = rocksdb::kNoCompression;
  options.bottommost_compression = rocksdb::kNoCompression;
  return options;
}

std::vector<rocksdb::ColumnFamilyDescriptor> FamilyDescriptors() {
  return {
      {rocksdb::kDefaultColumnFamilyName, SmallFamilyOptions()},
      {kChunksFamily, ChunksFamilyOptions()},
      {kIndexFamily, SmallFamilyOptions()},
      {kManifestsFamily, SmallFamilyOptions()},
  };
}

namespace {

class NoAutomaticRecovery : public rocksdb::EventListener {
 public:
  void OnErrorRecoveryBegin(rocksdb::BackgroundErrorReason /*reason*/, rocksdb::Status /*error*/,
                            bool* auto_recovery) override {
    *auto_recovery = false;
  }
};

}  // namespace

// The RocksDB options every open uses; each guard's reason is in
// doc/format.md §11.
rocksdb::DBOptions BaseDBOptions(rocksdb::Env* env, size_t table_files) {
  rocksdb::DBOptions options;
  if (env != nullptr) options.env = env;
  options.info_log_level = rocksdb::InfoLogLevel::WARN_LEVEL;
  options.keep_log_file_num = 2;
  options.max_manifest_file_size = 16 << 20;
  // A secondary instance needs every table file open; a writer's probe opens
  // them all to check each one's footer before anything is written.
  options.max_open_files = -1;
  // RocksDB opens table files on max_file_opening_threads threads (16 by
  // default), started for each family at every open and every reader's
  // catch-up even when no file is new: a reader's open started 240 threads,
  // 5-6 ms of its 8 ms. One thread per 16 table files, 1 to 16.
  options.max_file_opening_threads =
      static_cast<int>(std::clamp<size_t>(table_files / 16, 1, 16));
  // Chunk files are read front to back (restores read chunks in file order),
  // so the kernel's readahead must stay on: RocksDB's default advises every
  // table file random on open, which turned a cold restore of 256 MiB into
  // one synchronous disk read per chunk (1.25 GB/s, against 1.7 without).
  options.advise_random_on_open = false;
  // The small families rarely fill a memtable; without a cap, their WAL
  // would grow to gigabytes, replayed at every open (a reader's twice) and
  // reader catch-up. A small cap also keeps the memtables small, whose
  // random-keyed skip lists (chunk digests) slow every insert and lookup as
  // they grow: 300 saves of 1000 tensors by a writer killed at the end took
  // 21 s with a 64 MiB cap and left 20.8 MB to replay (a reader's open
  // 1.25 s); with 1 MiB, 7.1 s and 0.8 MB (0.125 s, most of it reading the
  // 300 manifests).
  options.max_total_wal_size = 1 << 20;
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

Store::Rep::~Rep() { CloseDb().PermitUncheckedError(); }

rocksdb::Status Store::Rep::CloseDb() {
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
  reader_presence.Release();
  writer_lock.Release();
  writer_claim.Release();
  return closed;
}

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
Status ProbeDatabase(const std::string& dir, rocksdb::Env* env, size_t table_files,
                     const std::optional<StoreIdentity>& identity, ProbeChecks checks) {
  rocksdb::DBOptions options = BaseDBOptions(env, table_files);
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
  return OpenOrCreate(dir, mode, env, owner_only, nullptr);
}

Result<std::unique_ptr<Store>> Store::CreateWithIdentity(const std::string& dir,
                                                         const StoreIdentity& identity,
                                                         rocksdb::Env* env) {
  return OpenOrCreate(dir, Mode::kWrite, env, /*owner_only=*/true, &identity);
}

Result<std::unique_ptr<Store>> Store::OpenOrCreate(const std::string& dir, Mode mode,
                                                   rocksdb::Env* env, bool owner_only,
                                                   const StoreIdentity* new_identity) {
  std::unique_ptr<Store> store(new Store(dir, mode));
  Rep& rep = *store->rep_;
  const bool writing = mode == Mode::kWrite;
  size_t table_files = 0;  // sizes the pool of threads that open them
  Result<DirKind> kind = ClassifyDirectory(dir, &table_files);
  if (!kind.ok()) return kind.status();
  if (new_identity != nullptr && *kind != DirKind::kMissing && *kind != DirKind::kEmpty) {
    return Status::FailedPrecondition("cannot create a store in " + dir + ": it is not empty");
  }
  if (*kind == DirKind::kForeign) {
    return Status::FailedPrecondition(
        dir + " is not a ckptdb store (it holds other files); nothing was changed");
  }
  if (!writing && (*kind == DirKind::kMissing || *kind == DirKind::kEmpty)) {
    return Status::NotFound("no ckptdb store in " + dir);
  }
  if (mode == Mode::kRepair && *kind != DirKind::kDatabase) {
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
  if (*kind == DirKind::kDatabase && mode != Mode::kRepair) {
    Status swapping = CheckNoInterruptedRepair(dir);
    if (!swapping.ok()) return swapping;
  }
  if (mode == Mode::kWrite) {
    Result<WriterClaim> claim = ClaimWriterInThisProcess(dir);
    if (!claim.ok()) return claim.status();
    rep.writer_claim = std::move(*claim);
    Result<LockedFile> lock = TryLockExclusive((fs::path(dir) / kWriterLockFile).string());
    if (!lock.ok()) {
      if (lock.status().code() == Status::Code::kBusy) {
        return Status::Busy("another process has " + dir + " open for writing");
      }
      return lock.status();
    }
    rep.writer_lock = std::move(*lock);
    // Created by writers, so that readers without write access to the
    // folder find it (LockAsReader).
    Status created = CreateEmptyFileDurably((fs::path(dir) / kReadersLockFile).string());
    if (!created.ok()) return created;
  } else if (mode == Mode::kReadOnly || mode == Mode::kDiagnose) {
    Result<LockedFile> present = LockAsReader(dir);
    if (!present.ok()) return present.status();
    rep.reader_presence = std::move(*present);
  }
  if (writing && creating && *kind != DirKind::kCreating) {
    Status marked = CreateEmptyFileDurably((fs::path(dir) / kCreatingMarker).string());
    if (!marked.ok()) return marked;
  }
  std::optional<StoreIdentity> identity;
  if (!creating) {
    Result<std::optional<StoreIdentity>> read = ReadIdentityFile(dir);
    if (!read.ok()) return read.status();
    identity = *read;
    Status checked =
        mode == Mode::kDiagnose ? Status::OK() : CheckDatabaseFiles(dir, identity.has_value());
    if (checked.ok() && (writing || mode == Mode::kRepair)) checked = CheckOptionsFile(dir);
    if (!checked.ok()) return checked;
    if (writing || mode == Mode::kRepair) {
      checked = ProbeDatabase(dir, env, table_files, identity, ProbeChecks::kWriter);
    } else if (mode == Mode::kReadOnly) {
      // A live writer can delete a file (GC, compaction) between the
      // probe's reading of the MANIFEST and its opening of the file: damage
      // is what persists across attempts.
      for (int attempt = 0; attempt < 3; ++attempt) {
        checked = ProbeDatabase(dir, env, table_files, identity, ProbeChecks::kReader);
        if (checked.ok()) break;
      }
    }
    if (!checked.ok()) return checked;
  }

  rocksdb::DBOptions options = BaseDBOptions(env, table_files);
  rep.env = options.env;
  rocksdb::DB* raw_db = nullptr;
  rocksdb::Status opened;
  if (writing) {
    options.create_if_missing = creating;
    options.create_missing_column_families = creating;
    opened = rocksdb::DB::Open(options, dir, FamilyDescriptors(), &rep.handles, &raw_db);
    // RocksDB's words for its LOCK file held by a writer of an older build.
    const std::string error = opened.ToString();
    if (!opened.ok() && (error.find("While lock file") != std::string::npos ||
                         error.find("lock hold by current process") != std::string::npos)) {
      return Status::Busy("another process has " + dir + " open for writing (" + error + ")");
    }
  } else if (mode == Mode::kDiagnose || mode == Mode::kRepair) {
    if (mode == Mode::kDiagnose) {
      // Whatever RocksDB can still read, without opening table files up
      // front or checking them: reads from a damaged file then fail one by one.
      options.paranoid_checks = false;
      options.max_open_files = 64;
      // Without paranoid checks, the open would still read the properties
      // of files it did not open, decoding a footer at the size the MANIFEST
      // records without checking its magic number: in a file longer than
      // recorded, that "footer" can declare no checksums and a block too
      // short to parse, on which RocksDB 7.8 aborts. Opening a table for
      // reads checks the magic number.
      options.skip_stats_update_on_db_open = true;
    }
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
      AppendLittleEndian(&version_bytes,
                         new_identity != nullptr ? new_identity->format_version : kStoreFormatVersion,
                         4);
      batch.Put(rep.meta(), kFormatVersionKey, version_bytes);
      batch.Put(rep.meta(), kHashSecretKey,
                new_identity != nullptr ? new_identity->secret : ChunkHasher::NewSecret());
      batch.Put(rep.meta(), kStoreIdKey,
                new_identity != nullptr ? new_identity->store_id
                                        : ChunkHasher::NewSecret().substr(0, 16));
      rocksdb::WriteOptions sync;
      sync.sync = true;
      rocksdb::Status written = rep.db->Write(sync, &batch);
      if (!written.ok()) return FromRocksDb(written, "initializing the store in " + dir);
    } else if (!got.ok()) {
      return FromRocksDb(got, "reading the format version of " + dir);
    }
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
  // Where generation files wait for ingestion: the writer's, and those the
  // other processes of a multi-process save write for the primary.
  rep.staging_dir = (fs::path(dir) / "staging").string();

  if (writing) {
    if (creating || !identity.has_value()) {
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
    std::error_code ec;
    fs::remove_all(rep.staging_dir, ec);
    fs::create_directories(rep.staging_dir, ec);
    if (ec) return Status::IOError("cannot create " + rep.staging_dir + ": " + ec.message());
  }
  return store;
}

Status Store::Close() {
  // The small families' records would otherwise stay in the write-ahead log
  // only, replayed at every later open (a reader's twice: probe and
  // instance): 0.4 s for the 6.9 MB of 100 steps of 1000 tensors. A failed
  // flush loses nothing (the log keeps the records) and does not fail Close.
  if (mode_ == Mode::kWrite && rep_->db != nullptr) (void)Flush();
  return FromRocksDb(rep_->CloseDb(), "closing " + dir_);
}

}  // namespace ckptdb
