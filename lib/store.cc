// The data path of a store: chunk lookups and reads, generation files and
// their ingestion, commits, the index, and what GC and repair change.
#include "store.h"

#include <rocksdb/convenience.h>
#include <rocksdb/db.h>
#include <rocksdb/sst_file_writer.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "chunk_codec.h"
#include "coding.h"
#include "file_util.h"
#include "store_internal.h"

namespace ckptdb {
namespace fs = std::filesystem;

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
  value.reserve(kDeltaIndexValueSize);
  AppendLittleEndian(&value, location.generation, 8);
  AppendLittleEndian(&value, location.raw_size, 4);
  AppendLittleEndian(&value, location.stored_size, 4);
  if (location.delta_depth != 0) {
    value += location.delta_base.ToBytes();
    value += static_cast<char>(location.delta_depth);
  }
  return value;
}

Result<ChunkLocation> DecodeLocation(std::string_view value) {
  if (value.size() != kIndexValueSize && value.size() != kDeltaIndexValueSize) {
    return Status::Corruption("chunk index entry of " + std::to_string(value.size()) + " bytes");
  }
  ChunkLocation location;
  location.generation = ReadLittleEndian(value.data(), 8);
  location.raw_size = static_cast<uint32_t>(ReadLittleEndian(value.data() + 8, 4));
  location.stored_size = static_cast<uint32_t>(ReadLittleEndian(value.data() + 12, 4));
  if (value.size() == kDeltaIndexValueSize) {
    location.delta_base = ChunkDigest::FromBytes(value.data() + 16);
    location.delta_depth = static_cast<uint8_t>(value[32]);
    if (location.delta_depth == 0 || location.delta_depth > kMaxDeltaDepth) {
      return Status::Corruption("chunk index entry of delta depth " +
                                std::to_string(location.delta_depth));
    }
  }
  return location;
}

std::string GenerationStart(uint64_t generation) {
  std::string key;
  AppendBigEndian64(&key, generation);
  return key;
}

namespace {

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

}  // namespace

Result<std::optional<ChunkLocation>> Store::FindChunk(const ChunkDigest& digest) const {
  std::string value;
  rocksdb::Status s =
      rep_->db->Get(rocksdb::ReadOptions(), rep_->index(), digest.ToBytes(), &value);
  if (s.IsNotFound()) return std::optional<ChunkLocation>();
  if (!s.ok()) return FromRocksDb(s, "looking up chunk " + digest.ToHex());
  Result<ChunkLocation> location = DecodeLocation(value);
  if (!location.ok()) return location.status().WithContext("chunk " + digest.ToHex());
  return std::optional<ChunkLocation>(*location);
}

PinnedChunk::PinnedChunk() : value_(std::make_unique<rocksdb::PinnableSlice>()) {}
PinnedChunk::PinnedChunk(PinnedChunk&&) noexcept = default;
PinnedChunk& PinnedChunk::operator=(PinnedChunk&&) noexcept = default;
PinnedChunk::~PinnedChunk() = default;

Result<PinnedChunk> Store::PinChunk(const ChunkDigest& digest,
                                    const ChunkLocation& location) const {
  rocksdb::ReadOptions read;
  // Through the block cache, so that the value pins the block itself instead
  // of receiving a copy of the chunk (a tenth of a warm restore's time); the
  // cache is too small to keep a chunk's block past its release (store_open.cc).
  read.fill_cache = true;
  read.verify_checksums = true;
  PinnedChunk chunk;
  rocksdb::Status s = rep_->db->Get(read, rep_->chunks(), ChunkKey(location.generation, digest),
                                    chunk.value_.get());
  if (!s.ok()) rep_->damage_seen = true;
  if (s.IsNotFound()) {
    return Status::NotFound("chunk " + digest.ToHex() + " is missing from generation " +
                            std::to_string(location.generation));
  }
  if (!s.ok()) return FromRocksDb(s, "reading chunk " + digest.ToHex());
  return chunk;
}

Status Store::UseChunk(const PinnedChunk& chunk,
                       const std::function<Status(std::string_view stored)>& use) const {
  Status used = use(std::string_view(chunk.value_->data(), chunk.value_->size()));
  if (used.code() == Status::Code::kCorruption) rep_->damage_seen = true;
  return used;
}

Status Store::ReadChunk(const ChunkDigest& digest, const ChunkLocation& location,
                        const std::function<Status(std::string_view stored)>& use) const {
  Result<PinnedChunk> chunk = PinChunk(digest, location);
  if (!chunk.ok()) return chunk.status();
  return UseChunk(*chunk, use);
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

GenerationWriter::GenerationWriter(Store* store, uint64_t generation, bool ingest)
    : store_(store),
      generation_(generation),
      ingest_(ingest),
      rep_(std::make_unique<Rep>(store->rep_->env, store->rep_->chunks_options,
                                 store->rep_->chunks())) {
  rep_->path = store->GenerationFilePath(generation);
}

std::string Store::GenerationFilePath(uint64_t generation) const {
  return (fs::path(rep_->staging_dir) / ("generation-" + std::to_string(generation) + ".sst"))
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
  rocksdb::Status s = rep_->writer.Finish();  // synced
  if (!s.ok()) return FromRocksDb(s, "finishing " + rep_->path);
  if (!ingest_) {
    rep_->finished = true;
    return SyncParentDirectory(rep_->path);
  }
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
  return std::unique_ptr<GenerationWriter>(
      new GenerationWriter(this, rep_->next_generation++, /*ingest=*/true));
}

Result<std::unique_ptr<GenerationWriter>> Store::NewGenerationFile(uint64_t generation) {
  std::error_code ec;
  fs::create_directories(rep_->staging_dir, ec);
  if (ec) return Status::IOError("cannot create " + rep_->staging_dir + ": " + ec.message());
  return std::unique_ptr<GenerationWriter>(new GenerationWriter(this, generation, /*ingest=*/false));
}

Result<uint64_t> Store::AllocateGenerations(uint64_t count) {
  if (read_only()) return Status::FailedPrecondition(dir_ + " is open read-only");
  const uint64_t first = rep_->next_generation;
  Status reserved = ReserveGenerations(first + count);
  if (!reserved.ok()) return reserved;
  rep_->next_generation = first + count;
  return first;
}

Status Store::IngestGenerationFiles(const std::vector<uint64_t>& generations) {
  if (read_only()) return Status::FailedPrecondition(dir_ + " is open read-only");
  if (generations.empty()) return Status::OK();
  std::vector<std::string> paths;
  for (uint64_t generation : generations) {
    if (generation >= rep_->durable_next_generation) {
      return Status::Internal("generation " + std::to_string(generation) + " was not reserved");
    }
    paths.push_back(GenerationFilePath(generation));
  }
  // One call: the files' key ranges are disjoint (one generation each), so
  // they all land in the bottom level, and the ingestion is atomic.
  rocksdb::IngestExternalFileOptions ingest;
  ingest.move_files = true;
  rocksdb::Status s = rep_->db->IngestExternalFile(rep_->chunks(), paths, ingest);
  if (!s.ok()) return FromRocksDb(s, "ingesting the generation files of a multi-process save");
  for (const std::string& path : paths) {
    std::error_code ec;
    fs::remove(path, ec);  // the store holds its own link to the file now
  }
  return Status::OK();
}

Status Store::RemoveGenerationFiles() {
  std::error_code ec;
  for (const fs::directory_entry& entry : fs::directory_iterator(rep_->staging_dir, ec)) {
    std::error_code ignored;
    fs::remove(entry.path(), ignored);
  }
  return Status::OK();
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

Status Store::CommitStep(int64_t step, std::string manifest,
                         const std::vector<IndexEntry>& new_chunks) {
  if (read_only()) return Status::FailedPrecondition(dir_ + " is open read-only");
  rocksdb::WriteBatch batch = IndexBatch(*rep_, new_chunks, {});
  batch.Put(rep_->manifests(), StepKey(step), manifest);
  std::string().swap(manifest);
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
    Result<ChunkLocation> location = DecodeLocation(it->value().ToStringView());
    if (it->key().size() != 16 || !location.ok()) {
      return Status::Corruption("malformed chunk index entry in " + dir_);
    }
    Status status = visit({ChunkDigest::FromBytes(it->key().data()), *location});
    if (!status.ok()) return status;
  }
  return FromRocksDb(it->status(), "reading the chunk index of " + dir_);
}

Status Store::IngestChunkFiles(const std::vector<std::string>& paths) {
  if (read_only()) return Status::FailedPrecondition(dir_ + " is open read-only");
  if (paths.empty()) return Status::OK();
  rocksdb::IngestExternalFileOptions ingest;
  ingest.move_files = true;
  // A file linked from another store must never change under it.
  ingest.write_global_seqno = false;
  return FromRocksDb(rep_->db->IngestExternalFile(rep_->chunks(), paths, ingest),
                     "ingesting chunk files into " + dir_);
}

Status Store::RaiseNextGeneration(uint64_t next) {
  if (read_only()) return Status::FailedPrecondition(dir_ + " is open read-only");
  if (next <= rep_->next_generation) return Status::OK();
  Status reserved = ReserveGenerations(next);
  if (reserved.ok()) rep_->next_generation = next;
  return reserved;
}

Status Store::PutManifests(const std::map<int64_t, std::string>& manifests) {
  if (read_only()) return Status::FailedPrecondition(dir_ + " is open read-only");
  rocksdb::WriteBatch batch = StoreBatch(*rep_);
  for (const auto& [step, manifest] : manifests) batch.Put(rep_->manifests(), StepKey(step), manifest);
  return WriteSynced(rep_->db.get(), &batch, "writing the manifests of " + dir_);
}

Status Store::Flush() {
  if (read_only()) return Status::FailedPrecondition(dir_ + " is open read-only");
  rocksdb::FlushOptions flush;
  flush.wait = true;
  return FromRocksDb(rep_->db->Flush(flush, rep_->handles), "flushing " + dir_);
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
                           ReadBigEndian64(file.largestkey.data()), file.size, file.level});
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
  return TableFileProblems(rep_->db.get(), dir_, mode_ == Mode::kDiagnose || mode_ == Mode::kRepair);
}

bool Store::damage_seen() const { return rep_->damage_seen; }

}  // namespace ckptdb
