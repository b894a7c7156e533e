#include "recycling_allocator.h"

#include <cstdlib>
#include <cstring>

#include "huge_pages.h"

namespace ckptdb {
namespace {

// Each buffer starts with its capacity (0: not recycled); 16 bytes keep
// malloc's alignment for what follows.
constexpr size_t kHeader = 16;

size_t CapacityFor(size_t size) {
  constexpr size_t kStep = 1u << 20;
  return size < RecyclingAllocator::kRecycledSize ? 0 : (size + kStep - 1) / kStep * kStep;
}

// Buffers of a huge page or more get a mapping of their own with huge pages
// advised: a restore's first reads fill fresh buffers, and the kernel's copy
// into them faulted 4 KiB at a time (half of a cold restore's page faults,
// all of them in the reading thread that keeps the disk busy).
bool Mapped(size_t capacity) { return capacity >= kHugePageBytes; }

char* NewBuffer(size_t bytes, size_t capacity) {
  return Mapped(capacity) ? reinterpret_cast<char*>(MapHugePages(bytes))
                          : static_cast<char*>(std::malloc(bytes));
}

void FreeBuffer(char* buffer, size_t capacity) {
  if (Mapped(capacity)) {
    UnmapPages(reinterpret_cast<std::byte*>(buffer), kHeader + capacity);
  } else {
    std::free(buffer);
  }
}

}  // namespace

RecyclingAllocator::~RecyclingAllocator() {
  for (auto& [capacity, buffers] : free_) {
    for (char* buffer : buffers) FreeBuffer(buffer, capacity);
  }
}

void* RecyclingAllocator::Allocate(size_t size) {
  const size_t capacity = CapacityFor(size);
  if (capacity != 0) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto free = free_.find(capacity);
    if (free != free_.end() && !free->second.empty()) {
      char* buffer = free->second.back();
      free->second.pop_back();
      retained_ -= capacity;
      return buffer + kHeader;
    }
  }
  char* buffer = NewBuffer(kHeader + (capacity != 0 ? capacity : size), capacity);
  if (buffer == nullptr) return nullptr;
  std::memcpy(buffer, &capacity, sizeof capacity);
  return buffer + kHeader;
}

void RecyclingAllocator::Deallocate(void* p) {
  char* buffer = static_cast<char*>(p) - kHeader;
  size_t capacity = 0;
  std::memcpy(&capacity, buffer, sizeof capacity);
  if (capacity != 0) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (retained_ + capacity <= retained_limit_) {
      free_[capacity].push_back(buffer);
      retained_ += capacity;
      return;
    }
  }
  FreeBuffer(buffer, capacity);
}

size_t RecyclingAllocator::retained_bytes() {
  std::lock_guard<std::mutex> lock(mutex_);
  return retained_;
}

}  // namespace ckptdb
