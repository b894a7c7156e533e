// Checkpointer: the step list, the save decision, the background save and
// retention around it; the public methods lock and forward. The save itself
// is save_pipeline.h, the read path restore.h, option checks
// validate_options.h, storage store.h.

#include "ckptdb/checkpointer.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <set>
#include <thread>

#include "checkpointer_internal.h"
#include "garbage_collector.h"
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
  Impl(std::string workdir, CheckpointerOptions options, std::unique_ptr<Store> store)
      : workdir_(std::move(workdir)),
        options_(std::move(options)),
        store_(std::move(store)),
        pipeline_(store_.get(), PipelineSettings(options_)) {}

  Mutex mu_;

  Status LoadSteps() REQUIRES(mu_);
  bool ShouldSave(int64_t step) const REQUIRES(mu_);
  Result<bool> Save(const Tree& state, int64_t step, const SaveOptions& options) REQUIRES(mu_);
  void SignalPreemption() REQUIRES(mu_) { preempted_ = true; }
  Status Restore(Tree* state, int64_t step, const RestoreOptions& options) REQUIRES(mu_);
  Result<Tree> RestoreTree(int64_t step, const std::string& path) REQUIRES(mu_);
  Result<LockedFile> HoldStep(int64_t* step) REQUIRES(mu_);
  Result<StepMetadata> ItemMetadata(int64_t step) REQUIRES(mu_);
  std::vector<int64_t> AllSteps() const REQUIRES(mu_);
  std::optional<int64_t> LatestStep() const REQUIRES(mu_);
  Status Delete(int64_t step) REQUIRES(mu_);
  Result<GcStats> CollectGarbage(double min_garbage_fraction) REQUIRES(mu_);
  Status Reload() REQUIRES(mu_);
  Status Close() REQUIRES(mu_);

  // Waits (releasing mu_ meanwhile) until no save is in flight.
  void AwaitInFlight() REQUIRES(mu_);
  // AwaitInFlight, then takes the background error.
  Status FinishInFlight() REQUIRES(mu_);

 private:
  static SavePipeline::Settings PipelineSettings(const CheckpointerOptions& options) {
    SavePipeline::Settings settings;
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
  Status CheckWritable() const REQUIRES(mu_) {
    Status status = CheckOpen();
    if (status.ok() && store_->read_only()) {
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
  // runs retention and GC.
  Status Finish(PendingSave& save, std::map<int64_t, RetainedStep> pruned) REQUIRES(mu_);
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
  SavePipeline pipeline_;  // owned by the save in flight
  std::map<int64_t, RetainedStep> steps_ GUARDED_BY(mu_);  // the steps held, as retention sees them
  bool preempted_ GUARDED_BY(mu_) = false;
  bool closed_ GUARDED_BY(mu_) = false;
  bool in_flight_ GUARDED_BY(mu_) = false;
  CondVar in_flight_done_{&mu_};
  std::thread background_ GUARDED_BY(mu_);
  Status background_error_ GUARDED_BY(mu_);  // reported once: Save, WaitUntilFinished or Close
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
  input.read_only = closed_ || store_->read_only();
  return IsSaveDue(input, options_);
}

void Checkpointer::Impl::AwaitInFlight() {
  while (in_flight_) in_flight_done_.Wait();
  if (background_.joinable()) background_.join();  // it has released mu_ and is ending
}

Status Checkpointer::Impl::FinishInFlight() {
  AwaitInFlight();
  return std::exchange(background_error_, Status::OK());
}

Result<bool> Checkpointer::Impl::Save(const Tree& state, int64_t step,
                                      const SaveOptions& options) {
  Status status = CheckWritable();
  if (!status.ok()) return status;
  status = FinishInFlight();
  if (!status.ok()) return status;
  if (step < 0) return Status::InvalidArgument("cannot save negative " + StepName(step));
  if (steps_.count(step) != 0) {
    if (!options.force) return false;
    return Status::AlreadyExists(StepName(step) + " is already in " + workdir_);
  }
  if (!options.force && !ShouldSave(step)) return false;
  status = ValidateSaveOptions(options);
  if (!status.ok()) return status.WithContext("saving " + StepName(step));

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
  Result<std::shared_ptr<PendingSave>> prepared =
      pipeline_.Prepare(state, std::move(header), options.assume_unchanged, source);
  if (!prepared.ok()) return prepared.status().WithContext("saving " + StepName(step));
  std::shared_ptr<PendingSave> save = std::move(*prepared);

  // The step is listed at once, and the steps retention will drop are not;
  // if the save fails, both changes are undone.
  steps_[step] = Retained(save->manifest());
  std::map<int64_t, RetainedStep> pruned = Prune();
  preempted_ = false;
  in_flight_ = true;
  if (source == Source::kCallerWaits) {
    status = Finish(*save, std::move(pruned));
    in_flight_ = false;
    in_flight_done_.SignalAll();
    if (!status.ok()) return status;
    return true;
  }
  background_ = std::thread([this, save, pruned = std::move(pruned)]() mutable {
    MutexLock lock(&mu_);
    background_error_ = Finish(*save, std::move(pruned));
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
      Status failed = FinishInFlight();
      return failed.ok() ? status : failed;
    }
  }
  return true;
}

Status Checkpointer::Impl::Finish(PendingSave& save, std::map<int64_t, RetainedStep> pruned) {
  const int64_t step = save.manifest().step;
  mu_.Unlock();
  Status status = pipeline_.WriteAndCommit(save);
  mu_.Lock();
  if (!status.ok()) {
    steps_.erase(step);
    steps_.merge(pruned);
    return status.WithContext("saving " + StepName(step) + " in " + workdir_);
  }
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
  return ckptdb::CollectGarbage(store_.get(), settings);
}

Result<int64_t> Checkpointer::Impl::ResolveStep(int64_t step) const {
  if (step == kLatestStep) {
    if (steps_.empty()) return Status::NotFound("no checkpoint in " + workdir_);
    return steps_.rbegin()->first;
  }
  if (step < 0) return Status::InvalidArgument("invalid " + StepName(step));
  return step;
}

Result<int64_t> Checkpointer::Impl::ResolveStepToRead(int64_t step) {
  Status status = CheckOpen();
  if (!status.ok()) return status;
  if (step == kLatestStep && store_->read_only()) {
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
  if (!closed_ && steps_.empty() && options.noop_if_missing) return Status::OK();
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
  Result<Manifest> manifest = ReadStepManifest(*store_, *resolved);
  if (!manifest.ok()) return manifest.status();
  StepMetadata metadata;
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
  if (steps_.count(step) == 0) return Status::NotFound(StepName(step) + " is not in " + workdir_);
  Result<LockedFile> lock = LockRetention(workdir_);
  if (!lock.ok()) return lock.status().WithContext("deleting " + StepName(step));
  Result<std::set<int64_t>> holds = HeldSteps(workdir_);
  if (!holds.ok()) return holds.status();
  if (holds->count(step) != 0) {
    return Status::FailedPrecondition(StepName(step) + " in " + workdir_ +
                                      " is held by a reader; delete it once released");
  }
  status = store_->DeleteManifests({step});
  if (!status.ok()) return status;
  steps_.erase(step);
  return Status::OK();
}

Status Checkpointer::Impl::Reload() {
  Status status = CheckOpen();
  if (status.ok()) status = store_->CatchUp();
  if (status.ok()) status = LoadSteps();
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
  Status status = ValidateOptions(options);
  if (!status.ok()) return status.WithContext("opening " + workdir);
  const Store::Mode mode = options.create ? Store::Mode::kWrite : Store::Mode::kReadOnly;
  const auto give_up = std::chrono::steady_clock::now() + options.wait_for_store;
  Result<std::unique_ptr<Store>> store = Store::Open(workdir, mode, env, options.owner_only);
  while (store.status().IsNotFound() && std::chrono::steady_clock::now() < give_up) {
    constexpr std::chrono::milliseconds kPoll{100};
    std::this_thread::sleep_for(
        std::min<std::chrono::steady_clock::duration>(kPoll, give_up - std::chrono::steady_clock::now()));
    store = Store::Open(workdir, mode, env, options.owner_only);
  }
  if (!store.ok()) return store.status();
  if (options.create && options.max_delta_chain > 0 &&
      (*store)->format_version() < kFirstDeltaStoreFormatVersion) {
    return Status::FailedPrecondition(
        "max_delta_chain needs a store of format version " +
        std::to_string(kFirstDeltaStoreFormatVersion) + "; " + workdir + " has version " +
        std::to_string((*store)->format_version()) + " (earlier builds could not read it)");
  }
  auto impl = std::make_unique<Checkpointer::Impl>(workdir, std::move(options), std::move(*store));
  {
    MutexLock lock(&impl->mu_);
    status = impl->LoadSteps();
  }
  if (!status.ok()) return status;
  return std::unique_ptr<Checkpointer>(new Checkpointer(std::move(impl)));
}

bool Checkpointer::ShouldSave(int64_t step) const {
  MutexLock lock(&impl_->mu_);
  return impl_->ShouldSave(step);
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
  if (!impl_->ShouldSave(step)) return false;
  return impl_->Save(state, step, options);
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
