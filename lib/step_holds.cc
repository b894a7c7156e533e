#include "step_holds.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>

namespace ckptdb {
namespace fs = std::filesystem;
namespace {

constexpr char kHoldsDir[] = "holds";
constexpr char kRetentionLock[] = "retention.lock";
constexpr char kHoldPrefix[] = "step-";

std::string HoldsDir(const std::string& workdir) {
  return (fs::path(workdir) / kHoldsDir).string();
}

Status Errno(const std::string& what) {
  return Status::IOError(what + ": " + std::strerror(errno));
}

// Opens (creating) `path` and takes `operation` (LOCK_SH / LOCK_EX, with
// LOCK_NB: Busy when taken) on it.
Result<LockedFile> OpenLocked(const std::string& path, int operation, bool remove_on_release) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return Errno("opening " + path);
  while (::flock(fd, operation) != 0) {
    if (errno == EINTR) continue;
    Status status =
        errno == EWOULDBLOCK ? Status::Busy(path + " is locked") : Errno("locking " + path);
    ::close(fd);
    return status;
  }
  return LockedFile(fd, path, remove_on_release);
}

Status EnsureHoldsDir(const std::string& workdir) {
  std::error_code ec;
  fs::create_directories(HoldsDir(workdir), ec);
  if (ec) return Status::IOError("creating " + HoldsDir(workdir) + ": " + ec.message());
  return Status::OK();
}

}  // namespace

Result<LockedFile> TryLockExclusive(const std::string& path) {
  return OpenLocked(path, LOCK_EX | LOCK_NB, false);
}

LockedFile::LockedFile(LockedFile&& other) noexcept { *this = std::move(other); }

LockedFile& LockedFile::operator=(LockedFile&& other) noexcept {
  if (this != &other) {
    Release();
    fd_ = std::exchange(other.fd_, -1);
    path_ = std::move(other.path_);
    remove_on_release_ = other.remove_on_release_;
  }
  return *this;
}

void LockedFile::Release() {
  if (fd_ < 0) return;
  // Unlink before unlocking, so the writer never finds an unlocked hold file
  // of a live hold.
  if (remove_on_release_) ::unlink(path_.c_str());
  ::close(fd_);
  fd_ = -1;
}

Result<LockedFile> LockRetention(const std::string& workdir) {
  Status status = EnsureHoldsDir(workdir);
  if (!status.ok()) return status;
  return OpenLocked((fs::path(HoldsDir(workdir)) / kRetentionLock).string(), LOCK_EX | LOCK_NB,
                    false);
}

Result<LockedFile> AcquireStepHold(const std::string& workdir, int64_t step,
                                   const std::function<Status()>& still_exists) {
  Status status = EnsureHoldsDir(workdir);
  if (!status.ok()) return status;
  Result<LockedFile> coordination =
      OpenLocked((fs::path(HoldsDir(workdir)) / kRetentionLock).string(), LOCK_SH, false);
  if (!coordination.ok()) return coordination.status();
  static std::atomic<uint64_t> counter{0};
  const std::string name = std::string(kHoldPrefix) + std::to_string(step) + "-" +
                           std::to_string(::getpid()) + "-" + std::to_string(counter++);
  Result<LockedFile> hold =
      OpenLocked((fs::path(HoldsDir(workdir)) / name).string(), LOCK_SH, true);
  if (!hold.ok()) return hold.status();
  status = still_exists();
  if (!status.ok()) return status;  // the hold file goes with `hold`
  return hold;
}

Result<std::set<int64_t>> HeldSteps(const std::string& workdir) {
  std::set<int64_t> held;
  std::error_code ec;
  fs::directory_iterator entries(HoldsDir(workdir), ec);
  if (ec) {
    if (ec == std::errc::no_such_file_or_directory) return held;
    return Status::IOError("listing " + HoldsDir(workdir) + ": " + ec.message());
  }
  for (; !ec && entries != fs::directory_iterator(); entries.increment(ec)) {
    const fs::directory_entry& entry = *entries;
    const std::string name = entry.path().filename().string();
    if (name.rfind(kHoldPrefix, 0) != 0) continue;
    // step-S-PID-N: S is what counts; a name that does not start with a
    // number is not a hold file of ours.
    int64_t step = 0;
    const char* digits = name.data() + std::strlen(kHoldPrefix);
    const auto [end, error] = std::from_chars(digits, name.data() + name.size(), step);
    if (error != std::errc() || end == digits) continue;
    int fd = ::open(entry.path().c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;  // released meanwhile
    if (::flock(fd, LOCK_EX | LOCK_NB) == 0) {
      ::unlink(entry.path().c_str());  // its owner died without releasing it
    } else {
      held.insert(step);
    }
    ::close(fd);
  }
  if (ec) return Status::IOError("listing " + HoldsDir(workdir) + ": " + ec.message());
  return held;
}

}  // namespace ckptdb
