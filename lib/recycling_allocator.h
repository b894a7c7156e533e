// RecyclingAllocator: the memory RocksDB reads chunk blocks into.
//
// RocksDB reads each block it does not cache into a buffer of its own and
// frees it after use: for megabyte chunks that is fresh memory from the
// kernel every time, faulted in 4 KiB at a time, which costs more than
// copying the bytes into it (a profile of restores showed most of their time
// in the kernel's copy into such buffers). This allocator keeps large
// buffers when they are freed and hands them out again, up to a bound.
//
// Thread-safe.

#ifndef CKPTDB_LIB_RECYCLING_ALLOCATOR_H_
#define CKPTDB_LIB_RECYCLING_ALLOCATOR_H_

#include <rocksdb/memory_allocator.h>

#include <cstddef>
#include <map>
#include <mutex>
#include <vector>

namespace ckptdb {

class RecyclingAllocator : public rocksdb::MemoryAllocator {
 public:
  // Requests of at least kRecycledSize bytes get whole MiBs, kept when freed
  // while the kept buffers total at most `retained_bytes`.
  static constexpr size_t kRecycledSize = 256u << 10;
  explicit RecyclingAllocator(size_t retained_bytes) : retained_limit_(retained_bytes) {}
  ~RecyclingAllocator() override;

  const char* Name() const override { return "ckptdb.RecyclingAllocator"; }
  void* Allocate(size_t size) override;
  void Deallocate(void* p) override;

  // Bytes of freed buffers kept for reuse.
  size_t retained_bytes();

 private:
  const size_t retained_limit_;
  std::mutex mutex_;
  std::map<size_t, std::vector<char*>> free_;  // by capacity
  size_t retained_ = 0;
};

}  // namespace ckptdb

#endif  // CKPTDB_LIB_RECYCLING_ALLOCATOR_H_
