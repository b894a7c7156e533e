// Mutex, MutexLock and CondVar: std::mutex and std::condition_variable with
// clang's thread-safety annotations, so that "guarded by mu_" and "called
// with mu_ held" are checked at compile time (scripts/thread_safety.sh runs
// clang -Wthread-safety over lib/). With GCC the annotations are empty.

#ifndef CKPTDB_LIB_MUTEX_H_
#define CKPTDB_LIB_MUTEX_H_

#include <condition_variable>
#include <mutex>

#if defined(__clang__)
#define CKPTDB_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define CKPTDB_THREAD_ANNOTATION(x)
#endif

#define CAPABILITY(x) CKPTDB_THREAD_ANNOTATION(capability(x))
#define SCOPED_CAPABILITY CKPTDB_THREAD_ANNOTATION(scoped_lockable)
#define GUARDED_BY(x) CKPTDB_THREAD_ANNOTATION(guarded_by(x))
#define REQUIRES(...) CKPTDB_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define EXCLUDES(...) CKPTDB_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#define ACQUIRE(...) CKPTDB_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define RELEASE(...) CKPTDB_THREAD_ANNOTATION(release_capability(__VA_ARGS__))

namespace ckptdb {

class CondVar;

class CAPABILITY("mutex") Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void Lock() ACQUIRE() { mu_.lock(); }
  void Unlock() RELEASE() { mu_.unlock(); }

 private:
  friend class CondVar;
  std::mutex mu_;
};

// Holds `mu` for its lifetime.
class SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ACQUIRE(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() RELEASE() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};

// A condition variable bound to one Mutex. Wait is called with the mutex
// held and holds it again when it returns; callers loop on their condition
// (`while (!ready_) cv_.Wait();`), which the analysis can check.
class CondVar {
 public:
  explicit CondVar(Mutex* mu) : mu_(mu) {}
  CondVar(const CondVar&) = delete;
  CondVar& operator=(const CondVar&) = delete;

  // Not annotated: the analysis cannot tie this mutex to the caller's
  // member of the same name (LevelDB's port::CondVar does the same).
  void Wait() {
    std::unique_lock<std::mutex> lock(mu_->mu_, std::adopt_lock);
    cv_.wait(lock);
    lock.release();  // the caller still holds the mutex
  }
  void Signal() { cv_.notify_one(); }
  void SignalAll() { cv_.notify_all(); }

 private:
  Mutex* const mu_;
  std::condition_variable cv_;
};

}  // namespace ckptdb

#endif  // CKPTDB_LIB_MUTEX_H_
