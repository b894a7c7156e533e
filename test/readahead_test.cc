// Tests of Readahead: it follows the restore's progress and always stops.
// (That advice makes cold restores faster is the benchmark's subject:
// page-cache residency is the kernel's to decide, not a test's.)

#include "readahead.h"

#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include "test_util.h"

namespace ckptdb {
namespace {

using testing::TempDir;

// `count` extents of `bytes` one after the other in file 0.
std::vector<ChunkExtent> Contiguous(size_t count, uint64_t bytes) {
  std::vector<ChunkExtent> extents;
  for (size_t i = 0; i < count; ++i) extents.push_back({0, i * bytes, bytes});
  return extents;
}

TEST(ReadaheadTest, StopsWhenTheRestoreStartedEveryChunk) {
  TempDir dir;
  const std::string path = dir.path() + "/chunks";
  std::ofstream(path) << std::string(1 << 20, 'x');
  Readahead readahead({path}, Contiguous(64, 16 << 10));
  for (int i = 0; i < 64; ++i) readahead.Started();
}

TEST(ReadaheadTest, StopsWhenTheRestoreEndsEarly) {
  // Far more than kAheadBytes: the thread waits for progress that never
  // comes (a restore that failed), and the destructor must still end it.
  TempDir dir;
  const std::string path = dir.path() + "/chunks";
  std::ofstream(path) << "x";
  const uint64_t chunk = 4 << 20;
  Readahead readahead({path}, Contiguous(Readahead::kAheadBytes / chunk * 4, chunk));
  readahead.Started();
}

TEST(ReadaheadTest, MissingFilesAndUnplacedChunksAreSkipped) {
  TempDir dir;
  std::vector<ChunkExtent> extents = {{0, 0, 100},
                                      {ChunkExtent::kNoFile, 0, 0},
                                      {1, 1 << 20, 100},
                                      {0, uint64_t{1} << 40, 100}};
  Readahead readahead({dir.path() + "/missing", dir.path()}, extents);
  for (size_t i = 0; i < extents.size() + 2; ++i) readahead.Started();  // more than there are
}

TEST(ReadaheadTest, NothingToReadAhead) {
  Readahead readahead({}, {});
  readahead.Started();
}

}  // namespace
}  // namespace ckptdb
