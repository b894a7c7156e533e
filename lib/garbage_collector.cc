#include "garbage_collector.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <unordered_map>
#include <unordered_set>

#include "manifest.h"
#include "restore.h"

namespace ckptdb {
namespace {

using DigestSet = std::unordered_set<ChunkDigest, ChunkDigestHash>;

// The digests of every chunk a manifest references.
Status MarkLive(const Store& store, DigestSet* live, GcStats* stats) {
  Result<std::vector<int64_t>> steps = store.ListSteps();
  if (!steps.ok()) return steps.status();
  for (int64_t step : *steps) {
    Result<Manifest> manifest = ReadStepManifest(store, step);
    if (manifest.status().IsNotFound()) continue;
    if (!manifest.ok()) return manifest.status().WithContext("garbage collection");
    ++stats->manifests_scanned;
    for (const ManifestNode& node : manifest->nodes) {
      for (const ChunkRef& chunk : node.chunks) live->insert(chunk.digest);
    }
  }
  return Status::OK();
}

// A live delta chunk's base is live, and so on down its chain.
void MarkDeltaBasesLive(const std::vector<IndexEntry>& entries, DigestSet* live) {
  std::unordered_map<ChunkDigest, ChunkDigest, ChunkDigestHash> base_of;
  for (const IndexEntry& entry : entries) {
    if (entry.location.delta_depth != 0) base_of[entry.digest] = entry.location.delta_base;
  }
  std::vector<ChunkDigest> pending;
  for (const ChunkDigest& digest : *live) {
    if (base_of.count(digest) != 0) pending.push_back(digest);
  }
  while (!pending.empty()) {
    auto base = base_of.find(pending.back());
    pending.pop_back();
    if (base == base_of.end() || !live->insert(base->second).second) continue;
    pending.push_back(base->second);
  }
}

struct GenerationUsage {
  uint64_t live_bytes = 0;
  std::vector<IndexEntry> live_chunks;
};

Status RewriteGenerations(Store* store, const std::vector<uint64_t>& generations,
                          std::map<uint64_t, GenerationUsage>* usage, GcStats* stats) {
  std::vector<IndexEntry> moving;
  for (uint64_t generation : generations) {
    const std::vector<IndexEntry>& chunks = (*usage)[generation].live_chunks;
    moving.insert(moving.end(), chunks.begin(), chunks.end());
  }
  std::sort(moving.begin(), moving.end(),
            [](const IndexEntry& a, const IndexEntry& b) { return a.digest < b.digest; });
  Result<std::unique_ptr<GenerationWriter>> writer = store->NewGeneration();
  if (!writer.ok()) return writer.status();
  for (IndexEntry& entry : moving) {
    Status status = store->ReadChunk(entry.digest, entry.location, [&](std::string_view stored) {
      stats->bytes_rewritten += stored.size();
      return (*writer)->Add(entry.digest, stored);
    });
    if (!status.ok()) return status.WithContext("garbage collection: rewriting a generation");
    entry.location.generation = (*writer)->generation();
  }
  Status status = (*writer)->Finish();
  if (status.ok()) status = store->UpdateIndex(moving, {});
  if (status.ok()) status = store->DropGenerations(generations);
  stats->generations_rewritten += generations.size();
  return status;
}

// A rewrite must win back at least this much: a small file's fixed overhead
// alone would otherwise keep it below the live-fraction threshold forever,
// and GC would copy it on every run.
constexpr uint64_t kMinRewriteGain = 256u << 10;

// What the mark phase finds: live and dead chunks, per generation.
struct Survey {
  GcStats stats;
  std::vector<ChunkDigest> dead;
  std::map<uint64_t, GenerationUsage> usage;  // live chunks by generation
};

Result<Survey> SurveyStore(const Store& store) {
  Survey survey;
  GcStats& stats = survey.stats;
  DigestSet live;
  Status status = MarkLive(store, &live, &stats);
  if (!status.ok()) return status;
  std::vector<IndexEntry> entries;
  status = store.ForEachIndexEntry([&](const IndexEntry& entry) {
    entries.push_back(entry);
    return Status::OK();
  });
  if (!status.ok()) return status;
  MarkDeltaBasesLive(entries, &live);
  for (const IndexEntry& entry : entries) {
    ++stats.chunks_scanned;
    if (live.count(entry.digest) == 0) {
      survey.dead.push_back(entry.digest);
      stats.garbage_bytes += entry.location.stored_size;
      continue;
    }
    ++stats.chunks_live;
    GenerationUsage& generation = survey.usage[entry.location.generation];
    generation.live_bytes += entry.location.stored_size;
    generation.live_chunks.push_back(entry);
    stats.live_bytes += entry.location.stored_size;
  }
  // Every live chunk's file must be there: GC never deletes to "fix" damage.
  const std::vector<ChunkFile> files = store.ChunkFiles();
  for (const auto& [generation, usage] : survey.usage) {
    if (FileHolding(files, generation) == nullptr) {
      return Status::Corruption("the chunk file of generation " + std::to_string(generation) +
                                " is missing from " + store.dir() + " (run verify)");
    }
  }
  const std::vector<std::string> file_problems = store.CheckTableFiles();
  if (!file_problems.empty()) return Status::Corruption(file_problems.front() + " (run verify)");
  if (stats.chunks_live != live.size()) {
    // Some referenced digest is not indexed: find one to name.
    DigestSet indexed;
    for (const auto& [generation, chunks] : survey.usage) {
      for (const IndexEntry& entry : chunks.live_chunks) indexed.insert(entry.digest);
    }
    for (const ChunkDigest& digest : live) {
      if (indexed.count(digest) == 0) {
        return Status::Corruption("chunk " + digest.ToHex() + " is referenced but missing from " +
                                  store.dir() + " (run verify)");
      }
    }
  }
  return survey;
}

}  // namespace

Result<GcStats> MeasureGarbage(const Store& store) {
  const auto start = std::chrono::steady_clock::now();
  Result<Survey> survey = SurveyStore(store);
  if (!survey.ok()) return survey.status();
  survey->stats.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return survey->stats;
}

Result<GcStats> CollectGarbage(Store* store, const GcSettings& settings) {
  const auto start = std::chrono::steady_clock::now();
  if (store->damage_seen()) {
    return Status::FailedPrecondition(
        "garbage collection refused, nothing was deleted: a chunk of " + store->dir() +
        " failed to read since it was opened (run `ckpt-inspect verify`, then `repair`)");
  }
  Result<Survey> survey = SurveyStore(*store);
  if (!survey.ok()) {
    return survey.status().WithContext("garbage collection refused, nothing was deleted");
  }
  GcStats& stats = survey->stats;
  std::vector<ChunkDigest>& dead = survey->dead;
  std::map<uint64_t, GenerationUsage>& usage = survey->usage;

  // Files of generations with no live chunk, and files mostly dead.
  std::vector<ChunkFile> files = store->ChunkFiles();
  uint64_t file_bytes = 0;
  for (const ChunkFile& file : files) file_bytes += file.bytes;
  const bool worth_it =
      file_bytes > 0 && static_cast<double>(file_bytes - std::min(file_bytes, stats.live_bytes)) >=
                            settings.min_garbage_fraction * static_cast<double>(file_bytes);
  if (!worth_it && !dead.empty()) {
    stats.skipped = true;
    stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return stats;
  }
  // The index forgets dead chunks before their files go.
  Status status = store->UpdateIndex({}, dead);
  if (!status.ok()) return status;
  stats.chunks_deleted = dead.size();

  // Bytes on disk per generation. Files spanning several generations (only
  // a RocksDB compaction could make one; chunk files are never compacted)
  // are left alone, and so are the generations in them.
  std::map<uint64_t, uint64_t> generation_bytes;
  std::vector<std::pair<uint64_t, uint64_t>> merged;  // generation ranges of shared files
  for (const ChunkFile& file : files) {
    if (file.first_generation == file.last_generation) {
      generation_bytes[file.first_generation] += file.bytes;
    } else {
      merged.emplace_back(file.first_generation, file.last_generation);
    }
  }
  std::erase_if(generation_bytes, [&](const auto& entry) {
    return std::any_of(merged.begin(), merged.end(), [&](const auto& range) {
      return entry.first >= range.first && entry.first <= range.second;
    });
  });
  std::vector<uint64_t> drop;
  std::vector<uint64_t> rewrite;
  for (const auto& [generation, bytes] : generation_bytes) {
    auto found = usage.find(generation);
    if (found == usage.end() || found->second.live_chunks.empty()) {
      drop.push_back(generation);
      stats.bytes_freed += bytes;
    } else if (static_cast<double>(found->second.live_bytes) <
                   settings.rewrite_below_live_fraction * static_cast<double>(bytes) &&
               bytes - std::min(bytes, found->second.live_bytes) >= kMinRewriteGain) {
      rewrite.push_back(generation);
      stats.bytes_freed += bytes;
    }
  }
  status = store->DropGenerations(drop);
  if (!status.ok()) return status;
  stats.generations_dropped = drop.size();
  if (!rewrite.empty()) {
    status = RewriteGenerations(store, rewrite, &usage, &stats);
    if (!status.ok()) return status;
  }
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return stats;
}

}  // namespace ckptdb
