#include "manifest.h"

#include <flatbuffers/flatbuffers.h>
#include <xxhash.h>

#include <algorithm>
#include <cassert>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstring>

static_assert(std::endian::native == std::endian::little,
              "manifests are little-endian; byte-wise copies assume the host is too");

#include "chunk_codec.h"
#include "manifest_generated.h"
#include "manifest_packed.h"

namespace ckptdb {
namespace {

std::string JoinPath(const std::string& parent, std::string_view part) {
  std::string path = parent;
  if (!path.empty()) path += '/';
  path += part;
  return path;
}

// The number of nodes of `node`'s subtree (counted to kMaxTreeDepth), so that
// FlattenTree refuses a tree too large before walking it, and allocates once:
// a vector of a million nodes grown by doubling holds two copies at its peak.
size_t CountNodes(const Tree& node, uint32_t depth) {
  size_t count = 1;
  if (depth > kMaxTreeDepth) return count;
  node.ForEachChild([&](std::string_view, const Tree& child) { count += CountNodes(child, depth + 1); });
  return count;
}

// Walks a tree in pre-order for FlattenTree.
class Flattener {
 public:
  Flattener(std::vector<ManifestNode>* out, std::vector<const Tree*>* sources, TreeDraft* draft)
      : out_(out), sources_(sources), draft_(draft) {}

  // `path` is the node's; the walk extends it in place for each child and
  // cuts it back, so that a node's path is copied only where it is kept.
  Status Visit(const Tree& node, std::string_view key, std::string* path, uint32_t depth);
  // The bytes of the keys and string values visited.
  uint64_t text_bytes() const { return text_bytes_; }

 private:
  // A drafted node goes into the draft, except a tensor stored as chunks.
  static bool KeptWhole(const ManifestNode& node) {
    return node.kind == Tree::Kind::kTensor &&
           (node.boxed || node.byte_size > kMaxInlineTensorBytes);
  }

  std::vector<ManifestNode>* const out_;
  std::vector<const Tree*>* const sources_;
  TreeDraft* const draft_;
  uint64_t text_bytes_ = 0;
};

Status Flattener::Visit(const Tree& node, std::string_view key, std::string* path,
                        uint32_t depth) {
  if (depth > kMaxTreeDepth) {
    return Status::InvalidArgument("tree deeper than " + std::to_string(kMaxTreeDepth) +
                                   " levels at '" + *path + "'");
  }
  ManifestNode flat;
  flat.kind = node.kind();
  flat.key = key;
  flat.depth = depth;
  switch (node.kind()) {
    case Tree::Kind::kMap:
    case Tree::Kind::kList: flat.child_count = static_cast<uint32_t>(node.child_count()); break;
    case Tree::Kind::kTensor:
      flat.dtype = node.tensor().dtype();
      flat.shape = node.tensor().shape();
      flat.byte_size = node.tensor().byte_size();
      break;
    case Tree::Kind::kShardedTensor: {
      // Stored as the global tensor, with the boxes of the shards this
      // process writes: replica 0's, except those without an element.
      const ShardedTensor& sharded = node.sharded();
      Status checked = CheckShardedTensor(sharded);
      if (!checked.ok()) return checked.WithContext("'" + *path + "'");
      flat.kind = Tree::Kind::kTensor;
      flat.dtype = sharded.dtype;
      flat.shape = sharded.global_shape;
      flat.byte_size = TensorByteSize(sharded.dtype, sharded.global_shape).value();
      flat.boxed = true;
      for (const Shard& shard : sharded.shards) {
        if (shard.replica_id == 0 && shard.data.byte_size() > 0) {
          flat.boxes.push_back({Box{shard.start, shard.data.shape()}, 0});
        }
      }
      break;
    }
    case Tree::Kind::kInt: flat.int_value = node.int_value(); break;
    case Tree::Kind::kBool: flat.int_value = node.bool_value() ? 1 : 0; break;
    case Tree::Kind::kFloat: flat.float_value = node.float_value(); break;
    case Tree::Kind::kString: flat.string_value = node.string_value(); break;
  }
  text_bytes_ += flat.key.size() + flat.string_value.size();
  if (draft_ == nullptr || KeptWhole(flat)) {
    if (draft_ != nullptr) {
      // Its key takes its index now, as it would packed in place.
      if (!flat.key.empty()) draft_->packer->KeyIndex(flat.key);
      draft_->kept_at.push_back(draft_->packed.size());
    }
    flat.path = *path;
    out_->push_back(std::move(flat));
    if (sources_ != nullptr) sources_->push_back(&node);
  } else {
    // Copied now: the blocking phase copies all a save keeps of the
    // caller's memory.
    if (flat.kind == Tree::Kind::kTensor && flat.byte_size > 0) {
      flat.inlined = true;
      flat.inline_bytes.assign(reinterpret_cast<const char*>(node.tensor().data()), flat.byte_size);
    }
    draft_->packer->Append(flat, &draft_->packed);
  }
  const bool is_map = node.kind() == Tree::Kind::kMap;
  const size_t length = path->size();
  Status status;
  size_t index = 0;
  node.ForEachChild([&](std::string_view child_key, const Tree& child) {
    if (!status.ok()) return;
    if (length != 0) path->push_back('/');
    if (is_map) {
      path->append(child_key);
    } else {
      path->append(std::to_string(index++));
    }
    status = Visit(child, is_map ? child_key : std::string_view(), path, depth + 1);
    path->resize(length);
  });
  return status;
}

Status Invalid(size_t index, const std::string& what) {
  return Status::Corruption("manifest node " + std::to_string(index) + ": " + what);
}

// Empty when `chunks` cover exactly `bytes` bytes; else what is wrong.
std::string ChunkCoverageProblem(const ChunkRef* chunks, size_t count, uint64_t bytes) {
  uint64_t covered = 0;
  for (size_t k = 0; k < count; ++k) {
    const uint32_t raw_size = chunks[k].raw_size;
    if (raw_size == 0 || raw_size > kMaxChunkRawSize) {
      return "chunk of " + std::to_string(raw_size) + " raw bytes";
    }
    covered += raw_size;
  }
  if (covered != bytes) {
    return "chunks cover " + std::to_string(covered) + " bytes of " + std::to_string(bytes);
  }
  return {};
}

// Empty when the boxes of a boxed tensor node lie inside it, their chunk
// counts add up to its chunks, each box's chunks cover its bytes, and (for
// a stored step) the boxes tile the tensor in order of their starts.
std::string BoxesProblem(const ManifestNode& node, ManifestScope scope) {
  const size_t element_size = DTypeSize(node.dtype);
  size_t first_chunk = 0;
  for (size_t b = 0; b < node.boxes.size(); ++b) {
    const ManifestBox& box = node.boxes[b];
    std::string problem = BoxProblem(box.box, node.shape);
    if (problem.empty() && box.chunk_count > node.chunks.size() - first_chunk) {
      problem = "more chunks than the node has";
    }
    if (problem.empty()) {
      problem = ChunkCoverageProblem(node.chunks.data() + first_chunk, box.chunk_count,
                                     BoxElements(box.box) * element_size);
    }
    if (!problem.empty()) return "box " + std::to_string(b) + ": " + problem;
    if (scope == ManifestScope::kStep && b > 0 && !(node.boxes[b - 1].box.start < box.box.start)) {
      return "box " + std::to_string(b) + " out of order";
    }
    first_chunk += box.chunk_count;
  }
  if (first_chunk != node.chunks.size()) return "chunks beyond the last box";
  if (scope == ManifestScope::kProcess) return {};
  std::vector<Box> boxes;
  for (const ManifestBox& box : node.boxes) boxes.push_back(box.box);
  return TilingProblem(boxes, node.shape);
}

Status CheckTensorNode(size_t index, ManifestNode* node, ManifestScope scope) {
  if (!IsKnownDType(static_cast<uint8_t>(node->dtype))) {
    return Invalid(index, "unknown dtype " + std::to_string(static_cast<int>(node->dtype)));
  }
  Result<uint64_t> byte_size = TensorByteSize(node->dtype, node->shape);
  if (!byte_size.ok()) return Invalid(index, byte_size.status().message());
  node->byte_size = *byte_size;
  if (node->inlined) {
    if (node->boxed || !node->chunks.empty()) return Invalid(index, "inline tensor with chunks or boxes");
    if (*byte_size == 0 || *byte_size > kMaxInlineTensorBytes ||
        node->inline_bytes.size() != *byte_size) {
      return Invalid(index, std::to_string(node->inline_bytes.size()) +
                                " inline bytes for a tensor of " + std::to_string(*byte_size) +
                                " (at most " + std::to_string(kMaxInlineTensorBytes) + " inline)");
    }
    return Status::OK();
  }
  std::string problem = node->boxed ? BoxesProblem(*node, scope)
                                    : ChunkCoverageProblem(node->chunks.data(),
                                                           node->chunks.size(), *byte_size);
  if (!problem.empty()) return Invalid(index, problem + " (a tensor of " + std::to_string(*byte_size) + " bytes)");
  return Status::OK();
}

// Checks the decoded node list: one tree (CheckPreOrderTree), known kinds,
// tensors whose chunks cover exactly their bytes, scalars in range.
Status CheckTree(std::vector<ManifestNode>* nodes, ManifestScope scope) {
  if (nodes->empty()) return Status::Corruption("manifest has no root node");
  return CheckPreOrderTree(nodes, Invalid, [scope](size_t i, ManifestNode& node) -> Status {
    switch (node.kind) {
      case Tree::Kind::kMap:
      case Tree::Kind::kList:
      case Tree::Kind::kInt:
      case Tree::Kind::kFloat:
      case Tree::Kind::kString: break;
      case Tree::Kind::kTensor: {
        Status status = CheckTensorNode(i, &node, scope);
        if (!status.ok()) return status;
        break;
      }
      case Tree::Kind::kBool:
        if (node.int_value != 0 && node.int_value != 1) return Invalid(i, "bool not 0 or 1");
        break;
      default: return Invalid(i, "unknown kind " + std::to_string(static_cast<int>(node.kind)));
    }
    if (node.kind != Tree::Kind::kTensor && (!node.chunks.empty() || node.boxed)) {
      return Invalid(i, "chunks or boxes on a node that is not a tensor");
    }
    return Status::OK();
  });
}

}  // namespace

TreeDraft::TreeDraft() : packer(std::make_unique<TreePacker>()) {}
TreeDraft::~TreeDraft() = default;
TreeDraft::TreeDraft(TreeDraft&&) noexcept = default;
TreeDraft& TreeDraft::operator=(TreeDraft&&) noexcept = default;

Result<std::vector<ManifestNode>> FlattenTree(const Tree& tree, std::vector<const Tree*>* sources,
                                              TreeDraft* draft) {
  const size_t count = CountNodes(tree, 0);
  if (count > kMaxTreeNodes) {
    return Status::InvalidArgument("tree of " + std::to_string(count) + " nodes; at most " +
                                   std::to_string(kMaxTreeNodes) + " are supported");
  }
  std::vector<ManifestNode> nodes;
  if (sources != nullptr) sources->clear();
  // A draft keeps few nodes (the tensors stored as chunks).
  if (draft == nullptr) {
    nodes.reserve(count);
    if (sources != nullptr) sources->reserve(count);
  }
  Flattener flattener(&nodes, sources, draft);
  std::string path;
  Status status = flattener.Visit(tree, "", &path, 0);
  if (!status.ok()) return status;
  // FlatBuffers caps a buffer at 2 GiB: keep keys and strings well below.
  if (flattener.text_bytes() > kMaxTreeTextBytes) {
    return Status::InvalidArgument("the tree's keys and strings take " +
                                   std::to_string(flattener.text_bytes()) + " bytes; at most " +
                                   std::to_string(kMaxTreeTextBytes) + " are supported");
  }
  return nodes;
}

Status CheckPreOrderTree(
    std::vector<ManifestNode>* nodes,
    const std::function<Status(size_t index, const std::string& what)>& invalid,
    const std::function<Status(size_t index, ManifestNode& node)>& check_node) {
  if (nodes->empty()) return invalid(0, "no nodes");
  // A container whose children are still being read.
  struct OpenContainer {
    size_t node_index;
    uint32_t remaining;
    uint32_t next_index;
    const std::string* last_key;
  };
  std::vector<OpenContainer> open;
  for (size_t i = 0; i < nodes->size(); ++i) {
    ManifestNode& node = (*nodes)[i];
    if (i > 0) {
      if (open.empty()) return invalid(i, "follows a complete tree");
      OpenContainer& parent = open.back();
      const ManifestNode& parent_node = (*nodes)[parent.node_index];
      if (parent_node.kind == Tree::Kind::kMap) {
        if (node.key.empty()) return invalid(i, "child of a map without a key");
        if (node.key.find('/') != std::string::npos) {
          return invalid(i, "map key " + QuotedName(node.key) + " holds '/'");
        }
        if (parent.last_key != nullptr && node.key <= *parent.last_key) {
          return invalid(i, "map key " + QuotedName(node.key) + " out of order or repeated");
        }
        parent.last_key = &node.key;
        node.path = JoinPath(parent_node.path, node.key);
      } else {
        if (!node.key.empty()) return invalid(i, "list element with a key");
        node.path = JoinPath(parent_node.path, std::to_string(parent.next_index));
      }
      node.depth = parent_node.depth + 1;
      ++parent.next_index;
      if (--parent.remaining == 0) open.pop_back();
    } else {
      if (!node.key.empty()) return invalid(i, "root with a key");
      node.path.clear();
      node.depth = 0;
    }
    if (node.depth > kMaxTreeDepth) {
      return invalid(i, "tree deeper than " + std::to_string(kMaxTreeDepth) + " levels");
    }
    const bool container = node.kind == Tree::Kind::kMap || node.kind == Tree::Kind::kList;
    if (!container && node.child_count != 0) return invalid(i, "leaf with children");
    if (container && node.child_count > 0) {
      if (node.child_count > nodes->size() - i - 1) {
        return invalid(i, std::to_string(node.child_count) + " children, but only " +
                              std::to_string(nodes->size() - i - 1) + " nodes follow");
      }
      open.push_back({i, node.child_count, 0, nullptr});
    }
    Status status = check_node(i, node);
    if (!status.ok()) return status;
  }
  if (!open.empty()) {
    return invalid(open.back().node_index, "the list ends before this node has all its children");
  }
  return Status::OK();
}

std::string QuotedName(std::string_view name) {
  constexpr size_t kMaxShown = 200;
  if (name.size() <= kMaxShown) return "'" + std::string(name) + "'";
  return "'" + std::string(name.substr(0, kMaxShown)) + "...' (" + std::to_string(name.size()) +
         " bytes)";
}

bool IsUnder(std::string_view path, std::string_view prefix) {
  if (prefix.empty() || path == prefix) return true;
  return path.size() > prefix.size() && path.substr(0, prefix.size()) == prefix &&
         path[prefix.size()] == '/';
}

bool IsUnderAny(std::string_view path, const std::vector<std::string>& prefixes) {
  return std::any_of(prefixes.begin(), prefixes.end(),
                     [&](const std::string& prefix) { return IsUnder(path, prefix); });
}

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

Result<Tree> BuildTree(const std::vector<ManifestNode>& nodes) {
  return BuildTree(nodes, [](const ManifestNode& node) {
    return Tensor::Allocate(node.dtype, node.shape);
  });
}

Result<Tree> BuildTree(const std::vector<ManifestNode>& nodes,
                       const std::function<Result<Tensor>(const ManifestNode&)>& make_tensor) {
  // Parents are found through a stack of open containers, as in CheckTree.
  Tree root;
  std::vector<std::pair<Tree*, uint32_t>> open;  // container, children still to add
  for (const ManifestNode& node : nodes) {
    Tree built;
    switch (node.kind) {
      case Tree::Kind::kMap: built = Tree::Map(); break;
      case Tree::Kind::kList: built = Tree::List(); break;
      case Tree::Kind::kTensor: {
        Result<Tensor> tensor = make_tensor(node);
        if (!tensor.ok()) return tensor.status().WithContext(node.path);
        built = Tree::Leaf(std::move(*tensor));
        break;
      }
      case Tree::Kind::kInt: built = Tree::Int(node.int_value); break;
      case Tree::Kind::kBool: built = Tree::Bool(node.int_value != 0); break;
      case Tree::Kind::kFloat: built = Tree::Float(node.float_value); break;
      case Tree::Kind::kString: built = Tree::String(node.string_value); break;
      case Tree::Kind::kShardedTensor: return Status::Internal("a sharded node in a manifest");
    }
    Tree* placed = nullptr;
    if (open.empty()) {
      root = std::move(built);
      placed = &root;
    } else {
      Tree* parent = open.back().first;
      Result<Tree*> child = parent->kind() == Tree::Kind::kMap
                                ? parent->Set(node.key, std::move(built))
                                : parent->Append(std::move(built));
      if (!child.ok()) return child.status().WithContext(node.path);
      placed = *child;
      if (--open.back().second == 0) open.pop_back();
    }
    if (node.child_count > 0) open.emplace_back(placed, node.child_count);
  }
  return root;
}

Status SetBoxes(ManifestNode* node, std::vector<BoxChunks> boxes) {
  std::erase_if(boxes, [](const BoxChunks& box) { return BoxElements(box.box) == 0; });
  std::sort(boxes.begin(), boxes.end(),
            [](const BoxChunks& a, const BoxChunks& b) { return a.box.start < b.box.start; });
  std::vector<Box> tiles;
  for (const BoxChunks& box : boxes) tiles.push_back(box.box);
  std::string problem = TilingProblem(tiles, node->shape);
  for (size_t b = 0; b < boxes.size() && problem.empty(); ++b) {
    problem = ChunkCoverageProblem(boxes[b].chunks.data(), boxes[b].chunks.size(),
                                   BoxElements(boxes[b].box) * DTypeSize(node->dtype));
    if (!problem.empty()) problem = "box " + BoxString(boxes[b].box) + ": " + problem;
  }
  if (!problem.empty()) {
    return Status::InvalidArgument("the shards saved of tensor '" + node->path + "' (shape " +
                                   ShapeString(node->shape) + ") do not tile it: " + problem);
  }
  node->chunks.clear();
  node->boxes.clear();
  node->boxed = boxes.size() > 1 || (boxes.size() == 1 && boxes[0].box != WholeBox(node->shape));
  for (BoxChunks& box : boxes) {
    if (node->boxed) node->boxes.push_back({box.box, static_cast<uint32_t>(box.chunks.size())});
    node->chunks.insert(node->chunks.end(), box.chunks.begin(), box.chunks.end());
  }
  return Status::OK();
}

std::vector<ManifestBox> BoxLayout(const ManifestNode& node) {
  if (node.boxed) return node.boxes;
  return {ManifestBox{WholeBox(node.shape), static_cast<uint32_t>(node.chunks.size())}};
}

std::vector<BoxChunks> BoxesOf(const ManifestNode& node) {
  std::vector<BoxChunks> boxes;
  size_t first_chunk = 0;
  for (const ManifestBox& box : BoxLayout(node)) {
    auto begin = node.chunks.begin() + static_cast<ptrdiff_t>(first_chunk);
    boxes.push_back({box.box, std::vector<ChunkRef>(begin, begin + box.chunk_count)});
    first_chunk += box.chunk_count;
  }
  return boxes;
}

namespace {

// A manifest's metrics and user metadata, as both layouts store them.
struct HeaderVectors {
  flatbuffers::Offset<flatbuffers::Vector<flatbuffers::Offset<fb::Metric>>> metrics;
  flatbuffers::Offset<flatbuffers::Vector<flatbuffers::Offset<fb::KeyValue>>> user_metadata;
};

HeaderVectors AddHeaderVectors(const Manifest& manifest, flatbuffers::FlatBufferBuilder* builder) {
  std::vector<flatbuffers::Offset<fb::Metric>> metrics;
  for (const auto& [name, value] : manifest.metrics) {
    metrics.push_back(
        fb::CreateMetric(*builder, builder->CreateString(name), std::bit_cast<uint64_t>(value)));
  }
  std::vector<flatbuffers::Offset<fb::KeyValue>> user_metadata;
  for (const auto& [key, value] : manifest.user_metadata) {
    user_metadata.push_back(
        fb::CreateKeyValue(*builder, builder->CreateString(key), builder->CreateString(value)));
  }
  const auto stored_metrics = builder->CreateVector(metrics);
  return {stored_metrics, builder->CreateVector(user_metadata)};
}

std::string EncodeNodeTables(const Manifest& manifest) {
  flatbuffers::FlatBufferBuilder builder(1024 + manifest.nodes.size() * 96);
  std::vector<flatbuffers::Offset<fb::Node>> nodes;
  nodes.reserve(manifest.nodes.size());
  std::vector<fb::ChunkRef> chunks;
  bool any_boxed = false;
  for (const ManifestNode& node : manifest.nodes) {
    assert(!node.inlined);  // tables have no place for inline bytes
    chunks.clear();
    for (const ChunkRef& chunk : node.chunks) {
      chunks.emplace_back(chunk.digest.low, chunk.digest.high, chunk.raw_size, chunk.stored_size);
    }
    const bool is_tensor = node.kind == Tree::Kind::kTensor;
    // Strings go in with their lengths: they may hold NUL bytes.
    auto key = node.key.empty() ? 0 : builder.CreateString(node.key);
    auto shape = is_tensor ? builder.CreateVector(node.shape) : 0;
    auto chunk_refs = is_tensor ? builder.CreateVectorOfStructs(chunks) : 0;
    auto string_value =
        node.kind == Tree::Kind::kString ? builder.CreateString(node.string_value) : 0;
    flatbuffers::Offset<flatbuffers::Vector<flatbuffers::Offset<fb::Box>>> boxes = 0;
    if (is_tensor && node.boxed) {
      any_boxed = true;
      std::vector<flatbuffers::Offset<fb::Box>> stored_boxes;
      for (const ManifestBox& box : node.boxes) {
        stored_boxes.push_back(fb::CreateBox(builder, builder.CreateVector(box.box.start),
                                             builder.CreateVector(box.box.shape),
                                             box.chunk_count));
      }
      boxes = builder.CreateVector(stored_boxes);
    }
    nodes.push_back(fb::CreateNode(
        builder, static_cast<fb::NodeKind>(node.kind), key, node.child_count,
        is_tensor ? static_cast<uint8_t>(node.dtype) : 0, shape, chunk_refs,
        node.kind == Tree::Kind::kInt ? node.int_value : 0,
        node.kind == Tree::Kind::kFloat ? std::bit_cast<uint64_t>(node.float_value) : 0,
        node.kind == Tree::Kind::kBool && node.int_value != 0, string_value, boxes));
  }
  const HeaderVectors header = AddHeaderVectors(manifest, &builder);
  // Version 1 unless boxes need 2: earlier builds keep reading what they can.
  const uint32_t version = any_boxed ? kFirstBoxedManifestFormatVersion : 1;
  auto root = fb::CreateManifest(builder, version, manifest.step,
                                 manifest.commit_time_ns, header.metrics,
                                 builder.CreateVector(nodes), header.user_metadata);
  fb::FinishManifestBuffer(builder, root);
  return std::string(reinterpret_cast<const char*>(builder.GetBufferPointer()), builder.GetSize());
}

// A packed manifest (version 3) of `manifest`'s header, `keys` and its tree
// of `tree_size` bytes, which `write_tree` writes to the place it is given
// and may then release: a manifest of a million leaves is tens of MB, so its
// source goes before the copy this returns is made.
std::string EncodePacked(const Manifest& manifest, const std::vector<std::string_view>& keys,
                         size_t tree_size, const std::function<void(uint8_t*)>& write_tree) {
  flatbuffers::FlatBufferBuilder builder(1024 + tree_size + keys.size() * 16);
  // First, so that it ends the buffer (FlatBuffers builds back to front):
  // every truncation then cuts bytes the checksum covers.
  uint8_t* tree = nullptr;
  auto stored_tree = builder.CreateUninitializedVector(tree_size, &tree);
  write_tree(tree);
  // Before the next addition to the builder, which may move its buffer.
  const uint64_t checksum = XXH3_64bits(tree, tree_size);
  const HeaderVectors header = AddHeaderVectors(manifest, &builder);
  std::vector<flatbuffers::Offset<flatbuffers::String>> stored_keys;
  stored_keys.reserve(keys.size());
  // Strings go in with their lengths: they may hold NUL bytes.
  for (std::string_view key : keys) stored_keys.push_back(builder.CreateString(key.data(), key.size()));
  auto root = fb::CreateManifest(builder, kManifestFormatVersion, manifest.step,
                                 manifest.commit_time_ns, header.metrics,
                                 /*nodes=*/0, header.user_metadata,
                                 builder.CreateVector(stored_keys), stored_tree, checksum);
  fb::FinishManifestBuffer(builder, root);
  return std::string(reinterpret_cast<const char*>(builder.GetBufferPointer()), builder.GetSize());
}

}  // namespace

std::string EncodeManifest(const Manifest& manifest, ManifestLayout layout) {
  if (layout == ManifestLayout::kNodeTables) return EncodeNodeTables(manifest);
  TreePacker packer;
  std::string tree;
  for (const ManifestNode& node : manifest.nodes) packer.Append(node, &tree);
  return EncodePacked(manifest, packer.keys(), tree.size(), [&](uint8_t* out) {
    std::memcpy(out, tree.data(), tree.size());
    std::string().swap(tree);  // frees it (assigning an empty string would keep the buffer)
  });
}

std::string EncodeManifest(const Manifest& manifest, TreeDraft draft) {
  assert(manifest.nodes.size() == draft.kept_at.size());
  // The kept nodes packed one after another (kept_end[k]: where node k's
  // bytes end), then merged with the draft into the builder's buffer.
  std::string kept;
  std::vector<size_t> kept_end;
  kept_end.reserve(manifest.nodes.size());
  for (const ManifestNode& node : manifest.nodes) {
    draft.packer->Append(node, &kept);
    kept_end.push_back(kept.size());
  }
  return EncodePacked(manifest, draft.packer->keys(), draft.packed.size() + kept.size(),
                      [&](uint8_t* out) {
                        size_t from = 0;
                        size_t kept_from = 0;
                        for (size_t k = 0; k < kept_end.size(); ++k) {
                          out = std::copy(draft.packed.data() + from,
                                          draft.packed.data() + draft.kept_at[k], out);
                          out = std::copy(kept.data() + kept_from, kept.data() + kept_end[k], out);
                          from = draft.kept_at[k];
                          kept_from = kept_end[k];
                        }
                        std::copy(draft.packed.data() + from,
                                  draft.packed.data() + draft.packed.size(), out);
                        // Frees them (assigning empty strings would keep the buffers).
                        std::string().swap(draft.packed);
                        std::string().swap(kept);
                      });
}

namespace {

// A vector of int64 copied out byte-wise: the verifier checks a vector's
// length field but not its elements' alignment, so a crafted buffer can
// place 8-byte elements at 4 mod 8; they are never read in place.
std::vector<int64_t> CopyLongs(const flatbuffers::Vector<int64_t>* stored) {
  std::vector<int64_t> values;
  if (stored != nullptr && stored->size() > 0) {
    values.resize(stored->size());
    std::memcpy(values.data(), stored->Data(), values.size() * sizeof(int64_t));
  }
  return values;
}

// The nodes of a version 1 or 2 manifest: one table each.
Status ReadNodeTables(const fb::Manifest& stored, std::vector<ManifestNode>* nodes) {
  if (stored.nodes() == nullptr) return Status::OK();
  nodes->reserve(stored.nodes()->size());
  for (const fb::Node* stored_node : *stored.nodes()) {
    ManifestNode node;
    node.kind = static_cast<Tree::Kind>(stored_node->kind());
    if (stored_node->key() != nullptr) node.key = stored_node->key()->str();
    node.child_count = stored_node->child_count();
    node.dtype = static_cast<DType>(stored_node->dtype());
    node.shape = CopyLongs(stored_node->shape());
    if (stored_node->boxes() != nullptr) {
      if (stored.format_version() < kFirstBoxedManifestFormatVersion) {
        return Status::Corruption("manifest format version " +
                                  std::to_string(stored.format_version()) + " with boxes");
      }
      node.boxed = true;
      for (const fb::Box* box : *stored_node->boxes()) {
        node.boxes.push_back(
            {Box{CopyLongs(box->start()), CopyLongs(box->shape())}, box->chunk_count()});
      }
    }
    if (stored_node->chunks() != nullptr) {
      const size_t count = stored_node->chunks()->size();
      const auto* bytes = reinterpret_cast<const uint8_t*>(stored_node->chunks()->Data());
      node.chunks.reserve(count);
      for (size_t k = 0; k < count; ++k) {
        fb::ChunkRef chunk;
        std::memcpy(&chunk, bytes + k * sizeof(fb::ChunkRef), sizeof(fb::ChunkRef));
        node.chunks.push_back({ChunkDigest{chunk.digest_low(), chunk.digest_high()},
                               chunk.raw_size(), chunk.stored_size()});
      }
    }
    node.int_value = node.kind == Tree::Kind::kBool ? (stored_node->bool_value() ? 1 : 0)
                                                    : stored_node->int_value();
    node.float_value = std::bit_cast<double>(stored_node->float_bits());
    if (stored_node->string_value() != nullptr) {
      node.string_value = stored_node->string_value()->str();
    }
    nodes->push_back(std::move(node));
  }
  return Status::OK();
}

}  // namespace

Result<Manifest> DecodeManifest(std::string_view bytes, ManifestScope scope, ManifestParts parts) {
  // FlatBuffers reads its offsets in place: the buffer must be aligned
  // (a manifest inside a message, or a value in a storage block, need not
  // be), or the reads are undefined behaviour; a copy is (8 bytes: its
  // widest scalars).
  std::string aligned;
  if (reinterpret_cast<uintptr_t>(bytes.data()) % alignof(uint64_t) != 0) {
    aligned.assign(bytes);
    bytes = aligned;
  }
  const auto* data = reinterpret_cast<const uint8_t*>(bytes.data());
  if (bytes.size() < 8 || !fb::ManifestBufferHasIdentifier(data)) {
    return Status::Corruption("not a manifest (identifier 'CKPT' missing)");
  }
  flatbuffers::Verifier verifier(data, bytes.size(), /*max_depth=*/64, kMaxManifestTables);
  if (!fb::VerifyManifestBuffer(verifier)) {
    return Status::Corruption("manifest fails FlatBuffers verification");
  }
  const fb::Manifest* stored = fb::GetManifest(data);
  if (stored->format_version() > kManifestFormatVersion) {
    return Status::NotSupported(
        "manifest format version " + std::to_string(stored->format_version()) +
        " is newer than this build reads (" + std::to_string(kManifestFormatVersion) + ")");
  }
  if (stored->format_version() == 0) return Status::Corruption("manifest format version 0");
  Manifest manifest;
  manifest.step = stored->step();
  manifest.commit_time_ns = stored->commit_time_ns();
  if (stored->metrics() != nullptr) {
    for (const fb::Metric* metric : *stored->metrics()) {
      const double value = std::bit_cast<double>(metric->value_bits());
      if (std::isnan(value)) {
        return Status::Corruption("manifest metric '" + metric->name()->str() + "' is NaN");
      }
      manifest.metrics[metric->name()->str()] = value;
    }
  }
  if (stored->user_metadata() != nullptr) {
    for (const fb::KeyValue* entry : *stored->user_metadata()) {
      manifest.user_metadata[entry->key()->str()] = entry->value()->str();
    }
  }
  const bool packed = stored->format_version() >= kFirstPackedManifestFormatVersion;
  if (packed != (stored->tree() != nullptr) || (packed && stored->nodes() != nullptr)) {
    return Status::Corruption("manifest format version " +
                              std::to_string(stored->format_version()) + " with " +
                              (packed ? "per-node tables or no packed tree" : "a packed tree"));
  }
  std::string_view tree_bytes;
  if (packed) {
    tree_bytes = std::string_view(reinterpret_cast<const char*>(stored->tree()->data()),
                                  stored->tree()->size());
    if (XXH3_64bits(tree_bytes.data(), tree_bytes.size()) != stored->tree_checksum()) {
      return Status::Corruption("manifest's packed tree fails its checksum");
    }
  }
  if (parts == ManifestParts::kWithoutNodes) return manifest;
  if (packed) {
    std::vector<std::string_view> keys;
    if (stored->keys() != nullptr) {
      keys.reserve(stored->keys()->size());
      for (const flatbuffers::String* key : *stored->keys()) keys.push_back(key->string_view());
    }
    Result<std::vector<ManifestNode>> nodes = UnpackTree(keys, tree_bytes);
    if (!nodes.ok()) return nodes.status();
    manifest.nodes = std::move(*nodes);
  } else {
    Status status = ReadNodeTables(*stored, &manifest.nodes);
    if (!status.ok()) return status;
  }
  Status status = CheckTree(&manifest.nodes, scope);
  if (!status.ok()) return status;
  return manifest;
}

}  // namespace ckptdb
