// Faults injected under the store (I/O errors, no space, power loss): every
// operation reports a clear error, nothing committed is lost, the store
// reopens, and saves work again once the fault clears.

#include <gtest/gtest.h>
#include <sys/mount.h>

#include <filesystem>
#include <random>
#include <set>

#include "checkpointer_internal.h"
#include "ckptdb/checkpointer.h"
#include "fault_injection_fs.h"
#include "test_util.h"

#ifndef PATTERNS
#define PATTERNS "staging/generation", ".log", "MANIFEST", ".sst", ""
#endif

namespace ckptdb {
namespace {

using testing::FaultInjectionFs;
using testing::MakeStepState;
using testing::TempDir;

constexpr size_t kMegabytes = 1;

CheckpointerOptions KeepAll(bool async = false) {
  CheckpointerOptions options;
  options.max_to_keep = std::nullopt;
  options.enable_async_checkpointing = async;
  return options;
}

class FaultTest : public ::testing::Test {
 protected:
  std::unique_ptr<Checkpointer> Open(CheckpointerOptions options = KeepAll()) {
    auto opened = OpenCheckpointer(dir_.path(), std::move(options), fs_.env());
    EXPECT_TRUE(opened.ok()) << opened.status().ToString();
    return opened.ok() ? std::move(*opened) : nullptr;
  }

  void SaveSteps(Checkpointer& checkpointer, int64_t first, int64_t last) {
    for (int64_t step = first; step <= last; ++step) {
      ASSERT_TRUE(checkpointer.Save(MakeStepState(step, kMegabytes), step).value());
    }
    ASSERT_OK(checkpointer.WaitUntilFinished());
  }

  void ExpectSteps(Checkpointer& checkpointer, const std::vector<int64_t>& steps) {
    EXPECT_EQ(checkpointer.AllSteps(), steps);
    for (int64_t step : steps) {
      Result<Tree> restored = checkpointer.RestoreTree(step);
      ASSERT_OK(restored.status());
      EXPECT_TRUE(restored->ContentEquals(MakeStepState(step, kMegabytes))) << "step " << step;
    }
  }

  TempDir dir_;
  FaultInjectionFs fs_;
};

TEST_F(FaultTest, ASaveThatCannotWriteItsChunksLeavesNothingAndTheNextOneWorks) {
  auto checkpointer = Open();
  SaveSteps(*checkpointer, 0, 1);
  fs_.Arm("staging/generation", FaultInjectionFs::Fault::kIOError);
  Result<bool> failed = checkpointer->Save(MakeStepState(2, kMegabytes), 2);
  EXPECT_EQ(failed.status().code(), Status::Code::kIOError) << failed.status().ToString();
  EXPECT_NE(failed.status().message().find("step 2"), std::string::npos);
  EXPECT_GT(fs_.injected(), 0);
  ExpectSteps(*checkpointer, {0, 1});
  fs_.Disarm();
  SaveSteps(*checkpointer, 2, 2);
  ExpectSteps(*checkpointer, {0, 1, 2});
}

TEST_F(FaultTest, AFailedBackgroundSaveIsReportedOnceByTheNextCall) {
  auto checkpointer = Open(KeepAll(/*async=*/true));
  SaveSteps(*checkpointer, 0, 0);
  fs_.Arm("staging/generation", FaultInjectionFs::Fault::kNoSpace);
  Result<bool> accepted = checkpointer->Save(MakeStepState(1, kMegabytes), 1);
  ASSERT_OK(accepted.status());
  EXPECT_TRUE(*accepted) << "the blocking phase succeeds; the write fails later";
  Status background = checkpointer->WaitUntilFinished();
  EXPECT_EQ(background.code(), Status::Code::kIOError) << background.ToString();
  EXPECT_NE(background.ToString().find("no space"), std::string::npos) << background.ToString();
  EXPECT_OK(checkpointer->WaitUntilFinished());  // reported once
  EXPECT_EQ(checkpointer->AllSteps(), (std::vector<int64_t>{0}));

  // Reported by the next Save, which then does not save.
  ASSERT_TRUE(checkpointer->Save(MakeStepState(1, kMegabytes), 1).value());
  Result<bool> next = checkpointer->Save(MakeStepState(2, kMegabytes), 2);
  EXPECT_EQ(next.status().code(), Status::Code::kIOError) << next.status().ToString();
  EXPECT_EQ(checkpointer->AllSteps(), (std::vector<int64_t>{0}));
  fs_.Disarm();
  SaveSteps(*checkpointer, 1, 2);
  ExpectSteps(*checkpointer, {0, 1, 2});
}

TEST_F(FaultTest, NoSpaceForTheCommitLosesNothingCommitted) {
  {
    auto checkpointer = Open();
    SaveSteps(*checkpointer, 0, 2);
    fs_.Arm(".log", FaultInjectionFs::Fault::kNoSpace);  // the write-ahead log: the commit
    Result<bool> failed = checkpointer->Save(MakeStepState(3, kMegabytes), 3);
    EXPECT_FALSE(failed.ok());
    EXPECT_EQ(checkpointer->AllSteps(), (std::vector<int64_t>{0, 1, 2}));
    fs_.Disarm();
    // RocksDB stops writing after a failed log write; a reopen recovers.
    (void)checkpointer->Close();
  }
  auto reopened = Open();
  ExpectSteps(*reopened, {0, 1, 2});
  SaveSteps(*reopened, 3, 3);
  ExpectSteps(*reopened, {0, 1, 2, 3});
}

TEST_F(FaultTest, PowerLossKeepsEveryCommittedStep) {
  for (bool async : {false, true}) {
    SCOPED_TRACE(async ? "async" : "sync");
    TempDir dir;
    FaultInjectionFs fs;
    {
      auto opened = OpenCheckpointer(dir.path(), KeepAll(async), fs.env());
      ASSERT_OK(opened.status());
      SaveSteps(**opened, 0, 4);
      // The machine dies: nothing written from now on reaches the disk, and
      // what was not synced is lost.
      fs.Arm("", FaultInjectionFs::Fault::kIOError);
      (void)(*opened)->Save(MakeStepState(5, kMegabytes), 5);
      (void)(*opened)->Close();
    }
    fs.DropUnsyncedData();
    fs.Disarm();
    auto reopened = OpenCheckpointer(dir.path(), KeepAll(async), fs.env());
    ASSERT_OK(reopened.status());
    ExpectSteps(**reopened, {0, 1, 2, 3, 4});
    SaveSteps(**reopened, 5, 5);
  }
}

TEST_F(FaultTest, AFailedGarbageCollectionLeavesEveryStepReadable) {
  CheckpointerOptions options = KeepAll();
  options.max_to_keep = 2;
  options.gc_mode = GcMode::kOff;
  auto checkpointer = Open(options);
  SaveSteps(*checkpointer, 0, 5);  // steps 0-3 pruned; their chunks are garbage
  // MakeStepState shares a frozen tensor across steps, so old generations are
  // partly live: GC must rewrite them, and that write fails.
  fs_.Arm("staging/generation", FaultInjectionFs::Fault::kIOError);
  Result<GcStats> failed = checkpointer->CollectGarbage();
  EXPECT_FALSE(failed.ok());
  fs_.Disarm();
  ExpectSteps(*checkpointer, {4, 5});
  (void)checkpointer->Close();
  auto reopened = Open(options);
  ExpectSteps(*reopened, {4, 5});
  Result<GcStats> collected = reopened->CollectGarbage();
  ASSERT_OK(collected.status());
  ExpectSteps(*reopened, {4, 5});
}

TEST_F(FaultTest, RandomFaultsNeverLoseACommittedStep) {
  // Faults at random points of random saves, deletions and collections.
  // After each round: reopen; every step reported committed (and not
  // deleted since) is there, and every step there restores exactly.
  const uint64_t seed = testing::SeedFromEnv("CKPTDB_FAULT_SEED", 20261201);
  SCOPED_TRACE("CKPTDB_FAULT_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const char* patterns[] = {PATTERNS};
  std::set<int64_t> committed;
  int64_t next_step = 0;
  for (int round = 0; round < 12; ++round) {
    CheckpointerOptions options = KeepAll(rng() % 2 == 0);
    auto opened = OpenCheckpointer(dir_.path(), options, fs_.env());
    ASSERT_OK(opened.status()) << "round " << round;
    Checkpointer& checkpointer = **opened;
    fs_.Arm(patterns[rng() % std::size(patterns)],
            rng() % 2 ? FaultInjectionFs::Fault::kIOError : FaultInjectionFs::Fault::kNoSpace,
            static_cast<int>(rng() % 40));
    for (int i = 0; i < 4; ++i) {
      if (rng() % 3 == 0 && !committed.empty()) {
        // A deletion that reports an error may still have happened (its
        // write can reach the disk before the sync fails): either way the
        // step leaves the promise.
        const int64_t step = *std::next(committed.begin(), rng() % committed.size());
        (void)checkpointer.Delete(step);
        committed.erase(step);
        (void)checkpointer.CollectGarbage();
        continue;
      }
      Result<bool> saved = checkpointer.Save(MakeStepState(next_step, kMegabytes), next_step);
      if (saved.ok() && checkpointer.WaitUntilFinished().ok()) committed.insert(next_step);
      ++next_step;
    }
    (void)checkpointer.Close();
    fs_.Disarm();
    auto reopened = OpenCheckpointer(dir_.path(), options, fs_.env());
    ASSERT_OK(reopened.status()) << "round " << round;
    const std::vector<int64_t> present = (*reopened)->AllSteps();
    for (int64_t step : committed) {
      EXPECT_TRUE(std::binary_search(present.begin(), present.end(), step))
          << "round " << round << ": committed step " << step << " was lost";
    }
    for (int64_t step : present) {
      Result<Tree> restored = (*reopened)->RestoreTree(step);
      ASSERT_OK(restored.status()) << "round " << round << ", step " << step;
      EXPECT_TRUE(restored->ContentEquals(MakeStepState(step, kMegabytes)));
    }
    committed.insert(present.begin(), present.end());  // present steps are committed now
  }
  std::printf("faults injected: %d\n", fs_.injected());
}

// A real full disk: a small tmpfs, when this process may mount one.
// A caller that breaks its zero_copy promise (changes the buffer while the
// save runs) gets an error naming the tensor; nothing is committed, nothing
// enters the index under a digest its bytes do not have, and a later honest
// save of the original bytes restores bit-exact. The writer is held at its
// first file write, after the first window of chunks was compressed and
// before the rest are, while the caller changes its buffer.
// A restore's chunks are read by a thread of their own ahead of the
// decoders, and by the decoders: an I/O error on either side is the
// restore's error, naming the tensor, with no thread left waiting; the store
// is then marked damaged (garbage collection refuses) and, the fault gone,
// the same step restores.
TEST_F(FaultTest, AReadErrorMidRestoreIsAnIOErrorNamingTheTensorAndStopsGc) {
  CheckpointerOptions options = KeepAll();
  options.chunk_size_bytes = 1u << 20;
  Tree state;
  std::vector<uint8_t> bytes(24u << 20);
  std::mt19937_64 random(5);
  for (auto& byte : bytes) byte = static_cast<uint8_t>(random());
  (void)state.Set("weights",
                  Tree::Leaf(Tensor::ConstView(DType::kUInt8, {int64_t(bytes.size())},
                                               bytes.data()).value()));
  std::unique_ptr<Checkpointer> checkpointer = Open(options);
  ASSERT_NE(checkpointer, nullptr);
  ASSERT_TRUE(checkpointer->Save(state, 1).value());
  for (int successes : {0, 5, 20}) {
    SCOPED_TRACE("reads that succeed before the fault: " + std::to_string(successes));
    fs_.ArmReads(".sst", successes);
    Result<Tree> failed = checkpointer->RestoreTree(1);
    fs_.DisarmReads();
    ASSERT_FALSE(failed.ok());
    EXPECT_EQ(failed.status().code(), Status::Code::kIOError) << failed.status().ToString();
    EXPECT_NE(failed.status().message().find("tensor 'weights'"), std::string::npos)
        << failed.status().ToString();
    EXPECT_EQ(checkpointer->CollectGarbage().status().code(), Status::Code::kFailedPrecondition);
    Result<Tree> restored = checkpointer->RestoreTree(1);
    ASSERT_OK(restored.status());
    EXPECT_TRUE(restored->ContentEquals(state));
  }
  ASSERT_OK(checkpointer->Close());
}

TEST_F(FaultTest, ABrokenZeroCopyPromiseFailsThatSaveAndPoisonsNothing) {
  CheckpointerOptions options = KeepAll(/*async=*/true);
  options.chunk_size_bytes = 64 << 10;
  options.worker_threads = 1;
  std::unique_ptr<Checkpointer> checkpointer = Open(options);
  ASSERT_NE(checkpointer, nullptr);
  std::vector<float> weights(16 * (64 << 10) / sizeof(float));
  for (size_t i = 0; i < weights.size(); ++i) weights[i] = 0.001f * static_cast<float>(i % 9973);
  const std::vector<float> original = weights;
  Tree state;
  ASSERT_OK(state.Set("w", Tree::Leaf(Tensor::View(DType::kFloat32,
                                                   {static_cast<int64_t>(weights.size())},
                                                   weights.data())
                                          .value()))
                .status());
  SaveOptions zero_copy;
  zero_copy.zero_copy = true;
  fs_.PauseNextWrite("staging/generation");
  ASSERT_TRUE(checkpointer->Save(state, 1, zero_copy).value());
  fs_.WaitUntilPaused();
  for (float& w : weights) w += 1.0f;  // the broken promise
  fs_.Resume();
  Status failed = checkpointer->WaitUntilFinished();
  EXPECT_EQ(failed.code(), Status::Code::kInvalidArgument) << failed.ToString();
  EXPECT_NE(failed.ToString().find("'w' changed during a zero_copy save"), std::string::npos)
      << failed.ToString();
  EXPECT_TRUE(checkpointer->AllSteps().empty());

  // The original bytes again, honestly: they must not dedup onto anything
  // the failed save left behind.
  weights = original;
  ASSERT_TRUE(checkpointer->Save(state, 2, zero_copy).value());
  ASSERT_OK(checkpointer->WaitUntilFinished());
  Result<Tree> restored = checkpointer->RestoreTree(2);
  ASSERT_OK(restored.status());
  EXPECT_TRUE(restored->ContentEquals(state));
  ASSERT_OK(checkpointer->Close());
}

TEST(FullDiskTest, SavesFailCleanlyOnAFullFileSystemAndResumeAfterSpaceIsFreed) {
  TempDir dir;
  if (::mount("tmpfs", dir.path().c_str(), "tmpfs", 0, "size=24m") != 0) {
    GTEST_SKIP() << "cannot mount a tmpfs here (needs root and a mount namespace that allows it)";
  }
  struct Unmount {
    std::string path;
    ~Unmount() { ::umount(path.c_str()); }
  } unmount{dir.path()};
  const std::string store = dir.Sub("store");
  CheckpointerOptions options;
  options.max_to_keep = std::nullopt;
  options.enable_async_checkpointing = false;
  std::vector<int64_t> saved;
  {
    auto checkpointer = Checkpointer::Open(store, options);
    ASSERT_OK(checkpointer.status());
    Status failure;
    for (int64_t step = 0; step < 40 && failure.ok(); ++step) {
      Result<bool> result = (*checkpointer)->Save(MakeStepState(step, 2), step);
      if (result.ok()) saved.push_back(step);
      failure = result.status();
    }
    EXPECT_FALSE(failure.ok()) << "24 MiB cannot hold 40 steps of 1 MiB of new data each";
    EXPECT_EQ((*checkpointer)->AllSteps(), saved);
    (void)(*checkpointer)->Close();
  }
  ASSERT_GE(saved.size(), 2u);
  options.max_to_keep = 1;  // the next save prunes the rest and GC frees their space
  auto reopened = Checkpointer::Open(store, options);
  ASSERT_OK(reopened.status());
  for (int64_t step : saved) {
    Result<Tree> restored = (*reopened)->RestoreTree(step);
    ASSERT_OK(restored.status()) << "step " << step;
    EXPECT_TRUE(restored->ContentEquals(MakeStepState(step, 2)));
  }
  for (int64_t step : saved) {
    if (step != saved.back()) {
      ASSERT_OK((*reopened)->Delete(step));
    }
  }
  ASSERT_OK((*reopened)->CollectGarbage().status());
  const int64_t next = saved.back() + 1;
  ASSERT_TRUE((*reopened)->Save(MakeStepState(next, 2), next).value());
}

}  // namespace
}  // namespace ckptdb
