// Tree: building a state by paths (SetPath, FromPaths), with the maps on the
// way created and nothing changed by a refused path.

#include <gtest/gtest.h>
#include <malloc.h>

#include "ckptdb/tree.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <random>
#include <string>
#include <vector>
#include "test_util.h"

#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
// Out of memory on demand: with g_allocations_left >= 0, the allocation
// that finds it at 0 throws std::bad_alloc (the sanitizers' allocators are
// left alone: these tests are skipped under them).
namespace {
long g_allocations_left = -1;
}  // namespace
void* operator new(size_t size) {
  if (g_allocations_left == 0) throw std::bad_alloc();
  if (g_allocations_left > 0) --g_allocations_left;
  if (void* memory = std::malloc(size == 0 ? 1 : size)) return memory;
  throw std::bad_alloc();
}
// GCC, inlining these, takes their free() for a mismatch with new.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void operator delete(void* memory) noexcept { std::free(memory); }
void operator delete(void* memory, size_t) noexcept { std::free(memory); }
#pragma GCC diagnostic pop
#define CKPTDB_TREE_TEST_FAILS_ALLOCATIONS 1
#endif

namespace ckptdb {
namespace {

TEST(TreeSetPathTest, CreatesTheMapsOnTheWayAndReplacesWhatIsThere) {
  Tree tree;
  ASSERT_OK(tree.SetPath("params/encoder/kernel", Tree::Int(1)));
  ASSERT_OK(tree.SetPath("params/encoder/bias", Tree::Int(2)));
  ASSERT_OK(tree.SetPath("step", Tree::Int(3)));
  ASSERT_OK(tree.SetPath("params/encoder/kernel", Tree::Int(4)));
  ASSERT_NE(tree.Find("params/encoder"), nullptr);
  EXPECT_EQ(tree.Find("params/encoder")->kind(), Tree::Kind::kMap);
  EXPECT_EQ(tree.Find("params/encoder/kernel")->int_value(), 4);
  EXPECT_EQ(tree.Find("params/encoder/bias")->int_value(), 2);
  EXPECT_EQ(tree.Find("step")->int_value(), 3);
  EXPECT_EQ(tree.child_count(), 2u);
}

TEST(TreeSetPathTest, EntersExistingListsByIndex) {
  Tree tree;
  Tree layers = Tree::List();
  ASSERT_OK(layers.Append(Tree::Map()).status());
  ASSERT_OK(tree.Set("layers", std::move(layers)).status());
  ASSERT_OK(tree.SetPath("layers/0/w", Tree::Float(0.5)));
  EXPECT_EQ(tree.Find("layers/0/w")->float_value(), 0.5);
  ASSERT_OK(tree.SetPath("layers/0", Tree::Int(9)));
  EXPECT_EQ(tree.Find("layers/0")->int_value(), 9);
  // An index is written as paths write it: "01" is no element.
  EXPECT_EQ(tree.Find("layers/00"), nullptr);
  EXPECT_EQ(tree.Find("layers/01"), nullptr);
  EXPECT_FALSE(tree.SetPath("layers/00/w", Tree::Float(1)).ok());
}

TEST(TreeSetPathTest, ARefusedPathChangesNothing) {
  Tree tree;
  ASSERT_OK(tree.SetPath("a/leaf", Tree::Int(1)));
  ASSERT_OK(tree.Set("list", Tree::List()).status());
  Tree before;
  ASSERT_OK(before.SetPath("a/leaf", Tree::Int(1)));
  ASSERT_OK(before.Set("list", Tree::List()).status());
  for (const char* path : {"", "/x", "x/", "x//y", "a/leaf/below", "list/0", "list/0/x",
                           "new/map/a/leaf/deeper"}) {
    const Status status = tree.SetPath(path, Tree::Int(2));
    if (std::string(path) == "new/map/a/leaf/deeper") {
      EXPECT_OK(status);  // all new maps: fine
      continue;
    }
    EXPECT_EQ(status.code(), Status::Code::kInvalidArgument) << path;
    EXPECT_NE(status.ToString().find(path), std::string::npos) << status.ToString();
  }
  EXPECT_EQ(tree.Find("new/map/a/leaf/deeper")->int_value(), 2);
  ASSERT_OK(tree.Set("new", Tree::Map()).status());  // drop what the fine path added
  ASSERT_NE(tree.Find("new"), nullptr);
  EXPECT_EQ(tree.Find("a/leaf")->int_value(), 1);
  EXPECT_EQ(tree.Find("list")->child_count(), 0u);
}

TEST(TreeFromPathsTest, BuildsTheTreeAndRefusesCollisions) {
  Result<Tree> tree = Tree::FromPaths({{"params/w", Tree::Int(1)},
                                       {"params/b", Tree::Int(2)},
                                       {"step", Tree::Int(3)}});
  ASSERT_OK(tree.status());
  Tree expected;
  ASSERT_OK(expected.SetPath("params/b", Tree::Int(2)));
  ASSERT_OK(expected.SetPath("params/w", Tree::Int(1)));
  ASSERT_OK(expected.SetPath("step", Tree::Int(3)));
  EXPECT_TRUE(tree->ContentEquals(expected));
  for (auto collision : {std::vector<std::pair<std::string, Tree>>{{"a", Tree::Int(1)},
                                                                   {"a", Tree::Int(2)}},
                         {{"a", Tree::Int(1)}, {"a/b", Tree::Int(2)}},
                         {{"a/b", Tree::Int(1)}, {"a", Tree::Int(2)}}}) {
    EXPECT_EQ(Tree::FromPaths(std::move(collision)).status().code(),
              Status::Code::kInvalidArgument);
  }
}

TEST(TreeSetTest, ChildrenAreVisitedInKeyOrderWhateverTheOrderTheyWereSet) {
  Tree forward;
  Tree backward;
  for (const char* key : {"a", "b", "c", "d"}) ASSERT_OK(forward.Set(key, Tree::Int(key[0])).status());
  for (const char* key : {"d", "c", "b", "a"}) ASSERT_OK(backward.Set(key, Tree::Int(key[0])).status());
  ASSERT_OK(backward.Set("b", Tree::Int('b')).status());  // replaced in place
  EXPECT_TRUE(forward.ContentEquals(backward));
  std::string keys;
  backward.ForEachChild([&](std::string_view key, const Tree& child) {
    keys += key;
    EXPECT_EQ(child.int_value(), key[0]);
  });
  EXPECT_EQ(keys, "abcd");
  ASSERT_OK(backward.Set("e", Tree::Int(1)).status());
  EXPECT_FALSE(forward.ContentEquals(backward));
}

TEST(TreeSetTest, EveryKeyIsFoundAtEverySizeAndReplacedInPlace) {
  // Sizes across the small maps searched in turn and each growth of the
  // hash table; keys that are prefixes of one another.
  Tree tree;
  Tree reversed;
  std::vector<std::string> keys;
  for (int i = 0; i < 1000; ++i) keys.push_back(std::string(1 + i % 7, 'k') + std::to_string(i));
  for (size_t i = 0; i < keys.size(); ++i) {
    ASSERT_OK(tree.Set(keys[i], Tree::Int(static_cast<int64_t>(i))).status());
    for (size_t j = 0; j <= i; ++j) {
      const Tree* found = tree.Find(keys[j]);
      ASSERT_NE(found, nullptr) << keys[j] << " after " << i + 1 << " keys";
      EXPECT_EQ(found->int_value(), static_cast<int64_t>(j));
    }
    EXPECT_EQ(tree.Find(keys[i] + "x"), nullptr);
    EXPECT_EQ(tree.Find("k" + keys[i]), nullptr);  // each number has one count of k's
  }
  for (size_t i = keys.size(); i-- > 0;) {
    ASSERT_OK(reversed.Set(keys[i], Tree::Int(-1)).status());
  }
  for (size_t i = 0; i < keys.size(); ++i) {
    ASSERT_OK(reversed.Set(keys[i], Tree::Int(static_cast<int64_t>(i))).status());
  }
  EXPECT_EQ(reversed.child_count(), keys.size());
  EXPECT_TRUE(tree.ContentEquals(reversed));
  ASSERT_OK(reversed.Set(keys[500], Tree::Int(0)).status());
  EXPECT_FALSE(tree.ContentEquals(reversed));
}

TEST(TreeSetTest, ManyKeysInDescendingOrderAreSetInLinearithmicTime) {
  // 300,000 keys each sorting before all the others set so far: an
  // insertion that moved the children after it would move 4.5e10 of them.
  constexpr int kKeys = 300000;
  Tree tree;
  char key[16];
  for (int i = kKeys; i-- > 0;) {
    std::snprintf(key, sizeof(key), "k%07d", i);
    ASSERT_OK(tree.Set(key, Tree::Int(i)).status());
  }
  EXPECT_EQ(tree.child_count(), static_cast<size_t>(kKeys));
  int expected = 0;
  tree.ForEachChild([&](std::string_view, const Tree& child) {
    EXPECT_EQ(child.int_value(), expected++);
  });
  EXPECT_EQ(tree.Find("k0123456")->int_value(), 123456);
}

TEST(TreeSetTest, ManyNestedPathsInAShuffledOrder) {
  // 200,000 leaves under 25,000 maps, set by path in a shuffled order, and
  // visited back in path order.
  constexpr int kLeaves = 200000;
  std::vector<int> order(kLeaves);
  for (int i = 0; i < kLeaves; ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), std::mt19937(3));
  auto path_of = [](int i) {
    char path[48];
    std::snprintf(path, sizeof(path), "layers/%05d/w%d", i / 8, i % 8);
    return std::string(path);
  };
  Tree tree;
  for (int i : order) ASSERT_OK(tree.SetPath(path_of(i), Tree::Int(i)));
  int expected = 0;
  tree.ForEachLeaf([&](const std::string& path, const Tree& leaf) {
    EXPECT_EQ(path, path_of(expected));
    EXPECT_EQ(leaf.int_value(), expected++);
  });
  EXPECT_EQ(expected, kLeaves);
}

// The heap a tree of tiny tensor views takes, per leaf: what a million-leaf
// state costs beside its own arrays (the Python binding builds such a tree
// of its arrays for every save). A node is 24 bytes, a map's keys one
// block, a tensor 56 bytes: 238 bytes a leaf; 48-byte nodes and 72-byte
// tensors took 318, and a vector of strings per map 413.
// glibc's own count of the bytes it hands out, so not under sanitizers,
// which replace the allocator.
// Set and a copy that run out of memory part way leave the tree as it was:
// the n-th allocation fails, for every n until the call succeeds,
// at every size from an empty map past the size where a map's keys get a
// hash table (8) and through its growths.
TEST(TreeOutOfMemoryTest, ASetOrACopyThatFailsChangesNothing) {
#ifndef CKPTDB_TREE_TEST_FAILS_ALLOCATIONS
  GTEST_SKIP() << "the sanitizer's allocator is not replaced";
#else
  Tree tree;
  for (int size = 0; size < 40; ++size) {
    SCOPED_TRACE("map of " + std::to_string(size) + " keys");
    const Tree before = tree;
    const std::string key = "key_" + std::to_string(size);
    for (long fail_at = 0;; ++fail_at) {
      g_allocations_left = fail_at;
      bool failed = false;
      try {
        Result<Tree*> set = tree.Set(key, Tree::String("value of " + key + " beyond SSO"));
        g_allocations_left = -1;
        ASSERT_OK(set.status());
      } catch (const std::bad_alloc&) {
        g_allocations_left = -1;
        failed = true;
      }
      if (!failed) break;
      ASSERT_TRUE(tree.ContentEquals(before)) << "after failing allocation " << fail_at;
      ASSERT_EQ(tree.Find(key), nullptr) << "after failing allocation " << fail_at;
      for (int k = 0; k < size; ++k) ASSERT_NE(tree.Find("key_" + std::to_string(k)), nullptr);
    }
    for (long fail_at = 0;; ++fail_at) {
      g_allocations_left = fail_at;
      try {
        Tree copy(tree);
        g_allocations_left = -1;
        ASSERT_TRUE(copy.ContentEquals(tree));
        break;
      } catch (const std::bad_alloc&) {
        g_allocations_left = -1;
      }
    }
  }
  EXPECT_EQ(tree.child_count(), 40u);
#endif
}

TEST(TreeMemoryTest, NestedTinyTensorsTakeUnderTwoHundredSixtyBytesALeaf) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "the sanitizer's allocator keeps its own counts";
#else
  constexpr int kLeaves = 100000;
  static const char* const kNames[] = {"attn/q/kernel", "attn/k/kernel", "attn/v/kernel",
                                       "attn/o/kernel", "mlp/up/kernel", "mlp/down/kernel",
                                       "norm/scale",    "norm/bias"};
  std::vector<float> values(4 * kLeaves);
  std::vector<std::string> paths;
  for (int i = 0; i < kLeaves; ++i) {
    paths.push_back("layers/" + std::to_string(i / 8) + "/" + kNames[i % 8]);
  }
  const size_t before = mallinfo2().uordblks;
  {
    Tree tree;
    for (int i = 0; i < kLeaves; ++i) {
      ASSERT_OK(tree.SetPath(paths[i], Tree::Leaf(Tensor::ConstView(DType::kFloat32, {4},
                                                                    values.data() + 4 * i)
                                                      .value())));
    }
    const double per_leaf = static_cast<double>(mallinfo2().uordblks - before) / kLeaves;
    EXPECT_LT(per_leaf, 260.0);
    std::printf("%.0f heap bytes a leaf\n", per_leaf);
  }
#endif
}

}  // namespace
}  // namespace ckptdb

namespace ckptdb {
namespace {

// A map of 20 keys (past the size searched in turn), a string, a sharded
// tensor and a tensor, at the top and nested.
Tree RichTree() {
  Tree tree;
  for (int i = 0; i < 20; ++i) {
    EXPECT_OK(tree.SetPath("many/k" + std::to_string(i), Tree::Int(i)));
  }
  EXPECT_OK(tree.Set("name", Tree::String("a string longer than the small-string buffer")).status());
  ShardedTensor sharded{DType::kFloat32, {2, 2}, {}};
  for (int64_t row = 0; row < 2; ++row) {
    Tensor data = Tensor::Allocate(DType::kFloat32, {1, 2}).value();
    data.MutableValues<float>().value()[0] = static_cast<float>(row);
    sharded.shards.push_back(Shard{{row, 0}, std::move(data), 0});
  }
  EXPECT_OK(tree.Set("sharded", Tree::Sharded(std::move(sharded)).value()).status());
  EXPECT_OK(tree.Set("tensor", Tree::Leaf(Tensor::Allocate(DType::kInt32, {3}).value())).status());
  return tree;
}

TEST(TreeCopyTest, ACopyIsIndependentOfItsOriginal) {
  const Tree original = RichTree();
  Tree copy = original;
  EXPECT_TRUE(copy.ContentEquals(original));
  // Changing the copy's maps, string and shard list leaves the original as it was.
  for (int i = 20; i < 40; ++i) ASSERT_OK(copy.SetPath("many/k" + std::to_string(i), Tree::Int(i)));
  ASSERT_OK(copy.SetPath("many/k3", Tree::Int(-3)));
  ASSERT_OK(copy.Set("name", Tree::String("other")).status());
  copy.Find("sharded")->sharded().shards.pop_back();
  EXPECT_EQ(original.Find("many")->child_count(), 20u);
  EXPECT_EQ(original.Find("many/k3")->int_value(), 3);
  EXPECT_EQ(original.Find("many/k25"), nullptr);
  EXPECT_EQ(original.Find("name")->string_value(), "a string longer than the small-string buffer");
  EXPECT_EQ(original.Find("sharded")->sharded().shards.size(), 2u);
  EXPECT_TRUE(original.ContentEquals(RichTree()));
  // The copy finds every key it was given, old and new.
  for (int i = 0; i < 40; ++i) {
    const Tree* found = copy.Find("many/k" + std::to_string(i));
    ASSERT_NE(found, nullptr) << i;
    EXPECT_EQ(found->int_value(), i == 3 ? -3 : i);
  }
  // Assignment, to itself too, and moves.
  Tree assigned;
  assigned = original;
  const Tree& same = assigned;
  assigned = same;
  EXPECT_TRUE(assigned.ContentEquals(original));
  Tree moved = std::move(assigned);
  EXPECT_TRUE(moved.ContentEquals(original));
  EXPECT_EQ(moved.Find("many/k19")->int_value(), 19);
}

TEST(TreeMoveTest, ATreeMovedFromIsAnEmptyMapOfEveryKind) {
  std::vector<Tree> kinds;
  kinds.push_back(RichTree());
  kinds.push_back(Tree::List());
  ASSERT_OK(kinds.back().Append(Tree::Float(-0.0)).status());
  kinds.push_back(Tree::Leaf(Tensor::Allocate(DType::kFloat32, {2}).value()));
  kinds.push_back(Tree::String("a string longer than the small-string buffer"));
  kinds.push_back(Tree::Float(2.5));
  kinds.push_back(Tree::Bool(true));
  for (Tree& from : kinds) {
    const Tree copy = from;
    Tree to = std::move(from);
    EXPECT_TRUE(to.ContentEquals(copy)) << KindName(copy.kind());
    EXPECT_EQ(from.kind(), Tree::Kind::kMap) << KindName(copy.kind());
    EXPECT_EQ(from.child_count(), 0u);
    // Usable again, and assigned over by moves too.
    ASSERT_OK(from.Set("again", Tree::Int(1)).status());
    EXPECT_EQ(from.Find("again")->int_value(), 1);
    to = std::move(from);
    EXPECT_EQ(to.Find("again")->int_value(), 1);
  }
  // A subtree may replace the tree holding it, by a move or a copy.
  Tree whole = RichTree();
  whole = std::move(*whole.Find("many"));
  EXPECT_EQ(whole.child_count(), 20u);
  EXPECT_EQ(whole.Find("k7")->int_value(), 7);
  Tree list = Tree::List();
  ASSERT_OK(list.Append(RichTree()).status());
  list = std::move(list.element(0));
  EXPECT_TRUE(list.ContentEquals(RichTree()));
  list = *list.Find("many");
  EXPECT_EQ(list.Find("k19")->int_value(), 19);
  // Scalars keep their exact values through copies: -0.0 is not 0.0.
  EXPECT_FALSE(Tree::Float(-0.0).ContentEquals(Tree::Float(0.0)));
  EXPECT_TRUE(Tree(Tree::Float(-0.0)).ContentEquals(Tree::Float(-0.0)));
  EXPECT_EQ(Tree(Tree::Float(2.5)).float_value(), 2.5);
  EXPECT_TRUE(Tree(Tree::Bool(true)).bool_value());
  EXPECT_FALSE(Tree::Bool(true).ContentEquals(Tree::Int(1)));
}

// A state of 10^6 leaves is a few million nodes: their size is memory.
static_assert(sizeof(Tree) <= 24, "a tree node grew past 24 bytes");

}  // namespace
}  // namespace ckptdb
