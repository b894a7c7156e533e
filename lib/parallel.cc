#include "parallel.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace ckptdb {
namespace {

// A process-wide pool of WorkerThreads() - 1 threads (the caller of
// ParallelFor is the last worker). Threads live as long as the process, so
// their thread-local zstd contexts and scratch buffers are reused.
class WorkerPool {
 public:
  static WorkerPool& Get() {
    static WorkerPool* pool = new WorkerPool(WorkerThreads() - 1);  // never destroyed
    return *pool;
  }

  void Submit(std::function<void()> task) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      tasks_.push_back(std::move(task));
    }
    ready_.notify_one();
  }

 private:
  explicit WorkerPool(size_t threads) {
    for (size_t i = 0; i < threads; ++i) std::thread([this] { Run(); }).detach();
  }

  void Run() {
    for (;;) {
      std::function<void()> task;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        ready_.wait(lock, [&] { return !tasks_.empty(); });
        task = std::move(tasks_.front());
        tasks_.pop_front();
      }
      task();
    }
  }

  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> tasks_;
};

// One ParallelFor call, shared with the helpers it asked for. A helper that
// starts after the caller finished finds `closed` and leaves at once, so the
// caller never waits for a helper stuck behind other work in the queue.
struct Loop {
  size_t count = 0;
  std::function<Status(size_t)> fn;
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex mutex;
  std::condition_variable idle;
  size_t active = 0;
  bool closed = false;
  Status first_error;

  void Work() {
    for (size_t i = next++; i < count && !failed.load(std::memory_order_relaxed); i = next++) {
      Status status = fn(i);
      if (!status.ok()) {
        std::lock_guard<std::mutex> lock(mutex);
        if (!failed.exchange(true)) first_error = status;
      }
    }
  }
};

}  // namespace

size_t WorkerThreads() {
  // Asked once: glibc reads it from /sys at every call (about 10 us), and
  // a restore of many small tensors calls ParallelFor often.
  static const size_t threads = std::max(1u, std::thread::hardware_concurrency());
  return threads;
}

Status ParallelFor(size_t count, size_t threads, const std::function<Status(size_t)>& fn) {
  auto loop = std::make_shared<Loop>();
  loop->count = count;
  loop->fn = fn;
  const size_t helpers = std::min({threads, count, WorkerThreads()}) > 0
                             ? std::min({threads, count, WorkerThreads()}) - 1
                             : 0;
  for (size_t t = 0; t < helpers; ++t) {
    WorkerPool::Get().Submit([loop] {
      {
        std::lock_guard<std::mutex> lock(loop->mutex);
        if (loop->closed) return;
        ++loop->active;
      }
      loop->Work();
      std::lock_guard<std::mutex> lock(loop->mutex);
      if (--loop->active == 0) loop->idle.notify_all();
    });
  }
  loop->Work();  // the calling thread works too
  std::unique_lock<std::mutex> lock(loop->mutex);
  loop->closed = true;
  loop->idle.wait(lock, [&] { return loop->active == 0; });
  return loop->first_error;
}

}  // namespace ckptdb
