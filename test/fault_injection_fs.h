// A RocksDB file system that fails on command: I/O errors or "no space" on
// writes and syncs of chosen files, I/O errors on reads of chosen files, and
// power loss (every file keeps only what it had synced). Files are matched by a substring of their path. A
// write whose sync failed is kept (it may reach the disk anyway), except for
// the MANIFEST (see AfterSync).

#ifndef CKPTDB_TEST_FAULT_INJECTION_FS_H_
#define CKPTDB_TEST_FAULT_INJECTION_FS_H_

#include <rocksdb/env.h>
#include <rocksdb/file_system.h>

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace ckptdb::testing {

class FaultInjectionFs : public rocksdb::FileSystemWrapper {
 public:
  enum class Fault { kIOError, kNoSpace };

  FaultInjectionFs();

  static const char* kClassName() { return "FaultInjectionFs"; }
  const char* Name() const override { return kClassName(); }

  // An Env over this file system, for the store to use.
  rocksdb::Env* env() { return env_.get(); }

  // From now on, writes and syncs of files whose path contains `pattern`
  // fail with `fault`, after `successes` more of them succeed.
  void Arm(const std::string& pattern, Fault fault, int successes = 0);
  void Disarm();
  // From now on, reads of files whose path contains `pattern` (files opened
  // for random access, as table files are) fail with an I/O error, after
  // `successes` more of them succeed.
  void ArmReads(const std::string& pattern, int successes = 0);
  void DisarmReads();
  int injected() const { return injected_; }

  // The next write to a file whose path contains `pattern` blocks until
  // Resume(); WaitUntilPaused() returns once one does.
  void PauseNextWrite(const std::string& pattern);
  void WaitUntilPaused();
  void Resume();

  // Power loss: each file written through this file system is cut back to
  // the size it had at its last sync (files never synced become empty).
  void DropUnsyncedData();

  rocksdb::IOStatus NewWritableFile(const std::string& path, const rocksdb::FileOptions& options,
                                    std::unique_ptr<rocksdb::FSWritableFile>* result,
                                    rocksdb::IODebugContext* debug) override;
  rocksdb::IOStatus ReopenWritableFile(const std::string& path, const rocksdb::FileOptions& options,
                                       std::unique_ptr<rocksdb::FSWritableFile>* result,
                                       rocksdb::IODebugContext* debug) override;

  rocksdb::IOStatus NewRandomAccessFile(const std::string& path,
                                        const rocksdb::FileOptions& options,
                                        std::unique_ptr<rocksdb::FSRandomAccessFile>* result,
                                        rocksdb::IODebugContext* debug) override;

  // Called by the files: OK, or the fault to report for `path`.
  rocksdb::IOStatus Check(const std::string& path);
  rocksdb::IOStatus CheckRead(const std::string& path);
  void Wrote(const std::string& path, uint64_t size);
  // A sync finished; a failed MANIFEST sync loses its unsynced tail (see
  // the comment in the .cc).
  void AfterSync(const std::string& path, bool succeeded);

 private:
  std::unique_ptr<rocksdb::Env> env_;
  std::mutex mutex_;
  std::string pattern_;
  Fault fault_ = Fault::kIOError;
  int successes_ = 0;
  bool armed_ = false;
  std::string read_pattern_;
  int read_successes_ = 0;
  bool reads_armed_ = false;
  std::atomic<int> injected_{0};
  std::condition_variable pause_changed_;
  std::string pause_pattern_;
  bool pause_armed_ = false;
  bool paused_ = false;
  struct Sizes {
    uint64_t written = 0;
    uint64_t synced = 0;
  };
  std::map<std::string, Sizes> files_;
};

}  // namespace ckptdb::testing

#endif  // CKPTDB_TEST_FAULT_INJECTION_FS_H_
