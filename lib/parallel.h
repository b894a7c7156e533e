// ParallelFor: runs fn(0) .. fn(count - 1) on up to `threads` threads and
// returns the first error (by index order of discovery; the remaining tasks
// are skipped once one fails).

#ifndef CKPTDB_LIB_PARALLEL_H_
#define CKPTDB_LIB_PARALLEL_H_

#include <cstddef>
#include <functional>

#include "ckptdb/status.h"

namespace ckptdb {

// The number of threads ckptdb uses for CPU-bound work: the hardware's.
size_t WorkerThreads();

Status ParallelFor(size_t count, size_t threads, const std::function<Status(size_t)>& fn);

}  // namespace ckptdb

#endif  // CKPTDB_LIB_PARALLEL_H_
