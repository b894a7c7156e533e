// Options of a Checkpointer, after Kauldron's kd.ckpts.Checkpointer and
// Orbax's CheckpointManagerOptions. Every field documents its default.
// Invalid values make Checkpointer::Open fail with InvalidArgument naming the
// field; values this build does not implement fail with NotSupported.

#ifndef CKPTDB_OPTIONS_H_
#define CKPTDB_OPTIONS_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace ckptdb {

// Which end of best_metric_path is better. Default: kMax.
enum class BestMode { kMax, kMin };

// When garbage collection runs by itself. Default: kAfterRetention.
enum class GcMode {
  kOff,               // only when Checkpointer::CollectGarbage is called
  kAfterRetention,    // after every save whose retention deleted a step
  kGarbageThreshold,  // after retention deleted a step, if garbage reaches
                      // gc_garbage_threshold of the stored chunk bytes
};

class Coordinator;

// Multi-process training: one checkpoint written by many processes at once,
// each writing its own shards (Tree::Sharded). Every process opens the same
// workdir with a coordinator of the job; the primary commits each step and
// runs retention and garbage collection; the others write their chunks and
// read the store. Open, Save, MaybeSave, ShouldSave, WaitUntilFinished,
// Delete, CollectGarbage and Close are collective (every process calls them,
// in the same order, with the same step and force; metrics and user
// metadata are the primary's); restores and the other queries are not: each
// process reads the boxes it asks for. With a coordinator that forbids
// background calls, an asynchronous save commits at the next collective
// call; until then it is listed but not readable (checkpointer.h,
// kLatestStep). Protocol and format: doc/format.md §7.
struct MultiprocessingOptions {
  // The job's processes (ckptdb/mpi.h: MpiCoordinator). nullptr: this
  // process alone. Default: nullptr.
  std::shared_ptr<Coordinator> coordinator = nullptr;
  // The process that creates the store, commits steps, and runs retention
  // and garbage collection: an index of the coordinator. Default: 0.
  int primary_host = 0;
  // Only these processes (indices of the coordinator) take part, as with
  // Orbax: each of them opens the checkpointer, the others must not (Open
  // is InvalidArgument on them). Must hold primary_host. Empty: every
  // process. Default: empty.
  std::vector<int> active_processes = {};
};

struct CheckpointerOptions {
  // ---- Save decision (ShouldSave) ----

  // A step is due when step % save_interval_steps == 0 (absolute alignment:
  // 0, n, 2n, ... whatever step the run resumed at). Must be >= 1. Default: 1.
  int64_t save_interval_steps = 1;

  // Steps that are due whatever the interval. Default: none.
  std::vector<int64_t> save_on_steps = {};

  // ---- Retention: runs after each committed save ----

  // Keep the latest max_to_keep steps (or, with best_metric_path, the best
  // max_to_keep). std::nullopt keeps every step; 0 keeps none (the step just
  // saved is deleted once committed, unless another rule keeps it). Must be
  // >= 0. Default: 3 (Kauldron's default).
  std::optional<int64_t> max_to_keep = 3;

  // Also keep a chain of steps at least this far apart in commit time: the
  // oldest step, then every step at least the interval after the last one
  // kept (inclusive). Must be positive. Default: unset.
  std::optional<std::chrono::seconds> keep_time_interval = {};

  // Also keep every step with step % keep_period == 0. Must be >= 1.
  // Default: unset.
  std::optional<int64_t> keep_period = {};

  // The metric (a key of SaveOptions::metrics, e.g. "eval/accuracy") that ranks
  // steps for max_to_keep instead of recency. Empty: rank by recency.
  // Default: empty.
  std::string best_metric_path = {};

  // Whether a larger or a smaller best metric is better. Default: kMax.
  BestMode best_mode = BestMode::kMax;

  // With best_metric_path, keep steps saved without that metric (true), or
  // delete them once more than max_to_keep steps are held (false; they never
  // fill a best-N slot). Default: true.
  bool keep_checkpoints_without_metrics = true;

  // ---- Garbage collection: reclaims chunks no step references ----

  // When it runs by itself; see GcMode. It runs inside Save, after the new
  // step has committed. Default: kAfterRetention.
  GcMode gc_mode = GcMode::kAfterRetention;

  // kGarbageThreshold: collect once dead chunks reach this fraction of the
  // stored chunk bytes. In [0, 1]. Default: 0.2.
  double gc_garbage_threshold = 0.2;

  // A chunk file (one save's new chunks) whose live bytes fall below this
  // fraction is rewritten so the dead part's space comes back; wholly dead
  // files are always deleted. In [0, 1]; 0 never rewrites. Default: 0.5.
  double gc_rewrite_threshold = 0.5;

  // ---- Opening ----

  // true: open the store for writing, creating it (and the directory) when
  // missing. false: open an existing store read-only, as an evaluator does,
  // alongside a writer in another process; Save and Delete then fail with
  // FailedPrecondition. Default: true.
  bool create = true;

  // create = false: when `workdir` holds no store yet (or one still being
  // created), Open waits up to this long for a writer to create it, looking
  // every 100 ms, before giving NotFound: an evaluator may start before its
  // trainer (Orbax's checkpoints_iterator waits for the directory). Must be
  // 0 with create = true. Default: 0 (no wait).
  std::chrono::milliseconds wait_for_store{0};

  // A store created by Open gets a directory only its owner may enter (mode
  // 0700): checkpoints often hold private data. false: the process's umask
  // decides. An existing directory is never changed. Default: true.
  bool owner_only = true;

  // Multi-process writing; see MultiprocessingOptions. Default: one process.
  MultiprocessingOptions multiprocessing = {};

  // ---- Saving ----

  // true: Save returns after the blocking phase (hashing every chunk and
  // copying the chunks the store lacks into staging memory); compression,
  // writing, the commit, retention and garbage collection go on in the
  // background. The next Save, WaitUntilFinished or Close reports a
  // background failure; Restore and the other reads wait for the save in
  // flight. false: Save returns once all of that is done. Default: true.
  bool enable_async_checkpointing = true;

  // Memory for the copies an asynchronous save keeps of chunks it has not
  // written yet, allocated at the first such save and reused. When a save
  // has more new bytes than this, its blocking phase waits for the writer to
  // free some. At least chunk_size_bytes. Default: 256 MiB.
  uint64_t staging_bytes = uint64_t{256} << 20;

  // Threads for hashing, compression and decoding (the calling thread
  // included); 0 means one per core. Default: 0.
  uint32_t worker_threads = 0;

  // ---- Storage ----

  // true: spend little CPU on compression (zstd level 1). false: compress
  // harder (zstd level 3) for smaller stores at ~1.3x the CPU. Measured on
  // trained float32 state, per core: level 1 stores 0.826 of the bytes at
  // 0.90 GB/s, level 3 0.806 at 0.69 GB/s; bfloat16: 0.649 at 0.59 GB/s vs
  // 0.602 at 0.46 GB/s. (Level 9 would store 0.800 / 0.590 at 0.13 / 0.08
  // GB/s: not worth it.) Only affects new chunks. Default: true.
  bool fast = true;

  // Tensors are cut into chunks of this many bytes (the last one shorter);
  // the chunk is the unit of dedup and compression. Between 4 KiB and 64 MiB.
  // Only affects new saves. Default: 4 MiB.
  uint32_t chunk_size_bytes = 4u << 20;

  // Delta encoding. 0: every new chunk is stored whole. N > 0: a new chunk
  // at a tensor position (path and chunk index) where this process's
  // previous save left another chunk of the same size is stored as the XOR
  // with that chunk, compressed (consecutive training steps differ in few
  // bits per value), at most N deltas in a row before a whole chunk again.
  // Restoring a chunk then reads up to N + 1 chunks. Costs a copy of the
  // last saved value of every position in memory (the size of the state),
  // kept by the background writer. Dedup is unchanged: a chunk's identity is
  // the digest of its own bytes. At most 32; needs a store of format
  // version 3 (created by this version or later): FailedPrecondition
  // otherwise. Only affects new chunks. Default: 0.
  uint32_t max_delta_chain = 0;

  // The time recorded as each step's commit time, used by keep_time_interval.
  // Empty: std::chrono::system_clock::now. Tests inject a fake clock.
  std::function<std::chrono::system_clock::time_point()> clock = {};
};

// Options of one Save call.
struct SaveOptions {
  // Save even when ShouldSave(step) is false. A step already stored is never
  // overwritten: forcing it fails with AlreadyExists. Default: false.
  bool force = false;

  // Metrics stored with the step, e.g. {"eval/accuracy", 0.91}; the one named
  // by best_metric_path drives best-N retention. NaN is refused. Default: none.
  std::map<std::string, double> metrics = {};

  // Free-form key/value strings stored with the step (e.g. a config hash).
  // Default: none.
  std::map<std::string, std::string> user_metadata = {};

  // The caller promises that the state's tensor bytes stay alive and
  // unchanged until this save has finished (WaitUntilFinished, or the next
  // Save or Close, returns). An asynchronous save then copies nothing: its
  // blocking phase only hashes. Default: false.
  bool zero_copy = false;

  // Paths (tensors, or subtrees: everything below them) whose tensors the
  // caller guarantees hold the same bytes, dtype and shape as in the previous
  // save of this Checkpointer object, e.g. {"params/backbone"} when
  // fine-tuning with a frozen backbone. Their bytes are not read: the step
  // reuses the previous save's chunks, so a save where 90% of the state is
  // declared unchanged blocks for about the time of reading the other 10%.
  // A tensor is read as usual when there is no previous save (the first
  // save after Open), its dtype or shape differs, or a chunk of it is no
  // longer stored. A broken promise stores the previous save's values for
  // that tensor (never wrong bytes under a chunk's digest).
  // A path the state does not hold is InvalidArgument. Default: empty.
  std::vector<std::string> assume_unchanged = {};
};

// Options of one Restore call.
struct RestoreOptions {
  // When the store holds no step at all, return OK and leave the template
  // untouched instead of NotFound, whatever step was asked for (Kauldron's
  // rule). A missing step of a store that holds others is still NotFound.
  // Default: false.
  bool noop_if_missing = false;

  // true: decode straight into the template's tensor buffers (memory stays at
  // 1x the state; the template must be writable). false: leave the template's
  // buffers untouched and give each tensor leaf a new owned buffer.
  // Default: true.
  bool donate = true;

  // Restore only these paths and everything below them (e.g. {"params"} for
  // a warm start from another run's weights). The template must match the
  // stored step on these subtrees only; the rest of the template is neither
  // checked nor touched. A path the step does not hold is NotFound.
  // Empty: the whole tree. Default: empty.
  std::vector<std::string> only_paths = {};
};

// Options of Checkpointer::IterNewCheckpoints (Orbax's checkpoints_iterator).
struct IterateOptions {
  // After a step was visited, wait at least this long (from the start of that
  // visit) before the next. Default: 0.
  std::chrono::milliseconds min_interval{0};

  // How often to look for a new step while waiting. Default: 1 s.
  std::chrono::milliseconds poll_interval{1000};

  // Stop waiting for a new step after this long (measured from the start of
  // each wait) if timeout_fn is empty or returns true; with a timeout_fn
  // returning false, keep waiting and ask it again at every poll. Unset:
  // wait forever. Default: unset.
  std::optional<std::chrono::milliseconds> timeout = {};
  std::function<bool()> timeout_fn = {};
};

}  // namespace ckptdb

#endif  // CKPTDB_OPTIONS_H_
