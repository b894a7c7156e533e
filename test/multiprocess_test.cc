// Multi-process saves inside one process: each "process" is a thread with
// its own Checkpointer, joined by an in-memory Coordinator. The protocol's
// outcomes (a step committed once for all, or nothing of it anywhere) and
// its messages; test/mpi runs the same over MPI with real processes.
#include "multiprocess.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <condition_variable>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <thread>

#include "ckptdb/checkpointer.h"
#include "ckptdb/coordinator.h"
#include "test_util.h"

namespace ckptdb {
namespace {

using ::testing::HasSubstr;
using testing::TempDir;

// The processes of one job: every collective is an exchange in which each
// process leaves its bytes and takes everyone's.
class ThreadGroup {
 public:
  explicit ThreadGroup(int count) : count_(count), slots_(count) {}
  int count() const { return count_; }

  std::vector<std::string> Exchange(int index, const std::string& bytes) {
    std::unique_lock<std::mutex> lock(mu_);
    const uint64_t round = round_;
    slots_[index] = bytes;
    if (++arrived_ == count_) {
      results_[round] = slots_;
      arrived_ = 0;
      ++round_;
      changed_.notify_all();
    } else {
      changed_.wait(lock, [&] { return round_ != round; });
    }
    std::vector<std::string> all = results_[round];
    if (++taken_[round] == count_) {
      results_.erase(round);
      taken_.erase(round);
    }
    return all;
  }

  // The group that the `nth` call of each of `processes` makes (every call
  // makes a new one, as MPI_Comm_create_group does).
  std::shared_ptr<ThreadGroup> Subgroup(const std::vector<int>& processes, int nth) {
    std::lock_guard<std::mutex> lock(mu_);
    std::shared_ptr<ThreadGroup>& group = subgroups_[{processes, nth}];
    if (group == nullptr) group = std::make_shared<ThreadGroup>(static_cast<int>(processes.size()));
    return group;
  }

 private:
  const int count_;
  std::mutex mu_;
  std::condition_variable changed_;
  std::vector<std::string> slots_;
  int arrived_ = 0;
  uint64_t round_ = 0;
  std::map<uint64_t, std::vector<std::string>> results_;
  std::map<uint64_t, int> taken_;
  std::map<std::pair<std::vector<int>, int>, std::shared_ptr<ThreadGroup>> subgroups_;
};

class ThreadCoordinator : public Coordinator {
 public:
  ThreadCoordinator(std::shared_ptr<ThreadGroup> group, int index, bool background)
      : group_(std::move(group)), index_(index), background_(background) {}
  int process_index() const override { return index_; }
  int process_count() const override { return group_->count(); }
  bool background_calls_allowed() const override { return background_; }
  Status Barrier() override {
    group_->Exchange(index_, "");
    return Status::OK();
  }
  Status Broadcast(int root, std::string* bytes) override {
    *bytes = group_->Exchange(index_, *bytes)[static_cast<size_t>(root)];
    return Status::OK();
  }
  Status Gather(int root, const std::string& bytes, std::vector<std::string>* gathered) override {
    std::vector<std::string> all = group_->Exchange(index_, bytes);
    gathered->clear();
    if (index_ == root) *gathered = std::move(all);
    return Status::OK();
  }
  Result<std::shared_ptr<Coordinator>> Subgroup(const std::vector<int>& processes) override {
    const auto position = std::find(processes.begin(), processes.end(), index_) - processes.begin();
    return std::shared_ptr<Coordinator>(std::make_shared<ThreadCoordinator>(
        group_->Subgroup(processes, subgroups_made_[processes]++), static_cast<int>(position),
        background_));
  }

 private:
  std::shared_ptr<ThreadGroup> group_;
  int index_;
  bool background_;
  std::map<std::vector<int>, int> subgroups_made_;
};

// Runs `body(process, coordinator)` on `count` threads at once.
void RunJob(int count, bool background,
            const std::function<void(int process, std::shared_ptr<Coordinator>)>& body) {
  auto group = std::make_shared<ThreadGroup>(count);
  std::vector<std::thread> threads;
  for (int p = 0; p < count; ++p) {
    threads.emplace_back(
        [&, p] { body(p, std::make_shared<ThreadCoordinator>(group, p, background)); });
  }
  for (std::thread& thread : threads) thread.join();
}

CheckpointerOptions JobOptions(std::shared_ptr<Coordinator> coordinator) {
  CheckpointerOptions options;
  options.multiprocessing.coordinator = std::move(coordinator);
  options.chunk_size_bytes = 4096;
  options.worker_threads = 1;
  options.max_to_keep = 2;
  return options;
}

constexpr int64_t kRows = 96;
constexpr int64_t kCols = 40;

float ValueAt(int64_t step, int64_t index) { return static_cast<float>(index * 3 + step * 1000); }

// A float32 [kRows, kCols] tensor cut into `parts` row slices; this process
// holds slice `part` (and, when `both_halves`, as two boxes).
Tree ShardedState(int64_t step, int parts, int part) {
  const int64_t begin = kRows * part / parts;
  const int64_t end = kRows * (part + 1) / parts;
  Tensor data = Tensor::Allocate(DType::kFloat32, {end - begin, kCols}).value();
  std::span<float> values = data.MutableValues<float>().value();
  for (int64_t i = 0; i < (end - begin) * kCols; ++i) values[i] = ValueAt(step, begin * kCols + i);
  Tree state;
  EXPECT_OK(state.SetPath(
      "w", Tree::Sharded({DType::kFloat32, {kRows, kCols}, {Shard{{begin, 0}, data, 0}}}).value()));
  // Replicated on every process: written by one.
  Tensor bias = Tensor::Allocate(DType::kInt32, {7}).value();
  bias.MutableValues<int32_t>().value()[3] = static_cast<int32_t>(step);
  EXPECT_OK(state.SetPath(
      "b", Tree::Sharded({DType::kInt32, {7}, {Shard{{0}, bias, part}}}).value()));
  EXPECT_OK(state.SetPath("n", Tree::Int(step)));
  return state;
}

bool HoldsStep(const Tree& state, int64_t step) {
  for (const Shard& shard : state.Find("w")->sharded().shards) {
    std::span<const float> values = shard.data.Values<float>().value();
    for (size_t i = 0; i < values.size(); ++i) {
      if (values[i] != ValueAt(step, shard.start[0] * kCols + static_cast<int64_t>(i))) return false;
    }
  }
  return state.Find("n")->int_value() == step;
}

TEST(MultiprocessTest, SavedByThreeRestoredByTwoAndByOne) {
  TempDir dir;
  RunJob(3, /*background=*/true, [&](int process, std::shared_ptr<Coordinator> coordinator) {
    auto ckpt = Checkpointer::Open(dir.path(), JobOptions(coordinator)).value();
    for (int64_t step = 1; step <= 4; ++step) {
      EXPECT_TRUE(ckpt->Save(ShardedState(step, 3, process), step).value());
    }
    EXPECT_OK(ckpt->WaitUntilFinished());
    // Retention ran on the primary; every process sees its result.
    EXPECT_EQ(ckpt->AllSteps(), (std::vector<int64_t>{3, 4}));
    EXPECT_OK(ckpt->Close());
  });
  RunJob(2, /*background=*/true, [&](int process, std::shared_ptr<Coordinator> coordinator) {
    auto ckpt = Checkpointer::Open(dir.path(), JobOptions(coordinator)).value();
    Tree state = ShardedState(-1, 2, process);
    EXPECT_OK(ckpt->Restore(&state, 4));
    EXPECT_TRUE(HoldsStep(state, 4)) << "process " << process;
    EXPECT_OK(ckpt->Close());
  });
  CheckpointerOptions reader;
  reader.create = false;
  auto ckpt = Checkpointer::Open(dir.path(), reader).value();
  Tree whole = ckpt->RestoreTree(3).value();
  std::span<const float> values = whole.Find("w")->tensor().Values<float>().value();
  for (int64_t i = 0; i < kRows * kCols; ++i) ASSERT_EQ(values[i], ValueAt(3, i)) << i;
  EXPECT_EQ(whole.Find("b")->tensor().Values<int32_t>().value()[3], 3);
  StepMetadata metadata = ckpt->ItemMetadata(3).value();
  for (const LeafMetadata& leaf : metadata.leaves) {
    if (leaf.path == "w") {
      ASSERT_EQ(leaf.saved_boxes.size(), 3u);
      EXPECT_EQ(leaf.saved_boxes[1].start, (std::vector<int64_t>{32, 0}));
      EXPECT_EQ(leaf.saved_boxes[1].shape, (std::vector<int64_t>{32, kCols}));
    }
    if (leaf.path == "b") {
      EXPECT_TRUE(leaf.saved_boxes.empty()) << "replicas are written once";
    }
  }
  // One process restores into a sharding of its own: four uneven boxes.
  Tree state = ShardedState(-1, 1, 0);
  Tensor whole_w = state.Find("w")->sharded().shards[0].data;
  ShardedTensor mine{DType::kFloat32, {kRows, kCols}, {}};
  for (auto [r0, r1, c0, c1] : {std::tuple{0, 50, 0, 13}, std::tuple{0, 50, 13, 40},
                                std::tuple{50, 96, 0, 40}}) {
    mine.shards.push_back(Shard{{r0, c0}, Tensor::Allocate(DType::kFloat32, {r1 - r0, c1 - c0}).value(), 0});
  }
  ASSERT_OK(state.SetPath("w", Tree::Sharded(mine).value()));
  ASSERT_OK(ckpt->Restore(&state, 4));
  for (const Shard& shard : state.Find("w")->sharded().shards) {
    std::span<const float> got = shard.data.Values<float>().value();
    const int64_t width = shard.data.shape()[1];
    for (int64_t i = 0; i < static_cast<int64_t>(got.size()); ++i) {
      const int64_t global = (shard.start[0] + i / width) * kCols + shard.start[1] + i % width;
      ASSERT_EQ(got[i], ValueAt(4, global)) << i;
    }
  }
}

TEST(MultiprocessTest, AnErrorOnOneProcessCommitsNothingAndTheNextSaveWorks) {
  TempDir dir;
  RunJob(3, /*background=*/true, [&](int process, std::shared_ptr<Coordinator> coordinator) {
    auto ckpt = Checkpointer::Open(dir.path(), JobOptions(coordinator)).value();
    EXPECT_TRUE(ckpt->Save(ShardedState(1, 3, process), 1).value());
    EXPECT_OK(ckpt->WaitUntilFinished());
    // Process 1 leaves its slice out: the boxes do not tile the tensor.
    Tree state = ShardedState(2, 3, process);
    if (process == 1) state.Find("w")->sharded().shards.clear();
    EXPECT_TRUE(ckpt->Save(state, 2).value());  // the blocking phase succeeds everywhere
    Status failed = ckpt->WaitUntilFinished();
    EXPECT_EQ(failed.code(), Status::Code::kInvalidArgument) << failed.ToString();
    EXPECT_THAT(failed.message(), HasSubstr("do not tile"));
    // Where: process 1's rows, 32 to 63, which no process holds as replica 0.
    EXPECT_THAT(failed.message(), HasSubstr("none covers [32:33, 0:1]"));
    EXPECT_THAT(failed.message(), HasSubstr("replica 0"));
    EXPECT_EQ(ckpt->AllSteps(), (std::vector<int64_t>{1}));
    // A tree of another shape on process 2: refused alike.
    state = ShardedState(3, 3, process);
    if (process == 2) {
      ASSERT_OK(state.SetPath("extra", Tree::Int(1)));
    }
    EXPECT_TRUE(ckpt->Save(state, 3).value());
    failed = ckpt->WaitUntilFinished();
    EXPECT_THAT(failed.message(), HasSubstr("every process must save the same tree"));
    EXPECT_THAT(failed.message(),
                HasSubstr("the primary (process 0) lacks 'extra', which process 2 saved"));
    // The primary lacks a leaf the others hold: the primary is named.
    state = ShardedState(3, 3, process);
    if (process == 0) {
      ASSERT_OK(state.SetPath("m", Tree::Int(1)));
    }
    EXPECT_TRUE(ckpt->Save(state, 3).value());
    failed = ckpt->WaitUntilFinished();
    EXPECT_THAT(failed.message(), HasSubstr("process 1 lacks 'm', which the primary (process 0) saved"));
    // A bad option on process 0 fails the blocking phase of every process.
    SaveOptions bad;
    if (process == 0) bad.assume_unchanged = {"nowhere"};
    Result<bool> refused = ckpt->Save(ShardedState(4, 3, process), 4, bad);
    EXPECT_EQ(refused.status().code(), Status::Code::kInvalidArgument);
    EXPECT_THAT(refused.status().message(), HasSubstr("process 0"));
    // And the job goes on.
    EXPECT_TRUE(ckpt->Save(ShardedState(5, 3, process), 5).value());
    EXPECT_OK(ckpt->WaitUntilFinished());
    EXPECT_EQ(ckpt->AllSteps(), (std::vector<int64_t>{1, 5}));
    Tree restored = ShardedState(-1, 3, process);
    EXPECT_OK(ckpt->Restore(&restored, 5));
    EXPECT_TRUE(HoldsStep(restored, 5));
    EXPECT_OK(ckpt->Close());
  });
}

TEST(MultiprocessTest, WithoutBackgroundCallsTheCommitWaitsForTheCaller) {
  TempDir dir;
  CheckpointerOptions reader_options;
  reader_options.create = false;
  RunJob(2, /*background=*/false, [&](int process, std::shared_ptr<Coordinator> coordinator) {
    auto ckpt = Checkpointer::Open(dir.path(), JobOptions(coordinator)).value();
    EXPECT_TRUE(ckpt->Save(ShardedState(1, 2, process), 1).value());
    EXPECT_OK(coordinator->Barrier());
    if (process == 0) {
      // Written in the background, but not committed: no process may call
      // the coordinator from there.
      auto reader = Checkpointer::Open(dir.path(), reader_options).value();
      EXPECT_TRUE(reader->AllSteps().empty());
    }
    // Listed, and the latest step, but not readable until committed: as the
    // latest step or by number, every read says so.
    EXPECT_EQ(ckpt->AllSteps(), (std::vector<int64_t>{1}));
    EXPECT_EQ(ckpt->LatestStep(), std::optional<int64_t>(1));
    EXPECT_EQ(ckpt->RestoreTree(1).status().code(), Status::Code::kFailedPrecondition);
    EXPECT_EQ(ckpt->RestoreTree().status().code(), Status::Code::kFailedPrecondition);
    EXPECT_EQ(ckpt->ItemMetadata().status().code(), Status::Code::kFailedPrecondition);
    Tree latest = ShardedState(-1, 2, process);
    EXPECT_EQ(ckpt->Restore(&latest).code(), Status::Code::kFailedPrecondition);
    EXPECT_THAT(ckpt->Restore(&latest).message(), HasSubstr("not committed yet"));
    EXPECT_OK(coordinator->Barrier());
    EXPECT_OK(ckpt->WaitUntilFinished());
    EXPECT_EQ(ckpt->AllSteps(), (std::vector<int64_t>{1}));
    EXPECT_OK(ckpt->Restore(&latest));
    EXPECT_TRUE(HoldsStep(latest, 1));
    EXPECT_OK(ckpt->Close());
  });
  auto reader = Checkpointer::Open(dir.path(), reader_options).value();
  EXPECT_EQ(reader->AllSteps(), (std::vector<int64_t>{1}));
}

TEST(MultiprocessTest, MaybeSaveEveryStepWhileTheLastSaveCommitsInTheBackground) {
  // The next step's collectives must wait for the background's commit
  // round: two threads of a process in rounds at once would mix them up.
  TempDir dir;
  RunJob(3, /*background=*/true, [&](int process, std::shared_ptr<Coordinator> coordinator) {
    CheckpointerOptions options = JobOptions(coordinator);
    options.save_interval_steps = 2;
    auto ckpt = Checkpointer::Open(dir.path(), options).value();
    for (int64_t step = 0; step < 12; ++step) {
      EXPECT_EQ(ckpt->MaybeSave(ShardedState(step, 3, process), step).value(), step % 2 == 0);
      EXPECT_EQ(ckpt->ShouldSave(step + 1), (step + 1) % 2 == 0);
    }
    EXPECT_OK(ckpt->WaitUntilFinished());
    EXPECT_EQ(ckpt->AllSteps(), (std::vector<int64_t>{8, 10}));
    EXPECT_OK(ckpt->Close());
  });
}

TEST(MultiprocessTest, OptionsThatDifferPerProcessFailTheSaveEverywhere) {
  TempDir dir;
  RunJob(3, /*background=*/true, [&](int process, std::shared_ptr<Coordinator> coordinator) {
    auto ckpt = Checkpointer::Open(dir.path(), JobOptions(coordinator)).value();
    SaveOptions options;
    options.metrics = {{"loss", process == 1 ? std::nan("") : 0.5}};
    Result<bool> refused = ckpt->Save(ShardedState(1, 3, process), 1, options);
    EXPECT_EQ(refused.status().code(), Status::Code::kInvalidArgument);
    EXPECT_THAT(refused.status().message(), HasSubstr("process 1"));
    EXPECT_TRUE(ckpt->AllSteps().empty());
    EXPECT_TRUE(ckpt->Save(ShardedState(2, 3, process), 2).value());
    EXPECT_OK(ckpt->Close());
  });
}

TEST(MultiprocessTest, AFailedBeginRoundGivesBackItsStagingSlots) {
  // Each process's Prepare copies the chunks it expects to be new into
  // staging slots; a begin round failing elsewhere must give them back, or
  // a few failures leave the next save no slot and it waits for ever.
  TempDir dir;
  RunJob(3, /*background=*/true, [&](int process, std::shared_ptr<Coordinator> coordinator) {
    CheckpointerOptions options = JobOptions(coordinator);
    options.staging_bytes = 16 * 4096;  // 16 slots
    auto ckpt = Checkpointer::Open(dir.path(), options).value();
    auto state_for = [&](int64_t step) {
      constexpr int64_t kPer = 64 * 1024;  // 64 chunks of float32 per process
      Tensor data = Tensor::Allocate(DType::kFloat32, {kPer}).value();
      std::span<float> values = data.MutableValues<float>().value();
      for (int64_t i = 0; i < kPer; ++i) values[i] = static_cast<float>(step * 1e6 + i);
      Tree state;
      EXPECT_OK(state.SetPath("v", Tree::Sharded({DType::kFloat32, {3 * kPer},
                                                  {Shard{{process * kPer}, data, 0}}})
                                       .value()));
      return state;
    };
    SaveOptions bad;
    bad.metrics = {{"loss", process == 1 ? std::nan("") : 1.0}};
    for (int64_t step = 1; step <= 4; ++step) {
      EXPECT_EQ(ckpt->Save(state_for(step), step, bad).status().code(),
                Status::Code::kInvalidArgument);
    }
    EXPECT_TRUE(ckpt->Save(state_for(5), 5).value());
    EXPECT_OK(ckpt->WaitUntilFinished());
    EXPECT_EQ(ckpt->AllSteps(), (std::vector<int64_t>{5}));
    EXPECT_OK(ckpt->Close());
  });
}

TEST(MultiprocessTest, APreemptionSignalledOnOneProcessIsSeenByAll) {
  TempDir dir;
  RunJob(3, /*background=*/true, [&](int process, std::shared_ptr<Coordinator> coordinator) {
    CheckpointerOptions options = JobOptions(coordinator);
    options.save_interval_steps = 100;
    auto ckpt = Checkpointer::Open(dir.path(), options).value();
    EXPECT_TRUE(ckpt->MaybeSave(ShardedState(0, 3, process), 0).value());  // the first save
    EXPECT_FALSE(ckpt->ShouldSave(7));
    if (process == 2) ckpt->SignalPreemption();
    EXPECT_TRUE(ckpt->ShouldSave(7)) << "process " << process;
    EXPECT_TRUE(ckpt->MaybeSave(ShardedState(7, 3, process), 7).value());
    EXPECT_OK(ckpt->WaitUntilFinished());
    EXPECT_FALSE(ckpt->ShouldSave(8));  // cleared by the save
    EXPECT_OK(ckpt->Close());
  });
}

TEST(MultiprocessTest, ActiveProcessesAndAnotherPrimary) {
  TempDir dir;
  RunJob(3, /*background=*/true, [&](int process, std::shared_ptr<Coordinator> coordinator) {
    CheckpointerOptions options = JobOptions(coordinator);
    options.multiprocessing.active_processes = {0, 2};
    options.multiprocessing.primary_host = 2;
    Result<std::unique_ptr<Checkpointer>> opened = Checkpointer::Open(dir.path(), options);
    if (process == 1) {
      EXPECT_EQ(opened.status().code(), Status::Code::kInvalidArgument);
      EXPECT_THAT(opened.status().message(), HasSubstr("not in multiprocessing.active_processes"));
      return;
    }
    auto ckpt = std::move(opened).value();
    const int part = process == 0 ? 0 : 1;
    EXPECT_TRUE(ckpt->Save(ShardedState(1, 2, part), 1).value());
    EXPECT_OK(ckpt->Delete(1));
    EXPECT_TRUE(ckpt->AllSteps().empty());
    EXPECT_TRUE(ckpt->Save(ShardedState(2, 2, part), 2).value());
    EXPECT_OK(ckpt->CollectGarbage().status());
    Tree state = ShardedState(-1, 2, part);
    EXPECT_OK(ckpt->Restore(&state));
    EXPECT_TRUE(HoldsStep(state, 2));
    EXPECT_OK(ckpt->Close());
  });
}

TEST(MultiprocessTest, OptionsAreChecked) {
  TempDir dir;
  RunJob(2, /*background=*/true, [&](int, std::shared_ptr<Coordinator> coordinator) {
    CheckpointerOptions options = JobOptions(coordinator);
    options.multiprocessing.primary_host = 2;
    EXPECT_EQ(Checkpointer::Open(dir.path(), options).status().code(),
              Status::Code::kInvalidArgument);
    options = JobOptions(coordinator);
    options.multiprocessing.active_processes = {1, 0};
    EXPECT_EQ(Checkpointer::Open(dir.path(), options).status().code(),
              Status::Code::kInvalidArgument);
    options = JobOptions(coordinator);
    options.multiprocessing.active_processes = {1};
    EXPECT_THAT(Checkpointer::Open(dir.path(), options).status().message(),
                HasSubstr("primary_host 0 is not in active_processes"));
    options = JobOptions(coordinator);
    options.max_delta_chain = 2;
    EXPECT_EQ(Checkpointer::Open(dir.path(), options).status().code(),
              Status::Code::kNotSupported);
  });
}

TEST(MultiprocessTest, ASingleProcessSavesShardsThatTile) {
  TempDir dir;
  CheckpointerOptions options;
  options.chunk_size_bytes = 4096;
  auto ckpt = Checkpointer::Open(dir.path(), options).value();
  // Two of three slices: a single process must hold every element.
  Tree state = ShardedState(1, 3, 0);
  Tree second = ShardedState(1, 3, 1);
  state.Find("w")->sharded().shards.push_back(second.Find("w")->sharded().shards[0]);
  Result<bool> refused = ckpt->Save(state, 1);
  EXPECT_EQ(refused.status().code(), Status::Code::kInvalidArgument);
  EXPECT_THAT(refused.status().message(), HasSubstr("do not tile"));
  EXPECT_THAT(refused.status().message(), HasSubstr("none covers [64:65, 0:1]"));
  EXPECT_TRUE(ckpt->AllSteps().empty());
  Tree third = ShardedState(1, 3, 2);
  state.Find("w")->sharded().shards.push_back(third.Find("w")->sharded().shards[0]);
  EXPECT_TRUE(ckpt->Save(state, 1).value());
  EXPECT_OK(ckpt->WaitUntilFinished());
  Tree restored = ShardedState(-1, 1, 0);
  EXPECT_OK(ckpt->Restore(&restored));
  EXPECT_TRUE(HoldsStep(restored, 1));
  // Overlapping shards of one replica are refused when the leaf is made.
  ShardedTensor overlapping{DType::kFloat32, {4}, {}};
  overlapping.shards.push_back(Shard{{0}, Tensor::Allocate(DType::kFloat32, {3}).value(), 0});
  overlapping.shards.push_back(Shard{{2}, Tensor::Allocate(DType::kFloat32, {2}).value(), 0});
  EXPECT_EQ(Tree::Sharded(overlapping).status().code(), Status::Code::kInvalidArgument);
  overlapping.shards[1].replica_id = 1;
  EXPECT_OK(Tree::Sharded(overlapping).status());
}

TEST(MultiprocessTest, ManyShardsSaveAndRestoreInLinearithmicTime) {
  // 60,000 one-row shards saved, then restored into one-row shards offset by
  // half a row's worth: finding each restored shard's saved boxes by looking
  // at all of them would take 3.6e9 steps (minutes; seconds now).
  constexpr int64_t kRows = 60000;
  TempDir dir;
  auto ckpt = Checkpointer::Open(dir.path(), CheckpointerOptions()).value();
  auto sharded_state = [&](int64_t first_rows, float scale) {
    ShardedTensor sharded{DType::kFloat32, {kRows, 2}, {}};
    for (int64_t row = 0; row < kRows;) {
      const int64_t rows = row == 0 ? first_rows : std::min<int64_t>(2, kRows - row);
      Tensor data = Tensor::Allocate(DType::kFloat32, {rows, 2}).value();
      float* values = data.MutableValues<float>().value().data();
      for (int64_t i = 0; i < rows * 2; ++i) values[i] = scale * static_cast<float>(row * 2 + i);
      sharded.shards.push_back(Shard{{row, 0}, std::move(data), 0});
      row += rows;
    }
    Tree tree;
    EXPECT_OK(tree.SetPath("embedding", Tree::Sharded(std::move(sharded)).value()));
    return tree;
  };
  ASSERT_TRUE(ckpt->Save(sharded_state(2, 1.0f), 1).value());
  ASSERT_OK(ckpt->WaitUntilFinished());
  Tree restored = sharded_state(1, 0.0f);  // boxes straddling the saved ones
  ASSERT_OK(ckpt->Restore(&restored, 1));
  EXPECT_TRUE(restored.ContentEquals(sharded_state(1, 1.0f)));
}

// ---- The messages ----

TEST(MultiprocessMessagesTest, VerdictsRoundTripAndMalformedOnesAreCorruption) {
  Status status;
  Result<uint64_t> value = DecodeVerdict(EncodeVerdict(Status::OK(), 42), &status);
  ASSERT_OK(value.status());
  EXPECT_EQ(*value, 42u);
  EXPECT_OK(status);
  value = DecodeVerdict(EncodeVerdict(Status::Busy("elsewhere")), &status);
  ASSERT_OK(value.status());
  EXPECT_EQ(status.code(), Status::Code::kBusy);
  EXPECT_EQ(status.message(), "elsewhere");
  const std::string good = EncodeVerdict(Status::IOError("disk"), 7);
  for (size_t size = 0; size < good.size(); ++size) {
    EXPECT_TRUE(DecodeVerdict(good.substr(0, size), &status).status().IsCorruption()) << size;
  }
  std::string bad_code = good;
  bad_code[0] = 99;
  EXPECT_TRUE(DecodeVerdict(bad_code, &status).status().IsCorruption());
}

TEST(MultiprocessMessagesTest, PartsRoundTripAndEveryTruncationIsCorruption) {
  Manifest manifest;
  manifest.step = 3;
  manifest.nodes = FlattenTree(ShardedState(3, 2, 1)).value();
  for (ManifestNode& node : manifest.nodes) {
    if (node.kind != Tree::Kind::kTensor) continue;
    node.boxed = true;
    for (ManifestBox& box : node.boxes) {
      box.chunk_count = 1;
      node.chunks.push_back({ChunkDigest{1, 2}, static_cast<uint32_t>(BoxElements(box.box) * 4), 9});
    }
  }
  IndexEntry entry;
  entry.digest = ChunkDigest{1, 2};
  entry.location.raw_size = 48 * 40 * 4;
  entry.location.stored_size = 9;
  const std::string good = EncodePart(Status::OK(), manifest, {entry});
  Status status;
  Result<ProcessPart> part = DecodePart(good, 1, 77, &status);
  ASSERT_OK(part.status());
  EXPECT_OK(status);
  ASSERT_EQ(part->new_chunks.size(), 1u);
  EXPECT_EQ(part->new_chunks[0].location.generation, 77u);
  EXPECT_EQ(part->manifest.nodes.size(), manifest.nodes.size());
  for (size_t size = 0; size < good.size(); ++size) {
    Result<ProcessPart> cut = DecodePart(good.substr(0, size), 1, 77, &status);
    EXPECT_FALSE(cut.ok()) << size;
  }
  // A process's own error travels in its part.
  part = DecodePart(EncodePart(Status::IOError("disk full"), manifest, {}), 2, 78, &status);
  ASSERT_OK(part.status());
  EXPECT_EQ(status.code(), Status::Code::kIOError);
}

TEST(MultiprocessMessagesTest, MergeTilesBoxesAndKeepsEachNewChunkOnce) {
  auto part_of = [](int part, uint64_t digest_low) {
    ProcessPart result;
    result.manifest.step = 1;
    result.manifest.nodes = FlattenTree(ShardedState(1, 2, part)).value();
    for (ManifestNode& node : result.manifest.nodes) {
      if (node.kind != Tree::Kind::kTensor) continue;
      node.boxed = true;
      for (ManifestBox& box : node.boxes) {
        box.chunk_count = 1;
        node.chunks.push_back({ChunkDigest{digest_low, 0},
                               static_cast<uint32_t>(BoxElements(box.box) * DTypeSize(node.dtype)), 5});
      }
    }
    result.new_chunks.push_back({ChunkDigest{digest_low, 0}, {}});
    result.new_chunks.push_back({ChunkDigest{99, 0}, {}});  // written by both
    return result;
  };
  std::vector<ProcessPart> parts = {part_of(0, 1), part_of(1, 2)};
  // "b" is replicated: both parts name its whole box, replica 0 of part 0
  // and replica 1 of part 1; only the first is among the boxes.
  std::vector<IndexEntry> new_chunks;
  Result<Manifest> merged = MergeParts(parts, 0, &new_chunks);
  ASSERT_OK(merged.status());
  EXPECT_EQ(new_chunks.size(), 3u);
  for (const ManifestNode& node : merged->nodes) {
    if (node.path == "w") {
      ASSERT_EQ(node.boxes.size(), 2u);
      EXPECT_EQ(node.boxes[0].box.start, (std::vector<int64_t>{0, 0}));
    }
    if (node.path == "b") {
      EXPECT_FALSE(node.boxed);
    }
  }
  // The same slice twice: overlapping boxes.
  parts = {part_of(0, 1), part_of(0, 2)};
  new_chunks.clear();
  EXPECT_THAT(MergeParts(parts, 0, &new_chunks).status().message(), HasSubstr("overlap"));
}

}  // namespace
}  // namespace ckptdb
