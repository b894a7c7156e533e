#include "staging_pool.h"

#include <cstdlib>
#include <cstring>
#include <string>

#include "huge_pages.h"

namespace ckptdb {

StagingPool::StagingPool(size_t slot_bytes, size_t max_slots, Allocator allocate)
    : slot_bytes_(slot_bytes),
      max_slots_(max_slots),
      allocate_(allocate ? std::move(allocate) : Allocator([](size_t alignment, size_t bytes) {
        return std::aligned_alloc(alignment, bytes);
      })) {
  buffers_.reserve(max_slots);
  free_.reserve(max_slots);
}

StagingPool::~StagingPool() {
  for (std::byte* buffer : buffers_) std::free(buffer);
}

Result<std::optional<size_t>> StagingPool::TryAcquire() {
  if (Exhausted()) return std::optional<size_t>();
  Result<size_t> slot = Acquire();  // cannot wait: only the caller takes slots
  if (!slot.ok()) return slot.status();
  return std::optional<size_t>(*slot);
}

Result<size_t> StagingPool::Acquire() {
  MutexLock lock(&mu_);
  if (free_.empty() && buffers_.size() < max_slots_) {
    const size_t bytes = (slot_bytes_ + kHugePageBytes - 1) / kHugePageBytes * kHugePageBytes;
    auto* buffer = static_cast<std::byte*>(allocate_(kHugePageBytes, bytes));
    if (buffer == nullptr) {
      return Status::InvalidArgument("cannot allocate " + std::to_string(bytes) +
                                     " bytes of staging memory");
    }
    AdviseHugePages(buffer, bytes);
    std::memset(buffer, 0, bytes);  // fault the pages in now
    buffers_.push_back(buffer);
    return buffers_.size() - 1;
  }
  while (free_.empty()) released_.Wait();
  const size_t slot = free_.back();
  free_.pop_back();
  return slot;
}

bool StagingPool::Exhausted() {
  MutexLock lock(&mu_);
  return free_.empty() && buffers_.size() >= max_slots_;
}

size_t StagingPool::SlotsInUse() {
  MutexLock lock(&mu_);
  return buffers_.size() - free_.size();
}

void StagingPool::Release(size_t slot) {
  {
    MutexLock lock(&mu_);
    free_.push_back(slot);
  }
  released_.Signal();
}

std::byte* StagingPool::data(size_t slot) {
  MutexLock lock(&mu_);
  return buffers_[slot];
}

}  // namespace ckptdb
