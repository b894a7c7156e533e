// The benchmark suite. Every comparison runs its baseline and ckptdb in the
// same process, on the same bytes, interleaved round by round, the side
// that goes first taking turns (saves and cold restores: RunInTurn), with
// dirty data flushed before each timed operation so that neither side pays
// for the other's writeback; it reports
// the median ratio over the rounds with its min-max. On these machines a
// single sample of a raw write ranged from 0.3 to 2.0 GB/s: only ratios
// taken this way tell whether a change made ckptdb faster.
//
// The baseline is what a user would pick instead: the same tensors as one
// safetensors file (written sequentially, fsynced, renamed into place; read
// back into freshly allocated buffers). Restores run in a fresh process (this
// binary, re-executed) after the page cache was dropped, into memory that
// process allocates, as a restarted trainer's.
//
// States: a real training trajectory (trajectory.h: an MLP trained with
// Adam, every step's parameters and moments, float32 and bfloat16), and the
// trained-like tensors of bench_util.h, as 4 MiB tensors and as a small
// transformer's blocks (tensors of 1 KiB to 1 MiB).
//
//   CKPTDB_BENCH_MB=256 CKPTDB_BENCH_ROUNDS=5 build/bench/suite_bench
//   (scripts/bench.sh runs it and prints one table)

#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <numeric>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>

#include "bench_util.h"
#include "safetensors.h"
#include "staging_pool.h"
#include "trajectory.h"

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

uint64_t EnvNumber(const char* name, uint64_t fallback) {
  const char* text = std::getenv(name);
  return text != nullptr ? std::strtoull(text, nullptr, 10) : fallback;
}

int Rounds() {
  return static_cast<int>(std::max<uint64_t>(1, EnvNumber("CKPTDB_BENCH_ROUNDS", 5)));
}

// Runs `contenders` one after the other, starting with contender
// `round % size`: each takes each place in turn over the rounds. On these
// machines a read or write right after others ran up to 3x slower than the
// first one (the disk still busy with what came before): in a fixed order
// the same side would always pay for it.
void RunInTurn(const std::vector<std::function<void()>>& contenders, int64_t round) {
  const size_t first = static_cast<size_t>(round) % contenders.size();
  for (size_t i = 0; i < contenders.size(); ++i) contenders[(first + i) % contenders.size()]();
}

// The delta rows' CheckpointerOptions::max_delta_chain: a restore of the
// chain's last step reads 5 chunks per chunk.
constexpr uint32_t kDeltaChain = 4;

// A checkpointer as a training program opens one: the defaults, but every
// step kept (retention is not what these rows measure), and delta encoding
// as asked.
std::unique_ptr<Checkpointer> OpenStore(const std::string& dir, bool async,
                                        uint32_t max_delta_chain = 0) {
  CheckpointerOptions options;
  options.max_to_keep = std::nullopt;
  options.enable_async_checkpointing = async;
  options.max_delta_chain = max_delta_chain;
  auto opened = Checkpointer::Open(dir, options);
  Check(opened.status(), "open");
  return std::move(*opened);
}

// ---- Rounds and their report ----

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

// Per-round seconds of both sides. Ratios are per round, then summarized:
// `speedup` = baseline time / ckptdb time (above 1: ckptdb faster);
// otherwise ckptdb time / baseline time (the trainer's stall, a fraction).
struct Comparison {
  std::vector<double> ckptdb;
  std::vector<double> baseline;

  void Report(benchmark::State& state, const std::string& prefix, bool speedup,
              uint64_t bytes) const {
    std::vector<double> ratios;
    for (size_t i = 0; i < ckptdb.size(); ++i) {
      ratios.push_back(speedup ? baseline[i] / ckptdb[i] : ckptdb[i] / baseline[i]);
    }
    state.counters[prefix + "ratio"] = Median(ratios);
    state.counters[prefix + "ratio_min"] = *std::min_element(ratios.begin(), ratios.end());
    state.counters[prefix + "ratio_max"] = *std::max_element(ratios.begin(), ratios.end());
    state.counters[prefix + "ckptdb_seconds"] = Median(ckptdb);
    state.counters[prefix + "baseline_seconds"] = Median(baseline);
    state.counters[prefix + "bytes"] = static_cast<double>(bytes);
    state.counters["rounds"] = static_cast<double>(ckptdb.size());
  }
};

// Flushes every dirty page of the system, so that the next timed operation
// starts from the same state whichever side ran before it.
void SyncAll() { ::sync(); }

// Drops the page cache of everything (root), or else of every file under
// `dir`; returns whether the whole cache was dropped.
bool DropCaches(const std::string& dir) {
  SyncAll();
  std::ofstream control("/proc/sys/vm/drop_caches");
  if (control && (control << "3" << std::flush)) return true;
  DropPageCache(dir);
  return false;
}

uint64_t StoredBytes(Checkpointer& checkpointer, int64_t step) {
  Result<StepMetadata> metadata = checkpointer.ItemMetadata(step);
  Check(metadata.status(), "metadata");
  uint64_t stored = 0;
  for (const LeafMetadata& leaf : metadata->leaves) stored += leaf.stored_bytes;
  return stored;
}

uint64_t LogicalBytes(const Tree& tree) {
  uint64_t bytes = 0;
  tree.ForEachLeaf([&](const std::string&, const Tree& leaf) {
    if (leaf.kind() == Tree::Kind::kTensor) bytes += leaf.tensor().byte_size();
  });
  return bytes;
}

// The baseline save: the tree as one safetensors file, until durable.
double SafetensorsSave(const std::string& path, const Tree& tree) {
  const auto start = Clock::now();
  Check(WriteSafetensors(path, tree, {}), "safetensors write");
  return Seconds(start);
}

// ---- States ----

// The states a row saves, one per round (and one before the first, to warm
// up both sides as a training run's earlier saves would).
class States {
 public:
  virtual ~States() = default;
  virtual Tree Next() = 0;
};

class TrajectoryStates : public States {
 public:
  TrajectoryStates(uint64_t bytes, DType dtype) : trajectory_(bytes, dtype, 42) {}
  Tree Next() override {
    trajectory_.Step();
    return trajectory_.State();
  }

 private:
  Trajectory trajectory_;
};

// The tensor sizes of one block of a small transformer (width 256): four
// attention projections (256 x 256), the MLP's two matrices (256 x 1024),
// two norm scales and the MLP's biases (1024, 256): the hundreds of small
// and medium tensors of a real model rather than a few large ones.
std::vector<size_t> TransformerBlockTensorBytes(DType dtype) {
  const size_t width = DTypeSize(dtype);
  const size_t d = 256;
  return {d * d * width,     d * d * width, d * d * width, d * d * width,
          4 * d * d * width, 4 * d * d * width, d * width, d * width,
          4 * d * width,     d * width};
}

class TrainedStates : public States {
 public:
  TrainedStates(uint64_t bytes, DType dtype) : model_(bytes, dtype, 1) {}
  TrainedStates(uint64_t bytes, DType dtype, const std::vector<size_t>& tensor_bytes)
      : model_(bytes, dtype, 1, tensor_bytes) {}
  Tree Next() override {
    model_.Train(0, model_.tensor_count(), ++step_);
    return Copy(model_.View());
  }

 private:
  static Tree Copy(const Tree& view) {
    Tree copy;
    view.ForEachLeaf([&](const std::string& path, const Tree& leaf) {
      Check(copy.SetPath(path, Tree::Leaf(Tensor::CopyOf(leaf.tensor()))), "copy");
    });
    return copy;
  }
  TrainedState model_;
  uint64_t step_ = 0;
};

std::unique_ptr<States> MakeStates(const std::string& kind, uint64_t bytes, DType dtype) {
  if (kind == "trajectory") return std::make_unique<TrajectoryStates>(bytes, dtype);
  if (kind == "layered") {
    return std::make_unique<TrainedStates>(bytes, dtype, TransformerBlockTensorBytes(dtype));
  }
  return std::make_unique<TrainedStates>(bytes, dtype);
}

// ---- Save ----

// Each round: the next state as a safetensors file, then saved by a
// long-lived asynchronous checkpointer until durable (Save +
// WaitUntilFinished). Also reports the trainer's stall (Save's blocking
// time against the file's write + fsync: "stall_"), bytes stored over
// logical (median, and mean: with delta encoding, kDeltaChain + 1 rounds
// are one cycle of a whole step and its deltas), and device bytes written
// over stored.
void SaveRounds(benchmark::State& state, const std::string& kind, uint64_t bytes, DType dtype,
                uint32_t max_delta_chain) {
  for (auto _ : state) {
    ScratchDir dir;
    std::unique_ptr<States> states = MakeStates(kind, bytes, dtype);
    auto checkpointer = OpenStore(dir.path() + "/store", /*async=*/true, max_delta_chain);
    const std::string file = dir.path() + "/state.safetensors";
    Tree warm = states->Next();
    SafetensorsSave(file, warm);
    Check(checkpointer->Save(warm, 0).status(), "save");
    Check(checkpointer->WaitUntilFinished(), "save");
    Comparison save, stall;
    std::vector<double> stored_over_logical, amplification;
    for (int64_t round = 1; round <= Rounds(); ++round) {
      const Tree tree = states->Next();
      const uint64_t logical = LogicalBytes(tree);
      auto save_file = [&] {
        SyncAll();
        const double file_seconds = SafetensorsSave(file, tree);
        save.baseline.push_back(file_seconds);
        stall.baseline.push_back(file_seconds);
      };
      uint64_t device = 0;
      auto save_ckptdb = [&] {
        SyncAll();
        const uint64_t written_before = DeviceBytesWritten();
        const auto start = Clock::now();
        {
          ProfiledSection profiled;
          Check(checkpointer->Save(tree, round).status(), "save");
          stall.ckptdb.push_back(Seconds(start));
          Check(checkpointer->WaitUntilFinished(), "save");
        }
        save.ckptdb.push_back(Seconds(start));
        device = DeviceBytesWritten() - written_before;
      };
      RunInTurn({save_file, save_ckptdb}, round);
      const uint64_t stored = StoredBytes(*checkpointer, round);
      stored_over_logical.push_back(static_cast<double>(stored) / static_cast<double>(logical));
      if (device > 0 && stored > 0) {
        amplification.push_back(static_cast<double>(device) / static_cast<double>(stored));
      }
    }
    save.Report(state, "", /*speedup=*/true, LogicalBytes(warm));
    stall.Report(state, "stall_", /*speedup=*/false, LogicalBytes(warm));
    state.counters["stored_over_logical"] = Median(stored_over_logical);
    state.counters["stored_over_logical_mean"] =
        std::accumulate(stored_over_logical.begin(), stored_over_logical.end(), 0.0) /
        static_cast<double>(stored_over_logical.size());
    state.counters["write_amplification"] = amplification.empty() ? 0 : Median(amplification);
  }
}

// ---- Restore, in a fresh process ----

// What a child process restores: "read" (the file read front to back
// through one buffer: the disk's cold sequential read rate, which bounds
// every restore), "safetensors" (the file, read into fresh
// buffers), "owned" (RestoreTree: ckptdb allocates), "template" (Restore
// into buffers this process allocated first and never touched, as a
// restarted trainer's). The baseline's and the template's buffers come from
// operator new, as numpy's and torch's empty arrays do (not from ckptdb's
// allocator, which asks for huge pages). Prints its seconds, from before
// opening to the last byte in memory.
int RestoreChild(const std::string& what, const std::string& path) {
  std::vector<std::unique_ptr<std::byte[]>> buffers;
  auto fresh_buffer = [&](uint64_t bytes) {
    buffers.emplace_back(new std::byte[bytes == 0 ? 1 : bytes]);
    return buffers.back().get();
  };
  const auto start = Clock::now();
  if (what == "read") {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) std::abort();
    constexpr size_t kReadBytes = 8 << 20;
    std::byte* buffer = fresh_buffer(kReadBytes);
    for (ssize_t n; (n = ::read(fd, buffer, kReadBytes)) != 0;) {
      if (n < 0) std::abort();
    }
    ::close(fd);
  } else if (what == "safetensors") {
    // The header (from the mapping, which reads only its first pages), then
    // every tensor read into its own buffer.
    Result<MappedSafetensors> file = MapSafetensors(path);
    Check(file.status(), "safetensors header");
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) std::abort();
    const auto* base = static_cast<const std::byte*>(file->mapping.get());
    file->tree.ForEachLeaf([&](const std::string&, const Tree& leaf) {
      if (leaf.kind() != Tree::Kind::kTensor) return;
      const Tensor& tensor = leaf.tensor();
      std::byte* buffer = fresh_buffer(tensor.byte_size());
      const auto offset = static_cast<off_t>(tensor.data() - base);
      for (uint64_t done = 0; done < tensor.byte_size();) {
        const ssize_t n = ::pread(fd, buffer + done, tensor.byte_size() - done,
                                  offset + static_cast<off_t>(done));
        if (n <= 0) std::abort();
        done += static_cast<uint64_t>(n);
      }
    });
    ::close(fd);
  } else {
    CheckpointerOptions options;
    options.create = false;
    auto opened = Checkpointer::Open(path, options);
    Check(opened.status(), "open");
    if (what == "owned") {
      Result<Tree> tree = (*opened)->RestoreTree();
      Check(tree.status(), "restore");
      benchmark::DoNotOptimize(*tree);
    } else {
      Result<StepMetadata> metadata = (*opened)->ItemMetadata();
      Check(metadata.status(), "metadata");
      Tree into;
      for (const LeafMetadata& leaf : metadata->leaves) {
        Tree value = leaf.kind == Tree::Kind::kTensor
                         ? Tree::Leaf(Tensor::View(leaf.dtype, leaf.shape,
                                                   fresh_buffer(leaf.logical_bytes))
                                          .value())
                         : Tree::Int(0);
        Check(into.SetPath(leaf.path, std::move(value)), "template");
      }
      Check((*opened)->Restore(&into), "restore");
      benchmark::DoNotOptimize(into);
    }
  }
  std::printf("%.9f\n", Seconds(start));
  return 0;
}

// Runs this binary again as `--restore-child WHAT PATH` (no shell: PATH may
// hold any byte) and returns the seconds it printed.
double RunRestoreChild(const std::string& what, const std::string& path) {
  int pipe_fds[2];
  if (::pipe(pipe_fds) != 0) std::abort();
  const pid_t pid = ::fork();
  if (pid < 0) std::abort();
  if (pid == 0) {
    ::dup2(pipe_fds[1], STDOUT_FILENO);
    ::close(pipe_fds[0]);
    ::close(pipe_fds[1]);
    const char* argv[] = {"suite_bench", "--restore-child", what.c_str(), path.c_str(), nullptr};
    ::execv("/proc/self/exe", const_cast<char* const*>(argv));
    ::_exit(127);
  }
  ::close(pipe_fds[1]);
  std::string output;
  char buffer[256];
  for (ssize_t n; (n = ::read(pipe_fds[0], buffer, sizeof(buffer))) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) std::abort();
    output.append(buffer, static_cast<size_t>(n));
  }
  ::close(pipe_fds[0]);
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::abort();
  }
  return std::stod(output);
}

// A store holding a few steps of the states and a safetensors file of the
// last; then rounds of cold restores of both, each in a fresh process. With
// delta encoding, the store holds a whole chain: the last step is a delta
// of depth max_delta_chain (the slowest to restore).
void RestoreRounds(benchmark::State& state, const std::string& kind, uint64_t bytes, DType dtype,
                   const std::string& into, uint32_t max_delta_chain) {
  for (auto _ : state) {
    ScratchDir dir;
    std::unique_ptr<States> states = MakeStates(kind, bytes, dtype);
    const std::string store = dir.path() + "/store";
    const std::string file = dir.path() + "/state.safetensors";
    uint64_t logical = 0;
    uint64_t stored = 0;
    {
      auto checkpointer = OpenStore(store, /*async=*/true, max_delta_chain);
      const int64_t last = std::max<int64_t>(2, max_delta_chain);
      for (int64_t step = 0; step <= last; ++step) {
        Tree tree = states->Next();
        Check(checkpointer->Save(tree, step).status(), "save");
        if (step == last) {
          SafetensorsSave(file, tree);
          logical = LogicalBytes(tree);
        }
      }
      Check(checkpointer->WaitUntilFinished(), "wait");
      stored = StoredBytes(*checkpointer, last);
      Check(checkpointer->Close(), "close");
    }
    const auto file_bytes = static_cast<double>(std::filesystem::file_size(file));
    Comparison restore;
    // Per round: the time the step's stored bytes take to read at the disk's
    // cold sequential rate, measured then; and ckptdb's time over it.
    std::vector<double> limit_seconds;
    std::vector<double> over_limit;
    bool whole_cache = true;
    for (int round = 0; round < Rounds(); ++round) {
      double read_seconds = 0;
      auto cold = [&](const std::function<void()>& run) {
        return [&, run] {
          whole_cache = DropCaches(dir.path()) && whole_cache;
          run();
        };
      };
      RunInTurn({cold([&] { restore.baseline.push_back(RunRestoreChild("safetensors", file)); }),
                 cold([&] { restore.ckptdb.push_back(RunRestoreChild(into, store)); }),
                 cold([&] { read_seconds = RunRestoreChild("read", file); })},
                round);
      limit_seconds.push_back(static_cast<double>(stored) / (file_bytes / read_seconds));
      over_limit.push_back(restore.ckptdb.back() / limit_seconds.back());
    }
    restore.Report(state, "", /*speedup=*/true, logical);
    state.counters["limit_seconds"] = Median(limit_seconds);
    state.counters["over_limit"] = Median(over_limit);
    state.counters["over_limit_min"] = *std::min_element(over_limit.begin(), over_limit.end());
    state.counters["over_limit_max"] = *std::max_element(over_limit.begin(), over_limit.end());
    // 1: the whole page cache was dropped before each restore; 0: only the
    // files' own pages (not root), so metadata and the binary may be cached.
    state.counters["cold_whole_cache"] = whole_cache ? 1 : 0;
  }
}

// ---- The trainer's stall against a memcpy ----

// Blocking time of an asynchronous save vs a memcpy of the state (into
// memory allocated as ckptdb's staging is), with `changed_percent` of the
// tensors changed since the previous save; with `declared`, the caller names
// the others in SaveOptions::assume_unchanged.
void AsyncBlocking(benchmark::State& state, uint64_t megabytes, int changed_percent,
                   bool declared) {
  for (auto _ : state) {
    ScratchDir dir;
    TrainedState model(megabytes << 20, DType::kFloat32, 3);
    auto checkpointer = OpenStore(dir.path() + "/store", /*async=*/true);
    Check(checkpointer->Save(model.View(), 0).status(), "save");  // warms the staging pool
    Check(checkpointer->WaitUntilFinished(), "wait");
    const size_t changed = model.tensor_count() * static_cast<size_t>(changed_percent) / 100;
    SaveOptions options;
    if (declared) {
      size_t leaf = 0;
      model.View().ForEachLeaf([&](const std::string& path, const Tree&) {
        if (leaf++ >= changed) options.assume_unchanged.push_back(path);
      });
    }
    // Huge pages, faulted in at once, as ckptdb's staging: a large copy into
    // fresh 4 KiB pages ran up to 20x slower in some runs on these machines.
    StagingPool baseline_memory(4u << 20, model.tensor_count());
    std::vector<std::byte*> copies;
    for (size_t i = 0; i < model.tensor_count(); ++i) {
      copies.push_back(baseline_memory.data(baseline_memory.Acquire().value()));
    }
    Comparison blocking;
    for (int64_t step = 1; step <= Rounds(); ++step) {
      model.Train(0, changed, static_cast<uint64_t>(step));
      Tree view = model.View();
      SyncAll();
      auto copy_start = Clock::now();
      size_t i = 0;
      view.ForEachLeaf([&](const std::string&, const Tree& leaf) {
        std::memcpy(copies[i++], leaf.tensor().data(), leaf.tensor().byte_size());
      });
      blocking.baseline.push_back(Seconds(copy_start));
      const auto start = Clock::now();
      {
        ProfiledSection profiled;
        Check(checkpointer->Save(view, step, options).status(), "save");
      }
      blocking.ckptdb.push_back(Seconds(start));
      Check(checkpointer->WaitUntilFinished(), "wait");
    }
    blocking.Report(state, "", /*speedup=*/false, model.bytes());
  }
}

// Saving a state the store already holds (every chunk deduplicated) vs
// writing it as a safetensors file.
void ResaveUnchanged(benchmark::State& state, uint64_t megabytes) {
  for (auto _ : state) {
    ScratchDir dir;
    TrainedState model(megabytes << 20, DType::kFloat32, 4);
    Tree view = model.View();
    auto checkpointer = OpenStore(dir.path() + "/store", /*async=*/false);
    Check(checkpointer->Save(view, 0).status(), "save");
    Comparison resave;
    for (int64_t step = 1; step <= Rounds(); ++step) {
      SyncAll();
      resave.baseline.push_back(SafetensorsSave(dir.path() + "/state.safetensors", view));
      SyncAll();
      const auto start = Clock::now();
      Check(checkpointer->Save(view, step).status(), "save");
      resave.ckptdb.push_back(Seconds(start));
    }
    resave.Report(state, "", /*speedup=*/true, model.bytes());
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
  if (argc == 4 && std::strcmp(argv[1], "--restore-child") == 0) {
    return RestoreChild(argv[2], argv[3]);
  }
  const uint64_t mb = EnvNumber("CKPTDB_BENCH_MB", 256);
  const uint64_t bytes = mb << 20;
  const std::string size = "/" + std::to_string(mb) + "MB";
  // Trained-like states ("trained": 4 MiB tensors; "layered": a small
  // transformer's 1 KiB to 1 MiB ones) in float32 only: their training step
  // moves values by 1e-3 of themselves, which bfloat16 mostly rounds away
  // (such saves are re-saves); the trajectory's bfloat16 rows are the real
  // thing.
  for (const std::string kind : {"trajectory", "trained", "layered"}) {
    for (DType dtype : {DType::kFloat32, DType::kBFloat16}) {
      if (kind != "trajectory" && dtype != DType::kFloat32) continue;
      const std::string type = dtype == DType::kFloat32 ? "_f32" : "_bf16";
      Register("save/" + kind + type + size,
               [=](auto& s) { SaveRounds(s, kind, bytes, dtype, 0); });
      for (const std::string into : {"owned", "template"}) {
        if (kind != "trajectory" && into != "owned") continue;
        Register("restore_" + into + "/" + kind + type + size,
                 [=](auto& s) { RestoreRounds(s, kind, bytes, dtype, into, 0); });
      }
      if (kind == "trajectory") {
        Register("save_delta/" + kind + type + size,
                 [=](auto& s) { SaveRounds(s, kind, bytes, dtype, kDeltaChain); });
        Register("restore_owned_delta/" + kind + type + size,
                 [=](auto& s) { RestoreRounds(s, kind, bytes, dtype, "owned", kDeltaChain); });
      }
    }
  }
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
