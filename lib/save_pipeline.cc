#include "save_pipeline.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <future>
#include <system_error>

#include "chunk_codec.h"
#include "cleanup.h"
#include "parallel.h"

namespace ckptdb {

// ---- PendingSave: the hand-over between stager and writer ----

bool PendingSave::MarkStaged(size_t count) {
  {
    MutexLock lock(&mu_);
    if (writer_stopped_) return false;
    staged_ = count;
  }
  progress_.SignalAll();
  return true;
}

void PendingSave::NeedWriter() {
  {
    MutexLock lock(&mu_);
    writer_needed_ = true;
  }
  progress_.SignalAll();
}

void PendingSave::Abandon(const Status& why) {
  {
    MutexLock lock(&mu_);
    abandoned_ = why;
  }
  progress_.SignalAll();
}

void PendingSave::AwaitWriterStart() {
  MutexLock lock(&mu_);
  while (staged_ < chunks_.size() && !writer_needed_ && abandoned_.ok()) progress_.Wait();
}

Result<size_t> PendingSave::AwaitStaged(size_t count) {
  MutexLock lock(&mu_);
  while (staged_ < count && abandoned_.ok()) progress_.Wait();
  if (staged_ < count) return abandoned_;
  return staged_;
}

size_t PendingSave::Staged() {
  MutexLock lock(&mu_);
  return staged_;
}

size_t PendingSave::StopWriter() {
  MutexLock lock(&mu_);
  writer_stopped_ = true;
  return staged_;
}

// ---- SavePipeline ----

SavePipeline::SavePipeline(Store* store, Settings settings)
    : store_(store), settings_(settings) {}

SavePipeline::~SavePipeline() = default;

size_t SavePipeline::WriterWindow() const {
  const size_t window = 2 * settings_.threads;
  return staging_ ? std::max<size_t>(1, std::min(window, staging_->max_slots())) : window;
}

std::map<std::string, std::vector<PendingSave::PositionCopy>>
SavePipeline::CarryOverPositionCopies(const Manifest& manifest, const std::vector<bool>& reused) {
  std::map<std::string, std::vector<PendingSave::PositionCopy>> copies;
  if (settings_.max_delta_chain == 0) return copies;
  for (uint32_t n = 0; n < manifest.nodes.size(); ++n) {
    const ManifestNode& node = manifest.nodes[n];
    if (node.kind != Tree::Kind::kTensor) continue;
    std::vector<PendingSave::PositionCopy>& positions = copies[node.path];
    positions.resize(node.chunks.size());
    auto previous = delta_bases_.find(node.path);
    if (previous == delta_bases_.end()) continue;
    // The buffers move along (no new pages to fault in); a copy of another
    // size is no base.
    for (size_t k = 0; k < positions.size() && k < previous->second.size(); ++k) {
      positions[k] = std::move(previous->second[k]);
      if (positions[k].size != node.chunks[k].raw_size) positions[k].valid = false;
      // A tensor reused unread (assume_unchanged) keeps its copies of the
      // chunks it still has.
      if (reused[n] && positions[k].digest != node.chunks[k].digest) {
        positions[k].valid = false;
      }
    }
  }
  return copies;
}

Result<std::optional<DeltaBase>> SavePipeline::DeltaBaseFor(const PendingSave::PositionCopy& copy,
                                                           uint32_t size) const {
  if (!copy.valid || copy.bytes == nullptr || copy.size != size ||
      copy.depth >= settings_.max_delta_chain) {
    return std::optional<DeltaBase>();
  }
  // The copy may name a chunk whose save failed, or one GC has collected
  // since: a base must be in the store, at the depth the copy says.
  Result<std::optional<ChunkLocation>> stored = store_->FindChunk(copy.digest);
  if (!stored.ok()) return stored.status();
  if (!stored->has_value() || (*stored)->delta_depth != copy.depth) {
    return std::optional<DeltaBase>();
  }
  return std::optional<DeltaBase>(DeltaBase{copy.digest, static_cast<uint8_t>(copy.depth + 1)});
}

Result<std::shared_ptr<PendingSave>> SavePipeline::Prepare(
    const Tree& state, Manifest header, const std::vector<std::string>& assume_unchanged,
    Source source) {
  const bool stage = source == Source::kStaged;
  if (stage && staging_ == nullptr) {
    staging_ = std::make_unique<StagingPool>(settings_.chunk_size_bytes,
                                             settings_.staging_bytes / settings_.chunk_size_bytes,
                                             settings_.allocate_staging);
  }
  auto save = std::make_shared<PendingSave>();
  save->recheck_caller_bytes_ = source == Source::kCallerBuffers;
  Manifest& manifest = save->manifest_;
  manifest = std::move(header);
  // A single process packing its manifest drafts it: only the tensors
  // stored as chunks stay nodes until the commit.
  if (store_->packs_manifests() && settings_.process_count == 1) save->draft_.emplace();
  std::vector<const Tree*> sources;  // the state's node of each manifest node
  Result<std::vector<ManifestNode>> nodes =
      FlattenTree(state, &sources, save->draft_ ? &*save->draft_ : nullptr);
  if (!nodes.ok()) return nodes.status();
  manifest.nodes = std::move(*nodes);
  Status status = AssignBoxes(&manifest);
  if (!status.ok()) return status;

  // Tensors declared unchanged take the previous save's chunk list, unread,
  // when the store still holds every chunk of it: a broken promise then
  // stores stale values for that tensor, but never bytes under a digest that
  // is not theirs.
  std::vector<bool> reused(manifest.nodes.size(), false);
  if (!assume_unchanged.empty()) {
    for (const std::string& path : assume_unchanged) {
      if (state.Find(path) == nullptr) {
        return Status::InvalidArgument("assume_unchanged names '" + path +
                                       "', which the state does not hold");
      }
    }
    for (uint32_t n = 0; n < manifest.nodes.size(); ++n) {
      ManifestNode& node = manifest.nodes[n];
      if (node.kind != Tree::Kind::kTensor || !IsUnderAny(node.path, assume_unchanged)) continue;
      auto previous = last_save_.find(node.path);
      if (previous == last_save_.end() || !SameLayout(previous->second.node, node)) continue;
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
      node.boxes = previous->second.node.boxes;
      reused[n] = true;
    }
  }

  // Hash every other chunk, on all cores.
  struct Piece {
    uint32_t node;
    uint32_t chunk;
    const std::byte* data;
    DType dtype;
    std::optional<size_t> slot;  // a speculative copy
  };
  const uint32_t chunk_size = settings_.chunk_size_bytes;
  std::vector<Piece> pieces;
  for (uint32_t n = 0; n < manifest.nodes.size(); ++n) {
    ManifestNode& node = manifest.nodes[n];
    if (node.kind != Tree::Kind::kTensor || reused[n]) continue;
    // Each box's bytes (the whole tensor's, unboxed) are cut into chunks.
    node.chunks.clear();
    std::vector<const std::byte*> box_data = BoxBuffers(*sources[n], node);
    for (size_t b = 0; b < box_data.size(); ++b) {
      const uint64_t bytes = node.boxed ? BoxElements(node.boxes[b].box) * DTypeSize(node.dtype)
                                        : node.byte_size;
      const auto count = static_cast<uint32_t>((bytes + chunk_size - 1) / chunk_size);
      if (node.boxed) node.boxes[b].chunk_count = count;
      for (uint32_t k = 0; k < count; ++k) {
        const uint64_t offset = uint64_t{k} * chunk_size;
        ChunkRef ref;
        ref.raw_size = static_cast<uint32_t>(std::min<uint64_t>(chunk_size, bytes - offset));
        pieces.push_back({n, static_cast<uint32_t>(node.chunks.size()), box_data[b] + offset,
                          node.dtype, std::nullopt});
        node.chunks.push_back(ref);
      }
    }
  }
  // Slots taken here go back to the pool unless a new chunk keeps them.
  Cleanup release_unused([&] {
    for (Piece& piece : pieces) {
      if (piece.slot.has_value()) staging_->Release(*piece.slot);
    }
  });
  if (stage) {
    // Speculative copies hold their slots until the writer reaches them in
    // digest order; the stager must still be able to fill the writer's
    // current window, so a window's worth of slots stays out of speculation.
    const size_t reserved = WriterWindow();
    size_t budget = staging_->max_slots() > reserved ? staging_->max_slots() - reserved : 0;
    // Only chunks of at least half a slot are worth one to themselves:
    // smaller ones are packed into shared slots when staged.
    for (Piece& piece : pieces) {
      if (budget == 0) break;
      if (manifest.nodes[piece.node].chunks[piece.chunk].raw_size < staging_->slot_bytes() / 2) {
        continue;
      }
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
  auto bytes_of = [](const Piece& piece) { return piece.data; };
  status = ParallelFor(pieces.size(), settings_.threads, [&](size_t i) {
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
  std::map<ChunkDigest, PendingSave::Chunk> fresh;  // ordered: written in digest order
  std::vector<Piece*> copied;  // pieces whose speculative copy a new chunk keeps
  std::map<std::string, SavedTensor> this_save;
  for (const ManifestNode& node : manifest.nodes) {
    if (node.kind == Tree::Kind::kTensor) {
      this_save[node.path].chunk_was_new.assign(node.chunks.size(), false);
    }
  }
  std::map<std::string, std::vector<PendingSave::PositionCopy>> copies =
      CarryOverPositionCopies(manifest, reused);
  for (Piece& piece : pieces) {
    const ManifestNode& node = manifest.nodes[piece.node];
    ChunkRef& ref = manifest.nodes[piece.node].chunks[piece.chunk];
    PendingSave::PositionCopy* copy = copies.empty() ? nullptr : &copies[node.path][piece.chunk];
    auto pending = fresh.find(ref.digest);
    if (pending != fresh.end()) {
      pending->second.refs.emplace_back(piece.node, piece.chunk);
      if (copy != nullptr) pending->second.copies.push_back(copy);
      continue;
    }
    Result<std::optional<ChunkLocation>> stored = store_->FindChunk(ref.digest);
    if (!stored.ok()) return stored.status();
    if (stored->has_value()) {
      ref.stored_size = (*stored)->stored_size;
      // The copy stays only if it holds this very chunk.
      if (copy != nullptr && copy->digest != ref.digest) copy->valid = false;
      continue;
    }
    this_save[node.path].chunk_was_new[piece.chunk] = true;
    PendingSave::Chunk& chunk = fresh[ref.digest];
    if (copy != nullptr) {
      Result<std::optional<DeltaBase>> base = DeltaBaseFor(*copy, ref.raw_size);
      if (!base.ok()) return base.status();
      chunk.delta = *base;
      chunk.copies.push_back(copy);
    }
    chunk.digest = ref.digest;
    chunk.data = bytes_of(piece);
    if (piece.slot.has_value()) {  // already copied while hashing
      chunk.data = staging_->data(*piece.slot);
      chunk.slot = piece.slot;
      copied.push_back(&piece);
    }
    chunk.size = ref.raw_size;
    const DType dtype = piece.dtype;
    chunk.element_width = DTypeIsFloat(dtype) ? DTypeSize(dtype) : 0;
    chunk.refs.emplace_back(piece.node, piece.chunk);
  }
  for (Piece* piece : copied) piece->slot.reset();  // the save owns them now
  for (const ManifestNode& node : manifest.nodes) {
    if (node.kind == Tree::Kind::kTensor) this_save[node.path].node = node;
  }
  last_save_ = std::move(this_save);
  delta_bases_ = std::move(copies);  // the chunks point into its vectors, which stay put
  save->chunks_.reserve(fresh.size());
  for (auto& [digest, chunk] : fresh) save->chunks_.push_back(std::move(chunk));
  // Without staging, the writer reads every chunk where it is.
  if (!stage) save->MarkStaged(save->chunks_.size());
  return save;
}

Status SavePipeline::Stage(PendingSave& save) {
  std::vector<PendingSave::Chunk>& chunks = save.chunks_;
  // Nothing new: the writer may already have committed (it waits for
  // nothing), so there is nothing to hand over.
  if (chunks.empty()) return Status::OK();
  StagingPool& pool = *staging_;
  // Chunks [0, marked) and their slots are the writer's. Every early exit
  // stops the writer and frees the slots the stager still owns.
  size_t marked = 0;
  Status failure;
  Cleanup stop_on_failure([&] {
    save.Abandon(failure);
    for (size_t i = marked; i < chunks.size(); ++i) {
      std::optional<size_t> slot = std::exchange(chunks[i].slot, std::nullopt);
      if (slot.has_value() && chunks[i].releases_slot) pool.Release(*slot);
    }
  });
  auto hand_over = [&](size_t count) {
    if (!save.MarkStaged(count)) {
      failure = Status::Internal("the writer stopped before staging ended");
      return false;
    }
    marked = count;
    return true;
  };
  // A batch of slots at a time, copied on all cores: one core cannot use the
  // whole memory bandwidth. Chunks smaller than a slot are packed into it.
  const size_t batch = std::max<size_t>(1, std::min(settings_.threads, pool.max_slots()));
  std::vector<std::byte*> destinations;
  for (size_t begin = 0;;) {
    // Chunks copied while hashing are staged already.
    while (begin < chunks.size() && chunks[begin].slot.has_value()) ++begin;
    if (!hand_over(begin)) return failure;
    if (begin == chunks.size()) break;
    // Take the slots free now; wait (for the writer) only when none is, and
    // never while holding slots of chunks not yet handed over: the writer
    // may be waiting for exactly those.
    size_t end = begin;
    destinations.clear();
    for (size_t slots = 0;
         slots < batch && end < chunks.size() && !chunks[end].slot.has_value(); ++slots) {
      Result<std::optional<size_t>> slot = pool.TryAcquire();
      if (slot.ok() && !slot->has_value()) {
        if (end > begin) break;
        save.NeedWriter();
        Result<size_t> waited = pool.Acquire();  // a stopping writer frees its slots
        slot = waited.ok() ? Result<std::optional<size_t>>(std::optional<size_t>(*waited))
                           : Result<std::optional<size_t>>(waited.status());
      }
      if (!slot.ok()) {
        failure = slot.status();
        return failure;
      }
      // Every chunk fits an empty slot (chunks are at most a slot's size).
      std::byte* const base = pool.data(**slot);
      size_t used = 0;
      do {
        chunks[end].slot = **slot;
        chunks[end].releases_slot = false;
        destinations.push_back(base + used);
        used += chunks[end].size;
        ++end;
      } while (end < chunks.size() && !chunks[end].slot.has_value() &&
               used + chunks[end].size <= pool.slot_bytes());
      chunks[end - 1].releases_slot = true;
    }
    Status status = ParallelFor(end - begin, settings_.threads, [&](size_t k) {
      std::memcpy(destinations[k], chunks[begin + k].data, chunks[begin + k].size);
      return Status::OK();
    });
    if (!status.ok()) {
      failure = status;
      return failure;
    }
    for (size_t i = begin; i < end; ++i) chunks[i].data = destinations[i - begin];
    begin = end;
  }
  stop_on_failure.Cancel();
  return Status::OK();
}

void SavePipeline::Discard(PendingSave& save) {
  for (PendingSave::Chunk& chunk : save.chunks_) {
    std::optional<size_t> slot = std::exchange(chunk.slot, std::nullopt);
    if (slot.has_value() && chunk.releases_slot) staging_->Release(*slot);
  }
}

Status SavePipeline::CommitLocally(PendingSave& save) {
  Manifest& manifest = save.manifest_;
  for (ManifestNode& node : manifest.nodes) {
    if (!node.boxed) continue;
    Status status = SetBoxes(&node, BoxesOf(node));
    if (!status.ok()) return status;
  }
  const ManifestLayout layout =
      store_->packs_manifests() ? ManifestLayout::kPacked : ManifestLayout::kNodeTables;
  std::string encoded = save.draft_
                            ? EncodeManifest(manifest, *std::exchange(save.draft_, std::nullopt))
                            : EncodeManifest(manifest, layout);
  return store_->CommitStep(manifest.step, std::move(encoded), save.new_chunks_);
}

Status SavePipeline::WriteAndCommit(PendingSave& save) {
  Status status = WriteChunks(save);
  if (!status.ok()) return status;
  return CommitLocally(save);
}

Status SavePipeline::AssignBoxes(Manifest* manifest) const {
  for (ManifestNode& node : manifest->nodes) {
    if (node.kind != Tree::Kind::kTensor) continue;
    if (settings_.process_count > 1 && !node.boxed) {
      // Every process holds the whole tensor: one writes it.
      node.boxed = true;
      if (WholeTensorWriter(node.path, settings_.process_count) == settings_.process_index &&
          node.byte_size > 0) {
        node.boxes.push_back({WholeBox(node.shape), 0});
      }
    }
    if (settings_.process_count == 1 && node.boxed) {
      std::vector<Box> boxes;
      for (const ManifestBox& box : node.boxes) boxes.push_back(box.box);
      std::string problem = TilingProblem(boxes, node.shape);
      if (!problem.empty()) {
        return Status::InvalidArgument("the shards of replica 0 of tensor '" + node.path +
                                       "' (shape " + ShapeString(node.shape) +
                                       ") do not tile it: " + problem);
      }
    }
  }
  return Status::OK();
}

int WholeTensorWriter(std::string_view path, int process_count) {
  // FNV-1a: the same on every process and build.
  uint64_t hash = 14695981039346656037ull;
  for (char c : path) hash = (hash ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  return static_cast<int>(hash % static_cast<uint64_t>(process_count));
}

namespace {

bool SameBoxes(const std::vector<ManifestBox>& a, const std::vector<ManifestBox>& b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(),
                    [](const ManifestBox& x, const ManifestBox& y) { return x.box == y.box; });
}

}  // namespace

bool SavePipeline::SameLayout(const ManifestNode& previous, const ManifestNode& node) {
  return previous.dtype == node.dtype && previous.shape == node.shape &&
         previous.boxed == node.boxed && SameBoxes(previous.boxes, node.boxes);
}

std::vector<const std::byte*> SavePipeline::BoxBuffers(const Tree& leaf, const ManifestNode& node) {
  std::vector<const std::byte*> buffers;
  if (leaf.kind() == Tree::Kind::kTensor) {
    // Unboxed, or a process's whole box of a tensor every process holds.
    if (!node.boxed || !node.boxes.empty()) buffers.push_back(leaf.tensor().data());
    return buffers;
  }
  // The shards FlattenTree made boxes of, in the same order.
  for (const Shard& shard : leaf.sharded().shards) {
    if (shard.replica_id == 0 && shard.data.byte_size() > 0) buffers.push_back(shard.data.data());
  }
  return buffers;
}

namespace {

// Delta encoding: `copy` now holds chunk `digest`, stored at `depth` (its
// chain began with a chunk of `whole_stored_size` bytes). Its buffer is
// reused (a new one would fault in its pages at every save).
void RefreshCopy(PendingSave::PositionCopy* copy, const ChunkDigest& digest, uint8_t depth,
                 uint32_t whole_stored_size, const std::byte* bytes, uint32_t size) {
  if (copy->capacity < size) {
    copy->bytes.reset(new std::byte[size]);
    copy->capacity = size;
  }
  std::memcpy(copy->bytes.get(), bytes, size);
  copy->digest = digest;
  copy->depth = depth;
  copy->whole_stored_size = whole_stored_size;
  copy->size = size;
  copy->valid = true;
}

}  // namespace

Status SavePipeline::WriteChunks(PendingSave& save) {
  std::vector<IndexEntry>* index_entries = &save.new_chunks_;
  std::vector<PendingSave::Chunk>& chunks = save.chunks_;
  // The writer releases the slots of the chunks it has compressed as it goes,
  // and on every exit those of every chunk handed to it.
  size_t released = 0;
  auto release_until = [&](size_t end) {
    for (; released < end; ++released) {
      if (chunks[released].slot.has_value() && chunks[released].releases_slot) {
        staging_->Release(*chunks[released].slot);
      }
    }
  };
  Cleanup stop([&] { release_until(save.StopWriter()); });
  if (chunks.empty()) return Status::OK();
  save.AwaitWriterStart();
  Result<std::unique_ptr<GenerationWriter>> writer =
      save.generation_.has_value() ? store_->NewGenerationFile(*save.generation_)
                                   : store_->NewGeneration();
  if (!writer.ok()) return writer.status();
  ChunkEncoding base;
  base.zstd_level = settings_.compression_level;
  base.byte_planes = store_->format_version() >= 2;

  // Compress a window of staged chunks in parallel, then append them in
  // digest order; the window (WriterWindow() chunks' worth of bytes) bounds
  // the memory held by compressed chunks. The writer takes what is staged,
  // never waiting for more than one chunk. A window is appended on a thread
  // of its own while the next one compresses: appending is mostly the
  // kernel copying into the page cache, which would otherwise leave the
  // cores that compress idle.
  const uint64_t window_bytes = uint64_t{WriterWindow()} * settings_.chunk_size_bytes;
  // Windows shrink near the end (kTailWindowBytes), so that the last
  // window's append, which nothing overlaps, is short.
  std::vector<uint64_t> bytes_from(chunks.size() + 1, 0);  // bytes of chunks [i, end)
  for (size_t i = chunks.size(); i-- > 0;) bytes_from[i] = bytes_from[i + 1] + chunks[i].size;
  struct Window {
    size_t begin = 0;
    size_t end = 0;
    std::vector<std::string>* encoded = nullptr;
    std::vector<uint8_t> depth;  // as stored: 0 whole, else a delta's depth
  };
  Window windows[2] = {{0, 0, &encode_buffers_[0], {}}, {0, 0, &encode_buffers_[1], {}}};
  auto append = [&](const Window& window) -> Status {
    for (size_t i = 0; i < window.end - window.begin; ++i) {
      const PendingSave::Chunk& chunk = chunks[window.begin + i];
      const std::string& stored = (*window.encoded)[i];
      Status status = (*writer)->Add(chunk.digest, stored);
      if (!status.ok()) return status;
      const auto stored_size = static_cast<uint32_t>(stored.size());
      for (const auto& [node, k] : chunk.refs) {
        save.manifest_.nodes[node].chunks[k].stored_size = stored_size;
      }
      ChunkLocation location;
      location.generation = (*writer)->generation();
      location.raw_size = chunk.size;
      location.stored_size = stored_size;
      if (window.depth[i] != 0) {
        location.delta_depth = window.depth[i];
        location.delta_base = chunk.delta->digest;
      }
      index_entries->push_back({chunk.digest, location});
    }
    return Status::OK();
  };
  // The previous window's append; joined before its buffers are reused and
  // before any return (it is declared after `stop`, which releases slots).
  std::future<Status> appending;
  auto appended = [&]() -> Status { return appending.valid() ? appending.get() : Status::OK(); };
  for (size_t begin = 0, parity = 0; begin < chunks.size(); parity ^= 1) {
    // The writer waits for the stager only with every window appended: an
    // append that failed must stop the writer, whose stop hands the stager
    // back every slot.
    if (save.Staged() <= begin) {
      Status previous = appended();
      if (!previous.ok()) return previous;
    }
    Result<size_t> staged = save.AwaitStaged(begin + 1);
    if (!staged.ok()) return staged.status();
    size_t end = begin + 1;
    const uint64_t limit =
        std::min(window_bytes, std::max(bytes_from[begin] / 2, kTailWindowBytes));
    for (uint64_t bytes = chunks[begin].size;
         end < *staged && end - begin < kMaxWindowChunks && bytes + chunks[end].size <= limit;
         ++end) {
      bytes += chunks[end].size;
    }
    Window& window = windows[parity];
    window.begin = begin;
    window.end = end;
    const size_t count = end - begin;
    std::vector<std::string>& encoded = *window.encoded;
    if (encoded.size() < count) encoded.resize(count);
    window.depth.assign(count, 0);
    Status status = ParallelFor(count, settings_.threads, [&](size_t i) {
      const PendingSave::Chunk& chunk = chunks[begin + i];
      ChunkEncoding encoding = base;
      encoding.element_width = chunk.element_width;
      const std::byte* bytes = chunk.data;
      if (save.recheck_caller_bytes_) {
        // What is stored under a digest must hash to it: compress a private
        // copy whose digest was taken on the way, never the caller's
        // buffer, which a broken zero_copy promise may be changing.
        thread_local std::vector<std::byte> copy;
        if (copy.size() < chunk.size) copy.resize(chunk.size);
        if (store_->hasher().DigestAndCopy(chunk.data, chunk.size, copy.data()) != chunk.digest) {
          return Status::InvalidArgument(
              "tensor '" + save.manifest_.nodes[chunk.refs.front().first].path +
              "' changed during a zero_copy save (its buffer must stay unchanged until the save "
              "finishes); the step was not saved");
        }
        bytes = copy.data();
      }
      uint32_t whole_stored_size = 0;
      if (chunk.delta.has_value()) {
        whole_stored_size = chunk.copies.front()->whole_stored_size;
        EncodeDeltaChunk(bytes, chunk.copies.front()->bytes.get(), chunk.size, *chunk.delta,
                         encoding, whole_stored_size, &encoded[i]);
      } else {
        EncodeChunk(bytes, chunk.size, encoding, &encoded[i]);
      }
      const bool stored_as_delta = StoredChunkCodec(encoded[i]) == ChunkCodec::kDelta;
      window.depth[i] = stored_as_delta ? chunk.delta->depth : 0;
      if (!stored_as_delta) whole_stored_size = static_cast<uint32_t>(encoded[i].size());
      for (PendingSave::PositionCopy* copy : chunk.copies) {
        RefreshCopy(copy, chunk.digest, window.depth[i], whole_stored_size, bytes, chunk.size);
      }
      return Status::OK();
    });
    Status previous = appended();
    if (!previous.ok()) return previous;
    if (!status.ok()) return status;
    // The window's raw bytes are no longer needed: the stager may refill
    // their slots while the window is appended.
    release_until(end);
    begin = end;
    if (begin == chunks.size()) {
      status = append(window);  // the last window: nothing to overlap
      if (!status.ok()) return status;
    } else {
      try {
        appending = std::async(std::launch::async, append, std::cref(window));
      } catch (const std::system_error&) {
        status = append(window);  // no thread to be had: appended here, not overlapped
        if (!status.ok()) return status;
      }
    }
  }
  return (*writer)->Finish();
}

}  // namespace ckptdb
