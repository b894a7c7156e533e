#include "manifest_packed.h"

#include <bit>
#include <cstring>

#include "coding.h"
#include "huge_pages.h"

namespace ckptdb {
namespace {

// The first byte of a node: its kind in the low three bits, then flags.
constexpr uint8_t kKindMask = 0x07;
constexpr uint8_t kHasChunks = 0x08;
constexpr uint8_t kHasKey = 0x10;
constexpr uint8_t kHasChildren = 0x20;
constexpr uint8_t kBoxed = 0x40;
constexpr uint8_t kInlined = 0x80;

void AppendSigned(std::string* out, int64_t value) { AppendVarint64(out, ZigZag(value)); }

void AppendLongs(std::string* out, const std::vector<int64_t>& values) {
  AppendVarint64(out, values.size());
  for (int64_t value : values) AppendSigned(out, value);
}

void AppendBytes(std::string* out, std::string_view bytes) {
  AppendVarint64(out, bytes.size());
  out->append(bytes);
}

// Reads the packed tree front to back; every read checks what is left.
class TreeReader {
 public:
  explicit TreeReader(std::string_view tree) : p_(tree.data()), end_(tree.data() + tree.size()) {}

  bool done() const { return p_ == end_; }
  size_t left() const { return static_cast<size_t>(end_ - p_); }

  bool Byte(uint8_t* value) {
    if (p_ == end_) return false;
    *value = static_cast<uint8_t>(*p_++);
    return true;
  }
  bool Unsigned(uint64_t* value) { return GetVarint64(&p_, end_, value); }
  bool Unsigned32(uint32_t* value) { return GetVarint32(&p_, end_, value); }
  bool Signed(int64_t* value) {
    uint64_t code = 0;
    if (!Unsigned(&code)) return false;
    *value = UnZigZag(code);
    return true;
  }
  bool Fixed64(uint64_t* value) {
    if (left() < 8) return false;
    *value = ReadLittleEndian(p_, 8);
    p_ += 8;
    return true;
  }
  // A count of items of at least `item_bytes` bytes each: never more than
  // the bytes left could hold, so a hostile count allocates nothing.
  bool Count(uint64_t* count, size_t item_bytes) {
    return Unsigned(count) && *count <= left() / item_bytes;
  }
  bool Longs(std::vector<int64_t>* values) {
    uint64_t count = 0;
    if (!Count(&count, 1)) return false;
    values->resize(count);
    for (int64_t& value : *values) {
      if (!Signed(&value)) return false;
    }
    return true;
  }
  bool Bytes(std::string* bytes) {
    uint64_t size = 0;
    if (!Count(&size, 1)) return false;
    bytes->assign(p_, size);
    p_ += size;
    return true;
  }

 private:
  const char* p_;
  const char* end_;
};

}  // namespace

uint64_t TreePacker::KeyIndex(const std::string& key) {
  auto [at, added] = index_.try_emplace(key, keys_.size());
  if (added) keys_.push_back(at->first);
  return at->second;
}

void TreePacker::Append(const ManifestNode& node, std::string* tree) {
  const bool is_tensor = node.kind == Tree::Kind::kTensor;
  uint8_t header = static_cast<uint8_t>(node.kind) & kKindMask;
  if (!node.key.empty()) header |= kHasKey;
  if (node.child_count != 0) header |= kHasChildren;
  if (is_tensor && node.boxed) header |= kBoxed;
  if (is_tensor && node.inlined) header |= kInlined;
  if (is_tensor && !node.chunks.empty()) header |= kHasChunks;
  tree->push_back(static_cast<char>(header));
  if (!node.key.empty()) AppendVarint64(tree, KeyIndex(node.key));
  if (node.child_count != 0) AppendVarint64(tree, node.child_count);
  switch (node.kind) {
    case Tree::Kind::kTensor:
      tree->push_back(static_cast<char>(node.dtype));
      AppendLongs(tree, node.shape);
      if (node.inlined) AppendBytes(tree, node.inline_bytes);
      if (node.boxed) {
        AppendVarint64(tree, node.boxes.size());
        for (const ManifestBox& box : node.boxes) {
          AppendLongs(tree, box.box.start);
          AppendLongs(tree, box.box.shape);
          AppendVarint64(tree, box.chunk_count);
        }
      }
      if (node.chunks.empty()) break;
      AppendVarint64(tree, node.chunks.size());
      for (const ChunkRef& chunk : node.chunks) {
        AppendLittleEndian(tree, chunk.digest.low, 8);
        AppendLittleEndian(tree, chunk.digest.high, 8);
        AppendVarint64(tree, chunk.raw_size);
        AppendVarint64(tree, chunk.stored_size);
      }
      break;
    case Tree::Kind::kInt:
    case Tree::Kind::kBool: AppendSigned(tree, node.int_value); break;
    case Tree::Kind::kFloat:
      AppendLittleEndian(tree, std::bit_cast<uint64_t>(node.float_value), 8);
      break;
    case Tree::Kind::kString: AppendBytes(tree, node.string_value); break;
    default: break;  // containers: their children follow
  }
}

namespace {

// Reads the packed nodes front to back into `node`, one at a time, and calls
// `visit(node)` after each (which may move from it): `node`'s earlier
// contents are overwritten, its buffers reused. Corruption naming the node
// for bytes that do not make one tree of one root.
template <typename Visit>
Status ReadNodes(const std::vector<std::string_view>& keys, std::string_view tree,
                 ManifestNode* node, const Visit& visit) {
  TreeReader in(tree);
  size_t index = 0;
  auto cut = [&index](const char* what) {
    return Status::Corruption("packed tree: node " + std::to_string(index) + ": " + what);
  };
  // The nodes still to read: one tree of one root; each container adds its
  // children (CheckPreOrderTree checks the counts again, with messages).
  uint64_t expected = 1;
  for (; expected > 0; ++index) {
    --expected;
    uint8_t header = 0;
    if (!in.Byte(&header)) return cut("the bytes end before it");
    node->kind = static_cast<Tree::Kind>(header & kKindMask);
    node->key = {};
    if ((header & kHasKey) != 0) {
      uint64_t key = 0;
      if (!in.Unsigned(&key) || key >= keys.size()) return cut("no such key");
      node->key = keys[key];
      if (node->key.empty()) return cut("an empty key");
    }
    node->child_count = 0;
    if ((header & kHasChildren) != 0) {
      if (!in.Unsigned32(&node->child_count) || node->child_count == 0) return cut("child count");
      // Each child takes at least a byte.
      if (node->child_count > in.left()) return cut("more children than bytes left");
      expected += node->child_count;
    }
    const bool is_tensor = node->kind == Tree::Kind::kTensor;
    if (!is_tensor && (header & (kBoxed | kInlined | kHasChunks)) != 0) {
      return cut("tensor flags on a node that is not a tensor");
    }
    node->shape.clear();
    node->inlined = (header & kInlined) != 0;
    node->inline_bytes.clear();
    node->boxed = (header & kBoxed) != 0;
    node->boxes.clear();
    node->chunks.clear();
    node->int_value = 0;
    node->float_value = 0;
    node->string_value.clear();
    switch (node->kind) {
      case Tree::Kind::kTensor: {
        uint8_t dtype = 0;
        if (!in.Byte(&dtype) || !in.Longs(&node->shape)) return cut("tensor header");
        node->dtype = static_cast<DType>(dtype);
        if (node->inlined && !in.Bytes(&node->inline_bytes)) return cut("inline bytes");
        if (node->boxed) {
          uint64_t count = 0;
          if (!in.Count(&count, 3)) return cut("box count");
          node->boxes.resize(count);
          for (ManifestBox& box : node->boxes) {
            if (!in.Longs(&box.box.start) || !in.Longs(&box.box.shape) ||
                !in.Unsigned32(&box.chunk_count)) {
              return cut("box");
            }
          }
        }
        uint64_t count = 0;
        if ((header & kHasChunks) == 0) break;
        if (!in.Count(&count, 18) || count == 0) return cut("chunk count");
        node->chunks.resize(count);
        for (ChunkRef& chunk : node->chunks) {
          if (!in.Fixed64(&chunk.digest.low) || !in.Fixed64(&chunk.digest.high) ||
              !in.Unsigned32(&chunk.raw_size) || !in.Unsigned32(&chunk.stored_size)) {
            return cut("chunk");
          }
        }
        break;
      }
      case Tree::Kind::kInt:
      case Tree::Kind::kBool:
        if (!in.Signed(&node->int_value)) return cut("value");
        break;
      case Tree::Kind::kFloat: {
        uint64_t bits = 0;
        if (!in.Fixed64(&bits)) return cut("value");
        node->float_value = std::bit_cast<double>(bits);
        break;
      }
      case Tree::Kind::kString:
        if (!in.Bytes(&node->string_value)) return cut("value");
        break;
      default: break;  // containers, and unknown kinds CheckPreOrderTree refuses
    }
    visit(*node);
  }
  if (!in.done()) return cut("bytes after the last node");
  return Status::OK();
}

}  // namespace

Result<std::vector<ManifestNode>> UnpackTree(const std::vector<std::string_view>& keys,
                                             std::string_view tree) {
  // Counted first, into one reused node, so that the nodes are allocated
  // once: a million-leaf step's are half a gigabyte, and a growing vector
  // would touch twice that and copy it. Huge pages: that half gigabyte is
  // often memory the process never touched before.
  ManifestNode node;
  size_t count = 0;
  Status read = ReadNodes(keys, tree, &node, [&count](ManifestNode&) { ++count; });
  if (!read.ok()) return read;
  std::vector<ManifestNode> nodes;
  nodes.reserve(count);
  AdviseHugePages(nodes.data(), count * sizeof(ManifestNode));
  read = ReadNodes(keys, tree, &node,
                   [&nodes](ManifestNode& read_node) { nodes.push_back(std::move(read_node)); });
  if (!read.ok()) return read;
  return nodes;
}

}  // namespace ckptdb
