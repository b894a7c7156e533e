// StagingPool: memory where an asynchronous save keeps copies of the chunks
// it still has to write, so the caller may change its buffers as soon as Save
// returns. Slots are allocated when first needed, up to a fixed count, then
// kept and reused by every later save; each is pre-faulted when allocated
// (first touch of fresh pages costs more than the copy itself), with
// transparent huge pages where the kernel allows. When all slots are taken,
// Acquire waits for the background writer to release one: memory stays
// bounded however large the state is.
//
// Thread-safe.

#ifndef CKPTDB_LIB_STAGING_POOL_H_
#define CKPTDB_LIB_STAGING_POOL_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "ckptdb/status.h"
#include "mutex.h"

namespace ckptdb {

class StagingPool {
 public:
  // Memory for one slot of `bytes` bytes, aligned to `alignment`, released
  // with std::free; nullptr when there is none.
  using Allocator = std::function<void*(size_t alignment, size_t bytes)>;

  // At most `max_slots` buffers of `slot_bytes` each, from `allocate`
  // (default: std::aligned_alloc; tests make it fail).
  StagingPool(size_t slot_bytes, size_t max_slots, Allocator allocate = nullptr);
  ~StagingPool();
  StagingPool(const StagingPool&) = delete;
  StagingPool& operator=(const StagingPool&) = delete;

  size_t slot_bytes() const { return slot_bytes_; }
  size_t max_slots() const { return max_slots_; }

  // A free slot's index, allocating one while below max_slots, else waiting
  // for one to be released. InvalidArgument when memory cannot be had.
  Result<size_t> Acquire();
  // Whether Acquire would have to wait.
  bool Exhausted();
  // Slots acquired and not yet released.
  size_t SlotsInUse();
  // A slot if one can be had without waiting; nullopt otherwise.
  Result<std::optional<size_t>> TryAcquire();
  void Release(size_t slot);
  std::byte* data(size_t slot);

 private:
  const size_t slot_bytes_;
  const size_t max_slots_;
  const Allocator allocate_;
  Mutex mu_;
  CondVar released_{&mu_};
  std::vector<std::byte*> buffers_ GUARDED_BY(mu_);
  std::vector<size_t> free_ GUARDED_BY(mu_);
};

}  // namespace ckptdb

#endif  // CKPTDB_LIB_STAGING_POOL_H_
