// Shared pieces of the benchmarks: scratch directories, training-like float
// states, and sizes on disk.

#ifndef CKPTDB_BENCH_BENCH_UTIL_H_
#define CKPTDB_BENCH_BENCH_UTIL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "ckptdb/ckptdb.h"

namespace ckptdb::bench {

// A fresh directory under $CKPTDB_BENCH_DIR (default: the system temp dir),
// removed on destruction.
class ScratchDir {
 public:
  ScratchDir();
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Tensors with the values of trained weights: a small MLP is trained with Adam
// on a generated regression task (once per process); its weights and Adam
// moments are then replicated to `bytes`, each copy's elements scaled by a
// random factor in [0.75, 1.25], so that mantissas are as unpredictable as a
// real model's while signs and magnitudes keep the trained distribution.
// `dtype` is kFloat32 or kBFloat16 (rounded from the float32 values).
// Tensors of `tensor_bytes`, named "layer_NNN/kernel".
class TrainedState {
 public:
  TrainedState(uint64_t bytes, DType dtype, uint64_t seed, size_t tensor_bytes = 4u << 20);
  // Tensors of the sizes `tensor_bytes` lists, in turn (rounded down to whole
  // elements), as many as fit in `bytes` (at least one).
  TrainedState(uint64_t bytes, DType dtype, uint64_t seed, const std::vector<size_t>& tensor_bytes);

  // Moves the values of tensors [first, first + count) a little, as a
  // training step would; `step` seeds it.
  void Train(size_t first, size_t count, uint64_t step);

  Tree View();
  uint64_t bytes() const;
  size_t tensor_count() const { return buffers_.size(); }
  DType dtype() const { return dtype_; }

 private:
  DType dtype_;
  std::vector<std::vector<std::byte>> buffers_;
};

uint64_t DirectoryBytes(const std::string& dir);

// The code a profile should cover (scripts/profile.sh): when
// $CKPTDB_PERF_CONTROL names the control FIFO of a `perf record -D -1
// --control fifo:...` running this process, sampling is enabled for the
// object's lifetime and disabled again after. Without it, does nothing.
class ProfiledSection {
 public:
  ProfiledSection();
  ~ProfiledSection();
  ProfiledSection(const ProfiledSection&) = delete;
  ProfiledSection& operator=(const ProfiledSection&) = delete;
};

// Drops the page cache of every file under `path` (a file or a directory),
// so the next read comes from the device. Clean pages only: call after the
// data was synced.
void DropPageCache(const std::string& path);

// Bytes this process has caused to be written to storage (/proc/self/io
// write_bytes), 0 where unavailable.
uint64_t DeviceBytesWritten();

}  // namespace ckptdb::bench

#endif  // CKPTDB_BENCH_BENCH_UTIL_H_
