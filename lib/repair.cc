#include "repair.h"

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>

#include "chunk_codec.h"
#include "coding.h"
#include "file_util.h"
#include "manifest.h"
#include "parallel.h"
#include "repair_files.h"
#include "restore.h"
#include "salvage.h"
#include "store.h"
#include "store_directory.h"
#include "store_format.h"
#include "verifier.h"

namespace ckptdb {
namespace fs = std::filesystem;
namespace {

// ---- Salvage: what the files hold ----

enum class Family { kMeta, kChunks, kIndex, kManifests, kUnknown };

Family FamilyNamed(std::string_view name) {
  if (name == "default") return Family::kMeta;
  if (name == kChunksFamily) return Family::kChunks;
  if (name == kIndexFamily) return Family::kIndex;
  if (name == kManifestsFamily) return Family::kManifests;
  return Family::kUnknown;
}

// Where a record whose family is unknown belongs, by its key: the keys of
// the four families have four distinct shapes (doc/format.md §2).
Family FamilyByKey(std::string_view key) {
  if (key.starts_with("ckptdb.")) return Family::kMeta;
  if (key.size() == kChunkKeySize) return Family::kChunks;
  if (key.size() == 16) return Family::kIndex;
  if (key.size() == 8) return Family::kManifests;
  return Family::kUnknown;
}

// One version of a key of a small family.
struct Version {
  uint64_t sequence = 0;
  uint64_t file_number = 0;  // of the file it came from: the newer file wins a tie
  bool deletion = false;
  std::string value;
};

// Keeps in `versions[key]` the newest version.
template <typename Key>
void KeepNewest(std::map<Key, Version>* versions, const Key& key, Version candidate) {
  auto [it, inserted] = versions->try_emplace(key, candidate);
  if (!inserted && std::tie(candidate.sequence, candidate.file_number) >
                       std::tie(it->second.sequence, it->second.file_number)) {
    it->second = std::move(candidate);
  }
}

// A chunk found in a chunk file.
struct FoundChunk {
  ChunkDigest digest;
  ChunkLocation location;
};

// A table file holding chunks.
struct ChunkSource {
  fs::path path;
  uint64_t file_number = 0;
  bool intact = true;  // every block read and every record a well-formed chunk
  uint64_t first_generation = UINT64_MAX;
  uint64_t last_generation = 0;
  std::vector<FoundChunk> chunks;
};

// A write batch of a log, its records copied.
struct LoggedBatch {
  uint64_t file_number = 0;
  std::optional<std::string> store_id;  // the id the batch restates
  std::vector<std::pair<uint32_t, SalvagedRecord>> records;  // views into `bytes`
  std::vector<std::string> bytes;
};

struct Salvage {
  std::map<std::string, Version> meta;
  std::map<int64_t, Version> manifests;
  std::map<ChunkDigest, Version> index;  // where the index last pointed: a hint
  std::vector<ChunkSource> chunk_sources;
  std::vector<LoggedBatch> batches;
  std::map<uint32_t, Family> family_ids;  // from table files' properties
  // A few chunks stored whole (digest, stored bytes), from several files:
  // which identity's hash secret they hash under tells a store's own
  // metadata from another store's.
  std::vector<std::pair<ChunkDigest, std::string>> hash_samples;
  std::vector<std::string> findings;
};

constexpr size_t kSamplesPerFile = 4;
constexpr size_t kMaxSamples = 32;

uint64_t FileNumber(const fs::path& path) {
  uint64_t number = 0;
  const std::string name = path.filename().string();
  std::from_chars(name.data(), name.data() + name.size(), number);
  return number;
}

// A chunk record's location, from its key and its header; nullopt when the
// header is malformed.
std::optional<FoundChunk> ParseChunkRecord(std::string_view key, std::string_view value) {
  if (key.size() != kChunkKeySize || value.size() < kChunkHeaderSize) return std::nullopt;
  FoundChunk found;
  found.location.generation = ReadBigEndian64(key.data());
  found.digest = ChunkDigest::FromBytes(key.data() + 8);
  found.location.raw_size = static_cast<uint32_t>(ReadLittleEndian(value.data() + 2, 4));
  found.location.stored_size = static_cast<uint32_t>(value.size());
  Result<std::optional<DeltaBase>> base = ParseDeltaBase(value);
  if (!base.ok() || found.location.generation >= kMaxGeneration ||
      found.location.raw_size > kMaxChunkRawSize) {
    return std::nullopt;
  }
  if (base->has_value()) {
    found.location.delta_base = (*base)->digest;
    found.location.delta_depth = (*base)->depth;
  }
  return found;
}

void AddSmallRecord(Family family, const SalvagedRecord& record, uint64_t file_number,
                    Salvage* salvage) {
  Version version{record.sequence, file_number, record.deletion, std::string(record.value)};
  switch (family) {
    case Family::kMeta:
      KeepNewest(&salvage->meta, std::string(record.key), std::move(version));
      break;
    case Family::kIndex:
      KeepNewest(&salvage->index, ChunkDigest::FromBytes(record.key.data()), std::move(version));
      break;
    case Family::kManifests:
      KeepNewest(&salvage->manifests, static_cast<int64_t>(ReadBigEndian64(record.key.data())),
                 std::move(version));
      break;
    default:
      break;
  }
}

// Whether `key` has the shape of `family`'s keys.
bool FitsFamily(Family family, std::string_view key) {
  return family != Family::kUnknown && FamilyByKey(key) == family;
}

void SalvageTableFile(const fs::path& path, Salvage* salvage) {
  Result<std::unique_ptr<SalvageSource>> source = SalvageSource::OpenFile(path.string());
  if (!source.ok()) {
    salvage->findings.push_back(source.status().ToString());
    return;
  }
  ChunkSource chunks;
  chunks.path = path;
  chunks.file_number = FileNumber(path);
  size_t samples_here = 0;
  Result<TableSalvage> table = SalvageTable(**source, [&](const SalvagedRecord& record) {
    const Family family = record.family.empty() ? FamilyByKey(record.key) : FamilyNamed(record.family);
    if (!FitsFamily(family, record.key)) {
      chunks.intact = false;
      return Status::OK();
    }
    if (family != Family::kChunks) {
      AddSmallRecord(family, record, chunks.file_number, salvage);
      return Status::OK();
    }
    std::optional<FoundChunk> found = record.deletion ? std::nullopt : ParseChunkRecord(record.key, record.value);
    if (!found.has_value()) {
      chunks.intact = false;
      return Status::OK();
    }
    if (found->location.delta_depth == 0 && samples_here < kSamplesPerFile &&
        salvage->hash_samples.size() < kMaxSamples) {
      ++samples_here;
      salvage->hash_samples.emplace_back(found->digest, std::string(record.value));
    }
    chunks.first_generation = std::min(chunks.first_generation, found->location.generation);
    chunks.last_generation = std::max(chunks.last_generation, found->location.generation);
    chunks.chunks.push_back(*found);
    return Status::OK();
  });
  if (!table.ok()) {
    salvage->findings.push_back(path.string() + ": " + table.status().ToString());
    return;
  }
  for (const std::string& damage : table->damage) {
    salvage->findings.push_back("table file " + path.string() + ": " + damage);
  }
  if (table->family_id.has_value() && FamilyNamed(table->family) != Family::kUnknown) {
    salvage->family_ids[*table->family_id] = FamilyNamed(table->family);
  }
  chunks.intact = chunks.intact && table->intact && FamilyNamed(table->family) == Family::kChunks;
  if (!chunks.chunks.empty()) salvage->chunk_sources.push_back(std::move(chunks));
}

void SalvageLogFile(const fs::path& path, Salvage* salvage) {
  Result<std::unique_ptr<SalvageSource>> source = SalvageSource::OpenFile(path.string());
  if (!source.ok()) {
    salvage->findings.push_back(source.status().ToString());
    return;
  }
  Result<LogSalvage> log = SalvageLog(**source, [&](const std::vector<LoggedRecord>& records) {
    LoggedBatch batch;
    batch.file_number = FileNumber(path);
    batch.bytes.reserve(2 * records.size());
    for (const LoggedRecord& logged : records) {
      SalvagedRecord record = logged.record;
      record.key = batch.bytes.emplace_back(record.key);
      record.value = batch.bytes.emplace_back(record.value);
      if (logged.family_id == 0 && record.key == kStoreIdKey && !record.deletion) {
        batch.store_id = std::string(record.value);
      }
      batch.records.emplace_back(logged.family_id, record);
    }
    salvage->batches.push_back(std::move(batch));
    return Status::OK();
  });
  if (!log.ok()) {
    salvage->findings.push_back(path.string() + ": " + log.status().ToString());
    return;
  }
  for (const std::string& damage : log->damage) {
    salvage->findings.push_back("log " + path.string() + ": " + damage);
  }
}

// Every table file and log of the store (and of the lost/ folder the RocksDB
// repair of older builds left); symbolic links are not followed.
Result<Salvage> SalvageFiles(const std::string& workdir) {
  Salvage salvage;
  std::vector<fs::path> tables;
  std::vector<fs::path> logs;
  for (const fs::path& dir : {fs::path(workdir), fs::path(workdir) / "lost"}) {
    std::error_code ec;
    if (!fs::is_directory(fs::symlink_status(dir, ec))) continue;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      std::error_code type_error;
      if (!fs::is_regular_file(fs::symlink_status(it->path(), type_error))) continue;
      const std::string name = it->path().filename().string();
      if (name.ends_with(".sst")) tables.push_back(it->path());
      if (name.ends_with(".log")) logs.push_back(it->path());
    }
    if (ec) return Status::IOError("cannot list " + dir.string() + ": " + ec.message());
  }
  for (const fs::path& path : tables) SalvageTableFile(path, &salvage);
  for (const fs::path& path : logs) SalvageLogFile(path, &salvage);
  return salvage;
}

// How many of the samples hash to their digest under `secret`.
size_t HashMatches(const std::string& secret, const Salvage& salvage) {
  const ChunkHasher hasher(secret);
  size_t matches = 0;
  std::vector<std::byte> raw;
  for (const auto& [digest, stored] : salvage.hash_samples) {
    raw.resize(ReadLittleEndian(stored.data() + 2, 4));
    if (DecodeChunk(stored, raw.size(), raw.data()).ok() &&
        hasher.Digest(raw.data(), raw.size()) == digest) {
      ++matches;
    }
  }
  return matches;
}

// The store's identity: CKPTDB's or the salvaged store metadata's; where
// they differ (one was replaced by another store's), the one whose hash
// secret the chunks hash under.
Result<StoreIdentity> DecideIdentity(const std::string& workdir, Salvage* salvage) {
  Result<std::optional<StoreIdentity>> file = ReadIdentityFile(workdir);
  if (!file.ok()) salvage->findings.push_back(file.status().ToString());
  // The newest metadata in table files and logs, batches of any store.
  std::map<std::string, Version> meta = salvage->meta;
  for (const LoggedBatch& batch : salvage->batches) {
    for (const auto& [family_id, record] : batch.records) {
      if (family_id == 0 && record.key.starts_with("ckptdb.")) {
        KeepNewest(&meta, std::string(record.key),
                   {record.sequence, batch.file_number, record.deletion, std::string(record.value)});
      }
    }
  }
  auto value = [&](const char* key) -> std::string {
    auto found = meta.find(key);
    return found == meta.end() || found->second.deletion ? "" : found->second.value;
  };
  std::optional<StoreIdentity> stored;
  const std::string version = value(kFormatVersionKey);
  if (version.size() == 4 && value(kStoreIdKey).size() == 16 &&
      value(kHashSecretKey).size() == ChunkHasher::kSecretSize) {
    stored = StoreIdentity{static_cast<uint32_t>(ReadLittleEndian(version.data(), 4)),
                           value(kStoreIdKey), value(kHashSecretKey)};
  }
  const std::optional<StoreIdentity> recorded =
      file.ok() ? *file : std::optional<StoreIdentity>();
  if (recorded.has_value() && stored.has_value() &&
      (recorded->store_id != stored->store_id || recorded->secret != stored->secret)) {
    const bool keep_recorded = HashMatches(recorded->secret, *salvage) > HashMatches(stored->secret, *salvage);
    salvage->findings.push_back(
        "CKPTDB names store " + HexEncode(recorded->store_id) + ", the store metadata store " +
        HexEncode(stored->store_id) + ": " + (keep_recorded ? "CKPTDB's" : "the metadata's") +
        " is kept (the chunks hash under its secret)");
    return keep_recorded ? *recorded : *stored;
  }
  if (recorded.has_value()) return *recorded;
  if (stored.has_value()) return *stored;
  // No trace of a store: no CKPTDB, and neither ckptdb's metadata nor its
  // chunks or manifests in the database.
  const bool no_identity_file = file.ok() && !file->has_value();
  if (no_identity_file && meta.empty() && salvage->chunk_sources.empty() &&
      salvage->manifests.empty()) {
    return Status::FailedPrecondition(workdir +
                                      " holds a RocksDB database without ckptdb's metadata and no "
                                      "CKPTDB: not a ckptdb store; nothing was changed");
  }
  return Status::Corruption(
      "the identity of " + workdir +
      " is lost (CKPTDB and the store metadata are both missing or damaged): without its "
      "hash secret no chunk can be checked; nothing was changed");
}

// The records of the log batches of this store (a batch that restates
// another store's id is that store's) join the table files' records.
void ApplyLogBatches(const StoreIdentity& identity, Salvage* salvage) {
  uint64_t foreign = 0;
  for (const LoggedBatch& batch : salvage->batches) {
    if (batch.store_id.has_value() && *batch.store_id != identity.store_id) {
      ++foreign;
      continue;
    }
    for (const auto& [family_id, record] : batch.records) {
      auto known = salvage->family_ids.find(family_id);
      // Stores get their families in this order when they are created.
      const Family by_id = known != salvage->family_ids.end() ? known->second
                           : family_id <= 3 ? static_cast<Family>(family_id)
                                            : Family::kUnknown;
      if (FitsFamily(by_id, record.key) && by_id != Family::kChunks) {
        AddSmallRecord(by_id, record, batch.file_number, salvage);
      }
    }
  }
  if (foreign > 0) {
    salvage->findings.push_back(std::to_string(foreign) +
                                " log batches of another store were left out");
  }
  salvage->batches.clear();
}

// ---- Rebuild ----

// Chooses, for each chunk, which of its copies the index points at: where
// the index last pointed if that copy is there (delta chains then stay as
// they were), else the newest copy stored whole, else the newest.
std::map<ChunkDigest, ChunkLocation> ChooseLocations(
    const std::map<ChunkDigest, std::vector<ChunkLocation>>& copies, const Salvage& salvage) {
  std::map<ChunkDigest, ChunkLocation> chosen;
  auto better = [](const ChunkLocation& a, const ChunkLocation& b) {
    if ((a.delta_depth == 0) != (b.delta_depth == 0)) return a.delta_depth == 0;
    return a.generation > b.generation;
  };
  for (const auto& [digest, locations] : copies) {
    const ChunkLocation* pick = nullptr;
    auto hint = salvage.index.find(digest);
    if (hint != salvage.index.end() && !hint->second.deletion) {
      Result<ChunkLocation> indexed = DecodeLocation(hint->second.value);
      for (const ChunkLocation& at : locations) {
        if (indexed.ok() && at.generation == indexed->generation &&
            at.delta_depth == indexed->delta_depth && at.delta_base == indexed->delta_base) {
          pick = &at;
        }
      }
    }
    if (pick == nullptr) {
      for (const ChunkLocation& at : locations) {
        if (pick == nullptr || better(at, *pick)) pick = &at;
      }
    }
    chosen[digest] = *pick;
  }
  return chosen;
}

class Rebuild {
 public:
  Rebuild(Store* store, Salvage* salvage, RepairReport* report)
      : store_(store), salvage_(salvage), report_(report) {}

  Status Run() {
    Status status = RaiseGenerations();
    if (status.ok()) status = CarryIntactFiles();
    if (status.ok()) status = RewriteTheOthers();
    if (status.ok()) status = IndexAndVerifyChunks();
    if (status.ok()) status = KeepRestorableSteps();
    if (status.ok()) status = store_->Flush();
    return status;
  }

 private:
  Status RaiseGenerations() {
    uint64_t next = 1;
    auto mark = salvage_->meta.find(kNextGenerationKey);
    if (mark != salvage_->meta.end() && !mark->second.deletion && mark->second.value.size() == 8) {
      next = std::min(ReadLittleEndian(mark->second.value.data(), 8), kMaxGeneration);
    }
    for (const ChunkSource& source : salvage_->chunk_sources) {
      next = std::max(next, source.last_generation + 1);
    }
    return store_->RaiseNextGeneration(next);
  }

  // Intact chunk files whose generations no other file holds are linked in
  // as they are, one ingestion each (a file RocksDB will not ingest, such as
  // one it wrote itself, is rewritten instead).
  Status CarryIntactFiles() {
    std::vector<ChunkSource>& sources = salvage_->chunk_sources;
    for (ChunkSource& source : sources) {
      const bool overlaps = std::any_of(sources.begin(), sources.end(), [&](const ChunkSource& other) {
        return &other != &source && other.first_generation <= source.last_generation &&
               source.first_generation <= other.last_generation;
      });
      if (!source.intact || overlaps) continue;
      // A link of our own: ingestion moves (links, then unlinks) the name it
      // is given, and the store's own name must stay until the swap.
      const fs::path link = fs::path(store_->dir()) / "staging" /
                            ("carried-" + source.path.filename().string());
      std::error_code ec;
      fs::create_hard_link(source.path, link, ec);
      if (ec) return Status::IOError("cannot link " + source.path.string() + ": " + ec.message());
      Status ingested = store_->IngestChunkFiles({link.string()});
      if (!ingested.ok()) {
        fs::remove(link, ec);
        salvage_->findings.push_back(source.path.string() + " is rewritten: " + ingested.ToString());
        continue;
      }
      carried_.insert(source.file_number);
      ++report_->chunk_files_carried;
      for (const FoundChunk& chunk : source.chunks) copies_[chunk.digest].push_back(chunk.location);
    }
    return Status::OK();
  }

  // The chunks of the other files that are in no file carried over go into
  // new generations, one per source file and generation.
  Status RewriteTheOthers() {
    std::vector<uint64_t> generations;
    for (const ChunkSource& source : salvage_->chunk_sources) {
      if (carried_.count(source.file_number) != 0) continue;
      ++report_->chunk_files_rewritten;
      Result<std::unique_ptr<SalvageSource>> file = SalvageSource::OpenFile(source.path.string());
      if (!file.ok()) return file.status();
      std::unique_ptr<GenerationWriter> writer;
      uint64_t source_generation = 0;
      auto finish = [&]() -> Status {
        if (writer == nullptr) return Status::OK();
        generations.push_back(writer->generation());
        Status finished = writer->Finish();
        writer.reset();
        return finished;
      };
      Result<TableSalvage> read = SalvageTable(**file, [&](const SalvagedRecord& record) -> Status {
        const Family family = record.family.empty() ? FamilyByKey(record.key) : FamilyNamed(record.family);
        if (family != Family::kChunks || record.deletion || !FitsFamily(family, record.key)) {
          return Status::OK();
        }
        std::optional<FoundChunk> found = ParseChunkRecord(record.key, record.value);
        if (!found.has_value() || copies_.count(found->digest) != 0) return Status::OK();
        if (writer == nullptr || found->location.generation != source_generation) {
          Status finished = finish();
          if (!finished.ok()) return finished;
          Result<uint64_t> generation = store_->AllocateGenerations(1);
          if (!generation.ok()) return generation.status();
          Result<std::unique_ptr<GenerationWriter>> opened = store_->NewGenerationFile(*generation);
          if (!opened.ok()) return opened.status();
          writer = std::move(*opened);
          source_generation = found->location.generation;
        }
        found->location.generation = writer->generation();
        copies_[found->digest].push_back(found->location);
        return writer->Add(found->digest, record.value);
      });
      Status status = read.ok() ? finish() : read.status();
      if (!status.ok()) return status.WithContext("copying the chunks of " + source.path.string());
    }
    std::vector<std::string> paths;
    for (uint64_t generation : generations) paths.push_back(store_->GenerationFilePath(generation));
    return store_->IngestChunkFiles(paths);
  }

  // Every chunk is indexed, then read back through the store and re-hashed,
  // chains from their whole chunk up (a delta's base is checked before it):
  // what fails leaves the index.
  Status IndexAndVerifyChunks() {
    chosen_ = ChooseLocations(copies_, *salvage_);
    std::vector<IndexEntry> entries;
    for (const auto& [digest, location] : chosen_) entries.push_back({digest, location});
    constexpr size_t kBatch = 4096;
    for (size_t begin = 0; begin < entries.size(); begin += kBatch) {
      const size_t end = std::min(entries.size(), begin + kBatch);
      Status put = store_->UpdateIndex(
          std::vector<IndexEntry>(entries.begin() + static_cast<std::ptrdiff_t>(begin),
                                  entries.begin() + static_cast<std::ptrdiff_t>(end)),
          {});
      if (!put.ok()) return put;
    }
    for (uint8_t depth = 0; depth <= kMaxDeltaDepth; ++depth) {
      std::vector<const IndexEntry*> level;
      for (const IndexEntry& entry : entries) {
        if (entry.location.delta_depth == depth) level.push_back(&entry);
      }
      std::vector<ChunkDigest> failed;
      std::mutex mutex;
      Status status = ParallelFor(level.size(), WorkerThreads(), [&](size_t i) {
        const IndexEntry& entry = *level[i];
        thread_local std::vector<std::byte> buffer;
        buffer.resize(entry.location.raw_size);
        Status read = ReadVerifiedChunk(*store_, entry.digest, entry.location,
                                        entry.location.raw_size, buffer.data());
        if (!read.ok()) {
          std::lock_guard<std::mutex> lock(mutex);
          failed.push_back(entry.digest);
        }
        return Status::OK();
      });
      if (!status.ok()) return status;
      std::sort(failed.begin(), failed.end());
      for (const ChunkDigest& digest : failed) chosen_.erase(digest);
      report_->chunks_dropped += failed.size();
      status = store_->UpdateIndex({}, failed);
      if (!status.ok()) return status;
    }
    report_->chunks_kept = chosen_.size();
    return Status::OK();
  }

  // The steps whose manifest decodes and whose every chunk passed.
  Status KeepRestorableSteps() {
    std::map<int64_t, std::string> kept;
    for (auto& [step, version] : salvage_->manifests) {
      if (version.deletion) continue;
      Result<Manifest> manifest = DecodeManifest(version.value);
      std::string why;
      if (!manifest.ok()) {
        why = "its manifest does not decode: " + manifest.status().ToString();
      } else if (manifest->step != step) {
        why = "the manifest stored under it describes step " + std::to_string(manifest->step);
      } else {
        for (const ManifestNode& node : manifest->nodes) {
          for (size_t k = 0; k < node.chunks.size() && why.empty(); ++k) {
            auto found = chosen_.find(node.chunks[k].digest);
            if (found == chosen_.end() || found->second.raw_size != node.chunks[k].raw_size) {
              why = "tensor '" + node.path + "', chunk " + std::to_string(k) + " (" +
                    node.chunks[k].digest.ToHex() + ") is damaged or missing";
            }
          }
          if (!why.empty()) break;
        }
      }
      if (!why.empty()) {
        report_->dropped_steps.emplace_back(step, why);
        continue;
      }
      Status put = store_->PutManifests({{step, version.value}});
      if (!put.ok()) return put;
      report_->kept_steps.push_back(step);
    }
    return Status::OK();
  }

  Store* store_;
  Salvage* salvage_;
  RepairReport* report_;
  std::set<uint64_t> carried_;  // file numbers of the chunk files linked in
  std::map<ChunkDigest, std::vector<ChunkLocation>> copies_;  // in the rebuilt store
  std::map<ChunkDigest, ChunkLocation> chosen_;               // indexed and intact
};

// ---- The health check ----

// What is wrong with the store, or nothing; `steps` gets the steps it
// lists when it opens.
Result<std::vector<std::string>> HealthProblems(const std::string& workdir, rocksdb::Env* env,
                                                std::vector<int64_t>* steps) {
  Result<std::unique_ptr<Store>> store = Store::Open(workdir, Store::Mode::kRepair, env);
  if (!store.ok()) {
    // Damage, or a store whose CKPTDB and CURRENT are both gone, which the
    // open takes for a RocksDB database that never was a store: salvage
    // tells (no ckptdb metadata is found in such a database).
    const Status::Code code = store.status().code();
    if (code != Status::Code::kCorruption && code != Status::Code::kFailedPrecondition) {
      return store.status();
    }
    return std::vector<std::string>{store.status().ToString()};
  }
  std::vector<std::string> problems;
  Result<std::vector<int64_t>> listed = (*store)->ListSteps();
  if (listed.ok()) *steps = *listed;
  Result<VerifyReport> verified = VerifyStore(**store, std::nullopt, {});
  if (!verified.ok()) {
    problems.push_back(verified.status().ToString());
  } else {
    problems = verified->problems;
  }
  for (const ChunkFile& file : (*store)->ChunkFiles()) {
    if (file.level == 0) {
      problems.push_back("chunk file " + file.name +
                         " lies in level 0, where garbage collection cannot drop it");
    }
  }
  Status closed = (*store)->Close();
  if (!closed.ok()) return closed;
  return problems;
}

std::string ReportText(const RepairReport& report) {
  std::string text;
  for (const std::string& finding : report.findings) text += "found: " + finding + "\n";
  for (const auto& [step, why] : report.dropped_steps) {
    text += "dropped: step " + std::to_string(step) + ": " + why + "\n";
  }
  text += "kept steps:";
  for (int64_t step : report.kept_steps) text += " " + std::to_string(step);
  return text + "\n";
}

}  // namespace

Result<RepairReport> RepairStore(const std::string& workdir, rocksdb::Env* env) {
  Result<DirKind> kind = ClassifyDirectory(workdir);
  if (!kind.ok()) return kind.status();
  switch (*kind) {
    case DirKind::kMissing:
    case DirKind::kEmpty:
      return Status::NotFound("no ckptdb store in " + workdir + "; nothing was created");
    case DirKind::kCreating:
      return Status::FailedPrecondition(
          "the creation of the store in " + workdir +
          " was interrupted: a writer's open finishes it; nothing was changed");
    case DirKind::kForeign:
      return Status::FailedPrecondition(workdir +
                                        " is not a ckptdb store (it holds other files); nothing "
                                        "was changed");
    case DirKind::kDatabase:
      break;
  }
  Result<WriterClaim> claim = ClaimWriterInThisProcess(workdir);
  if (!claim.ok()) return claim.status();
  Result<LockedFile> writer = TryLockExclusive((fs::path(workdir) / kWriterLockFile).string());
  if (!writer.ok()) {
    if (writer.status().code() != Status::Code::kBusy) return writer.status();
    return Status::Busy("another process has " + workdir + " open for writing; nothing was changed");
  }
  Result<LockedFile> readers = LockOutReaders(workdir);
  if (!readers.ok()) return readers.status();

  RepairReport report;
  std::string finished;
  Status status = FinishInterruptedSwap(workdir, &finished);
  if (!status.ok()) return status;
  if (!finished.empty()) {
    report.changed = true;
    report.findings.push_back("finished the repair " + finished + ", which a crash interrupted");
  }
  status = RemoveAbandonedBuilds(workdir);
  if (!status.ok()) return status;
  std::vector<int64_t> steps_before;
  Result<std::vector<std::string>> problems = HealthProblems(workdir, env, &steps_before);
  if (!problems.ok()) return problems.status();
  if (problems->empty()) {
    report.kept_steps = steps_before;
    status = TrimRepairDirs(workdir, &report.backups_removed);
    if (!status.ok()) return status;
    return report;
  }
  report.findings.insert(report.findings.end(), problems->begin(), problems->end());

  Result<Salvage> salvage = SalvageFiles(workdir);
  if (!salvage.ok()) return salvage.status();
  Result<StoreIdentity> identity = DecideIdentity(workdir, &*salvage);
  if (!identity.ok()) return identity.status();
  ApplyLogBatches(*identity, &*salvage);

  Result<std::string> repair_dir = NewRepairDir(workdir);
  if (!repair_dir.ok()) return repair_dir.status();
  report.backup_dir = *repair_dir;
  {
    Result<std::unique_ptr<Store>> rebuilt =
        Store::CreateWithIdentity(RebuiltDir(*repair_dir), *identity, env);
    status = rebuilt.status();
    if (status.ok()) status = Rebuild(rebuilt->get(), &*salvage, &report).Run();
    if (status.ok()) status = (*rebuilt)->Close();
  }
  if (!status.ok()) {
    std::error_code ec;
    fs::remove_all(*repair_dir, ec);
    return status.WithContext("repair failed while it rebuilt the store beside the old one; "
                              "nothing in " + workdir + " was changed");
  }
  report.findings.insert(report.findings.end(), salvage->findings.begin(), salvage->findings.end());
  // Steps the store listed whose manifest could not be salvaged at all.
  std::set<int64_t> accounted(report.kept_steps.begin(), report.kept_steps.end());
  for (const auto& [step, why] : report.dropped_steps) accounted.insert(step);
  for (int64_t step : steps_before) {
    if (accounted.count(step) == 0) report.dropped_steps.emplace_back(step, "its manifest is unreadable");
  }
  std::sort(report.dropped_steps.begin(), report.dropped_steps.end());
  status = WriteFileDurably((fs::path(*repair_dir) / "REPORT").string(), ReportText(report));
  if (status.ok()) status = SwapIn(workdir, *repair_dir);
  if (!status.ok()) return status.WithContext("repair failed while it moved the rebuilt store in");
  report.changed = true;
  status = TrimRepairDirs(workdir, &report.backups_removed);
  if (!status.ok()) return status;
  return report;
}

}  // namespace ckptdb
