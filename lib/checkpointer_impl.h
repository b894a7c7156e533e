// The state behind a Checkpointer and its lock discipline: private to
// lib/checkpointer.cc (the save decision, the save and its commit,
// retention, GC, deletion, opening, and the public methods, which lock and
// forward) and lib/checkpointer_read.cc (the step list, and reading steps).

#ifndef CKPTDB_LIB_CHECKPOINTER_IMPL_H_
#define CKPTDB_LIB_CHECKPOINTER_IMPL_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "ckptdb/checkpointer.h"
#include "commit_protocol.h"
#include "manifest.h"
#include "mutex.h"
#include "parallel.h"
#include "retention.h"
#include "save_pipeline.h"
#include "step_holds.h"
#include "store.h"

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
  Impl(std::string workdir, CheckpointerOptions options, std::unique_ptr<Store> store,
       std::optional<Processes> processes)
      : workdir_(std::move(workdir)),
        options_(std::move(options)),
        store_(std::move(store)),
        pipeline_(store_.get(), PipelineSettings(options_, processes)),
        protocol_(processes ? NewCoordinatedCommit(std::move(*processes), store_.get())
                            : NewLocalCommit(&pipeline_)) {}

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
  // (Orbax's preemption sync point) counting for all.
  Result<bool> AgreedShouldSave(int64_t step) REQUIRES(mu_);

  // Waits (releasing mu_ meanwhile) until no save is in flight.
  void AwaitInFlight() REQUIRES(mu_);
  // Commits a save the background wrote but could not commit (its protocol
  // forbids rounds from a background thread; collective: only from
  // collective methods); its error becomes the background error.
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
  // Whether this checkpointer saves: the other processes of a multi-process
  // writer read the store and write their chunk files beside it, and the
  // primary commits.
  bool saves() const { return !store_->read_only() || protocol_->coordinated(); }
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
  // The writer's part of a save: writes its chunks with mu_ released, then
  // commits (CommitSave), unless `may_commit` is false (a protocol that
  // cannot commit from the background thread): its commit then waits in
  // deferred_commit_ for the caller's thread (FinishInFlight).
  Status Finish(const std::shared_ptr<PendingSave>& save, std::map<int64_t, RetainedStep> pruned,
                bool may_commit) REQUIRES(mu_);
  // Commits `save` through the protocol (`written`: how writing its chunks
  // went); retention and GC run after it.
  Status CommitSave(PendingSave& save, std::map<int64_t, RetainedStep>& pruned,
                    const Status& written) REQUIRES(mu_);
  // After a step committed: deletes the steps retention pruned and collects
  // garbage as gc_mode says (the committing process only).
  Status AfterCommit(int64_t step, std::map<int64_t, RetainedStep>& pruned) REQUIRES(mu_);
  // What the protocol may ask of this checkpointer in a call about `step`
  // (and the steps its retention `pruned`, for a commit).
  CommitHost Host(int64_t step, std::map<int64_t, RetainedStep>* pruned) REQUIRES(mu_);
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
  SavePipeline pipeline_;  // owned by the save in flight
  const std::unique_ptr<CommitProtocol> protocol_;  // one process, or several
  std::map<int64_t, RetainedStep> steps_ GUARDED_BY(mu_);  // the steps held, as retention sees them
  bool preempted_ GUARDED_BY(mu_) = false;
  bool closed_ GUARDED_BY(mu_) = false;
  bool in_flight_ GUARDED_BY(mu_) = false;
  CondVar in_flight_done_{&mu_};
  std::thread background_ GUARDED_BY(mu_);
  Status background_error_ GUARDED_BY(mu_);  // reported once: Save, WaitUntilFinished or Close
  // A save written in the background whose commit the caller's thread runs
  // (the protocol cannot commit from the background: a coordinator that
  // forbids background calls).
  struct DeferredCommit {
    std::shared_ptr<PendingSave> save;
    std::map<int64_t, RetainedStep> pruned;
    Status written;
  };
  std::optional<DeferredCommit> deferred_commit_ GUARDED_BY(mu_);
  std::optional<int64_t> uncommitted_step_ GUARDED_BY(mu_);  // its step
};

// A hold on a step: the hold file's lock (step_holds.h).
class [[gnu::visibility("hidden")]] StepHold::Impl {
 public:
  explicit Impl(LockedFile file) : file(std::move(file)) {}
  LockedFile file;
};

}  // namespace ckptdb

#endif  // CKPTDB_LIB_CHECKPOINTER_IMPL_H_
