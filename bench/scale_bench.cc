// How costs grow with the number of leaves and shards: building a tree of n
// leaves (flat and nested, keys set in a shuffled order), saving a state of
// n tiny tensors, restoring it (into a template and as a new tree), reading
// its metadata, and restoring a tensor of n shards into a sharded template.
// Each row reports the time of one call, the process's peak resident memory
// during it (the peak is reset before the call, /proc/self/clear_refs) and
// what it held before (the state, the open store), and, for saves, the
// manifest's bytes per leaf. scripts/scale_bench.sh runs each row in a
// process of its own and prints the scaling table.
//
//   build/bench/scale_bench --benchmark_filter='save/1000000'

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "bench_util.h"
#include "ckptdb/checkpointer.h"

namespace ckptdb::bench {
namespace {

using Clock = std::chrono::steady_clock;

void Check(const Status& status, const char* what) {
  if (!status.ok()) {
    std::fprintf(stderr, "%s: %s\n", what, status.ToString().c_str());
    std::abort();
  }
}

// A size from /proc/self/status ("VmHWM:" the peak resident size since the
// last reset, "VmRSS:" the resident size now), in bytes.
uint64_t StatusBytes(const std::string& field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(field, 0) == 0) {
      return std::strtoull(line.c_str() + field.size(), nullptr, 10) * 1024;
    }
  }
  return 0;
}

// Starts a new peak: from now on VmHWM is the peak since this call.
void ResetPeakResident() {
  std::ofstream("/proc/self/clear_refs") << "5";
}

// Times `call` once per iteration (each on fresh input from `setup`) and
// reports seconds and the peak resident memory during the call.
template <typename Setup, typename Call>
void Measure(benchmark::State& state, Setup setup, Call call) {
  Measure(state, setup, call, [](auto&) {});
}

// The same, then `after(input)` untimed.
template <typename Setup, typename Call, typename After>
void Measure(benchmark::State& state, Setup setup, Call call, After after) {
  double seconds = 0;
  uint64_t peak = 0;
  uint64_t before = 0;
  for (auto _ : state) {
    state.PauseTiming();
    auto input = setup();
    ResetPeakResident();
    before = StatusBytes("VmRSS:");
    state.ResumeTiming();
    const Clock::time_point start = Clock::now();
    {
      ProfiledSection profiled;
      call(input);
    }
    seconds += std::chrono::duration<double>(Clock::now() - start).count();
    peak = std::max(peak, StatusBytes("VmHWM:"));
    after(input);
  }
  state.counters["seconds"] = seconds / static_cast<double>(state.iterations());
  state.counters["peak_rss_mb"] = static_cast<double>(peak) / (1 << 20);
  // What the process held before the call (the state, the open store).
  state.counters["before_rss_mb"] = static_cast<double>(before) / (1 << 20);
}

// Leaf i's path: 8 leaves per layer, as a transformer's
// "layers/123/attn/q/kernel".
std::string LeafPath(int64_t i) {
  static const char* const kLeaves[] = {"attn/q/kernel", "attn/k/kernel", "attn/v/kernel",
                                        "attn/o/kernel", "mlp/up/kernel", "mlp/down/kernel",
                                        "norm/scale",    "norm/bias"};
  return "layers/" + std::to_string(i / 8) + "/" + kLeaves[i % 8];
}

// A tiny tensor of 4 float32 values, different for every leaf.
Tensor TinyTensor(int64_t i) {
  Tensor tensor = Tensor::Allocate(DType::kFloat32, {4}).value();
  float* values = tensor.MutableValues<float>().value().data();
  for (int k = 0; k < 4; ++k) values[k] = static_cast<float>(i * 4 + k) * 0.25f;
  return tensor;
}

// n tiny leaves in the nested layout, set in a shuffled order.
Tree NestedState(int64_t n) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), std::mt19937_64(1));
  Tree tree;
  for (int64_t i : order) Check(tree.SetPath(LeafPath(i), Tree::Leaf(TinyTensor(i))), "set path");
  return tree;
}

void BM_BuildFlat(benchmark::State& state) {
  const int64_t n = state.range(0);
  Measure(
      state,
      [n] {
        std::vector<std::string> keys;
        for (int64_t i = 0; i < n; ++i) keys.push_back("param_" + std::to_string(i * 7919 % n));
        return std::make_pair(std::move(keys), Tree());
      },
      [](std::pair<std::vector<std::string>, Tree>& input) {
        for (const std::string& key : input.first) {
          Check(input.second.Set(key, Tree::Int(1)).status(), "set");
        }
      });
}

void BM_BuildNested(benchmark::State& state) {
  const int64_t n = state.range(0);
  Measure(
      state, [] { return Tree(); }, [n](Tree& tree) { tree = NestedState(n); });
}

std::string StoreDir(const char* what, int64_t n) {
  const char* base = std::getenv("CKPTDB_BENCH_DIR");
  return std::string(base != nullptr ? base : "/tmp") + "/ckptdb_scale_" + what + "_" +
         std::to_string(n);
}

std::unique_ptr<Checkpointer> OpenStore(const std::string& dir) {
  CheckpointerOptions options;
  options.max_to_keep = std::nullopt;
  return Checkpointer::Open(dir, options).value();
}

// A store `what`_n holding step 1 of make_state(n), made once per size.
std::string SavedStore(const char* what, int64_t n, Tree (*make_state)(int64_t)) {
  const std::string dir = StoreDir(what, n);
  if (!std::filesystem::exists(dir + "/.complete")) {
    std::filesystem::remove_all(dir);
    auto ckpt = OpenStore(dir);
    Check(ckpt->Save(make_state(n), 1).status(), "save");
    Check(ckpt->Close(), "close");
    std::ofstream(dir + "/.complete");
  }
  return dir;
}

void BM_Save(benchmark::State& state) {
  const int64_t n = state.range(0);
  const std::string dir = StoreDir("save", n);
  uint64_t manifest_bytes = 0;
  Measure(
      state,
      [&] {
        std::filesystem::remove_all(dir);
        return std::make_pair(OpenStore(dir), NestedState(n));
      },
      [&](std::pair<std::unique_ptr<Checkpointer>, Tree>& input) {
        Check(input.first->Save(input.second, 1).status(), "save");
        Check(input.first->WaitUntilFinished(), "wait");
      },
      [&](std::pair<std::unique_ptr<Checkpointer>, Tree>& input) {
        manifest_bytes = input.first->ItemMetadata(1).value().manifest_bytes;
      });
  state.counters["manifest_bytes_per_leaf"] = static_cast<double>(manifest_bytes) / n;
  std::filesystem::remove_all(dir);
}

void BM_RestoreIntoTemplate(benchmark::State& state) {
  const int64_t n = state.range(0);
  const std::string dir = SavedStore("saved", n, NestedState);
  Measure(
      state, [&] { return std::make_pair(OpenStore(dir), NestedState(n)); },
      [](std::pair<std::unique_ptr<Checkpointer>, Tree>& input) {
        Check(input.first->Restore(&input.second, 1), "restore");
      });
}

void BM_RestoreTree(benchmark::State& state) {
  const int64_t n = state.range(0);
  const std::string dir = SavedStore("saved", n, NestedState);
  Measure(
      state, [&] { return OpenStore(dir); },
      [](std::unique_ptr<Checkpointer>& ckpt) {
        benchmark::DoNotOptimize(ckpt->RestoreTree(1).value());
      });
}

void BM_ItemMetadata(benchmark::State& state) {
  const int64_t n = state.range(0);
  const std::string dir = SavedStore("saved", n, NestedState);
  Measure(
      state, [&] { return OpenStore(dir); },
      [](std::unique_ptr<Checkpointer>& ckpt) {
        benchmark::DoNotOptimize(ckpt->ItemMetadata(1).value());
      });
}

// One float32 tensor of n rows of 4, as n one-row shards.
Tree ShardedState(int64_t n) {
  ShardedTensor sharded{DType::kFloat32, {n, 4}, {}};
  for (int64_t row = 0; row < n; ++row) {
    Tensor data = Tensor::Allocate(DType::kFloat32, {1, 4}).value();
    std::memcpy(data.mutable_data(), TinyTensor(row).data(), 16);
    sharded.shards.push_back(Shard{{row, 0}, std::move(data), 0});
  }
  Tree tree;
  Check(tree.SetPath("embedding/table", Tree::Sharded(std::move(sharded)).value()), "sharded");
  return tree;
}

void BM_RestoreShards(benchmark::State& state) {
  const int64_t n = state.range(0);
  const std::string dir = SavedStore("shards", n, ShardedState);
  Measure(
      state, [&] { return std::make_pair(OpenStore(dir), ShardedState(n)); },
      [](std::pair<std::unique_ptr<Checkpointer>, Tree>& input) {
        Check(input.first->Restore(&input.second, 1), "restore");
      });
}

void Sizes(benchmark::internal::Benchmark* benchmark, int64_t largest) {
  for (int64_t n = 1000; n <= largest; n *= 10) benchmark->Arg(n);
  benchmark->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();
}

BENCHMARK(BM_BuildFlat)->Name("build_flat")->Apply([](auto* b) { Sizes(b, 1000000); });
BENCHMARK(BM_BuildNested)->Name("build_nested")->Apply([](auto* b) { Sizes(b, 1000000); });
BENCHMARK(BM_Save)->Name("save")->Apply([](auto* b) { Sizes(b, 1000000); });
BENCHMARK(BM_RestoreIntoTemplate)->Name("restore_template")->Apply([](auto* b) { Sizes(b, 1000000); });
BENCHMARK(BM_RestoreTree)->Name("restore_tree")->Apply([](auto* b) { Sizes(b, 1000000); });
BENCHMARK(BM_ItemMetadata)->Name("item_metadata")->Apply([](auto* b) { Sizes(b, 1000000); });
BENCHMARK(BM_RestoreShards)->Name("restore_shards")->Apply([](auto* b) { Sizes(b, 100000); });

}  // namespace
}  // namespace ckptdb::bench

BENCHMARK_MAIN();
