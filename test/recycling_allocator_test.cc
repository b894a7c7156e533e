// The allocator RocksDB reads chunk blocks into: large buffers come back for
// the next read of a similar size, within the bound; small ones are not kept.

#include "recycling_allocator.h"

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "test_util.h"

namespace ckptdb {
namespace {

TEST(RecyclingAllocatorTest, AFreedLargeBufferServesTheNextReadOfItsSize) {
  RecyclingAllocator allocator(64u << 20);
  void* first = allocator.Allocate(3'400'000);
  ASSERT_NE(first, nullptr);
  std::memset(first, 7, 3'400'000);
  allocator.Deallocate(first);
  EXPECT_EQ(allocator.retained_bytes(), 4u << 20);  // rounded up to whole MiBs
  void* second = allocator.Allocate(3'900'000);     // the same 4 MiB class
  EXPECT_EQ(second, first);
  EXPECT_EQ(allocator.retained_bytes(), 0u);
  void* larger = allocator.Allocate(5'000'000);  // another class: a new buffer
  EXPECT_NE(larger, first);
  allocator.Deallocate(second);
  allocator.Deallocate(larger);
  EXPECT_EQ(allocator.retained_bytes(), (4u << 20) + (5u << 20));
}

TEST(RecyclingAllocatorTest, SmallBuffersAreNotKept) {
  RecyclingAllocator allocator(64u << 20);
  void* small = allocator.Allocate(RecyclingAllocator::kRecycledSize - 1);
  ASSERT_NE(small, nullptr);
  allocator.Deallocate(small);
  EXPECT_EQ(allocator.retained_bytes(), 0u);
}

TEST(RecyclingAllocatorTest, KeepsNoMoreThanItsBound) {
  RecyclingAllocator allocator(8u << 20);
  std::vector<void*> buffers;
  for (int i = 0; i < 5; ++i) buffers.push_back(allocator.Allocate(2u << 20));
  for (void* buffer : buffers) allocator.Deallocate(buffer);
  EXPECT_EQ(allocator.retained_bytes(), 8u << 20);  // four kept, the fifth freed
}

TEST(RecyclingAllocatorTest, BuffersKeepMallocAlignment) {
  RecyclingAllocator allocator(64u << 20);
  for (size_t size : {size_t{1}, size_t{100}, size_t{1} << 20, size_t{3'333'333}}) {
    void* buffer = allocator.Allocate(size);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(buffer) % alignof(std::max_align_t), 0u) << size;
    allocator.Deallocate(buffer);
  }
}

// A restore's first reads fill fresh buffers: those of a huge page or more
// are advised huge pages, so that the kernel's copy into them faults 2 MiB
// at a time; smaller ones come from malloc.
TEST(RecyclingAllocatorTest, LargeBuffersAreAdvisedHugePages) {
  RecyclingAllocator allocator(64u << 20);
  void* large = allocator.Allocate(3'400'000);
  ASSERT_NE(large, nullptr);
  EXPECT_NE(testing::MappingFlags(large).find(" hg"), std::string::npos)
      << testing::MappingFlags(large);
  std::memset(large, 1, 3'400'000);
  allocator.Deallocate(large);
  void* small = allocator.Allocate(RecyclingAllocator::kRecycledSize);
  ASSERT_NE(small, nullptr);
  EXPECT_EQ(testing::MappingFlags(small).find(" hg"), std::string::npos)
      << testing::MappingFlags(small);
  allocator.Deallocate(small);
}

}  // namespace
}  // namespace ckptdb
