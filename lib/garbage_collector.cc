#include "garbage_collector.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <unordered_set>

#include "manifest.h"

namespace ckptdb {
namespace {

using DigestSet = std::unordered_set<ChunkDigest, ChunkDigestHash>;

// The digests of every chunk a manifest references.
Status MarkLive(const Store& store, DigestSet* live, GcStats* stats) {
  Result<std::vector<int64_t>> steps = store.ListSteps();
  if (!steps.ok()) return steps.status();
  for (int64_t step : *steps) {
    Result<std::optional<std::string>> bytes = store.ReadManifest(step);
    if (!bytes.ok()) return bytes.status();
    if (!bytes->has_value()) continue;
    Result<Manifest> manifest = DecodeManifest(**bytes);
    if (!manifest.ok()) {
      return manifest.status().WithContext("garbage collection: manifest of step " +
                                           std::to_string(step));
    }
    ++stats->manifests_scanned;
    for (const ManifestNode& node : manifest->nodes) {
      for (const ChunkRef& chunk : node.chunks) live->insert(chunk.digest);
    }
  }
  return Status::OK();
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

}  // namespace

Result<GcStats> CollectGarbage(Store* store, const GcSettings& settings) {
  const auto start = std::chrono::steady_clock::now();
  GcStats stats;
  DigestSet live;
  Status status = MarkLive(*store, &live, &stats);
  if (!status.ok()) return status;

  std::vector<ChunkDigest> dead;
  std::map<uint64_t, GenerationUsage> usage;
  size_t live_indexed = 0;
  status = store->ForEachIndexEntry([&](const IndexEntry& entry) {
    ++stats.chunks_scanned;
    if (live.count(entry.digest) == 0) {
      dead.push_back(entry.digest);
      stats.garbage_bytes += entry.location.stored_size;
      return Status::OK();
    }
    ++live_indexed;
    GenerationUsage& generation = usage[entry.location.generation];
    generation.live_bytes += entry.location.stored_size;
    generation.live_chunks.push_back(entry);
    stats.live_bytes += entry.location.stored_size;
    return Status::OK();
  });
  if (!status.ok()) return status;
  if (live_indexed != live.size()) {
    // Some referenced digest is not indexed: find one to name.
    DigestSet indexed;
    for (const auto& [generation, chunks] : usage) {
      for (const IndexEntry& entry : chunks.live_chunks) indexed.insert(entry.digest);
    }
    for (const ChunkDigest& digest : live) {
      if (indexed.count(digest) == 0) {
        return Status::Corruption("garbage collection refused: chunk " + digest.ToHex() +
                                  " is referenced but missing from " + store->dir() +
                                  " (run verify); nothing was deleted");
      }
    }
  }
  stats.chunks_live = live_indexed;

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
  status = store->UpdateIndex({}, dead);
  if (!status.ok()) return status;
  stats.chunks_deleted = dead.size();

  std::vector<uint64_t> drop;
  std::vector<uint64_t> rewrite;
  for (const ChunkFile& file : files) {
    if (file.first_generation != file.last_generation) continue;  // merged by RocksDB: left as is
    const uint64_t generation = file.first_generation;
    auto found = usage.find(generation);
    const uint64_t live_bytes = found == usage.end() ? 0 : found->second.live_bytes;
    if (live_bytes == 0) {
      drop.push_back(generation);
      stats.bytes_freed += file.bytes;
    } else if (static_cast<double>(live_bytes) <
               settings.rewrite_below_live_fraction * static_cast<double>(file.bytes)) {
      rewrite.push_back(generation);
      stats.bytes_freed += file.bytes;
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
