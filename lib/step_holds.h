// Step holds: how a reader process keeps the writer's retention from deleting
// the step it is reading. They live as files in <workdir>/holds/:
//
//   holds/retention.lock        coordination lock (flock)
//   holds/step-<S>-<pid>-<n>    one hold on step S; its owner keeps a shared
//                               flock on it for as long as the hold lives
//
// A reader takes the coordination lock shared, creates and locks its hold
// file, checks (after catching up with the writer) that the step still
// exists, then drops the coordination lock. The writer takes the coordination
// lock exclusively from listing holds until its manifest deletions are
// durable. So either the writer sees the hold and defers the step, or the
// reader sees the step gone and reports NotFound: a held step is never
// deleted under a reader. A hold file whose lock can be taken exclusively
// belongs to a process that died (the kernel drops flocks with their
// process): the writer removes it. Holds need a local file system with flock.

#ifndef CKPTDB_LIB_STEP_HOLDS_H_
#define CKPTDB_LIB_STEP_HOLDS_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>

#include "ckptdb/status.h"

namespace ckptdb {

// An open, locked file; closing it releases the lock.
class LockedFile {
 public:
  LockedFile() = default;
  LockedFile(int fd, std::string path, bool remove_on_release)
      : fd_(fd), path_(std::move(path)), remove_on_release_(remove_on_release) {}
  LockedFile(LockedFile&& other) noexcept;
  LockedFile& operator=(LockedFile&& other) noexcept;
  ~LockedFile() { Release(); }
  void Release();
  bool held() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
  std::string path_;
  bool remove_on_release_ = false;
};

// Takes an exclusive flock on `path` (created 0600 if missing) without
// waiting: Busy while another open file description holds it.
Result<LockedFile> TryLockExclusive(const std::string& path);

// Reader side: holds `step`, after `still_exists` (called under the
// coordination lock) confirms it. NotFound when it does not.
Result<LockedFile> AcquireStepHold(const std::string& workdir, int64_t step,
                                   const std::function<Status()>& still_exists);

// Writer side: the coordination lock, held while the caller lists holds and
// deletes manifests. Never waits: Busy while a reader is taking a hold (the
// writer then retries at its next retention instead of stalling training).
Result<LockedFile> LockRetention(const std::string& workdir);

// Writer side, under LockRetention: the steps some live process holds.
// Removes the hold files of dead processes.
Result<std::set<int64_t>> HeldSteps(const std::string& workdir);

}  // namespace ckptdb

#endif  // CKPTDB_LIB_STEP_HOLDS_H_
