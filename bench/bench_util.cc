#include "bench_util.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

namespace ckptdb::bench {
namespace fs = std::filesystem;

ScratchDir::ScratchDir() {
  const char* root = std::getenv("CKPTDB_BENCH_DIR");
  std::string pattern =
      ((root != nullptr ? fs::path(root) : fs::temp_directory_path()) / "ckptdb-bench-XXXXXX")
          .string();
  if (mkdtemp(pattern.data()) == nullptr) std::abort();
  path_ = pattern;
}

ScratchDir::~ScratchDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

namespace {

// Sends `command` to perf's control FIFO and waits for its acknowledgement
// (so that the section's first instructions are sampled).
void SendPerfCommand(const char* command) {
  const char* control = std::getenv("CKPTDB_PERF_CONTROL");
  if (control == nullptr) return;
  const std::string ack = std::string(control) + ".ack";
  std::ofstream(control) << command << std::endl;
  std::string reply;
  std::ifstream(ack) >> reply;
}

}  // namespace

ProfiledSection::ProfiledSection() { SendPerfCommand("enable"); }
ProfiledSection::~ProfiledSection() { SendPerfCommand("disable"); }

namespace {

// Weights and Adam moments of a 128-256-128 tanh MLP trained for 120 steps
// on y = teacher(x) + noise.
std::vector<std::vector<float>> TrainSmallModel() {
  constexpr int kIn = 128, kHidden = 256, kOut = 128, kBatch = 32, kSteps = 120;
  std::mt19937_64 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto init = [&](size_t n, float scale) {
    std::vector<float> v(n);
    for (float& x : v) x = normal(rng) * scale;
    return v;
  };
  std::vector<float> w1 = init(kIn * kHidden, 1.0f / std::sqrt(float(kIn)));
  std::vector<float> w2 = init(kHidden * kOut, 1.0f / std::sqrt(float(kHidden)));
  std::vector<float> teacher = init(kIn * kOut, 1.0f / std::sqrt(float(kIn)));
  std::vector<float> m1(w1.size()), v1(w1.size()), m2(w2.size()), v2(w2.size());
  std::vector<float> x(kBatch * kIn), h(kBatch * kHidden), y(kBatch * kOut), target(kBatch * kOut);
  std::vector<float> g1(w1.size()), g2(w2.size()), dh(kBatch * kHidden);
  const float lr = 1e-3f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  for (int step = 1; step <= kSteps; ++step) {
    for (float& v : x) v = normal(rng);
    for (int b = 0; b < kBatch; ++b) {
      for (int o = 0; o < kOut; ++o) {
        float t = 0;
        for (int i = 0; i < kIn; ++i) t += x[b * kIn + i] * teacher[i * kOut + o];
        target[b * kOut + o] = t + 0.1f * normal(rng);
      }
      for (int j = 0; j < kHidden; ++j) {
        float a = 0;
        for (int i = 0; i < kIn; ++i) a += x[b * kIn + i] * w1[i * kHidden + j];
        h[b * kHidden + j] = std::tanh(a);
      }
      for (int o = 0; o < kOut; ++o) {
        float a = 0;
        for (int j = 0; j < kHidden; ++j) a += h[b * kHidden + j] * w2[j * kOut + o];
        y[b * kOut + o] = a;
      }
    }
    std::fill(g1.begin(), g1.end(), 0.0f);
    std::fill(g2.begin(), g2.end(), 0.0f);
    for (int b = 0; b < kBatch; ++b) {
      for (int j = 0; j < kHidden; ++j) dh[b * kHidden + j] = 0;
      for (int o = 0; o < kOut; ++o) {
        const float dy = 2.0f * (y[b * kOut + o] - target[b * kOut + o]) / (kBatch * kOut);
        for (int j = 0; j < kHidden; ++j) {
          g2[j * kOut + o] += h[b * kHidden + j] * dy;
          dh[b * kHidden + j] += w2[j * kOut + o] * dy;
        }
      }
      for (int j = 0; j < kHidden; ++j) {
        const float da = dh[b * kHidden + j] * (1 - h[b * kHidden + j] * h[b * kHidden + j]);
        for (int i = 0; i < kIn; ++i) g1[i * kHidden + j] += x[b * kIn + i] * da;
      }
    }
    auto adam = [&](std::vector<float>& w, std::vector<float>& g, std::vector<float>& m,
                    std::vector<float>& v) {
      const float c1 = 1 - std::pow(beta1, float(step)), c2 = 1 - std::pow(beta2, float(step));
      for (size_t i = 0; i < w.size(); ++i) {
        m[i] = beta1 * m[i] + (1 - beta1) * g[i];
        v[i] = beta2 * v[i] + (1 - beta2) * g[i] * g[i];
        w[i] -= lr * (m[i] / c1) / (std::sqrt(v[i] / c2) + eps);
      }
    };
    adam(w1, g1, m1, v1);
    adam(w2, g2, m2, v2);
  }
  return {w1, w2, m1, m2, v1, v2};
}

const std::vector<float>& TrainedValues() {
  static const std::vector<float> values = [] {
    std::vector<float> all;
    for (const std::vector<float>& tensor : TrainSmallModel()) {
      all.insert(all.end(), tensor.begin(), tensor.end());
    }
    return all;
  }();
  return values;
}

// Multiplies by (1 + scale * u), u uniform in [-1, 1], from a xorshift stream.
float Perturb(float value, float scale, uint64_t* state) {
  uint64_t& x = *state;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  const float u = (static_cast<float>(x >> 40) / static_cast<float>(1 << 24)) * 2.0f - 1.0f;
  return value * (1.0f + scale * u);
}

// Copies of the trained values differ by up to 25% per element: their
// mantissas are as unpredictable as a real model's, their signs and
// magnitudes (exponents) distributed as trained ones. A training step moves
// values by up to 0.1%.
constexpr float kCopyScale = 0.25f;
constexpr float kStepScale = 1e-3f;

}  // namespace

TrainedState::TrainedState(uint64_t bytes, DType dtype, uint64_t seed, size_t tensor_bytes)
    : TrainedState(bytes, dtype, seed, std::vector<size_t>{tensor_bytes}) {}

TrainedState::TrainedState(uint64_t bytes, DType dtype, uint64_t seed,
                           const std::vector<size_t>& tensor_bytes)
    : dtype_(dtype) {
  const std::vector<float>& trained = TrainedValues();
  const size_t width = DTypeSize(dtype);
  for (uint64_t total = 0;;) {
    const size_t size = tensor_bytes[buffers_.size() % tensor_bytes.size()] / width * width;
    if (!buffers_.empty() && total + size > bytes) break;
    buffers_.emplace_back(size);
    total += size;
  }
  uint64_t state = seed * 0x9E3779B97F4A7C15ull + 1;
  size_t next = 0;
  for (std::vector<std::byte>& buffer : buffers_) {
    for (size_t i = 0; i < buffer.size() / width; ++i) {
      const float value = Perturb(trained[next++ % trained.size()], kCopyScale, &state);
      if (dtype == DType::kBFloat16) {
        const uint16_t half = ToBFloat16(value).bits;
        std::memcpy(&buffer[i * 2], &half, 2);
      } else {
        std::memcpy(&buffer[i * 4], &value, 4);
      }
    }
  }
}

void TrainedState::Train(size_t first, size_t count, uint64_t step) {
  uint64_t state = step * 0xD1B54A32D192ED03ull + 1;
  for (size_t t = first; t < first + count && t < buffers_.size(); ++t) {
    std::vector<std::byte>& buffer = buffers_[t];
    if (dtype_ == DType::kBFloat16) {
      for (size_t i = 0; i + 1 < buffer.size(); i += 2) {
        uint16_t half;
        std::memcpy(&half, &buffer[i], 2);
        const float value = ToFloat(BFloat16{half});
        half = ToBFloat16(Perturb(value, kStepScale, &state)).bits;
        std::memcpy(&buffer[i], &half, 2);
      }
    } else {
      for (size_t i = 0; i + 3 < buffer.size(); i += 4) {
        float value;
        std::memcpy(&value, &buffer[i], 4);
        value = Perturb(value, kStepScale, &state);
        std::memcpy(&buffer[i], &value, 4);
      }
    }
  }
}

Tree TrainedState::View() {
  Tree tree;
  for (size_t t = 0; t < buffers_.size(); ++t) {
    char name[32];
    std::snprintf(name, sizeof(name), "layer_%03zu", t);
    Tree* layer = tree.Set(name, Tree::Map()).value();
    const auto elements = static_cast<int64_t>(buffers_[t].size() / DTypeSize(dtype_));
    (void)layer->Set("kernel",
                     Tree::Leaf(Tensor::View(dtype_, {elements}, buffers_[t].data()).value()));
  }
  return tree;
}

uint64_t TrainedState::bytes() const {
  uint64_t total = 0;
  for (const std::vector<std::byte>& buffer : buffers_) total += buffer.size();
  return total;
}

void DropPageCache(const std::string& path) {
  auto drop = [](const fs::path& file) {
    int fd = ::open(file.c_str(), O_RDONLY);
    if (fd < 0) return;
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  };
  if (fs::is_directory(path)) {
    for (const auto& entry : fs::recursive_directory_iterator(path)) {
      if (entry.is_regular_file()) drop(entry.path());
    }
  } else {
    drop(path);
  }
}

uint64_t DeviceBytesWritten() {
  std::ifstream io("/proc/self/io");
  std::string key;
  uint64_t value = 0;
  while (io >> key >> value) {
    if (key == "write_bytes:") return value;
  }
  return 0;
}

uint64_t DirectoryBytes(const std::string& dir) {
  uint64_t total = 0;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (entry.is_regular_file()) total += entry.file_size();
  }
  return total;
}

}  // namespace ckptdb::bench
