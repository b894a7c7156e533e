// A multi-process training run that checkpoints its sharded state with
// ckptdb over MPI, and resumes on another number of processes.
//
//   mpirun -n 4 mpi_train_demo --workdir DIR --steps 40 [--kill-rank 2 --kill-at 23]
//   mpirun -n 2 mpi_train_demo --workdir DIR --steps 40      # resumes
//
// The model: a [512, 256] float32 weight matrix and its Adam moments, each
// sharded by rows over the processes, a bias replicated on every process,
// and the step counter. A training step changes every element by a rule of
// its value, its global index and the step alone, so a run resumed on any
// number of processes ends with the same bits as one never interrupted; at
// the end every process adds a checksum of its elements and rank 0 prints
// the total. Checkpoints every 5 steps, keeps the last 3.
#include <mpi.h>
#include <signal.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "ckptdb/ckptdb.h"
#include "ckptdb/mpi.h"

namespace {

constexpr int64_t kRows = 512;
constexpr int64_t kCols = 256;
constexpr int64_t kSaveEvery = 5;

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "mpi_train_demo: %s\n", what.c_str());
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

// The rows [begin, end) this process holds of the matrices.
struct Rows {
  int64_t begin;
  int64_t end;
};

struct Model {
  Rows rows;
  ckptdb::Tensor weight, mu, nu, bias;
  int64_t step = 0;

  ckptdb::Tree AsTree(int rank) const {
    auto sharded = [&](const ckptdb::Tensor& data) {
      ckptdb::ShardedTensor tensor{ckptdb::DType::kFloat32, {kRows, kCols},
                                   {ckptdb::Shard{{rows.begin, 0}, data, 0}}};
      return Must(ckptdb::Tree::Sharded(tensor), "shard");
    };
    ckptdb::Tree tree;
    Must(tree.SetPath("params/weight", sharded(weight)), "tree");
    Must(tree.SetPath("opt/mu", sharded(mu)), "tree");
    Must(tree.SetPath("opt/nu", sharded(nu)), "tree");
    // The bias is the same on every process: each holds a replica.
    ckptdb::ShardedTensor replicated{ckptdb::DType::kFloat32, {kCols},
                                     {ckptdb::Shard{{0}, bias, rank}}};
    Must(tree.SetPath("params/bias", Must(ckptdb::Tree::Sharded(replicated), "bias")), "tree");
    Must(tree.SetPath("step", ckptdb::Tree::Int(step)), "tree");
    return tree;
  }
};

Model Initial(Rows rows) {
  Model model;
  model.rows = rows;
  const int64_t count = rows.end - rows.begin;
  model.weight = Must(ckptdb::Tensor::Allocate(ckptdb::DType::kFloat32, {count, kCols}), "alloc");
  model.mu = Must(ckptdb::Tensor::Allocate(ckptdb::DType::kFloat32, {count, kCols}), "alloc");
  model.nu = Must(ckptdb::Tensor::Allocate(ckptdb::DType::kFloat32, {count, kCols}), "alloc");
  model.bias = Must(ckptdb::Tensor::Allocate(ckptdb::DType::kFloat32, {kCols}), "alloc");
  std::span<float> weight = Must(model.weight.MutableValues<float>(), "values");
  for (int64_t i = 0; i < count * kCols; ++i) {
    const int64_t global = rows.begin * kCols + i;
    weight[i] = std::sin(static_cast<float>(global) * 0.001f);
  }
  return model;
}

// One Adam step on a synthetic gradient of each element.
void Train(Model& model) {
  ++model.step;
  const float lr = 1e-3f;
  const float t = static_cast<float>(model.step);
  std::span<float> weight = Must(model.weight.MutableValues<float>(), "values");
  std::span<float> mu = Must(model.mu.MutableValues<float>(), "values");
  std::span<float> nu = Must(model.nu.MutableValues<float>(), "values");
  for (size_t i = 0; i < weight.size(); ++i) {
    const int64_t global = model.rows.begin * kCols + static_cast<int64_t>(i);
    const float grad = weight[i] - std::cos(static_cast<float>(global % 997) * 0.01f + t * 0.1f);
    mu[i] = 0.9f * mu[i] + 0.1f * grad;
    nu[i] = 0.999f * nu[i] + 0.001f * grad * grad;
    weight[i] -= lr * (mu[i] / (1.0f - std::pow(0.9f, t))) /
                 (std::sqrt(nu[i] / (1.0f - std::pow(0.999f, t))) + 1e-8f);
  }
  std::span<float> bias = Must(model.bias.MutableValues<float>(), "values");
  for (size_t c = 0; c < bias.size(); ++c) bias[c] += 0.01f * std::sin(t + static_cast<float>(c));
}

// Adds, over the processes, a hash of each element with its global index:
// equal totals mean equal bits, whatever the sharding.
uint64_t Checksum(const Model& model, int rank) {
  uint64_t local = 0;
  auto add = [&](const ckptdb::Tensor& tensor, int64_t first, uint64_t salt) {
    std::span<const float> values = Must(tensor.Values<float>(), "values");
    for (size_t i = 0; i < values.size(); ++i) {
      uint32_t bits = 0;
      std::memcpy(&bits, &values[i], 4);
      uint64_t h = (static_cast<uint64_t>(first) + i) * 0x9e3779b97f4a7c15ull ^ bits ^ salt;
      h ^= h >> 29;
      local += h * 0xbf58476d1ce4e5b9ull;
    }
  };
  add(model.weight, model.rows.begin * kCols, 1);
  add(model.mu, model.rows.begin * kCols, 2);
  add(model.nu, model.rows.begin * kCols, 3);
  if (rank == 0) add(model.bias, 0, 4);
  uint64_t total = 0;
  MPI_Reduce(&local, &total, 1, MPI_UINT64_T, MPI_SUM, 0, MPI_COMM_WORLD);
  return total;
}

}  // namespace

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  int rank = 0;
  int count = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &count);
  std::string workdir = "demo_mpi_run";
  int64_t steps = 40;
  int64_t kill_rank = -1;
  int64_t kill_at = -1;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--workdir") workdir = argv[i + 1];
    else if (flag == "--steps") steps = std::atoll(argv[i + 1]);
    else if (flag == "--kill-rank") kill_rank = std::atoll(argv[i + 1]);
    else if (flag == "--kill-at") kill_at = std::atoll(argv[i + 1]);
    else Die("unknown flag " + flag);
  }

  ckptdb::CheckpointerOptions options;
  options.multiprocessing.coordinator = Must(ckptdb::MpiCoordinator(), "MpiCoordinator");
  options.save_interval_steps = kSaveEvery;
  options.max_to_keep = 3;
  options.worker_threads = 1;  // several processes share the cores
  auto ckpt = Must(ckptdb::Checkpointer::Open(workdir, options), "open");

  const Rows rows{kRows * rank / count, kRows * (rank + 1) / count};
  Model model = Initial(rows);
  if (std::optional<int64_t> latest = ckpt->LatestStep()) {
    // This run's sharding, whatever the saving run's was.
    ckptdb::Tree state = model.AsTree(rank);
    Must(ckpt->Restore(&state, *latest), "restore");
    model.step = state.Find("step")->int_value();
    if (rank == 0) {
      std::printf("resumed from step %lld on %d processes\n", static_cast<long long>(*latest),
                  count);
    }
  }
  while (model.step < steps) {
    Train(model);
    const bool saved = Must(ckpt->MaybeSave(model.AsTree(rank), model.step), "save");
    if (saved && rank == 0) {
      std::printf("step %lld: saved by %d processes\n", static_cast<long long>(model.step),
                  count);
    }
    if (rank == kill_rank && model.step == kill_at) {
      std::printf("rank %d: killed at step %lld\n", rank, static_cast<long long>(model.step));
      std::fflush(stdout);
      raise(SIGKILL);
    }
  }
  Must(ckpt->Close(), "close");
  const uint64_t checksum = Checksum(model, rank);
  if (rank == 0) {
    std::printf("final state at step %lld: checksum %016llx\n", static_cast<long long>(model.step),
                static_cast<unsigned long long>(checksum));
  }
  MPI_Finalize();
  return 0;
}
