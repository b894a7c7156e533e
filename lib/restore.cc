#include "restore.h"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <system_error>
#include <thread>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>

#include "chunk_codec.h"
#include "huge_pages.h"
#include "parallel.h"
#include "store.h"
#include "tensor_arena.h"

namespace ckptdb {

std::string StepName(int64_t step) { return "step " + std::to_string(step); }

Result<Manifest> ReadStepManifest(const Store& store, int64_t step, uint64_t* encoded_bytes,
                                  ManifestParts parts) {
  Result<std::optional<std::string>> bytes = store.ReadManifest(step);
  if (!bytes.ok()) return bytes.status();
  if (!bytes->has_value()) return Status::NotFound(StepName(step) + " is not in " + store.dir());
  if (encoded_bytes != nullptr) *encoded_bytes = (*bytes)->size();
  Result<Manifest> manifest = DecodeManifest(**bytes, ManifestScope::kStep, parts);
  if (!manifest.ok()) {
    return manifest.status().WithContext("manifest of " + StepName(step) + " in " + store.dir());
  }
  if (manifest->step != step) {
    return Status::Corruption("manifest stored under " + StepName(step) + " in " + store.dir() +
                              " describes step " + std::to_string(manifest->step));
  }
  return manifest;
}

namespace {

// One chunk of a delta chain, as the index records it.
struct ChainLink {
  ChunkDigest digest;
  ChunkLocation location;
};

std::string BaseContext(const ChunkLocation& delta) {
  return "base chunk " + delta.delta_base.ToHex() + " of delta depth " +
         std::to_string(delta.delta_depth - 1);
}

// The chain of chunk `digest` from itself down to the chunk stored whole,
// from the index alone. Each base must be indexed one depth lower, so the
// walk ends within kMaxDeltaDepth steps whatever a damaged or hostile store
// holds.
Result<std::vector<ChainLink>> IndexedChain(const Store& store, const ChunkDigest& digest,
                                            const ChunkLocation& location) {
  std::vector<ChainLink> chain = {{digest, location}};
  while (chain.back().location.delta_depth != 0) {
    const ChunkLocation delta = chain.back().location;
    const std::string context = BaseContext(delta);
    Result<std::optional<ChunkLocation>> base = store.FindChunk(delta.delta_base);
    if (!base.ok()) return base.status().WithContext(context);
    if (!base->has_value()) return Status::NotFound(context + " is not in the chunk index");
    if ((*base)->delta_depth != delta.delta_depth - 1) {
      return Status::Corruption(context + " is indexed at depth " +
                                std::to_string((*base)->delta_depth));
    }
    chain.push_back({delta.delta_base, **base});
  }
  return chain;
}

}  // namespace

// The chain's whole chunk is decoded first, then each difference XORed in,
// one stored chunk read at a time. Each chunk's header must say what the
// index says of it (stored whole, or a delta of that base at that depth).
// The digest, which covers every chunk of the chain, is checked as part of
// using the last one, so that a mismatch marks the store damaged as a
// failed read does (Store::UseChunk).
Status ReadVerifiedChunk(const Store& store, const ChunkDigest& digest,
                         const ChunkLocation& location, uint32_t raw_size, std::byte* dest,
                         const PinnedChunk* read_ahead) {
  Result<std::vector<ChainLink>> chain = IndexedChain(store, digest, location);
  if (!chain.ok()) return chain.status();
  for (size_t i = chain->size(); i-- > 0;) {
    const ChainLink& link = (*chain)[i];
    auto decode = [&](std::string_view stored) -> Status {
      Result<std::optional<DeltaBase>> delta = ParseDeltaBase(stored);
      if (!delta.ok()) return delta.status();
      Status decoded;
      if (link.location.delta_depth == 0) {
        if (delta->has_value()) {
          return Status::Corruption("the chunk index says stored whole, the chunk is a delta");
        }
        decoded = DecodeChunk(stored, raw_size, dest);
      } else if (!delta->has_value()) {
        return Status::Corruption("the chunk index says delta chunk of depth " +
                                  std::to_string(link.location.delta_depth) +
                                  ", the chunk is stored whole");
      } else if ((*delta)->depth != link.location.delta_depth ||
                 (*delta)->digest != link.location.delta_base) {
        return Status::Corruption("the chunk index and the delta chunk disagree on its base");
      } else {
        decoded = ApplyDeltaChunk(stored, raw_size, dest);
      }
      if (!decoded.ok() || i != 0) return decoded;
      if (store.hasher().Digest(dest, raw_size) != digest) {
        return Status::Corruption("the bytes read fail their digest check");
      }
      return Status::OK();
    };
    Status status = i == 0 && read_ahead != nullptr
                        ? store.UseChunk(*read_ahead, decode)
                        : store.ReadChunk(link.digest, link.location, decode);
    if (!status.ok()) {
      return i == 0 ? status : status.WithContext(BaseContext((*chain)[i - 1].location));
    }
  }
  return Status::OK();
}

namespace {

// Reads chunks ahead of the decoders on a thread of its own, in the order
// the decoders take them (the chunk files' order), at most kAheadBytes
// ahead, so that a read is in flight while every decoder decodes: decoders
// that only read for themselves leave the disk idle whenever all of them
// decode at once. A decoder that finds its chunk not yet started reads it
// itself, as it did without this thread, so that a restore from the page
// cache (which copying bounds) still copies on every core.
class ChunkReadAhead {
 public:
  struct Request {
    const ChunkDigest* digest = nullptr;
    const ChunkLocation* location = nullptr;  // null: not read ahead
  };

  // Enough to cover a read's latency, little beside a restore's own memory.
  static constexpr uint64_t kAheadBytes = uint64_t{16} << 20;

  ChunkReadAhead(const Store& store, std::vector<Request> requests)
      : store_(store),
        requests_(std::move(requests)),
        states_(requests_.size(), State::kUnread),
        reads_(requests_.size()) {
    try {
      thread_ = std::thread([this] { Run(); });
    } catch (const std::system_error&) {
      // No thread to spare (a process or memory limit): every request stays
      // unread, and the decoders read for themselves.
    }
  }

  ~ChunkReadAhead() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    changed_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  // Request p's read, waiting for it if it is under way; null when p is not
  // read ahead or not started (the caller then reads it). Each request is
  // taken once.
  std::optional<Result<PinnedChunk>> Take(size_t p) {
    if (requests_[p].location == nullptr) return std::nullopt;
    std::unique_lock<std::mutex> lock(mutex_);
    if (states_[p] == State::kUnread) {
      states_[p] = State::kTaken;
      return std::nullopt;
    }
    changed_.wait(lock, [&] { return states_[p] == State::kRead; });
    std::optional<Result<PinnedChunk>> read = std::move(reads_[p]);
    reads_[p].reset();
    states_[p] = State::kTaken;
    ahead_bytes_ -= requests_[p].location->stored_size;
    lock.unlock();
    changed_.notify_all();
    return read;
  }

 private:
  enum class State : uint8_t { kUnread, kReading, kRead, kTaken };

  void Run() {
    for (size_t p = 0; p < requests_.size(); ++p) {
      const Request& request = requests_[p];
      if (request.location == nullptr) continue;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        changed_.wait(lock, [&] { return stopping_ || ahead_bytes_ < kAheadBytes; });
        if (stopping_) return;
        if (states_[p] != State::kUnread) continue;
        states_[p] = State::kReading;
      }
      Result<PinnedChunk> read =
          store_.PinChunk(*request.digest, *request.location);
      {
        std::lock_guard<std::mutex> lock(mutex_);
        reads_[p].emplace(std::move(read));
        states_[p] = State::kRead;
        ahead_bytes_ += request.location->stored_size;
      }
      changed_.notify_all();
    }
  }

  const Store& store_;
  const std::vector<Request> requests_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<State> states_;
  std::vector<std::optional<Result<PinnedChunk>>> reads_;  // kRead: the read
  uint64_t ahead_bytes_ = 0;  // the stored bytes read and not yet taken
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace

Status DecodeTensors(Store& store, int64_t step, const std::vector<DecodeTarget>& targets,
                     size_t threads) {
  struct ChunkTask {
    const ManifestNode* node;
    size_t chunk;
    std::byte* dest;
  };
  // A saved box that overlaps a target's region without being it decodes
  // the chunks covering the overlap into scratch memory, copied out after.
  struct RegionCopy {
    std::unique_ptr<std::byte[]> scratch;  // the box's bytes from `skip` on
    Box saved;
    uint64_t skip = 0;
    const DecodeTarget* target;
    Box want;
    Box overlap;
  };
  // A chunk of which a target needs only a part: decoded whole into
  // scratch, then `size` bytes from `skip` on copied to `dest`.
  struct ChunkPart {
    std::unique_ptr<std::byte[]> scratch;
    uint64_t skip = 0;
    std::byte* dest = nullptr;
    uint64_t size = 0;
  };
  // Each stored tensor's saved boxes, indexed once for all its targets (a
  // template of n shards restores in n log n, not n^2), with the index of
  // each box's first chunk.
  struct SavedBoxes {
    BoxIndex index;
    std::vector<size_t> first_chunks;
  };
  std::unordered_map<const ManifestNode*, SavedBoxes> saved_boxes;
  auto boxes_of = [&](const ManifestNode& node) -> const SavedBoxes& {
    auto [at, added] = saved_boxes.try_emplace(&node, SavedBoxes{BoxIndex({}), {}});
    if (added) {
      std::vector<Box> boxes;
      size_t first_chunk = 0;
      for (const ManifestBox& saved : BoxLayout(node)) {
        boxes.push_back(saved.box);
        at->second.first_chunks.push_back(first_chunk);
        first_chunk += saved.chunk_count;
      }
      at->second.index = BoxIndex(std::move(boxes));
    }
    return at->second;
  };
  std::vector<ChunkTask> tasks;
  std::vector<RegionCopy> copies;
  std::vector<ChunkPart> parts;
  for (const DecodeTarget& target : targets) {
    const ManifestNode& node = *target.node;
    const size_t element_size = DTypeSize(node.dtype);
    if (node.inlined && !target.region.has_value()) {
      std::memcpy(target.dest, node.inline_bytes.data(), node.inline_bytes.size());
      continue;
    }
    if (!node.boxed && !target.region.has_value()) {  // whole into whole: the chunks in turn
      uint64_t offset = 0;
      for (size_t k = 0; k < node.chunks.size(); ++k) {
        tasks.push_back({&node, k, target.dest + offset});
        offset += node.chunks[k].raw_size;
      }
      continue;
    }
    const Box want = target.region.value_or(WholeBox(node.shape));
    if (node.inlined) {  // the bytes are in the manifest: no chunk to read
      const Box whole = WholeBox(node.shape);
      std::optional<Box> overlap = Intersect(whole, want);
      if (overlap.has_value()) {
        CopyRegion(reinterpret_cast<const std::byte*>(node.inline_bytes.data()), whole, 0,
                   target.dest, want, *overlap, element_size);
      }
      continue;
    }
    const SavedBoxes& saved_of_node = boxes_of(node);
    for (size_t b : saved_of_node.index.Overlapping(want)) {
      const Box& saved_box = saved_of_node.index.boxes()[b];
      const size_t box_first_chunk = saved_of_node.first_chunks[b];
      const size_t chunk_count = (b + 1 < saved_of_node.first_chunks.size()
                                      ? saved_of_node.first_chunks[b + 1]
                                      : node.chunks.size()) -
                                 box_first_chunk;
      const ChunkRef* box_chunks = node.chunks.data() + box_first_chunk;
      std::optional<Box> overlap = Intersect(saved_box, want);
      if (!overlap.has_value() || BoxElements(*overlap) == 0) continue;
      if (saved_box == want) {
        uint64_t offset = 0;
        for (size_t k = 0; k < chunk_count; ++k) {
          tasks.push_back({&node, box_first_chunk + k, target.dest + offset});
          offset += box_chunks[k].raw_size;
        }
        continue;
      }
      const uint64_t first_byte = IndexInBox(saved_box, overlap->start) * element_size;
      const uint64_t end_byte = (IndexInBox(saved_box, LastPoint(*overlap)) + 1) * element_size;
      std::vector<std::pair<size_t, uint64_t>> needed;  // chunk, offset in the box
      uint64_t offset = 0;
      for (size_t k = 0; k < chunk_count; ++k) {
        const uint64_t end = offset + box_chunks[k].raw_size;
        if (end > first_byte && offset < end_byte) needed.emplace_back(k, offset);
        offset = end;
      }
      if (IsOneRun(*overlap, saved_box) && IsOneRun(*overlap, want)) {
        // One run of bytes on both sides (row shardings): the chunks inside
        // it decode in place; only those it covers in part (at most two)
        // go through scratch memory.
        std::byte* run = target.dest + IndexInBox(want, overlap->start) * element_size;
        for (const auto& [k, chunk_offset] : needed) {
          const uint64_t size = box_chunks[k].raw_size;
          if (chunk_offset >= first_byte && chunk_offset + size <= end_byte) {
            tasks.push_back({&node, box_first_chunk + k, run + (chunk_offset - first_byte)});
            continue;
          }
          const uint64_t from = std::max(chunk_offset, first_byte);
          const uint64_t to = std::min(chunk_offset + size, end_byte);
          ChunkPart part{std::make_unique<std::byte[]>(size), from - chunk_offset,
                         run + (from - first_byte), to - from};
          tasks.push_back({&node, box_first_chunk + k, part.scratch.get()});
          parts.push_back(std::move(part));
        }
        continue;
      }
      RegionCopy copy{nullptr, saved_box, 0, &target, want, *overlap};
      copy.skip = needed.front().second;
      const uint64_t scratch_end =
          needed.back().second + box_chunks[needed.back().first].raw_size;
      copy.scratch.reset(new std::byte[scratch_end - copy.skip]);
      for (const auto& [k, chunk_offset] : needed) {
        tasks.push_back({&node, box_first_chunk + k, copy.scratch.get() + (chunk_offset - copy.skip)});
      }
      copies.push_back(std::move(copy));
    }
  }
  // Chunks are read in the order they lie in the chunk files (generation,
  // then digest): each file is then read front to back, which the kernel's
  // readahead turns into large sequential reads. Tree order jumps about a
  // file: a cold restore of 256 MiB (one generation) took 0.24-0.30 s in
  // tree order, 0.20-0.23 s in file order.
  std::vector<Result<std::optional<ChunkLocation>>> found;
  found.reserve(tasks.size());
  for (const ChunkTask& task : tasks) {
    found.push_back(store.FindChunk(task.node->chunks[task.chunk].digest));
  }
  auto file_order = [&](size_t i) {
    const bool known = found[i].ok() && found[i]->has_value();
    return std::make_tuple(!known, known ? (*found[i])->generation : 0,
                           tasks[i].node->chunks[tasks[i].chunk].digest);
  };
  constexpr int kReaderAttempts = 10;
  constexpr uint32_t kReadAheadMinBytes = 64u << 10;
  std::vector<char> missing(tasks.size(), 0);
  int attempt = 1;
  // `read_ahead`: the chunk's read by ChunkReadAhead, if it made one.
  auto decode = [&](size_t i, const Result<PinnedChunk>* read_ahead) -> Status {
    const ChunkTask& task = tasks[i];
    const ChunkRef& ref = task.node->chunks[task.chunk];
    missing[i] = 0;
    Result<std::optional<ChunkLocation>> location =
        attempt == 1 ? found[i] : store.FindChunk(ref.digest);
    Status status = location.status();
    if (status.ok() && !location->has_value()) {
      status = Status::NotFound("the chunk is not in the chunk index");
    } else if (status.ok() && read_ahead != nullptr && !read_ahead->ok()) {
      status = read_ahead->status();
    } else if (status.ok()) {
      status = ReadVerifiedChunk(store, ref.digest, **location, ref.raw_size, task.dest,
                                 read_ahead != nullptr ? &**read_ahead : nullptr);
    }
    if (status.IsNotFound() && store.read_only() && attempt < kReaderAttempts) {
      missing[i] = 1;
      return Status::OK();
    }
    if (status.ok()) return status;
    const std::string where = StepName(step) + ", tensor '" + task.node->path + "', chunk " +
                              std::to_string(task.chunk) + " (" + ref.digest.ToHex() + ")";
    if (status.IsNotFound()) return Status::Corruption(where + ": " + status.message());
    return status.WithContext(where);
  };
  std::vector<size_t> pending(tasks.size());
  for (size_t i = 0; i < tasks.size(); ++i) pending[i] = i;
  std::sort(pending.begin(), pending.end(),
            [&](size_t a, size_t b) { return file_order(a) < file_order(b); });
  for (;; ++attempt) {
    // The first attempt reads ahead the chunks large enough for one
    // sequential stream to pay (small ones cost a lookup each, which the
    // decoders share out better); a catch-up's retries are few.
    std::vector<ChunkReadAhead::Request> requests(attempt == 1 ? pending.size() : 0);
    bool any_read_ahead = false;
    for (size_t p = 0; p < requests.size(); ++p) {
      const Result<std::optional<ChunkLocation>>& location = found[pending[p]];
      if (location.ok() && location->has_value() &&
          (*location)->stored_size >= kReadAheadMinBytes) {
        requests[p] = {&tasks[pending[p]].node->chunks[tasks[pending[p]].chunk].digest,
                       &**location};
        any_read_ahead = true;
      }
    }
    std::optional<ChunkReadAhead> reader;
    if (any_read_ahead) reader.emplace(store, std::move(requests));
    Status status = ParallelFor(pending.size(), threads, [&](size_t p) {
      if (!reader.has_value()) return decode(pending[p], nullptr);
      std::optional<Result<PinnedChunk>> read = reader->Take(p);
      return decode(pending[p], read.has_value() ? &*read : nullptr);
    });
    reader.reset();
    if (!status.ok()) return status;
    std::erase_if(pending, [&](size_t i) { return !missing[i]; });
    if (pending.empty()) break;
    status = store.CatchUp();
    if (!status.ok()) return status;
  }
  for (const ChunkPart& part : parts) std::memcpy(part.dest, part.scratch.get() + part.skip, part.size);
  return ParallelFor(copies.size(), threads, [&](size_t i) {
    const RegionCopy& copy = copies[i];
    CopyRegion(copy.scratch.get(), copy.saved, copy.skip, copy.target->dest, copy.want,
               copy.overlap, DTypeSize(copy.target->node->dtype));
    return Status::OK();
  });
}

namespace {

std::string Shown(const std::string& path) { return path.empty() ? "(root)" : path; }

// Calls visit(tensor, region) for each buffer a template leaf restores
// into: a tensor's (the whole tensor, no region), or each shard's, with its
// box. Stops when visit returns false.
template <typename TreeT, typename Visit>
void ForEachLeafBuffer(TreeT& leaf, const Visit& visit) {
  if (leaf.kind() == Tree::Kind::kTensor) {
    visit(&leaf.tensor(), std::optional<Box>());
    return;
  }
  for (auto& shard : leaf.sharded().shards) {
    if (!visit(&shard.data, std::optional<Box>(Box{shard.start, shard.data.shape()}))) return;
  }
}

// The template's nodes in pre-order when it has the stored tree's shape:
// node i of the walk carries stored node i's key, and containers agree in
// kind and child count (leaves may still differ: TemplateMismatches tells
// how). False when the shapes part, the walk then being of no use.
bool WalkAlongside(Tree& node, std::string_view key, uint32_t depth,
                   const std::vector<ManifestNode>& stored, std::vector<Tree*>* out) {
  const size_t i = out->size();
  if (i >= stored.size() || depth > kMaxTreeDepth || stored[i].key != key) return false;
  const ManifestNode& have = stored[i];
  const bool stored_container = have.kind == Tree::Kind::kMap || have.kind == Tree::Kind::kList;
  if (node.is_container() != stored_container) return false;
  if (stored_container && (node.kind() != have.kind || node.child_count() != have.child_count)) {
    return false;
  }
  out->push_back(&node);
  bool aligned = true;
  const bool is_map = node.kind() == Tree::Kind::kMap;
  node.ForEachMutableChild([&](std::string_view child_key, Tree& child) {
    aligned = aligned && WalkAlongside(child, is_map ? child_key : std::string_view(), depth + 1,
                                       stored, out);
  });
  return aligned;
}

// A template's node for each stored node (nullptr where the template lacks
// it), matched by path.
std::vector<Tree*> TemplateNodes(const std::vector<ManifestNode>& stored,
                                 const std::vector<ManifestNode>& wanted,
                                 const std::vector<const Tree*>& sources) {
  // The template of the tree that was saved lists the same paths in the
  // same order (pre-order, map keys sorted): matched without a lookup.
  std::vector<Tree*> nodes;
  nodes.reserve(stored.size());
  for (size_t i = 0; i < stored.size() && i < wanted.size() && stored[i].path == wanted[i].path;
       ++i) {
    nodes.push_back(const_cast<Tree*>(sources[i]));
  }
  if (nodes.size() == stored.size()) return nodes;
  std::unordered_map<std::string_view, size_t> wanted_at;
  wanted_at.reserve(wanted.size());
  for (size_t i = 0; i < wanted.size(); ++i) wanted_at.emplace(wanted[i].path, i);
  for (size_t i = nodes.size(); i < stored.size(); ++i) {
    auto found = wanted_at.find(stored[i].path);
    // The template is the caller's mutable tree, flattened through a const view.
    nodes.push_back(found == wanted_at.end() ? nullptr
                                             : const_cast<Tree*>(sources[found->second]));
  }
  return nodes;
}

// A template's differences from the stored tree: every one counted, the
// first few described (a template of another model has one per leaf, and
// only the first few help).
class TemplateProblems {
 public:
  bool empty() const { return count_ == 0; }
  // Counts a problem; `describe()` makes its line, called only while lines
  // are still listed.
  template <typename Describe>
  void Add(const Describe& describe) {
    if (lines_.size() < kListed) lines_.push_back(describe());
    ++count_;
  }
  // "(N problems):" and the listed lines, then how many more there are.
  std::string Text() const {
    std::string text = "(" + std::to_string(count_) + " problems):";
    for (const std::string& line : lines_) text += "\n  " + line;
    if (count_ > lines_.size())
      text += "\n  ... and " + std::to_string(count_ - lines_.size()) + " more";
    return text;
  }

 private:
  static constexpr size_t kListed = 20;
  std::vector<std::string> lines_;
  size_t count_ = 0;
};

// Every difference between the stored tree and a template, one per line.
// `wanted` is the template flattened, or nullptr when it walked alongside
// the stored tree (it then has nothing more).
TemplateProblems TemplateMismatches(const std::vector<ManifestNode>& stored,
                                    const std::vector<Tree*>& template_nodes,
                                    const std::vector<ManifestNode>* wanted, bool donate) {
  TemplateProblems problems;
  // Every stored node found a template node: the template holds more only
  // when it has more nodes.
  const bool all_found =
      std::find(template_nodes.begin(), template_nodes.end(), nullptr) == template_nodes.end();
  if (wanted != nullptr && (!all_found || wanted->size() != stored.size())) {
    std::unordered_set<std::string_view> stored_paths;
    for (const ManifestNode& node : stored) stored_paths.insert(node.path);
    for (const ManifestNode& node : *wanted) {
      if (stored_paths.count(node.path) == 0) {
        problems.Add([&] {
          return "extra: '" + Shown(node.path) + "' is in the template, not in the checkpoint";
        });
      }
    }
  }
  for (size_t i = 0; i < stored.size(); ++i) {
    const ManifestNode& have = stored[i];
    const Tree* leaf = template_nodes[i];
    if (leaf == nullptr) {
      problems.Add([&] {
        return "missing: '" + Shown(have.path) + "' is in the checkpoint, not in the template";
      });
      continue;
    }
    // A sharded leaf stands for a tensor.
    const Tree::Kind kind =
        leaf->kind() == Tree::Kind::kShardedTensor ? Tree::Kind::kTensor : leaf->kind();
    if (have.kind != kind) {
      problems.Add([&] {
        return "kind: '" + Shown(have.path) + "' is a " + std::string(KindName(have.kind)) +
               " in the checkpoint, a " + std::string(KindName(kind)) + " in the template";
      });
      continue;
    }
    if (kind != Tree::Kind::kTensor) continue;
    const DType dtype =
        leaf->kind() == Tree::Kind::kTensor ? leaf->tensor().dtype() : leaf->sharded().dtype;
    const std::vector<int64_t>& shape =
        leaf->kind() == Tree::Kind::kTensor ? leaf->tensor().shape() : leaf->sharded().global_shape;
    if (have.dtype != dtype) {
      problems.Add([&] {
        return "dtype: '" + Shown(have.path) + "' is " + std::string(DTypeName(have.dtype)) +
               " in the checkpoint, " + std::string(DTypeName(dtype)) + " in the template";
      });
    }
    if (have.shape != shape) {
      problems.Add([&] {
        return "shape: '" + Shown(have.path) + "' is " + ShapeString(have.shape) +
               " in the checkpoint, " + ShapeString(shape) + " in the template";
      });
    }
    if (!donate) continue;
    ForEachLeafBuffer(*leaf, [&](const Tensor* tensor, const std::optional<Box>&) {
      if (tensor->writable()) return true;
      problems.Add([&] {
        return "read-only: '" + Shown(have.path) +
               "' is a ConstView; restore with donate needs a writable buffer";
      });
      return false;
    });
  }
  return problems;
}

// Tensors of the template whose buffers overlap: decoding two stored tensors
// into one buffer would leave one of them wrong.
TemplateProblems AliasedBuffers(const std::vector<ManifestNode>& stored,
                                const std::vector<Tree*>& template_nodes) {
  struct Range {
    const std::byte* begin;
    const std::byte* end;
    const std::string* path;
  };
  std::vector<Range> ranges;
  for (size_t i = 0; i < stored.size(); ++i) {
    if (stored[i].kind != Tree::Kind::kTensor) continue;
    ForEachLeafBuffer(*template_nodes[i], [&](const Tensor* tensor, const std::optional<Box>&) {
      if (tensor->byte_size() > 0) {
        ranges.push_back({tensor->data(), tensor->data() + tensor->byte_size(), &stored[i].path});
      }
      return true;
    });
  }
  std::sort(ranges.begin(), ranges.end(),
            [](const Range& a, const Range& b) { return std::less<>()(a.begin, b.begin); });
  TemplateProblems problems;
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (std::less<>()(ranges[i].begin, ranges[i - 1].end)) {
      problems.Add([&] {
        return "aliased: '" + *ranges[i - 1].path + "' and '" + *ranges[i].path +
               "' share memory; restore with donate needs distinct buffers";
      });
    }
  }
  return problems;
}

// The nodes of `nodes` under any of `paths`, copied into `*storage`; with
// no paths, `nodes` itself (uncopied). NotFound for a path that names no
// node.
Result<const std::vector<ManifestNode>*> SelectNodes(const std::vector<ManifestNode>& nodes,
                                                     const std::vector<std::string>& paths,
                                                     const std::string& where,
                                                     std::vector<ManifestNode>* storage) {
  if (paths.empty()) return &nodes;
  if (std::optional<std::string> missing = MissingPath(nodes, paths)) {
    return Status::NotFound(where + " holds no path '" + *missing + "'");
  }
  storage->clear();
  for (const ManifestNode& node : nodes) {
    if (IsUnderAny(node.path, paths)) storage->push_back(node);
  }
  return storage;
}

}  // namespace

Status RestoreIntoTemplate(Store& store, const Manifest& manifest, Tree* state,
                           const RestoreOptions& options, size_t threads) {
  const std::string where = StepName(manifest.step) + " in " + store.dir();
  std::vector<ManifestNode> selected;
  Result<const std::vector<ManifestNode>*> selection =
      SelectNodes(manifest.nodes, options.only_paths, where, &selected);
  if (!selection.ok()) return selection.status();
  const std::vector<ManifestNode>* stored = *selection;
  // A template of the saved tree's shape (the usual case) is matched by
  // walking it alongside the stored nodes; any other is flattened and its
  // nodes matched by path.
  std::vector<Tree*> template_nodes;
  std::optional<std::vector<ManifestNode>> wanted;
  if (!options.only_paths.empty() || !WalkAlongside(*state, "", 0, *stored, &template_nodes) ||
      template_nodes.size() != stored->size()) {
    std::vector<const Tree*> sources;
    Result<std::vector<ManifestNode>> flat = FlattenTree(*state, &sources);
    if (!flat.ok()) return flat.status().WithContext("restore template");
    wanted = std::move(*flat);
    if (!options.only_paths.empty()) {  // keeps `sources` parallel to `wanted`
      size_t kept = 0;
      for (size_t i = 0; i < wanted->size(); ++i) {
        if (!IsUnderAny((*wanted)[i].path, options.only_paths)) continue;
        (*wanted)[kept] = std::move((*wanted)[i]);
        sources[kept++] = sources[i];
      }
      wanted->resize(kept);
      sources.resize(kept);
    }
    template_nodes = TemplateNodes(*stored, *wanted, sources);
  }
  TemplateProblems problems = TemplateMismatches(
      *stored, template_nodes, wanted.has_value() ? &*wanted : nullptr, options.donate);
  if (options.donate && problems.empty()) problems = AliasedBuffers(*stored, template_nodes);
  if (!problems.empty()) {
    const std::string message = "the template does not match " + where + " " + problems.Text();
    return Status::InvalidArgument(message);
  }

  // Without donation, tensors decode into new buffers that replace the
  // template's only once everything decoded.
  std::vector<DecodeTarget> targets;
  std::vector<std::pair<Tensor*, Tensor>> replacements;
  TensorArena arena;  // the fresh tensors of a restore that does not donate
  for (size_t i = 0; i < stored->size(); ++i) {
    const ManifestNode& node = (*stored)[i];
    if (node.kind != Tree::Kind::kTensor) continue;
    Status allocated;
    ForEachLeafBuffer(*template_nodes[i], [&](Tensor* tensor, const std::optional<Box>& region) {
      if (options.donate) {
        // The chunks overwrite every byte of a whole tensor: a caller's
        // fresh buffer (numpy's and torch's empty arrays, a restarted
        // trainer's template) then faults in 2 MiB pages instead of 4 KiB
        // ones (a cold restore of 256 MiB of float32 into such a template
        // 0.125-0.130 -> 0.116-0.125 s). Buffers ckptdb allocates are
        // advised when allocated.
        if (!region.has_value()) AdviseHugePages(tensor->mutable_data(), tensor->byte_size());
        targets.push_back({&node, tensor->mutable_data(), region});
        return true;
      }
      Result<Tensor> fresh = arena.Allocate(node.dtype, tensor->shape());
      if (!fresh.ok()) {
        allocated = fresh.status().WithContext(node.path);
        return false;
      }
      targets.push_back({&node, fresh->mutable_data(), region});
      replacements.emplace_back(tensor, std::move(*fresh));
      return true;
    });
    if (!allocated.ok()) return allocated;
  }
  Status status = DecodeTensors(store, manifest.step, targets, threads);
  if (!status.ok()) return status;
  for (auto& [tensor, fresh] : replacements) *tensor = std::move(fresh);
  for (size_t i = 0; i < stored->size(); ++i) {
    const ManifestNode& node = (*stored)[i];
    Tree* leaf = template_nodes[i];
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

Result<Tree> RestoreSubtree(Store& store, const Manifest& manifest, const std::string& path,
                            size_t threads) {
  std::vector<ManifestNode> selected;
  Result<const std::vector<ManifestNode>*> subtree = SelectNodes(
      manifest.nodes, path.empty() ? std::vector<std::string>{} : std::vector<std::string>{path},
      StepName(manifest.step) + " in " + store.dir(), &selected);
  if (!subtree.ok()) return subtree.status();
  // Each tensor decodes into the buffer made for it (a tensor's buffer
  // stays where it is as the tree grows).
  std::vector<DecodeTarget> targets;
  TensorArena arena;
  Result<Tree> tree = BuildTree(**subtree, [&](const ManifestNode& node) -> Result<Tensor> {
    Result<Tensor> tensor = arena.Allocate(node.dtype, node.shape);
    if (tensor.ok()) targets.push_back({&node, tensor->mutable_data()});
    return tensor;
  });
  if (!tree.ok()) return tree.status();
  Status status = DecodeTensors(store, manifest.step, targets, threads);
  if (!status.ok()) return status;
  return tree;
}

}  // namespace ckptdb
