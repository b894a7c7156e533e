#include "repair_files.h"

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "file_util.h"
#include "store_directory.h"

namespace ckptdb {
namespace fs = std::filesystem;
namespace {

constexpr char kRebuiltDir[] = "rebuilt";
constexpr char kReplacedDir[] = "old";
// The swap marker's contents: which step of the swap is under way.
constexpr char kMovingOut[] = "moving the old files out\n";
constexpr char kMovingIn[] = "moving the rebuilt files in\n";

Status ListError(const std::string& dir, const std::error_code& ec) {
  return Status::IOError("cannot list " + dir + ": " + ec.message());
}

// Whether `path` is a directory itself (not a link to one).
bool IsRealDirectory(const fs::path& path) {
  std::error_code ec;
  return fs::is_directory(fs::symlink_status(path, ec));
}

bool IsRealFile(const fs::path& path) {
  std::error_code ec;
  return fs::is_regular_file(fs::symlink_status(path, ec));
}

// The repair folders of `workdir` (real directories named repair-*), oldest
// first: by their time stamp, then by the number a same-second one has.
Result<std::vector<fs::path>> RepairDirs(const std::string& workdir) {
  std::vector<fs::path> dirs;
  std::error_code ec;
  for (fs::directory_iterator it(workdir, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path().filename().string().starts_with(kRepairDirPrefix) && IsRealDirectory(it->path())) {
      dirs.push_back(it->path());
    }
  }
  if (ec) return ListError(workdir, ec);
  auto order = [](const fs::path& dir) {
    const std::string name = dir.filename().string();
    const size_t dash = name.find('-', std::string(kRepairDirPrefix).size());
    const std::string stamp = name.substr(0, dash);
    const unsigned long number = dash == std::string::npos ? 0 : std::strtoul(name.c_str() + dash + 1, nullptr, 10);
    return std::make_pair(stamp, number);
  };
  std::sort(dirs.begin(), dirs.end(), [&](const fs::path& a, const fs::path& b) { return order(a) < order(b); });
  return dirs;
}

Status Rename(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  fs::rename(from, to, ec);
  if (ec) return Status::IOError("cannot move " + from.string() + " to " + to.string() + ": " + ec.message());
  return Status::OK();
}

// Whether a file of `dir` is the same file (a hard link) as `path`.
bool LinkedFrom(const fs::path& dir, const fs::path& path) {
  struct stat target {};
  if (::lstat(path.c_str(), &target) != 0) return false;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    struct stat candidate {};
    if (::lstat(it->path().c_str(), &candidate) == 0 && candidate.st_ino == target.st_ino &&
        candidate.st_dev == target.st_dev) {
      return true;
    }
  }
  return false;
}

// Step 2 of the swap: the old database's files out of `workdir`.
Status MoveOldFilesOut(const std::string& workdir, const fs::path& rebuilt, const fs::path& replaced) {
  std::error_code ec;
  fs::create_directories(replaced, ec);
  if (ec) return Status::IOError("cannot create " + replaced.string() + ": " + ec.message());
  const fs::path identity = fs::path(workdir) / kIdentityFile;
  if (IsRealFile(identity) && !fs::exists(replaced / kIdentityFile, ec)) {
    fs::copy_file(identity, replaced / kIdentityFile, ec);
    if (ec) return Status::IOError("cannot copy " + identity.string() + ": " + ec.message());
  }
  std::vector<fs::path> old;
  for (fs::directory_iterator it(workdir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    // RocksDB's files, its logs for people, and the lost/ folder of the
    // RocksDB repair older builds ran.
    const bool database = name != kIdentityFile && (IsDatabaseFileName(name) || name == "LOCK" ||
                                                     name == "LOG" || name.starts_with("LOG.old."));
    if ((database && !IsRealDirectory(it->path())) || (name == "lost" && IsRealDirectory(it->path()))) {
      old.push_back(it->path());
    }
  }
  if (ec) return ListError(workdir, ec);
  for (const fs::path& path : old) {
    if (path.extension() == ".sst" && LinkedFrom(rebuilt, path)) {
      fs::remove(path, ec);  // carried over: the rebuilt store holds it
      if (ec) return Status::IOError("cannot remove " + path.string() + ": " + ec.message());
      continue;
    }
    Status moved = Rename(path, replaced / path.filename());
    if (!moved.ok()) return moved;
  }
  Status synced = SyncDirectory(replaced.string());
  return synced.ok() ? SyncDirectory(workdir) : synced;
}

// Step 3: the rebuilt store's files in, CURRENT last.
Status MoveRebuiltFilesIn(const std::string& workdir, const fs::path& rebuilt) {
  std::vector<fs::path> files;
  std::error_code ec;
  for (fs::directory_iterator it(rebuilt, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (IsDatabaseFileName(name) && name != "CURRENT" && IsRealFile(it->path())) {
      files.push_back(it->path());
    }
  }
  if (ec) return ListError(rebuilt.string(), ec);
  if (IsRealFile(rebuilt / "CURRENT")) files.push_back(rebuilt / "CURRENT");
  for (const fs::path& path : files) {
    Status moved = Rename(path, fs::path(workdir) / path.filename());
    if (!moved.ok()) return moved;
    if (path.filename() == "CURRENT" || path.filename() == kIdentityFile) {
      Status synced = SyncDirectory(workdir);
      if (!synced.ok()) return synced;
    }
  }
  return SyncDirectory(workdir);
}

}  // namespace

Result<std::string> NewRepairDir(const std::string& workdir) {
  const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm utc{};
  gmtime_r(&now, &utc);
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &utc);
  const fs::path base = fs::path(workdir) / (kRepairDirPrefix + std::string(stamp));
  for (int attempt = 0; attempt < 1000; ++attempt) {
    fs::path candidate = base;
    if (attempt > 0) candidate += "-" + std::to_string(attempt);
    // create_directory neither follows nor replaces anything already there.
    std::error_code ec;
    if (fs::create_directory(candidate, ec)) {
      Status synced = SyncDirectory(workdir);
      if (!synced.ok()) return synced;
      return candidate.string();
    }
    if (ec) return Status::IOError("cannot create " + candidate.string() + ": " + ec.message());
  }
  return Status::IOError("cannot find a free name for a repair folder in " + workdir);
}

std::string RebuiltDir(const std::string& repair_dir) {
  return (fs::path(repair_dir) / kRebuiltDir).string();
}

std::string ReplacedDir(const std::string& repair_dir) {
  return (fs::path(repair_dir) / kReplacedDir).string();
}

Status RemoveAbandonedBuilds(const std::string& workdir) {
  Result<std::vector<fs::path>> dirs = RepairDirs(workdir);
  if (!dirs.ok()) return dirs.status();
  for (const fs::path& dir : *dirs) {
    std::error_code ec;
    if (fs::exists(dir / kRepairSwapMarker, ec)) continue;
    fs::remove_all(dir / kRebuiltDir, ec);
    if (ec) return Status::IOError("cannot remove " + (dir / kRebuiltDir).string() + ": " + ec.message());
    if (fs::is_empty(dir, ec) && !ec) fs::remove(dir, ec);
  }
  return SyncDirectory(workdir);
}

Status SwapIn(const std::string& workdir, const std::string& repair_dir) {
  const fs::path marker = fs::path(repair_dir) / kRepairSwapMarker;
  const fs::path rebuilt = RebuiltDir(repair_dir);
  std::string state;
  if (IsRealFile(marker)) {
    std::ifstream in(marker);
    state.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  if (state != kMovingIn) {
    if (state != kMovingOut) {
      Status marked = WriteFileDurably(marker.string(), kMovingOut);
      if (!marked.ok()) return marked;
    }
    Status moved = MoveOldFilesOut(workdir, rebuilt, ReplacedDir(repair_dir));
    if (!moved.ok()) return moved;
    Status marked = WriteFileDurably(marker.string(), kMovingIn);
    if (!marked.ok()) return marked;
  }
  Status moved = MoveRebuiltFilesIn(workdir, rebuilt);
  if (!moved.ok()) return moved;
  std::error_code ec;
  fs::remove_all(rebuilt, ec);  // its lock files, logs and staging folder
  if (!ec) fs::remove(marker, ec);
  if (ec) return Status::IOError("cannot finish the swap in " + repair_dir + ": " + ec.message());
  return SyncDirectory(repair_dir);
}

Status FinishInterruptedSwap(const std::string& workdir, std::string* finished) {
  finished->clear();
  Result<std::vector<fs::path>> dirs = RepairDirs(workdir);
  if (!dirs.ok()) return dirs.status();
  for (const fs::path& dir : *dirs) {
    if (!IsRealFile(dir / kRepairSwapMarker)) continue;
    Status swapped = SwapIn(workdir, dir.string());
    if (!swapped.ok()) return swapped.WithContext("finishing the interrupted repair " + dir.string());
    *finished = dir.string();
  }
  return Status::OK();
}

Status TrimRepairDirs(const std::string& workdir, std::vector<std::string>* removed) {
  Result<std::vector<fs::path>> dirs = RepairDirs(workdir);
  if (!dirs.ok()) return dirs.status();
  for (size_t i = 0; i + kKeptRepairDirs < dirs->size(); ++i) {
    std::error_code ec;
    fs::remove_all((*dirs)[i], ec);
    if (ec) return Status::IOError("cannot remove " + (*dirs)[i].string() + ": " + ec.message());
    removed->push_back((*dirs)[i].string());
  }
  return SyncDirectory(workdir);
}

}  // namespace ckptdb
