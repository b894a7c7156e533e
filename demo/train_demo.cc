// train_demo: trains a small MLP with Adam, checkpointing into ckptdb; the trainer is killed
// mid-run and the run resumes bit-exactly from the store.
//
//   train_demo [--workdir DIR] [--steps N] [--save-every K] [--crash-at S]
//
// Phase 1 runs in a forked child. It trains from step 0, offering every step to the
// checkpointer, and kills itself with SIGKILL at step S: no destructor, flush or close runs, as
// when a job is preempted or OOM-killed. Phase 2 runs in the parent, whose memory never held the
// trained state. It reopens the store, restores the latest step into fresh zeroed buffers, checks
// them byte for byte against a reference run recomputed from step 0, trains on to step N, and
// prints what the store holds.

#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cinttypes>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iterator>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "ckptdb/ckptdb.h"

namespace {

using ckptdb::Checkpointer;
using ckptdb::Status;
using ckptdb::Tree;

// ---- Errors ----

[[noreturn]] void Fail(const std::string& message) {
  std::fprintf(stderr, "train_demo: %s\n", message.c_str());
  std::exit(1);
}

void CheckOk(const Status& status) {
  if (!status.ok()) Fail(status.ToString());
}

template <typename T>
T ValueOrDie(ckptdb::Result<T> result) {
  if (!result.ok()) Fail(result.status().ToString());
  return std::move(result).value();
}

// ---- Command line ----

constexpr char kUsage[] =
    "usage: train_demo [--workdir DIR] [--steps N] [--save-every K] [--crash-at S]\n"
    "  --workdir DIR    the store; DELETED first so reruns start clean (default ./demo_run)\n"
    "  --steps N        train to step N (default 60)\n"
    "  --save-every K   save every K steps, keeping the latest 3 (default 10)\n"
    "  --crash-at S     kill the trainer at step S, 1 <= S < N (default 35)\n";

struct Flags {
  std::string workdir = "./demo_run";
  int64_t steps = 60;
  int64_t save_every = 10;
  int64_t crash_at = 35;
};

[[noreturn]] void UsageError(const std::string& message) {
  std::fprintf(stderr, "train_demo: %s\n%s", message.c_str(), kUsage);
  std::exit(2);
}

int64_t ParseInt(std::string_view flag, std::string_view text) {
  int64_t value = 0;
  const char* end = text.data() + text.size();
  const auto [parsed_end, error] = std::from_chars(text.data(), end, value);
  if (error != std::errc() || parsed_end != end) {
    UsageError(std::string(flag) + " takes an integer, not '" + std::string(text) + "'");
  }
  return value;
}

Flags ParseFlags(int argc, char** argv) {
  Flags flags;
  for (int i = 1; i < argc; ++i) {
    const std::string_view flag = argv[i];
    auto value = [&]() -> std::string_view {
      if (i + 1 == argc) UsageError(std::string(flag) + " needs a value");
      return argv[++i];
    };
    if (flag == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else if (flag == "--workdir") {
      flags.workdir = value();
    } else if (flag == "--steps") {
      flags.steps = ParseInt(flag, value());
    } else if (flag == "--save-every") {
      flags.save_every = ParseInt(flag, value());
    } else if (flag == "--crash-at") {
      flags.crash_at = ParseInt(flag, value());
    } else {
      UsageError("unknown flag " + std::string(flag));
    }
  }
  if (flags.workdir.empty()) UsageError("--workdir must not be empty");
  if (flags.save_every < 1) UsageError("--save-every must be at least 1");
  // Phase 2 needs steps to train after the crash.
  if (flags.crash_at < 1 || flags.crash_at >= flags.steps) {
    UsageError("--crash-at must be at least 1 and below --steps");
  }
  return flags;
}

// ---- The model, its state and its task ----

constexpr int64_t kInputDim = 1536;
constexpr int64_t kHiddenDim = 1024;
constexpr int64_t kOutputDim = 64;
constexpr int64_t kBatchSize = 32;
constexpr float kLearningRate = 1e-3f;
constexpr float kBeta1 = 0.9f;
constexpr float kBeta2 = 0.999f;
constexpr float kEpsilon = 1e-8f;
constexpr float kTargetNoise = 0.1f;
constexpr uint64_t kSeed = 20240229;
constexpr char kConfigName[] = "mlp-1536-1024-1024-64-adam";

struct LayerSpec {
  const char* name;
  int64_t fan_in;
  int64_t fan_out;
  bool frozen;    // Adam leaves it and its moments untouched.
  bool use_tanh;  // Else the layer is linear.
};

// "embed" is a frozen random projection, as a pretrained embedding kept fixed while fine-tuning:
// its weights and (zero) Adam moments are the same bytes at every step, which the store dedups.
constexpr LayerSpec kLayerSpecs[] = {
    {"embed", kInputDim, kHiddenDim, /*frozen=*/true, /*use_tanh=*/true},
    {"hidden", kHiddenDim, kHiddenDim, /*frozen=*/false, /*use_tanh=*/true},
    {"head", kHiddenDim, kOutputDim, /*frozen=*/false, /*use_tanh=*/false},
};
static_assert(!kLayerSpecs[std::size(kLayerSpecs) - 1].use_tanh,
              "the loss gradient in Trainer::Step assumes a linear head");

// A parameter with its Adam moments: the three buffers a checkpoint holds for it.
struct Param {
  std::vector<int64_t> shape;
  std::vector<float> value;
  std::vector<float> mu;  // Adam's first moment.
  std::vector<float> nu;  // Adam's second moment.
};

Param ZeroParam(std::vector<int64_t> shape) {
  int64_t count = 1;
  for (int64_t dim : shape) count *= dim;
  const auto size = static_cast<size_t>(count);
  return Param{std::move(shape), std::vector<float>(size), std::vector<float>(size),
               std::vector<float>(size)};
}

struct Layer {
  LayerSpec spec;
  Param kernel;  // [fan_in, fan_out]
  Param bias;    // [fan_out]
};

// Everything a checkpoint holds: all that training needs to carry on from `step`.
struct TrainState {
  std::vector<Layer> layers;
  int64_t step = 0;       // Adam updates applied so far.
  uint64_t rng_seed = 0;  // Regenerates the task and the batch of every step.
};

// Every buffer zero: the template a restore decodes into.
TrainState ZeroState() {
  TrainState state;
  for (const LayerSpec& spec : kLayerSpecs) {
    state.layers.push_back(
        Layer{spec, ZeroParam({spec.fan_in, spec.fan_out}), ZeroParam({spec.fan_out})});
  }
  return state;
}

// Independent random streams of a run, each reproducible from (seed, stream) alone: the batch of
// step s is the same whether the run got to s in one go or through a restore.
constexpr uint64_t kInitStream = 0;
constexpr uint64_t kTeacherStream = 1;
constexpr uint64_t kFirstBatchStream = 2;

std::mt19937_64 RandomStream(uint64_t seed, uint64_t stream) {
  std::seed_seq seed_sequence{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32),
                              static_cast<uint32_t>(stream), static_cast<uint32_t>(stream >> 32)};
  return std::mt19937_64(seed_sequence);
}

// A fresh run at step 0: kernels ~ N(0, 1/fan_in); biases and Adam moments zero.
TrainState InitialState(uint64_t seed) {
  TrainState state = ZeroState();
  state.rng_seed = seed;
  std::mt19937_64 rng = RandomStream(seed, kInitStream);
  for (Layer& layer : state.layers) {
    const float stddev = 1.0f / std::sqrt(static_cast<float>(layer.spec.fan_in));
    std::normal_distribution<float> weight(0.0f, stddev);
    for (float& w : layer.kernel.value) w = weight(rng);
  }
  return state;
}

// The task: regress a fixed random linear "teacher" map of the input, plus noise.
class TeacherTask {
 public:
  explicit TeacherTask(uint64_t seed) : seed_(seed), teacher_(kInputDim * kOutputDim) {
    std::mt19937_64 rng = RandomStream(seed, kTeacherStream);
    std::normal_distribution<float> weight(0.0f, 1.0f / std::sqrt(static_cast<float>(kInputDim)));
    for (float& w : teacher_) w = weight(rng);
  }

  // Fills inputs [kBatchSize, kInputDim] and targets [kBatchSize, kOutputDim] of batch `step`.
  void FillBatch(int64_t step, std::vector<float>* inputs, std::vector<float>* targets) const {
    std::mt19937_64 rng = RandomStream(seed_, kFirstBatchStream + static_cast<uint64_t>(step));
    std::normal_distribution<float> standard_normal;
    for (float& x : *inputs) x = standard_normal(rng);
    for (float& y : *targets) y = kTargetNoise * standard_normal(rng);
    for (int64_t b = 0; b < kBatchSize; ++b) {
      float* target = &(*targets)[b * kOutputDim];
      for (int64_t i = 0; i < kInputDim; ++i) {
        const float x = (*inputs)[b * kInputDim + i];
        const float* row = &teacher_[i * kOutputDim];
        for (int64_t j = 0; j < kOutputDim; ++j) target[j] += x * row[j];
      }
    }
  }

 private:
  uint64_t seed_;
  std::vector<float> teacher_;  // [kInputDim, kOutputDim]
};

// ---- Training math: plain loops, row-major [batch, features] activations ----

// output[b] = activation(input[b] . kernel + bias) for every example b.
void DenseForward(const Layer& layer, const std::vector<float>& input, std::vector<float>* output) {
  const int64_t fan_in = layer.spec.fan_in;
  const int64_t fan_out = layer.spec.fan_out;
  for (int64_t b = 0; b < kBatchSize; ++b) {
    std::copy(layer.bias.value.begin(), layer.bias.value.end(), output->begin() + b * fan_out);
  }
  // Kernel rows outermost: each row is read once per batch rather than once per example.
  for (int64_t i = 0; i < fan_in; ++i) {
    const float* row = &layer.kernel.value[i * fan_out];
    for (int64_t b = 0; b < kBatchSize; ++b) {
      const float x = input[b * fan_in + i];
      float* y = &(*output)[b * fan_out];
      for (int64_t j = 0; j < fan_out; ++j) y[j] += x * row[j];
    }
  }
  if (layer.spec.use_tanh) {
    for (float& y : *output) y = std::tanh(y);
  }
}

struct Gradients {
  std::vector<float> kernel;
  std::vector<float> bias;
};

// The layer's gradients from its input and `delta`, dLoss/d(its pre-activation output).
void DenseGradients(const Layer& layer, const std::vector<float>& input,
                    const std::vector<float>& delta, Gradients* gradients) {
  const int64_t fan_in = layer.spec.fan_in;
  const int64_t fan_out = layer.spec.fan_out;
  std::fill(gradients->kernel.begin(), gradients->kernel.end(), 0.0f);
  std::fill(gradients->bias.begin(), gradients->bias.end(), 0.0f);
  for (int64_t i = 0; i < fan_in; ++i) {
    float* kernel_row = &gradients->kernel[i * fan_out];
    for (int64_t b = 0; b < kBatchSize; ++b) {
      const float x = input[b * fan_in + i];
      const float* d = &delta[b * fan_out];
      for (int64_t j = 0; j < fan_out; ++j) kernel_row[j] += x * d[j];
    }
  }
  for (int64_t b = 0; b < kBatchSize; ++b) {
    for (int64_t j = 0; j < fan_out; ++j) gradients->bias[j] += delta[b * fan_out + j];
  }
}

// The delta of the layer below: `delta` times the kernel transposed, through the tanh of the layer
// below when it has one (tanh' = 1 - tanh^2, and `input` holds that layer's tanh outputs).
std::vector<float> DenseInputDelta(const Layer& layer, const std::vector<float>& input,
                                   const std::vector<float>& delta, bool input_is_tanh) {
  const int64_t fan_in = layer.spec.fan_in;
  const int64_t fan_out = layer.spec.fan_out;
  std::vector<float> input_delta(kBatchSize * fan_in);
  for (int64_t b = 0; b < kBatchSize; ++b) {
    const float* d = &delta[b * fan_out];
    for (int64_t i = 0; i < fan_in; ++i) {
      const float* row = &layer.kernel.value[i * fan_out];
      float sum = 0.0f;
      for (int64_t j = 0; j < fan_out; ++j) sum += d[j] * row[j];
      if (input_is_tanh) {
        const float activation = input[b * fan_in + i];
        sum *= 1.0f - activation * activation;
      }
      input_delta[b * fan_in + i] = sum;
    }
  }
  return input_delta;
}

// One Adam update; `update_count` counts from 1 and drives the bias correction.
void AdamUpdate(const std::vector<float>& gradient, int64_t update_count, Param* param) {
  const auto mu_correction = static_cast<float>(
      1.0 - std::pow(static_cast<double>(kBeta1), static_cast<double>(update_count)));
  const auto nu_correction = static_cast<float>(
      1.0 - std::pow(static_cast<double>(kBeta2), static_cast<double>(update_count)));
  for (size_t k = 0; k < gradient.size(); ++k) {
    const float g = gradient[k];
    param->mu[k] = kBeta1 * param->mu[k] + (1.0f - kBeta1) * g;
    param->nu[k] = kBeta2 * param->nu[k] + (1.0f - kBeta2) * g * g;
    const float mu_hat = param->mu[k] / mu_correction;
    const float nu_hat = param->nu[k] / nu_correction;
    param->value[k] -= kLearningRate * mu_hat / (std::sqrt(nu_hat) + kEpsilon);
  }
}

// Trains a TrainState in place. Holds only what it rebuilds from the state (the task, scratch
// buffers): everything that must survive a crash is in the state.
class Trainer {
 public:
  // `state` must outlive the trainer; the task is regenerated from its seed.
  explicit Trainer(TrainState* state)
      : state_(state), task_(state->rng_seed), targets_(kBatchSize * kOutputDim) {
    activations_.emplace_back(kBatchSize * kInputDim);
    for (const Layer& layer : state->layers) {
      activations_.emplace_back(kBatchSize * layer.spec.fan_out);
      gradients_.push_back(layer.spec.frozen
                               ? Gradients{}
                               : Gradients{std::vector<float>(layer.kernel.value.size()),
                                           std::vector<float>(layer.bias.value.size())});
    }
    while (first_trainable_ < std::ssize(state->layers) &&
           state->layers[first_trainable_].spec.frozen) {
      ++first_trainable_;
    }
  }

  int64_t step() const { return state_->step; }

  // One Adam step on batch `step()`, which it advances. Returns the batch's mean squared error
  // before the update.
  float Step() {
    std::vector<Layer>& layers = state_->layers;
    task_.FillBatch(state_->step, &activations_.front(), &targets_);
    for (size_t l = 0; l < layers.size(); ++l) {
      DenseForward(layers[l], activations_[l], &activations_[l + 1]);
    }

    // The head is linear, so dLoss/dprediction is its delta.
    const std::vector<float>& prediction = activations_.back();
    std::vector<float> delta(prediction.size());
    const float scale = 2.0f / static_cast<float>(prediction.size());
    double squared_error = 0.0;
    for (size_t k = 0; k < prediction.size(); ++k) {
      const float error = prediction[k] - targets_[k];
      squared_error += static_cast<double>(error) * error;
      delta[k] = scale * error;
    }

    // Backpropagation stops at the first trainable layer: the frozen ones below need no delta.
    for (int64_t l = std::ssize(layers) - 1; l >= first_trainable_; --l) {
      if (!layers[l].spec.frozen) DenseGradients(layers[l], activations_[l], delta, &gradients_[l]);
      if (l > first_trainable_) {
        delta = DenseInputDelta(layers[l], activations_[l], delta, layers[l - 1].spec.use_tanh);
      }
    }

    const int64_t update_count = state_->step + 1;
    for (size_t l = 0; l < layers.size(); ++l) {
      if (layers[l].spec.frozen) continue;
      AdamUpdate(gradients_[l].kernel, update_count, &layers[l].kernel);
      AdamUpdate(gradients_[l].bias, update_count, &layers[l].bias);
    }
    ++state_->step;
    return static_cast<float>(squared_error / static_cast<double>(prediction.size()));
  }

 private:
  TrainState* state_;
  TeacherTask task_;
  std::vector<float> targets_;
  std::vector<std::vector<float>> activations_;  // The input, then each layer's output.
  std::vector<Gradients> gradients_;             // Per layer; empty for frozen layers.
  int64_t first_trainable_ = 0;
};

// ---- The state as a ckptdb tree ----

// One tensor of the state: its path in the state tree, its shape and its buffer.
struct StateBuffer {
  std::string path;
  std::vector<int64_t> shape;
  std::vector<float>* values;
};

// Where each of a Param's buffers lives in the tree.
struct BufferGroup {
  const char* path;
  std::vector<float> Param::*member;
};
constexpr BufferGroup kBufferGroups[] = {
    {"params", &Param::value}, {"opt_state/mu", &Param::mu}, {"opt_state/nu", &Param::nu}};

// Every tensor of the state, in a fixed order.
std::vector<StateBuffer> StateBuffers(TrainState* state) {
  std::vector<StateBuffer> buffers;
  for (const BufferGroup& group : kBufferGroups) {
    for (Layer& layer : state->layers) {
      const std::string prefix = std::string(group.path) + "/" + layer.spec.name + "/";
      buffers.push_back({prefix + "kernel", layer.kernel.shape, &(layer.kernel.*group.member)});
      buffers.push_back({prefix + "bias", layer.bias.shape, &(layer.bias.*group.member)});
    }
  }
  return buffers;
}

// Sets `leaf` at `path` ("a/b/c") under the map `root`, creating the maps on the way. Each call
// looks the maps up again: a Set on a map may move that map's children, so the pointers Set
// returns are only used before the next Set on the same map.
void SetAtPath(Tree* root, std::string_view path, Tree leaf) {
  Tree* node = root;
  for (size_t slash = path.find('/'); slash != std::string_view::npos; slash = path.find('/')) {
    const std::string_view key = path.substr(0, slash);
    Tree* child = node->Find(key);
    node = child != nullptr ? child : ValueOrDie(node->Set(key, Tree::Map()));
    path.remove_prefix(slash + 1);
  }
  CheckOk(node->Set(path, std::move(leaf)).status());
}

// The state as a tree whose tensors are views of `state`'s buffers: a save copies nothing, and a
// donating restore decodes straight into them.
Tree BuildStateTree(TrainState* state) {
  Tree tree = Tree::Map();
  for (const StateBuffer& buffer : StateBuffers(state)) {
    ckptdb::Tensor view = ValueOrDie(
        ckptdb::Tensor::View(ckptdb::DType::kFloat32, buffer.shape, buffer.values->data()));
    SetAtPath(&tree, buffer.path, Tree::Leaf(std::move(view)));
  }
  SetAtPath(&tree, "step", Tree::Int(state->step));
  SetAtPath(&tree, "rng_seed", Tree::Int(static_cast<int64_t>(state->rng_seed)));
  SetAtPath(&tree, "config/name", Tree::String(kConfigName));
  return tree;
}

// Copies the scalars a restore wrote into `tree` back into `state`. `tree` is the template
// BuildStateTree made, so the leaves exist with these kinds.
void LoadScalars(const Tree& tree, TrainState* state) {
  const std::string& config_name = tree.Find("config/name")->string_value();
  if (config_name != kConfigName) {
    Fail("the store holds a '" + config_name + "' run, not '" + kConfigName + "'");
  }
  state->step = tree.Find("step")->int_value();
  state->rng_seed = static_cast<uint64_t>(tree.Find("rng_seed")->int_value());
}

// ---- Checkpointing ----

std::unique_ptr<Checkpointer> OpenStore(const Flags& flags) {
  ckptdb::CheckpointerOptions options;
  options.save_interval_steps = flags.save_every;
  options.max_to_keep = 3;
  options.save_on_steps = {flags.steps};  // The final state, whatever the interval.
  return ValueOrDie(Checkpointer::Open(flags.workdir, std::move(options)));
}

// What each save is told: the frozen layers (their weights, and Adam moments that stay zero) are
// as in the previous save, so a save does not even read them again. The first save after a
// (re)open reads them once.
ckptdb::SaveOptions FrozenLayersUnchanged(const TrainState& state) {
  ckptdb::SaveOptions options;
  for (const BufferGroup& group : kBufferGroups) {
    for (const Layer& layer : state.layers) {
      if (layer.spec.frozen) {
        options.assume_unchanged.push_back(std::string(group.path) + "/" + layer.spec.name);
      }
    }
  }
  return options;
}

// Offers the state at `step` to the checkpointer, which saves it if due, and reports a save.
// `loss` is that of the update that led to `step`; the initial state has none.
void OfferCheckpoint(Checkpointer* checkpointer, Tree* tree, int64_t step,
                     std::optional<float> loss, const ckptdb::SaveOptions& options) {
  CheckOk(tree->Set("step", Tree::Int(step)).status());
  if (!ValueOrDie(checkpointer->Save(*tree, step, options))) return;
  if (loss.has_value()) {
    std::printf("  step %3" PRId64 "  saved   loss %.5f\n", step, *loss);
  } else {
    std::printf("  step %3" PRId64 "  saved   (initial state)\n", step);
  }
}

// Trains to `last_step`, offering each step to the checkpointer. At `crash_at`, just after
// offering that step, the process kills itself.
void Train(Trainer* trainer, Checkpointer* checkpointer, Tree* tree, int64_t last_step,
           std::optional<int64_t> crash_at, const ckptdb::SaveOptions& options) {
  while (trainer->step() < last_step) {
    const float loss = trainer->Step();
    OfferCheckpoint(checkpointer, tree, trainer->step(), loss, options);
    if (trainer->step() == crash_at) {
      std::printf("  step %3" PRId64 "  SIGKILL: the trainer dies here\n", trainer->step());
      std::raise(SIGKILL);
    }
  }
}

// ---- The two phases ----

// Phase 1, in the child: trains from step 0 until it kills itself at --crash-at.
void TrainUntilKilled(const Flags& flags) {
  std::printf("phase 1: trainer pid %d trains from step 0\n", static_cast<int>(getpid()));
  TrainState state = InitialState(kSeed);
  Tree tree = BuildStateTree(&state);
  std::unique_ptr<Checkpointer> checkpointer = OpenStore(flags);
  const ckptdb::SaveOptions options = FrozenLayersUnchanged(state);
  OfferCheckpoint(checkpointer.get(), &tree, state.step, std::nullopt, options);
  Trainer trainer(&state);
  Train(&trainer, checkpointer.get(), &tree, flags.steps, flags.crash_at, options);
}

// Runs phase 1 in a child process and waits for its death.
void RunTrainerToCrash(const Flags& flags) {
  // Fork before this process touches the store, so the child inherits no threads or locks.
  const pid_t pid = fork();
  if (pid < 0) Fail(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    TrainUntilKilled(flags);
    std::_Exit(0);  // The child never runs the parent's code; the parent reports a clean exit.
  }
  int wait_status = 0;
  while (waitpid(pid, &wait_status, 0) < 0) {
    if (errno != EINTR) Fail(std::string("waitpid: ") + std::strerror(errno));
  }
  if (WIFEXITED(wait_status)) {
    Fail("the trainer exited with status " + std::to_string(WEXITSTATUS(wait_status)) +
         " instead of being killed");
  }
  if (WTERMSIG(wait_status) != SIGKILL) {
    Fail("the trainer died of signal " + std::to_string(WTERMSIG(wait_status)));
  }
  std::printf("phase 1: trainer pid %d was killed by SIGKILL; all its memory is gone\n\n",
              static_cast<int>(pid));
}

std::string FormatSteps(const std::vector<int64_t>& steps) {
  std::string text;
  for (int64_t step : steps) {
    if (!text.empty()) text += ' ';
    text += std::to_string(step);
  }
  return text;
}

std::string FormatBytes(uint64_t bytes) {
  char text[32];
  if (bytes < 1024) {
    std::snprintf(text, sizeof(text), "%" PRIu64 " B", bytes);
  } else if (bytes < 1024 * 1024) {
    std::snprintf(text, sizeof(text), "%.1f KiB", static_cast<double>(bytes) / 1024);
  } else {
    std::snprintf(text, sizeof(text), "%.1f MiB", static_cast<double>(bytes) / (1024 * 1024));
  }
  return text;
}

std::string FormatShape(const std::vector<int64_t>& shape) {
  std::string text = "[";
  for (size_t k = 0; k < shape.size(); ++k) text += (k == 0 ? "" : ", ") + std::to_string(shape[k]);
  return text + "]";
}

// Recomputes the run from step 0 to `step` in memory, without the store, and compares it with
// `restored` byte for byte: a resumed run must continue exactly the one that was killed.
void VerifyBitExact(int64_t step, TrainState* restored) {
  TrainState reference = InitialState(kSeed);
  Trainer trainer(&reference);
  while (trainer.step() < step) trainer.Step();

  std::vector<std::string> mismatches;
  if (restored->step != reference.step) mismatches.push_back("step");
  if (restored->rng_seed != reference.rng_seed) mismatches.push_back("rng_seed");
  const std::vector<StateBuffer> expected = StateBuffers(&reference);
  const std::vector<StateBuffer> actual = StateBuffers(restored);
  uint64_t compared_bytes = 0;
  for (size_t k = 0; k < expected.size(); ++k) {
    const size_t bytes = expected[k].values->size() * sizeof(float);
    if (std::memcmp(actual[k].values->data(), expected[k].values->data(), bytes) != 0) {
      mismatches.push_back(actual[k].path);
    }
    compared_bytes += bytes;
  }
  std::printf("  reference run: steps 0..%" PRId64
              " recomputed in memory; memcmp of %zu tensors"
              " (%s)\n",
              step, expected.size(), FormatBytes(compared_bytes).c_str());
  std::printf("  restored step %" PRId64 " bit-exact: %s\n", step,
              mismatches.empty() ? "yes" : "no");
  if (!mismatches.empty()) {
    std::string paths;
    for (const std::string& path : mismatches) paths += " " + path;
    Fail("the restored state differs from the reference run in:" + paths);
  }
}

// Prints the leaves of the latest step; returns its logical size.
uint64_t PrintLatestStep(Checkpointer* checkpointer) {
  const ckptdb::StepMetadata metadata = ValueOrDie(checkpointer->ItemMetadata(ckptdb::kLatestStep));
  std::printf("step %" PRId64 ":\n", metadata.step);
  constexpr char kRowFormat[] = "  %-28s %-8s %-13s %10s %10s\n";
  std::printf(kRowFormat, "leaf", "dtype", "shape", "logical", "stored");
  uint64_t stored_bytes = 0;
  for (const ckptdb::LeafMetadata& leaf : metadata.leaves) {
    if (leaf.kind != Tree::Kind::kTensor) {
      std::printf(kRowFormat, leaf.path.c_str(), std::string(ckptdb::KindName(leaf.kind)).c_str(),
                  "", "", "");
      continue;
    }
    stored_bytes += leaf.stored_bytes;
    std::printf(kRowFormat, leaf.path.c_str(), std::string(ckptdb::DTypeName(leaf.dtype)).c_str(),
                FormatShape(leaf.shape).c_str(), FormatBytes(leaf.logical_bytes).c_str(),
                FormatBytes(leaf.stored_bytes).c_str());
  }
  std::printf(kRowFormat, "total", "", "", FormatBytes(metadata.logical_bytes).c_str(),
              FormatBytes(stored_bytes).c_str());
  std::printf("  (stored: the leaf's chunks compressed, before dedup across leaves and steps)\n");
  return metadata.logical_bytes;
}

// The sum of the sizes of the files under `dir`.
uint64_t BytesOnDisk(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code error;
  uint64_t total = 0;
  for (fs::recursive_directory_iterator it(dir, error), end; !error && it != end;
       it.increment(error)) {
    const bool regular = it->is_regular_file(error);
    if (!error && regular) total += it->file_size(error);
    if (error) break;  // Else the next increment() would overwrite the error.
  }
  if (error) Fail("measuring " + dir + ": " + error.message());
  return total;
}

// Phase 2, in the parent: restores the latest step into fresh buffers, verifies it, trains on to
// --steps, and prints what the store holds.
void ResumeAndFinish(const Flags& flags) {
  std::printf("phase 2: pid %d reopens %s\n", static_cast<int>(getpid()), flags.workdir.c_str());
  std::unique_ptr<Checkpointer> checkpointer = OpenStore(flags);
  const std::optional<int64_t> latest = checkpointer->LatestStep();
  if (!latest.has_value()) Fail("no step survived the crash in " + flags.workdir);
  std::printf("  steps in the store: %s\n", FormatSteps(checkpointer->AllSteps()).c_str());

  TrainState resumed = ZeroState();
  Tree tree = BuildStateTree(&resumed);
  ckptdb::RestoreOptions restore;
  restore.donate = true;  // into the fresh buffers above (the default, said aloud)
  CheckOk(checkpointer->Restore(&tree, *latest, restore));
  LoadScalars(tree, &resumed);
  std::printf("  restored step %" PRId64 " into fresh zeroed buffers\n", resumed.step);
  VerifyBitExact(*latest, &resumed);

  Trainer trainer(&resumed);
  Train(&trainer, checkpointer.get(), &tree, flags.steps, std::nullopt,
        FrozenLayersUnchanged(resumed));

  const std::vector<int64_t> steps_held = checkpointer->AllSteps();
  std::printf("\nthe store holds steps: %s\n", FormatSteps(steps_held).c_str());
  const uint64_t state_bytes = PrintLatestStep(checkpointer.get());
  CheckOk(checkpointer->Close());  // Finishes pending work, so the sizes below are final.

  const uint64_t logical_bytes = state_bytes * steps_held.size();
  const uint64_t disk_bytes = BytesOnDisk(flags.workdir);
  std::printf("\n%s on disk in %s for %zu steps x %s = %s of state",
              FormatBytes(disk_bytes).c_str(), flags.workdir.c_str(), steps_held.size(),
              FormatBytes(state_bytes).c_str(), FormatBytes(logical_bytes).c_str());
  if (disk_bytes > 0) {
    std::printf(" (%.1fx smaller)",
                static_cast<double>(logical_bytes) / static_cast<double>(disk_bytes));
  }
  std::printf("\n");
}

int64_t ParameterCount() {
  int64_t count = 0;
  for (const LayerSpec& spec : kLayerSpecs) count += spec.fan_in * spec.fan_out + spec.fan_out;
  return count;
}

}  // namespace

int main(int argc, char** argv) {
  // Line-buffered even into a pipe: the child's lines must be out before its SIGKILL, and no
  // buffered text may cross fork() to be printed twice.
  std::setvbuf(stdout, nullptr, _IOLBF, BUFSIZ);
  const Flags flags = ParseFlags(argc, argv);

  std::error_code error;
  std::filesystem::remove_all(flags.workdir, error);
  if (error) Fail("removing " + flags.workdir + ": " + error.message());

  const int64_t parameters = ParameterCount();
  std::printf("model %s: %.2fM parameters (embed frozen), Adam, batch %" PRId64 "\n", kConfigName,
              static_cast<double>(parameters) / 1e6, kBatchSize);
  std::printf("state: params + Adam mu + nu = %s\n",
              FormatBytes(3 * sizeof(float) * static_cast<uint64_t>(parameters)).c_str());
  std::printf("run: %" PRId64 " steps, save every %" PRId64 ", keep 3, crash at step %" PRId64
              ", store in %s\n\n",
              flags.steps, flags.save_every, flags.crash_at, flags.workdir.c_str());

  RunTrainerToCrash(flags);
  ResumeAndFinish(flags);
  return 0;
}
