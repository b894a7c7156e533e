#include "recycling_allocator.h"

#include <cstdlib>
#include <cstring>

namespace ckptdb {
namespace {

// Each buffer starts with its capacity (0: not recycled); 16 bytes keep
// malloc's alignment for what follows.
constexpr size_t kHeader = 16;

size_t CapacityFor(size_t size) {
  constexpr size_t kStep = 1u << 20;
  return size < RecyclingAllocator::kRecycledSize ? 0 : (size + kStep - 1) / kStep * kStep;
}

}  // namespace

RecyclingAllocator::~RecyclingAllocator() {
  for (auto& [capacity, buffers] : free_) {
    for (char* buffer : buffers) std::free(buffer);
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
  auto* buffer = static_cast<char*>(std::malloc(kHeader + (capacity != 0 ? capacity : size)));
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
  std::free(buffer);
}

size_t RecyclingAllocator::retained_bytes() {
  std::lock_guard<std::mutex> lock(mutex_);
  return retained_;
}

}  // namespace ckptdb
