// Checkpointer: the step list, the save decision, the background save and
// retention around it; the public methods lock and forward. The save itself
// is save_pipeline.h, the read path restore.h, option checks
// validate_options.h, storage store.h.

#include "ckptdb/checkpointer.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <numeric>
#include <set>
#include <thread>

#include "checkpointer_internal.h"
#include "ckptdb/coordinator.h"
#include "garbage_collector.h"
#include "multiprocess.h"
#include "mutex.h"
#include "parallel.h"
#include "restore.h"
#include "retention.h"
#include "save_decision.h"
#include "save_pipeline.h"
#include "step_holds.h"
#include "store.h"
#include "validate_options.h"

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

// A round in which every process sends its `local` status and gets the
// first failure of all (OK when none failed).
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

}  // namespace

// Lock discipline. mu_ guards the step list and the flags below. At most
// one save is in flight (in_flight_); while it is, its writer (Finish, on
// the background thread, or on the caller's for a synchronous save) runs
// with mu_ released and owns the store's writes and the pipeline; the
// caller's thread may meanwhile stage the same save (without mu_). Every
// method but the in-memory queries (ShouldSave, LatestStep, AllSteps,
// SignalPreemption) first waits for the save in flight (AwaitInFlight), so
// it never overlaps the writer. Garbage collection runs either as the
// in-flight save's last phase or under mu_ with no save in flight: never
// beside a save's deduplication.
// Hidden: a nested class takes the exported visibility of its enclosing one.
class [[gnu::visibility("hidden")]] Checkpointer::Impl {
 public:
  // The processes of a multi-process checkpointer: this one and the
  // primary among `coordinator`'s (after active_processes).
  struct Processes {
    std::shared_ptr<Coordinator> coordinator;
    // The save decisions' own channel (a second coordinator of the same
    // processes): a decision never waits for a save's rounds in flight.
    std::shared_ptr<Coordinator> decisions;
    int index = 0;
    int count = 1;
    int primary = 0;
  };

  Impl(std::string workdir, CheckpointerOptions options, std::unique_ptr<Store> store,
       std::optional<Processes> processes)
      : workdir_(std::move(workdir)),
        options_(std::move(options)),
        store_(std::move(store)),
        processes_(std::move(processes)),
        pipeline_(store_.get(), PipelineSettings(options_, processes_)) {}

  Mutex mu_;

  Status LoadSteps() REQUIRES(mu_);
  bool ShouldSave(int64_t step) const REQUIRES(mu_);
  // `decided`: the caller has agreed that `step` is due (MaybeSave).
  Result<bool> Save(const Tree& state, int64_t step, const SaveOptions& options,
                    bool decided = false) REQUIRES(mu_);
  void SignalPreemption() REQUIRES(mu_) { preempted_ = true; }
  Status Restore(Tree* state, int64_t step, const RestoreOptions& options) REQUIRES(mu_);
  Result<Tree> RestoreTree(int64_t step, const std::string& path) REQUIRES(mu_);
  Result<LockedFile> HoldStep(int64_t* step) REQUIRES(mu_);
  Result<StepMetadata> ItemMetadata(int64_t step) REQUIRES(mu_);
  std::vector<int64_t> AllSteps() const REQUIRES(mu_);
  std::optional<int64_t> LatestStep() const REQUIRES(mu_);
  Status Delete(int64_t step) REQUIRES(mu_);
  Status DeleteHere(int64_t step) REQUIRES(mu_);  // Delete, in this process only
  Result<GcStats> CollectGarbage(double min_garbage_fraction) REQUIRES(mu_);
  Status Reload() REQUIRES(mu_);
  Status Close() REQUIRES(mu_);
  // The save decision for `step` (ShouldSave). With several processes, the
  // same on all: the primary's, with a preemption signalled on any process
  // (Orbax's preemption sync point) counting for all; a round on the
  // decisions channel, with mu_ held (no save's round uses that channel).
  Result<bool> AgreedShouldSave(int64_t step) REQUIRES(mu_);

  // Waits (releasing mu_ meanwhile) until no save is in flight.
  void AwaitInFlight() REQUIRES(mu_);
  // Multi-process: runs the commit round of a save the background wrote but
  // could not commit (collective: only from collective methods); its error
  // becomes the background error.
  void CompleteDeferredCommit() REQUIRES(mu_);
  // AwaitInFlight and CompleteDeferredCommit, then takes the background
  // error.
  Status FinishInFlight() REQUIRES(mu_);

 private:
  static SavePipeline::Settings PipelineSettings(const CheckpointerOptions& options,
                                                 const std::optional<Processes>& processes) {
    SavePipeline::Settings settings;
    if (processes.has_value()) {
      settings.process_index = processes->index;
      settings.process_count = processes->count;
    }
    settings.chunk_size_bytes = options.chunk_size_bytes;
    settings.staging_bytes = options.staging_bytes;
    settings.threads = ThreadsFor(options);
    settings.compression_level = options.fast ? 1 : 3;  // see CheckpointerOptions::fast
    settings.max_delta_chain = static_cast<uint8_t>(options.max_delta_chain);
    return settings;
  }
  Status CheckOpen() const REQUIRES(mu_) {
    if (closed_) {
      return Status::FailedPrecondition("the checkpointer of " + workdir_ + " is closed");
    }
    return Status::OK();
  }
  bool is_primary() const { return !processes_ || processes_->index == processes_->primary; }
  // Whether this checkpointer saves: the other processes of a multi-process
  // writer read the store and write their chunk files beside it, and the
  // primary commits.
  bool saves() const { return !store_->read_only() || processes_.has_value(); }
  Status CheckWritable() const REQUIRES(mu_) {
    Status status = CheckOpen();
    if (status.ok() && !saves()) {
      return Status::FailedPrecondition(workdir_ + " is open read-only (create = false)");
    }
    return status;
  }
  static size_t ThreadsFor(const CheckpointerOptions& options) {
    return options.worker_threads == 0 ? WorkerThreads() : options.worker_threads;
  }
  size_t Threads() const { return ThreadsFor(options_); }
  std::chrono::system_clock::time_point Now() const {
    return options_.clock ? options_.clock() : std::chrono::system_clock::now();
  }
  RetainedStep Retained(const Manifest& manifest) const;
  Result<int64_t> ResolveStep(int64_t step) const REQUIRES(mu_);
  // CheckOpen and ResolveStep; readers resolve kLatestStep after catching up.
  Result<int64_t> ResolveStepToRead(int64_t step) REQUIRES(mu_);
  // A step's manifest, held against the writer's retention while the hold
  // lives (readers only: a writer's retention runs under mu_).
  struct ReadableStep {
    Manifest manifest;
    LockedFile hold;
  };
  Result<ReadableStep> OpenStepForRead(int64_t step) REQUIRES(mu_);
  // The writer's part of a save: writes and commits with mu_ released, then
  // runs retention and GC. A multi-process save commits through the primary
  // if `may_coordinate`; else its commit waits in deferred_commit_ for the
  // caller's thread (FinishInFlight).
  Status Finish(const std::shared_ptr<PendingSave>& save, std::map<int64_t, RetainedStep> pruned,
                bool may_coordinate) REQUIRES(mu_);
  // After a step committed: deletes the steps retention pruned and collects
  // garbage as gc_mode says (the primary only, with several processes).
  Status AfterCommit(int64_t step, std::map<int64_t, RetainedStep>& pruned) REQUIRES(mu_);
  // ---- Multi-process saves (multiprocess.h has the rounds) ----
  // The begin round: every process's Prepare status to the primary, which
  // allocates a generation per process; this process's generation.
  Result<uint64_t> BeginAcrossProcesses(const Status& prepared) REQUIRES(mu_);
  // The commit round: this process's part (or `written`'s error) to the
  // primary, which commits the step and runs retention and GC; its verdict
  // to all. Undoes the step's listing on failure.
  Status CommitAcrossProcesses(PendingSave& save, std::map<int64_t, RetainedStep> pruned,
                               const Status& written) REQUIRES(mu_);
  // The primary: checks and commits the processes' parts.
  Status CommitParts(int64_t step, const std::vector<std::string>& parts) REQUIRES(mu_);
  // Runs `act` on the primary and gives every process its status and the
  // primary's step list. For collective Delete and GC.
  Status OnPrimary(const std::function<Status()>& act) REQUIRES(mu_);
  // Runs `collective` with mu_ released, as a save in flight does: other
  // threads wait (AwaitInFlight), so none closes the store or starts rounds
  // of its own meanwhile. Only where no other thread may change in_flight_
  // (the caller's own save's rounds, or the background writer's).
  Status WithoutLock(const std::function<Status()>& collective) REQUIRES(mu_) {
    const bool was_in_flight = std::exchange(in_flight_, true);
    mu_.Unlock();
    Status status = collective();
    mu_.Lock();
    in_flight_ = was_in_flight;
    if (!was_in_flight) in_flight_done_.SignalAll();
    return status;
  }
  // A non-primary process: the primary's step list becomes this one's.
  void TakeStepList(const std::vector<int64_t>& steps) REQUIRES(mu_);
  // Retention, in two halves around the commit. Prune takes the steps
  // retention drops out of the list (at once, as Orbax shows them);
  // DeletePruned deletes their manifests once the new step has committed,
  // putting back any it must not delete yet (held by a reader), and returns
  // whether it deleted any.
  std::map<int64_t, RetainedStep> Prune() REQUIRES(mu_);
  Result<bool> DeletePruned(std::map<int64_t, RetainedStep>& pruned) REQUIRES(mu_);

  const std::string workdir_;
  const CheckpointerOptions options_;
  const std::unique_ptr<Store> store_;
  const std::optional<Processes> processes_;  // unset: a single process
  SavePipeline pipeline_;  // owned by the save in flight
  std::map<int64_t, RetainedStep> steps_ GUARDED_BY(mu_);  // the steps held, as retention sees them
  bool preempted_ GUARDED_BY(mu_) = false;
  bool closed_ GUARDED_BY(mu_) = false;
  bool in_flight_ GUARDED_BY(mu_) = false;
  CondVar in_flight_done_{&mu_};
  std::thread background_ GUARDED_BY(mu_);
  Status background_error_ GUARDED_BY(mu_);  // reported once: Save, WaitUntilFinished or Close
  // Multi-process: the first generation the primary allocated for the save
  // in flight (process i writes generation first + i).
  uint64_t first_generation_ GUARDED_BY(mu_) = 0;
  // A multi-process save written in the background whose commit round the
  // caller's thread runs (the coordinator forbids background calls).
  struct DeferredCommit {
    std::shared_ptr<PendingSave> save;
    std::map<int64_t, RetainedStep> pruned;
    Status written;
  };
  std::optional<DeferredCommit> deferred_commit_ GUARDED_BY(mu_);
  std::optional<int64_t> uncommitted_step_ GUARDED_BY(mu_);  // its step
};

RetainedStep Checkpointer::Impl::Retained(const Manifest& manifest) const {
  RetainedStep retained;
  retained.step = manifest.step;
  retained.commit_time = std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(
          std::chrono::nanoseconds(manifest.commit_time_ns)));
  if (!options_.best_metric_path.empty()) {
    auto found = manifest.metrics.find(options_.best_metric_path);
    if (found != manifest.metrics.end()) retained.metric = found->second;
  }
  return retained;
}

Status Checkpointer::Impl::LoadSteps() {
  Result<std::vector<int64_t>> listed = store_->ListSteps();
  if (!listed.ok()) return listed.status();
  // A committed manifest never changes, so steps already known are kept.
  std::map<int64_t, RetainedStep> steps;
  for (int64_t step : *listed) {
    auto known = steps_.find(step);
    if (known != steps_.end()) {
      steps.insert(*known);
      continue;
    }
    Result<Manifest> manifest = ReadStepManifest(*store_, step);
    // A reader may race the writer's retention: a step deleted since the
    // listing is simply gone.
    if (manifest.status().IsNotFound()) continue;
    if (manifest.status().IsCorruption() ||
        manifest.status().code() == Status::Code::kNotSupported) {
      // An unreadable step stays listed (so it can be deleted, and retention
      // sees it, as the oldest); reading it reports the problem.
      steps[step] = RetainedStep{step, {}, std::nullopt};
      continue;
    }
    if (!manifest.ok()) return manifest.status();
    steps[step] = Retained(*manifest);
  }
  steps_ = std::move(steps);
  return Status::OK();
}

bool Checkpointer::Impl::ShouldSave(int64_t step) const {
  SaveDecisionInput input;
  input.step = step;
  if (!steps_.empty()) input.latest_step = steps_.rbegin()->first;
  input.preempted = preempted_;
  input.read_only = closed_ || !saves();
  return IsSaveDue(input, options_);
}

void Checkpointer::Impl::AwaitInFlight() {
  while (in_flight_) in_flight_done_.Wait();
  if (background_.joinable()) background_.join();  // it has released mu_ and is ending
}

void Checkpointer::Impl::CompleteDeferredCommit() {
  if (!deferred_commit_.has_value()) return;
  DeferredCommit deferred = std::move(*deferred_commit_);
  deferred_commit_.reset();
  uncommitted_step_.reset();
  in_flight_ = true;
  Status committed =
      CommitAcrossProcesses(*deferred.save, std::move(deferred.pruned), deferred.written);
  in_flight_ = false;
  in_flight_done_.SignalAll();
  if (!committed.ok()) background_error_ = committed;
}

Status Checkpointer::Impl::FinishInFlight() {
  AwaitInFlight();
  CompleteDeferredCommit();
  return std::exchange(background_error_, Status::OK());
}

Result<bool> Checkpointer::Impl::AgreedShouldSave(int64_t step) {
  if (!processes_ || closed_) return ShouldSave(step);
  Coordinator& channel = *processes_->decisions;
  const int primary = processes_->primary;
  std::vector<std::string> flags;
  Status gathered = channel.Gather(primary, preempted_ ? "1" : "0", &flags);
  // The primary's answer: "E" (it could not gather), or the decision and
  // whether any process was preempted.
  std::string answer;
  if (is_primary()) {
    if (gathered.ok()) {
      for (const std::string& flag : flags) preempted_ = preempted_ || flag == "1";
      answer = std::string(ShouldSave(step) ? "1" : "0") + (preempted_ ? "1" : "0");
    } else {
      answer = "E";
    }
  }
  Status status = channel.Broadcast(primary, &answer);
  if (status.ok() && answer.size() != 2) {
    status = Status::IOError("the primary could not gather the save decision's preemption flags");
  }
  if (!status.ok()) return status.WithContext("agreeing on saving " + StepName(step));
  preempted_ = answer[1] == '1';
  return answer[0] == '1';
}

Result<bool> Checkpointer::Impl::Save(const Tree& state, int64_t step,
                                      const SaveOptions& options, bool decided) {
  // With several processes, every early return below happens on all of them
  // alike (their step lists and background errors are the primary's), up to
  // the begin round; what may differ (this call's options, the state) goes
  // through the round, so that all fail together.
  Status status = CheckWritable();
  if (!status.ok()) return status;
  status = FinishInFlight();
  if (!status.ok()) return status;
  if (step < 0) return Status::InvalidArgument("cannot save negative " + StepName(step));
  if (steps_.count(step) != 0) {
    if (!options.force) return false;
    return Status::AlreadyExists(StepName(step) + " is already in " + workdir_);
  }
  if (!options.force && !decided) {
    Result<bool> due = AgreedShouldSave(step);
    if (!due.ok()) return due.status();
    if (!*due) return false;
  }
  status = ValidateSaveOptions(options);
  if (!status.ok() && !processes_) return status.WithContext("saving " + StepName(step));

  using Source = SavePipeline::Source;
  const Source source = !options_.enable_async_checkpointing ? Source::kCallerWaits
                        : options.zero_copy                  ? Source::kCallerBuffers
                                                             : Source::kStaged;
  Manifest header;
  header.step = step;
  header.commit_time_ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(Now().time_since_epoch()).count();
  header.metrics = options.metrics;
  header.user_metadata = options.user_metadata;
  // The other processes deduplicate against the index as of the last commit.
  if (status.ok() && !is_primary()) status = store_->CatchUp();
  Result<std::shared_ptr<PendingSave>> prepared =
      status.ok() ? pipeline_.Prepare(state, std::move(header), options.assume_unchanged, source)
                  : Result<std::shared_ptr<PendingSave>>(status);
  if (processes_) {
    Result<uint64_t> generation = BeginAcrossProcesses(prepared.status());
    if (!generation.ok()) {
      if (prepared.ok()) pipeline_.Discard(**prepared);
      return generation.status().WithContext("saving " + StepName(step));
    }
    if (prepared.ok()) (*prepared)->set_generation(*generation);
  }
  if (!prepared.ok()) return prepared.status().WithContext("saving " + StepName(step));
  std::shared_ptr<PendingSave> save = std::move(*prepared);

  // The step is listed at once, and the steps retention will drop are not;
  // if the save fails, both changes are undone.
  steps_[step] = Retained(save->manifest());
  // Retention is the primary's (the others learn its outcome at the commit).
  std::map<int64_t, RetainedStep> pruned = is_primary() ? Prune() : std::map<int64_t, RetainedStep>();
  preempted_ = false;
  in_flight_ = true;
  if (source == Source::kCallerWaits) {
    status = Finish(save, std::move(pruned), /*may_coordinate=*/true);
    in_flight_ = false;
    in_flight_done_.SignalAll();
    if (!status.ok()) return status;
    return true;
  }
  const bool may_coordinate =
      !processes_ || processes_->coordinator->background_calls_allowed();
  background_ = std::thread([this, save, pruned = std::move(pruned), may_coordinate]() mutable {
    MutexLock lock(&mu_);
    background_error_ = Finish(save, std::move(pruned), may_coordinate);
    in_flight_ = false;
    in_flight_done_.SignalAll();
  });
  if (source == Source::kStaged) {
    // Staging waits for the writer to free slots, and the writer needs mu_
    // now and then: stage without holding it. If staging fails, the writer
    // stops and the error is the background error of this save.
    mu_.Unlock();
    status = pipeline_.Stage(*save);
    mu_.Lock();
    if (!status.ok()) {
      if (processes_) {
        // The commit round tells every process of the failure; each reports
        // it as its background error, at the same call (returning it here
        // would put this process one call ahead of the others).
        return true;
      }
      Status failed = FinishInFlight();
      return failed.ok() ? status : failed;
    }
  }
  return true;
}

Status Checkpointer::Impl::Finish(const std::shared_ptr<PendingSave>& save,
                                  std::map<int64_t, RetainedStep> pruned, bool may_coordinate) {
  const int64_t step = save->manifest().step;
  mu_.Unlock();
  Status status = pipeline_.WriteChunks(*save);
  if (status.ok() && !processes_) status = pipeline_.CommitLocally(*save);
  mu_.Lock();
  if (processes_) {
    if (may_coordinate) return CommitAcrossProcesses(*save, std::move(pruned), status);
    // The caller's thread commits (FinishInFlight); until then, reads skip
    // the step.
    deferred_commit_ = DeferredCommit{save, std::move(pruned), status};
    uncommitted_step_ = step;
    return Status::OK();
  }
  if (!status.ok()) {
    steps_.erase(step);
    steps_.merge(pruned);
    return status.WithContext("saving " + StepName(step) + " in " + workdir_);
  }
  return AfterCommit(step, pruned);
}

Status Checkpointer::Impl::AfterCommit(int64_t step, std::map<int64_t, RetainedStep>& pruned) {
  Result<bool> deleted = DeletePruned(pruned);
  if (!deleted.ok()) {
    return deleted.status().WithContext(StepName(step) +
                                        " was committed; retention after it failed");
  }
  if (*deleted && options_.gc_mode != GcMode::kOff) {
    GcSettings settings;
    settings.min_garbage_fraction =
        options_.gc_mode == GcMode::kGarbageThreshold ? options_.gc_garbage_threshold : 0.0;
    settings.rewrite_below_live_fraction = options_.gc_rewrite_threshold;
    mu_.Unlock();
    Result<GcStats> collected = ckptdb::CollectGarbage(store_.get(), settings);
    mu_.Lock();
    if (!collected.ok()) {
      return collected.status().WithContext(StepName(step) +
                                            " was committed; garbage collection after it failed");
    }
  }
  return Status::OK();
}

Result<uint64_t> Checkpointer::Impl::BeginAcrossProcesses(const Status& prepared) {
  Coordinator& coordinator = *processes_->coordinator;
  const int primary = processes_->primary;
  std::vector<std::string> statuses;
  Status status = WithoutLock(
      [&] { return coordinator.Gather(primary, EncodeVerdict(prepared), &statuses); });
  std::string verdict;
  if (is_primary()) {
    Status outcome = FirstFailure(status, statuses);
    uint64_t first = 0;
    if (outcome.ok()) outcome = store_->RemoveGenerationFiles();
    if (outcome.ok()) {
      Result<uint64_t> allocated = store_->AllocateGenerations(static_cast<uint64_t>(processes_->count));
      outcome = allocated.status();
      if (allocated.ok()) first = *allocated;
    }
    verdict = EncodeVerdict(outcome, first);
  }
  status = WithoutLock([&] { return coordinator.Broadcast(primary, &verdict); });
  if (!status.ok()) return status;
  Status outcome;
  Result<uint64_t> first = DecodeVerdict(verdict, &outcome);
  if (!first.ok()) return first.status();
  if (!outcome.ok()) return outcome;
  first_generation_ = *first;
  return *first + static_cast<uint64_t>(processes_->index);
}

Status Checkpointer::Impl::CommitParts(int64_t step, const std::vector<std::string>& parts) {
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
      MergeParts(decoded, static_cast<size_t>(processes_->primary), &new_chunks);
  if (!manifest.ok()) return manifest.status();
  // A chunk a process found in the index must still be there: retention
  // and GC run between saves, never beside one, so this only fails on a bug
  // or a damaged store, and then nothing is committed.
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
  return store_->CommitStep(step, EncodeManifest(*manifest), new_chunks);
}

Status Checkpointer::Impl::CommitAcrossProcesses(PendingSave& save,
                                                 std::map<int64_t, RetainedStep> pruned,
                                                 const Status& written) {
  Coordinator& coordinator = *processes_->coordinator;
  const int primary = processes_->primary;
  const int64_t step = save.manifest().step;
  std::vector<std::string> parts;
  Status status = WithoutLock([&] {
    return coordinator.Gather(primary, EncodePart(written, save.manifest(), save.new_chunks()),
                              &parts);
  });
  std::string verdict;
  bool committed_here = false;
  if (is_primary()) {
    Status outcome = status.ok() ? CommitParts(step, parts) : status;
    committed_here = outcome.ok();
    // Retention and GC run before the other processes hear of the commit:
    // their next save deduplicates against the index only after that.
    if (committed_here) {
      outcome = AfterCommit(step, pruned);
    } else {
      steps_.erase(step);
      steps_.merge(pruned);
    }
    verdict = EncodeVerdict(outcome, committed_here ? 1 : 0, AllSteps());
  }
  Status broadcast = WithoutLock([&] { return coordinator.Broadcast(primary, &verdict); });
  Status outcome = broadcast;
  std::vector<int64_t> steps;
  bool committed = committed_here;
  if (outcome.ok()) {
    Result<uint64_t> decoded = DecodeVerdict(verdict, &outcome, &steps);
    if (!decoded.ok()) outcome = decoded.status();
    if (!is_primary() && decoded.ok()) {
      committed = *decoded == 1;
      TakeStepList(steps);
    }
  }
  if (!outcome.ok() && !committed) {
    return outcome.WithContext("saving " + StepName(step) + " in " + workdir_);
  }
  return outcome;
}

void Checkpointer::Impl::TakeStepList(const std::vector<int64_t>& steps) {
  std::map<int64_t, RetainedStep> listed;
  for (int64_t step : steps) {
    auto known = steps_.find(step);
    listed[step] = known != steps_.end() ? known->second : RetainedStep{step, {}, std::nullopt};
  }
  steps_ = std::move(listed);
  // Reads find the steps once the store is caught up; a read that finds it
  // behind catches up again, so a failure here only delays.
  Status caught_up = store_->CatchUp();
  (void)caught_up;
}

Status Checkpointer::Impl::OnPrimary(const std::function<Status()>& act) {
  std::string verdict;
  if (is_primary()) {
    Status outcome = act();
    verdict = EncodeVerdict(outcome, 0, AllSteps());
  }
  Status status = WithoutLock(
      [&] { return processes_->coordinator->Broadcast(processes_->primary, &verdict); });
  if (!status.ok()) return status;
  Status outcome;
  std::vector<int64_t> steps;
  Result<uint64_t> decoded = DecodeVerdict(verdict, &outcome, &steps);
  if (!decoded.ok()) return decoded.status();
  if (!is_primary()) TakeStepList(steps);
  return outcome;
}

std::map<int64_t, RetainedStep> Checkpointer::Impl::Prune() {
  std::vector<RetainedStep> held;
  held.reserve(steps_.size());
  for (const auto& [step, retained] : steps_) held.push_back(retained);
  std::map<int64_t, RetainedStep> pruned;
  for (int64_t step : StepsToDelete(held, RetentionRulesFrom(options_))) {
    pruned.insert(steps_.extract(step));
  }
  return pruned;
}

Result<bool> Checkpointer::Impl::DeletePruned(std::map<int64_t, RetainedStep>& pruned) {
  if (pruned.empty()) return false;
  // Steps that cannot be deleted now go back to the list; a later retention
  // pass takes them.
  auto keep = [&](int64_t step) REQUIRES(mu_) { steps_.insert(pruned.extract(step)); };
  auto keep_all = [&]() REQUIRES(mu_) {
    while (!pruned.empty()) keep(pruned.begin()->first);
  };
  Result<LockedFile> lock = LockRetention(workdir_);
  if (!lock.ok()) {
    keep_all();
    // Busy: a reader is taking a hold right now.
    return lock.status().code() == Status::Code::kBusy ? Result<bool>(false) : lock.status();
  }
  Result<std::set<int64_t>> holds = HeldSteps(workdir_);
  if (!holds.ok()) {
    keep_all();
    return holds.status();
  }
  for (int64_t step : *holds) {
    if (pruned.count(step) != 0) keep(step);  // a reader holds it
  }
  if (pruned.empty()) return false;
  std::vector<int64_t> doomed;
  for (const auto& [step, retained] : pruned) doomed.push_back(step);
  Status status = store_->DeleteManifests(doomed);
  if (!status.ok()) {
    keep_all();
    return status;
  }
  return true;
}

Result<GcStats> Checkpointer::Impl::CollectGarbage(double min_garbage_fraction) {
  Status status = CheckWritable();
  if (!status.ok()) return status;
  GcSettings settings;
  settings.min_garbage_fraction = min_garbage_fraction;
  settings.rewrite_below_live_fraction = options_.gc_rewrite_threshold;
  if (!processes_) return ckptdb::CollectGarbage(store_.get(), settings);
  CompleteDeferredCommit();
  GcStats stats;
  status = OnPrimary([&]() {
    Result<GcStats> collected = ckptdb::CollectGarbage(store_.get(), settings);
    if (collected.ok()) stats = *collected;
    return collected.status();
  });
  if (!status.ok()) return status;
  return stats;
}

Result<int64_t> Checkpointer::Impl::ResolveStep(int64_t step) const {
  if (step == kLatestStep) {
    // The newest committed step: a multi-process save whose commit round
    // waits for the caller is listed, but not readable yet.
    for (auto it = steps_.rbegin(); it != steps_.rend(); ++it) {
      if (it->first != uncommitted_step_) return it->first;
    }
    return Status::NotFound("no checkpoint in " + workdir_);
  }
  if (step < 0) return Status::InvalidArgument("invalid " + StepName(step));
  if (step == uncommitted_step_) {
    return Status::FailedPrecondition(
        StepName(step) + " is saved but not committed yet: its commit waits for the next "
                         "Save, WaitUntilFinished, Delete, CollectGarbage or Close on every "
                         "process");
  }
  return step;
}

Result<int64_t> Checkpointer::Impl::ResolveStepToRead(int64_t step) {
  Status status = CheckOpen();
  if (!status.ok()) return status;
  // A reader catches up with the writer; the processes of a multi-process
  // writer know the steps from the primary.
  if (step == kLatestStep && store_->read_only() && !processes_) {
    status = Reload();
    if (!status.ok()) return status;
  }
  return ResolveStep(step);
}

Result<Checkpointer::Impl::ReadableStep> Checkpointer::Impl::OpenStepForRead(int64_t step) {
  Result<int64_t> resolved = ResolveStepToRead(step);
  if (!resolved.ok()) return resolved.status();
  ReadableStep readable;
  if (!store_->read_only()) {
    // The writer's retention runs under this checkpointer's mutex, held now.
    Result<Manifest> manifest = ReadStepManifest(*store_, *resolved);
    if (!manifest.ok()) return manifest.status();
    readable.manifest = std::move(*manifest);
    return readable;
  }
  auto read_current = [&]() -> Status {
    Status caught_up = store_->CatchUp();
    if (!caught_up.ok()) return caught_up;
    Result<Manifest> manifest = ReadStepManifest(*store_, *resolved);
    if (!manifest.ok()) return manifest.status();
    readable.manifest = std::move(*manifest);
    return Status::OK();
  };
  Result<LockedFile> hold = AcquireStepHold(workdir_, *resolved, read_current);
  if (hold.ok()) {
    readable.hold = std::move(*hold);
    return readable;
  }
  // No write access to the holds directory: read unheld (chunks moved by GC
  // are still found by DecodeTensors' catch-up retries).
  if (hold.status().code() != Status::Code::kIOError) return hold.status();
  Status status = read_current();
  if (!status.ok()) return status;
  return readable;
}

Status Checkpointer::Impl::Restore(Tree* state, int64_t step, const RestoreOptions& options) {
  if (state == nullptr) return Status::InvalidArgument("Restore into a null tree");
  auto nothing_readable = [&]() REQUIRES(mu_) {
    return steps_.empty() || (steps_.size() == 1 && steps_.begin()->first == uncommitted_step_);
  };
  if (!closed_ && nothing_readable() && options.noop_if_missing) {
    // A reader's step list may predate the writer's first commit.
    if (store_->read_only()) {
      Status reloaded = Reload();
      if (!reloaded.ok()) return reloaded;
    }
    if (nothing_readable()) return Status::OK();
  }
  Result<ReadableStep> readable = OpenStepForRead(step);
  if (!readable.ok()) return readable.status();
  return RestoreIntoTemplate(*store_, readable->manifest, state, options, Threads());
}

Result<Tree> Checkpointer::Impl::RestoreTree(int64_t step, const std::string& path) {
  Result<ReadableStep> readable = OpenStepForRead(step);
  if (!readable.ok()) return readable.status();
  return RestoreSubtree(*store_, readable->manifest, path, Threads());
}

Result<LockedFile> Checkpointer::Impl::HoldStep(int64_t* step) {
  Result<int64_t> resolved = ResolveStepToRead(*step);
  if (!resolved.ok()) return resolved.status();
  *step = *resolved;
  return AcquireStepHold(workdir_, *resolved, [&]() -> Status {
    Status caught_up = store_->CatchUp();
    if (!caught_up.ok()) return caught_up;
    Result<std::optional<std::string>> manifest = store_->ReadManifest(*resolved);
    if (!manifest.ok()) return manifest.status();
    if (!manifest->has_value()) {
      return Status::NotFound(StepName(*resolved) + " is not in " + workdir_);
    }
    return Status::OK();
  });
}

Result<StepMetadata> Checkpointer::Impl::ItemMetadata(int64_t step) {
  Status status = CheckOpen();
  if (!status.ok()) return status;
  Result<int64_t> resolved = ResolveStep(step);
  if (!resolved.ok()) return resolved.status();
  StepMetadata metadata;
  Result<Manifest> manifest = ReadStepManifest(*store_, *resolved, &metadata.manifest_bytes);
  if (manifest.status().IsNotFound() && store_->read_only()) {
    // Committed since this reader last caught up (the step list said so).
    status = store_->CatchUp();
    if (!status.ok()) return status;
    manifest = ReadStepManifest(*store_, *resolved, &metadata.manifest_bytes);
  }
  if (!manifest.ok()) return manifest.status();
  metadata.step = manifest->step;
  metadata.commit_time = Retained(*manifest).commit_time;
  metadata.metrics = manifest->metrics;
  metadata.user_metadata = manifest->user_metadata;
  for (const ManifestNode& node : manifest->nodes) {
    if (node.kind == Tree::Kind::kMap || node.kind == Tree::Kind::kList) continue;
    LeafMetadata leaf;
    leaf.path = node.path;
    leaf.kind = node.kind;
    if (node.kind == Tree::Kind::kTensor) {
      leaf.dtype = node.dtype;
      leaf.shape = node.shape;
      leaf.logical_bytes = node.byte_size;
      for (const ChunkRef& chunk : node.chunks) leaf.stored_bytes += chunk.stored_size;
      leaf.chunk_count = static_cast<uint32_t>(node.chunks.size());
      for (const ManifestBox& box : node.boxes) {
        leaf.saved_boxes.push_back({box.box.start, box.box.shape});
      }
      metadata.logical_bytes += node.byte_size;
    }
    leaf.int_value = node.kind == Tree::Kind::kInt ? node.int_value : 0;
    leaf.bool_value = node.kind == Tree::Kind::kBool && node.int_value != 0;
    leaf.float_value = node.kind == Tree::Kind::kFloat ? node.float_value : 0;
    if (node.kind == Tree::Kind::kString) leaf.string_value = node.string_value;
    metadata.leaves.push_back(std::move(leaf));
  }
  return metadata;
}

std::vector<int64_t> Checkpointer::Impl::AllSteps() const {
  std::vector<int64_t> steps;
  for (const auto& [step, retained] : steps_) steps.push_back(step);
  return steps;
}

std::optional<int64_t> Checkpointer::Impl::LatestStep() const {
  if (steps_.empty()) return std::nullopt;
  return steps_.rbegin()->first;
}

Status Checkpointer::Impl::Delete(int64_t step) {
  Status status = CheckWritable();
  if (!status.ok()) return status;
  if (processes_) {
    CompleteDeferredCommit();
    return OnPrimary([&]() REQUIRES(mu_) { return DeleteHere(step); });
  }
  return DeleteHere(step);
}

Status Checkpointer::Impl::DeleteHere(int64_t step) {
  if (steps_.count(step) == 0) return Status::NotFound(StepName(step) + " is not in " + workdir_);
  Result<LockedFile> lock = LockRetention(workdir_);
  if (!lock.ok()) return lock.status().WithContext("deleting " + StepName(step));
  Result<std::set<int64_t>> holds = HeldSteps(workdir_);
  if (!holds.ok()) return holds.status();
  if (holds->count(step) != 0) {
    return Status::FailedPrecondition(StepName(step) + " in " + workdir_ +
                                      " is held by a reader; delete it once released");
  }
  Status status = store_->DeleteManifests({step});
  if (!status.ok()) return status;
  steps_.erase(step);
  return Status::OK();
}

Status Checkpointer::Impl::Reload() {
  Status status = CheckOpen();
  if (status.ok()) status = store_->CatchUp();
  // The step list of a multi-process writer's processes is the primary's
  // (it may list a save in flight that the store does not hold yet).
  if (status.ok() && !processes_) status = LoadSteps();
  return status;
}

Status Checkpointer::Impl::Close() {
  if (closed_) return Status::OK();
  closed_ = true;
  return store_->Close();
}

// ---- StepHold ----

class [[gnu::visibility("hidden")]] StepHold::Impl {
 public:
  explicit Impl(LockedFile file) : file(std::move(file)) {}
  LockedFile file;
};

StepHold::StepHold() = default;
StepHold::StepHold(int64_t step, std::unique_ptr<Impl> impl)
    : step_(step), impl_(std::move(impl)) {}
StepHold::StepHold(StepHold&&) noexcept = default;
StepHold& StepHold::operator=(StepHold&&) noexcept = default;
StepHold::~StepHold() = default;
bool StepHold::held() const { return impl_ != nullptr && impl_->file.held(); }
void StepHold::Release() {
  if (impl_ != nullptr) impl_->file.Release();
}

// ---- Public API: lock, then forward ----

Checkpointer::Checkpointer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Checkpointer::~Checkpointer() {
  Status ignored = Close();  // errors are reported by an explicit Close()
  (void)ignored;
}

Result<std::unique_ptr<Checkpointer>> Checkpointer::Open(const std::string& workdir,
                                                         CheckpointerOptions options) {
  return CheckpointerAccess::Open(workdir, std::move(options), /*env=*/nullptr);
}

Result<std::unique_ptr<Checkpointer>> CheckpointerAccess::Open(const std::string& workdir,
                                                               CheckpointerOptions options,
                                                               rocksdb::Env* env) {
  // What it takes to form the group is checked first; with several
  // processes, the other options' errors (options may differ between
  // processes) go through the rounds below, so that every process fails.
  Status status = ValidateMultiprocessing(options);
  if (!status.ok()) return status.WithContext("opening " + workdir);
  const Status invalid = ValidateOptions(options);
  const bool several_possible = options.multiprocessing.coordinator != nullptr && options.create;
  if (!invalid.ok() && !several_possible) return invalid.WithContext("opening " + workdir);
  std::optional<Checkpointer::Impl::Processes> processes;
  const MultiprocessingOptions& multi = options.multiprocessing;
  if (multi.coordinator != nullptr && options.create) {
    Checkpointer::Impl::Processes joined;
    joined.coordinator = multi.coordinator;
    joined.primary = multi.primary_host;
    if (!multi.active_processes.empty()) {
      Result<std::shared_ptr<Coordinator>> group =
          multi.coordinator->Subgroup(multi.active_processes);
      if (!group.ok()) return group.status().WithContext("opening " + workdir);
      joined.coordinator = std::move(*group);
      joined.primary = static_cast<int>(
          std::find(multi.active_processes.begin(), multi.active_processes.end(),
                    multi.primary_host) -
          multi.active_processes.begin());
    }
    joined.index = joined.coordinator->process_index();
    joined.count = joined.coordinator->process_count();
    if (joined.count > 1) {
      std::vector<int> everyone(static_cast<size_t>(joined.count));
      std::iota(everyone.begin(), everyone.end(), 0);
      Result<std::shared_ptr<Coordinator>> decisions = joined.coordinator->Subgroup(everyone);
      if (!decisions.ok()) return decisions.status().WithContext("opening " + workdir);
      joined.decisions = std::move(*decisions);
      processes = std::move(joined);
    }
  }
  // The primary opens (and creates) the store first; the others then open
  // it as readers, and every process learns whether all could.
  const bool primary = !processes || processes->index == processes->primary;
  const Store::Mode mode =
      options.create && primary ? Store::Mode::kWrite : Store::Mode::kReadOnly;
  auto open_store = [&]() -> Result<std::unique_ptr<Store>> {
    if (!invalid.ok()) return invalid;
    return Store::Open(workdir, mode, env, options.owner_only);
  };
  Result<std::unique_ptr<Store>> store =
      primary ? open_store()
              : Result<std::unique_ptr<Store>>(
                    Status::FailedPrecondition(workdir + " is opened once the primary has"));
  if (!processes) {
    const auto give_up = std::chrono::steady_clock::now() + options.wait_for_store;
    while (store.status().IsNotFound() && std::chrono::steady_clock::now() < give_up) {
      constexpr std::chrono::milliseconds kPoll{100};
      std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(
          kPoll, give_up - std::chrono::steady_clock::now()));
      store = open_store();
    }
  } else {
    std::string verdict = primary ? EncodeVerdict(store.status()) : std::string();
    status = processes->coordinator->Broadcast(processes->primary, &verdict);
    Status opened;
    if (status.ok()) status = DecodeVerdict(verdict, &opened).status();
    if (status.ok() && !opened.ok()) {
      status = opened.WithContext("the primary process could not open the store");
    }
    if (!primary && status.ok()) store = open_store();
  }
  if (!store.ok() && !processes) return store.status();
  if (options.create && options.max_delta_chain > 0 && store.ok() &&
      (*store)->format_version() < kFirstDeltaStoreFormatVersion) {
    return Status::FailedPrecondition(
        "max_delta_chain needs a store of format version " +
        std::to_string(kFirstDeltaStoreFormatVersion) + "; " + workdir + " has version " +
        std::to_string((*store)->format_version()) + " (earlier builds could not read it)");
  }
  std::unique_ptr<Checkpointer::Impl> impl;
  Status loaded = status.ok() ? store.status() : status;
  if (loaded.ok()) {
    const bool several = processes.has_value();
    const std::shared_ptr<Coordinator> coordinator =
        several ? processes->coordinator : std::shared_ptr<Coordinator>();
    const int primary_index = several ? processes->primary : 0;
    impl = std::make_unique<Checkpointer::Impl>(workdir, std::move(options), std::move(*store),
                                                std::move(processes));
    MutexLock lock(&impl->mu_);
    loaded = impl->LoadSteps();
    // Every process opens, or none.
    if (several) loaded = AgreeOnStatus(*coordinator, primary_index, loaded);
  } else if (processes) {
    // This process failed before it had a checkpointer; it still takes its
    // part in the round the others are in, and fails whatever they say.
    Status agreed = AgreeOnStatus(*processes->coordinator, processes->primary, loaded);
    (void)agreed;
  }
  if (!loaded.ok()) return loaded.WithContext("opening " + workdir);
  return std::unique_ptr<Checkpointer>(new Checkpointer(std::move(impl)));
}

bool Checkpointer::ShouldSave(int64_t step) const {
  MutexLock lock(&impl_->mu_);
  // A failed round (the coordinator failed) answers no; the next collective
  // call reports the failure.
  Result<bool> due = impl_->AgreedShouldSave(step);
  return due.ok() && *due;
}

Result<bool> Checkpointer::Save(const Tree& state, int64_t step, const SaveOptions& options) {
  MutexLock lock(&impl_->mu_);
  return impl_->Save(state, step, options);
}

Result<bool> Checkpointer::MaybeSave(const Tree& state, int64_t step, bool force) {
  SaveOptions options;
  options.force = force;
  return MaybeSave(state, step, options);
}

Result<bool> Checkpointer::MaybeSave(const Tree& state, int64_t step, const SaveOptions& options) {
  MutexLock lock(&impl_->mu_);
  Result<bool> due = impl_->AgreedShouldSave(step);
  if (!due.ok()) return due.status();
  if (!*due) return false;
  return impl_->Save(state, step, options, /*decided=*/true);
}

void Checkpointer::SignalPreemption() {
  MutexLock lock(&impl_->mu_);
  impl_->SignalPreemption();
}

Status Checkpointer::Restore(Tree* state, int64_t step, const RestoreOptions& options) {
  MutexLock lock(&impl_->mu_);
  impl_->AwaitInFlight();
  return impl_->Restore(state, step, options);
}

Result<Tree> Checkpointer::RestoreTree(int64_t step, const std::string& path) {
  MutexLock lock(&impl_->mu_);
  impl_->AwaitInFlight();
  return impl_->RestoreTree(step, path);
}

Result<StepHold> Checkpointer::HoldStep(int64_t step) {
  MutexLock lock(&impl_->mu_);
  impl_->AwaitInFlight();
  Result<LockedFile> hold = impl_->HoldStep(&step);
  if (!hold.ok()) return hold.status();
  return StepHold(step, std::make_unique<StepHold::Impl>(std::move(*hold)));
}

Status Checkpointer::IterNewCheckpoints(const std::function<bool(int64_t step)>& visit,
                                        const IterateOptions& options) {
  using Clock = std::chrono::steady_clock;
  std::optional<int64_t> last_visited;
  for (;;) {
    // Wait for a step newer than the last one visited.
    const Clock::time_point wait_start = Clock::now();
    std::optional<int64_t> newest;
    for (;;) {
      Status status = Reload();
      if (!status.ok()) return status;
      newest = LatestStep();
      if (newest.has_value() && (!last_visited.has_value() || *newest > *last_visited)) break;
      if (options.timeout.has_value() &&
          Clock::now() + options.poll_interval > wait_start + *options.timeout &&
          (!options.timeout_fn || options.timeout_fn())) {
        return Status::OK();
      }
      std::this_thread::sleep_for(options.poll_interval);
    }
    const Clock::time_point visit_start = Clock::now();
    Result<StepHold> hold = HoldStep(*newest);
    if (hold.status().IsNotFound()) continue;  // pruned since the listing: look again
    if (!hold.ok()) return hold.status();
    last_visited = newest;
    const bool keep_going = visit(*newest);
    hold->Release();
    if (!keep_going) return Status::OK();
    std::this_thread::sleep_until(visit_start + options.min_interval);
  }
}

Result<StepMetadata> Checkpointer::ItemMetadata(int64_t step) {
  MutexLock lock(&impl_->mu_);
  impl_->AwaitInFlight();
  return impl_->ItemMetadata(step);
}

std::vector<int64_t> Checkpointer::AllSteps() const {
  MutexLock lock(&impl_->mu_);
  return impl_->AllSteps();
}

std::optional<int64_t> Checkpointer::LatestStep() const {
  MutexLock lock(&impl_->mu_);
  return impl_->LatestStep();
}

Status Checkpointer::Delete(int64_t step) {
  MutexLock lock(&impl_->mu_);
  impl_->AwaitInFlight();
  return impl_->Delete(step);
}

Result<GcStats> Checkpointer::CollectGarbage() {
  MutexLock lock(&impl_->mu_);
  impl_->AwaitInFlight();
  return impl_->CollectGarbage(/*min_garbage_fraction=*/0.0);
}

Status Checkpointer::Reload() {
  MutexLock lock(&impl_->mu_);
  impl_->AwaitInFlight();
  return impl_->Reload();
}

Status Checkpointer::WaitUntilFinished() {
  MutexLock lock(&impl_->mu_);
  return impl_->FinishInFlight();
}

Status Checkpointer::Close() {
  MutexLock lock(&impl_->mu_);
  Status background = impl_->FinishInFlight();
  Status closed = impl_->Close();
  return background.ok() ? closed : background;
}

}  // namespace ckptdb
