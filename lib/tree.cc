#include "ckptdb/tree.h"

#include <algorithm>
#include <bit>
#include <cassert>
#include <functional>
#include <limits>
#include <memory>
#include <new>
#include <string>
#include <vector>
#include <type_traits>
#include <utility>

#include "box.h"

namespace ckptdb {
namespace {

// ChildIndex's answer for a key the map does not have.
constexpr size_t kNoChild = std::numeric_limits<size_t>::max();
// Maps of at most this many keys have no hash table: comparing a few short
// keys in turn is as fast and saves the table's memory (most maps of a
// model's state are small).
constexpr size_t kMaxUnindexedKeys = 8;

size_t KeyHash(std::string_view key) { return std::hash<std::string_view>{}(key); }

}  // namespace

// A map's keys in one allocation: this header, then `capacity` key ends
// (ends()[i]: where key i's characters end), then the keys' characters back
// to back. A model's maps are mostly small (one to four short keys), where
// one block for all of a map's keys takes a quarter of the memory of a
// vector of strings; a million-leaf state holds about a million maps.
struct Tree::MapKeys {
  uint32_t count = 0;          // key(i) is the key of child i
  uint32_t capacity = 0;       // the keys ends() has room for
  uint32_t char_capacity = 0;  // the characters chars() has room for
  // Above kMaxUnindexedKeys keys: an open-addressing hash table (linear
  // probing, a power of two at least twice count) of 1 + an index into the
  // keys, 0 for a free slot, so that setting or finding a key is O(1) and n
  // keys in any order cost O(n). Null for small maps, searched in turn.
  uint32_t slot_count = 0;
  uint32_t* slots = nullptr;

  const uint32_t* ends() const { return reinterpret_cast<const uint32_t*>(this + 1); }
  uint32_t* ends() { return reinterpret_cast<uint32_t*>(this + 1); }
  const char* chars() const { return reinterpret_cast<const char*>(ends() + capacity); }
  char* chars() { return reinterpret_cast<char*>(ends() + capacity); }
  uint32_t chars_used() const { return count == 0 ? 0 : ends()[count - 1]; }
  std::string_view key(size_t i) const {
    const uint32_t begin = i == 0 ? 0 : ends()[i - 1];
    return {chars() + begin, ends()[i] - begin};
  }
  // The indices of the keys in the keys' order.
  std::vector<uint32_t> Order() const;

  // A block with room for `capacity` keys of `char_capacity` characters in
  // all, holding `from`'s keys when given (no more than that room).
  static MapKeys* Make(uint32_t capacity, uint32_t char_capacity, const MapKeys* from);
  static MapKeys* Copy(const MapKeys& other);
  static void Free(MapKeys* keys) noexcept;
  // `keys` (null: none yet) with `key` appended: the same block, or a
  // larger one that takes over its table (`keys` is then freed). The caller
  // keeps the count and the characters within uint32_t.
  static MapKeys* Append(MapKeys* keys, std::string_view key);
  void IndexLastKey();
};

std::vector<uint32_t> Tree::MapKeys::Order() const {
  std::vector<uint32_t> order(count);
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<uint32_t>(i);
  std::sort(order.begin(), order.end(), [this](uint32_t a, uint32_t b) { return key(a) < key(b); });
  return order;
}

Tree::MapKeys* Tree::MapKeys::Make(uint32_t capacity, uint32_t char_capacity,
                                   const MapKeys* from) {
  void* block = ::operator new(sizeof(MapKeys) + sizeof(uint32_t) * size_t{capacity} +
                               size_t{char_capacity});
  auto* keys = new (block) MapKeys();
  keys->capacity = capacity;
  keys->char_capacity = char_capacity;
  if (from != nullptr) {
    keys->count = from->count;
    std::copy(from->ends(), from->ends() + from->count, keys->ends());
    std::copy(from->chars(), from->chars() + from->chars_used(), keys->chars());
  }
  return keys;
}

Tree::MapKeys* Tree::MapKeys::Copy(const MapKeys& other) {
  MapKeys* keys = Make(other.count, other.chars_used(), &other);
  if (other.slots != nullptr) {
    try {
      keys->slots = new uint32_t[other.slot_count];
    } catch (...) {
      Free(keys);
      throw;
    }
    keys->slot_count = other.slot_count;
    std::copy(other.slots, other.slots + other.slot_count, keys->slots);
  }
  return keys;
}

void Tree::MapKeys::Free(MapKeys* keys) noexcept {
  if (keys == nullptr) return;
  delete[] keys->slots;
  keys->~MapKeys();
  ::operator delete(keys);
}

Tree::MapKeys* Tree::MapKeys::Append(MapKeys* keys, std::string_view key) {
  const uint32_t count = keys == nullptr ? 0 : keys->count;
  const uint32_t used = keys == nullptr ? 0 : keys->chars_used();
  const auto needed = static_cast<uint32_t>(used + key.size());
  if (keys == nullptr) {
    keys = Make(1, needed, nullptr);  // most maps keep one to four keys
  } else if (count == keys->capacity || needed > keys->char_capacity) {
    // Room doubles, so that n keys cost O(n) copying.
    auto doubled = [](uint32_t n) {
      return static_cast<uint32_t>(
          std::min<uint64_t>(2 * uint64_t{n}, std::numeric_limits<uint32_t>::max()));
    };
    MapKeys* grown =
        Make(count == keys->capacity ? doubled(count) : keys->capacity,
             needed > keys->char_capacity ? std::max(needed, doubled(keys->char_capacity))
                                          : keys->char_capacity,
             keys);
    grown->slot_count = std::exchange(keys->slot_count, 0);
    grown->slots = std::exchange(keys->slots, nullptr);
    Free(keys);
    keys = grown;
  }
  std::copy(key.begin(), key.end(), keys->chars() + used);
  keys->ends()[count] = needed;
  keys->count = count + 1;
  return keys;
}

Tree::MapKeys* Tree::map_keys() const {
  return kind_ == Kind::kMap ? static_cast<MapKeys*>(extra_) : nullptr;
}

void Tree::FreeExtra() noexcept {
  switch (kind_) {
    case Kind::kMap: MapKeys::Free(static_cast<MapKeys*>(extra_)); break;
    case Kind::kTensor: delete static_cast<Tensor*>(extra_); break;
    case Kind::kString: delete static_cast<std::string*>(extra_); break;
    case Kind::kShardedTensor: delete static_cast<ShardedTensor*>(extra_); break;
    case Kind::kList:
    case Kind::kInt:
    case Kind::kFloat:
    case Kind::kBool: break;
  }
  extra_ = nullptr;
}

namespace {

// A container's children array, once allocated, holds at least
// bit_ceil(count) places (one while it is still empty): grown by doubling
// when count reaches that, without a capacity field in the node. (A Set
// that failed after growing the array leaves it larger than that: the next
// growth then only moves it.)
size_t ChildPlaces(size_t count) { return std::bit_ceil(count); }

Tree* AllocateChildren(size_t places) {
  return static_cast<Tree*>(::operator new(places * sizeof(Tree)));
}

}  // namespace

Tree::Tree() = default;

Tree::~Tree() {
  FreeChildren();
  FreeExtra();
}

void Tree::FreeChildren() noexcept {
  if (!is_container() || payload_.children == nullptr) return;
  std::destroy_n(payload_.children, child_count_);
  ::operator delete(payload_.children);
  payload_.children = nullptr;
  child_count_ = 0;
}

void Tree::MakeRoomForChild() {
  if (payload_.children != nullptr && child_count_ < ChildPlaces(child_count_)) return;
  Tree* grown = AllocateChildren(ChildPlaces(child_count_ + 1));
  std::uninitialized_move_n(payload_.children, child_count_, grown);
  std::destroy_n(payload_.children, child_count_);
  ::operator delete(payload_.children);
  payload_.children = grown;
}

Tree* Tree::EmplaceChild(Tree child) noexcept {
  Tree* added = new (payload_.children + child_count_) Tree(std::move(child));
  ++child_count_;
  return added;
}

Tree::Tree(Tree&& other) noexcept
    : kind_(std::exchange(other.kind_, Kind::kMap)),
      child_count_(std::exchange(other.child_count_, 0)),
      payload_(std::exchange(other.payload_, {.children = nullptr})),
      extra_(std::exchange(other.extra_, nullptr)) {}

Tree& Tree::operator=(Tree&& other) noexcept {
  // `other` may lie inside this tree (a subtree replacing its ancestor): it
  // is emptied before anything of this tree is freed.
  Tree taken(std::move(other));
  std::swap(kind_, taken.kind_);
  std::swap(child_count_, taken.child_count_);
  std::swap(payload_, taken.payload_);
  std::swap(extra_, taken.extra_);
  return *this;
}

Tree::Tree(const Tree& other)
    : kind_(other.kind_),
      payload_(other.is_container() ? Payload{.children = nullptr} : other.payload_) {
  if (other.extra_ != nullptr) {
    switch (kind_) {
      case Kind::kMap: extra_ = MapKeys::Copy(*static_cast<const MapKeys*>(other.extra_)); break;
      case Kind::kTensor: extra_ = new Tensor(*static_cast<const Tensor*>(other.extra_)); break;
      case Kind::kString:
        extra_ = new std::string(*static_cast<const std::string*>(other.extra_));
        break;
      case Kind::kShardedTensor:
        extra_ = new ShardedTensor(*static_cast<const ShardedTensor*>(other.extra_));
        break;
      case Kind::kList:
      case Kind::kInt:
      case Kind::kFloat:
      case Kind::kBool: break;
    }
  }
  if (!is_container() || other.child_count_ == 0) return;
  // Last: a constructor that throws runs no destructor, so what it made
  // before is freed here.
  Tree* children = nullptr;
  try {
    children = AllocateChildren(ChildPlaces(other.child_count_));
    std::uninitialized_copy_n(other.payload_.children, other.child_count_, children);
  } catch (...) {
    ::operator delete(children);
    FreeExtra();
    throw;
  }
  payload_.children = children;
  child_count_ = other.child_count_;
}

Tree& Tree::operator=(const Tree& other) {
  if (this != &other) *this = Tree(other);
  return *this;
}

std::string_view KindName(Tree::Kind kind) {
  switch (kind) {
    case Tree::Kind::kMap: return "map";
    case Tree::Kind::kList: return "list";
    case Tree::Kind::kTensor: return "tensor";
    case Tree::Kind::kInt: return "int";
    case Tree::Kind::kFloat: return "float";
    case Tree::Kind::kBool: return "bool";
    case Tree::Kind::kString: return "string";
    case Tree::Kind::kShardedTensor: return "sharded tensor";
  }
  return "unknown";
}

Tree Tree::List() {
  Tree tree;
  tree.kind_ = Kind::kList;
  return tree;
}

Tree Tree::Leaf(Tensor tensor) {
  Tree tree;
  tree.kind_ = Kind::kTensor;
  tree.extra_ = new Tensor(std::move(tensor));
  return tree;
}

Tree Tree::Int(int64_t value) {
  Tree tree;
  tree.kind_ = Kind::kInt;
  tree.payload_.scalar = value;
  return tree;
}

Tree Tree::Float(double value) {
  Tree tree;
  tree.kind_ = Kind::kFloat;
  tree.payload_.scalar = std::bit_cast<int64_t>(value);
  return tree;
}

Tree Tree::Bool(bool value) {
  Tree tree;
  tree.kind_ = Kind::kBool;
  tree.payload_.scalar = value ? 1 : 0;
  return tree;
}

Tree Tree::String(std::string value) {
  Tree tree;
  tree.kind_ = Kind::kString;
  tree.extra_ = new std::string(std::move(value));
  return tree;
}

Status CheckShardedTensor(const ShardedTensor& sharded) {
  Result<uint64_t> global_bytes = TensorByteSize(sharded.dtype, sharded.global_shape);
  if (!global_bytes.ok()) return global_bytes.status().WithContext("sharded tensor");
  if (DTypeSize(sharded.dtype) == 0) return Status::InvalidArgument("sharded tensor of an unknown dtype");
  const std::string tensor = "a sharded " + std::string(DTypeName(sharded.dtype)) +
                             " tensor of shape " + ShapeString(sharded.global_shape);
  auto which = [&](size_t i) { return "shard " + std::to_string(i) + " of " + tensor; };
  // Per replica id, its boxes and the shards they belong to.
  std::vector<std::vector<Box>> boxes_by_replica;
  std::vector<std::vector<size_t>> shards_by_replica;
  for (size_t i = 0; i < sharded.shards.size(); ++i) {
    const Shard& shard = sharded.shards[i];
    if (shard.data.dtype() != sharded.dtype) {
      return Status::InvalidArgument(which(i) + " is " + std::string(DTypeName(shard.data.dtype())));
    }
    if (shard.replica_id < 0) return Status::InvalidArgument(which(i) + " has a negative replica_id");
    Box box{shard.start, shard.data.shape()};
    std::string problem = BoxProblem(box, sharded.global_shape);
    if (!problem.empty()) return Status::InvalidArgument(which(i) + ": " + problem);
    const auto replica = static_cast<size_t>(shard.replica_id);
    if (replica >= boxes_by_replica.size()) {
      boxes_by_replica.resize(replica + 1);
      shards_by_replica.resize(replica + 1);
    }
    boxes_by_replica[replica].push_back(std::move(box));
    shards_by_replica[replica].push_back(i);
  }
  for (size_t replica = 0; replica < boxes_by_replica.size(); ++replica) {
    const BoxIndex index(std::move(boxes_by_replica[replica]));
    bool gave_up = false;
    std::optional<std::pair<size_t, size_t>> overlap =
        index.FirstOverlap(kMaxTilingComparisons, &gave_up);
    if (gave_up) {
      return Status::InvalidArgument("the " + std::to_string(index.boxes().size()) +
                                     " shards of replica_id " + std::to_string(replica) + " of " +
                                     tensor + " are too entangled to check for overlaps");
    }
    if (overlap.has_value()) {
      auto [first, second] = std::minmax(overlap->first, overlap->second);
      return Status::InvalidArgument(
          which(shards_by_replica[replica][second]) + ": its box " +
          BoxString(index.boxes()[second]) + " overlaps " + BoxString(index.boxes()[first]) +
          " of the same replica_id");
    }
  }
  return Status::OK();
}

Result<Tree> Tree::Sharded(ShardedTensor sharded) {
  Status status = CheckShardedTensor(sharded);
  if (!status.ok()) return status;
  Tree tree;
  tree.kind_ = Kind::kShardedTensor;
  tree.extra_ = new ShardedTensor(std::move(sharded));
  return tree;
}

Result<Tree*> Tree::Set(std::string_view key, Tree child) {
  if (kind_ != Kind::kMap) {
    return Status::InvalidArgument("Set('" + std::string(key) + "') on a " +
                                   std::string(KindName(kind_)) + " node");
  }
  if (key.empty() || key.find('/') != std::string_view::npos) {
    return Status::InvalidArgument("map key '" + std::string(key) +
                                   "' must be non-empty and contain no '/'");
  }
  const size_t existing = ChildIndex(key);
  if (existing != kNoChild) {
    payload_.children[existing] = std::move(child);
    return &payload_.children[existing];
  }
  if (child_count_ == std::numeric_limits<uint32_t>::max()) {
    return Status::InvalidArgument("map of " + std::to_string(child_count_) +
                                   " keys: no more fit");
  }
  const MapKeys* keys = map_keys();
  const uint32_t key_bytes = keys == nullptr ? 0 : keys->chars_used();
  if (uint64_t{key_bytes} + key.size() > std::numeric_limits<uint32_t>::max()) {
    return Status::InvalidArgument("map whose keys hold " + std::to_string(key_bytes) +
                                   " bytes: key '" + std::string(key.substr(0, 64)) +
                                   "' does not fit");
  }
  // What can fail (allocating) goes first, and leaves the map as it was:
  // room for the child, the key, its place in the index; the child's move
  // cannot fail.
  MakeRoomForChild();
  MapKeys* appended = MapKeys::Append(static_cast<MapKeys*>(extra_), key);
  extra_ = appended;
  try {
    appended->IndexLastKey();
  } catch (...) {
    --appended->count;  // the key's characters stay, unused
    throw;
  }
  return EmplaceChild(std::move(child));
}

size_t Tree::ChildIndex(std::string_view key) const {
  const MapKeys* map = map_keys();
  if (map == nullptr) return kNoChild;
  if (map->slots == nullptr) {
    for (size_t i = 0; i < map->count; ++i) {
      if (map->key(i) == key) return i;
    }
    return kNoChild;
  }
  const size_t mask = map->slot_count - 1;
  for (size_t slot = KeyHash(key) & mask;; slot = (slot + 1) & mask) {
    const uint32_t entry = map->slots[slot];
    if (entry == 0) return kNoChild;
    if (map->key(entry - 1) == key) return entry - 1;
  }
}

void Tree::MapKeys::IndexLastKey() {
  if (count <= kMaxUnindexedKeys) return;
  auto place = [this](size_t index) {
    const size_t mask = slot_count - 1;
    size_t slot = KeyHash(key(index)) & mask;
    while (slots[slot] != 0) slot = (slot + 1) & mask;
    slots[slot] = static_cast<uint32_t>(index + 1);
  };
  if (slot_count < 2 * uint64_t{count}) {  // grow to a quarter full, every key again
    const size_t grown = std::bit_ceil(4 * size_t{count});
    uint32_t* table = new uint32_t[grown]();  // first: a failure leaves the old table
    delete[] slots;
    slots = table;
    slot_count = static_cast<uint32_t>(grown);
    for (size_t i = 0; i < count; ++i) place(i);
  } else {
    place(count - 1);
  }
}

Result<Tree*> Tree::Append(Tree child) {
  if (kind_ != Kind::kList) {
    return Status::InvalidArgument("Append on a " + std::string(KindName(kind_)) + " node");
  }
  if (child_count_ == std::numeric_limits<uint32_t>::max()) {
    return Status::InvalidArgument("list of " + std::to_string(child_count_) +
                                   " elements: no more fit");
  }
  MakeRoomForChild();
  return EmplaceChild(std::move(child));
}

Status Tree::SetPath(std::string_view path, Tree node) {
  if (path.empty()) return Status::InvalidArgument("SetPath of an empty path");
  // Checked whole first, so that a refused path changes nothing.
  std::vector<std::string_view> parts;
  for (size_t start = 0;;) {
    const size_t slash = path.find('/', start);
    parts.push_back(path.substr(start, slash == std::string_view::npos ? slash : slash - start));
    if (parts.back().empty()) {
      return Status::InvalidArgument("path '" + std::string(path) + "' has an empty component");
    }
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  // One walk down the part of the path that exists: `probe` is the deepest
  // existing node on it and parts[0, existing) lead there.
  const Tree* probe = this;
  size_t existing = 0;
  for (; existing + 1 < parts.size(); ++existing) {
    if (!probe->is_container()) break;
    const Tree* next = probe->Find(parts[existing]);
    if (next == nullptr) {
      if (probe->kind_ == Kind::kList) {
        return Status::InvalidArgument("path '" + std::string(path) + "': list index '" +
                                       std::string(parts[existing]) + "' does not exist");
      }
      break;  // the maps from here on are new
    }
    probe = next;
  }
  if (!probe->is_container()) {
    return Status::InvalidArgument("path '" + std::string(path) + "' passes through a " +
                                   std::string(KindName(probe->kind_)) + " leaf");
  }
  const bool complete = existing + 1 == parts.size();
  if (complete && probe->kind_ == Kind::kList && probe->Find(parts.back()) == nullptr) {
    return Status::InvalidArgument("path '" + std::string(path) + "': list index '" +
                                   std::string(parts.back()) + "' does not exist");
  }
  // Checked: from here on nothing fails.
  Tree* parent = const_cast<Tree*>(probe);
  for (size_t i = existing; i + 1 < parts.size(); ++i) {
    parent = parent->Set(parts[i], Tree::Map()).value();
  }
  if (parent->kind_ == Kind::kList) {
    *parent->Find(parts.back()) = std::move(node);
    return Status::OK();
  }
  return parent->Set(parts.back(), std::move(node)).status();
}

Result<Tree> Tree::FromPaths(std::vector<std::pair<std::string, Tree>> nodes) {
  Tree tree;
  for (auto& [path, node] : nodes) {
    if (tree.Find(path) != nullptr) {
      return Status::InvalidArgument("path '" + path + "' is given twice or inside another");
    }
    Status set = tree.SetPath(path, std::move(node));
    if (!set.ok()) return set;
  }
  return tree;
}

const Tree* Tree::Find(std::string_view path) const {
  const Tree* node = this;
  while (!path.empty()) {
    size_t slash = path.find('/');
    std::string_view part = path.substr(0, slash);
    path = slash == std::string_view::npos ? std::string_view() : path.substr(slash + 1);
    if (node->kind_ == Kind::kMap) {
      const size_t index = node->ChildIndex(part);
      if (index == kNoChild) return nullptr;
      node = &node->payload_.children[index];
    } else if (node->kind_ == Kind::kList) {
      size_t index = 0;
      // Indices are written as FlattenTree writes them: no leading zeros.
      if (part.empty() || part.size() > 18 || (part.size() > 1 && part[0] == '0')) return nullptr;
      for (char c : part) {
        if (c < '0' || c > '9') return nullptr;
        index = index * 10 + static_cast<size_t>(c - '0');
      }
      if (index >= node->child_count_) return nullptr;
      node = &node->payload_.children[index];
    } else {
      return nullptr;
    }
  }
  return node;
}

Tree* Tree::Find(std::string_view path) {
  return const_cast<Tree*>(static_cast<const Tree*>(this)->Find(path));
}

void Tree::ForEachChild(
    const std::function<void(std::string_view key, const Tree& child)>& visit) const {
  if (kind_ == Kind::kMap) {
    const MapKeys* map = map_keys();
    if (map == nullptr) return;
    for (uint32_t index : map->Order()) visit(map->key(index), payload_.children[index]);
  } else {
    for (size_t i = 0; i < child_count_; ++i) visit({}, payload_.children[i]);
  }
}

void Tree::ForEachMutableChild(
    const std::function<void(std::string_view key, Tree& child)>& visit) {
  if (kind_ == Kind::kMap) {
    const MapKeys* map = map_keys();
    if (map == nullptr) return;
    for (uint32_t index : map->Order()) visit(map->key(index), payload_.children[index]);
  } else {
    for (size_t i = 0; i < child_count_; ++i) visit({}, payload_.children[i]);
  }
}

const Tree& Tree::element(size_t index) const {
  assert(kind_ == Kind::kList && index < child_count_);
  return payload_.children[index];
}
Tree& Tree::element(size_t index) {
  assert(kind_ == Kind::kList && index < child_count_);
  return payload_.children[index];
}

const Tensor& Tree::tensor() const {
  assert(kind_ == Kind::kTensor);
  return *static_cast<const Tensor*>(extra_);
}
Tensor& Tree::tensor() {
  assert(kind_ == Kind::kTensor);
  return *static_cast<Tensor*>(extra_);
}
int64_t Tree::int_value() const {
  assert(kind_ == Kind::kInt);
  return payload_.scalar;
}
double Tree::float_value() const {
  assert(kind_ == Kind::kFloat);
  return std::bit_cast<double>(payload_.scalar);
}
bool Tree::bool_value() const {
  assert(kind_ == Kind::kBool);
  return payload_.scalar != 0;
}
const std::string& Tree::string_value() const {
  assert(kind_ == Kind::kString);
  return *static_cast<const std::string*>(extra_);
}
const ShardedTensor& Tree::sharded() const {
  assert(kind_ == Kind::kShardedTensor);
  return *static_cast<const ShardedTensor*>(extra_);
}
ShardedTensor& Tree::sharded() {
  assert(kind_ == Kind::kShardedTensor);
  return *static_cast<ShardedTensor*>(extra_);
}

namespace {

// Visits the leaves below `node`, whose path is `*path`; `path` is one
// buffer extended and cut back on the way, not a string per node.
template <typename TreeT, typename Visit>
void VisitLeaves(TreeT& node, std::string* path, const Visit& visit) {
  if (!node.is_container()) {
    visit(*path, node);
    return;
  }
  const size_t length = path->size();
  size_t index = 0;
  auto descend = [&](std::string_view key, TreeT& child) {
    if (length > 0) *path += '/';
    if (node.kind() == Tree::Kind::kMap) {
      *path += key;
    } else {
      *path += std::to_string(index++);
    }
    VisitLeaves(child, path, visit);
    path->resize(length);
  };
  if constexpr (std::is_const_v<TreeT>) {
    node.ForEachChild(descend);
  } else {
    node.ForEachMutableChild(descend);
  }
}

}  // namespace

void Tree::ForEachLeaf(
    const std::function<void(const std::string& path, const Tree& leaf)>& visit) const {
  std::string path;
  VisitLeaves(*this, &path, visit);
}

void Tree::ForEachMutableLeaf(
    const std::function<void(const std::string& path, Tree& leaf)>& visit) {
  std::string path;
  VisitLeaves(*this, &path, visit);
}

bool Tree::ContentEquals(const Tree& other) const {
  if (kind_ != other.kind_) return false;
  switch (kind_) {
    case Kind::kMap: {
      if (child_count_ != other.child_count_) return false;
      for (size_t i = 0; i < child_count_; ++i) {
        const size_t theirs = other.ChildIndex(map_keys()->key(i));
        if (theirs == kNoChild ||
            !payload_.children[i].ContentEquals(other.payload_.children[theirs])) {
          return false;
        }
      }
      return true;
    }
    case Kind::kList:
      if (child_count_ != other.child_count_) return false;
      for (size_t i = 0; i < child_count_; ++i) {
        if (!payload_.children[i].ContentEquals(other.payload_.children[i])) return false;
      }
      return true;
    case Kind::kTensor: return tensor().ContentEquals(other.tensor());
    // Floats bitwise, so NaN equals the same NaN and -0.0 differs from 0.0.
    case Kind::kInt:
    case Kind::kBool:
    case Kind::kFloat: return payload_.scalar == other.payload_.scalar;
    case Kind::kString: return string_value() == other.string_value();
    case Kind::kShardedTensor: {
      const ShardedTensor& mine = sharded();
      const ShardedTensor& theirs = other.sharded();
      if (mine.dtype != theirs.dtype || mine.global_shape != theirs.global_shape ||
          mine.shards.size() != theirs.shards.size()) {
        return false;
      }
      for (size_t i = 0; i < mine.shards.size(); ++i) {
        if (mine.shards[i].start != theirs.shards[i].start ||
            mine.shards[i].replica_id != theirs.shards[i].replica_id ||
            !mine.shards[i].data.ContentEquals(theirs.shards[i].data)) {
          return false;
        }
      }
      return true;
    }
  }
  return false;
}

}  // namespace ckptdb
