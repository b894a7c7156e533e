#include "tensor_arena.h"

#include <new>
#include <string>
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
    // No mapping to be had (the process may be at the kernel's limit of
    // mappings): a buffer of its own, as Tensor::Allocate would make.
    if (block == nullptr) return Tensor::Allocate(dtype, std::move(shape));
    try {
      block_ = std::shared_ptr<std::byte[]>(block, [](std::byte* p) { UnmapPages(p, kBlockBytes); });
    } catch (const std::bad_alloc&) {  // the deleter has unmapped it
      return Status::InvalidArgument("cannot allocate a tensor of " + std::to_string(bytes) +
                                     " bytes");
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
