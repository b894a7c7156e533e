// Boxes (lib/box.h): the geometry of shards, table-tested.
#include "box.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>

#include <cstring>
#include <numeric>
#include <random>

namespace ckptdb {
namespace {

TEST(BoxTest, BoxProblemChecksRankAndBounds) {
  struct Case {
    Box box;
    std::vector<int64_t> global;
    bool fine;
  };
  const Case cases[] = {
      {{{0, 0}, {4, 6}}, {4, 6}, true},
      {{{2, 3}, {2, 3}}, {4, 6}, true},
      {{{0}, {0}}, {0}, true},              // an empty tensor's empty box
      {{{}, {}}, {}, true},                 // a scalar
      {{{0}, {4}}, {4, 6}, false},          // rank
      {{{0, 0}, {4}}, {4, 6}, false},       // start and shape ranks differ
      {{{-1, 0}, {2, 6}}, {4, 6}, false},   // negative start
      {{{0, 0}, {5, 6}}, {4, 6}, false},    // past the end
      {{{3, 0}, {2, 6}}, {4, 6}, false},
      {{{0, 0}, {-1, 6}}, {4, 6}, false},   // negative extent
      {{{INT64_MAX, 0}, {INT64_MAX, 6}}, {4, 6}, false},  // overflow
      {{{1, 0}, {INT64_MAX, 6}}, {INT64_MAX, 6}, false},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(BoxProblem(c.box, c.global).empty(), c.fine) << BoxString(c.box);
  }
}

TEST(BoxTest, IntersectAndIndex) {
  const Box a{{0, 0}, {4, 6}};
  const Box b{{2, 4}, {4, 4}};
  std::optional<Box> common = Intersect(a, b);
  ASSERT_TRUE(common.has_value());
  EXPECT_EQ(*common, (Box{{2, 4}, {2, 2}}));
  EXPECT_FALSE(Intersect(a, Box{{4, 0}, {1, 6}}).has_value());  // touching only
  EXPECT_EQ(IndexInBox(a, {2, 4}), 16u);
  EXPECT_EQ(IndexInBox(b, {2, 4}), 0u);
  EXPECT_EQ(LastPoint(b), (std::vector<int64_t>{5, 7}));
  EXPECT_EQ(BoxElements(b), 16u);
  EXPECT_EQ(BoxString(b), "[2:6, 4:8]");
}

TEST(BoxTest, IsOneRunTable) {
  const Box within{{0, 0, 0}, {4, 5, 6}};
  struct Case {
    Box region;
    bool one_run;
  };
  const Case cases[] = {
      {{{0, 0, 0}, {4, 5, 6}}, true},   // all of it
      {{{1, 0, 0}, {2, 5, 6}}, true},   // whole rows
      {{{1, 2, 0}, {1, 3, 6}}, true},   // part of one plane, whole rows
      {{{1, 2, 1}, {1, 1, 4}}, true},   // part of one row
      {{{1, 2, 0}, {2, 3, 6}}, false},  // two planes, part of each
      {{{0, 0, 1}, {4, 5, 5}}, false},  // every row cut
      {{{1, 1, 1}, {1, 2, 2}}, false},
  };
  for (const Case& c : cases) EXPECT_EQ(IsOneRun(c.region, within), c.one_run) << BoxString(c.region);
  EXPECT_TRUE(IsOneRun(Box{}, Box{}));
  EXPECT_TRUE(IsOneRun(Box{{3}, {2}}, Box{{0}, {9}}));
}

TEST(BoxTest, TilingProblemTable) {
  struct Case {
    const char* name;
    std::vector<Box> boxes;
    std::vector<int64_t> global;
    bool tiles;
  };
  const Case cases[] = {
      {"one whole box", {{{0, 0}, {4, 6}}}, {4, 6}, true},
      {"row halves", {{{0, 0}, {2, 6}}, {{2, 0}, {2, 6}}}, {4, 6}, true},
      {"grid, any order",
       {{{2, 3}, {2, 3}}, {{0, 0}, {2, 3}}, {{2, 0}, {2, 3}}, {{0, 3}, {2, 3}}},
       {4, 6},
       true},
      {"gap", {{{0, 0}, {2, 6}}, {{3, 0}, {1, 6}}}, {4, 6}, false},
      {"overlap with the same volume", {{{0, 0}, {3, 6}}, {{2, 0}, {1, 6}}}, {4, 6}, false},
      {"overlap", {{{0, 0}, {3, 6}}, {{2, 0}, {2, 6}}}, {4, 6}, false},
      {"duplicate", {{{0, 0}, {4, 6}}, {{0, 0}, {4, 6}}}, {4, 6}, false},
      {"outside", {{{0, 0}, {4, 7}}}, {4, 6}, false},
      {"empty box", {{{0, 0}, {4, 6}}, {{0, 0}, {0, 6}}}, {4, 6}, false},
      {"empty tensor, no box", {}, {0, 6}, true},
      {"no box", {}, {4, 6}, false},
      {"scalar", {{{}, {}}}, {}, true},
      {"scalar twice", {{{}, {}}, {{}, {}}}, {}, false},
      {"columns overlap across rows",
       {{{0, 0}, {4, 3}}, {{0, 3}, {4, 3}}, {{1, 2}, {1, 2}}},
       {4, 6},
       false},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(TilingProblem(c.boxes, c.global).empty(), c.tiles)
        << c.name << ": " << TilingProblem(c.boxes, c.global);
  }
}

// A gap is named by its first element, row-major.
TEST(BoxTest, TilingProblemNamesTheFirstUncoveredElement) {
  struct Case {
    const char* name;
    std::vector<Box> boxes;
    std::vector<int64_t> global;
    const char* uncovered;
  };
  const Case cases[] = {
      {"a missing middle row", {{{0, 0}, {2, 6}}, {{3, 0}, {1, 6}}}, {4, 6}, "[2:3, 0:1]"},
      {"no box", {}, {4, 6}, "[0:1, 0:1]"},
      {"a hole in a grid",
       {{{0, 0}, {2, 3}}, {{0, 3}, {2, 3}}, {{2, 0}, {2, 3}}, {{2, 3}, {1, 3}}},
       {4, 6},
       "[3:4, 3:4]"},
      {"the last element of rank 3", {{{0, 0, 0}, {2, 2, 1}}, {{0, 0, 1}, {2, 1, 1}}, {{0, 1, 1}, {1, 1, 1}}},
       {2, 2, 2},
       "[1:2, 1:2, 1:2]"},
  };
  for (const Case& c : cases) {
    const std::string problem = TilingProblem(c.boxes, c.global);
    EXPECT_NE(problem.find(std::string("none covers ") + c.uncovered), std::string::npos)
        << c.name << ": " << problem;
  }
}

TEST(BoxTest, ManyBoxesTileQuickly) {
  // 100 x 100 boxes of a grid: the sweep compares neighbours only.
  std::vector<Box> boxes;
  for (int64_t r = 0; r < 100; ++r) {
    for (int64_t c = 0; c < 100; ++c) boxes.push_back({{r * 3, c * 2}, {3, 2}});
  }
  EXPECT_EQ(TilingProblem(boxes, {300, 200}), "");
  boxes.back().shape = {3, 3};
  EXPECT_NE(TilingProblem(boxes, {300, 200}), "");
}

TEST(BoxTest, AStaircaseOfBoxesIsRefusedInBoundedTime) {
  // Box i = [i:n, i:i+1] ties every box with every other on the sweep: a
  // hostile manifest's way to ask for n^2 / 2 comparisons.
  constexpr int64_t n = 20000;
  std::vector<Box> boxes;
  for (int64_t i = 0; i < n; ++i) boxes.push_back({{i, i}, {n - i, 1}});
  const auto start = std::chrono::steady_clock::now();
  EXPECT_THAT(TilingProblem(boxes, {n, n}), ::testing::HasSubstr("too entangled"));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(20));
}

TEST(BoxTest, BoxIndexFindsWhatABruteForceSearchFinds) {
  // Random boxes of a 40 x 30 tensor (overlapping, of every size), and
  // random queries: the index must find exactly the boxes that overlap.
  std::mt19937 random(7);
  auto pick = [&](int64_t below) { return static_cast<int64_t>(random() % below); };
  for (int round = 0; round < 50; ++round) {
    std::vector<Box> boxes;
    const int count = 1 + static_cast<int>(pick(60));
    for (int i = 0; i < count; ++i) {
      const int64_t r = pick(40), c = pick(30);
      boxes.push_back({{r, c}, {pick(41 - r), pick(31 - c)}});
    }
    const BoxIndex index(boxes);
    for (int q = 0; q < 20; ++q) {
      const int64_t r = pick(40), c = pick(30);
      const Box query{{r, c}, {1 + pick(40 - r), 1 + pick(30 - c)}};
      std::vector<size_t> expected;
      for (size_t i = 0; i < boxes.size(); ++i) {
        if (Overlaps(boxes[i], query)) expected.push_back(i);
      }
      EXPECT_EQ(index.Overlapping(query), expected) << BoxString(query);
    }
    bool gave_up = true;
    std::optional<std::pair<size_t, size_t>> overlap = index.FirstOverlap(1u << 20, &gave_up);
    EXPECT_FALSE(gave_up);
    bool any = false;
    for (size_t i = 0; i < boxes.size() && !any; ++i) {
      for (size_t j = i + 1; j < boxes.size() && !any; ++j) any = Overlaps(boxes[i], boxes[j]);
    }
    EXPECT_EQ(overlap.has_value(), any);
    if (overlap.has_value()) {
      EXPECT_TRUE(Overlaps(boxes[overlap->first], boxes[overlap->second]));
    }
  }
}

TEST(BoxTest, ShardsAlongEitherDimensionAreFoundWithoutLookingAtAll) {
  // 200,000 one-row shards, then one-column shards: each query meets only
  // its neighbours (a search of every box would take 4e10 steps).
  for (size_t dimension : {0, 1}) {
    constexpr int64_t n = 200000;
    std::vector<Box> boxes;
    for (int64_t i = 0; i < n; ++i) {
      boxes.push_back(dimension == 0 ? Box{{i, 0}, {1, 4}} : Box{{0, i}, {4, 1}});
    }
    const BoxIndex index(std::move(boxes));
    for (int64_t i = 0; i < n; ++i) {
      const Box query = dimension == 0 ? Box{{i, 0}, {2, 4}} : Box{{0, i}, {4, 2}};
      const std::vector<size_t> expected =
          i + 1 < n ? std::vector<size_t>{static_cast<size_t>(i), static_cast<size_t>(i + 1)}
                    : std::vector<size_t>{static_cast<size_t>(i)};
      ASSERT_EQ(index.Overlapping(query), expected);
    }
  }
}

TEST(BoxTest, CheckShardedTensorOfManyShardsIsLinear) {
  // 100,000 shards: a check of every pair would take 5e9 comparisons.
  constexpr int64_t n = 100000;
  ShardedTensor sharded{DType::kFloat32, {n, 2}, {}};
  for (int64_t row = 0; row < n; ++row) {
    sharded.shards.push_back(Shard{{row, 0}, Tensor::Allocate(DType::kFloat32, {1, 2}).value(), 0});
  }
  EXPECT_TRUE(CheckShardedTensor(sharded).ok());
  sharded.shards.back().start = {n - 2, 0};  // overlaps the shard before it
  const Status overlap = CheckShardedTensor(sharded);
  EXPECT_EQ(overlap.code(), Status::Code::kInvalidArgument);
  EXPECT_THAT(overlap.ToString(), ::testing::HasSubstr("shard 99999 of"));
  EXPECT_THAT(overlap.ToString(), ::testing::HasSubstr("overlaps [99998:99999, 0:2]"));
  sharded.shards.back().replica_id = 1;  // another replica may
  EXPECT_TRUE(CheckShardedTensor(sharded).ok());
}

TEST(BoxTest, CopyRegionMovesTheOverlap) {
  // A 6x8 global tensor of int32 whose elements are their global index.
  const Box source_box{{1, 2}, {4, 5}};
  std::vector<int32_t> source(20);
  for (int64_t r = 0; r < 4; ++r) {
    for (int64_t c = 0; c < 5; ++c) source[r * 5 + c] = static_cast<int32_t>((1 + r) * 8 + 2 + c);
  }
  const Box dest_box{{3, 0}, {3, 8}};
  std::vector<int32_t> dest(24, -1);
  const Box region = *Intersect(source_box, dest_box);
  CopyRegion(reinterpret_cast<const std::byte*>(source.data()), source_box, 0,
             reinterpret_cast<std::byte*>(dest.data()), dest_box, region, 4);
  for (int64_t r = 0; r < 3; ++r) {
    for (int64_t c = 0; c < 8; ++c) {
      const bool inside = r + 3 <= 4 && c >= 2 && c < 7;
      EXPECT_EQ(dest[r * 8 + c], inside ? static_cast<int32_t>((3 + r) * 8 + c) : -1)
          << r << "," << c;
    }
  }
  // The same from a source that holds the box's bytes from row 2 on only.
  std::vector<int32_t> again(24, -1);
  const uint64_t skip = 2 * 5 * 4;
  CopyRegion(reinterpret_cast<const std::byte*>(source.data() + 10), source_box, skip,
             reinterpret_cast<std::byte*>(again.data()), dest_box, region, 4);
  EXPECT_EQ(again, dest);
}

TEST(BoxTest, CopyRegionOfRankOneAndZero) {
  const std::vector<int16_t> source = {10, 11, 12, 13};
  std::vector<int16_t> dest(3, 0);
  CopyRegion(reinterpret_cast<const std::byte*>(source.data()), Box{{5}, {4}}, 0,
             reinterpret_cast<std::byte*>(dest.data()), Box{{7}, {3}}, Box{{7}, {2}}, 2);
  EXPECT_EQ(dest, (std::vector<int16_t>{12, 13, 0}));
  const double scalar = 2.5;
  double out = 0;
  CopyRegion(reinterpret_cast<const std::byte*>(&scalar), Box{}, 0,
             reinterpret_cast<std::byte*>(&out), Box{}, Box{}, 8);
  EXPECT_EQ(out, 2.5);
}

}  // namespace
}  // namespace ckptdb
