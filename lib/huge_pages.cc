#include "huge_pages.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <new>

namespace ckptdb {
namespace {

size_t RoundUp(size_t bytes, size_t unit) { return (bytes + unit - 1) / unit * unit; }

size_t PageBytes() {
  static const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  return page;
}

}  // namespace

void AdviseHugePages(void* data, size_t bytes) {
  const auto begin = reinterpret_cast<uintptr_t>(data);
  const uintptr_t first = (begin + kHugePageBytes - 1) & ~uintptr_t{kHugePageBytes - 1};
  const uintptr_t end = (begin + bytes) & ~uintptr_t{kHugePageBytes - 1};
  if (end > first) ::madvise(reinterpret_cast<void*>(first), end - first, MADV_HUGEPAGE);
}

std::byte* MapHugePages(size_t bytes) {
  // No size this large can be mapped; the sums below would wrap around.
  if (bytes > SIZE_MAX - 2 * kHugePageBytes) return nullptr;
  const size_t length = RoundUp(bytes, PageBytes());
  // Room to start on a huge page boundary; the rest is unmapped again.
  const size_t mapped = length + kHugePageBytes;
  void* mapping = ::mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mapping == MAP_FAILED) return nullptr;
  const auto begin = reinterpret_cast<uintptr_t>(mapping);
  const uintptr_t start = RoundUp(begin, kHugePageBytes);
  if (start > begin) ::munmap(mapping, start - begin);
  const uintptr_t tail = begin + mapped - (start + length);
  if (tail > 0) ::munmap(reinterpret_cast<void*>(start + length), tail);
  AdviseHugePages(reinterpret_cast<void*>(start), length);
  return reinterpret_cast<std::byte*>(start);
}

std::byte* MapPages(size_t bytes) {
  if (bytes > SIZE_MAX - PageBytes()) return nullptr;
  void* mapping = ::mmap(nullptr, RoundUp(bytes, PageBytes()), PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return mapping == MAP_FAILED ? nullptr : static_cast<std::byte*>(mapping);
}

void UnmapPages(std::byte* data, size_t bytes) {
  if (data != nullptr) ::munmap(data, RoundUp(bytes, PageBytes()));
}

ScratchBuffer::~ScratchBuffer() { UnmapPages(data_, size_); }

std::byte* ScratchBuffer::Get(size_t size) {
  if (size <= size_ && data_ != nullptr) return data_;
  const size_t mapped = size == 0 ? 1 : size;
  std::byte* grown = MapHugePages(mapped);
  if (grown == nullptr) throw std::bad_alloc();
  UnmapPages(data_, size_);
  data_ = grown;
  size_ = mapped;
  return data_;
}

}  // namespace ckptdb
