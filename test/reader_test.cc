// The read side: partial restore, subtrees, warm starts from another run,
// step holds, and evaluators following a trainer (in-process and across
// processes).

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "ckptdb/checkpointer.h"
#include "test_util.h"

namespace ckptdb {
namespace {

using testing::MakeStepState;
using testing::TempDir;

std::unique_ptr<Checkpointer> OpenOrDie(const std::string& dir, CheckpointerOptions options = {}) {
  auto opened = Checkpointer::Open(dir, std::move(options));
  EXPECT_TRUE(opened.ok()) << opened.status().ToString();
  return opened.ok() ? std::move(*opened) : nullptr;
}

CheckpointerOptions ReadOnly() {
  CheckpointerOptions options;
  options.create = false;
  return options;
}

TEST(ReaderTest, PartialRestoreTouchesOnlyTheChosenPaths) {
  TempDir dir;
  auto checkpointer = OpenOrDie(dir.path());
  const Tree saved = MakeStepState(5);
  ASSERT_TRUE(checkpointer->Save(saved, 5).value());

  // The template has the stored params, and other things that do not match
  // the checkpoint at all: they are neither checked nor touched.
  Tree wanted;
  Tree* params = wanted.Set("params", Tree::Map()).value();
  for (const char* name : {"frozen_embedding", "kernel", "bias"}) {
    const Tensor& stored = saved.Find(std::string("params/") + name)->tensor();
    (void)params->Set(name, Tree::Leaf(Tensor::Allocate(stored.dtype(), stored.shape()).value()));
  }
  (void)wanted.Set("step", Tree::String("not an int"));
  (void)wanted.Set("new_head", Tree::Leaf(Tensor::Allocate(DType::kFloat32, {3}).value()));
  RestoreOptions options;
  options.only_paths = {"params"};
  ASSERT_OK(checkpointer->Restore(&wanted, 5, options));
  EXPECT_TRUE(wanted.Find("params")->ContentEquals(*saved.Find("params")));
  EXPECT_EQ(wanted.Find("step")->string_value(), "not an int");

  options.only_paths = {"params/kernel", "step"};
  Tree scalars;
  (void)scalars.Set("step", Tree::Int(-1));
  Tree* kernel_parent = scalars.Set("params", Tree::Map()).value();
  const Tensor& kernel = saved.Find("params/kernel")->tensor();
  (void)kernel_parent->Set("kernel",
                           Tree::Leaf(Tensor::Allocate(kernel.dtype(), kernel.shape()).value()));
  ASSERT_OK(checkpointer->Restore(&scalars, 5, options));
  EXPECT_EQ(scalars.Find("step")->int_value(), 5);
  EXPECT_TRUE(scalars.Find("params/kernel")->tensor().ContentEquals(kernel));

  options.only_paths = {"optimizer"};
  Status missing = checkpointer->Restore(&wanted, 5, options);
  EXPECT_TRUE(missing.IsNotFound()) << missing.ToString();
  EXPECT_NE(missing.message().find("'optimizer'"), std::string::npos);
}

TEST(ReaderTest, RestoreTreeOfASubtree) {
  TempDir dir;
  auto checkpointer = OpenOrDie(dir.path());
  const Tree saved = MakeStepState(2);
  ASSERT_TRUE(checkpointer->Save(saved, 2).value());
  Result<Tree> params = checkpointer->RestoreTree(2, "params");
  ASSERT_OK(params.status());
  EXPECT_TRUE(params->ContentEquals(*saved.Find("params")));
  Result<Tree> layer = checkpointer->RestoreTree(kLatestStep, "layers/1");
  ASSERT_OK(layer.status());
  EXPECT_TRUE(layer->ContentEquals(*saved.Find("layers/1")));
  Result<Tree> leaf = checkpointer->RestoreTree(2, "params/bias");
  ASSERT_OK(leaf.status());
  EXPECT_TRUE(leaf->ContentEquals(*saved.Find("params/bias")));
  EXPECT_TRUE(checkpointer->RestoreTree(2, "params/nothing").status().IsNotFound());
}

TEST(ReaderTest, WarmStartFromAnotherRunsStore) {
  TempDir dir;
  const Tree pretrained = MakeStepState(1000);
  {
    auto other_run = OpenOrDie(dir.Sub("pretrained"));
    ASSERT_TRUE(other_run->Save(pretrained, 1000).value());
  }
  // The new run's state: fresh params of the same shapes, its own step.
  Tree state = MakeStepState(0);
  (void)state.Set("step", Tree::Int(0));
  auto pretrained_run = OpenOrDie(dir.Sub("pretrained"), ReadOnly());
  RestoreOptions options;
  options.only_paths = {"params"};
  ASSERT_OK(pretrained_run->Restore(&state, kLatestStep, options));
  EXPECT_TRUE(state.Find("params")->ContentEquals(*pretrained.Find("params")));
  EXPECT_EQ(state.Find("step")->int_value(), 0);
  auto this_run = OpenOrDie(dir.Sub("finetune"));
  ASSERT_TRUE(this_run->Save(state, 0).value());
}

TEST(ReaderTest, AReaderRestoresTheWritersLatestStepAfterCatchingUp) {
  TempDir dir;
  CheckpointerOptions options;
  options.max_to_keep = 2;
  auto writer = OpenOrDie(dir.path(), options);
  ASSERT_TRUE(writer->Save(MakeStepState(100, 1), 100).value());
  ASSERT_OK(writer->WaitUntilFinished());
  auto reader = OpenOrDie(dir.path(), ReadOnly());
  EXPECT_EQ(reader->LatestStep(), 100);
  for (int64_t step : {200, 300, 400}) {
    ASSERT_TRUE(writer->Save(MakeStepState(step, 1), step).value());
  }
  ASSERT_OK(writer->WaitUntilFinished());
  // Step 100 is gone; "latest" means the writer's latest, not the stale one.
  Result<Tree> latest = reader->RestoreTree();
  ASSERT_OK(latest.status());
  EXPECT_TRUE(latest->ContentEquals(MakeStepState(400, 1)));
  EXPECT_EQ(reader->LatestStep(), 400);
}

TEST(ReaderTest, AReaderWaitsForAStoreItsWriterHasNotCreatedYet) {
  TempDir dir;
  const std::string workdir = dir.path() + "/run";
  CheckpointerOptions waiting = ReadOnly();
  waiting.wait_for_store = std::chrono::seconds(60);
  Result<std::unique_ptr<Checkpointer>> reader = Status::Internal("not opened");
  std::thread evaluator([&] { reader = Checkpointer::Open(workdir, waiting); });
  // Whether the evaluator looks before or after the writer creates the store,
  // it opens it (without the wait it may find nothing: NotFound).
  auto writer = OpenOrDie(workdir);
  ASSERT_TRUE(writer->Save(MakeStepState(5, 1), 5).value());
  ASSERT_OK(writer->WaitUntilFinished());
  evaluator.join();
  ASSERT_OK(reader.status());
  ASSERT_OK((*reader)->Reload());
  EXPECT_EQ((*reader)->LatestStep(), 5);
}

TEST(ReaderTest, WaitingForAStoreEndsWithNotFound) {
  TempDir dir;
  CheckpointerOptions waiting = ReadOnly();
  waiting.wait_for_store = std::chrono::milliseconds(250);
  const auto start = std::chrono::steady_clock::now();
  Result<std::unique_ptr<Checkpointer>> reader = Checkpointer::Open(dir.path() + "/none", waiting);
  EXPECT_TRUE(reader.status().IsNotFound()) << reader.status().ToString();
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(250));
  // A writer does not wait: it creates.
  CheckpointerOptions writer;
  writer.wait_for_store = std::chrono::milliseconds(250);
  EXPECT_TRUE(Checkpointer::Open(dir.path() + "/w", writer).status().IsInvalidArgument());
}

TEST(ReaderTest, AHeldStepOutlivesRetentionUntilReleased) {
  TempDir dir;
  CheckpointerOptions options;
  options.max_to_keep = 1;
  auto writer = OpenOrDie(dir.path(), options);
  ASSERT_TRUE(writer->Save(MakeStepState(0, 1), 0).value());
  ASSERT_OK(writer->WaitUntilFinished());
  auto reader = OpenOrDie(dir.path(), ReadOnly());
  Result<StepHold> hold = reader->HoldStep(0);
  ASSERT_OK(hold.status());
  EXPECT_TRUE(hold->held());
  EXPECT_EQ(hold->step(), 0);

  ASSERT_TRUE(writer->Save(MakeStepState(1, 1), 1).value());
  ASSERT_TRUE(writer->Save(MakeStepState(2, 1), 2).value());
  ASSERT_OK(writer->WaitUntilFinished());  // retention runs once the save committed
  EXPECT_EQ(writer->AllSteps(), (std::vector<int64_t>{0, 2})) << "step 0 is held";
  EXPECT_EQ(writer->Delete(0).code(), Status::Code::kFailedPrecondition);
  Result<Tree> restored = reader->RestoreTree(0);
  ASSERT_OK(restored.status());
  EXPECT_TRUE(restored->ContentEquals(MakeStepState(0, 1)));

  hold->Release();
  EXPECT_FALSE(hold->held());
  ASSERT_TRUE(writer->Save(MakeStepState(3, 1), 3).value());
  ASSERT_OK(writer->WaitUntilFinished());
  EXPECT_EQ(writer->AllSteps(), (std::vector<int64_t>{3}));
  ASSERT_OK(reader->Reload());
  EXPECT_TRUE(reader->RestoreTree(0).status().IsNotFound());
  EXPECT_TRUE(reader->HoldStep(0).status().IsNotFound());
}

TEST(ReaderTest, ACrashedReadersHoldExpires) {
  TempDir dir;
  CheckpointerOptions options;
  options.max_to_keep = 1;
  auto writer = OpenOrDie(dir.path(), options);
  ASSERT_TRUE(writer->Save(MakeStepState(0, 1), 0).value());
  ASSERT_OK(writer->WaitUntilFinished());
  const int exit_code =
      testing::RunProcess({testing::TestProcessPath(), "hold-and-die", dir.path(), "0"});
  ASSERT_EQ(exit_code, 128 + SIGKILL);
  // The hold file is still there, but its lock died with its process.
  ASSERT_TRUE(writer->Save(MakeStepState(1, 1), 1).value());
  ASSERT_OK(writer->WaitUntilFinished());
  EXPECT_EQ(writer->AllSteps(), (std::vector<int64_t>{1}));
  for (const auto& entry : std::filesystem::directory_iterator(dir.Sub("holds"))) {
    EXPECT_EQ(entry.path().filename(), "retention.lock") << "stale hold left behind";
  }
}

// The folder this user's reader folders go in, inside `tmpdir`.
std::filesystem::path ReadersParent(const std::string& tmpdir) {
  return std::filesystem::path(tmpdir) / ("ckptdb-readers-" + std::to_string(::geteuid()));
}

// The reader folders in `folder`.
int ReaderFolders(const std::filesystem::path& folder) {
  int count = 0;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(folder, ec)) {
    count += entry.path().filename().string().starts_with("ckptdb-reader-");
  }
  return count;
}

// A writer of the store in `dir`, keeping every step, that saved step 0.
std::unique_ptr<Checkpointer> WriterWithStepZero(const std::string& dir) {
  CheckpointerOptions options;
  options.max_to_keep = std::nullopt;
  auto writer = OpenOrDie(dir, options);
  EXPECT_TRUE(writer->Save(MakeStepState(0, 1), 0).value());
  EXPECT_OK(writer->WaitUntilFinished());
  return writer;
}

// Readers killed with SIGKILL leave their scratch folder behind; the next
// reader's open removes every one whose reader is gone, and never one whose
// reader lives. The readers run with a TMPDIR of their own; their folders
// gather in a folder of this user's there, which alone the sweep lists.
TEST(ReaderTest, KilledReadersLeaveNoScratchFolderForLong) {
  TempDir dir;
  TempDir scratch;
  auto writer = WriterWithStepZero(dir.path());
  const std::string tmpdir = "TMPDIR=" + scratch.path();
  const std::filesystem::path parent = ReadersParent(scratch.path());
  auto reader_folders = [&] { return ReaderFolders(parent); };
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(testing::RunProcess({"/usr/bin/env", tmpdir, testing::TestProcessPath(),
                                   "hold-and-die", dir.path(), "0"}),
              128 + SIGKILL);
  }
  // Each killed reader's open removed the folders of those killed before.
  EXPECT_EQ(reader_folders(), 1) << "the last killed reader's folder";
  EXPECT_EQ(ReaderFolders(scratch.path()), 0) << "reader folders outside their parent";
  EXPECT_EQ(std::filesystem::status(parent).permissions(), std::filesystem::perms::owner_all);
  // A live reader in this process (its folder must survive the sweep).
  setenv("TMPDIR", scratch.path().c_str(), 1);
  auto reader = OpenOrDie(dir.path(), ReadOnly());
  unsetenv("TMPDIR");
  EXPECT_EQ(reader_folders(), 1) << "the dead readers' folders were not removed";
  ASSERT_EQ(testing::RunProcess({"/usr/bin/env", tmpdir, testing::TestProcessPath(), "verify",
                                 dir.path(), "1", "0"}),
            0);
  EXPECT_EQ(reader_folders(), 1) << "a live reader's folder was removed, or one was left";
  ASSERT_OK(reader->RestoreTree(0).status());
  ASSERT_OK(reader->Close());
  EXPECT_EQ(reader_folders(), 0);
}

// TMPDIR is shared: where the parent's name is taken by something that is
// not a folder of this user's closed to others (a symbolic link to another
// folder, a folder others can write), readers keep their folders in TMPDIR
// itself and leave the impostor and what it points to alone.
TEST(ReaderTest, ReadersDoNotUseAParentFolderThatIsNotTheirUsersAlone) {
  TempDir dir;
  auto writer = WriterWithStepZero(dir.path());
  for (const bool symlink : {true, false}) {
    SCOPED_TRACE(symlink ? "a symbolic link" : "a folder others can write");
    TempDir scratch;
    TempDir elsewhere;
    const std::filesystem::path parent = ReadersParent(scratch.path());
    if (symlink) {
      std::filesystem::create_directory_symlink(elsewhere.path(), parent);
    } else {
      std::filesystem::create_directory(parent);
      std::filesystem::permissions(parent, std::filesystem::perms::all);
    }
    setenv("TMPDIR", scratch.path().c_str(), 1);
    auto reader = OpenOrDie(dir.path(), ReadOnly());
    unsetenv("TMPDIR");
    EXPECT_EQ(ReaderFolders(scratch.path()), 1);
    EXPECT_EQ(ReaderFolders(parent), 0);
    EXPECT_EQ(ReaderFolders(elsewhere.path()), 0);
    ASSERT_OK(reader->RestoreTree(0).status());
    ASSERT_OK(reader->Close());
    EXPECT_EQ(ReaderFolders(scratch.path()), 0);
    EXPECT_EQ(std::filesystem::is_symlink(parent), symlink);
  }
}

TEST(ReaderTest, IterNewCheckpointsVisitsTheNewestStepAndTimesOut) {
  TempDir dir;
  CheckpointerOptions writer_options;
  writer_options.max_to_keep = std::nullopt;
  auto writer = OpenOrDie(dir.path(), writer_options);
  for (int64_t step : {100, 200, 300}) {
    ASSERT_TRUE(writer->Save(MakeStepState(step, 1), step, testing::Forced()).value());
  }
  ASSERT_OK(writer->WaitUntilFinished());
  auto reader = OpenOrDie(dir.path(), ReadOnly());
  IterateOptions options;
  options.poll_interval = std::chrono::milliseconds(1);
  options.timeout = std::chrono::milliseconds(20);
  std::vector<int64_t> visited;
  ASSERT_OK(reader->IterNewCheckpoints(
      [&](int64_t step) {
        visited.push_back(step);
        if (step == 300) {
          // Written while the evaluator works: visited next.
          EXPECT_TRUE(writer->Save(MakeStepState(400, 1), 400, testing::Forced()).value());
          EXPECT_TRUE(writer->Save(MakeStepState(500, 1), 500, testing::Forced()).value());
          EXPECT_OK(writer->WaitUntilFinished());  // both committed before the next look
        }
        return true;
      },
      options));
  // Only the newest step each time; then the wait for a new one timed out.
  EXPECT_EQ(visited, (std::vector<int64_t>{300, 500}));

  // A timeout_fn returning false keeps the evaluator waiting (and asking).
  int asked = 0;
  options.timeout_fn = [&] {
    ++asked;
    if (asked == 3) {
      EXPECT_TRUE(writer->Save(MakeStepState(600, 1), 600, testing::Forced()).value());
      EXPECT_OK(writer->WaitUntilFinished());
    }
    return asked > 5;
  };
  visited.clear();
  ASSERT_OK(reader->IterNewCheckpoints(
      [&](int64_t step) {
        visited.push_back(step);
        return true;
      },
      options));
  // Each iteration starts afresh with the newest step (Orbax's rule).
  EXPECT_EQ(visited, (std::vector<int64_t>{500, 600}));
  EXPECT_GT(asked, 5);
}

TEST(ReaderTest, AnEvaluatorProcessFollowsATrainerThatPrunesAndCollects) {
  TempDir dir;
  constexpr size_t kMegabytes = 1;
  constexpr int64_t kLastStep = 300;
  CheckpointerOptions options;
  options.max_to_keep = 2;
  options.gc_mode = GcMode::kAfterRetention;
  auto trainer = OpenOrDie(dir.path(), options);
  ASSERT_TRUE(trainer->Save(MakeStepState(0, kMegabytes), 0).value());

  std::string output_path = dir.Sub("evaluator.out");
  std::atomic<int> evaluator_exit{-1};
  std::thread evaluator([&] {
    evaluator_exit = testing::RunProcess({"/bin/sh", "-c",
                                          testing::TestProcessPath() + " evaluate " + dir.path() +
                                              " " + std::to_string(kMegabytes) + " " +
                                              std::to_string(kLastStep) + " > " + output_path});
  });
  // Halfway, the trainer waits until the evaluator has visited a step, so
  // that it visits at least one more (the last) whatever the machine's load.
  auto evaluator_visited = [&] {
    std::ifstream output(output_path);
    std::string word;
    return output >> word && word == "visit";
  };
  for (int64_t step = 1; step <= kLastStep; ++step) {
    ASSERT_TRUE(trainer->Save(MakeStepState(step, kMegabytes), step).value());
    if (step == kLastStep / 2) {
      ASSERT_OK(trainer->WaitUntilFinished());
      const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(120);
      while (!evaluator_visited() && std::chrono::steady_clock::now() < give_up) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      ASSERT_TRUE(evaluator_visited()) << "the evaluator visited nothing in 120 s";
    }
  }
  evaluator.join();
  std::ifstream output(output_path);
  std::string word;
  int visited = 0;
  int visit_lines = 0;
  while (output >> word) {
    if (word == "visit") ++visit_lines;
    if (word == "visited") output >> visited;
  }
  EXPECT_EQ(evaluator_exit, 0) << "the evaluator restored wrong bytes or failed";
  EXPECT_EQ(visited, visit_lines);
  EXPECT_GE(visited, 2) << "the evaluator should see several steps";
  std::printf("evaluator visited %d of %lld steps\n", visited, static_cast<long long>(kLastStep));
}

}  // namespace
}  // namespace ckptdb
