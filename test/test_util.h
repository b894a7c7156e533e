// Helpers shared by the tests: temporary directories, generated states whose
// content is a pure function of the step (so another process can verify a
// restore), and gtest matchers for Status.

#ifndef CKPTDB_TEST_TEST_UTIL_H_
#define CKPTDB_TEST_TEST_UTIL_H_

#include <gtest/gtest.h>

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "ckptdb/ckptdb.h"

// Status checks that print the status, and allow more context with <<.
#define ASSERT_OK(expr)                                      \
  if (const ::ckptdb::Status _status = (expr); _status.ok()) \
    ;                                                        \
  else                                                       \
    FAIL() << _status.ToString() << " "

#define EXPECT_OK(expr)                                      \
  if (const ::ckptdb::Status _status = (expr); _status.ok()) \
    ;                                                        \
  else                                                       \
    ADD_FAILURE() << _status.ToString() << " "

namespace ckptdb::testing {

// A fresh empty directory under the system temp dir, removed on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// A training-like state for `step` of roughly `megabytes` MB: a frozen part
// (the same bytes at every step), a part that changes every step, scalars and
// a list. Every byte is a pure function of (step, megabytes).
Tree MakeStepState(int64_t step, size_t megabytes = 2);

// A copy of `tree` (same structure) whose leaves are replace(leaf).
Tree WithLeaves(const Tree& tree, const std::function<Tree(const Tree& leaf)>& replace);

// A template with the structure of `tree`: zeroed tensors of the same dtypes
// and shapes, and scalar values that differ from the tree's.
Tree ZeroedLike(const Tree& tree);

// A copy of `tree` with tensors of its own (bytes copied).
Tree DeepCopy(const Tree& tree);

// SaveOptions with force = true.
SaveOptions Forced();

// The bytes of the file `path` ("" when it cannot be read), and writing
// them (replacing the file): how tests damage stores and check files.
std::string ReadBytes(const std::string& path);
void WriteBytes(const std::string& path, const std::string& bytes);

// Sum of the sizes of all files under `dir`.
uint64_t DirectoryBytes(const std::string& dir);

// The flags the kernel shows for the mapping holding `address`
// (/proc/self/smaps' VmFlags, e.g. "rd wr mr mw me ac hg": "hg" means huge
// pages advised); "" when no mapping holds it.
std::string MappingFlags(const void* address);

// Writes `value` under `key` in column family `family` of the (closed) store
// in `dir`, bypassing ckptdb: how tests damage a store or fake a future one.
Status PutRawValue(const std::string& dir, const std::string& family, const std::string& key,
                   const std::string& value);

// $NAME as a decimal number, or `fallback` when unset or not one.
uint64_t EnvNumber(const char* name, uint64_t fallback);

// A randomized test's seed: $NAME when set, else `fixed`, so that every run
// (CI's included) reproduces; printed, so that a failure names its seed.
uint64_t SeedFromEnv(const char* name, uint64_t fixed);

// The path of the helper program test_process (built beside the tests).
std::string TestProcessPath();

// The options the damage and salvage tests write their small stores with:
// 64 KiB chunks, a 4 MiB staging pool (the default 256 MiB would dominate
// each case), the last 4 steps kept, delta chains up to `max_delta_chain`.
CheckpointerOptions SmallStoreOptions(uint32_t max_delta_chain);

// Opens `dir` for writing with SmallStoreOptions(max_delta_chain) and saves
// MakeStepState(step + offset, 1) as each of `steps`, waiting for every
// commit; the caller closes the checkpointer (or dies without closing it).
Result<std::unique_ptr<Checkpointer>> SaveSmallStoreSteps(const std::string& dir, int64_t offset,
                                                          uint32_t max_delta_chain,
                                                          const std::vector<int64_t>& steps);

// SaveSmallStoreSteps in a child process (test_process save-and-die) that
// then exits without closing, as a trainer killed after its last commit: the
// session's records of the small families are left in the write-ahead log
// only (a writer's Close would flush them into table files).
void SaveStepsAndDie(const std::string& dir, int64_t offset, uint32_t max_delta_chain,
                     const std::vector<int64_t>& steps);

// Starts `argv` as a child process (-1 if it cannot be started).
pid_t SpawnProcess(const std::vector<std::string>& argv);
// Waits for a child; returns its exit code, or 128 + signal number when it
// was killed (-1 if it cannot be waited for).
int WaitProcess(pid_t pid);
// Runs `argv` as a child process and waits (SpawnProcess, WaitProcess).
int RunProcess(const std::vector<std::string>& argv);

}  // namespace ckptdb::testing

#endif  // CKPTDB_TEST_TEST_UTIL_H_
