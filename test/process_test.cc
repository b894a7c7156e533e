// Tests across real processes: a writer killed with SIGKILL in the middle of
// saves, a reader process following a live writer, a second writer.

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <random>
#include <set>
#include <thread>

#include "ckptdb/checkpointer.h"
#include "test_util.h"

extern char** environ;

namespace ckptdb {
namespace {

using testing::MakeStepState;
using testing::RunProcess;
using testing::TempDir;
using testing::TestProcessPath;

constexpr size_t kCrashStateMegabytes = 8;

std::vector<int64_t> ReadLoggedSteps(const std::string& log_path) {
  std::vector<int64_t> steps;
  std::ifstream log(log_path);
  int64_t step = 0;
  while (log >> step) steps.push_back(step);
  return steps;
}

pid_t Spawn(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  EXPECT_EQ(posix_spawn(&pid, args[0], nullptr, nullptr, args.data(), environ), 0);
  return pid;
}

// Kills a writer at a random moment of its save loop, several times, and
// checks after each kill that every step it reported committed (and any step
// present at all) restores bit-exact, and that the store takes new saves.
TEST(ProcessTest, WriterKilledDuringSavesLosesNoCommittedStep) {
  TempDir dir;
  const std::string store = dir.Sub("store");
  const std::string log = dir.Sub("committed.log");
  const uint64_t seed = std::random_device()();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  int64_t next_step = 0;
  for (int round = 0; round < 4; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    const size_t logged_before = ReadLoggedSteps(log).size();
    pid_t child = Spawn({TestProcessPath(), "save-loop", store, std::to_string(next_step),
                         std::to_string(kCrashStateMegabytes), log});
    ASSERT_GT(child, 0);
    // Let it commit a couple of steps, then kill it at a random instant of a
    // later save (a save of this state takes tens of milliseconds).
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (ReadLoggedSteps(log).size() < logged_before + 2) {
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the writer made no progress";
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 60000));
    ASSERT_EQ(kill(child, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFSIGNALED(status)) << "the writer exited by itself: " << status;

    CheckpointerOptions options;
    options.max_to_keep = std::nullopt;
    auto reopened = Checkpointer::Open(store, options);
    ASSERT_OK(reopened.status());
    std::vector<int64_t> held = (*reopened)->AllSteps();
    std::set<int64_t> held_set(held.begin(), held.end());
    for (int64_t step : ReadLoggedSteps(log)) {
      EXPECT_TRUE(held_set.count(step)) << "committed step " << step << " was lost";
    }
    // Every step present is complete: the killed save is absent or whole.
    for (int64_t step : held) {
      Result<Tree> restored = (*reopened)->RestoreTree(step);
      ASSERT_OK(restored.status());
      ASSERT_TRUE(restored->ContentEquals(MakeStepState(step, kCrashStateMegabytes)))
          << "step " << step;
    }
    ASSERT_FALSE(held.empty());
    next_step = held.back() + 1;
    // The store accepts new saves after the crash.
    Tree state = MakeStepState(next_step, kCrashStateMegabytes);
    ASSERT_TRUE((*reopened)->Save(state, next_step, ckptdb::testing::Forced()).value());
    {
      std::ofstream append(log, std::ios::app);
      append << next_step << std::endl;
    }
    ++next_step;
  }
}

TEST(ProcessTest, AReaderProcessFollowsALiveWriter) {
  TempDir dir;
  CheckpointerOptions options;
  options.max_to_keep = std::nullopt;
  auto writer = Checkpointer::Open(dir.path(), options);
  ASSERT_OK(writer.status());
  for (int64_t step = 0; step < 4; ++step) {
    ASSERT_TRUE((*writer)->Save(MakeStepState(step, 3), step).value());
  }
  ASSERT_OK((*writer)->WaitUntilFinished());
  // The writer stays open (holding the lock) while the reader reads.
  EXPECT_EQ(RunProcess({TestProcessPath(), "verify", dir.path(), "3", "0", "1", "2", "3"}), 0);
  ASSERT_OK((*writer)->Delete(1));
  for (int64_t step = 4; step < 6; ++step) {
    ASSERT_TRUE((*writer)->Save(MakeStepState(step, 3), step).value());
  }
  ASSERT_OK((*writer)->WaitUntilFinished());
  EXPECT_EQ(RunProcess({TestProcessPath(), "verify", dir.path(), "3", "0", "2", "4", "5"}), 0);
  // A deleted step is NotFound for the reader, never wrong data.
  EXPECT_EQ(RunProcess({TestProcessPath(), "verify", dir.path(), "3", "1"}), 1);
}

TEST(ProcessTest, ASecondWriterProcessIsBusy) {
  TempDir dir;
  auto writer = Checkpointer::Open(dir.path(), CheckpointerOptions());
  ASSERT_OK(writer.status());
  EXPECT_EQ(RunProcess({TestProcessPath(), "open-writer", dir.path()}), 3);
  ASSERT_OK((*writer)->Close());
  EXPECT_EQ(RunProcess({TestProcessPath(), "open-writer", dir.path()}), 0);
}

}  // namespace
}  // namespace ckptdb
