// Checkpointer: the save decision, the save in the background and its
// commit, retention and GC around it, deletion, opening; the public methods
// lock and forward. The state and its lock discipline are
// checkpointer_impl.h, the read side checkpointer_read.cc; the save itself is
// save_pipeline.h, its commit (one process or several) commit_protocol.h,
// option checks validate_options.h, storage store.h.

#include <algorithm>
#include <set>

#include "checkpointer_impl.h"
#include "checkpointer_internal.h"
#include "ckptdb/coordinator.h"
#include "garbage_collector.h"
#include "restore.h"
#include "save_decision.h"
#include "validate_options.h"

namespace ckptdb {

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
  Status committed = CommitSave(*deferred.save, deferred.pruned, deferred.written);
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
  if (closed_) return ShouldSave(step);
  Result<bool> due =
      protocol_->AgreeShouldSave(&preempted_, [&]() REQUIRES(mu_) { return ShouldSave(step); });
  if (!due.ok()) return due.status().WithContext("agreeing on saving " + StepName(step));
  return due;
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
  if (!status.ok() && !protocol_->coordinated()) return status.WithContext("saving " + StepName(step));

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
  if (status.ok() && !protocol_->commits()) status = store_->CatchUp();
  Result<std::shared_ptr<PendingSave>> prepared =
      status.ok() ? pipeline_.Prepare(state, std::move(header), options.assume_unchanged, source)
                  : Result<std::shared_ptr<PendingSave>>(status);
  Result<std::optional<uint64_t>> generation = protocol_->Begin(prepared.status(), Host(step, nullptr));
  if (!generation.ok()) {
    if (prepared.ok()) pipeline_.Discard(**prepared);
    return generation.status().WithContext("saving " + StepName(step));
  }
  if (prepared.ok() && generation->has_value()) (*prepared)->set_generation(**generation);
  if (!prepared.ok()) return prepared.status().WithContext("saving " + StepName(step));
  std::shared_ptr<PendingSave> save = std::move(*prepared);

  // The step is listed at once, and the steps retention will drop are not;
  // if the save fails, both changes are undone.
  steps_[step] = Retained(save->manifest());
  // Retention is the committing process's (the others learn its outcome at
  // the commit).
  std::map<int64_t, RetainedStep> pruned =
      protocol_->commits() ? Prune() : std::map<int64_t, RetainedStep>();
  preempted_ = false;
  in_flight_ = true;
  if (source == Source::kCallerWaits) {
    status = Finish(save, std::move(pruned), /*may_commit=*/true);
    in_flight_ = false;
    in_flight_done_.SignalAll();
    if (!status.ok()) return status;
    return true;
  }
  const bool may_commit = protocol_->commits_in_background();
  background_ = std::thread([this, save, pruned = std::move(pruned), may_commit]() mutable {
    MutexLock lock(&mu_);
    background_error_ = Finish(save, std::move(pruned), may_commit);
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
      if (protocol_->coordinated()) {
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
                                  std::map<int64_t, RetainedStep> pruned, bool may_commit) {
  mu_.Unlock();
  Status written = pipeline_.WriteChunks(*save);
  mu_.Lock();
  if (!may_commit) {
    // Until the caller's thread commits, reads skip the step.
    deferred_commit_ = DeferredCommit{save, std::move(pruned), written};
    uncommitted_step_ = save->manifest().step;
    return Status::OK();
  }
  return CommitSave(*save, pruned, written);
}

Status Checkpointer::Impl::CommitSave(PendingSave& save, std::map<int64_t, RetainedStep>& pruned,
                                      const Status& written) {
  const int64_t step = save.manifest().step;
  bool committed = false;
  Status status = protocol_->Commit(save, written, Host(step, &pruned), &committed);
  if (!status.ok() && !committed) {
    return status.WithContext("saving " + StepName(step) + " in " + workdir_);
  }
  return status;
}

CommitHost Checkpointer::Impl::Host(int64_t step, std::map<int64_t, RetainedStep>* pruned) {
  CommitHost host;
  host.unlocked = [this](const std::function<Status()>& collective) REQUIRES(mu_) {
    return WithoutLock(collective);
  };
  if (pruned != nullptr) {
    host.after_commit = [this, step, pruned]() REQUIRES(mu_) { return AfterCommit(step, *pruned); };
    host.undo = [this, step, pruned]() REQUIRES(mu_) {
      steps_.erase(step);
      steps_.merge(*pruned);
    };
  }
  host.steps = [this]() REQUIRES(mu_) { return AllSteps(); };
  host.adopt_steps = [this](const std::vector<int64_t>& steps) REQUIRES(mu_) { TakeStepList(steps); };
  return host;
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
  CompleteDeferredCommit();
  GcStats stats;
  status = protocol_->OnCommitter(
      [&]() {
        Result<GcStats> collected = ckptdb::CollectGarbage(store_.get(), settings);
        if (collected.ok()) stats = *collected;
        return collected.status();
      },
      Host(-1, nullptr));
  if (!status.ok()) return status;
  return stats;
}

Status Checkpointer::Impl::Delete(int64_t step) {
  Status status = CheckWritable();
  if (!status.ok()) return status;
  CompleteDeferredCommit();
  return protocol_->OnCommitter([&]() REQUIRES(mu_) { return DeleteHere(step); },
                                Host(step, nullptr));
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

Status Checkpointer::Impl::Close() {
  if (closed_) return Status::OK();
  closed_ = true;
  return store_->Close();
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
  std::optional<Processes> processes;
  if (options.create) {
    Result<std::optional<Processes>> joined = JoinProcesses(options.multiprocessing);
    if (!joined.ok()) return joined.status().WithContext("opening " + workdir);
    processes = std::move(*joined);
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
    Status opened;
    status = ShareStatus(*processes->coordinator, processes->primary, store.status(), &opened);
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
