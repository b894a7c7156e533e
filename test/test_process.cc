// A helper program the tests run as a separate process, so that crashes,
// locks and read-only readers are exercised across real process boundaries.
//
//   test_process save-loop DIR FIRST_STEP MEGABYTES LOG [MAX_TO_KEEP]
//       saves steps FIRST_STEP, FIRST_STEP+1, ... forever, asynchronously;
//       after each save has committed, appends the step to LOG. With
//       MAX_TO_KEEP, retention and GC run after every save (so a kill can hit
//       them); without, every step is kept. Meant to be killed.
//   test_process save-and-die DIR OFFSET MAX_DELTA_CHAIN STEP...
//       saves MakeStepState(STEP + OFFSET, 1) as each STEP with
//       SmallStoreOptions, waits for the commits, and exits without closing
//       (the records stay in the write-ahead log). Exit 0: all committed.
//   test_process verify DIR MEGABYTES STEP...
//       opens DIR read-only; restores each step and checks every byte.
//   test_process open-writer DIR
//       opens DIR for writing. Exit 0: opened; 3: Busy; 1: other error.
//   test_process hold-and-die DIR STEP
//       opens DIR read-only, holds STEP, then dies by SIGKILL holding it.
//   test_process evaluate DIR MEGABYTES LAST_STEP
//       follows the writer with IterNewCheckpoints until it has visited
//       LAST_STEP; restores every visited step and checks every byte. Prints
//       "visit STEP" for each (flushed at once), then "visited N", and exits 0
//       when every restore was exact.
//   test_process repair DIR
//       repairs DIR (ckpt-inspect repair's RepairStore). Exit 0: done; 3:
//       Busy; 1: other error. Meant to be killed at random moments too.
//   test_process restore-loop DIR MEGABYTES SECONDS
//       for SECONDS, opens DIR read-only, restores every step and checks
//       every byte, closes, again and again; opens refused (a repair is
//       running, or the store is damaged until it has run) are counted.
//       Prints "restored N, refused N"; exit 0, or 2 on a wrong byte.
//   test_process open-unprivileged DIR reader|writer
//       drops root privileges (to uid and gid 65534) if it has them, then
//       opens DIR. Exit 0: IOError naming DIR; 1: opened; 2: anything else
//       (an exception crossing the API aborts it).

#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "ckptdb/ckptdb.h"
#include "repair.h"
#include "test_util.h"

using ckptdb::Checkpointer;
using ckptdb::CheckpointerOptions;

namespace {

int Fail(const std::string& what, const ckptdb::Status& status) {
  std::fprintf(stderr, "test_process: %s: %s\n", what.c_str(), status.ToString().c_str());
  return 1;
}

int SaveLoop(const std::string& dir, int64_t first_step, size_t megabytes,
             const std::string& log_path, std::optional<int64_t> max_to_keep) {
  CheckpointerOptions options;
  options.max_to_keep = max_to_keep;
  auto checkpointer = Checkpointer::Open(dir, options);
  if (!checkpointer.ok()) return Fail("open " + dir, checkpointer.status());
  std::ofstream log(log_path, std::ios::app);
  // The frozen half of MakeStepState is the same at every step: declared,
  // every save after this process's first reuses its chunks unread.
  ckptdb::SaveOptions save_options = ckptdb::testing::Forced();
  save_options.assume_unchanged = {"params/frozen_embedding"};
  for (int64_t step = first_step;; ++step) {
    ckptdb::Tree state = ckptdb::testing::MakeStepState(step, megabytes);
    auto saved = (*checkpointer)->Save(state, step, save_options);
    if (!saved.ok()) return Fail("save", saved.status());
    ckptdb::Status committed = (*checkpointer)->WaitUntilFinished();
    if (!committed.ok()) return Fail("save in the background", committed);
    log << step << std::endl;  // flushed: the kernel keeps it when we are killed
  }
}

// testing::SaveSmallStoreSteps, then exits at once, closing nothing
// (testing::SaveStepsAndDie).
int SaveAndDie(const std::string& dir, int64_t offset, uint32_t max_delta_chain,
               const std::vector<int64_t>& steps) {
  auto saved = ckptdb::testing::SaveSmallStoreSteps(dir, offset, max_delta_chain, steps);
  if (!saved.ok()) return Fail("save into " + dir, saved.status());
  std::_Exit(0);
}

int Verify(const std::string& dir, size_t megabytes, const std::vector<int64_t>& steps) {
  CheckpointerOptions options;
  options.create = false;
  auto checkpointer = Checkpointer::Open(dir, options);
  if (!checkpointer.ok()) return Fail("open read-only " + dir, checkpointer.status());
  for (int64_t step : steps) {
    auto restored = (*checkpointer)->RestoreTree(step);
    if (!restored.ok()) return Fail("restore step " + std::to_string(step), restored.status());
    if (!restored->ContentEquals(ckptdb::testing::MakeStepState(step, megabytes))) {
      std::fprintf(stderr, "test_process: step %lld restored different bytes\n",
                   static_cast<long long>(step));
      return 2;
    }
  }
  return 0;
}

int OpenWriter(const std::string& dir) {
  auto checkpointer = Checkpointer::Open(dir, CheckpointerOptions());
  if (checkpointer.ok()) return 0;
  std::fprintf(stderr, "test_process: %s\n", checkpointer.status().ToString().c_str());
  return checkpointer.status().code() == ckptdb::Status::Code::kBusy ? 3 : 1;
}

int HoldAndDie(const std::string& dir, int64_t step) {
  CheckpointerOptions options;
  options.create = false;
  auto checkpointer = Checkpointer::Open(dir, options);
  if (!checkpointer.ok()) return Fail("open read-only " + dir, checkpointer.status());
  auto hold = (*checkpointer)->HoldStep(step);
  if (!hold.ok()) return Fail("hold", hold.status());
  raise(SIGKILL);
  return 1;
}

int Evaluate(const std::string& dir, size_t megabytes, int64_t last_step) {
  CheckpointerOptions options;
  options.create = false;
  auto checkpointer = Checkpointer::Open(dir, options);
  if (!checkpointer.ok()) return Fail("open read-only " + dir, checkpointer.status());
  ckptdb::IterateOptions iterate;
  iterate.poll_interval = std::chrono::milliseconds(2);
  iterate.timeout = std::chrono::seconds(60);  // a stuck writer ends the test
  int visited = 0;
  ckptdb::Status failure;
  ckptdb::Status status =
      (*checkpointer)
          ->IterNewCheckpoints(
              [&](int64_t step) {
                auto restored = (*checkpointer)->RestoreTree(step);
                if (!restored.ok()) {
                  failure =
                      restored.status().WithContext("restore of held step " + std::to_string(step));
                  return false;
                }
                if (!restored->ContentEquals(ckptdb::testing::MakeStepState(step, megabytes))) {
                  failure = ckptdb::Status::Corruption("step " + std::to_string(step) +
                                                       " restored wrong bytes");
                  return false;
                }
                ++visited;
                std::printf("visit %lld\n", static_cast<long long>(step));
                std::fflush(stdout);  // the trainer waits for the first one
                return step < last_step;
              },
              iterate);
  if (!status.ok()) return Fail("iterate", status);
  if (!failure.ok()) return Fail("evaluate", failure);
  std::printf("visited %d\n", visited);
  return 0;
}

int Repair(const std::string& dir) {
  auto report = ckptdb::RepairStore(dir);
  if (report.ok()) return 0;
  std::fprintf(stderr, "test_process: %s\n", report.status().ToString().c_str());
  return report.status().code() == ckptdb::Status::Code::kBusy ? 3 : 1;
}

int RestoreLoop(const std::string& dir, size_t megabytes, int seconds) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  CheckpointerOptions options;
  options.create = false;
  int restored = 0;
  int refused = 0;
  while (std::chrono::steady_clock::now() < end) {
    auto checkpointer = Checkpointer::Open(dir, options);
    if (!checkpointer.ok()) {
      ++refused;
      continue;
    }
    for (int64_t step : (*checkpointer)->AllSteps()) {
      auto tree = (*checkpointer)->RestoreTree(step);
      if (!tree.ok()) continue;  // damaged, or pruned meanwhile: an error, never wrong bytes
      if (!tree->ContentEquals(ckptdb::testing::MakeStepState(step, megabytes))) {
        std::fprintf(stderr, "test_process: step %lld restored wrong bytes\n",
                     static_cast<long long>(step));
        return 2;
      }
      ++restored;
    }
  }
  std::printf("restored %d, refused %d\n", restored, refused);
  return 0;
}

}  // namespace

int OpenUnprivileged(const std::string& dir, bool writer) {
  if (::geteuid() == 0 && (::setgid(65534) != 0 || ::setuid(65534) != 0)) {
    std::perror("test_process: dropping privileges");
    return 2;
  }
  CheckpointerOptions options;
  options.create = writer;
  auto opened = Checkpointer::Open(dir, options);
  if (opened.ok()) return 1;
  std::printf("%s\n", opened.status().ToString().c_str());
  const bool named = opened.status().ToString().find(dir) != std::string::npos;
  return opened.status().code() == ckptdb::Status::Code::kIOError && named ? 0 : 2;
}

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if ((args.size() == 5 || args.size() == 6) && args[0] == "save-loop") {
    std::optional<int64_t> max_to_keep;
    if (args.size() == 6) max_to_keep = std::stoll(args[5]);
    return SaveLoop(args[1], std::stoll(args[2]), std::stoul(args[3]), args[4], max_to_keep);
  }
  if (args.size() >= 3 && args[0] == "verify") {
    std::vector<int64_t> steps;
    for (size_t i = 3; i < args.size(); ++i) steps.push_back(std::stoll(args[i]));
    return Verify(args[1], std::stoul(args[2]), steps);
  }
  if (args.size() >= 4 && args[0] == "save-and-die") {
    std::vector<int64_t> steps;
    for (size_t i = 4; i < args.size(); ++i) steps.push_back(std::stoll(args[i]));
    return SaveAndDie(args[1], std::stoll(args[2]), static_cast<uint32_t>(std::stoul(args[3])),
                      steps);
  }
  if (args.size() == 2 && args[0] == "open-writer") return OpenWriter(args[1]);
  if (args.size() == 3 && args[0] == "open-unprivileged") {
    return OpenUnprivileged(args[1], args[2] == "writer");
  }
  if (args.size() == 3 && args[0] == "hold-and-die")
    return HoldAndDie(args[1], std::stoll(args[2]));
  if (args.size() == 4 && args[0] == "evaluate") {
    return Evaluate(args[1], std::stoul(args[2]), std::stoll(args[3]));
  }
  if (args.size() == 2 && args[0] == "repair") return Repair(args[1]);
  if (args.size() == 4 && args[0] == "restore-loop") {
    return RestoreLoop(args[1], std::stoul(args[2]), std::stoi(args[3]));
  }
  std::fprintf(stderr, "usage: see the comment at the top of test/test_process.cc\n");
  return 2;
}
