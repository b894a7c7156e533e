#include "readahead.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <system_error>
#include <utility>

namespace ckptdb {
namespace {

// The most one advice call asks for: chunks lying one after the other are
// advised together up to this size (a store of many small chunks would
// otherwise make a call per chunk).
constexpr uint64_t kMaxAdviceBytes = uint64_t{4} << 20;

}  // namespace

Readahead::Readahead(std::vector<std::string> paths, std::vector<ChunkExtent> extents)
    : paths_(std::move(paths)), extents_(std::move(extents)) {
  begin_bytes_.reserve(extents_.size() + 1);
  uint64_t bytes = 0;
  for (const ChunkExtent& extent : extents_) {
    begin_bytes_.push_back(bytes);
    bytes += extent.bytes;
  }
  begin_bytes_.push_back(bytes);
  try {
    thread_ = std::thread([this] { Run(); });
  } catch (const std::system_error&) {
    // No thread: the restore reads as the kernel's readahead allows.
  }
}

Readahead::~Readahead() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  progressed_.notify_one();
  if (thread_.joinable()) thread_.join();
}

void Readahead::Started() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++started_;
  }
  progressed_.notify_one();
}

void Readahead::Run() {
  std::vector<int> fds(paths_.size(), -1);
  auto fd_of = [&](size_t file) {
    if (fds[file] == -1) {
      fds[file] = ::open(paths_[file].c_str(), O_RDONLY | O_CLOEXEC);
      if (fds[file] == -1) fds[file] = -2;  // tried: not again
    }
    return fds[file];
  };
  for (size_t i = 0; i < extents_.size();) {
    const ChunkExtent& first = extents_[i];
    if (first.file == ChunkExtent::kNoFile) {
      ++i;
      continue;
    }
    // Chunks [i, end) lying one after the other in one file (extents are
    // rounded up, so the next may start inside this one), advised at once.
    size_t end = i + 1;
    uint64_t advice_end = first.offset + first.bytes;
    while (end < extents_.size() && extents_[end].file == first.file &&
           extents_[end].offset >= extents_[end - 1].offset && extents_[end].offset <= advice_end &&
           extents_[end].offset + extents_[end].bytes - first.offset <= kMaxAdviceBytes) {
      advice_end = std::max(advice_end, extents_[end].offset + extents_[end].bytes);
      ++end;
    }
    {
      std::unique_lock<std::mutex> lock(mu_);
      progressed_.wait(lock, [&] {
        return stopping_ ||
               begin_bytes_[end] <= begin_bytes_[std::min(started_, extents_.size())] + kAheadBytes;
      });
      if (stopping_) break;
    }
    const int fd = fd_of(first.file);
    if (fd >= 0) {
      ::posix_fadvise(fd, static_cast<off_t>(first.offset),
                      static_cast<off_t>(advice_end - first.offset), POSIX_FADV_WILLNEED);
    }
    i = end;
  }
  for (int fd : fds) {
    if (fd >= 0) ::close(fd);
  }
}

}  // namespace ckptdb
