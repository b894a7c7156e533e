#include "box.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <optional>
#include <set>

namespace ckptdb {

Box WholeBox(const std::vector<int64_t>& shape) {
  return Box{std::vector<int64_t>(shape.size(), 0), shape};
}

std::string BoxString(const Box& box) {
  std::string text = "[";
  for (size_t d = 0; d < box.start.size() && d < box.shape.size(); ++d) {
    if (d > 0) text += ", ";
    if (d == 16) {
      text += "... (" + std::to_string(box.start.size()) + " dimensions)";
      break;
    }
    const int64_t start = box.start[d];
    const int64_t extent = box.shape[d];
    // A hostile box's end may not fit in int64: shown as its extent then.
    const bool fits = extent >= 0 && start >= 0 && extent <= INT64_MAX - start;
    text += std::to_string(start) + ":" +
            (fits ? std::to_string(start + extent) : "+" + std::to_string(extent));
  }
  return text + "]";
}

std::string BoxProblem(const Box& box, const std::vector<int64_t>& global) {
  if (box.start.size() != global.size() || box.shape.size() != global.size()) {
    return "box of rank " + std::to_string(box.start.size()) + "/" +
           std::to_string(box.shape.size()) + " in a tensor of rank " +
           std::to_string(global.size());
  }
  for (size_t d = 0; d < global.size(); ++d) {
    if (box.start[d] < 0 || box.shape[d] < 0 || box.start[d] > global[d] ||
        box.shape[d] > global[d] - box.start[d]) {
      return "box " + BoxString(box) + " is not inside the tensor's shape on dimension " +
             std::to_string(d);
    }
  }
  return {};
}

std::optional<Box> Intersect(const Box& a, const Box& b) {
  Box common;
  for (size_t d = 0; d < a.start.size(); ++d) {
    const int64_t begin = std::max(a.start[d], b.start[d]);
    const int64_t end = std::min(a.start[d] + a.shape[d], b.start[d] + b.shape[d]);
    if (end <= begin) return std::nullopt;
    common.start.push_back(begin);
    common.shape.push_back(end - begin);
  }
  return common;
}

bool Overlaps(const Box& a, const Box& b) {
  for (size_t d = 0; d < a.start.size(); ++d) {
    if (std::min(a.start[d] + a.shape[d], b.start[d] + b.shape[d]) <=
        std::max(a.start[d], b.start[d])) {
      return false;
    }
  }
  return true;
}

uint64_t BoxElements(const Box& box) {
  uint64_t elements = 1;
  for (int64_t extent : box.shape) elements *= static_cast<uint64_t>(extent);
  return elements;
}

bool IsOneRun(const Box& region, const Box& within) {
  size_t d = region.shape.size();
  while (d > 0 && region.shape[d - 1] == within.shape[d - 1]) --d;
  // Dimension d - 1 may be partial; those before it must be single.
  for (size_t leading = 0; leading + 1 < d; ++leading) {
    if (region.shape[leading] != 1) return false;
  }
  return true;
}

uint64_t IndexInBox(const Box& box, const std::vector<int64_t>& point) {
  uint64_t index = 0;
  for (size_t d = 0; d < box.start.size(); ++d) {
    index = index * static_cast<uint64_t>(box.shape[d]) +
            static_cast<uint64_t>(point[d] - box.start[d]);
  }
  return index;
}

std::vector<int64_t> LastPoint(const Box& box) {
  std::vector<int64_t> last(box.start.size());
  for (size_t d = 0; d < last.size(); ++d) last[d] = box.start[d] + box.shape[d] - 1;
  return last;
}

void CopyRegion(const std::byte* source, const Box& source_box, uint64_t source_skip,
                std::byte* dest, const Box& dest_box, const Box& region, size_t element_size) {
  const size_t rank = region.start.size();
  if (BoxElements(region) == 0) return;
  // The innermost dimension is contiguous in both layouts: one run per row.
  const size_t run = (rank == 0 ? 1 : static_cast<size_t>(region.shape[rank - 1])) * element_size;
  std::vector<int64_t> point = region.start;
  for (;;) {
    std::memcpy(dest + IndexInBox(dest_box, point) * element_size,
                source + (IndexInBox(source_box, point) * element_size - source_skip), run);
    // Next row: count up the outer dimensions, innermost of them first.
    size_t d = rank == 0 ? 0 : rank - 1;
    for (; d-- > 0;) {
      if (++point[d] < region.start[d] + region.shape[d]) break;
      point[d] = region.start[d];
    }
    if (d == static_cast<size_t>(-1)) return;
  }
}

namespace {

// Where the uncovered element is looked for at most (the search is
// quadratic in the boxes); beyond, only the count is told.
constexpr size_t kMaxBoxesToLocateGaps = 2048;

// The first element, row-major, of a tensor of shape `global` that none of
// the disjoint `boxes` (inside it) covers; nullopt when they cover it. The
// boxes touching a slab of the first dimension change only where one starts
// or ends: the slabs there are the only ones to look into.
std::optional<std::vector<int64_t>> FirstUncovered(const std::vector<Box>& boxes,
                                                   const std::vector<int64_t>& global) {
  if (global.empty()) return boxes.empty() ? std::optional<std::vector<int64_t>>(std::vector<int64_t>{})
                                           : std::nullopt;
  const std::vector<int64_t> rest(global.begin() + 1, global.end());
  std::set<int64_t> slabs = {0};
  for (const Box& box : boxes) {
    slabs.insert(box.start[0]);
    slabs.insert(box.start[0] + box.shape[0]);
  }
  for (int64_t slab : slabs) {
    if (slab >= global[0]) break;
    std::vector<Box> across;
    uint64_t covered = 0;
    for (const Box& box : boxes) {
      if (box.start[0] > slab || slab >= box.start[0] + box.shape[0]) continue;
      across.push_back({std::vector<int64_t>(box.start.begin() + 1, box.start.end()),
                        std::vector<int64_t>(box.shape.begin() + 1, box.shape.end())});
      covered += BoxElements(across.back());
    }
    if (covered == BoxElements(WholeBox(rest))) continue;
    std::optional<std::vector<int64_t>> inside = FirstUncovered(across, rest);
    if (!inside.has_value()) continue;
    inside->insert(inside->begin(), slab);
    return inside;
  }
  return std::nullopt;
}

}  // namespace

BoxIndex::BoxIndex(std::vector<Box> boxes) : boxes_(std::move(boxes)), order_(boxes_.size()) {
  std::iota(order_.begin(), order_.end(), size_t{0});
  const size_t rank = boxes_.empty() ? 0 : boxes_[0].start.size();
  if (rank == 0) return;
  size_t most_starts = 0;
  std::vector<int64_t> starts(boxes_.size());
  for (size_t d = 0; d < rank; ++d) {
    for (size_t i = 0; i < boxes_.size(); ++i) starts[i] = boxes_[i].start[d];
    std::sort(starts.begin(), starts.end());
    const auto distinct =
        static_cast<size_t>(std::unique(starts.begin(), starts.end()) - starts.begin());
    if (distinct > most_starts) {
      most_starts = distinct;
      sweep_ = d;
    }
  }
  std::stable_sort(order_.begin(), order_.end(), [&](size_t a, size_t b) {
    return boxes_[a].start[sweep_] < boxes_[b].start[sweep_];
  });
  for (const Box& box : boxes_) longest_ = std::max(longest_, box.shape[sweep_]);
}

std::vector<size_t> BoxIndex::Overlapping(const Box& query) const {
  std::vector<size_t> found;
  if (query.start.empty()) {  // scalars: every box is the one element
    for (size_t i = 0; i < boxes_.size(); ++i) found.push_back(i);
    return found;
  }
  // Boxes starting at or before query.start - longest end before the query.
  const int64_t query_start = query.start[sweep_];
  const int64_t query_end = query_start + query.shape[sweep_];
  auto first = std::partition_point(order_.begin(), order_.end(), [&](size_t i) {
    return boxes_[i].start[sweep_] <= query_start - longest_;
  });
  for (auto at = first; at != order_.end() && boxes_[*at].start[sweep_] < query_end; ++at) {
    if (Overlaps(boxes_[*at], query)) found.push_back(*at);
  }
  std::sort(found.begin(), found.end());
  return found;
}

std::optional<std::pair<size_t, size_t>> BoxIndex::FirstOverlap(uint64_t max_comparisons,
                                                                bool* gave_up) const {
  *gave_up = false;
  if (boxes_.empty() || boxes_[0].start.empty()) {
    if (boxes_.size() > 1) return std::make_pair(size_t{0}, size_t{1});
    return std::nullopt;
  }
  // Only boxes whose extents overlap along the sweep can share an element.
  uint64_t comparisons = 0;
  for (size_t i = 0; i < order_.size(); ++i) {
    const Box& box = boxes_[order_[i]];
    const int64_t end = box.start[sweep_] + box.shape[sweep_];
    for (size_t j = i + 1; j < order_.size() && boxes_[order_[j]].start[sweep_] < end; ++j) {
      if (++comparisons > max_comparisons) {
        *gave_up = true;
        return std::nullopt;
      }
      if (Overlaps(box, boxes_[order_[j]])) return std::make_pair(order_[i], order_[j]);
    }
  }
  return std::nullopt;
}

std::string TilingProblem(const std::vector<Box>& boxes, const std::vector<int64_t>& global) {
  // Bounds the work a hostile manifest can cause (n^2 / 2 comparisons for a
  // staircase of boxes); a 400 x 400 grid of shards stays below it.
  const size_t rank = global.size();
  for (const Box& box : boxes) {
    std::string problem = BoxProblem(box, global);
    if (!problem.empty()) return problem;
    if (BoxElements(box) == 0) return "box " + BoxString(box) + " holds no element";
  }
  if (rank > 0) {
    const BoxIndex index(boxes);
    bool gave_up = false;
    std::optional<std::pair<size_t, size_t>> overlap =
        index.FirstOverlap(kMaxTilingComparisons, &gave_up);
    if (gave_up) {
      return std::to_string(boxes.size()) +
             " boxes too entangled to check (their extents overlap on every dimension)";
    }
    if (overlap.has_value()) {
      return "boxes " + BoxString(boxes[overlap->first]) + " and " +
             BoxString(boxes[overlap->second]) + " overlap";
    }
  } else if (boxes.size() > 1) {
    return std::to_string(boxes.size()) + " boxes of one scalar";
  }
  // Disjoint boxes inside the tensor cover it exactly when their sizes add
  // up (and, being disjoint, they add up to at most the tensor's).
  const uint64_t total = BoxElements(WholeBox(global));
  uint64_t covered = 0;
  for (const Box& box : boxes) covered += BoxElements(box);
  if (covered != total) {
    std::string problem = "the boxes cover " + std::to_string(covered) + " of " +
                          std::to_string(total) + " elements";
    std::optional<std::vector<int64_t>> gap;
    if (boxes.size() <= kMaxBoxesToLocateGaps) gap = FirstUncovered(boxes, global);
    if (gap.has_value()) problem += "; none covers " + BoxString(Box{*gap, std::vector<int64_t>(gap->size(), 1)});
    return problem;
  }
  return {};
}

}  // namespace ckptdb
