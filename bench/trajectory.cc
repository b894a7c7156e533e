#include "trajectory.h"

#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <random>

#include "parallel.h"

namespace ckptdb::bench {
namespace {

constexpr int kInputs = 64;
constexpr int kOutputs = 16;
constexpr int kWarmupSteps = 5;
constexpr float kLearningRate = 1e-3f;
constexpr float kBeta1 = 0.9f;
constexpr float kBeta2 = 0.999f;
constexpr float kEpsilon = 1e-8f;

// The hidden width whose parameters (H^2 + (inputs + outputs + 2) H +
// outputs), three times over, fill `bytes` at `element_size` bytes each.
int HiddenWidth(uint64_t bytes, size_t element_size) {
  const double params = static_cast<double>(bytes) / (3.0 * static_cast<double>(element_size));
  const double linear = kInputs + kOutputs + 2;
  return std::max(8, static_cast<int>((-linear + std::sqrt(linear * linear + 4 * params)) / 2));
}

// Runs fn(i) for i in [0, count) on every core; fn writes only what belongs
// to its i.
void ForEachIndex(size_t count, const std::function<void(size_t)>& fn) {
  Status status = ParallelFor(count, WorkerThreads(), [&](size_t i) {
    fn(i);
    return Status::OK();
  });
  (void)status;  // fn cannot fail
}

}  // namespace

Trajectory::Trajectory(uint64_t bytes, DType dtype, uint64_t seed) : dtype_(dtype), seed_(seed) {
  const int hidden = HiddenWidth(bytes, DTypeSize(dtype));
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int widths[] = {kInputs, hidden, hidden, kOutputs};
  for (int l = 0; l < 3; ++l) {
    Layer layer;
    layer.in = widths[l];
    layer.out = widths[l + 1];
    const size_t count = size_t(layer.in) * size_t(layer.out);
    const float scale = 1.0f / std::sqrt(static_cast<float>(layer.in));
    layer.weight.resize(count);
    for (float& w : layer.weight) w = normal(rng) * scale;
    layer.bias.assign(size_t(layer.out), 0.0f);
    layer.mu_weight.assign(count, 0.0f);
    layer.nu_weight.assign(count, 0.0f);
    layer.grad_weight.assign(count, 0.0f);
    layer.mu_bias.assign(size_t(layer.out), 0.0f);
    layer.nu_bias.assign(size_t(layer.out), 0.0f);
    layer.grad_bias.assign(size_t(layer.out), 0.0f);
    layers_.push_back(std::move(layer));
  }
  teacher_.resize(size_t(kInputs) * kOutputs);
  for (float& t : teacher_) t = normal(rng) / std::sqrt(float(kInputs));
  for (int i = 0; i < kWarmupSteps; ++i) Step();
}

uint64_t Trajectory::bytes() const {
  uint64_t elements = 0;
  for (const Layer& layer : layers_) elements += layer.weight.size() + layer.bias.size();
  return 3 * elements * DTypeSize(dtype_);
}

void Trajectory::Adam(std::vector<float>& value, const std::vector<float>& grad,
                      std::vector<float>& mu, std::vector<float>& nu) const {
  const float c1 = 1 - std::pow(kBeta1, float(step_));
  const float c2 = 1 - std::pow(kBeta2, float(step_));
  constexpr size_t kBlock = 1 << 16;
  ForEachIndex((value.size() + kBlock - 1) / kBlock, [&](size_t block) {
    const size_t end = std::min(value.size(), (block + 1) * kBlock);
    for (size_t i = block * kBlock; i < end; ++i) {
      mu[i] = kBeta1 * mu[i] + (1 - kBeta1) * grad[i];
      nu[i] = kBeta2 * nu[i] + (1 - kBeta2) * grad[i] * grad[i];
      value[i] -= kLearningRate * (mu[i] / c1) / (std::sqrt(nu[i] / c2) + kEpsilon);
    }
  });
}

void Trajectory::Step() {
  ++step_;
  std::mt19937_64 rng(seed_ * 1000003 + uint64_t(step_));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const size_t batch = size_t(batch_);
  // activations[0] is the input; activations[l + 1] the output of layer l.
  std::vector<std::vector<float>> activations(4);
  activations[0].resize(batch * kInputs);
  for (float& x : activations[0]) x = normal(rng);
  std::vector<float> target(batch * kOutputs);
  for (size_t b = 0; b < batch; ++b) {
    for (int o = 0; o < kOutputs; ++o) {
      float t = 0.1f * normal(rng);
      for (int i = 0; i < kInputs; ++i) {
        t += activations[0][b * kInputs + size_t(i)] * teacher_[size_t(i) * kOutputs + size_t(o)];
      }
      target[b * kOutputs + size_t(o)] = t;
    }
  }
  // Forward, one batch row per task.
  for (size_t l = 0; l < layers_.size(); ++l) {
    const Layer& layer = layers_[l];
    const std::vector<float>& in = activations[l];
    std::vector<float>& out = activations[l + 1];
    out.assign(batch * size_t(layer.out), 0.0f);
    const bool last = l + 1 == layers_.size();
    ForEachIndex(batch, [&](size_t b) {
      float* row = &out[b * size_t(layer.out)];
      std::memcpy(row, layer.bias.data(), layer.bias.size() * sizeof(float));
      for (int i = 0; i < layer.in; ++i) {
        const float a = in[b * size_t(layer.in) + size_t(i)];
        const float* w = &layer.weight[size_t(i) * size_t(layer.out)];
        for (int j = 0; j < layer.out; ++j) row[j] += a * w[j];
      }
      if (!last) {
        for (int j = 0; j < layer.out; ++j) row[j] = std::tanh(row[j]);
      }
    });
  }
  // Backward: `delta` is d loss / d (pre-activation) of the current layer.
  std::vector<float> delta(batch * kOutputs);
  for (size_t k = 0; k < delta.size(); ++k) {
    delta[k] = 2.0f * (activations[3][k] - target[k]) / float(batch * kOutputs);
  }
  for (size_t l = layers_.size(); l-- > 0;) {
    Layer& layer = layers_[l];
    const std::vector<float>& in = activations[l];
    const size_t out_width = size_t(layer.out);
    // Gradients, one weight row per task.
    ForEachIndex(size_t(layer.in), [&](size_t i) {
      float* grad = &layer.grad_weight[i * out_width];
      std::fill(grad, grad + out_width, 0.0f);
      for (size_t b = 0; b < batch; ++b) {
        const float a = in[b * size_t(layer.in) + i];
        const float* d = &delta[b * out_width];
        for (size_t j = 0; j < out_width; ++j) grad[j] += a * d[j];
      }
    });
    for (size_t j = 0; j < out_width; ++j) {
      float sum = 0;
      for (size_t b = 0; b < batch; ++b) sum += delta[b * out_width + j];
      layer.grad_bias[j] = sum;
    }
    if (l > 0) {
      // The previous layer's delta, through tanh.
      std::vector<float> previous(batch * size_t(layer.in));
      ForEachIndex(size_t(layer.in), [&](size_t i) {
        const float* w = &layer.weight[i * out_width];
        for (size_t b = 0; b < batch; ++b) {
          const float* d = &delta[b * out_width];
          float sum = 0;
          for (size_t j = 0; j < out_width; ++j) sum += w[j] * d[j];
          const float h = in[b * size_t(layer.in) + i];
          previous[b * size_t(layer.in) + i] = sum * (1 - h * h);
        }
      });
      delta = std::move(previous);
    }
  }
  for (Layer& layer : layers_) {
    Adam(layer.weight, layer.grad_weight, layer.mu_weight, layer.nu_weight);
    Adam(layer.bias, layer.grad_bias, layer.mu_bias, layer.nu_bias);
  }
}

Tree Trajectory::State() const {
  auto leaf = [&](const std::vector<float>& values, std::vector<int64_t> shape) {
    Tensor tensor = Tensor::Allocate(dtype_, std::move(shape)).value();
    if (dtype_ == DType::kBFloat16) {
      std::span<BFloat16> out = tensor.MutableValues<BFloat16>().value();
      for (size_t i = 0; i < values.size(); ++i) out[i] = ToBFloat16(values[i]);
    } else {
      std::memcpy(tensor.mutable_data(), values.data(), values.size() * sizeof(float));
    }
    return Tree::Leaf(std::move(tensor));
  };
  Tree state;
  auto set = [&](const std::string& path, Tree value) {
    if (!state.SetPath(path, std::move(value)).ok()) std::abort();  // fixed, valid paths
  };
  for (size_t l = 0; l < layers_.size(); ++l) {
    const Layer& layer = layers_[l];
    const std::string name = "layer_" + std::to_string(l);
    const struct {
      const char* group;
      const std::vector<float>& weight;
      const std::vector<float>& bias;
    } groups[] = {{"params/", layer.weight, layer.bias},
                  {"opt/mu/", layer.mu_weight, layer.mu_bias},
                  {"opt/nu/", layer.nu_weight, layer.nu_bias}};
    for (const auto& group : groups) {
      set(group.group + name + "/kernel", leaf(group.weight, {layer.in, layer.out}));
      set(group.group + name + "/bias", leaf(group.bias, {layer.out}));
    }
  }
  set("step", Tree::Int(step_));
  return state;
}

}  // namespace ckptdb::bench
