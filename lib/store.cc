#include "store.h"

#include <rocksdb/convenience.h>
#include <rocksdb/db.h>
#include <rocksdb/listener.h>
#include <rocksdb/options.h>
#include <rocksdb/sst_file_writer.h>
#include <rocksdb/table.h>
#include <rocksdb/utilities/options_util.h>

#include <algorithm>
#include <filesystem>
#include <mutex>
#include <set>

#include "recycling_allocator.h"

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

void AppendLittleEndian(std::string* out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out->push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

uint64_t ReadLittleEndian(const char* in, int bytes) {
  uint64_t value = 0;
  for (int i = bytes - 1; i >= 0; --i) value = (value << 8) | static_cast<unsigned char>(in[i]);
  return value;
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

class NoAutomaticRecovery : public rocksdb::EventListener {
 public:
  void OnErrorRecoveryBegin(rocksdb::BackgroundErrorReason /*reason*/, rocksdb::Status /*error*/,
                            bool* auto_recovery) override {
    *auto_recovery = false;
  }
};

rocksdb::DBOptions BaseDBOptions() {
  rocksdb::DBOptions options;
  options.info_log_level = rocksdb::InfoLogLevel::WARN_LEVEL;
  options.keep_log_file_num = 2;
  options.max_manifest_file_size = 16 << 20;
  // A secondary instance needs every table file open; harmless for a writer.
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
  return options;
}

bool DirectoryIsEmpty(const std::string& dir) {
  std::error_code ec;
  return fs::is_empty(dir, ec) && !ec;
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
    return closed;
  }

  rocksdb::ColumnFamilyHandle* meta() const { return handles[0]; }
  rocksdb::ColumnFamilyHandle* chunks() const { return handles[1]; }
  rocksdb::ColumnFamilyHandle* index() const { return handles[2]; }
  rocksdb::ColumnFamilyHandle* manifests() const { return handles[3]; }

  rocksdb::ColumnFamilyOptions chunks_options = ChunksFamilyOptions();
  std::unique_ptr<rocksdb::DB> db;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  std::string secondary_dir;    // read-only mode: the secondary's own files
  std::string staging_dir;      // write mode: SST files before ingestion
  rocksdb::Env* env = nullptr;  // for SST files written outside the database
  uint64_t next_generation = 1;
};

Store::Store(std::string dir, Mode mode)
    : dir_(std::move(dir)), mode_(mode), rep_(std::make_unique<Rep>()) {}

Store::~Store() = default;

Result<std::unique_ptr<Store>> Store::Open(const std::string& dir, Mode mode, rocksdb::Env* env,
                                           bool owner_only) {
  std::unique_ptr<Store> store(new Store(dir, mode));
  Rep& rep = *store->rep_;
  const bool exists = fs::exists(dir);
  const bool fresh = !exists || DirectoryIsEmpty(dir);
  bool incomplete = false;
  if (fresh && mode == Mode::kReadOnly) {
    return Status::NotFound("no ckptdb store in " + dir);
  }
  if (!fresh) {
    if (!fs::exists(fs::path(dir) / "CURRENT")) {
      return Status::FailedPrecondition(
          dir + " is not a ckptdb store (it holds other files); nothing was changed");
    }
    std::vector<std::string> families;
    rocksdb::Status listed = rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), dir, &families);
    if (!listed.ok()) return FromRocksDb(listed, "reading the store in " + dir);
    std::sort(families.begin(), families.end());
    std::vector<std::string> expected = {rocksdb::kDefaultColumnFamilyName, kChunksFamily,
                                         kIndexFamily, kManifestsFamily};
    std::sort(expected.begin(), expected.end());
    // A subset of our families is a store whose creation was interrupted
    // (families are created one by one): the writer finishes creating it
    // below, once it has checked that nothing was ever committed.
    incomplete = families != expected;
    if (incomplete &&
        (mode == Mode::kReadOnly ||
         !std::includes(expected.begin(), expected.end(), families.begin(), families.end()))) {
      return Status::FailedPrecondition(
          dir + " is a RocksDB database but not a ckptdb store; nothing was changed");
    }
  }

  rocksdb::DBOptions options = BaseDBOptions();
  if (env != nullptr) options.env = env;
  rep.env = options.env;
  rocksdb::DB* raw_db = nullptr;
  rocksdb::Status opened;
  if (mode == Mode::kWrite) {
    std::error_code ec;
    if (fs::create_directories(dir, ec) && owner_only) {
      fs::permissions(dir, fs::perms::owner_all, fs::perm_options::replace, ec);
    }
    if (ec) return Status::IOError("cannot create " + dir + ": " + ec.message());
    options.create_if_missing = fresh;
    options.create_missing_column_families = fresh || incomplete;
    opened = rocksdb::DB::Open(options, dir, FamilyDescriptors(), &rep.handles, &raw_db);
    // RocksDB's words for a LOCK file held by another process, or by this one.
    const std::string error = opened.ToString();
    if (!opened.ok() && (error.find("While lock file") != std::string::npos ||
                         error.find("lock hold by current process") != std::string::npos)) {
      return Status::Busy("another process has " + dir + " open for writing (" + opened.ToString() +
                          ")");
    }
  } else {
    std::string pattern = (fs::temp_directory_path() / "ckptdb-reader-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) {
      return Status::IOError("cannot create a temporary directory for a reader of " + dir);
    }
    rep.secondary_dir = pattern;
    opened = rocksdb::DB::OpenAsSecondary(options, dir, rep.secondary_dir, FamilyDescriptors(),
                                          &rep.handles, &raw_db);
  }
  if (!opened.ok()) return FromRocksDb(opened, "opening the store in " + dir);
  rep.db.reset(raw_db);

  std::string version;
  rocksdb::Status got =
      rep.db->Get(rocksdb::ReadOptions(), rep.meta(), kFormatVersionKey, &version);
  if (got.IsNotFound() && mode == Mode::kWrite) {
    // A new store, or one whose creation crashed before its metadata was
    // written (then it holds no manifest yet, so nothing can be lost).
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
    version = version_bytes;
  } else if (got.IsNotFound()) {
    return Status::FailedPrecondition(dir + " has no ckptdb format version (not a ckptdb store)");
  } else if (!got.ok()) {
    return FromRocksDb(got, "reading the format version of " + dir);
  }
  if (version.size() != 4) return Status::Corruption("malformed format version in " + dir);
  uint64_t format = ReadLittleEndian(version.data(), 4);
  if (format > kStoreFormatVersion || format == 0) {
    return Status::NotSupported(dir + " has store format version " + std::to_string(format) +
                                "; this build reads version " +
                                std::to_string(kStoreFormatVersion));
  }
  std::string secret;
  got = rep.db->Get(rocksdb::ReadOptions(), rep.meta(), kHashSecretKey, &secret);
  if (!got.ok()) return FromRocksDb(got, "reading the hash secret of " + dir);
  if (secret.size() != ChunkHasher::kSecretSize) {
    return Status::Corruption("hash secret of " + dir + " has " + std::to_string(secret.size()) +
                              " bytes");
  }
  store->hasher_ = std::make_unique<ChunkHasher>(secret);

  if (mode == Mode::kWrite) {
    // Files left by a save that crashed before ingestion are garbage.
    rep.staging_dir = (fs::path(dir) / "staging").string();
    std::error_code ec;
    fs::remove_all(rep.staging_dir, ec);
    fs::create_directories(rep.staging_dir, ec);
    if (ec) return Status::IOError("cannot create " + rep.staging_dir + ": " + ec.message());
    // New generations number above every generation ever indexed and every
    // generation present in a table file (a crash can leave one unindexed).
    std::string high_water;
    got = rep.db->Get(rocksdb::ReadOptions(), rep.meta(), kNextGenerationKey, &high_water);
    if (got.ok() && high_water.size() == 8 &&
        ReadLittleEndian(high_water.data(), 8) < kMaxGeneration) {
      rep.next_generation = std::max<uint64_t>(1, ReadLittleEndian(high_water.data(), 8));
    } else if (!got.IsNotFound()) {
      return got.ok() ? Status::Corruption("malformed generation high-water mark in " + dir)
                      : FromRocksDb(got, "reading the generation high-water mark of " + dir);
    }
    std::vector<rocksdb::LiveFileMetaData> files;
    rep.db->GetLiveFilesMetaData(&files);
    for (const rocksdb::LiveFileMetaData& file : files) {
      if (file.column_family_name != kChunksFamily || file.largestkey.size() < 8) continue;
      const uint64_t generation = ReadBigEndian64(file.largestkey.data());
      if (generation >= kMaxGeneration) {
        return Status::Corruption("chunk file " + file.name + " of " + dir +
                                  " holds an impossible generation");
      }
      rep.next_generation = std::max(rep.next_generation, generation + 1);
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
  if (s.IsNotFound()) {
    return Status::NotFound("chunk " + digest.ToHex() + " is missing from generation " +
                            std::to_string(location.generation));
  }
  if (!s.ok()) return FromRocksDb(s, "reading chunk " + digest.ToHex());
  return use(std::string_view(value.data(), value.size()));
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

// Index changes always travel with the generation high-water mark, so that a
// generation number is never reused once the index has pointed at it.
rocksdb::WriteBatch IndexBatch(const Store::Rep& rep, const std::vector<IndexEntry>& put,
                               const std::vector<ChunkDigest>& remove) {
  rocksdb::ColumnFamilyHandle* index = rep.index();
  rocksdb::WriteBatch batch;
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
  return WriteSynced(rep_->db.get(), &batch, "committing step " + std::to_string(step));
}

Status Store::UpdateIndex(const std::vector<IndexEntry>& put,
                          const std::vector<ChunkDigest>& remove) {
  if (read_only()) return Status::FailedPrecondition(dir_ + " is open read-only");
  rocksdb::WriteBatch batch = IndexBatch(*rep_, put, remove);
  return WriteSynced(rep_->db.get(), &batch, "updating the chunk index");
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

std::vector<ChunkFile> Store::ChunkFiles() const {
  std::vector<rocksdb::LiveFileMetaData> files;
  rep_->db->GetLiveFilesMetaData(&files);
  std::vector<ChunkFile> chunk_files;
  for (const rocksdb::LiveFileMetaData& file : files) {
    if (file.column_family_name != kChunksFamily || file.smallestkey.size() < 8 ||
        file.largestkey.size() < 8) {
      continue;
    }
    chunk_files.push_back({ReadBigEndian64(file.smallestkey.data()),
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
  rocksdb::WriteBatch batch;
  for (const ChunkFile& file : ChunkFiles()) {
    for (uint64_t generation : dropped) {
      if (generation >= file.first_generation && generation <= file.last_generation) {
        batch.DeleteRange(rep_->chunks(), GenerationStart(generation),
                          GenerationStart(generation + 1));
      }
    }
  }
  if (batch.Count() == 0) return Status::OK();
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
  rocksdb::WriteBatch batch;
  for (int64_t step : steps) batch.Delete(rep_->manifests(), StepKey(step));
  rocksdb::WriteOptions sync;
  sync.sync = true;
  return FromRocksDb(rep_->db->Write(sync, &batch), "deleting manifests");
}

Status Store::CatchUp() {
  if (!read_only()) return Status::OK();
  return FromRocksDb(rep_->db->TryCatchUpWithPrimary(), "catching up with the writer of " + dir_);
}

Status Store::Close() { return FromRocksDb(rep_->CloseDb(), "closing " + dir_); }

}  // namespace ckptdb
