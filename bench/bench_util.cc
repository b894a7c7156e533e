#include "bench_util.h"

#include <cstdlib>
#include <cstring>
#include <filesystem>
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

FloatState::FloatState(size_t tensor_count, size_t floats_per_tensor, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  buffers_.resize(tensor_count);
  for (std::vector<float>& buffer : buffers_) {
    buffer.resize(floats_per_tensor);
    for (float& value : buffer) value = normal(rng);
  }
}

void FloatState::Train(size_t first, size_t count, uint64_t step) {
  uint64_t x = step * 0x9E3779B97F4A7C15ull + 1;
  for (size_t t = first; t < first + count && t < buffers_.size(); ++t) {
    for (float& value : buffers_[t]) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      uint32_t bits;
      std::memcpy(&bits, &value, 4);
      bits ^= static_cast<uint32_t>(x) & 0xffff;  // low mantissa bits move, exponents stay
      std::memcpy(&value, &bits, 4);
    }
  }
}

Tree FloatState::View() {
  Tree tree;
  for (size_t t = 0; t < buffers_.size(); ++t) {
    char name[32];
    std::snprintf(name, sizeof(name), "layer_%03zu", t);
    Tree* layer = tree.Set(name, Tree::Map()).value();
    (void)layer->Set("kernel", Tree::Leaf(Tensor::View(DType::kFloat32,
                                                       {static_cast<int64_t>(buffers_[t].size())},
                                                       buffers_[t].data())
                                              .value()));
  }
  return tree;
}

uint64_t FloatState::bytes() const {
  uint64_t total = 0;
  for (const std::vector<float>& buffer : buffers_) total += buffer.size() * sizeof(float);
  return total;
}

uint64_t DirectoryBytes(const std::string& dir) {
  uint64_t total = 0;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (entry.is_regular_file()) total += entry.file_size();
  }
  return total;
}

}  // namespace ckptdb::bench
