#include "file_util.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <system_error>

namespace ckptdb {
namespace {

std::string ErrnoText(int error) { return std::generic_category().message(error); }

}  // namespace

Status SyncDirectory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Status::IOError("cannot open directory '" + dir + "': " + ErrnoText(errno));
  const int result = ::fsync(fd);
  const int error = errno;
  ::close(fd);
  if (result != 0 && error != EINVAL) {
    return Status::IOError("cannot sync directory '" + dir + "': " + ErrnoText(error));
  }
  return Status::OK();
}

Status SyncParentDirectory(const std::string& path) {
  const std::string dir = std::filesystem::path(path).parent_path().string();
  return SyncDirectory(dir.empty() ? "." : dir);
}

Status WriteFileDurably(const std::string& path, std::string_view contents) {
  const std::string temporary = path + ".tmp";
  const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
                        0644);
  if (fd < 0) return Status::IOError("cannot create " + temporary + ": " + ErrnoText(errno));
  size_t written = 0;
  while (written < contents.size()) {
    const ssize_t n = ::write(fd, contents.data() + written, contents.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const Status error = Status::IOError("cannot write " + temporary + ": " + ErrnoText(errno));
      ::close(fd);
      return error;
    }
    written += static_cast<size_t>(n);
  }
  const bool synced = ::fsync(fd) == 0;
  ::close(fd);
  if (!synced || ::rename(temporary.c_str(), path.c_str()) != 0) {
    return Status::IOError("cannot write " + path + ": " + ErrnoText(errno));
  }
  return SyncParentDirectory(path);
}

Status CreateEmptyFileDurably(const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) return Status::IOError("cannot create " + path + ": " + ErrnoText(errno));
  const bool synced = ::fsync(fd) == 0;
  const int error = errno;
  ::close(fd);
  if (!synced) return Status::IOError("cannot sync " + path + ": " + ErrnoText(error));
  return SyncParentDirectory(path);
}

}  // namespace ckptdb
