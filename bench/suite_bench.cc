// The benchmark suite: every figure is a ratio against a baseline measured in
// the same run, on the same bytes (these machines are shared and noisy;
// absolute times drift, ratios much less).
//
//   CKPTDB_BENCH_MB=1024 build/bench/suite_bench     (scripts/bench.sh runs it
//                                                     and prints one table)
//
// State: trained-like float32 (or bfloat16) tensors of 4 MiB (bench_util.h).

#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>

#include "bench_util.h"
#include "staging_pool.h"

namespace ckptdb::bench {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

void Check(const Status& status, const char* what) {
  if (!status.ok()) {
    std::fprintf(stderr, "%s: %s\n", what, status.ToString().c_str());
    std::abort();
  }
}

std::unique_ptr<Checkpointer> OpenStore(const std::string& dir, bool async, uint32_t threads = 0) {
  CheckpointerOptions options;
  options.max_to_keep = std::nullopt;
  options.enable_async_checkpointing = async;
  options.worker_threads = threads;
  options.staging_bytes = uint64_t{1} << 30;
  auto opened = Checkpointer::Open(dir, options);
  Check(opened.status(), "open");
  return std::move(*opened);
}

// Tensors of the state, as contiguous spans.
std::vector<std::pair<const std::byte*, size_t>> Spans(const Tree& tree) {
  std::vector<std::pair<const std::byte*, size_t>> spans;
  tree.ForEachLeaf([&](const std::string&, const Tree& leaf) {
    spans.emplace_back(leaf.tensor().data(), leaf.tensor().byte_size());
  });
  return spans;
}

// The baseline writer: the same bytes into one file, then fdatasync.
double RawWrite(const std::string& path, const Tree& tree) {
  const auto start = Clock::now();
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  for (const auto& [data, size] : Spans(tree)) {
    for (size_t done = 0; done < size;) {
      ssize_t n = ::write(fd, data + done, size - done);
      if (n <= 0) std::abort();
      done += static_cast<size_t>(n);
    }
  }
  ::fdatasync(fd);
  ::close(fd);
  return Seconds(start);
}

// The baseline reader: the file back into pre-faulted buffers.
double RawRead(const std::string& path, std::vector<std::vector<std::byte>>* buffers) {
  const auto start = Clock::now();
  int fd = ::open(path.c_str(), O_RDONLY);
  for (std::vector<std::byte>& buffer : *buffers) {
    for (size_t done = 0; done < buffer.size();) {
      ssize_t n = ::read(fd, buffer.data() + done, buffer.size() - done);
      if (n <= 0) std::abort();
      done += static_cast<size_t>(n);
    }
  }
  ::close(fd);
  return Seconds(start);
}

// A template of owned, pre-faulted tensors shaped like `tree`.
Tree OwnedTemplate(const Tree& tree) {
  Tree copy;
  tree.ForEachLeaf([&](const std::string& path, const Tree& leaf) {
    const std::string layer = path.substr(0, path.find('/'));
    Tree* node = copy.Find(layer) ? copy.Find(layer) : copy.Set(layer, Tree::Map()).value();
    Tensor tensor = Tensor::Allocate(leaf.tensor().dtype(), leaf.tensor().shape()).value();
    std::memset(tensor.mutable_data(), 1, tensor.byte_size());
    (void)node->Set("kernel", Tree::Leaf(tensor));
  });
  return copy;
}

void Report(benchmark::State& state, const char* name, double ckptdb_value, double baseline_value) {
  state.counters[std::string(name) + "_ckptdb"] = ckptdb_value;
  state.counters[std::string(name) + "_baseline"] = baseline_value;
  state.counters["ratio"] = ckptdb_value / baseline_value;
}

// Save until durable vs raw write + fdatasync; and bytes stored. Both sides
// are measured in steady state, as in a training run: the timed save is the
// checkpointer's second (a first save of other values warms its buffers and
// threads), the timed raw write the second file.
void Save(benchmark::State& state, uint64_t megabytes, DType dtype, uint32_t threads) {
  for (auto _ : state) {
    ScratchDir dir;
    TrainedState model(megabytes << 20, dtype, 1);
    auto checkpointer = OpenStore(dir.path() + "/store", /*async=*/false, threads);
    {
      TrainedState other(megabytes << 20, dtype, 101);  // shares no chunk with `model`
      RawWrite(dir.path() + "/warm.bin", other.View());
      Check(checkpointer->Save(other.View(), 0).status(), "save");
    }
    Tree view = model.View();
    const double raw = RawWrite(dir.path() + "/raw.bin", view);
    const uint64_t written_before = DeviceBytesWritten();
    const auto start = Clock::now();
    {
      ProfiledSection profiled;
      Check(checkpointer->Save(view, 1).status(), "save");
    }
    const double saved = Seconds(start);
    const uint64_t device_bytes = DeviceBytesWritten() - written_before;
    Result<StepMetadata> metadata = checkpointer->ItemMetadata(1);
    uint64_t stored = 0;
    for (const LeafMetadata& leaf : metadata->leaves) stored += leaf.stored_bytes;
    const double gb = static_cast<double>(model.bytes()) / 1e9;
    Report(state, "GBps", gb / saved, gb / raw);
    state.counters["stored_over_logical"] =
        static_cast<double>(stored) / static_cast<double>(model.bytes());
    state.counters["write_amplification"] =
        device_bytes > 0 ? static_cast<double>(device_bytes) / static_cast<double>(stored) : 0;
  }
}

// Restore (into caller buffers) vs raw read, cold (page cache dropped
// before each) or warm (each read once before, so that its bytes are in the
// page cache: a save leaves ckptdb's files out of it).
void Restore(benchmark::State& state, uint64_t megabytes, bool cold, uint32_t threads) {
  for (auto _ : state) {
    ScratchDir dir;
    TrainedState model(megabytes << 20, DType::kFloat32, 2);
    Tree view = model.View();
    RawWrite(dir.path() + "/raw.bin", view);
    auto checkpointer = OpenStore(dir.path() + "/store", /*async=*/false, threads);
    Check(checkpointer->Save(view, 0).status(), "save");
    Tree into = OwnedTemplate(view);
    std::vector<std::vector<std::byte>> buffers;
    for (const auto& [data, size] : Spans(view)) {
      buffers.emplace_back(size, std::byte{1});
    }
    if (cold) {
      DropPageCache(dir.path());
    } else {
      RawRead(dir.path() + "/raw.bin", &buffers);
      Check(checkpointer->Restore(&into, 0), "restore");
    }
    const double raw = RawRead(dir.path() + "/raw.bin", &buffers);
    if (cold) DropPageCache(dir.path());
    const auto start = Clock::now();
    {
      ProfiledSection profiled;
      Check(checkpointer->Restore(&into, 0), "restore");
    }
    const double restored = Seconds(start);
    if (!into.ContentEquals(view)) state.SkipWithError("restore differs");
    const double gb = static_cast<double>(model.bytes()) / 1e9;
    Report(state, "GBps", gb / restored, gb / raw);
  }
}

// Blocking time of an asynchronous save vs a memcpy of the state, with
// `changed_percent` of the tensors changed since the previous save; with
// `declared`, the caller names the others in SaveOptions::assume_unchanged.
void AsyncBlocking(benchmark::State& state, uint64_t megabytes, int changed_percent,
                   bool declared) {
  for (auto _ : state) {
    ScratchDir dir;
    TrainedState model(megabytes << 20, DType::kFloat32, 3);
    auto checkpointer = OpenStore(dir.path() + "/store", /*async=*/true);
    // A first save warms the staging pool, as in a training run.
    Check(checkpointer->Save(model.View(), 0).status(), "save");
    Check(checkpointer->WaitUntilFinished(), "wait");
    const size_t changed = model.tensor_count() * static_cast<size_t>(changed_percent) / 100;
    SaveOptions options;
    if (declared) {
      size_t leaf = 0;
      model.View().ForEachLeaf([&](const std::string& path, const Tree&) {
        if (leaf++ >= changed) options.assume_unchanged.push_back(path);
      });
    }
    // The baseline copies into memory allocated as ckptdb's staging is (huge
    // pages, faulted in at once): a large copy into 4 KiB pages ran up to 20x
    // slower in some runs on these virtual machines.
    size_t largest = 0;
    for (const auto& [data, size] : Spans(model.View())) largest = std::max(largest, size);
    StagingPool baseline_memory(largest, model.tensor_count());
    std::vector<std::byte*> copies;
    for (size_t i = 0; i < model.tensor_count(); ++i) {
      copies.push_back(baseline_memory.data(baseline_memory.Acquire().value()));
    }
    // Best of five saves (each of newly changed tensors), against the best
    // of five copies interleaved with them: these machines are shared, and
    // a neighbour's burst only ever adds time.
    double blocking = 1e9;
    double memcpy_seconds = 1e9;
    for (int64_t step = 1; step <= 5; ++step) {
      model.Train(0, changed, static_cast<uint64_t>(step));
      Tree view = model.View();
      auto copy_start = Clock::now();
      size_t i = 0;
      for (const auto& [data, size] : Spans(view)) std::memcpy(copies[i++], data, size);
      memcpy_seconds = std::min(memcpy_seconds, Seconds(copy_start));
      const auto start = Clock::now();
      {
        ProfiledSection profiled;
        Check(checkpointer->Save(view, step, options).status(), "save");
      }
      blocking = std::min(blocking, Seconds(start));
      Check(checkpointer->WaitUntilFinished(), "wait");
    }
    Report(state, "seconds", blocking, memcpy_seconds);
  }
}

void ResaveUnchanged(benchmark::State& state, uint64_t megabytes) {
  for (auto _ : state) {
    ScratchDir dir;
    TrainedState model(megabytes << 20, DType::kFloat32, 4);
    Tree view = model.View();
    const double raw = RawWrite(dir.path() + "/raw.bin", view);
    auto checkpointer = OpenStore(dir.path() + "/store", /*async=*/false);
    Check(checkpointer->Save(view, 0).status(), "save");
    // Best of three: a neighbour's burst on this shared machine only adds time.
    double resave = 1e9;
    for (int64_t step = 1; step <= 3; ++step) {
      const auto start = Clock::now();
      Check(checkpointer->Save(view, step).status(), "save");
      resave = std::min(resave, Seconds(start));
    }
    // Higher is better: how many times faster than writing the bytes raw.
    state.counters["seconds_ckptdb"] = resave;
    state.counters["seconds_baseline"] = raw;
    state.counters["ratio"] = raw / resave;
  }
}

// Garbage collection: time per chunk count (half of them dead).
void Gc(benchmark::State& state, size_t live_chunks) {
  for (auto _ : state) {
    ScratchDir dir;
    CheckpointerOptions options;
    options.max_to_keep = 1;
    options.gc_mode = GcMode::kOff;
    options.enable_async_checkpointing = false;
    options.chunk_size_bytes = 4096;
    auto checkpointer = Checkpointer::Open(dir.path(), options);
    Check(checkpointer.status(), "open");
    TrainedState model(uint64_t{live_chunks} * 4096, DType::kFloat32, 5);
    Check((*checkpointer)->Save(model.View(), 0).status(), "save");
    model.Train(0, model.tensor_count(), 1);
    Check((*checkpointer)->Save(model.View(), 1).status(), "save");
    Result<GcStats> stats = (*checkpointer)->CollectGarbage();
    Check(stats.status(), "gc");
    state.counters["chunks"] = static_cast<double>(stats->chunks_scanned);
    state.counters["gc_seconds"] = stats->seconds;
    state.counters["seconds_per_100k_chunks"] =
        stats->seconds / static_cast<double>(stats->chunks_scanned) * 1e5;
  }
}

uint64_t EnvMegabytes() {
  const char* text = std::getenv("CKPTDB_BENCH_MB");
  return text != nullptr ? std::strtoull(text, nullptr, 10) : 256;
}

void Register(const std::string& name, std::function<void(benchmark::State&)> run) {
  benchmark::RegisterBenchmark(name.c_str(), [run](benchmark::State& state) { run(state); })
      ->Iterations(1)
      ->Unit(benchmark::kMillisecond);
}

}  // namespace
}  // namespace ckptdb::bench

int main(int argc, char** argv) {
  using namespace ckptdb::bench;
  using ckptdb::DType;
  const uint64_t mb = EnvMegabytes();
  const std::string size = "/" + std::to_string(mb) + "MB";
  Register("save_f32" + size, [mb](auto& s) { Save(s, mb, DType::kFloat32, 0); });
  Register("save_bf16" + size, [mb](auto& s) { Save(s, mb, DType::kBFloat16, 0); });
  Register("save_f32_1thread" + size, [mb](auto& s) { Save(s, mb, DType::kFloat32, 1); });
  for (uint64_t smaller : {mb / 4, mb / 16}) {
    if (smaller >= 16) {
      Register("save_f32/" + std::to_string(smaller) + "MB",
               [smaller](auto& s) { Save(s, smaller, DType::kFloat32, 0); });
    }
  }
  Register("restore_cold" + size, [mb](auto& s) { Restore(s, mb, true, 0); });
  Register("restore_warm" + size, [mb](auto& s) { Restore(s, mb, false, 0); });
  Register("restore_warm_1thread" + size, [mb](auto& s) { Restore(s, mb, false, 1); });
  Register("async_blocking_all_new" + size, [mb](auto& s) { AsyncBlocking(s, mb, 100, false); });
  Register("async_blocking_90pct_frozen" + size,
           [mb](auto& s) { AsyncBlocking(s, mb, 10, false); });
  Register("async_blocking_90pct_declared" + size,
           [mb](auto& s) { AsyncBlocking(s, mb, 10, true); });
  Register("resave_unchanged" + size, [mb](auto& s) { ResaveUnchanged(s, mb); });
  Register("gc/10k_chunks", [](auto& s) { Gc(s, 10000); });
  Register("gc/100k_chunks", [](auto& s) { Gc(s, 100000); });
  if (mb >= 1024) Register("gc/1M_chunks", [](auto& s) { Gc(s, 1000000); });
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
