// Buffers from their own mappings with huge pages advised: aligned, zero,
// writable to their last byte, advised only where a whole huge page fits;
// scratch buffers that grow.

#include "huge_pages.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <new>
#include <string>

#include "test_util.h"

namespace ckptdb {
namespace {

using testing::MappingFlags;

bool HugePagesAdvised(const void* address) {
  return (" " + MappingFlags(address) + " ").find(" hg ") != std::string::npos;
}

TEST(HugePagesTest, AMappedBufferStartsOnAHugePageAndIsZero) {
  for (size_t bytes : {size_t{1}, size_t{4096}, kHugePageBytes, 3 * kHugePageBytes + 12345}) {
    std::byte* data = MapHugePages(bytes);
    ASSERT_NE(data, nullptr) << bytes;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(data) % kHugePageBytes, 0u) << bytes;
    for (size_t i = 0; i < bytes; i += 997) ASSERT_EQ(data[i], std::byte{0}) << bytes << " " << i;
    EXPECT_EQ(data[bytes - 1], std::byte{0});
    std::memset(data, 0x5a, bytes);  // every byte writable
    EXPECT_EQ(data[bytes - 1], std::byte{0x5a});
    UnmapPages(data, bytes);
  }
}

TEST(HugePagesTest, WholeHugePagesAreAdvisedAndUnmappingReturnsTheRange) {
  const size_t bytes = 2 * kHugePageBytes;
  std::byte* data = MapHugePages(bytes);
  ASSERT_NE(data, nullptr);
  EXPECT_TRUE(HugePagesAdvised(data)) << MappingFlags(data);
  EXPECT_TRUE(HugePagesAdvised(data + bytes - 1)) << MappingFlags(data + bytes - 1);
  // The over-allocation made for alignment is not left mapped past the end
  // (what lies further may be another mapping).
  EXPECT_EQ(MappingFlags(data + bytes), "");
  UnmapPages(data, bytes);
  EXPECT_EQ(MappingFlags(data), "");
}

TEST(HugePagesTest, ABufferSmallerThanAHugePageIsNotAdvised) {
  std::byte* data = MapHugePages(kHugePageBytes / 2);
  ASSERT_NE(data, nullptr);
  EXPECT_FALSE(HugePagesAdvised(data)) << MappingFlags(data);
  UnmapPages(data, kHugePageBytes / 2);
}

TEST(HugePagesTest, APageMappingIsZeroWritableNotAdvisedAndUnmappedWhole) {
  for (size_t bytes : {size_t{1}, size_t{4096}, size_t{65536 + 123}, kHugePageBytes / 2}) {
    std::byte* data = MapPages(bytes);
    ASSERT_NE(data, nullptr) << bytes;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(data) % 4096, 0u) << bytes;
    for (size_t i = 0; i < bytes; i += 997) ASSERT_EQ(data[i], std::byte{0}) << bytes << " " << i;
    EXPECT_EQ(data[bytes - 1], std::byte{0});
    std::memset(data, 0x5a, bytes);  // every byte writable
    EXPECT_EQ(data[bytes - 1], std::byte{0x5a});
    EXPECT_FALSE(HugePagesAdvised(data)) << MappingFlags(data);
    UnmapPages(data, bytes);
    EXPECT_EQ(MappingFlags(data), "") << bytes;
  }
}

TEST(HugePagesTest, ASizeNoMappingCanHoldIsRefusedNotWrappedAround) {
  EXPECT_EQ(MapHugePages(SIZE_MAX), nullptr);
  EXPECT_EQ(MapHugePages(SIZE_MAX - kHugePageBytes), nullptr);
  EXPECT_EQ(MapHugePages(size_t{1} << 62), nullptr);  // more than any machine has
  EXPECT_EQ(MapPages(SIZE_MAX), nullptr);
  EXPECT_EQ(MapPages(size_t{1} << 62), nullptr);
  ScratchBuffer scratch;
  EXPECT_THROW(scratch.Get(SIZE_MAX), std::bad_alloc);
}

TEST(HugePagesTest, AScratchBufferKeepsItsBufferUntilAskedForMore) {
  ScratchBuffer scratch;
  std::byte* small = scratch.Get(1000);
  ASSERT_NE(small, nullptr);
  std::memset(small, 1, 1000);
  EXPECT_EQ(scratch.Get(10), small);
  EXPECT_EQ(scratch.Get(1000), small);
  std::byte* large = scratch.Get(3 * kHugePageBytes);
  ASSERT_NE(large, nullptr);
  std::memset(large, 2, 3 * kHugePageBytes);
  EXPECT_TRUE(HugePagesAdvised(large));
  EXPECT_EQ(scratch.Get(5), large);
  EXPECT_NE(scratch.Get(0), nullptr);
}

}  // namespace
}  // namespace ckptdb
