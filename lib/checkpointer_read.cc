// A Checkpointer's read side: its step list, resolving the step to read,
// holding it against the writer's retention, and restoring it or describing
// it (the decoding itself is restore.h).

#include "checkpointer_impl.h"
#include "restore.h"

namespace ckptdb {

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
    // Retention needs the commit time and the metrics, not the tree.
    Result<Manifest> manifest =
        ReadStepManifest(*store_, step, nullptr, ManifestParts::kWithoutNodes);
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

Result<int64_t> Checkpointer::Impl::ResolveStep(int64_t step) const {
  // The latest step is the largest listed, here as in LatestStep().
  if (step == kLatestStep) {
    if (steps_.empty()) return Status::NotFound("no checkpoint in " + workdir_);
    step = steps_.rbegin()->first;
  } else if (step < 0) {
    return Status::InvalidArgument("invalid " + StepName(step));
  }
  // A multi-process save whose commit waits for the caller is listed, but
  // not readable yet.
  if (step == uncommitted_step_) {
    return Status::FailedPrecondition(
        StepName(step) + " is saved but not committed yet: its commit waits for the next "
                         "Save, MaybeSave, ShouldSave, WaitUntilFinished, Delete, "
                         "CollectGarbage or Close on every process");
  }
  return step;
}

Result<int64_t> Checkpointer::Impl::ResolveStepToRead(int64_t step) {
  Status status = CheckOpen();
  if (!status.ok()) return status;
  // A reader catches up with the writer; the processes of a multi-process
  // writer know the steps from the primary.
  if (step == kLatestStep && store_->read_only() && !protocol_->coordinated()) {
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
      if (node.inlined) leaf.stored_bytes = node.inline_bytes.size();
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

Status Checkpointer::Impl::Reload() {
  Status status = CheckOpen();
  if (status.ok()) status = store_->CatchUp();
  // The step list of a multi-process writer's processes is the primary's
  // (it may list a save in flight that the store does not hold yet).
  if (status.ok() && !protocol_->coordinated()) status = LoadSteps();
  return status;
}

// ---- StepHold ----

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

}  // namespace ckptdb
