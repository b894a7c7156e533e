// Reading ahead of a restore.
//
// A restore reads chunks in the order they lie in the table files, each
// with a read that waits for the disk once the kernel's own readahead (a
// few MiB) runs out, then decodes it: while every thread decodes, the disk
// idles, and a cold restore took the sum of reading and decoding more than
// the larger of the two. A Readahead's thread asks the kernel for the
// chunks' blocks (posix_fadvise WILLNEED, up to 4 MiB a call) in the
// restore's order, at most kAheadBytes past the chunks the restore has
// started, so that the disk reads while the threads decode. Advice only:
// whatever fails (a file dropped meanwhile, no thread to start) costs
// speed, never correctness.

#ifndef CKPTDB_LIB_READAHEAD_H_
#define CKPTDB_LIB_READAHEAD_H_

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "store.h"

namespace ckptdb {

class Readahead {
 public:
  // How far the advice runs ahead of the restore: enough to keep the disk
  // busy through a few chunks' decoding, little enough to stay in memory.
  static constexpr uint64_t kAheadBytes = uint64_t{64} << 20;

  // `extents`: the chunks in the order the restore reads them, in the
  // files `paths` names (Store::LocateChunks).
  Readahead(std::vector<std::string> paths, std::vector<ChunkExtent> extents);
  // Stops advising and waits for the thread.
  ~Readahead();
  Readahead(const Readahead&) = delete;
  Readahead& operator=(const Readahead&) = delete;

  // The restore started reading the next chunk in its order.
  void Started();

 private:
  void Run();

  const std::vector<std::string> paths_;
  const std::vector<ChunkExtent> extents_;
  // begin_bytes_[i]: the bytes of extents_[0, i), so that the restore's
  // progress is counted in bytes.
  std::vector<uint64_t> begin_bytes_;
  std::mutex mu_;
  std::condition_variable progressed_;
  size_t started_ = 0;  // guarded by mu_
  bool stopping_ = false;  // guarded by mu_
  std::thread thread_;  // not joinable when none could be started
};

}  // namespace ckptdb

#endif  // CKPTDB_LIB_READAHEAD_H_
