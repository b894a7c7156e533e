#include "parallel.h"

#include <algorithm>
#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

namespace ckptdb {

size_t WorkerThreads() { return std::max(1u, std::thread::hardware_concurrency()); }

Status ParallelFor(size_t count, size_t threads, const std::function<Status(size_t)>& fn) {
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex error_mutex;
  Status first_error;
  auto work = [&] {
    for (size_t i = next++; i < count && !failed.load(std::memory_order_relaxed); i = next++) {
      Status status = fn(i);
      if (!status.ok()) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!failed.exchange(true)) first_error = status;
      }
    }
  };
  const size_t helpers = std::min(threads, count) > 0 ? std::min(threads, count) - 1 : 0;
  std::vector<std::jthread> pool;
  pool.reserve(helpers);
  for (size_t t = 0; t < helpers; ++t) pool.emplace_back(work);
  work();        // the calling thread works too
  pool.clear();  // joins
  return first_error;
}

}  // namespace ckptdb
