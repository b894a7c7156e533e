// Transparent huge pages for large buffers.

#ifndef CKPTDB_LIB_HUGE_PAGES_H_
#define CKPTDB_LIB_HUGE_PAGES_H_

#include <cstddef>

namespace ckptdb {

inline constexpr size_t kHugePageBytes = size_t{2} << 20;

// Asks the kernel to back the whole huge pages inside [data, data + bytes)
// with transparent huge pages: a large buffer touched for the first time
// then faults in 2 MiB at a time instead of 4 KiB (on a VM each fault also
// costs the hypervisor's work). Advice only: failing, or on a kernel
// without them, it costs speed, never correctness. A buffer holding no
// whole huge page is left alone.
void AdviseHugePages(void* data, size_t bytes);

}  // namespace ckptdb

#endif  // CKPTDB_LIB_HUGE_PAGES_H_
