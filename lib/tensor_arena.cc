#include "tensor_arena.h"

#include <new>
#include <utility>

#include "huge_pages.h"

namespace ckptdb {

Result<Tensor> TensorArena::Allocate(DType dtype, std::vector<int64_t> shape) {
  Result<Tensor> shaped = Tensor::Shaped(dtype, shape);
  if (!shaped.ok()) return shaped;
  const uint64_t bytes = shaped->byte_size_;
  if (bytes == 0 || bytes >= kHugePageBytes) return Tensor::Allocate(dtype, std::move(shape));
  size_t start = (used_ + kAlignment - 1) / kAlignment * kAlignment;
  if (block_ == nullptr || start + bytes > kBlockBytes) {
    std::byte* block = MapHugePages(kBlockBytes);
    // No mapping, or no memory for its owner (the deleter has then unmapped
    // it; the process may be at the kernel's limit of mappings): a buffer of
    // its own, or Tensor::Allocate's error.
    if (block == nullptr) return Tensor::Allocate(dtype, std::move(shape));
    try {
      block_ = std::shared_ptr<std::byte[]>(block, [](std::byte* p) { UnmapPages(p, kBlockBytes); });
    } catch (const std::bad_alloc&) {
      return Tensor::Allocate(dtype, std::move(shape));
    }
    start = 0;
  }
  Tensor& tensor = *shaped;
  // Shares the block's ownership, pointing at this tensor's bytes.
  tensor.buffer_ = std::shared_ptr<std::byte[]>(block_, block_.get() + start);
  tensor.writable_ = tensor.owned_ = true;
  used_ = start + bytes;
  return shaped;
}

}  // namespace ckptdb
