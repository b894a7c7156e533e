// The multi-process scenarios of the test suite, run under mpirun by
// test/mpi/run.sh (one process per rank; public API only):
//
//   mpi_checkpoint save DIR --first F --last L [--kill-rank R --kill-at S]
//                           [--step-ms T] [--pid-dir D] [--inactive R] [--primary P]
//       trains steps F..L (T ms each), saving each asynchronously from every
//       rank; rank R kills itself (SIGKILL) right after its Save of step S
//       returned
//   mpi_checkpoint restore DIR --step S [--inactive R] [--primary P]
//       every rank restores its own sharding of step S (kLatestStep: -1) and
//       checks every element; rank 0 also restores the whole tree
//   mpi_checkpoint evaluate DIR --until S     (one process, no MPI)
//       follows the trainer read-only until it has checked step S
//   mpi_checkpoint steps DIR                  (one process, no MPI)
//       prints the steps the store holds
//   mpi_checkpoint check DIR                  (one process, no MPI)
//       restores every step whole and checks every element
//
// save --pid-dir D: each rank writes its pid to D/rank-R (for a harness
// that kills ranks at random). --inactive R: rank R is not in
// active_processes (its Open must fail; the others are renumbered without
// it); --primary P: the primary_host.
//
// The state: a row-sharded float32 kernel, a bfloat16 tensor sharded on a
// grid, a bias replicated on every rank, a table every rank holds whole,
// and a scalar. Every value is a function of the step and the element's
// global index, so any sharding can check what it restored.
#include <mpi.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "ckptdb/ckptdb.h"
#include "ckptdb/mpi.h"

namespace {

using ckptdb::DType;
using ckptdb::Shard;
using ckptdb::ShardedTensor;
using ckptdb::Tensor;
using ckptdb::Tree;

constexpr int64_t kKernelRows = 512;
constexpr int64_t kKernelCols = 96;
constexpr int64_t kMuRows = 60;
constexpr int64_t kMuCols = 44;
constexpr int64_t kBias = 96;
constexpr int64_t kTable = 1000;

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "mpi_checkpoint: %s\n", what.c_str());
  std::fflush(stderr);
  std::exit(1);
}

template <typename T>
T Check(ckptdb::Result<T> result, const std::string& what) {
  if (!result.ok()) Fail(what + ": " + result.status().ToString());
  return std::move(result).value();
}
void Check(const ckptdb::Status& status, const std::string& what) {
  if (!status.ok()) Fail(what + ": " + status.ToString());
}

float KernelValue(int64_t step, int64_t index) {
  return static_cast<float>((index * 31 + step * 1009) % 100003) / 7.0f;
}
uint16_t MuBits(int64_t step, int64_t index) {
  float value = static_cast<float>((index * 17 + step * 131) % 4099) / 3.0f - 600.0f;
  uint32_t bits = 0;
  std::memcpy(&bits, &value, 4);
  return static_cast<uint16_t>(bits >> 16);
}
float BiasValue(int64_t step, int64_t index) { return static_cast<float>(index - step) * 0.5f; }
int64_t TableValue(int64_t step, int64_t index) { return index * 1000003 + step; }

// [begin, end) of part `part` of `extent` cut into `parts` (uneven sizes).
std::pair<int64_t, int64_t> Slice(int64_t extent, int parts, int part) {
  return {extent * part / parts, extent * (part + 1) / parts};
}

// Fills `shard` (a box at `start` of a global tensor with `cols` columns)
// with value(step, global index), or checks that it holds it.
template <typename T, typename Value>
bool FillOrCheck(Tensor& data, const std::vector<int64_t>& start, int64_t cols, int64_t step,
                 Value value, bool check) {
  T* values = reinterpret_cast<T*>(data.mutable_data());
  const std::vector<int64_t>& shape = data.shape();
  const int64_t rows = shape.size() == 2 ? shape[0] : 1;
  const int64_t width = shape.back();
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < width; ++c) {
      const int64_t global = shape.size() == 2 ? (start[0] + r) * cols + start[1] + c : start[0] + c;
      const T expected = static_cast<T>(value(step, global));
      if (!check) {
        values[r * width + c] = expected;
      } else if (std::memcmp(&values[r * width + c], &expected, sizeof(T)) != 0) {
        return false;
      }
    }
  }
  return true;
}

struct Layout {
  int rank;
  int count;
};

// The state as `layout` shards it, filled for `step`.
Tree MakeState(Layout layout, int64_t step) {
  Tree state;
  // Kernel: rows cut into one slice per rank.
  {
    auto [begin, end] = Slice(kKernelRows, layout.count, layout.rank);
    Tensor data = Check(Tensor::Allocate(DType::kFloat32, {end - begin, kKernelCols}), "kernel");
    FillOrCheck<float>(data, {begin, 0}, kKernelCols, step, KernelValue, false);
    ShardedTensor kernel{DType::kFloat32, {kKernelRows, kKernelCols}, {Shard{{begin, 0}, data, 0}}};
    Check(state.SetPath("params/dense/kernel", Check(Tree::Sharded(kernel), "kernel")), "set");
  }
  // Bias: replicated, one replica per rank.
  {
    Tensor data = Check(Tensor::Allocate(DType::kFloat32, {kBias}), "bias");
    FillOrCheck<float>(data, {0}, kBias, step, BiasValue, false);
    ShardedTensor bias{DType::kFloat32, {kBias}, {Shard{{0}, data, layout.rank}}};
    Check(state.SetPath("params/dense/bias", Check(Tree::Sharded(bias), "bias")), "set");
  }
  // Mu: a grid of 2 column blocks when the rank count is even; each rank
  // holds two boxes (both row halves of its row slice).
  {
    const int col_parts = layout.count % 2 == 0 ? 2 : 1;
    const int row_parts = layout.count / col_parts;
    auto [r0, r1] = Slice(kMuRows, row_parts, layout.rank / col_parts);
    auto [c0, c1] = Slice(kMuCols, col_parts, layout.rank % col_parts);
    ShardedTensor mu{DType::kBFloat16, {kMuRows, kMuCols}, {}};
    const int64_t middle = (r0 + r1) / 2;
    for (auto [b, e] : {std::pair{r0, middle}, std::pair{middle, r1}}) {
      Tensor data = Check(Tensor::Allocate(DType::kBFloat16, {e - b, c1 - c0}), "mu");
      FillOrCheck<uint16_t>(data, {b, c0}, kMuCols, step, MuBits, false);
      mu.shards.push_back(Shard{{b, c0}, data, 0});
    }
    Check(state.SetPath("opt/mu", Check(Tree::Sharded(mu), "mu")), "set");
  }
  {
    Tensor table = Check(Tensor::Allocate(DType::kInt64, {kTable}), "table");
    FillOrCheck<int64_t>(table, {0}, kTable, step, TableValue, false);
    Check(state.SetPath("table", Tree::Leaf(table)), "set");
  }
  Check(state.SetPath("step", Tree::Int(step)), "set");
  return state;
}

// Every buffer of `state` (as MakeState(layout) shapes it) holds `step`'s values.
bool StateHolds(Tree& state, int64_t step) {
  bool good = true;
  for (Shard& shard : state.Find("params/dense/kernel")->sharded().shards) {
    good &= FillOrCheck<float>(shard.data, shard.start, kKernelCols, step, KernelValue, true);
  }
  for (Shard& shard : state.Find("params/dense/bias")->sharded().shards) {
    good &= FillOrCheck<float>(shard.data, shard.start, kBias, step, BiasValue, true);
  }
  for (Shard& shard : state.Find("opt/mu")->sharded().shards) {
    good &= FillOrCheck<uint16_t>(shard.data, shard.start, kMuCols, step, MuBits, true);
  }
  good &= FillOrCheck<int64_t>(state.Find("table")->tensor(), {0}, kTable, step, TableValue, true);
  good &= state.Find("step")->int_value() == step;
  return good;
}

// The whole tree (RestoreTree) holds `step`'s values.
bool WholeTreeHolds(Tree& tree, int64_t step) {
  bool good = true;
  good &= FillOrCheck<float>(tree.Find("params/dense/kernel")->tensor(), {0, 0}, kKernelCols, step,
                             KernelValue, true);
  good &= FillOrCheck<float>(tree.Find("params/dense/bias")->tensor(), {0}, kBias, step, BiasValue,
                             true);
  good &= FillOrCheck<uint16_t>(tree.Find("opt/mu")->tensor(), {0, 0}, kMuCols, step, MuBits, true);
  good &= FillOrCheck<int64_t>(tree.Find("table")->tensor(), {0}, kTable, step, TableValue, true);
  good &= tree.Find("step")->int_value() == step;
  return good;
}

int64_t Flag(int argc, char** argv, const char* name, int64_t fallback) {
  for (int i = 3; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], name) == 0) return std::atoll(argv[i + 1]);
  }
  return fallback;
}

// The options of every rank. --inactive R leaves rank R out of
// active_processes (the others renumber themselves in `layout`), and
// --primary P makes rank P the primary.
ckptdb::CheckpointerOptions MultiOptions(int argc, char** argv, Layout* layout) {
  ckptdb::CheckpointerOptions options;
  options.multiprocessing.coordinator = Check(ckptdb::MpiCoordinator(), "MpiCoordinator");
  options.chunk_size_bytes = 4096;
  options.max_to_keep = 3;
  options.worker_threads = 1;  // 4 ranks on 2 cores
  options.multiprocessing.primary_host = static_cast<int>(Flag(argc, argv, "--primary", 0));
  const int64_t inactive = Flag(argc, argv, "--inactive", -1);
  if (inactive >= 0) {
    for (int rank = 0; rank < layout->count; ++rank) {
      if (rank != inactive) options.multiprocessing.active_processes.push_back(rank);
    }
    if (layout->rank > inactive) --layout->rank;
    --layout->count;
  }
  return options;
}

// An inactive rank's Open must fail, naming the reason; it then does nothing.
bool Inactive(int argc, char** argv, const std::string& workdir,
              const ckptdb::CheckpointerOptions& options, int rank) {
  if (Flag(argc, argv, "--inactive", -1) != rank) return false;
  ckptdb::Status refused = ckptdb::Checkpointer::Open(workdir, options).status();
  if (refused.code() != ckptdb::Status::Code::kInvalidArgument ||
      refused.message().find("active_processes") == std::string::npos) {
    Fail("an inactive process's Open gave " + refused.ToString());
  }
  return true;
}

int Save(int argc, char** argv, Layout layout) {
  const std::string workdir = argv[2];
  const int world_rank = layout.rank;
  const ckptdb::CheckpointerOptions options = MultiOptions(argc, argv, &layout);
  if (Inactive(argc, argv, workdir, options, world_rank)) return 0;
  const int64_t first = Flag(argc, argv, "--first", 1);
  const int64_t last = Flag(argc, argv, "--last", 5);
  const int64_t kill_rank = Flag(argc, argv, "--kill-rank", -1);
  const int64_t kill_at = Flag(argc, argv, "--kill-at", -1);
  const int64_t step_ms = Flag(argc, argv, "--step-ms", 0);  // "training" between saves
  auto ckpt = Check(ckptdb::Checkpointer::Open(workdir, options), "open " + workdir);
  for (int i = 3; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--pid-dir") != 0) continue;
    const std::string path = std::string(argv[i + 1]) + "/rank-" + std::to_string(layout.rank);
    std::FILE* file = std::fopen(path.c_str(), "w");
    if (file == nullptr) Fail("cannot write " + path);
    std::fprintf(file, "%d\n", static_cast<int>(getpid()));
    std::fclose(file);
  }
  for (int64_t step = first; step <= last; ++step) {
    if (step_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(step_ms));
    Tree state = MakeState(layout, step);
    const bool saved = Check(ckpt->MaybeSave(state, step), "save step " + std::to_string(step));
    if (!saved) Fail("step " + std::to_string(step) + " was not due");
    if (layout.rank == kill_rank && step == kill_at) raise(SIGKILL);
  }
  Check(ckpt->WaitUntilFinished(), "wait");
  // Every process sees the commit, and retention's result.
  const std::vector<int64_t> steps = ckpt->AllSteps();
  if (steps.empty() || steps.back() != last) Fail("the last step is not listed after the wait");
  ckptdb::StepMetadata metadata = Check(ckpt->ItemMetadata(last), "metadata");
  for (const ckptdb::LeafMetadata& leaf : metadata.leaves) {
    const size_t boxes = leaf.saved_boxes.size();
    // The kernel: one box per rank; the replicated bias and the table: saved
    // whole, once; mu: two boxes per rank.
    const auto count = static_cast<size_t>(layout.count);
    const size_t expected = leaf.path == "params/dense/kernel" ? (count == 1 ? 0 : count)
                            : leaf.path == "opt/mu"            ? 2 * count
                                                               : 0;
    if (boxes != expected) {
      Fail("'" + leaf.path + "' was saved as " + std::to_string(boxes) + " boxes");
    }
  }
  Check(ckpt->Close(), "close");
  return 0;
}

int Restore(int argc, char** argv, Layout layout) {
  const std::string workdir = argv[2];
  int64_t step = Flag(argc, argv, "--step", -1);
  const int world_rank = layout.rank;
  const ckptdb::CheckpointerOptions options = MultiOptions(argc, argv, &layout);
  if (Inactive(argc, argv, workdir, options, world_rank)) return 0;
  auto ckpt = Check(ckptdb::Checkpointer::Open(workdir, options), "open " + workdir);
  if (step < 0) step = ckpt->LatestStep().value_or(-1);
  Tree state = MakeState(layout, -7);  // values that no step holds
  Check(ckpt->Restore(&state, step), "restore step " + std::to_string(step));
  if (!StateHolds(state, step)) Fail("rank " + std::to_string(layout.rank) + " restored wrong values");
  if (layout.rank == 0) {
    Tree whole = Check(ckpt->RestoreTree(step), "restore the whole tree");
    if (!WholeTreeHolds(whole, step)) Fail("the whole tree holds wrong values");
  }
  Check(ckpt->Close(), "close");
  std::printf("rank %d of %d restored step %lld\n", layout.rank, layout.count,
              static_cast<long long>(step));
  return 0;
}

int Evaluate(int argc, char** argv) {
  const int64_t until = Flag(argc, argv, "--until", 1);
  ckptdb::CheckpointerOptions options;
  options.create = false;
  options.wait_for_store = std::chrono::seconds(60);
  auto ckpt = Check(ckptdb::Checkpointer::Open(argv[2], options), "open");
  int checked = 0;
  ckptdb::IterateOptions iterate;
  iterate.poll_interval = std::chrono::milliseconds(50);
  iterate.timeout = std::chrono::seconds(120);
  Check(ckpt->IterNewCheckpoints(
            [&](int64_t step) {
              Tree whole = Check(ckpt->RestoreTree(step), "evaluate " + std::to_string(step));
              if (!WholeTreeHolds(whole, step)) Fail("step " + std::to_string(step) + " is wrong");
              ++checked;
              return step < until;
            },
            iterate),
        "follow");
  if (ckpt->LatestStep() != until) Fail("the evaluator stopped before step " + std::to_string(until));
  std::printf("evaluator checked %d steps up to %lld\n", checked, static_cast<long long>(until));
  return 0;
}

int CheckAll(char** argv) {
  ckptdb::CheckpointerOptions options;
  options.create = false;
  auto ckpt = Check(ckptdb::Checkpointer::Open(argv[2], options), "open");
  for (int64_t step : ckpt->AllSteps()) {
    Tree whole = Check(ckpt->RestoreTree(step), "restore step " + std::to_string(step));
    if (!WholeTreeHolds(whole, step)) Fail("step " + std::to_string(step) + " holds wrong values");
  }
  std::printf("%zu steps restored whole and checked\n", ckpt->AllSteps().size());
  return 0;
}

int Steps(char** argv) {
  ckptdb::CheckpointerOptions options;
  options.create = false;
  auto ckpt = Check(ckptdb::Checkpointer::Open(argv[2], options), "open");
  for (int64_t step : ckpt->AllSteps()) std::printf("%lld\n", static_cast<long long>(step));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) Fail("usage: mpi_checkpoint save|restore|evaluate|steps DIR [flags]");
  const std::string command = argv[1];
  if (command == "evaluate") return Evaluate(argc, argv);
  if (command == "steps") return Steps(argv);
  if (command == "check") return CheckAll(argv);
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  Layout layout{};
  MPI_Comm_rank(MPI_COMM_WORLD, &layout.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &layout.count);
  int result = 1;
  if (command == "save") {
    result = Save(argc, argv, layout);
  } else if (command == "restore") {
    result = Restore(argc, argv, layout);
  } else {
    Fail("unknown command " + command);
  }
  MPI_Finalize();
  return result;
}
