// TensorArena: the owned tensors of one restore.

#ifndef CKPTDB_LIB_TENSOR_ARENA_H_
#define CKPTDB_LIB_TENSOR_ARENA_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "ckptdb/status.h"
#include "ckptdb/tensor.h"

namespace ckptdb {

// Allocates the owned tensors of one restore. Tensors below a huge page are
// packed, in the order asked for, into blocks of kBlockBytes mapped with
// transparent huge pages advised (zero, as the kernel hands them out):
// decoding into them faults in 2 MiB at a time. Each in a mapping of its
// own, the 4 KiB faults of a small transformer's tensors (1 KiB to 1 MiB)
// were most of a restore's CPU. Larger tensors get their own mapping
// (Tensor::Allocate).
//
// A tensor keeps its block alive: a block is unmapped with the last tensor
// in it, so a caller that keeps a few tensors of a restored state keeps
// their blocks (at most kBlockBytes each). Pages of a block nothing was
// placed in are never touched, so never backed by memory.
//
// Not thread-safe: one restore's thread allocates its tensors.
class TensorArena {
 public:
  static constexpr size_t kBlockBytes = size_t{8} << 20;
  // Where a tensor starts inside a block.
  static constexpr size_t kAlignment = 64;

  // A zero-filled owned tensor, as Tensor::Allocate makes: InvalidArgument
  // for a bad shape, or when memory is short.
  Result<Tensor> Allocate(DType dtype, std::vector<int64_t> shape);

 private:
  std::shared_ptr<std::byte[]> block_;  // the block being filled, or null
  size_t used_ = 0;                     // its bytes handed out
};

}  // namespace ckptdb

#endif  // CKPTDB_LIB_TENSOR_ARENA_H_
