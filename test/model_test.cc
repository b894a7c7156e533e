// A randomized model-based test of the Checkpointer: random operations on a
// real store and on an in-memory model of the documented semantics (save
// decision, retention, Delete, Restore, metadata, reopen), compared after
// every operation.
//
// Reproducible: the seed is printed (SCOPED_TRACE and stdout) and can be set
// with CKPTDB_MODEL_SEED; CKPTDB_MODEL_OPS sets the number of operations
// (default 1500). On the first divergence the test stops and prints the
// operations of the current round, which is the reproduction. An operation
// that takes longer than CKPTDB_MODEL_STALL_SECONDS (default 60) is a hang:
// a watchdog prints the same and exits the process with status 3.
//
// The retention rules are re-implemented here from the documentation
// (options.h, lib/retention.h, DESIGN.md §2), not taken from the library.

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "ckptdb/ckptdb.h"
#include "test_util.h"

namespace ckptdb {
namespace {

using testing::TempDir;
using testing::ZeroedLike;
using SysClock = std::chrono::system_clock;

// ---- Generated states ----

uint64_t Mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

uint64_t Seed(uint64_t a, uint64_t b = 0, uint64_t c = 0) { return Mix(Mix(Mix(a) + b) + c); }

void FillBytes(std::byte* out, uint64_t size, uint64_t seed, bool bits) {
  for (uint64_t i = 0; i < size; ++i) {
    const uint64_t word = Mix(seed + i / 8);
    auto byte = static_cast<uint8_t>(word >> (8 * (i % 8)));
    out[i] = static_cast<std::byte>(bits ? (byte & 1) : byte);
  }
}

Tensor Filled(DType dtype, std::vector<int64_t> shape, uint64_t seed) {
  Tensor tensor = Tensor::Allocate(dtype, std::move(shape)).value();
  FillBytes(tensor.mutable_data(), tensor.byte_size(), seed, dtype == DType::kBool);
  return tensor;
}

constexpr int kVariants = 3;

// A state of a few tens of KiB, every byte a function of (step, variant).
// The variants differ in structure (list length, a shape). Parts repeat
// across steps so that chunks dedup across saves: "frozen" (per variant),
// "kernel" (per step / 3), the first 16 KiB of "big" (per variant) and its
// tail (per step % 5), "mask" (per step % 2); "frozen_copy" dedups inside
// one save.
Tree MakeState(int64_t step, int variant) {
  const auto ustep = static_cast<uint64_t>(step);
  const auto uvariant = static_cast<uint64_t>(variant);
  Tree state;
  Tree* params = state.Set("params", Tree::Map()).value();
  Tensor frozen = Filled(DType::kFloat32, {variant == 2 ? 1100 : 1024}, Seed(1, uvariant));
  (void)params->Set("frozen", Tree::Leaf(frozen));
  (void)params->Set("frozen_copy", Tree::Leaf(Tensor::CopyOf(frozen)));
  (void)params->Set("kernel",
                    Tree::Leaf(Filled(DType::kBFloat16, {48, 80}, Seed(2, ustep / 3, uvariant))));
  (void)params->Set("bias", Tree::Leaf(Filled(DType::kFloat64, {}, Seed(3, ustep))));
  Tree* opt = state.Set("opt", Tree::Map()).value();
  Tensor big = Tensor::Allocate(DType::kUInt8, {20000}).value();
  FillBytes(big.mutable_data(), 16384, Seed(4, uvariant), false);
  FillBytes(big.mutable_data() + 16384, 20000 - 16384, Seed(5, ustep % 5, uvariant), false);
  (void)opt->Set("big", Tree::Leaf(big));
  Tree* layers = opt->Set("layers", Tree::List()).value();
  for (int i = 0; i <= variant; ++i) {
    Tree* layer = layers->Append(Tree::Map()).value();
    (void)layer->Set("mu", Tree::Leaf(Filled(DType::kFloat32, {8, 64}, Seed(6, ustep, i))));
    (void)layer->Set("count", Tree::Int(step * 10 + i));
    (void)layer->Set("mask", Tree::Leaf(Filled(DType::kBool, {37}, Seed(7, ustep % 2, i))));
  }
  (void)opt->Set("empty", Tree::Leaf(Filled(DType::kInt32, {0, 3}, 0)));
  (void)state.Set("step", Tree::Int(step));
  (void)state.Set("learning_rate", Tree::Float(1.0 / (1.0 + static_cast<double>(step))));
  (void)state.Set("even", Tree::Bool(step % 2 == 0));
  (void)state.Set("name", Tree::String("variant-" + std::to_string(variant)));
  return state;
}

// What a caller may do to its buffers once they are no longer promised.
void Scribble(Tree& tree) {
  tree.ForEachMutableLeaf([](const std::string&, Tree& leaf) {
    if (leaf.kind() == Tree::Kind::kTensor && leaf.tensor().byte_size() > 0 &&
        leaf.tensor().writable()) {
      std::memset(leaf.tensor().mutable_data(), 0xAB, leaf.tensor().byte_size());
    }
  });
}

bool AllZero(const Tensor& tensor) {
  for (uint64_t i = 0; i < tensor.byte_size(); ++i) {
    if (tensor.data()[i] != std::byte{0}) return false;
  }
  return true;
}

// ---- The model ----

constexpr const char* kMetricNames[] = {"eval/accuracy", "loss"};

struct ModelStep {
  int variant = 0;
  SysClock::time_point commit_time;
  std::map<std::string, double> metrics;
  std::map<std::string, std::string> user_metadata;
  uint32_t chunk_size = 0;  // chunk_size_bytes when it was saved
};

// The outcome of Save or MaybeSave: an error code, or whether it saved.
struct Outcome {
  std::optional<Status::Code> error;
  bool saved = false;
};

std::string Describe(const Outcome& outcome) {
  if (outcome.error.has_value()) return std::string(CodeName(*outcome.error));
  return outcome.saved ? "true" : "false";
}

std::string Describe(const Result<bool>& result) {
  if (!result.ok()) return std::string(CodeName(result.status().code()));
  return *result ? "true" : "false";
}

std::string Describe(const Status& status) { return std::string(CodeName(status.code())); }

class Model {
 public:
  CheckpointerOptions options;  // the clock is not used
  std::map<int64_t, ModelStep> steps;
  bool preempted = false;
  std::map<std::string, int64_t> counts;  // coverage

  std::optional<int64_t> Latest() const {
    if (steps.empty()) return std::nullopt;
    return steps.rbegin()->first;
  }
  std::vector<int64_t> AllSteps() const {
    std::vector<int64_t> all;
    for (const auto& [step, info] : steps) all.push_back(step);
    return all;
  }
  bool Held(int64_t step) const { return steps.count(step) != 0; }

  // checkpointer.h ShouldSave / DESIGN.md §2.
  bool ShouldSave(int64_t step) const {
    if (step < 0) return false;
    if (!steps.empty() && step <= steps.rbegin()->first) return false;
    if (step % options.save_interval_steps == 0) return true;
    for (int64_t listed : options.save_on_steps) {
      if (listed == step) return true;
    }
    return preempted || steps.empty();
  }

  // The steps retention deletes from `steps` (options.h, retention.h).
  std::set<int64_t> Doomed() const {
    if (!options.max_to_keep.has_value()) return {};  // unset keeps every step
    std::set<int64_t> keep;
    if (options.keep_period.has_value()) {
      for (const auto& [step, info] : steps) {
        if (step % *options.keep_period == 0) keep.insert(step);
      }
    }
    if (options.keep_time_interval.has_value() && !steps.empty()) {
      auto anchor = steps.begin();
      keep.insert(anchor->first);
      for (auto it = std::next(steps.begin()); it != steps.end(); ++it) {
        if (it->second.commit_time - anchor->second.commit_time >= *options.keep_time_interval) {
          keep.insert(it->first);
          anchor = it;
        }
      }
    }
    const auto n = static_cast<size_t>(*options.max_to_keep);
    if (options.best_metric_path.empty()) {
      // The latest n by step.
      size_t index = 0;
      for (const auto& [step, info] : steps) {
        if (index++ + n >= steps.size()) keep.insert(step);
      }
    } else if (steps.size() <= n) {
      for (const auto& [step, info] : steps) keep.insert(step);
    } else if (n > 0) {
      std::vector<std::pair<double, int64_t>> ranked;  // (metric, step)
      for (const auto& [step, info] : steps) {
        auto metric = info.metrics.find(options.best_metric_path);
        if (metric != info.metrics.end()) {
          ranked.emplace_back(metric->second, step);
        } else if (options.keep_checkpoints_without_metrics) {
          keep.insert(step);
        }
      }
      const bool max = options.best_mode == BestMode::kMax;
      // Best first; on equal metrics the later step is better.
      std::sort(ranked.begin(), ranked.end(), [&](const auto& a, const auto& b) {
        if (a.first != b.first) return max ? a.first > b.first : a.first < b.first;
        return a.second > b.second;
      });
      for (size_t i = 0; i < ranked.size() && i < n; ++i) keep.insert(ranked[i].second);
    }
    std::set<int64_t> doomed;
    for (const auto& [step, info] : steps) {
      if (keep.count(step) == 0) doomed.insert(step);
    }
    return doomed;
  }

  // Checkpointer::Save. `bad_metrics`: the metrics hold a NaN.
  Outcome Save(int64_t step, bool force, bool bad_metrics, const ModelStep& info) {
    if (step < 0) return {Status::Code::kInvalidArgument, false};
    if (Held(step)) {
      if (force) return {Status::Code::kAlreadyExists, false};
      return {std::nullopt, false};
    }
    if (!force && !ShouldSave(step)) return {std::nullopt, false};
    if (bad_metrics) return {Status::Code::kInvalidArgument, false};
    if (preempted && !force && step % options.save_interval_steps != 0) {
      ++counts["saves due to a preemption or the first save"];
    }
    steps[step] = info;
    preempted = false;
    const std::set<int64_t> doomed = Doomed();
    counts["steps deleted by retention"] += static_cast<int64_t>(doomed.size());
    if (doomed.count(step) != 0) ++counts["saves whose step retention deleted at once"];
    for (int64_t old : doomed) steps.erase(old);
    return {std::nullopt, true};
  }

  // Checkpointer::MaybeSave: Save(force) only if due.
  Outcome MaybeSave(int64_t step, bool force, const ModelStep& info) {
    if (!ShouldSave(step)) return {std::nullopt, false};
    return Save(step, force, false, info);
  }
};

// ---- The test driver ----

int64_t EnvInt(const char* name, int64_t fallback) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return fallback;
  return static_cast<int64_t>(std::strtoull(value, nullptr, 0));
}

template <typename T>
std::string Join(const T& items) {
  std::ostringstream out;
  out << "[";
  bool first = true;
  for (const auto& item : items) {
    out << (first ? "" : ",") << item;
    first = false;
  }
  out << "]";
  return out.str();
}

std::string MetricsText(const std::map<std::string, double>& metrics) {
  std::ostringstream out;
  out << "{";
  bool first = true;
  for (const auto& [name, value] : metrics) {
    out << (first ? "" : ",") << name << ":" << value;
    first = false;
  }
  out << "}";
  return out.str();
}

std::string OptionsText(const CheckpointerOptions& o) {
  std::ostringstream out;
  out << "save_interval_steps=" << o.save_interval_steps
      << " save_on_steps=" << Join(o.save_on_steps)
      << " max_to_keep=" << (o.max_to_keep ? std::to_string(*o.max_to_keep) : "unset")
      << " keep_period=" << (o.keep_period ? std::to_string(*o.keep_period) : "unset")
      << " keep_time_interval="
      << (o.keep_time_interval ? std::to_string(o.keep_time_interval->count()) + "s" : "unset")
      << " best_metric_path='" << o.best_metric_path
      << "' best_mode=" << (o.best_mode == BestMode::kMax ? "max" : "min")
      << " keep_checkpoints_without_metrics=" << o.keep_checkpoints_without_metrics
      << " gc_mode=" << static_cast<int>(o.gc_mode)
      << " gc_garbage_threshold=" << o.gc_garbage_threshold
      << " gc_rewrite_threshold=" << o.gc_rewrite_threshold
      << " async=" << o.enable_async_checkpointing << " staging_bytes=" << o.staging_bytes
      << " fast=" << o.fast << " chunk_size_bytes=" << o.chunk_size_bytes;
  return out.str();
}

class ModelRun {
 public:
  ModelRun(uint64_t seed, std::chrono::seconds stall_limit)
      : seed_(seed), stall_limit_(stall_limit), rng_(seed) {}

  // Runs rounds until `total_ops` operations ran or a check failed. A
  // watchdog ends the process, printing the operations, if one operation
  // takes longer than the stall limit (a hang would otherwise block forever).
  void Run(int64_t total_ops) {
    std::thread watchdog([this] { Watch(); });
    struct StopWatchdog {
      ModelRun* run;
      std::thread& thread;
      ~StopWatchdog() {
        {
          std::lock_guard<std::mutex> lock(run->log_mutex_);
          run->stop_ = true;
        }
        run->stopped_.notify_all();
        thread.join();
      }
    } stop_watchdog{this, watchdog};
    int round = 0;
    while (ops_run_ < total_ops && !::testing::Test::HasFailure()) {
      const int64_t length = std::min<int64_t>(total_ops - ops_run_, Uniform(80, 300));
      RunRound(round++, length);
    }
    rounds_ = round;
  }

  int64_t ops_run() const { return ops_run_; }
  int rounds() const { return rounds_; }

  // What the run exercised, by outcome.
  std::string Coverage() const {
    std::ostringstream out;
    std::map<std::string, int64_t> all = coverage_;
    for (const auto& [what, count] : model_.counts) all[what] += count;
    for (const auto& [what, count] : all) out << "  " << what << ": " << count << "\n";
    return out.str();
  }

 private:
  // ---- Randomness ----
  int64_t Uniform(int64_t lo, int64_t hi) {  // inclusive
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng_);
  }
  bool Chance(double p) { return std::bernoulli_distribution(p)(rng_); }
  template <typename T>
  const T& Pick(const std::vector<T>& items) {
    return items[static_cast<size_t>(Uniform(0, static_cast<int64_t>(items.size()) - 1))];
  }

  CheckpointerOptions RandomOptions() {
    CheckpointerOptions o;
    o.save_interval_steps = Pick<int64_t>({1, 1, 2, 3, 5});
    if (Chance(0.3)) {
      for (int i = Uniform(1, 3); i > 0; --i) o.save_on_steps.push_back(frontier_ + Uniform(1, 40));
    }
    o.max_to_keep = Pick<std::optional<int64_t>>({std::nullopt, 0, 1, 3, 3});
    o.keep_period = Pick<std::optional<int64_t>>({std::nullopt, std::nullopt, 2, 5});
    if (Chance(0.4)) {
      o.keep_time_interval = std::chrono::seconds(Pick<int64_t>({10, 45}));
    }
    if (Chance(0.5)) {
      o.best_metric_path = Pick<std::string>({kMetricNames[0], kMetricNames[1]});
      o.best_mode = Chance(0.5) ? BestMode::kMax : BestMode::kMin;
      o.keep_checkpoints_without_metrics = Chance(0.5);
    }
    o.gc_mode = Pick<GcMode>({GcMode::kOff, GcMode::kAfterRetention, GcMode::kGarbageThreshold});
    o.gc_garbage_threshold = Pick<double>({0.0, 0.2, 0.9});
    o.gc_rewrite_threshold = Pick<double>({0.0, 0.5, 1.0});
    o.enable_async_checkpointing = Chance(0.5);
    o.chunk_size_bytes = Chance(0.5) ? 4096 : 16384;
    o.staging_bytes =
        Pick<uint64_t>({uint64_t{256} << 20, o.chunk_size_bytes, uint64_t{3} * o.chunk_size_bytes});
    o.fast = Chance(0.7);
    auto clock = clock_;
    o.clock = [clock] { return SysClock::time_point(std::chrono::seconds(clock->load())); };
    return o;
  }

  SysClock::time_point Now() const {
    return SysClock::time_point(std::chrono::seconds(clock_->load()));
  }

  void AdvanceClock() {
    int64_t delta = Uniform(0, 30);
    if (Chance(0.2)) delta = 0;
    if (Chance(0.03)) delta = -Uniform(1, 20);  // a clock that steps back
    clock_->fetch_add(delta);
  }

  std::map<std::string, double> RandomMetrics() {
    std::map<std::string, double> metrics;
    const std::vector<double> values = {-1.0, 0.25, 0.5, 0.5, 0.75, 1.0};
    switch (Uniform(0, 4)) {
      case 0: break;  // none
      case 1: metrics[kMetricNames[0]] = Pick(values); break;
      case 2: metrics[kMetricNames[1]] = Pick(values); break;
      case 3:
        metrics[kMetricNames[0]] = Pick(values);
        metrics[kMetricNames[1]] = Pick(values);
        break;
      default: metrics["other"] = Pick(values); break;
    }
    return metrics;
  }

  // A step for a save: mostly above everything so far, sometimes held, or
  // at or below the latest.
  int64_t PickSaveStep() {
    const int64_t roll = Uniform(0, 99);
    if (roll < 10 && !model_.steps.empty()) return PickHeld();
    if (roll < 25 && frontier_ >= 0) return Uniform(0, frontier_);
    if (roll < 35) return frontier_ + Uniform(6, 30);
    return frontier_ + Uniform(1, 5);
  }

  int64_t PickHeld() {
    auto it = model_.steps.begin();
    std::advance(it, Uniform(0, static_cast<int64_t>(model_.steps.size()) - 1));
    return it->first;
  }

  int64_t PickNotHeld() {
    for (int attempt = 0; attempt < 20; ++attempt) {
      const int64_t step = Uniform(0, std::max<int64_t>(frontier_ + 3, 3));
      if (!model_.Held(step)) return step;
    }
    return frontier_ + 1000;
  }

  // A step to read: kLatestStep, held, or not held.
  int64_t PickReadStep() {
    const int64_t roll = Uniform(0, 99);
    if (roll < 15) return kLatestStep;
    if (roll < 80 && !model_.steps.empty()) return PickHeld();
    return PickNotHeld();
  }

  std::optional<int64_t> Resolve(int64_t step) const {
    if (step == kLatestStep) return model_.Latest();
    if (model_.Held(step)) return step;
    return std::nullopt;
  }

  // ---- Logging and checks ----
  void Log(const std::string& line) {
    std::lock_guard<std::mutex> lock(log_mutex_);
    log_.push_back(line);
    last_progress_ = std::chrono::steady_clock::now();
  }
  // Names the operation about to call into the checkpointer.
  void Begin(const std::string& what) {
    std::lock_guard<std::mutex> lock(log_mutex_);
    current_ = what;
    last_progress_ = std::chrono::steady_clock::now();
  }

  void Watch() {
    std::unique_lock<std::mutex> lock(log_mutex_);
    while (!stop_) {
      stopped_.wait_for(lock, std::chrono::seconds(1));
      if (stop_ || std::chrono::steady_clock::now() - last_progress_ < stall_limit_) continue;
      std::cerr << "model_test: STALLED for more than " << stall_limit_.count()
                << " s in: " << current_ << "\nCKPTDB_MODEL_SEED=" << seed_ << ", round " << round_
                << " (" << round_options_ << "), operations so far:\n";
      for (size_t i = 0; i < log_.size(); ++i) std::cerr << "  " << i << ": " << log_[i] << "\n";
      std::cerr << std::flush;
      std::_Exit(3);
    }
  }
  void Count(const std::string& what) { ++coverage_[what]; }

  // After every operation: the steps listed must be the model's.
  void CheckSteps() {
    EXPECT_EQ(ckpt_->AllSteps(), model_.AllSteps()) << "AllSteps";
    EXPECT_EQ(ckpt_->LatestStep(), model_.Latest()) << "LatestStep";
  }

  void Open() {
    auto opened = Checkpointer::Open(dir_->path(), options_);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    ckpt_ = std::move(*opened);
    model_.preempted = false;
    last_saved_variant_.reset();  // a new object has no previous save
  }

  // Releases the buffers of a zero-copy save once it has finished.
  void ReleasePinned() {
    if (pinned_.has_value()) Scribble(*pinned_);
    pinned_.reset();
  }

  // A save of `variant` went through: the previous save has finished (a
  // save waits for it), and this one is what the next save may declare
  // tensors unchanged against.
  void Saved(int variant) {
    last_saved_variant_ = variant;
    ReleasePinned();
  }

  // ---- Operations ----
  void OpSave() {
    const int64_t step = PickSaveStep();
    const int variant = static_cast<int>(Uniform(0, kVariants - 1));
    SaveOptions options;
    options.force = Chance(0.35);
    options.metrics = RandomMetrics();
    if (Chance(0.3)) options.user_metadata["config"] = "hash-" + std::to_string(step);
    options.zero_copy = Chance(0.2);
    // The frozen tensors depend on the variant alone: declaring them is a
    // true promise when the previous save had the same variant.
    if (last_saved_variant_ == variant && Chance(0.5)) {
      options.assume_unchanged = {"params/frozen", "params/frozen_copy"};
    }
    if (Chance(0.7)) AdvanceClock();
    ModelStep info{variant, Now(), options.metrics, options.user_metadata,
                   options_.chunk_size_bytes};
    const Outcome want = model_.Save(step, options.force, false, info);
    Tree state = MakeState(step, variant);
    std::ostringstream line;
    line << "Save(step=" << step << ", variant=" << variant << (options.force ? ", force" : "")
         << ", metrics=" << MetricsText(options.metrics) << (options.zero_copy ? ", zero_copy" : "")
         << (options.assume_unchanged.empty() ? "" : ", assume_unchanged=frozen")
         << ") at t=" << clock_->load();
    Begin(line.str());
    Result<bool> got = ckpt_->Save(state, step, options);
    line << " -> " << Describe(got) << " (model " << Describe(want) << ")";
    Log(line.str());
    EXPECT_EQ(Describe(got), Describe(want)) << line.str();
    Count(std::string("Save ") + (options.force ? "forced " : "") + "-> " + Describe(want));
    if (!options.assume_unchanged.empty()) Count("Save assume_unchanged -> " + Describe(want));
    frontier_ = std::max(frontier_, step);
    if (got.ok() && *got) {
      Saved(variant);
      if (options.zero_copy) {
        pinned_ = std::move(state);
        return;
      }
    }
    Scribble(state);  // the caller may now change its buffers
  }

  void OpMaybeSave() {
    int64_t step = frontier_ + Uniform(1, 4);
    if (Chance(0.2) && frontier_ >= 0) step = Uniform(0, frontier_);
    const int variant = static_cast<int>(Uniform(0, kVariants - 1));
    const bool force = Chance(0.4);
    if (Chance(0.7)) AdvanceClock();
    ModelStep info{variant, Now(), {}, {}, options_.chunk_size_bytes};
    const Outcome want = model_.MaybeSave(step, force, info);
    Tree state = MakeState(step, variant);
    std::ostringstream line;
    line << "MaybeSave(step=" << step << ", variant=" << variant << (force ? ", force" : "")
         << ") at t=" << clock_->load();
    Begin(line.str());
    Result<bool> got = ckpt_->MaybeSave(state, step, force);
    line << " -> " << Describe(got) << " (model " << Describe(want) << ")";
    Log(line.str());
    EXPECT_EQ(Describe(got), Describe(want)) << line.str();
    Count(std::string("MaybeSave ") + (force ? "forced " : "") + "-> " + Describe(want));
    frontier_ = std::max(frontier_, step);
    if (got.ok() && *got) Saved(variant);
    Scribble(state);
  }

  // Saves that must fail: a negative step, a NaN metric.
  void OpBadSave() {
    Tree state = MakeState(std::max<int64_t>(frontier_, 0), 0);
    if (Chance(0.5)) {
      const int64_t step = -Uniform(1, 5);
      Result<bool> got = ckpt_->Save(state, step, testing::Forced());
      Log("Save(step=" + std::to_string(step) + ", force) -> " + Describe(got));
      EXPECT_EQ(Describe(got), "InvalidArgument") << "forced save of a negative step";
      EXPECT_FALSE(ckpt_->ShouldSave(step));
      Result<bool> maybe = ckpt_->MaybeSave(state, step, true);
      Log("MaybeSave(step=" + std::to_string(step) + ", force) -> " + Describe(maybe));
      EXPECT_EQ(Describe(maybe), "false") << "MaybeSave of a negative step is not due";
    } else {
      const int64_t step = PickNotHeld();
      SaveOptions options = testing::Forced();
      options.metrics[Pick<std::string>({kMetricNames[0], kMetricNames[1], "other"})] =
          std::numeric_limits<double>::quiet_NaN();
      const Outcome want = model_.Save(step, true, true, {});
      Result<bool> got = ckpt_->Save(state, step, options);
      Log("Save(step=" + std::to_string(step) + ", force, NaN metric) -> " + Describe(got) +
          " (model " + Describe(want) + ")");
      EXPECT_EQ(Describe(got), Describe(want)) << "NaN metric";
    }
  }

  void OpShouldSave() {
    std::vector<int64_t> probes = {frontier_ + 1, frontier_ + Uniform(1, 12), -1};
    if (auto latest = model_.Latest()) {
      probes.push_back(*latest);
      probes.push_back(*latest + 1);
      if (*latest > 0) probes.push_back(Uniform(0, *latest - 1));
    }
    for (int64_t step : options_.save_on_steps) probes.push_back(step);
    for (int64_t step : probes) {
      const bool want = model_.ShouldSave(step);
      const bool got = ckpt_->ShouldSave(step);
      if (got != want) {
        Log("ShouldSave(" + std::to_string(step) + ") -> " + (got ? "true" : "false"));
      }
      EXPECT_EQ(got, want) << "ShouldSave(" << step << ") preempted=" << model_.preempted;
      Count(std::string("ShouldSave -> ") + (want ? "true" : "false"));
    }
    Log("ShouldSave(" + Join(probes) + ")");
  }

  void OpSignalPreemption() {
    ckpt_->SignalPreemption();
    model_.preempted = true;
    Log("SignalPreemption()");
  }

  void OpRestore() {
    const int64_t step = PickReadStep();
    const std::optional<int64_t> resolved = Resolve(step);
    const int mode = static_cast<int>(Uniform(0, 4));
    std::ostringstream line;
    line << "Restore(step=" << step << ", mode=" << mode << ")";
    if (!resolved.has_value()) {
      // Missing: NotFound, unless noop_if_missing and the store is empty.
      Tree target = ZeroedLike(MakeState(std::max<int64_t>(step, 0), 0));
      Tree before = testing::DeepCopy(target);
      RestoreOptions options;
      options.noop_if_missing = mode == 4 || Chance(0.3);
      options.donate = Chance(0.5);
      Status status = ckpt_->Restore(&target, step, options);
      const bool noop = options.noop_if_missing && model_.steps.empty();
      line << (options.noop_if_missing ? " noop_if_missing" : "") << " -> " << Describe(status);
      Log(line.str());
      Count("Restore of a missing step -> " + Describe(status));
      if (noop) {
        EXPECT_OK(status) << line.str();
        EXPECT_TRUE(target.ContentEquals(before)) << "noop_if_missing touched the template";
      } else {
        EXPECT_TRUE(status.IsNotFound()) << line.str() << ": " << status.ToString();
      }
      return;
    }
    const ModelStep& info = model_.steps.at(*resolved);
    const Tree expected = MakeState(*resolved, info.variant);
    line << " of step " << *resolved << " variant " << info.variant;
    RestoreOptions options;
    options.noop_if_missing = mode == 4;
    switch (mode) {
      case 0:
      case 1:
      case 4: {
        options.donate = mode != 1;
        Tree target = ZeroedLike(expected);
        std::vector<Tensor> originals;  // the template's own buffers
        target.ForEachLeaf([&](const std::string&, const Tree& leaf) {
          if (leaf.kind() == Tree::Kind::kTensor) originals.push_back(leaf.tensor());
        });
        Status status = ckpt_->Restore(&target, step, options);
        line << (options.donate ? " donate" : " no-donate") << " -> " << Describe(status);
        Log(line.str());
        Count(std::string("Restore ") + (options.donate ? "donate" : "no-donate"));
        EXPECT_OK(status) << line.str();
        EXPECT_TRUE(target.ContentEquals(expected)) << line.str() << ": content differs";
        if (!options.donate) {
          for (const Tensor& original : originals) {
            EXPECT_TRUE(AllZero(original)) << line.str() << ": template buffer written";
          }
        }
        break;
      }
      case 2: {
        // Partial restore into a template whose other parts differ.
        const std::vector<std::vector<std::string>> choices = {
            {"params"}, {"opt/layers/0"}, {"params/kernel", "step"}};
        options.only_paths = Pick(choices);
        options.donate = Chance(0.5);
        Tree target = ZeroedLike(
            MakeState(Uniform(0, frontier_ + 1), static_cast<int>(Uniform(0, kVariants - 1))));
        for (const std::string& path : options.only_paths) {
          *target.Find(path) = ZeroedLike(*expected.Find(path));
        }
        Tree after = testing::DeepCopy(target);
        for (const std::string& path : options.only_paths) {
          *after.Find(path) = testing::DeepCopy(*expected.Find(path));
        }
        Status status = ckpt_->Restore(&target, step, options);
        line << " only_paths=" << Join(options.only_paths) << " -> " << Describe(status);
        Log(line.str());
        Count("Restore only_paths");
        EXPECT_OK(status) << line.str();
        EXPECT_TRUE(target.ContentEquals(after)) << line.str() << ": content differs";
        break;
      }
      case 3: {
        // A template of another structure: InvalidArgument, nothing written.
        const int other = (info.variant + static_cast<int>(Uniform(1, kVariants - 1))) % kVariants;
        Tree target = ZeroedLike(MakeState(*resolved, other));
        Tree before = testing::DeepCopy(target);
        options.donate = Chance(0.5);
        Status status = ckpt_->Restore(&target, step, options);
        line << " template of variant " << other << " -> " << Describe(status);
        Log(line.str());
        Count("Restore into a mismatching template");
        EXPECT_TRUE(status.IsInvalidArgument()) << line.str() << ": " << status.ToString();
        EXPECT_TRUE(target.ContentEquals(before)) << line.str() << ": template was written";
        break;
      }
    }
  }

  void OpRestoreTree() {
    const int64_t step = PickReadStep();
    const std::optional<int64_t> resolved = Resolve(step);
    const std::string path =
        Pick<std::string>({"", "", "params", "params/frozen", "opt/layers", "opt/layers/1",
                           "opt/layers/2/mu", "step", "params/missing"});
    Result<Tree> got = ckpt_->RestoreTree(step, path);
    Count("RestoreTree -> " + Describe(got.status()));
    std::ostringstream line;
    line << "RestoreTree(step=" << step << ", path='" << path << "') -> " << Describe(got.status());
    if (!resolved.has_value()) {
      Log(line.str());
      EXPECT_TRUE(got.status().IsNotFound()) << line.str();
      return;
    }
    const ModelStep& info = model_.steps.at(*resolved);
    line << " of step " << *resolved << " variant " << info.variant;
    Log(line.str());
    const Tree expected = MakeState(*resolved, info.variant);
    const Tree* subtree = expected.Find(path);
    if (subtree == nullptr) {
      EXPECT_TRUE(got.status().IsNotFound()) << line.str();
      return;
    }
    EXPECT_OK(got.status()) << line.str();
    if (got.ok()) {
      EXPECT_TRUE(got->ContentEquals(*subtree)) << line.str() << ": content differs";
    }
  }

  void CheckMetadata(int64_t step, const StepMetadata& metadata, const std::string& where) {
    const ModelStep& info = model_.steps.at(step);
    EXPECT_EQ(metadata.step, step) << where;
    EXPECT_TRUE(metadata.commit_time == info.commit_time)
        << where << ": commit time " << metadata.commit_time.time_since_epoch().count() << " vs "
        << info.commit_time.time_since_epoch().count();
    EXPECT_EQ(metadata.metrics, info.metrics) << where;
    EXPECT_EQ(metadata.user_metadata, info.user_metadata) << where;
    const Tree expected = MakeState(step, info.variant);
    std::vector<LeafMetadata> leaves;
    uint64_t logical = 0;
    expected.ForEachLeaf([&](const std::string& path, const Tree& leaf) {
      LeafMetadata want;
      want.path = path;
      want.kind = leaf.kind();
      if (leaf.kind() == Tree::Kind::kTensor) {
        want.dtype = leaf.tensor().dtype();
        want.shape = leaf.tensor().shape();
        want.logical_bytes = leaf.tensor().byte_size();
        // A tensor of 1 to 64 bytes is kept in the manifest, with no chunk
        // (LeafMetadata::stored_bytes).
        constexpr uint64_t kInlineBytes = 64;
        want.chunk_count =
            want.logical_bytes <= kInlineBytes
                ? 0
                : static_cast<uint32_t>((want.logical_bytes + info.chunk_size - 1) / info.chunk_size);
        logical += want.logical_bytes;
      }
      leaves.push_back(want);
    });
    EXPECT_EQ(metadata.logical_bytes, logical) << where;
    ASSERT_EQ(metadata.leaves.size(), leaves.size()) << where;
    for (size_t i = 0; i < leaves.size(); ++i) {
      const LeafMetadata& got = metadata.leaves[i];
      const LeafMetadata& want = leaves[i];
      EXPECT_EQ(got.path, want.path) << where;
      EXPECT_EQ(got.kind, want.kind) << where << " " << want.path;
      if (want.kind != Tree::Kind::kTensor) continue;
      EXPECT_EQ(got.dtype, want.dtype) << where << " " << want.path;
      EXPECT_EQ(got.shape, want.shape) << where << " " << want.path;
      EXPECT_EQ(got.logical_bytes, want.logical_bytes) << where << " " << want.path;
      EXPECT_EQ(got.chunk_count, want.chunk_count) << where << " " << want.path;
      EXPECT_EQ(got.stored_bytes > 0, want.logical_bytes > 0) << where << " " << want.path;
    }
  }

  void OpItemMetadata() {
    const int64_t step = PickReadStep();
    const std::optional<int64_t> resolved = Resolve(step);
    Result<StepMetadata> got = ckpt_->ItemMetadata(step);
    const std::string line =
        "ItemMetadata(step=" + std::to_string(step) + ") -> " + Describe(got.status());
    Log(line);
    Count("ItemMetadata -> " + Describe(got.status()));
    if (!resolved.has_value()) {
      EXPECT_TRUE(got.status().IsNotFound()) << line;
      return;
    }
    ASSERT_OK(got.status()) << line;
    CheckMetadata(*resolved, *got, line);
  }

  void OpDelete() {
    const int64_t step = !model_.steps.empty() && Chance(0.7) ? PickHeld() : PickNotHeld();
    const bool held = model_.Held(step);
    Status status = ckpt_->Delete(step);
    const std::string line = "Delete(" + std::to_string(step) + ") -> " + Describe(status);
    Log(line);
    Count("Delete -> " + Describe(status));
    if (held) {
      EXPECT_OK(status) << line;
      model_.steps.erase(step);  // Delete runs no retention
    } else {
      EXPECT_TRUE(status.IsNotFound()) << line << ": " << status.ToString();
    }
  }

  void OpCollectGarbage() {
    Result<GcStats> stats = ckpt_->CollectGarbage();
    Log("CollectGarbage() -> " + Describe(stats.status()));
    ASSERT_OK(stats.status()) << "CollectGarbage";
    Count("CollectGarbage");
    if (stats->chunks_deleted > 0) Count("CollectGarbage that deleted chunks");
    EXPECT_EQ(stats->manifests_scanned, model_.steps.size()) << "CollectGarbage";
    if (model_.steps.empty()) {
      EXPECT_EQ(stats->chunks_live, 0u) << "no step, yet live chunks";
    }
    if (Chance(0.3)) {
      // Right after a collection there is nothing left to delete.
      Result<GcStats> again = ckpt_->CollectGarbage();
      Log("CollectGarbage() again -> " + Describe(again.status()));
      ASSERT_OK(again.status()) << "CollectGarbage again";
      EXPECT_EQ(again->chunks_deleted, 0u) << "a second collection found garbage";
      EXPECT_EQ(again->chunks_live, stats->chunks_live) << "live chunks changed";
    }
  }

  void OpWaitUntilFinished() {
    Status status = ckpt_->WaitUntilFinished();
    Log("WaitUntilFinished() -> " + Describe(status));
    EXPECT_OK(status) << "WaitUntilFinished";
    ReleasePinned();
  }

  void OpReload() {
    Status status = ckpt_->Reload();
    Log("Reload() -> " + Describe(status));
    EXPECT_OK(status) << "Reload";
  }

  void OpReopen() {
    Status status = ckpt_->Close();
    Log("Close() -> " + Describe(status));
    EXPECT_OK(status) << "Close";
    ReleasePinned();
    if (Chance(0.3)) CheckClosed();
    ckpt_.reset();
    Open();
    Count("close and reopen");
    Log("Open()");
  }

  // After Close, calls fail with FailedPrecondition; Close is idempotent.
  void CheckClosed() {
    Log("calls after Close");
    Tree state = MakeState(frontier_ + 1, 0);
    auto is_closed = [](const Status& status) {
      return status.code() == Status::Code::kFailedPrecondition;
    };
    Result<bool> saved = ckpt_->Save(state, frontier_ + 1, testing::Forced());
    EXPECT_TRUE(is_closed(saved.status())) << "Save after Close: " << Describe(saved);
    if (!model_.steps.empty()) {
      const int64_t held = PickHeld();
      Tree target = ZeroedLike(MakeState(held, model_.steps.at(held).variant));
      EXPECT_TRUE(is_closed(ckpt_->Restore(&target, held))) << "Restore after Close";
      EXPECT_TRUE(is_closed(ckpt_->RestoreTree(held).status())) << "RestoreTree after Close";
      EXPECT_TRUE(is_closed(ckpt_->ItemMetadata(held).status())) << "ItemMetadata after Close";
      EXPECT_TRUE(is_closed(ckpt_->Delete(held))) << "Delete after Close";
    }
    EXPECT_TRUE(is_closed(ckpt_->CollectGarbage().status())) << "CollectGarbage after Close";
    EXPECT_TRUE(is_closed(ckpt_->Reload())) << "Reload after Close";
    EXPECT_OK(ckpt_->Close()) << "a second Close";
  }

  // ---- Rounds ----
  void DumpLog() {
    std::ostringstream out;
    out << "Operations of round " << round_ << " (" << OptionsText(options_) << "), " << log_.size()
        << " lines:\n";
    const size_t first = log_.size() > 400 ? log_.size() - 400 : 0;
    for (size_t i = first; i < log_.size(); ++i) out << "  " << i << ": " << log_[i] << "\n";
    std::cerr << out.str();
  }

  void RunRound(int round, int64_t length) {
    {
      std::lock_guard<std::mutex> lock(log_mutex_);
      round_ = round;
      log_.clear();
    }
    const bool carry = dir_ != nullptr && Chance(0.3);
    if (!carry) {
      dir_ = std::make_unique<TempDir>();
      model_.steps.clear();
      frontier_ = -1;
    }
    options_ = RandomOptions();
    model_.options = options_;
    {
      std::lock_guard<std::mutex> lock(log_mutex_);
      round_options_ = OptionsText(options_);
    }
    SCOPED_TRACE("round " + std::to_string(round) + (carry ? " (same store)" : "") + ": " +
                 OptionsText(options_));
    if (carry) {
      for (const auto& [step, info] : model_.steps) {
        Log("carried step " + std::to_string(step) + " variant " + std::to_string(info.variant) +
            " t=" +
            std::to_string(std::chrono::duration_cast<std::chrono::seconds>(
                               info.commit_time.time_since_epoch())
                               .count()) +
            " metrics=" + MetricsText(info.metrics));
      }
    }
    Begin("Open()");
    Open();
    if (::testing::Test::HasFailure()) return;
    CheckSteps();  // opening runs no retention
    Count(carry ? "rounds on the previous round's store" : "rounds on a new store");
    for (int64_t i = 0; i < length && !::testing::Test::HasFailure(); ++i, ++ops_run_) {
      const int64_t roll = Uniform(0, 99);
      Begin("operation " + std::to_string(i) + " (roll " + std::to_string(roll) + ")");
      if (roll < 30) {
        OpSave();
      } else if (roll < 40) {
        OpMaybeSave();
      } else if (roll < 46) {
        OpShouldSave();
      } else if (roll < 48) {
        OpSignalPreemption();
      } else if (roll < 57) {
        OpRestore();
      } else if (roll < 65) {
        OpRestoreTree();
      } else if (roll < 71) {
        OpItemMetadata();
      } else if (roll < 78) {
        OpDelete();
      } else if (roll < 81) {
        OpCollectGarbage();
      } else if (roll < 84) {
        OpWaitUntilFinished();
      } else if (roll < 87) {
        OpReload();
      } else if (roll < 89) {
        OpReopen();
      } else if (roll < 92) {
        OpBadSave();
      } else {
        AdvanceClock();
        Log("clock -> " + std::to_string(clock_->load()));
      }
      if (!::testing::Test::HasFailure()) CheckSteps();
    }
    if (!::testing::Test::HasFailure()) FinishRound();
    if (::testing::Test::HasFailure()) DumpLog();
  }

  // The store is consistent: waiting, collecting garbage and restoring every
  // held step all succeed.
  void FinishRound() {
    Log("end of round");
    Begin("end of round");
    EXPECT_OK(ckpt_->WaitUntilFinished()) << "end of round";
    ReleasePinned();
    CheckSteps();
    Result<GcStats> stats = ckpt_->CollectGarbage();
    ASSERT_OK(stats.status()) << "CollectGarbage at the end of the round";
    EXPECT_EQ(stats->manifests_scanned, model_.steps.size());
    for (const auto& [step, info] : model_.steps) {
      Result<Tree> restored = ckpt_->RestoreTree(step);
      ASSERT_OK(restored.status()) << "end of round, step " << step;
      EXPECT_TRUE(restored->ContentEquals(MakeState(step, info.variant)))
          << "end of round, step " << step;
      Result<StepMetadata> metadata = ckpt_->ItemMetadata(step);
      ASSERT_OK(metadata.status()) << "end of round, step " << step;
      CheckMetadata(step, *metadata, "end of round, step " + std::to_string(step));
    }
    EXPECT_OK(ckpt_->Close()) << "end of round";
    ckpt_.reset();
  }

  const uint64_t seed_;
  const std::chrono::seconds stall_limit_;
  std::mt19937_64 rng_;
  std::shared_ptr<std::atomic<int64_t>> clock_ =
      std::make_shared<std::atomic<int64_t>>(int64_t{1'700'000'000});
  std::unique_ptr<TempDir> dir_;
  CheckpointerOptions options_;
  std::unique_ptr<Checkpointer> ckpt_;
  Model model_;
  int64_t frontier_ = -1;       // the largest step any save was asked for
  std::optional<Tree> pinned_;  // the state of a zero-copy save in flight
  std::optional<int> last_saved_variant_;  // of this checkpointer object's previous save
  // The watchdog reads these: guarded by log_mutex_ (written by the test
  // thread only).
  std::mutex log_mutex_;
  std::condition_variable stopped_;
  bool stop_ = false;
  std::vector<std::string> log_;  // this round's operations
  std::string current_;           // the operation in progress
  std::string round_options_;     // OptionsText of this round's options
  std::chrono::steady_clock::time_point last_progress_ = std::chrono::steady_clock::now();
  int round_ = 0;
  int rounds_ = 0;
  int64_t ops_run_ = 0;
  std::map<std::string, int64_t> coverage_;
};

TEST(ModelTest, RandomOperationsMatchTheModel) {
  const uint64_t seed = testing::SeedFromEnv("CKPTDB_MODEL_SEED", 20261201);
  const int64_t ops = EnvInt("CKPTDB_MODEL_OPS", 1500);
  const std::chrono::seconds stall_limit(EnvInt("CKPTDB_MODEL_STALL_SECONDS", 60));
  SCOPED_TRACE("CKPTDB_MODEL_SEED=" + std::to_string(seed) +
               " CKPTDB_MODEL_OPS=" + std::to_string(ops));
  std::cout << "model_test: CKPTDB_MODEL_SEED=" << seed << " CKPTDB_MODEL_OPS=" << ops << std::endl;
  const auto start = std::chrono::steady_clock::now();
  ModelRun run(seed, stall_limit);
  run.Run(ops);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cout << "model_test: " << run.ops_run() << " operations in " << run.rounds() << " rounds, "
            << seconds << " s\n"
            << run.Coverage() << std::flush;
}

}  // namespace
}  // namespace ckptdb
