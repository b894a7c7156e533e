#include "commit_protocol.h"

#include <algorithm>
#include <numeric>
#include <set>

#include "ckptdb/coordinator.h"
#include "multiprocess.h"
#include "restore.h"
#include "save_pipeline.h"
#include "store.h"

namespace ckptdb {
namespace {

// The primary's view of a round: the first process's failure (named), or
// the round's own.
Status FirstFailure(const Status& gathered, const std::vector<std::string>& statuses) {
  if (!gathered.ok()) return gathered;
  for (size_t p = 0; p < statuses.size(); ++p) {
    Status theirs;
    Result<uint64_t> decoded = DecodeVerdict(statuses[p], &theirs);
    if (!decoded.ok()) return decoded.status();
    if (!theirs.ok()) return theirs.WithContext("process " + std::to_string(p));
  }
  return Status::OK();
}

class LocalCommit final : public CommitProtocol {
 public:
  explicit LocalCommit(SavePipeline* pipeline) : pipeline_(pipeline) {}

  bool commits() const override { return true; }
  bool coordinated() const override { return false; }
  bool commits_in_background() const override { return true; }

  Result<bool> AgreeShouldSave(bool* /*preempted*/, const std::function<bool()>& decide) override {
    return decide();
  }
  Result<std::optional<uint64_t>> Begin(const Status& /*prepared*/, const CommitHost& /*host*/) override {
    return std::optional<uint64_t>();
  }
  Status Commit(PendingSave& save, const Status& written, const CommitHost& host,
                bool* committed) override {
    Status status = written;
    if (status.ok()) status = host.unlocked([&] { return pipeline_->CommitLocally(save); });
    *committed = status.ok();
    if (!status.ok()) {
      host.undo();
      return status;
    }
    return host.after_commit();
  }
  Status OnCommitter(const std::function<Status()>& act, const CommitHost& /*host*/) override {
    return act();
  }

 private:
  SavePipeline* pipeline_;
};

// The rounds of a multi-process save (doc/format.md §7.1): begin (the
// primary allocates a generation per process), commit (the primary
// ingests every process's file and commits one manifest, then runs
// retention and GC), and the primary's verdicts with its step list.
class CoordinatedCommit final : public CommitProtocol {
 public:
  CoordinatedCommit(Processes processes, Store* store)
      : processes_(std::move(processes)), store_(store) {}

  bool commits() const override { return processes_.index == processes_.primary; }
  bool coordinated() const override { return true; }
  bool commits_in_background() const override {
    return processes_.coordinator->background_calls_allowed();
  }

  // A round on the decisions channel (no save's round uses it).
  Result<bool> AgreeShouldSave(bool* preempted, const std::function<bool()>& decide) override {
    Coordinator& channel = *processes_.decisions;
    const int primary = processes_.primary;
    std::vector<std::string> flags;
    Status gathered = channel.Gather(primary, *preempted ? "1" : "0", &flags);
    // The primary's answer: "E" (it could not gather), or the decision and
    // whether any process was preempted.
    std::string answer;
    if (commits()) {
      if (gathered.ok()) {
        for (const std::string& flag : flags) *preempted = *preempted || flag == "1";
        answer = std::string(decide() ? "1" : "0") + (*preempted ? "1" : "0");
      } else {
        answer = "E";
      }
    }
    Status status = channel.Broadcast(primary, &answer);
    if (status.ok() && answer.size() != 2) {
      status = Status::IOError("the primary could not gather the save decision's preemption flags");
    }
    if (!status.ok()) return status;
    *preempted = answer[1] == '1';
    return answer[0] == '1';
  }

  Result<std::optional<uint64_t>> Begin(const Status& prepared, const CommitHost& host) override {
    Coordinator& coordinator = *processes_.coordinator;
    const int primary = processes_.primary;
    std::vector<std::string> statuses;
    Status status = host.unlocked(
        [&] { return coordinator.Gather(primary, EncodeVerdict(prepared), &statuses); });
    std::string verdict;
    if (commits()) {
      Status outcome = FirstFailure(status, statuses);
      uint64_t first = 0;
      if (outcome.ok()) outcome = store_->RemoveGenerationFiles();
      if (outcome.ok()) {
        Result<uint64_t> allocated =
            store_->AllocateGenerations(static_cast<uint64_t>(processes_.count));
        outcome = allocated.status();
        if (allocated.ok()) first = *allocated;
      }
      verdict = EncodeVerdict(outcome, first);
    }
    status = host.unlocked([&] { return coordinator.Broadcast(primary, &verdict); });
    if (!status.ok()) return status;
    Status outcome;
    Result<uint64_t> first = DecodeVerdict(verdict, &outcome);
    if (!first.ok()) return first.status();
    if (!outcome.ok()) return outcome;
    first_generation_ = *first;
    return std::optional<uint64_t>(*first + static_cast<uint64_t>(processes_.index));
  }

  Status Commit(PendingSave& save, const Status& written, const CommitHost& host,
                bool* committed) override {
    Coordinator& coordinator = *processes_.coordinator;
    const int primary = processes_.primary;
    const int64_t step = save.manifest().step;
    std::vector<std::string> parts;
    Status status = host.unlocked([&] {
      return coordinator.Gather(primary, EncodePart(written, save.manifest(), save.new_chunks()),
                                &parts);
    });
    std::string verdict;
    bool committed_here = false;
    if (commits()) {
      Status outcome = status.ok() ? CommitParts(step, parts) : status;
      committed_here = outcome.ok();
      // Retention and GC run before the other processes hear of the commit:
      // their next save deduplicates against the index only after that.
      if (committed_here) {
        outcome = host.after_commit();
      } else {
        host.undo();
      }
      verdict = EncodeVerdict(outcome, committed_here ? 1 : 0, host.steps());
    }
    Status outcome = host.unlocked([&] { return coordinator.Broadcast(primary, &verdict); });
    *committed = committed_here;
    if (outcome.ok()) {
      std::vector<int64_t> steps;
      Result<uint64_t> decoded = DecodeVerdict(verdict, &outcome, &steps);
      if (!decoded.ok()) outcome = decoded.status();
      if (!commits() && decoded.ok()) {
        *committed = *decoded == 1;
        host.adopt_steps(steps);
      }
    }
    return outcome;
  }

  Status OnCommitter(const std::function<Status()>& act, const CommitHost& host) override {
    std::string verdict;
    if (commits()) {
      const Status outcome = act();  // before the step list it changes is read
      verdict = EncodeVerdict(outcome, 0, host.steps());
    }
    Status status = host.unlocked(
        [&] { return processes_.coordinator->Broadcast(processes_.primary, &verdict); });
    if (!status.ok()) return status;
    Status outcome;
    std::vector<int64_t> steps;
    Result<uint64_t> decoded = DecodeVerdict(verdict, &outcome, &steps);
    if (!decoded.ok()) return decoded.status();
    if (!commits()) host.adopt_steps(steps);
    return outcome;
  }

 private:
  // The primary: checks the processes' parts, ingests their files and
  // commits the one manifest.
  Status CommitParts(int64_t step, const std::vector<std::string>& parts) {
    std::vector<ProcessPart> decoded(parts.size());
    std::vector<uint64_t> generations;
    for (size_t p = 0; p < parts.size(); ++p) {
      const uint64_t generation = first_generation_ + p;
      Status theirs;
      Result<ProcessPart> part = DecodePart(parts[p], static_cast<int>(p), generation, &theirs);
      if (!part.ok()) return part.status();
      if (!theirs.ok()) return theirs.WithContext("process " + std::to_string(p));
      if (part->manifest.step != step) {
        return Status::InvalidArgument("process " + std::to_string(p) + " saved step " +
                                       std::to_string(part->manifest.step) + ", the primary " +
                                       StepName(step));
      }
      if (!part->new_chunks.empty()) generations.push_back(generation);
      decoded[p] = std::move(*part);
    }
    std::vector<IndexEntry> new_chunks;
    Result<Manifest> manifest =
        MergeParts(decoded, static_cast<size_t>(processes_.primary), &new_chunks);
    if (!manifest.ok()) return manifest.status();
    // A chunk a process found in the index must still be there: retention
    // and GC run between saves, never beside one, so this only fails on a
    // bug or a damaged store, and then nothing is committed.
    std::set<ChunkDigest> fresh;
    for (const IndexEntry& entry : new_chunks) fresh.insert(entry.digest);
    for (const ManifestNode& node : manifest->nodes) {
      for (const ChunkRef& ref : node.chunks) {
        if (fresh.count(ref.digest) != 0) continue;
        Result<std::optional<ChunkLocation>> found = store_->FindChunk(ref.digest);
        if (!found.ok()) return found.status();
        if (!found->has_value()) {
          return Status::Internal("tensor '" + node.path + "' uses chunk " + ref.digest.ToHex() +
                                  ", which is neither stored nor written by this save");
        }
      }
    }
    Status status = store_->IngestGenerationFiles(generations);
    if (!status.ok()) return status;
    return store_->CommitStep(step,
                              EncodeManifest(*manifest, store_->packs_manifests()
                                                            ? ManifestLayout::kPacked
                                                            : ManifestLayout::kNodeTables),
                              new_chunks);
  }

  const Processes processes_;
  Store* store_;
  // The first generation the primary allocated for the save in flight
  // (process i writes generation first + i).
  uint64_t first_generation_ = 0;
};

}  // namespace

std::unique_ptr<CommitProtocol> NewLocalCommit(SavePipeline* pipeline) {
  return std::make_unique<LocalCommit>(pipeline);
}

std::unique_ptr<CommitProtocol> NewCoordinatedCommit(Processes processes, Store* store) {
  return std::make_unique<CoordinatedCommit>(std::move(processes), store);
}

Result<std::optional<Processes>> JoinProcesses(const MultiprocessingOptions& options) {
  if (options.coordinator == nullptr) return std::optional<Processes>();
  Processes joined;
  joined.coordinator = options.coordinator;
  joined.primary = options.primary_host;
  if (!options.active_processes.empty()) {
    Result<std::shared_ptr<Coordinator>> group =
        options.coordinator->Subgroup(options.active_processes);
    if (!group.ok()) return group.status();
    joined.coordinator = std::move(*group);
    joined.primary = static_cast<int>(std::find(options.active_processes.begin(),
                                                options.active_processes.end(),
                                                options.primary_host) -
                                      options.active_processes.begin());
  }
  joined.index = joined.coordinator->process_index();
  joined.count = joined.coordinator->process_count();
  if (joined.count <= 1) return std::optional<Processes>();
  std::vector<int> everyone(static_cast<size_t>(joined.count));
  std::iota(everyone.begin(), everyone.end(), 0);
  Result<std::shared_ptr<Coordinator>> decisions = joined.coordinator->Subgroup(everyone);
  if (!decisions.ok()) return decisions.status();
  joined.decisions = std::move(*decisions);
  return std::optional<Processes>(std::move(joined));
}

Status AgreeOnStatus(Coordinator& coordinator, int primary, const Status& local) {
  std::vector<std::string> statuses;
  Status gathered = coordinator.Gather(primary, EncodeVerdict(local), &statuses);
  std::string outcome;
  if (coordinator.process_index() == primary) outcome = EncodeVerdict(FirstFailure(gathered, statuses));
  Status agreed = coordinator.Broadcast(primary, &outcome);
  if (agreed.ok()) {
    Result<uint64_t> decoded = DecodeVerdict(outcome, &agreed);
    if (!decoded.ok()) agreed = decoded.status();
  }
  return agreed;
}

Status ShareStatus(Coordinator& coordinator, int primary, const Status& mine, Status* primarys) {
  std::string verdict = coordinator.process_index() == primary ? EncodeVerdict(mine) : std::string();
  Status status = coordinator.Broadcast(primary, &verdict);
  if (status.ok()) status = DecodeVerdict(verdict, primarys).status();
  return status;
}

}  // namespace ckptdb
