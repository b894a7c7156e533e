#include "huge_pages.h"

#include <sys/mman.h>

#include <cstdint>

namespace ckptdb {

void AdviseHugePages(void* data, size_t bytes) {
  const auto begin = reinterpret_cast<uintptr_t>(data);
  const uintptr_t first = (begin + kHugePageBytes - 1) & ~uintptr_t{kHugePageBytes - 1};
  const uintptr_t end = (begin + bytes) & ~uintptr_t{kHugePageBytes - 1};
  if (end > first) ::madvise(reinterpret_cast<void*>(first), end - first, MADV_HUGEPAGE);
}

}  // namespace ckptdb
