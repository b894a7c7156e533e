// Tree: the training state, a nested structure of string-keyed maps and lists
// whose leaves are tensors or scalars (int, float, bool, string).
//
// Paths name nodes: map keys and list indices joined by '/', for example
// "params/encoder/layers/0/kernel". The root's path is "". Map keys are
// non-empty and contain no '/'; a map's children are visited in key order,
// so a tree's order does not depend on the order its keys were set.
//
// Thread safety: a const Tree may be read from many threads.

#ifndef CKPTDB_TREE_H_
#define CKPTDB_TREE_H_

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ckptdb/status.h"
#include "ckptdb/tensor.h"

namespace ckptdb {

// One shard of a global tensor that this process holds: where its box
// starts in the global tensor, and its elements (the box's shape is
// data.shape()). Multi-process training holds each global array as shards
// spread over the processes.
struct Shard {
  std::vector<int64_t> start = {};
  Tensor data = {};
  // Shards holding the same box on several processes (replicas) differ in
  // replica_id; only replica 0 is written (as JAX writes replica 0), so a
  // replicated shard is stored once. Restore fills every replica. Default: 0.
  int replica_id = 0;
};

// A global tensor of which this process holds `shards` (Tree::Sharded).
// Saved, the shards of replica 0 of all processes must together cover every
// element exactly once (otherwise the save fails on every process,
// InvalidArgument naming the tensor and the first element no replica 0
// covers). A process may hold no part of a tensor: an empty `shards` (every
// process must still have the leaf, with the same dtype and global shape).
// Restored into, each shard receives its box of the stored tensor, whatever
// sharding saved it; an empty `shards` receives nothing.
struct ShardedTensor {
  DType dtype = DType::kFloat32;
  std::vector<int64_t> global_shape = {};
  std::vector<Shard> shards = {};
};

class CKPTDB_EXPORT Tree {
 public:
  // Node kinds. The numeric values are persisted: never change them.
  enum class Kind : uint8_t {
    kMap = 0,
    kList = 1,
    kTensor = 2,
    kInt = 3,
    kFloat = 4,
    kBool = 5,
    kString = 6,
    // This process's shards of a global tensor. Never stored as such: a
    // step stores the global tensor (kTensor, with the boxes that saved it).
    kShardedTensor = 7,
  };

  // An empty map.
  Tree();
  // Deep copies: children, keys and sharded tensors' shard lists; tensors
  // copy as Tensor does (sharing their bytes). A tree moved from is an
  // empty map.
  Tree(const Tree& other);
  Tree& operator=(const Tree& other);
  Tree(Tree&& other) noexcept;
  Tree& operator=(Tree&& other) noexcept;
  ~Tree();

  static Tree Map() { return Tree(); }
  static Tree List();
  static Tree Leaf(Tensor tensor);
  static Tree Int(int64_t value);
  static Tree Float(double value);
  static Tree Bool(bool value);
  static Tree String(std::string value);
  // InvalidArgument, naming the shard, unless every shard has `dtype` and a
  // box (start, data.shape()) of the global shape's rank inside it, and no
  // two shards of one replica_id overlap.
  static Result<Tree> Sharded(ShardedTensor sharded);

  Kind kind() const { return kind_; }
  bool is_container() const { return kind_ == Kind::kMap || kind_ == Kind::kList; }

  // Map: inserts or replaces the child under `key` and returns it.
  // InvalidArgument if this is not a map or the key is empty or holds '/'.
  Result<Tree*> Set(std::string_view key, Tree child);
  // List: appends a child and returns it. InvalidArgument if this is not a list.
  Result<Tree*> Append(Tree child);
  // The pointers Set and Append return are invalidated by the next insertion
  // into the same container; SetPath and FromPaths hand out none.

  // Sets the node at `path` ("params/encoder/kernel"), creating the maps on
  // the way; an existing list on the way is entered by index. InvalidArgument,
  // the tree unchanged, for an empty path or component, or when the way
  // passes through a leaf or a list index that does not exist.
  Status SetPath(std::string_view path, Tree node);
  // A tree of maps holding each (path, node), as SetPath would make it.
  // InvalidArgument when two paths collide (the same path twice, or a node
  // where another path needs a map).
  static Result<Tree> FromPaths(std::vector<std::pair<std::string, Tree>> nodes);

  // Children of a map or a list; 0 for leaves.
  size_t child_count() const { return child_count_; }
  // Calls `visit(key, child)` for each child: a map's in key order, a list's
  // in index order (with an empty key). The visitor must not add children to
  // this node.
  void ForEachChild(const std::function<void(std::string_view key, const Tree& child)>& visit) const;
  void ForEachMutableChild(const std::function<void(std::string_view key, Tree& child)>& visit);
  // A list's element at `index` (< child_count()); calling it on another
  // kind is a bug (asserted).
  const Tree& element(size_t index) const;
  Tree& element(size_t index);

  // The node at `path` ("" is this node), or nullptr.
  const Tree* Find(std::string_view path) const;
  Tree* Find(std::string_view path);

  // Leaf values; calling the accessor of another kind is a bug (asserted).
  const Tensor& tensor() const;
  Tensor& tensor();
  int64_t int_value() const;
  double float_value() const;
  bool bool_value() const;
  const std::string& string_value() const;
  const ShardedTensor& sharded() const;
  ShardedTensor& sharded();

  // Calls `visit(path, leaf)` for every leaf in pre-order (maps by key, lists
  // by index).
  void ForEachLeaf(
      const std::function<void(const std::string& path, const Tree& leaf)>& visit) const;
  void ForEachMutableLeaf(const std::function<void(const std::string& path, Tree& leaf)>& visit);

  // Same structure, kinds, scalar values, dtypes, shapes and tensor bytes.
  bool ContentEquals(const Tree& other) const;

 private:
  struct MapKeys;

  // Maps: the index of `key` among the children, or kNoChild.
  size_t ChildIndex(std::string_view key) const;
  // Containers: grows the children array if it is full; then, with room
  // made, adds `child` after the others and returns it.
  void MakeRoomForChild();
  Tree* EmplaceChild(Tree child) noexcept;
  void FreeChildren() noexcept;

  // A million-leaf state is a million of these, so a node is kept at 24
  // bytes: what only some kinds hold sits behind one pointer, and a
  // container's children array has no capacity field (it holds
  // std::bit_ceil(child_count_) places).
  union Payload {
    // kInt, and kBool as 0/1; kFloat holds its value's bits.
    int64_t scalar;
    // Containers: lists, the elements in order; maps, the children in the
    // order they were first set (visited in key order). Null when empty.
    Tree* children;
  };

  Kind kind_ = Kind::kMap;
  uint32_t child_count_ = 0;  // containers only
  Payload payload_ = {.children = nullptr};
  // Owned, of the type kind_ names: a map with children, MapKeys (its keys
  // and the index that finds them); kTensor, Tensor; kString, std::string;
  // kShardedTensor, ShardedTensor. Null for the other kinds and empty maps.
  void* extra_ = nullptr;

  MapKeys* map_keys() const;
  void FreeExtra() noexcept;
};

CKPTDB_EXPORT std::string_view KindName(Tree::Kind kind);

}  // namespace ckptdb

#endif  // CKPTDB_TREE_H_
