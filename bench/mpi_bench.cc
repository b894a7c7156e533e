// Multi-process checkpoints measured (scripts/mpi_bench.sh runs it under
// mpirun and makes the tables):
//
//   mpi_bench metadata DIR SHARDS
//       100 float32 tensors of 1-row shards, SHARDS in all, dealt round-robin
//       to the processes; two saves (all new, then all changed). Prints the
//       manifest's size, the time from Save to the commit seen everywhere
//       (slowest process), the time spent in the coordinator's collectives
//       by the process that waited least in them (the cost of coordinating,
//       without waiting for others' writing), and the bytes the primary
//       gathered.
//   mpi_bench throughput DIR MEGABYTES
//       8 float32 tensors of MEGABYTES in all, row-sharded over the
//       processes; one save (Save to WaitUntilFinished, slowest process),
//       then each process restores its rows (slowest process).
//
// One line of key=value pairs per run, printed by rank 0.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "ckptdb/ckptdb.h"
#include "ckptdb/mpi.h"

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "mpi_bench: %s\n", what.c_str());
  MPI_Abort(MPI_COMM_WORLD, 1);
  std::exit(1);
}
template <typename T>
T Must(ckptdb::Result<T> result, const char* what) {
  if (!result.ok()) Die(std::string(what) + ": " + result.status().ToString());
  return std::move(result).value();
}
void Must(const ckptdb::Status& status, const char* what) {
  if (!status.ok()) Die(std::string(what) + ": " + status.ToString());
}

// Times every collective ckptdb makes, and counts what the primary gathers.
class TimedCoordinator : public ckptdb::Coordinator {
 public:
  explicit TimedCoordinator(std::shared_ptr<ckptdb::Coordinator> inner)
      : inner_(std::move(inner)) {}
  int process_index() const override { return inner_->process_index(); }
  int process_count() const override { return inner_->process_count(); }
  bool background_calls_allowed() const override { return inner_->background_calls_allowed(); }
  ckptdb::Status Barrier() override { return Timed([&] { return inner_->Barrier(); }); }
  ckptdb::Status Broadcast(int root, std::string* bytes) override {
    return Timed([&] { return inner_->Broadcast(root, bytes); });
  }
  ckptdb::Status Gather(int root, const std::string& bytes,
                        std::vector<std::string>* gathered) override {
    ckptdb::Status status = Timed([&] { return inner_->Gather(root, bytes, gathered); });
    for (const std::string& part : *gathered) gathered_bytes_ += part.size();
    return status;
  }
  ckptdb::Result<std::shared_ptr<ckptdb::Coordinator>> Subgroup(
      const std::vector<int>& processes) override {
    return inner_->Subgroup(processes);
  }
  // Seconds spent in collectives and bytes gathered since the last call.
  std::pair<double, uint64_t> Take() {
    auto taken = std::make_pair(seconds_, gathered_bytes_);
    seconds_ = 0;
    gathered_bytes_ = 0;
    return taken;
  }

 private:
  template <typename Call>
  ckptdb::Status Timed(const Call& call) {
    const Clock::time_point start = Clock::now();
    ckptdb::Status status = call();
    seconds_ += std::chrono::duration<double>(Clock::now() - start).count();
    return status;
  }
  std::shared_ptr<ckptdb::Coordinator> inner_;
  double seconds_ = 0;
  uint64_t gathered_bytes_ = 0;
};

double MaxOverRanks(double value) {
  double max = 0;
  MPI_Allreduce(&value, &max, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return max;
}

// The time in collectives of the process that waited least in them (the
// last to arrive): what coordinating costs, without waiting for the
// slowest process's writing.
double MinOverRanks(double value) {
  double min = 0;
  MPI_Allreduce(&value, &min, 1, MPI_DOUBLE, MPI_MIN, MPI_COMM_WORLD);
  return min;
}

// Pseudo-random float32 values with a trained-like spread (little to compress).
// Element i holds a hash of seed + i (bench/python_mpi_bench.py computes the
// same values with numpy).
void Fill(ckptdb::Tensor& tensor, uint64_t seed) {
  std::span<float> values = Must(tensor.MutableValues<float>(), "values");
  for (size_t i = 0; i < values.size(); ++i) {
    uint64_t x = (seed + i) * 0x9e3779b97f4a7c15ull;
    x ^= x >> 29;
    values[i] = static_cast<float>(static_cast<int64_t>(x % 2000001) - 1000000) * 1e-7f;
  }
}

struct Job {
  int rank = 0;
  int count = 1;
  std::shared_ptr<TimedCoordinator> coordinator;
};

std::unique_ptr<ckptdb::Checkpointer> OpenStore(const Job& job, const std::string& dir) {
  ckptdb::CheckpointerOptions options;
  options.multiprocessing.coordinator = job.coordinator;
  // The cores shared out: one process alone uses them all.
  options.worker_threads =
      std::max(1u, std::thread::hardware_concurrency() / static_cast<unsigned>(job.count));
  options.max_to_keep = 2;
  return Must(ckptdb::Checkpointer::Open(dir, options), "open");
}

int Metadata(const Job& job, const std::string& dir, int64_t shards) {
  constexpr int64_t kTensors = 100;
  constexpr int64_t kCols = 64;
  const int64_t rows = shards / kTensors;
  auto ckpt = OpenStore(job, dir);
  auto state_for = [&](int64_t step) {
    ckptdb::Tree state;
    for (int64_t t = 0; t < kTensors; ++t) {
      ckptdb::ShardedTensor tensor{ckptdb::DType::kFloat32, {rows, kCols}, {}};
      for (int64_t row = job.rank; row < rows; row += job.count) {
        ckptdb::Tensor data = Must(ckptdb::Tensor::Allocate(ckptdb::DType::kFloat32, {1, kCols}), "alloc");
        Fill(data, static_cast<uint64_t>(((step * kTensors + t) * rows + row) * kCols));
        tensor.shards.push_back(ckptdb::Shard{{row, 0}, data, 0});
      }
      Must(state.SetPath("layer_" + std::to_string(t) + "/w", Must(ckptdb::Tree::Sharded(tensor), "shard")),
           "set");
    }
    return state;
  };
  for (int64_t step = 1; step <= 2; ++step) {
    ckptdb::Tree state = state_for(step);
    MPI_Barrier(MPI_COMM_WORLD);
    job.coordinator->Take();
    const Clock::time_point start = Clock::now();
    Must(ckpt->Save(state, step, {.force = true}).status(), "save");
    Must(ckpt->WaitUntilFinished(), "wait");
    const double seconds = MaxOverRanks(std::chrono::duration<double>(Clock::now() - start).count());
    auto [coordination, gathered] = job.coordinator->Take();
    coordination = MinOverRanks(coordination);
    if (job.rank == 0) {
      const ckptdb::StepMetadata metadata = Must(ckpt->ItemMetadata(step), "metadata");
      std::printf("metadata ranks=%d shards=%lld step=%lld manifest_bytes=%llu save_ms=%.1f "
                  "coordination_ms=%.1f gathered_bytes=%llu\n",
                  job.count, static_cast<long long>(rows * kTensors), static_cast<long long>(step),
                  static_cast<unsigned long long>(metadata.manifest_bytes), seconds * 1e3,
                  coordination * 1e3, static_cast<unsigned long long>(gathered));
    }
  }
  Must(ckpt->Close(), "close");
  return 0;
}

int Throughput(const Job& job, const std::string& dir, int64_t megabytes) {
  constexpr int64_t kTensors = 8;
  constexpr int64_t kCols = 1024;
  const int64_t rows = megabytes * (int64_t{1} << 20) / kTensors / kCols / 4;
  const int64_t begin = rows * job.rank / job.count;
  const int64_t end = rows * (job.rank + 1) / job.count;
  auto ckpt = OpenStore(job, dir);
  ckptdb::Tree state;
  for (int64_t t = 0; t < kTensors; ++t) {
    ckptdb::Tensor data =
        Must(ckptdb::Tensor::Allocate(ckptdb::DType::kFloat32, {end - begin, kCols}), "alloc");
    Fill(data, static_cast<uint64_t>((t * rows + begin) * kCols));
    ckptdb::ShardedTensor tensor{ckptdb::DType::kFloat32, {rows, kCols},
                                 {ckptdb::Shard{{begin, 0}, data, 0}}};
    Must(state.SetPath("t" + std::to_string(t), Must(ckptdb::Tree::Sharded(tensor), "shard")), "set");
  }
  MPI_Barrier(MPI_COMM_WORLD);
  job.coordinator->Take();
  Clock::time_point start = Clock::now();
  Must(ckpt->Save(state, 1, {.force = true}).status(), "save");
  Must(ckpt->WaitUntilFinished(), "wait");
  const double save = MaxOverRanks(std::chrono::duration<double>(Clock::now() - start).count());
  const double coordination = MinOverRanks(job.coordinator->Take().first);
  MPI_Barrier(MPI_COMM_WORLD);
  start = Clock::now();
  Must(ckpt->Restore(&state, 1), "restore");
  const double restore = MaxOverRanks(std::chrono::duration<double>(Clock::now() - start).count());
  Must(ckpt->Close(), "close");
  if (job.rank == 0) {
    const double gb = static_cast<double>(rows * kCols * 4 * kTensors) / 1e9;
    std::printf("throughput ranks=%d megabytes=%lld save_gbps=%.3f restore_gbps=%.3f "
                "coordination_ms=%.1f\n",
                job.count, static_cast<long long>(megabytes), gb / save, gb / restore,
                coordination * 1e3);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  if (argc != 4) Die("usage: mpi_bench metadata|throughput DIR N");
  Job job;
  MPI_Comm_rank(MPI_COMM_WORLD, &job.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &job.count);
  job.coordinator =
      std::make_shared<TimedCoordinator>(Must(ckptdb::MpiCoordinator(), "MpiCoordinator"));
  const std::string mode = argv[1];
  const int64_t n = std::atoll(argv[3]);
  const int result = mode == "metadata" ? Metadata(job, argv[2], n) : Throughput(job, argv[2], n);
  MPI_Finalize();
  return result;
}
