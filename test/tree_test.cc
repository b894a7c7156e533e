// Tree: building a state by paths (SetPath, FromPaths), with the maps on the
// way created and nothing changed by a refused path.

#include <gtest/gtest.h>

#include "ckptdb/tree.h"
#include "test_util.h"

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

}  // namespace
}  // namespace ckptdb
