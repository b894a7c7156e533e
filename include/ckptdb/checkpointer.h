// Checkpointer: the store of one training run's checkpoints. Start here.
//
//   auto ckpt = ckptdb::Checkpointer::Open("/runs/a/checkpoints", options);
//   if (!ckpt.ok()) { ... ckpt.status().ToString() ... }
//   Result<bool> saved = (*ckpt)->Save(state, step);
//   Status s = (*ckpt)->Restore(&state);          // latest step, into `state`
//
// Each step's tensors are cut into chunks addressed by a keyed XXH3-128 digest
// of their bytes and compressed with zstd, so identical bytes are stored once
// across tensors and steps. A step is committed when its manifest is durably
// written; a crash at any moment leaves either the whole step or none of it.
//
// Thread safety: all methods may be called from several threads; calls are
// serialized internally. One process at a time may open a store for writing
// (others get Busy); any number may open it read-only (create = false).

#ifndef CKPTDB_CHECKPOINTER_H_
#define CKPTDB_CHECKPOINTER_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ckptdb/options.h"
#include "ckptdb/results.h"
#include "ckptdb/status.h"
#include "ckptdb/tensor.h"
#include "ckptdb/tree.h"

namespace ckptdb {

// Pass as `step` to mean the latest step: the largest listed, LatestStep()
// (a reader's after catching up with the writer). A multi-process save
// whose commit waits for the next collective call (a coordinator without
// background calls, Coordinator::background_calls_allowed) is listed at once
// but not readable until then: reading it, as the latest or by number, is
// FailedPrecondition saying so.
inline constexpr int64_t kLatestStep = -1;

// A reader's claim on a step: while it lives, the writer's retention defers
// deleting the step (and its chunks) until it is released. Released by
// Release() or the destructor; a crashed process's holds end with it.
// Movable, not copyable.
class CKPTDB_EXPORT StepHold {
 public:
  StepHold();
  StepHold(StepHold&&) noexcept;
  StepHold& operator=(StepHold&&) noexcept;
  ~StepHold();

  int64_t step() const { return step_; }
  bool held() const;
  void Release();

 private:
  friend class Checkpointer;
  class Impl;
  // Not exported: only the library makes holds.
  [[gnu::visibility("hidden")]] StepHold(int64_t step, std::unique_ptr<Impl> impl);

  int64_t step_ = -1;
  std::unique_ptr<Impl> impl_;
};

class CKPTDB_EXPORT Checkpointer {
 public:
  // Opens the store in `workdir` (see CheckpointerOptions::create).
  // Errors: InvalidArgument (an option, named), NotSupported (an option this
  // build lacks; a store of a newer format), NotFound (create = false and no
  // store), FailedPrecondition (the directory holds something that is not a
  // ckptdb store; nothing is modified), Busy (another process writes to it).
  static Result<std::unique_ptr<Checkpointer>> Open(const std::string& workdir,
                                                    CheckpointerOptions options);

  // Closes, ignoring errors; call Close() to see them.
  ~Checkpointer();

  Checkpointer(const Checkpointer&) = delete;
  Checkpointer& operator=(const Checkpointer&) = delete;

  // The save decision: false when read-only or step <= LatestStep(); else
  // true when step % save_interval_steps == 0, step is in save_on_steps, a
  // preemption was signalled, or no step is stored yet. With several
  // processes, collective: the primary decides, a preemption signalled on
  // any process counting for all (false if the coordinator fails).
  bool ShouldSave(int64_t step) const;

  // Saves `state` as `step` if due (options.force skips the due check) and
  // returns whether it saved. Waits for the previous save first; if that one
  // failed in the background, returns its error (once) and saves nothing.
  // Asynchronous (the default; see enable_async_checkpointing): returns after
  // the blocking phase, when the caller may change its buffers; AllSteps and
  // LatestStep show the step at once. Synchronous: returns once the step is
  // committed, retention has run and (per gc_mode) garbage was collected.
  // Errors: AlreadyExists (forced save of a stored step), InvalidArgument
  // (negative step, bad tree or metrics), FailedPrecondition (read-only
  // store), IOError. An error before the commit leaves nothing of the step
  // visible; an error of retention or GC after it says "committed".
  Result<bool> Save(const Tree& state, int64_t step, const SaveOptions& options = {});

  // Save(state, step, {.force = force}) only if ShouldSave(step); a step that
  // is not due is not saved even when forced (Kauldron's rule).
  Result<bool> MaybeSave(const Tree& state, int64_t step, bool force = false);
  // Save(state, step, options) only if ShouldSave(step), with metrics, user
  // metadata and the other save options (options.force does not make a step
  // due). Pass SaveOptions by name: MaybeSave(state, step, {}) is ambiguous.
  Result<bool> MaybeSave(const Tree& state, int64_t step, const SaveOptions& options);

  // Marks that the job is being preempted: the next step above LatestStep()
  // becomes due whatever the interval. Cleared by the next save.
  void SignalPreemption();

  // Restores `step` (kLatestStep: the largest) into the template `state`,
  // whose structure, kinds, dtypes and shapes must match the stored step's
  // exactly; scalars take the stored values. On a mismatch, InvalidArgument
  // lists every missing, extra and mismatching path and nothing is written.
  // NotFound if the step (or any step) is missing, unless noop_if_missing and
  // the store is empty. Template tensors that share memory are refused with
  // donate. Corruption names the tensor whose bytes fail their digest; the
  // template's contents are then unspecified. On a read-only store,
  // kLatestStep is resolved after catching up with the writer. Every byte of
  // a template tensor is overwritten, so its whole 2 MiB pages are advised
  // for transparent huge pages first (madvise MADV_HUGEPAGE: memory not yet
  // touched then faults in 2 MiB at a time; the advice never changes bytes).
  Status Restore(Tree* state, int64_t step = kLatestStep, const RestoreOptions& options = {});

  // Restores the whole tree of `step` with owned buffers (no template
  // needed), or only the subtree at `path` ("params", "params/encoder").
  // NotFound if the step does not hold `path`. Tensors below 2 MiB share
  // 8 MiB blocks of transparent huge pages, in tree order (decoding into
  // them faults in 2 MiB at a time): a block stays mapped while any tensor
  // in it is alive, so keeping a few small tensors of a restored tree keeps
  // up to 8 MiB each. Restore without donate allocates the same way.
  Result<Tree> RestoreTree(int64_t step = kLatestStep, const std::string& path = "");

  // The tree of `step` without its data: paths, kinds, dtypes, shapes, sizes.
  Result<StepMetadata> ItemMetadata(int64_t step = kLatestStep);

  // The steps held, ascending; and the largest, if any.
  std::vector<int64_t> AllSteps() const;
  std::optional<int64_t> LatestStep() const;

  // Removes `step` (its manifest; chunks no other step uses become garbage).
  // NotFound if absent; FailedPrecondition when read-only.
  Status Delete(int64_t step);

  // Deletes the chunks no step references and gives their disk space back
  // (see GcStats). Refuses with Corruption, deleting nothing, if a step
  // references a chunk that is missing. FailedPrecondition when read-only.
  Result<GcStats> CollectGarbage();

  // Holds `step` (kLatestStep: the latest after catching up) so that the
  // writer's retention defers deleting it; see StepHold. NotFound if the step
  // is gone. Holds are files under <workdir>/holds, so holding needs write
  // access there (IOError otherwise). On a read-only store, Restore and
  // RestoreTree hold their step while they read (or, where the holds
  // directory is not writable, read unheld and may then get NotFound if
  // retention removes the step meanwhile).
  Result<StepHold> HoldStep(int64_t step = kLatestStep);

  // For an evaluator following a trainer: waits for steps newer than the last
  // one visited and calls `visit(step)` with the newest (intermediate steps
  // are skipped), holding that step during the call. Stops when `visit`
  // returns false (OK), when waiting times out per `options` (OK), or on an
  // error (returned). Orbax's checkpoints_iterator semantics.
  Status IterNewCheckpoints(const std::function<bool(int64_t step)>& visit,
                            const IterateOptions& options = {});

  // Read-only stores: catch up with the writer's commits and deletions.
  // Writable stores: re-read the step list (the processes of a
  // multi-process writer other than the primary only catch up: their step
  // list is the primary's).
  Status Reload();

  // Waits for the save in flight, if any; returns its error (once) if it
  // failed in the background.
  Status WaitUntilFinished();

  // Finishes pending work (returning a background save's error) and closes.
  // Afterwards, calls that read or write the store fail with
  // FailedPrecondition, ShouldSave is false and MaybeSave does nothing;
  // Close and WaitUntilFinished return OK. Idempotent.
  Status Close();

 private:
  friend class CheckpointerAccess;  // the library's own ways to open
  class Impl;
  // Not exported: Open makes checkpointers.
  [[gnu::visibility("hidden")]] explicit Checkpointer(std::unique_ptr<Impl> impl);

  std::unique_ptr<Impl> impl_;
};

}  // namespace ckptdb

#endif  // CKPTDB_CHECKPOINTER_H_
