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

// `bytes` (> 0) of fresh memory, zero as the kernel hands it out, in a
// mapping of its own that starts on a huge page boundary, huge pages
// advised. Null when memory is short. Freed by UnmapPages with the same
// size. For large buffers that are written before they are read: zeroing
// them again (as std::vector and make_shared do) would touch every page
// twice.
std::byte* MapHugePages(size_t bytes);

// The same for buffers below a huge page: a page-aligned mapping of its own,
// nothing advised. Null when memory is short (or the process's mappings are
// at the kernel's limit). Freed by UnmapPages with the same size.
std::byte* MapPages(size_t bytes);

void UnmapPages(std::byte* data, size_t bytes);

// A thread's scratch buffer: grows to the largest size asked for (its
// contents are not kept when it grows) and lives as long as its owner.
class ScratchBuffer {
 public:
  ScratchBuffer() = default;
  ScratchBuffer(const ScratchBuffer&) = delete;
  ScratchBuffer& operator=(const ScratchBuffer&) = delete;
  ~ScratchBuffer();

  // At least `size` bytes, contents unspecified. Throws std::bad_alloc when
  // memory is short.
  std::byte* Get(size_t size);

 private:
  std::byte* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace ckptdb

#endif  // CKPTDB_LIB_HUGE_PAGES_H_
