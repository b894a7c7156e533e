#include "test_util.h"

#include <rocksdb/db.h>
#include <spawn.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>

extern char** environ;

namespace ckptdb::testing {
namespace fs = std::filesystem;

TempDir::TempDir() {
  std::string pattern = (fs::temp_directory_path() / "ckptdb-test-XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) std::abort();
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

namespace {

Tensor FilledFloat32(std::vector<int64_t> shape, uint64_t seed) {
  Tensor tensor = Tensor::Allocate(DType::kFloat32, std::move(shape)).value();
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  auto* values = reinterpret_cast<float*>(tensor.mutable_data());
  for (uint64_t i = 0; i < tensor.element_count(); ++i) values[i] = normal(rng);
  return tensor;
}

}  // namespace

Tree MakeStepState(int64_t step, size_t megabytes) {
  // Half frozen (seed independent of step), half trained (seed = step).
  const int64_t rows = static_cast<int64_t>(megabytes) * 1024 * 1024 / 4 / 256 / 2;
  Tree state;
  Tree* params = state.Set("params", Tree::Map()).value();
  (void)params->Set("frozen_embedding", Tree::Leaf(FilledFloat32({rows, 256}, 12345)));
  (void)params->Set("kernel", Tree::Leaf(FilledFloat32({rows, 256}, 1000 + step)));
  Tensor bias = Tensor::Allocate(DType::kBFloat16, {64}).value();
  for (int i = 0; i < 64; ++i) {
    reinterpret_cast<uint16_t*>(bias.mutable_data())[i] = static_cast<uint16_t>(step * 64 + i);
  }
  (void)params->Set("bias", Tree::Leaf(bias));
  Tree* layers = state.Set("layers", Tree::List()).value();
  for (int i = 0; i < 2; ++i) {
    Tree* layer = layers->Append(Tree::Map()).value();
    Tensor scale = Tensor::Allocate(DType::kInt32, {3}).value();
    for (int j = 0; j < 3; ++j) {
      reinterpret_cast<int32_t*>(scale.mutable_data())[j] = static_cast<int32_t>(step + i + j);
    }
    (void)layer->Set("scale", Tree::Leaf(scale));
  }
  (void)state.Set("step", Tree::Int(step));
  (void)state.Set("learning_rate", Tree::Float(1e-3 / (1.0 + static_cast<double>(step))));
  (void)state.Set("name", Tree::String("run-" + std::to_string(step)));
  return state;
}

Tree WithLeaves(const Tree& tree, const std::function<Tree(const Tree& leaf)>& replace) {
  Tree copy = tree;
  copy.ForEachMutableLeaf([&](const std::string&, Tree& leaf) { leaf = replace(leaf); });
  return copy;
}

Tree ZeroedLike(const Tree& tree) {
  return WithLeaves(tree, [](const Tree& leaf) {
    switch (leaf.kind()) {
      case Tree::Kind::kTensor:
        return Tree::Leaf(Tensor::Allocate(leaf.tensor().dtype(), leaf.tensor().shape()).value());
      case Tree::Kind::kInt: return Tree::Int(-7);
      case Tree::Kind::kFloat: return Tree::Float(-7.5);
      case Tree::Kind::kBool: return Tree::Bool(!leaf.bool_value());
      default: return Tree::String("placeholder");
    }
  });
}

Tree DeepCopy(const Tree& tree) {
  return WithLeaves(tree, [](const Tree& leaf) {
    return leaf.kind() == Tree::Kind::kTensor ? Tree::Leaf(Tensor::CopyOf(leaf.tensor())) : leaf;
  });
}

SaveOptions Forced() {
  SaveOptions options;
  options.force = true;
  return options;
}

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

uint64_t DirectoryBytes(const std::string& dir) {
  uint64_t total = 0;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (entry.is_regular_file()) total += entry.file_size();
  }
  return total;
}

std::string MappingFlags(const void* address) {
  const auto at = reinterpret_cast<uintptr_t>(address);
  std::ifstream smaps("/proc/self/smaps");
  bool inside = false;
  for (std::string line; std::getline(smaps, line);) {
    unsigned long begin = 0;
    unsigned long end = 0;
    // A mapping's first line: "begin-end perms offset dev inode [path]".
    if (std::sscanf(line.c_str(), "%lx-%lx ", &begin, &end) == 2 &&
        line.find('-') < line.find(' ')) {
      inside = begin <= at && at < end;
    } else if (inside && line.rfind("VmFlags:", 0) == 0) {
      return line.substr(std::strlen("VmFlags:"));
    }
  }
  return "";
}

Status PutRawValue(const std::string& dir, const std::string& family, const std::string& key,
                   const std::string& value) {
  std::vector<std::string> names;
  rocksdb::Status s = rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), dir, &names);
  if (!s.ok()) return Status::IOError(s.ToString());
  std::vector<rocksdb::ColumnFamilyDescriptor> families;
  for (const std::string& name : names) families.emplace_back(name, rocksdb::ColumnFamilyOptions());
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* db = nullptr;
  s = rocksdb::DB::Open(rocksdb::DBOptions(), dir, families, &handles, &db);
  if (!s.ok()) return Status::IOError(s.ToString());
  s = rocksdb::Status::NotFound("no column family " + family);
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i] == family) s = db->Put(rocksdb::WriteOptions(), handles[i], key, value);
  }
  for (rocksdb::ColumnFamilyHandle* handle : handles) db->DestroyColumnFamilyHandle(handle);
  delete db;
  return s.ok() ? Status::OK() : Status::IOError(s.ToString());
}

uint64_t EnvNumber(const char* name, uint64_t fallback) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return fallback;
  char* end = nullptr;
  const unsigned long long value = std::strtoull(text, &end, 10);
  return *end == '\0' ? value : fallback;
}

uint64_t SeedFromEnv(const char* name, uint64_t fixed) {
  const uint64_t seed = EnvNumber(name, fixed);
  std::printf("%s=%llu\n", name, static_cast<unsigned long long>(seed));
  return seed;
}

std::string TestProcessPath() { return CKPTDB_TEST_PROCESS_PATH; }

CheckpointerOptions SmallStoreOptions(uint32_t max_delta_chain) {
  CheckpointerOptions options;
  options.max_to_keep = 4;
  options.chunk_size_bytes = 64 << 10;
  options.staging_bytes = 4 << 20;
  options.max_delta_chain = max_delta_chain;
  return options;
}

Result<std::unique_ptr<Checkpointer>> SaveSmallStoreSteps(const std::string& dir, int64_t offset,
                                                          uint32_t max_delta_chain,
                                                          const std::vector<int64_t>& steps) {
  Result<std::unique_ptr<Checkpointer>> opened =
      Checkpointer::Open(dir, SmallStoreOptions(max_delta_chain));
  if (!opened.ok()) return opened.status();
  for (int64_t step : steps) {
    Result<bool> saved = (*opened)->Save(MakeStepState(step + offset, 1), step, Forced());
    if (!saved.ok()) return saved.status();
  }
  Status committed = (*opened)->WaitUntilFinished();
  if (!committed.ok()) return committed;
  return opened;
}

void SaveStepsAndDie(const std::string& dir, int64_t offset, uint32_t max_delta_chain,
                     const std::vector<int64_t>& steps) {
  std::vector<std::string> argv = {TestProcessPath(), "save-and-die", dir, std::to_string(offset),
                                   std::to_string(max_delta_chain)};
  for (int64_t step : steps) argv.push_back(std::to_string(step));
  EXPECT_EQ(RunProcess(argv), 0) << "saving steps into " << dir;
}

pid_t SpawnProcess(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  if (posix_spawn(&pid, args[0], nullptr, nullptr, args.data(), environ) != 0) return -1;
  return pid;
}

int WaitProcess(pid_t pid) {
  int status = 0;
  if (pid < 0 || waitpid(pid, &status, 0) != pid) return -1;
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return WEXITSTATUS(status);
}

int RunProcess(const std::vector<std::string>& argv) { return WaitProcess(SpawnProcess(argv)); }

}  // namespace ckptdb::testing
