// Retention and garbage collection over long runs: does the store stay
// bounded, and does a fine-tuning run with frozen weights pay only for what
// changes?
//
//   build/bench/retention_bench                      (quick: 60 saves of 16 MB)
//   build/bench/retention_bench --benchmark_filter=Long/300   (300 saves of 48 MB)

#include <benchmark/benchmark.h>

#include <deque>

#include "bench_util.h"

namespace ckptdb::bench {
namespace {

std::unique_ptr<Checkpointer> OpenOrAbort(const std::string& dir, CheckpointerOptions options) {
  auto opened = Checkpointer::Open(dir, std::move(options));
  if (!opened.ok()) {
    std::fprintf(stderr, "%s\n", opened.status().ToString().c_str());
    std::abort();
  }
  return std::move(*opened);
}

// Saves `saves` steps of a state whose every tensor changes each step, with
// max_to_keep = 3 and GC after retention; reports the store's size on disk
// (every file) against the chunk bytes the live steps need.
void BM_LongRunWithRetention(benchmark::State& state) {
  const int64_t saves = state.range(0);
  const size_t megabytes = static_cast<size_t>(state.range(1));
  for (auto _ : state) {
    ScratchDir dir;
    TrainedState model(megabytes << 20, DType::kFloat32, 1);
    CheckpointerOptions options;
    options.max_to_keep = 3;
    auto checkpointer = OpenOrAbort(dir.path(), options);
    std::deque<Tree> last_three;  // owned copies, to check every live step
    double worst_ratio = 0;
    uint64_t live_bytes = 0;
    for (int64_t step = 0; step < saves; ++step) {
      model.Train(0, model.tensor_count(), static_cast<uint64_t>(step));
      Tree view = model.View();
      if (!checkpointer->Save(view, step).value()) std::abort();
      Tree copy;
      view.ForEachLeaf([&](const std::string& path, const Tree& leaf) {
        std::string layer = path.substr(0, path.find('/'));
        Tree* node = copy.Find(layer) ? copy.Find(layer) : copy.Set(layer, Tree::Map()).value();
        (void)node->Set("kernel", Tree::Leaf(Tensor::CopyOf(leaf.tensor())));
      });
      last_three.push_back(std::move(copy));
      if (last_three.size() > 3) last_three.pop_front();
      if (step % 10 == 9 || step == saves - 1) {
        Result<GcStats> stats = checkpointer->CollectGarbage();  // finds nothing: measures live
        if (!stats.ok()) std::abort();
        live_bytes = stats->live_bytes;
        worst_ratio = std::max(worst_ratio, static_cast<double>(DirectoryBytes(dir.path())) /
                                                static_cast<double>(live_bytes));
      }
    }
    const std::vector<int64_t> held = checkpointer->AllSteps();
    for (size_t i = 0; i < held.size(); ++i) {
      Result<Tree> restored = checkpointer->RestoreTree(held[i]);
      if (!restored.ok() || !restored->ContentEquals(last_three[i])) {
        state.SkipWithError("a live step did not restore bit-exact");
      }
    }
    if (!checkpointer->Close().ok()) std::abort();
    state.counters["disk_over_live"] =
        static_cast<double>(DirectoryBytes(dir.path())) / static_cast<double>(live_bytes);
    state.counters["worst_disk_over_live"] = worst_ratio;
    state.counters["live_MiB"] = static_cast<double>(live_bytes) / (1 << 20);
    state.counters["state_MiB"] = static_cast<double>(model.bytes()) / (1 << 20);
    state.counters["steps_held"] = static_cast<double>(held.size());
  }
}
BENCHMARK(BM_LongRunWithRetention)
    ->ArgNames({"saves", "MB"})
    ->Args({60, 16})
    ->Args({300, 48})
    ->Iterations(1)
    ->Unit(benchmark::kSecond);

// Fine-tuning: 10% of the tensors train, 90% are frozen. Each new step should
// add only the changed tensors' chunks plus its manifest.
void BM_FineTuneNinetyPercentFrozen(benchmark::State& state) {
  for (auto _ : state) {
    ScratchDir dir;
    TrainedState model(50u << 20, DType::kFloat32, 2, 1u << 20);  // 50 tensors of 1 MiB
    CheckpointerOptions options;
    options.max_to_keep = std::nullopt;
    options.chunk_size_bytes = 1 << 20;
    auto checkpointer = OpenOrAbort(dir.path(), options);
    if (!checkpointer->Save(model.View(), 0).value()) std::abort();
    if (!checkpointer->WaitUntilFinished().ok()) std::abort();  // measure committed bytes
    const uint64_t base = DirectoryBytes(dir.path());
    constexpr int kSteps = 10;
    uint64_t changed_stored = 0;
    for (int64_t step = 1; step <= kSteps; ++step) {
      model.Train(0, 5, static_cast<uint64_t>(step));  // 5 of 50 tensors train
      if (!checkpointer->Save(model.View(), step).value()) std::abort();
      Result<StepMetadata> metadata = checkpointer->ItemMetadata(step);
      for (size_t t = 0; t < 5; ++t) changed_stored += metadata->leaves[t].stored_bytes;
    }
    if (!checkpointer->WaitUntilFinished().ok()) std::abort();
    const uint64_t added = DirectoryBytes(dir.path()) - base;
    state.counters["added_MiB_per_step"] = static_cast<double>(added) / kSteps / (1 << 20);
    state.counters["changed_chunks_MiB_per_step"] =
        static_cast<double>(changed_stored) / kSteps / (1 << 20);
    state.counters["added_over_changed"] =
        static_cast<double>(added) / static_cast<double>(changed_stored);
    state.counters["state_MiB"] = static_cast<double>(model.bytes()) / (1 << 20);
  }
}
BENCHMARK(BM_FineTuneNinetyPercentFrozen)->Iterations(1)->Unit(benchmark::kSecond);

}  // namespace
}  // namespace ckptdb::bench

BENCHMARK_MAIN();
