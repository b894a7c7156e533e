// Boxes: the rectangular regions of a global tensor that shards cover
// (doc/format.md §6). A box is its start offsets and its shape, one of each
// per dimension of the tensor; its elements are laid out row-major, as a
// tensor of the box's shape. Pure functions, no I/O.
#ifndef CKPTDB_LIB_BOX_H_
#define CKPTDB_LIB_BOX_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "ckptdb/status.h"
#include "ckptdb/tree.h"

namespace ckptdb {

struct Box {
  std::vector<int64_t> start;
  std::vector<int64_t> shape;

  bool operator==(const Box&) const = default;
};

// The box of a whole tensor of `shape`.
Box WholeBox(const std::vector<int64_t>& shape);
// "[0:4, 8:16]".
std::string BoxString(const Box& box);
// Empty when `box` has the rank of `global`, non-negative starts and
// extents, and lies inside a tensor of shape `global`; else what is wrong.
// Overflow-safe for any int64 values.
std::string BoxProblem(const Box& box, const std::vector<int64_t>& global);
// The common part of two boxes of the same rank; nullopt when they share no
// element (a box with a zero extent shares none).
std::optional<Box> Intersect(const Box& a, const Box& b);
// Whether two boxes of the same rank share an element (Intersect without
// building the common box).
bool Overlaps(const Box& a, const Box& b);
// Elements of a box (1 for rank 0). The box must have passed BoxProblem.
uint64_t BoxElements(const Box& box);
// Whether the elements of `region` (inside `within`) are one run of
// consecutive elements in `within`'s row-major layout: its trailing
// dimensions span `within`'s, then one dimension partly, and every leading
// one has a single index.
bool IsOneRun(const Box& region, const Box& within);
// The row-major index, within `box`, of its element at global coordinates
// `point` (which must lie inside it).
uint64_t IndexInBox(const Box& box, const std::vector<int64_t>& point);
// The last element of a non-empty box, in global coordinates.
std::vector<int64_t> LastPoint(const Box& box);
// Copies the elements of `region` (inside both boxes) from `source`, which
// holds the bytes of `source_box` row-major from its byte `source_skip` on
// (the region's bytes must be there), into `dest`, which holds all of
// `dest_box`: one memcpy per run of the innermost dimension.
void CopyRegion(const std::byte* source, const Box& source_box, uint64_t source_skip,
                std::byte* dest, const Box& dest_box, const Box& region, size_t element_size);
// Boxes of one rank kept for finding, among many, those that overlap a
// query without looking at all of them: sorted by start along the dimension
// where the starts differ most (the one a sharding cuts along), so a query
// looks only at boxes starting within the largest extent before it there.
// Along one dimension a query costs log n plus the boxes it meets.
class BoxIndex {
 public:
  explicit BoxIndex(std::vector<Box> boxes);
  const std::vector<Box>& boxes() const { return boxes_; }
  // The indices (into boxes()) of the boxes sharing an element with
  // `query`, in increasing order.
  std::vector<size_t> Overlapping(const Box& query) const;
  // The first pair of boxes found to share an element, as indices; nullopt
  // when none do. Counts its comparisons into `*comparisons` and gives up
  // (nullopt, `*gave_up` set) past `max_comparisons`: a sharding along one
  // dimension takes about n comparisons, a k x k grid k^3 / 2.
  std::optional<std::pair<size_t, size_t>> FirstOverlap(uint64_t max_comparisons,
                                                        bool* gave_up) const;

 private:
  std::vector<Box> boxes_;
  size_t sweep_ = 0;                // the dimension sorted along (rank > 0)
  std::vector<size_t> order_;       // box indices by start along sweep_
  int64_t longest_ = 0;             // the largest extent along sweep_
};

// Empty when `boxes` tile a tensor of shape `global` exactly (each inside
// it, no two sharing an element, every element in one); else what is wrong,
// naming the boxes. Boxes with no element are refused: they would name
// nothing. Overlaps are looked for as BoxIndex::FirstOverlap does (0.1 s
// for a 400 x 400 grid); past kMaxTilingComparisons the boxes are refused.
inline constexpr uint64_t kMaxTilingComparisons = uint64_t{1} << 25;
std::string TilingProblem(const std::vector<Box>& boxes, const std::vector<int64_t>& global);

// What Tree::Sharded checks: every shard has the tensor's dtype and a box
// inside the global shape, and no two shards of one replica_id overlap.
// Run again wherever shards are used (the caller may change them through
// Tree::sharded() after the leaf was made).
Status CheckShardedTensor(const ShardedTensor& sharded);

}  // namespace ckptdb

#endif  // CKPTDB_LIB_BOX_H_
