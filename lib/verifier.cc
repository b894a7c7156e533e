#include "verifier.h"

#include <algorithm>
#include <map>
#include <mutex>
#include <set>

#include "chunk_codec.h"
#include "manifest.h"
#include "parallel.h"
#include "restore.h"
#include "store_directory.h"

namespace ckptdb {
namespace {

// A chunk to check, and the first place that references it (for messages).
struct ChunkToCheck {
  uint32_t raw_size = 0;
  std::string referenced_by;
  std::set<int64_t> steps;  // every step that references the chunk
};

// The chunk file holding `generation`, by name.
std::string FileOf(const std::vector<ChunkFile>& files, uint64_t generation) {
  const ChunkFile* file = FileHolding(files, generation);
  return file != nullptr ? file->name
                         : "the missing file of generation " + std::to_string(generation);
}

// Every base of a delta chunk to check is checked too, for the steps that
// need it: a damaged base then names its own file. (The delta chunks on it
// fail as well: they cannot be restored.) Index problems surface when the
// chunks are read.
void AddDeltaBases(const Store& store, std::map<ChunkDigest, ChunkToCheck>* chunks) {
  std::vector<ChunkDigest> pending;
  for (const auto& [digest, check] : *chunks) pending.push_back(digest);
  while (!pending.empty()) {
    const ChunkDigest digest = pending.back();
    pending.pop_back();
    Result<std::optional<ChunkLocation>> location = store.FindChunk(digest);
    if (!location.ok() || !location->has_value() || (*location)->delta_depth == 0) continue;
    const ChunkToCheck& delta = chunks->at(digest);
    auto [base, inserted] = chunks->try_emplace((*location)->delta_base);
    if (inserted) {
      base->second.raw_size = delta.raw_size;
      base->second.referenced_by = "the delta base of " + delta.referenced_by;
    }
    const size_t known = base->second.steps.size();
    base->second.steps.insert(delta.steps.begin(), delta.steps.end());
    if (inserted || base->second.steps.size() != known) pending.push_back(base->first);
  }
}

}  // namespace

Result<VerifyReport> VerifyStore(const Store& store, std::optional<int64_t> step,
                                 const std::function<void(uint64_t, uint64_t)>& progress) {
  VerifyReport report;
  std::vector<int64_t> steps;
  if (step.has_value()) {
    steps.push_back(*step);
  } else {
    Result<std::vector<int64_t>> listed = store.ListSteps();
    if (!listed.ok()) return listed.status();
    steps = std::move(*listed);
  }
  std::map<ChunkDigest, ChunkToCheck> chunks;
  for (int64_t s : steps) {
    const std::string name = "step " + std::to_string(s);
    Result<Manifest> manifest = ReadStepManifest(store, s);
    if (manifest.status().IsNotFound()) {
      report.problems.push_back(name + ": no such step");
      report.damaged_steps.emplace(s, "no such step");
      continue;
    }
    if (!manifest.ok()) {
      report.problems.push_back(name + ": manifest: " + manifest.status().ToString());
      report.damaged_steps.emplace(s, "manifest: " + manifest.status().ToString());
      continue;
    }
    ++report.steps_checked;
    for (const ManifestNode& node : manifest->nodes) {
      for (size_t k = 0; k < node.chunks.size(); ++k) {
        const ChunkRef& ref = node.chunks[k];
        auto [it, inserted] = chunks.try_emplace(ref.digest);
        it->second.steps.insert(s);
        if (inserted) {
          it->second.raw_size = ref.raw_size;
          it->second.referenced_by =
              name + ", tensor '" + node.path + "', chunk " + std::to_string(k);
        } else if (it->second.raw_size != ref.raw_size) {
          report.problems.push_back(name + ", tensor '" + node.path + "', chunk " +
                                    std::to_string(k) + ": raw size " +
                                    std::to_string(ref.raw_size) + " differs from " +
                                    it->second.referenced_by + " for the same digest");
          report.damaged_steps.emplace(s, "a chunk's raw size disagrees with another reference");
        }
      }
    }
  }

  AddDeltaBases(store, &chunks);

  const std::vector<ChunkFile> files = store.ChunkFiles();
  for (const std::string& problem : store.CheckTableFiles()) report.problems.push_back(problem);
  // Readers open without parsing it; a writer would refuse the store.
  const Status options = CheckOptionsFile(store.dir());
  if (!options.ok()) report.problems.push_back(options.ToString());
  // Verifying the whole store checks the chunks no step references too: a
  // later save of the same bytes would deduplicate onto a damaged one.
  std::map<ChunkDigest, uint32_t> unreferenced;  // digest -> raw size
  if (!step.has_value()) {
    Status listed = store.ForEachIndexEntry([&](const IndexEntry& entry) {
      if (chunks.count(entry.digest) == 0) unreferenced.emplace(entry.digest, entry.location.raw_size);
      return Status::OK();
    });
    if (!listed.ok()) report.problems.push_back("the chunk index: " + listed.ToString());
  }
  struct Failure {
    std::string file;
    std::optional<ChunkLocation> location;
    std::string problem;
  };
  std::vector<std::pair<ChunkDigest, uint32_t>> work;  // digest, raw size
  work.reserve(chunks.size() + unreferenced.size());
  for (const auto& [digest, check] : chunks) work.emplace_back(digest, check.raw_size);
  for (const auto& [digest, raw_size] : unreferenced) work.emplace_back(digest, raw_size);
  std::map<ChunkDigest, Failure> failures;
  std::mutex mutex;  // guards report, failures and the progress count
  uint64_t done = 0;
  if (progress) progress(0, work.size());
  Status status = ParallelFor(work.size(), WorkerThreads(), [&](size_t i) {
    const auto& [digest, raw_size] = work[i];
    Failure failure{"chunk index", std::nullopt, ""};
    Result<std::optional<ChunkLocation>> location = store.FindChunk(digest);
    if (!location.ok()) {
      failure.problem = location.status().ToString();
    } else if (!location->has_value()) {
      failure.problem = "missing from the chunk index";
    } else {
      failure.file = FileOf(files, (*location)->generation);
      failure.location = **location;
      thread_local std::vector<std::byte> buffer;
      buffer.resize(raw_size);
      Status read = ReadVerifiedChunk(store, digest, **location, raw_size, buffer.data());
      if (!read.ok()) failure.problem = read.ToString();
    }
    std::lock_guard<std::mutex> lock(mutex);
    if (!failure.problem.empty()) failures.emplace(digest, std::move(failure));
    ++report.chunks_checked;
    report.bytes_checked += raw_size;
    if (progress && (++done % 64 == 0 || done == work.size())) progress(done, work.size());
    return Status::OK();
  });
  if (!status.ok()) return status;
  for (const auto& [digest, failure] : failures) {
    // A delta chunk that fails because its base does lies in an intact file
    // when its own bytes read: only the base's file is damaged.
    bool own_bytes_intact = false;
    if (failure.location.has_value() && failure.location->delta_depth != 0 &&
        failures.count(failure.location->delta_base) != 0) {
      own_bytes_intact = store.ReadChunk(digest, *failure.location, [](std::string_view stored) {
                                return ParseDeltaBase(stored).status();
                              }).ok();
    }
    auto referenced = chunks.find(digest);
    if (referenced == chunks.end()) {
      report.problems.push_back("chunk " + digest.ToHex() + " (no step uses it, in " +
                                failure.file + "): " + failure.problem +
                                " (a later save of the same bytes would reuse it; repair "
                                "removes it)");
      report.damaged_unreferenced_chunks.push_back(digest);
      if (!own_bytes_intact) report.damaged_files[failure.file];
      continue;
    }
    const ChunkToCheck& check = referenced->second;
    report.problems.push_back(check.referenced_by + " (" + digest.ToHex() + ", in " +
                              failure.file + "): " + failure.problem);
    report.damaged_chunks.push_back(digest);
    if (!own_bytes_intact) {
      report.damaged_files[failure.file].insert(check.steps.begin(), check.steps.end());
    }
    for (int64_t s : check.steps) {
      report.damaged_steps.emplace(s, "chunk " + digest.ToHex() + " (in " + failure.file +
                                          "): " + failure.problem);
    }
  }
  std::sort(report.problems.begin(), report.problems.end());
  std::sort(report.damaged_chunks.begin(), report.damaged_chunks.end());
  return report;
}

}  // namespace ckptdb
