// Checkpointer: the save decision, the save and restore flows, retention.
// Storage details live in store.h; the manifest encoding in manifest.h.

#include "ckptdb/checkpointer.h"

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "checkpointer_internal.h"
#include "chunk_codec.h"
#include "garbage_collector.h"
#include "manifest.h"
#include "parallel.h"
#include "retention.h"
#include "save_decision.h"
#include "staging_pool.h"
#include "step_holds.h"
#include "store.h"

namespace ckptdb {
namespace {

constexpr uint32_t kMinChunkSize = 4u << 10;

std::string StepName(int64_t step) { return "step " + std::to_string(step); }

Status ValidateOptions(const CheckpointerOptions& options) {
  if (options.save_interval_steps < 1) {
    return Status::InvalidArgument("save_interval_steps must be >= 1, got " +
                                   std::to_string(options.save_interval_steps));
  }
  for (int64_t step : options.save_on_steps) {
    if (step < 0) {
      return Status::InvalidArgument("save_on_steps holds a negative step " + std::to_string(step));
    }
  }
  if (options.max_to_keep.has_value() && *options.max_to_keep < 0) {
    return Status::InvalidArgument("max_to_keep must be unset or >= 0, got " +
                                   std::to_string(*options.max_to_keep));
  }
  if (options.keep_period.has_value() && *options.keep_period < 1) {
    return Status::InvalidArgument("keep_period must be >= 1, got " +
                                   std::to_string(*options.keep_period));
  }
  if (options.keep_time_interval.has_value() && options.keep_time_interval->count() <= 0) {
    return Status::InvalidArgument("keep_time_interval must be positive, got " +
                                   std::to_string(options.keep_time_interval->count()) + " s");
  }
  if (options.best_mode != BestMode::kMax && options.best_mode != BestMode::kMin) {
    return Status::InvalidArgument("best_mode must be kMax or kMin");
  }
  if (options.chunk_size_bytes < kMinChunkSize || options.chunk_size_bytes > kMaxChunkRawSize ||
      options.chunk_size_bytes % 8 != 0) {
    return Status::InvalidArgument(
        "chunk_size_bytes must be a multiple of 8 between 4 KiB and 64 MiB, got " +
        std::to_string(options.chunk_size_bytes));
  }
  for (auto [name, value] : {std::pair{"gc_garbage_threshold", options.gc_garbage_threshold},
                             std::pair{"gc_rewrite_threshold", options.gc_rewrite_threshold}}) {
    if (!(value >= 0.0 && value <= 1.0)) {
      return Status::InvalidArgument(std::string(name) + " must be in [0, 1], got " +
                                     std::to_string(value));
    }
  }
  if (options.staging_bytes < options.chunk_size_bytes) {
    return Status::InvalidArgument("staging_bytes must be at least chunk_size_bytes (" +
                                   std::to_string(options.chunk_size_bytes) + "), got " +
                                   std::to_string(options.staging_bytes));
  }
  if (options.multiprocessing.primary_host != 0 ||
      !options.multiprocessing.active_processes.empty()) {
    return Status::NotSupported(
        "multiprocessing: this build writes from a single process (primary_host 0, "
        "active_processes empty)");
  }
  return Status::OK();
}

// A save between its blocking phase and its commit. The blocking phase
// (Prepare) hashes every chunk and lists those the store lacks in digest
// order; the caller's thread then stages them (copies into the staging pool,
// in order) while the writer (Finish) compresses and writes them as they
// become ready, releasing slots as it goes.
struct InFlightSave {
  struct Chunk {
    ChunkDigest digest;
    const std::byte* data = nullptr;  // caller memory, or a staging slot
    uint32_t size = 0;
    size_t element_width = 0;
    std::vector<std::pair<uint32_t, uint32_t>> refs;  // (node, chunk) in the manifest
    std::optional<size_t> slot;  // set once the chunk's bytes are in the staging pool
  };

  Manifest manifest;
  std::vector<Chunk> chunks;               // new chunks, digest order
  // The writer reads caller memory that the caller may change meanwhile
  // (an asynchronous zero_copy save): it re-hashes what it compresses.
  bool recheck_caller_bytes = false;
  std::map<int64_t, RetainedStep> pruned;  // steps retention drops once this commits

  // Staging progress: chunks[0, staged) may be read by the writer. A stager
  // that fails (no memory) abandons the save: the writer then stops. The
  // writer starts once staging is done, or once the stager needs it to free
  // slots: compressing earlier would only slow down the caller's blocking
  // phase, which has the cores to itself until then.
  std::mutex mutex;
  std::condition_variable progress;
  size_t staged = 0;
  bool writer_needed = false;
  Status abandoned;

  void NeedWriter() {
    {
      std::lock_guard<std::mutex> lock(mutex);
      writer_needed = true;
    }
    progress.notify_all();
  }
  void AwaitWriterStart(size_t total) {
    std::unique_lock<std::mutex> lock(mutex);
    progress.wait(lock, [&] { return staged >= total || writer_needed || !abandoned.ok(); });
  }

  void MarkStaged(size_t count) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      staged = count;
    }
    progress.notify_all();
  }
  void Abandon(const Status& why) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      abandoned = why;
    }
    progress.notify_all();
  }
  // Waits until `count` chunks are staged; the stager's error if it gave up.
  Status AwaitStaged(size_t count) {
    std::unique_lock<std::mutex> lock(mutex);
    progress.wait(lock, [&] { return staged >= count || !abandoned.ok(); });
    return staged >= count ? Status::OK() : abandoned;
  }
  // How many chunks were staged (after the stager finished or gave up).
  size_t StagedWhenDone(size_t total) {
    std::unique_lock<std::mutex> lock(mutex);
    progress.wait(lock, [&] { return staged >= total || !abandoned.ok(); });
    return staged;
  }
};

// True when `path` is `prefix` or below it ("" is the root, above all).
bool IsUnder(std::string_view path, std::string_view prefix) {
  if (prefix.empty() || path == prefix) return true;
  return path.size() > prefix.size() && path.substr(0, prefix.size()) == prefix &&
         path[prefix.size()] == '/';
}

bool IsUnderAny(std::string_view path, const std::vector<std::string>& prefixes) {
  return std::any_of(prefixes.begin(), prefixes.end(),
                     [&](const std::string& prefix) { return IsUnder(path, prefix); });
}

// The first of `paths` that names none of `nodes`, if any.
std::optional<std::string> MissingPath(const std::vector<ManifestNode>& nodes,
                                       const std::vector<std::string>& paths) {
  for (const std::string& path : paths) {
    if (std::none_of(nodes.begin(), nodes.end(),
                     [&](const ManifestNode& node) { return node.path == path; })) {
      return path;
    }
  }
  return std::nullopt;
}

// A tensor to decode: where its chunks go.
struct DecodeTarget {
  const ManifestNode* node;
  std::byte* dest;
};

}  // namespace

class Checkpointer::Impl {
 public:
  Impl(std::string workdir, CheckpointerOptions options, std::unique_ptr<Store> store)
      : workdir_(std::move(workdir)), options_(std::move(options)), store_(std::move(store)) {}

  Status LoadSteps();
  bool ShouldSaveLocked(int64_t step) const;
  Result<bool> Save(const Tree& state, int64_t step, const SaveOptions& options,
                    std::unique_lock<std::mutex>& lock);
  Status RestoreInto(Tree* state, int64_t step, const RestoreOptions& options);
  Result<Tree> RestoreTree(int64_t step, const std::string& path);
  Result<StepHold> HoldStep(int64_t step);
  Result<StepMetadata> ItemMetadata(int64_t step);
  Status Delete(int64_t step);
  Result<GcStats> CollectGarbage(double min_garbage_fraction);
  Status Reload();
  Status Close();

  std::mutex mu_;
  std::string workdir_;
  CheckpointerOptions options_;
  std::unique_ptr<Store> store_;
  std::map<int64_t, RetainedStep> steps_;  // the steps held, as retention sees them
  bool preempted_ = false;
  bool closed_ = false;

  // The save in flight. Everything but the in-memory queries (ShouldSave,
  // LatestStep, AllSteps) waits for it first (AwaitInFlight).
  bool in_flight_ = false;
  std::condition_variable in_flight_done_;
  std::thread background_;
  Status background_error_;  // reported once, by Save, WaitUntilFinished or Close
  std::unique_ptr<StagingPool> staging_;
  // The writer's compressed chunks, one per chunk of its window, kept from
  // save to save: fresh buffers would cost a page fault per 4 KiB each time
  // (more than compressing the page).
  std::vector<std::string> encode_buffers_;
  // Per tensor path, the previous save's tensor: its chunk list (reused for
  // SaveOptions::assume_unchanged) and which of its chunks were new then.
  // Chunks that were not (frozen weights) are hashed without a speculative
  // copy.
  struct SavedTensor {
    ManifestNode node;
    std::vector<bool> chunk_was_new;
  };
  std::map<std::string, SavedTensor> last_save_;

  // Waits (releasing `lock` meanwhile) until no save is in flight.
  void AwaitInFlight(std::unique_lock<std::mutex>& lock);
  // AwaitInFlight, then takes the background error.
  Status FinishInFlight(std::unique_lock<std::mutex>& lock);

 private:
  Status CheckOpen() const {
    if (closed_)
      return Status::FailedPrecondition("the checkpointer of " + workdir_ + " is closed");
    return Status::OK();
  }
  Status CheckWritable() const {
    if (store_->read_only()) {
      return Status::FailedPrecondition(workdir_ + " is open read-only (create = false)");
    }
    return Status::OK();
  }
  size_t Threads() const {
    return options_.worker_threads == 0 ? WorkerThreads() : options_.worker_threads;
  }
  // Chunks the writer compresses at once (it needs them all staged first);
  // never more than the staging slots.
  size_t WriterWindow() const {
    const size_t window = 2 * Threads();
    return staging_ ? std::max<size_t>(1, std::min(window, staging_->max_slots())) : window;
  }
  std::chrono::system_clock::time_point Now() const {
    return options_.clock ? options_.clock() : std::chrono::system_clock::now();
  }
  RetainedStep Retained(const Manifest& manifest) const;
  Result<int64_t> ResolveStep(int64_t step) const;
  Result<Manifest> ReadManifest(int64_t step) const;
  // The manifest of `step` (kLatestStep resolved) of an open checkpointer.
  Result<Manifest> ReadStepManifest(int64_t step) const;
  // A step's manifest, held against the writer's retention while the hold
  // lives (readers only: a writer's retention runs under mu_).
  struct ReadableStep {
    Manifest manifest;
    LockedFile hold;
  };
  Result<ReadableStep> OpenStepForRead(int64_t step);
  // CheckOpen and ResolveStep; readers resolve kLatestStep after catching up.
  Result<int64_t> ResolveStepToRead(int64_t step);
  // Hashes and deduplicates. With `stage`, chunks predicted to be new (they
  // were new at this path in the previous save, or the path is new) are
  // copied into staging slots while being hashed, as far as slots last.
  Result<std::shared_ptr<InFlightSave>> Prepare(const Tree& state, int64_t step,
                                                const SaveOptions& options, bool stage);
  // Copies the new chunks into the staging pool, in order, waiting for free
  // slots; the writer consumes them meanwhile. Called without mu_ held.
  Status Stage(InFlightSave& save);
  // Writes, commits, then runs retention and GC. Called with mu_ held in
  // `lock`; releases it while writing and collecting.
  Status Finish(InFlightSave& save, std::unique_lock<std::mutex>& lock);
  Status WriteChunks(InFlightSave& save, std::vector<IndexEntry>* index_entries);
  Status DecodeTensors(int64_t step, const std::vector<DecodeTarget>& targets) const;
  // Retention, in two halves around the commit. Prune takes the steps
  // retention drops out of the list (at once, as Orbax shows them);
  // DeletePruned deletes their manifests once the new step has committed,
  // putting back any it must not delete yet (held by a reader), and returns
  // whether it deleted any.
  std::map<int64_t, RetainedStep> Prune();
  Result<bool> DeletePruned(std::map<int64_t, RetainedStep>& pruned);
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

Result<Manifest> Checkpointer::Impl::ReadManifest(int64_t step) const {
  Result<std::optional<std::string>> bytes = store_->ReadManifest(step);
  if (!bytes.ok()) return bytes.status();
  if (!bytes->has_value()) {
    return Status::NotFound(StepName(step) + " is not in " + workdir_);
  }
  Result<Manifest> manifest = DecodeManifest(**bytes);
  if (!manifest.ok()) {
    return manifest.status().WithContext("manifest of " + StepName(step) + " in " + workdir_);
  }
  if (manifest->step != step) {
    return Status::Corruption("manifest stored under " + StepName(step) + " in " + workdir_ +
                              " describes step " + std::to_string(manifest->step));
  }
  return manifest;
}

Result<Manifest> Checkpointer::Impl::ReadStepManifest(int64_t step) const {
  Status status = CheckOpen();
  if (!status.ok()) return status;
  Result<int64_t> resolved = ResolveStep(step);
  if (!resolved.ok()) return resolved.status();
  return ReadManifest(*resolved);
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
    Result<Manifest> manifest = ReadManifest(step);
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

bool Checkpointer::Impl::ShouldSaveLocked(int64_t step) const {
  SaveDecisionInput input;
  input.step = step;
  if (!steps_.empty()) input.latest_step = steps_.rbegin()->first;
  input.preempted = preempted_;
  input.read_only = closed_ || store_->read_only();
  return IsSaveDue(input, options_);
}

void Checkpointer::Impl::AwaitInFlight(std::unique_lock<std::mutex>& lock) {
  in_flight_done_.wait(lock, [&] { return !in_flight_; });
  if (background_.joinable()) background_.join();  // it has released mu_ and is ending
}

Status Checkpointer::Impl::FinishInFlight(std::unique_lock<std::mutex>& lock) {
  AwaitInFlight(lock);
  return std::exchange(background_error_, Status::OK());
}

Result<bool> Checkpointer::Impl::Save(const Tree& state, int64_t step, const SaveOptions& options,
                                      std::unique_lock<std::mutex>& lock) {
  Status status = CheckOpen();
  if (status.ok()) status = CheckWritable();
  if (!status.ok()) return status;
  status = FinishInFlight(lock);
  if (!status.ok()) return status;
  if (step < 0) return Status::InvalidArgument("cannot save negative " + StepName(step));
  if (steps_.count(step) != 0) {
    if (!options.force) return false;
    return Status::AlreadyExists(StepName(step) + " is already in " + workdir_);
  }
  if (!options.force && !ShouldSaveLocked(step)) return false;
  const bool stage = options_.enable_async_checkpointing && !options.zero_copy;
  if (stage && staging_ == nullptr) {
    staging_ = std::make_unique<StagingPool>(options_.chunk_size_bytes,
                                             options_.staging_bytes / options_.chunk_size_bytes);
  }
  Result<std::shared_ptr<InFlightSave>> prepared = Prepare(state, step, options, stage);
  if (!prepared.ok()) return prepared.status().WithContext("saving " + StepName(step));
  std::shared_ptr<InFlightSave> save = std::move(*prepared);
  save->recheck_caller_bytes = options_.enable_async_checkpointing && options.zero_copy;

  // The step is listed at once, and the steps retention will drop are not;
  // if the save fails, both changes are undone.
  steps_[step] = Retained(save->manifest);
  save->pruned = Prune();
  preempted_ = false;
  in_flight_ = true;
  if (!options_.enable_async_checkpointing) {
    save->MarkStaged(save->chunks.size());  // the writer reads the caller's buffers
    status = Finish(*save, lock);
    in_flight_ = false;
    in_flight_done_.notify_all();
    if (!status.ok()) return status;
    return true;
  }
  if (!stage) save->MarkStaged(save->chunks.size());
  background_ = std::thread([this, save] {
    std::unique_lock<std::mutex> background_lock(mu_);
    background_error_ = Finish(*save, background_lock);
    in_flight_ = false;
    in_flight_done_.notify_all();
  });
  if (stage) {
    // Staging waits for the writer to free slots, and the writer needs mu_
    // now and then: stage without holding it. If staging fails, the writer
    // gives up and the error is the background error of this save.
    lock.unlock();
    status = Stage(*save);
    lock.lock();
    if (!status.ok()) {
      Status failed = FinishInFlight(lock);
      return failed.ok() ? status : failed;
    }
  }
  return true;
}

Result<std::shared_ptr<InFlightSave>> Checkpointer::Impl::Prepare(const Tree& state, int64_t step,
                                                                  const SaveOptions& options,
                                                                  bool stage) {
  if (options.metrics.size() + options.user_metadata.size() > kMaxTreeNodes) {
    return Status::InvalidArgument("more than " + std::to_string(kMaxTreeNodes) +
                                   " metrics and user metadata entries");
  }
  for (const auto& [name, value] : options.metrics) {
    if (std::isnan(value)) return Status::InvalidArgument("metric '" + name + "' is NaN");
  }
  auto save = std::make_shared<InFlightSave>();
  Manifest& manifest = save->manifest;
  Result<std::vector<ManifestNode>> nodes = FlattenTree(state);
  if (!nodes.ok()) return nodes.status();
  manifest.nodes = std::move(*nodes);
  manifest.step = step;
  manifest.commit_time_ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(Now().time_since_epoch()).count();
  manifest.metrics = options.metrics;
  manifest.user_metadata = options.user_metadata;

  // Tensors declared unchanged take the previous save's chunk list, unread,
  // when the store still holds every chunk of it: a broken promise then
  // stores stale values for that tensor, but never bytes under a digest that
  // is not theirs.
  std::vector<bool> reused(manifest.nodes.size(), false);
  if (!options.assume_unchanged.empty()) {
    if (std::optional<std::string> missing =
            MissingPath(manifest.nodes, options.assume_unchanged)) {
      return Status::InvalidArgument("assume_unchanged names '" + *missing +
                                     "', which the state does not hold");
    }
    for (uint32_t n = 0; n < manifest.nodes.size(); ++n) {
      ManifestNode& node = manifest.nodes[n];
      if (node.kind != Tree::Kind::kTensor || !IsUnderAny(node.path, options.assume_unchanged)) {
        continue;
      }
      auto previous = last_save_.find(node.path);
      if (previous == last_save_.end() || previous->second.node.dtype != node.dtype ||
          previous->second.node.shape != node.shape) {
        continue;
      }
      std::vector<ChunkRef> chunks = previous->second.node.chunks;
      bool all_stored = true;
      for (ChunkRef& ref : chunks) {
        Result<std::optional<ChunkLocation>> stored = store_->FindChunk(ref.digest);
        if (!stored.ok()) return stored.status();
        if (!stored->has_value()) {
          all_stored = false;
          break;
        }
        ref.stored_size = (*stored)->stored_size;
      }
      if (!all_stored) continue;
      node.chunks = std::move(chunks);
      reused[n] = true;
    }
  }

  // Hash every other chunk, on all cores.
  struct Piece {
    uint32_t node;
    uint32_t chunk;
    const Tensor* tensor;
    std::optional<size_t> slot;  // a speculative copy
  };
  const uint32_t chunk_size = options_.chunk_size_bytes;
  std::vector<Piece> pieces;
  for (uint32_t n = 0; n < manifest.nodes.size(); ++n) {
    ManifestNode& node = manifest.nodes[n];
    if (node.kind != Tree::Kind::kTensor || reused[n]) continue;
    const Tensor* tensor = &state.Find(node.path)->tensor();
    node.chunks.resize((node.byte_size + chunk_size - 1) / chunk_size);
    for (uint32_t k = 0; k < node.chunks.size(); ++k) {
      const uint64_t offset = uint64_t{k} * chunk_size;
      node.chunks[k].raw_size =
          static_cast<uint32_t>(std::min<uint64_t>(chunk_size, node.byte_size - offset));
      pieces.push_back({n, k, tensor, std::nullopt});
    }
  }
  // Slots taken here go back to the pool unless a new chunk keeps them.
  struct ReleaseUnused {
    std::vector<Piece>& pieces;
    StagingPool* pool;
    ~ReleaseUnused() {
      for (Piece& piece : pieces) {
        if (piece.slot.has_value()) pool->Release(*piece.slot);
      }
    }
  } release_unused{pieces, staging_.get()};
  if (stage) {
    // Speculative copies hold their slots until the writer reaches them in
    // digest order; the stager must still be able to fill the writer's
    // current window, so a window's worth of slots stays out of speculation.
    const size_t reserved = WriterWindow();
    size_t budget = staging_->max_slots() > reserved ? staging_->max_slots() - reserved : 0;
    for (Piece& piece : pieces) {
      if (budget == 0) break;
      auto history = last_save_.find(manifest.nodes[piece.node].path);
      const bool predicted_new = history == last_save_.end() ||
                                 piece.chunk >= history->second.chunk_was_new.size() ||
                                 history->second.chunk_was_new[piece.chunk];
      if (!predicted_new) continue;
      Result<std::optional<size_t>> slot = staging_->TryAcquire();
      if (!slot.ok()) return slot.status();
      if (!slot->has_value()) break;  // the pool is full: hash the rest only
      piece.slot = **slot;
      --budget;
    }
  }
  auto bytes_of = [&](const Piece& piece) {
    return piece.tensor->data() + uint64_t{piece.chunk} * chunk_size;
  };
  Status status = ParallelFor(pieces.size(), Threads(), [&](size_t i) {
    const Piece& piece = pieces[i];
    ChunkRef& ref = manifest.nodes[piece.node].chunks[piece.chunk];
    ref.digest = piece.slot.has_value()
                     ? store_->hasher().DigestAndCopy(bytes_of(piece), ref.raw_size,
                                                      staging_->data(*piece.slot))
                     : store_->hasher().Digest(bytes_of(piece), ref.raw_size);
    return Status::OK();
  });
  if (!status.ok()) return status;

  // Only chunks the store lacks are written, each distinct one once.
  std::map<ChunkDigest, InFlightSave::Chunk> fresh;  // ordered: written in digest order
  std::map<std::string, SavedTensor> this_save;
  for (const ManifestNode& node : manifest.nodes) {
    if (node.kind == Tree::Kind::kTensor) {
      this_save[node.path].chunk_was_new.assign(node.chunks.size(), false);
    }
  }
  for (Piece& piece : pieces) {
    const ManifestNode& node = manifest.nodes[piece.node];
    std::vector<bool>& is_new = this_save[node.path].chunk_was_new;
    ChunkRef& ref = manifest.nodes[piece.node].chunks[piece.chunk];
    auto pending = fresh.find(ref.digest);
    if (pending != fresh.end()) {
      pending->second.refs.emplace_back(piece.node, piece.chunk);
      continue;
    }
    Result<std::optional<ChunkLocation>> stored = store_->FindChunk(ref.digest);
    if (!stored.ok()) {
      for (auto& [digest, chunk] : fresh) {
        if (chunk.slot.has_value()) staging_->Release(*chunk.slot);
      }
      return stored.status();
    }
    if (stored->has_value()) {
      ref.stored_size = (*stored)->stored_size;
      continue;
    }
    is_new[piece.chunk] = true;
    InFlightSave::Chunk& chunk = fresh[ref.digest];
    chunk.digest = ref.digest;
    chunk.data = bytes_of(piece);
    if (piece.slot.has_value()) {  // already copied while hashing
      chunk.data = staging_->data(*piece.slot);
      chunk.slot = std::exchange(piece.slot, std::nullopt);
    }
    chunk.size = ref.raw_size;
    const DType dtype = piece.tensor->dtype();
    chunk.element_width = DTypeIsFloat(dtype) ? DTypeSize(dtype) : 0;
    chunk.refs.emplace_back(piece.node, piece.chunk);
  }
  for (const ManifestNode& node : manifest.nodes) {
    if (node.kind == Tree::Kind::kTensor) this_save[node.path].node = node;
  }
  last_save_ = std::move(this_save);
  save->chunks.reserve(fresh.size());
  for (auto& [digest, chunk] : fresh) save->chunks.push_back(std::move(chunk));
  return save;
}

Status Checkpointer::Impl::Stage(InFlightSave& save) {
  // A batch of slots at a time, copied on all cores: one core cannot use the
  // whole memory bandwidth.
  const size_t batch = std::max<size_t>(1, std::min(Threads(), staging_->max_slots()));
  for (size_t begin = 0; begin < save.chunks.size();) {
    // Chunks copied while hashing are staged already.
    while (begin < save.chunks.size() && save.chunks[begin].slot.has_value()) ++begin;
    save.MarkStaged(begin);
    if (begin == save.chunks.size()) break;
    size_t end = begin;
    while (end < save.chunks.size() && end - begin < batch && !save.chunks[end].slot.has_value()) {
      ++end;
    }
    // Take the slots free now; wait (for the writer) only when none is, and
    // never while holding slots of chunks not yet marked staged: the writer
    // may be waiting for exactly those.
    std::vector<std::pair<std::byte*, size_t>> copies;
    // Every way out with an error frees the slots taken and abandons the
    // save, or the writer would wait for these chunks for ever.
    auto give_up = [&](const Status& why) {
      for (const auto& [copy, used] : copies) staging_->Release(used);
      save.Abandon(why);
      return why;
    };
    for (size_t i = begin; i < end; ++i) {
      Result<std::optional<size_t>> slot = staging_->TryAcquire();
      if (slot.ok() && !slot->has_value()) {
        if (!copies.empty()) break;
        save.NeedWriter();
        Result<size_t> waited = staging_->Acquire();
        slot = waited.ok() ? Result<std::optional<size_t>>(std::optional<size_t>(*waited))
                           : Result<std::optional<size_t>>(waited.status());
      }
      if (!slot.ok()) return give_up(slot.status());
      copies.emplace_back(staging_->data(**slot), **slot);
    }
    end = begin + copies.size();
    Status status = ParallelFor(end - begin, Threads(), [&](size_t k) {
      std::memcpy(copies[k].first, save.chunks[begin + k].data, save.chunks[begin + k].size);
      return Status::OK();
    });
    if (!status.ok()) return give_up(status);
    for (size_t i = begin; i < end; ++i) {
      save.chunks[i].data = copies[i - begin].first;
      save.chunks[i].slot = copies[i - begin].second;
    }
    save.MarkStaged(end);
    begin = end;
  }
  save.MarkStaged(save.chunks.size());
  return Status::OK();
}

Status Checkpointer::Impl::Finish(InFlightSave& save, std::unique_lock<std::mutex>& lock) {
  const int64_t step = save.manifest.step;
  lock.unlock();
  std::vector<IndexEntry> index_entries;
  Status status = WriteChunks(save, &index_entries);
  if (status.ok()) {
    status = store_->CommitStep(step, EncodeManifest(save.manifest), index_entries);
  }
  lock.lock();
  if (!status.ok()) {
    steps_.erase(step);
    steps_.merge(save.pruned);
    return status.WithContext("saving " + StepName(step) + " in " + workdir_);
  }
  Result<bool> pruned = DeletePruned(save.pruned);
  if (!pruned.ok()) {
    return pruned.status().WithContext(StepName(step) +
                                       " was committed; retention after it failed");
  }
  if (*pruned && options_.gc_mode != GcMode::kOff) {
    const double threshold =
        options_.gc_mode == GcMode::kGarbageThreshold ? options_.gc_garbage_threshold : 0.0;
    lock.unlock();
    Result<GcStats> collected = CollectGarbage(threshold);
    lock.lock();
    if (!collected.ok()) {
      return collected.status().WithContext(StepName(step) +
                                            " was committed; garbage collection after it failed");
    }
  }
  return Status::OK();
}

Status Checkpointer::Impl::WriteChunks(InFlightSave& save, std::vector<IndexEntry>* index_entries) {
  // On any exit, wait for the stager and free every slot it filled, so that
  // it never waits forever for a slot.
  size_t released = 0;
  auto release_until = [&](size_t end) {
    for (; released < end; ++released) {
      if (save.chunks[released].slot.has_value()) staging_->Release(*save.chunks[released].slot);
    }
  };
  struct ReleaseAll {
    std::function<void()> run;
    ~ReleaseAll() { run(); }
  } release_all{[&] { release_until(save.StagedWhenDone(save.chunks.size())); }};
  if (save.chunks.empty()) return Status::OK();
  save.AwaitWriterStart(save.chunks.size());
  Result<std::unique_ptr<GenerationWriter>> writer = store_->NewGeneration();
  if (!writer.ok()) return writer.status();
  const ChunkEncoding base{0, options_.fast ? 1 : 3};  // levels: see CheckpointerOptions::fast

  // Compress a window of chunks in parallel, then append them in digest
  // order; the window bounds the memory held by compressed chunks.
  const size_t threads = Threads();
  const size_t window = WriterWindow();
  std::vector<std::string>& encoded = encode_buffers_;
  if (encoded.size() < window) encoded.resize(window);
  for (size_t begin = 0; begin < save.chunks.size(); begin += window) {
    const size_t count = std::min(window, save.chunks.size() - begin);
    Status status = save.AwaitStaged(begin + count);
    if (!status.ok()) return status;
    status = ParallelFor(count, threads, [&](size_t i) {
      const InFlightSave::Chunk& chunk = save.chunks[begin + i];
      ChunkEncoding encoding = base;
      encoding.element_width = chunk.element_width;
      const std::byte* bytes = chunk.data;
      if (save.recheck_caller_bytes && !chunk.slot.has_value()) {
        // What is stored under a digest must hash to it: compress a private
        // copy whose digest was taken on the way, never the caller's
        // buffer, which a broken zero_copy promise may be changing.
        thread_local std::vector<std::byte> copy;
        if (copy.size() < chunk.size) copy.resize(chunk.size);
        if (store_->hasher().DigestAndCopy(chunk.data, chunk.size, copy.data()) != chunk.digest) {
          return Status::InvalidArgument(
              "tensor '" + save.manifest.nodes[chunk.refs.front().first].path +
              "' changed during a zero_copy save (its buffer must stay unchanged until the save "
              "finishes); the step was not saved");
        }
        bytes = copy.data();
      }
      EncodeChunk(bytes, chunk.size, encoding, &encoded[i]);
      return Status::OK();
    });
    if (!status.ok()) return status;
    for (size_t i = 0; i < count; ++i) {
      const InFlightSave::Chunk& chunk = save.chunks[begin + i];
      status = (*writer)->Add(chunk.digest, encoded[i]);
      if (!status.ok()) return status;
      const auto stored_size = static_cast<uint32_t>(encoded[i].size());
      for (const auto& [node, k] : chunk.refs) {
        save.manifest.nodes[node].chunks[k].stored_size = stored_size;
      }
      index_entries->push_back({chunk.digest, {(*writer)->generation(), chunk.size, stored_size}});
    }
    release_until(begin + count);
  }
  return (*writer)->Finish();
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
  auto keep = [&](int64_t step) { steps_.insert(pruned.extract(step)); };
  Result<LockedFile> lock = LockRetention(workdir_);
  if (!lock.ok()) {
    while (!pruned.empty()) keep(pruned.begin()->first);
    // Busy: a reader is taking a hold right now.
    return lock.status().code() == Status::Code::kBusy ? Result<bool>(false) : lock.status();
  }
  Result<std::set<int64_t>> holds = HeldSteps(workdir_);
  if (!holds.ok()) {
    while (!pruned.empty()) keep(pruned.begin()->first);
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
    while (!pruned.empty()) keep(pruned.begin()->first);
    return status;
  }
  return true;
}

Result<GcStats> Checkpointer::Impl::CollectGarbage(double min_garbage_fraction) {
  Status status = CheckOpen();
  if (status.ok()) status = CheckWritable();
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

Status Checkpointer::Impl::DecodeTensors(int64_t step,
                                         const std::vector<DecodeTarget>& targets) const {
  struct ChunkTask {
    const ManifestNode* node;
    size_t chunk;
    std::byte* dest;
  };
  std::vector<ChunkTask> tasks;
  for (const DecodeTarget& target : targets) {
    uint64_t offset = 0;
    for (size_t k = 0; k < target.node->chunks.size(); ++k) {
      tasks.push_back({target.node, k, target.dest + offset});
      offset += target.node->chunks[k].raw_size;
    }
  }
  // A missing chunk is Corruption for the writer. A reader may instead have
  // looked where the writer's GC just moved the chunk from (a held step's
  // chunks stay live, but GC may copy them into a new generation): it catches
  // up and retries the chunks it missed, a bounded number of times.
  constexpr int kReaderAttempts = 10;
  std::vector<char> missing(tasks.size(), 0);
  int attempt = 1;
  auto decode = [&](size_t i) -> Status {
    const ChunkTask& task = tasks[i];
    const ChunkRef& ref = task.node->chunks[task.chunk];
    auto where = [&] {
      return StepName(step) + ", tensor '" + task.node->path + "', chunk " +
             std::to_string(task.chunk) + " (" + ref.digest.ToHex() + ")";
    };
    missing[i] = 0;
    Result<std::optional<ChunkLocation>> location = store_->FindChunk(ref.digest);
    if (!location.ok()) return location.status().WithContext(where());
    Status status = Status::NotFound("the chunk is not in the chunk index");
    if (location->has_value()) {
      status = store_->ReadChunk(ref.digest, **location, [&](std::string_view stored) {
        return DecodeChunk(stored, ref.raw_size, task.dest);
      });
    }
    if (status.IsNotFound() && store_->read_only() && attempt < kReaderAttempts) {
      missing[i] = 1;
      return Status::OK();
    }
    if (status.IsNotFound()) return Status::Corruption(where() + ": " + status.message());
    if (!status.ok()) return status.WithContext(where());
    if (store_->hasher().Digest(task.dest, ref.raw_size) != ref.digest) {
      return Status::Corruption(where() + ": the bytes read fail their digest check");
    }
    return Status::OK();
  };
  std::vector<size_t> pending(tasks.size());
  for (size_t i = 0; i < tasks.size(); ++i) pending[i] = i;
  for (;; ++attempt) {
    Status status =
        ParallelFor(pending.size(), Threads(), [&](size_t i) { return decode(pending[i]); });
    if (!status.ok()) return status;
    std::erase_if(pending, [&](size_t i) { return !missing[i]; });
    if (pending.empty()) return Status::OK();
    status = store_->CatchUp();
    if (!status.ok()) return status;
  }
}

namespace {

// Every difference between the stored tree and a template, one per line.
std::vector<std::string> TemplateMismatches(const std::vector<ManifestNode>& stored,
                                            const std::vector<ManifestNode>& wanted,
                                            const Tree& state, bool donate) {
  std::map<std::string_view, const ManifestNode*> by_path;
  for (const ManifestNode& node : stored) by_path[node.path] = &node;
  std::vector<std::string> problems;
  std::set<std::string_view> seen;
  for (const ManifestNode& node : wanted) {
    const std::string shown = node.path.empty() ? "(root)" : node.path;
    auto found = by_path.find(node.path);
    if (found == by_path.end()) {
      problems.push_back("extra: '" + shown + "' is in the template, not in the checkpoint");
      continue;
    }
    seen.insert(node.path);
    const ManifestNode& have = *found->second;
    if (have.kind != node.kind) {
      problems.push_back("kind: '" + shown + "' is a " + std::string(KindName(have.kind)) +
                         " in the checkpoint, a " + std::string(KindName(node.kind)) +
                         " in the template");
      continue;
    }
    if (node.kind != Tree::Kind::kTensor) continue;
    if (have.dtype != node.dtype) {
      problems.push_back("dtype: '" + shown + "' is " + std::string(DTypeName(have.dtype)) +
                         " in the checkpoint, " + std::string(DTypeName(node.dtype)) +
                         " in the template");
    }
    if (have.shape != node.shape) {
      auto text = [](const std::vector<int64_t>& shape) {
        std::string out = "[";
        for (size_t i = 0; i < shape.size(); ++i) {
          out += (i ? ", " : "") + std::to_string(shape[i]);
        }
        return out + "]";
      };
      problems.push_back("shape: '" + shown + "' is " + text(have.shape) + " in the checkpoint, " +
                         text(node.shape) + " in the template");
    }
    if (donate && !state.Find(node.path)->tensor().writable()) {
      problems.push_back("read-only: '" + shown +
                         "' is a ConstView; restore with donate needs a writable buffer");
    }
  }
  for (const ManifestNode& node : stored) {
    if (seen.count(node.path) == 0) {
      problems.push_back("missing: '" + (node.path.empty() ? "(root)" : node.path) +
                         "' is in the checkpoint, not in the template");
    }
  }
  return problems;
}

}  // namespace

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
  Status status;
  ReadableStep readable;
  if (!store_->read_only()) {
    // The writer's retention runs under this checkpointer's mutex, held now.
    Result<Manifest> manifest = ReadManifest(*resolved);
    if (!manifest.ok()) return manifest.status();
    readable.manifest = std::move(*manifest);
    return readable;
  }
  auto read_current = [&]() -> Status {
    Status caught_up = store_->CatchUp();
    if (!caught_up.ok()) return caught_up;
    Result<Manifest> manifest = ReadManifest(*resolved);
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
  status = read_current();
  if (!status.ok()) return status;
  return readable;
}

namespace {

// The nodes of `nodes` under any of `paths` (all of them when `paths` is
// empty). NotFound for a path that names no node.
Result<std::vector<ManifestNode>> SelectNodes(const std::vector<ManifestNode>& nodes,
                                              const std::vector<std::string>& paths,
                                              const std::string& where) {
  if (paths.empty()) return nodes;
  if (std::optional<std::string> missing = MissingPath(nodes, paths)) {
    return Status::NotFound(where + " holds no path '" + *missing + "'");
  }
  std::vector<ManifestNode> selected;
  for (const ManifestNode& node : nodes) {
    if (IsUnderAny(node.path, paths)) selected.push_back(node);
  }
  return selected;
}

// Tensors of the template whose buffers overlap: decoding two stored tensors
// into one buffer would leave one of them wrong.
std::vector<std::string> AliasedBuffers(const std::vector<ManifestNode>& stored,
                                        const Tree& state) {
  struct Range {
    const std::byte* begin;
    const std::byte* end;
    const std::string* path;
  };
  std::vector<Range> ranges;
  for (const ManifestNode& node : stored) {
    if (node.kind != Tree::Kind::kTensor || node.byte_size == 0) continue;
    const Tensor& tensor = state.Find(node.path)->tensor();
    ranges.push_back({tensor.data(), tensor.data() + tensor.byte_size(), &node.path});
  }
  std::sort(ranges.begin(), ranges.end(),
            [](const Range& a, const Range& b) { return std::less<>()(a.begin, b.begin); });
  std::vector<std::string> problems;
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (std::less<>()(ranges[i].begin, ranges[i - 1].end)) {
      problems.push_back("aliased: '" + *ranges[i - 1].path + "' and '" + *ranges[i].path +
                         "' share memory; restore with donate needs distinct buffers");
    }
  }
  return problems;
}

}  // namespace

Status Checkpointer::Impl::RestoreInto(Tree* state, int64_t step, const RestoreOptions& options) {
  if (state == nullptr) return Status::InvalidArgument("Restore into a null tree");
  if (!closed_ && steps_.empty() && options.noop_if_missing) return Status::OK();
  Result<ReadableStep> readable = OpenStepForRead(step);
  if (!readable.ok()) return readable.status();
  const int64_t resolved = readable->manifest.step;
  const std::string where = StepName(resolved) + " in " + workdir_;
  Result<std::vector<ManifestNode>> stored =
      SelectNodes(readable->manifest.nodes, options.only_paths, where);
  if (!stored.ok()) return stored.status();
  Result<std::vector<ManifestNode>> wanted = FlattenTree(*state);
  if (!wanted.ok()) return wanted.status().WithContext("restore template");
  if (!options.only_paths.empty()) {
    std::erase_if(*wanted, [&](const ManifestNode& node) {
      return !IsUnderAny(node.path, options.only_paths);
    });
  }
  std::vector<std::string> problems = TemplateMismatches(*stored, *wanted, *state, options.donate);
  if (options.donate && problems.empty()) problems = AliasedBuffers(*stored, *state);
  if (!problems.empty()) {
    std::string message = "the template does not match " + where + " (" +
                          std::to_string(problems.size()) + " problems):";
    for (const std::string& problem : problems) message += "\n  " + problem;
    return Status::InvalidArgument(message);
  }

  // Without donation, tensors decode into new buffers that replace the
  // template's only once everything decoded.
  std::vector<DecodeTarget> targets;
  std::vector<std::pair<Tree*, Tensor>> replacements;
  for (const ManifestNode& node : *stored) {
    if (node.kind != Tree::Kind::kTensor) continue;
    Tree* leaf = state->Find(node.path);
    if (options.donate) {
      targets.push_back({&node, leaf->tensor().mutable_data()});
    } else {
      Result<Tensor> fresh = Tensor::Allocate(node.dtype, node.shape);
      if (!fresh.ok()) return fresh.status().WithContext(node.path);
      targets.push_back({&node, fresh->mutable_data()});
      replacements.emplace_back(leaf, std::move(*fresh));
    }
  }
  Status status = DecodeTensors(resolved, targets);
  if (!status.ok()) return status;
  for (auto& [leaf, tensor] : replacements) *leaf = Tree::Leaf(std::move(tensor));
  for (const ManifestNode& node : *stored) {
    Tree* leaf = state->Find(node.path);
    switch (node.kind) {
      case Tree::Kind::kInt: *leaf = Tree::Int(node.int_value); break;
      case Tree::Kind::kBool: *leaf = Tree::Bool(node.int_value != 0); break;
      case Tree::Kind::kFloat: *leaf = Tree::Float(node.float_value); break;
      case Tree::Kind::kString: *leaf = Tree::String(node.string_value); break;
      default: break;
    }
  }
  return Status::OK();
}

Result<Tree> Checkpointer::Impl::RestoreTree(int64_t step, const std::string& path) {
  Result<ReadableStep> readable = OpenStepForRead(step);
  if (!readable.ok()) return readable.status();
  const Manifest& manifest = readable->manifest;
  Result<std::vector<ManifestNode>> subtree = SelectNodes(
      manifest.nodes, path.empty() ? std::vector<std::string>{} : std::vector<std::string>{path},
      StepName(manifest.step) + " in " + workdir_);
  if (!subtree.ok()) return subtree.status();
  Result<Tree> tree = BuildTree(*subtree);
  if (!tree.ok()) return tree.status();
  // Paths inside the subtree drop the subtree's own path and its '/'.
  const size_t prefix = path.empty() ? 0 : path.size() + 1;
  std::vector<DecodeTarget> targets;
  for (const ManifestNode& node : *subtree) {
    if (node.kind != Tree::Kind::kTensor) continue;
    const std::string relative = node.path.size() > prefix ? node.path.substr(prefix) : "";
    targets.push_back({&node, tree->Find(relative)->tensor().mutable_data()});
  }
  Status status = DecodeTensors(manifest.step, targets);
  if (!status.ok()) return status;
  return tree;
}

Result<StepHold> Checkpointer::Impl::HoldStep(int64_t step) {
  Result<int64_t> resolved = ResolveStepToRead(step);
  if (!resolved.ok()) return resolved.status();
  Result<LockedFile> hold = AcquireStepHold(workdir_, *resolved, [&]() -> Status {
    Status caught_up = store_->CatchUp();
    if (!caught_up.ok()) return caught_up;
    Result<std::optional<std::string>> manifest = store_->ReadManifest(*resolved);
    if (!manifest.ok()) return manifest.status();
    if (!manifest->has_value()) {
      return Status::NotFound(StepName(*resolved) + " is not in " + workdir_);
    }
    return Status::OK();
  });
  if (!hold.ok()) return hold.status();
  return StepHold(*resolved, std::make_unique<StepHold::Impl>(std::move(*hold)));
}

Result<StepMetadata> Checkpointer::Impl::ItemMetadata(int64_t step) {
  Result<Manifest> manifest = ReadStepManifest(step);
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

Status Checkpointer::Impl::Delete(int64_t step) {
  Status status = CheckOpen();
  if (status.ok()) status = CheckWritable();
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

class StepHold::Impl {
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
  return OpenCheckpointer(workdir, std::move(options), /*env=*/nullptr);
}

Result<std::unique_ptr<Checkpointer>> OpenCheckpointer(const std::string& workdir,
                                                       CheckpointerOptions options,
                                                       rocksdb::Env* env) {
  Status status = ValidateOptions(options);
  if (!status.ok()) return status.WithContext("opening " + workdir);
  Result<std::unique_ptr<Store>> store =
      Store::Open(workdir, options.create ? Store::Mode::kWrite : Store::Mode::kReadOnly, env,
                  options.owner_only);
  if (!store.ok()) return store.status();
  auto impl = std::make_unique<Checkpointer::Impl>(workdir, std::move(options), std::move(*store));
  status = impl->LoadSteps();
  if (!status.ok()) return status;
  return std::unique_ptr<Checkpointer>(new Checkpointer(std::move(impl)));
}

bool Checkpointer::ShouldSave(int64_t step) const {
  std::lock_guard<std::mutex> lock(impl_->mu_);
  return impl_->ShouldSaveLocked(step);
}

Result<bool> Checkpointer::Save(const Tree& state, int64_t step, const SaveOptions& options) {
  std::unique_lock<std::mutex> lock(impl_->mu_);
  return impl_->Save(state, step, options, lock);
}

Result<bool> Checkpointer::MaybeSave(const Tree& state, int64_t step, bool force) {
  SaveOptions options;
  options.force = force;
  return MaybeSave(state, step, options);
}

Result<bool> Checkpointer::MaybeSave(const Tree& state, int64_t step, const SaveOptions& options) {
  std::unique_lock<std::mutex> lock(impl_->mu_);
  if (!impl_->ShouldSaveLocked(step)) return false;
  return impl_->Save(state, step, options, lock);
}

void Checkpointer::SignalPreemption() {
  std::lock_guard<std::mutex> lock(impl_->mu_);
  impl_->preempted_ = true;
}

Status Checkpointer::Restore(Tree* state, int64_t step, const RestoreOptions& options) {
  std::unique_lock<std::mutex> lock(impl_->mu_);
  impl_->AwaitInFlight(lock);
  return impl_->RestoreInto(state, step, options);
}

Result<Tree> Checkpointer::RestoreTree(int64_t step, const std::string& path) {
  std::unique_lock<std::mutex> lock(impl_->mu_);
  impl_->AwaitInFlight(lock);
  return impl_->RestoreTree(step, path);
}

Result<StepHold> Checkpointer::HoldStep(int64_t step) {
  std::unique_lock<std::mutex> lock(impl_->mu_);
  impl_->AwaitInFlight(lock);
  return impl_->HoldStep(step);
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
  std::unique_lock<std::mutex> lock(impl_->mu_);
  impl_->AwaitInFlight(lock);
  return impl_->ItemMetadata(step);
}

std::vector<int64_t> Checkpointer::AllSteps() const {
  std::lock_guard<std::mutex> lock(impl_->mu_);
  std::vector<int64_t> steps;
  for (const auto& [step, retained] : impl_->steps_) steps.push_back(step);
  return steps;
}

std::optional<int64_t> Checkpointer::LatestStep() const {
  std::lock_guard<std::mutex> lock(impl_->mu_);
  if (impl_->steps_.empty()) return std::nullopt;
  return impl_->steps_.rbegin()->first;
}

Status Checkpointer::Delete(int64_t step) {
  std::unique_lock<std::mutex> lock(impl_->mu_);
  impl_->AwaitInFlight(lock);
  return impl_->Delete(step);
}

Result<GcStats> Checkpointer::CollectGarbage() {
  std::unique_lock<std::mutex> lock(impl_->mu_);
  impl_->AwaitInFlight(lock);
  return impl_->CollectGarbage(/*min_garbage_fraction=*/0.0);
}

Status Checkpointer::Reload() {
  std::unique_lock<std::mutex> lock(impl_->mu_);
  impl_->AwaitInFlight(lock);
  return impl_->Reload();
}

Status Checkpointer::WaitUntilFinished() {
  std::unique_lock<std::mutex> lock(impl_->mu_);
  return impl_->FinishInFlight(lock);
}

Status Checkpointer::Close() {
  std::unique_lock<std::mutex> lock(impl_->mu_);
  Status background = impl_->FinishInFlight(lock);
  Status closed = impl_->Close();
  return background.ok() ? closed : background;
}

}  // namespace ckptdb
