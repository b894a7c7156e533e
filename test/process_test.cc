// Tests across real processes: a writer killed with SIGKILL in the middle of
// saves, a reader process following a live writer, a second writer.

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
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

// How many kills each crash test makes: CKPTDB_CRASH_ROUNDS (default 4; the
// long run sets 1000 or more).
int CrashRounds() {
  const char* text = std::getenv("CKPTDB_CRASH_ROUNDS");
  return text != nullptr ? std::max(1, std::atoi(text)) : 4;
}

// Kills a writer at a random moment of its save loop, again and again, and
// checks after each kill: every step it reported committed (that retention
// keeps) restores bit-exact, every step present does, no live manifest
// references a missing chunk (GC refuses otherwise), the garbage the crash
// left is reclaimed, and the store takes new saves.
void CrashAndCheck(std::optional<int64_t> max_to_keep) {
  TempDir dir;
  const std::string store = dir.Sub("store");
  const std::string log = dir.Sub("committed.log");
  const uint64_t seed = testing::SeedFromEnv("CKPTDB_CRASH_SEED", 20261201);
  SCOPED_TRACE("CKPTDB_CRASH_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  int64_t next_step = 0;
  const int rounds = CrashRounds();
  for (int round = 0; round < rounds; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    const size_t logged_before = ReadLoggedSteps(log).size();
    std::vector<std::string> argv = {TestProcessPath(),
                                     "save-loop",
                                     store,
                                     std::to_string(next_step),
                                     std::to_string(kCrashStateMegabytes),
                                     log};
    if (max_to_keep.has_value()) argv.push_back(std::to_string(*max_to_keep));
    pid_t child = testing::SpawnProcess(argv);
    ASSERT_GT(child, 0);
    // Let it commit a step, then kill it at a random instant of a later save
    // (a save of this state, with retention and GC, takes tens of ms).
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (ReadLoggedSteps(log).size() < logged_before + 1) {
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the writer made no progress";
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 80000));
    ASSERT_EQ(kill(child, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFSIGNALED(status)) << "the writer exited by itself: " << status;

    CheckpointerOptions options;
    options.max_to_keep = max_to_keep;
    auto reopened = Checkpointer::Open(store, options);
    ASSERT_OK(reopened.status());
    std::vector<int64_t> held = (*reopened)->AllSteps();
    std::set<int64_t> held_set(held.begin(), held.end());
    std::vector<int64_t> logged = ReadLoggedSteps(log);
    // Retention keeps the latest max_to_keep committed steps; without it, all.
    const size_t must_hold =
        max_to_keep.has_value() ? std::min<size_t>(logged.size(), static_cast<size_t>(*max_to_keep))
                                : logged.size();
    for (size_t i = logged.size() - must_hold; i < logged.size(); ++i) {
      EXPECT_TRUE(held_set.count(logged[i])) << "committed step " << logged[i] << " was lost";
    }
    for (int64_t step : held) {
      Result<Tree> restored = (*reopened)->RestoreTree(step);
      ASSERT_OK(restored.status()) << "step " << step;
      ASSERT_TRUE(restored->ContentEquals(MakeStepState(step, kCrashStateMegabytes)))
          << "step " << step;
    }
    Result<GcStats> collected = (*reopened)->CollectGarbage();
    ASSERT_OK(collected.status()) << "a live manifest references a missing chunk";
    ASSERT_FALSE(held.empty());
    next_step = held.back() + 1;
    ASSERT_TRUE(
        (*reopened)
            ->Save(MakeStepState(next_step, kCrashStateMegabytes), next_step, testing::Forced())
            .value());
    ASSERT_OK((*reopened)->WaitUntilFinished());
    {
      std::ofstream append(log, std::ios::app);
      append << next_step << std::endl;
    }
    ++next_step;
  }
  std::printf("kills survived: %d\n", rounds);
}

TEST(ProcessTest, WriterKilledDuringSavesLosesNoCommittedStep) {
  CrashAndCheck(/*max_to_keep=*/std::nullopt);
}

TEST(ProcessTest, WriterKilledDuringSavesRetentionAndGcLosesNoCommittedStep) {
  CrashAndCheck(/*max_to_keep=*/2);
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
