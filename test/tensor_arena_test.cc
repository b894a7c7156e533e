// TensorArena: zero, writable, disjoint tensors packed into huge-page blocks
// that live as long as any tensor in them.

#include "tensor_arena.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "huge_pages.h"
#include "test_util.h"

namespace ckptdb {
namespace {

using testing::MappingFlags;

TEST(TensorArenaTest, TensorsAreZeroWritableAlignedAndDisjoint) {
  TensorArena arena;
  std::vector<Tensor> tensors;
  // Sizes that fill a block and spill into the next, and a large one.
  for (int64_t bytes : {int64_t{1}, int64_t{0}, int64_t{1000}, int64_t{(1 << 20) + 3},
                        int64_t{65536}, int64_t{(2 << 20) - 1}, int64_t{2 << 20},
                        int64_t{(1 << 20) + 5}, int64_t{(1 << 20) + 7}, int64_t{(1 << 20) + 9},
                        int64_t{(1 << 20) + 11}, int64_t{(1 << 20) + 13}}) {
    Tensor tensor = arena.Allocate(DType::kInt8, {bytes}).value();
    ASSERT_EQ(tensor.byte_size(), static_cast<uint64_t>(bytes));
    EXPECT_TRUE(tensor.owns_data());
    EXPECT_TRUE(tensor.writable());
    ASSERT_NE(tensor.data(), nullptr);
    if (bytes > 0) {
      EXPECT_EQ(reinterpret_cast<uintptr_t>(tensor.data()) % TensorArena::kAlignment, 0u) << bytes;
    }
    for (int64_t i = 0; i < bytes; ++i) ASSERT_EQ(tensor.data()[i], std::byte{0}) << bytes << " " << i;
    tensors.push_back(tensor);
  }
  // Each tensor filled with its own byte: a tensor that overlapped another
  // would show the other's byte.
  for (size_t t = 0; t < tensors.size(); ++t) {
    std::memset(tensors[t].mutable_data(), static_cast<int>(t + 1), tensors[t].byte_size());
  }
  for (size_t t = 0; t < tensors.size(); ++t) {
    for (uint64_t i = 0; i < tensors[t].byte_size(); i += 4099) {
      ASSERT_EQ(tensors[t].data()[i], std::byte(t + 1)) << t << " " << i;
    }
    if (tensors[t].byte_size() > 0) {
      ASSERT_EQ(tensors[t].data()[tensors[t].byte_size() - 1], std::byte(t + 1)) << t;
    }
  }
}

TEST(TensorArenaTest, SmallTensorsShareAHugePageBlockThatOutlivesTheArena) {
  Tensor kept;
  const std::byte* first = nullptr;
  {
    TensorArena arena;
    Tensor a = arena.Allocate(DType::kFloat32, {1024}).value();
    Tensor b = arena.Allocate(DType::kFloat32, {65536}).value();
    first = a.data();
    EXPECT_EQ(b.data(), a.data() + 4096);  // packed, 64-byte aligned
    EXPECT_EQ(reinterpret_cast<uintptr_t>(a.data()) % kHugePageBytes, 0u);
    EXPECT_NE((" " + MappingFlags(a.data()) + " ").find(" hg "), std::string::npos)
        << MappingFlags(a.data());
    kept = b;
  }
  // The arena and `a` are gone; `b` keeps the block mapped and its bytes.
  EXPECT_NE(MappingFlags(first), "");
  kept.MutableValues<float>().value()[65535] = 2.5f;
  EXPECT_EQ(kept.Values<float>().value()[65535], 2.5f);
  kept = Tensor();
  EXPECT_EQ(MappingFlags(first), "");  // the last tensor unmapped the block
}

TEST(TensorArenaTest, ABadShapeIsRefusedAsAllocateRefusesIt) {
  TensorArena arena;
  EXPECT_FALSE(arena.Allocate(DType::kFloat32, {-1}).ok());
  EXPECT_FALSE(arena.Allocate(DType::kFloat32, {INT64_MAX, 2}).ok());
  EXPECT_TRUE(arena.Allocate(DType::kFloat32, {3, 0}).ok());
}

}  // namespace
}  // namespace ckptdb
