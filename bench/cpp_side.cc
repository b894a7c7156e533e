// The C++ side of the Python benchmark (bench/python_bench.py): the same
// operations as the Python package's, through the C++ API, on the same
// tensors, each in its own process as a trainer's would be.
//
//   cpp_side save WARM FILE WORKDIR
//                                creates a store at WORKDIR and saves the
//                                safetensors file WARM into it as step 0 (a
//                                long-lived checkpointer's earlier save), reads
//                                FILE into memory, then times its Save (step
//                                1) + WaitUntilFinished; prints the blocking
//                                phase's seconds and the whole save's
//   cpp_side restore WORKDIR     times opening the store read-only and
//                                RestoreTree of its latest step; prints the
//                                seconds

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include "ckptdb/ckptdb.h"
#include "safetensors.h"

namespace {

using Clock = std::chrono::steady_clock;

int Fail(const ckptdb::Status& status) {
  std::fprintf(stderr, "cpp_side: %s\n", status.ToString().c_str());
  return 1;
}

int Save(const std::string& warm, const std::string& file, const std::string& workdir) {
  ckptdb::CheckpointerOptions options;
  options.max_to_keep = std::nullopt;
  auto opened = ckptdb::Checkpointer::Open(workdir, options);
  if (!opened.ok()) return Fail(opened.status());
  {
    ckptdb::Result<ckptdb::SafetensorsFile> earlier = ckptdb::ReadSafetensors(warm);
    if (!earlier.ok()) return Fail(earlier.status());
    ckptdb::Result<bool> saved = (*opened)->Save(earlier->tree, 0);
    if (!saved.ok()) return Fail(saved.status());
    ckptdb::Status done = (*opened)->WaitUntilFinished();
    if (!done.ok()) return Fail(done);
  }
  ckptdb::Result<ckptdb::SafetensorsFile> read = ckptdb::ReadSafetensors(file);
  if (!read.ok()) return Fail(read.status());
  const auto start = Clock::now();
  ckptdb::Result<bool> saved = (*opened)->Save(read->tree, 1);
  if (!saved.ok()) return Fail(saved.status());
  const double blocking = std::chrono::duration<double>(Clock::now() - start).count();
  ckptdb::Status done = (*opened)->WaitUntilFinished();
  if (!done.ok()) return Fail(done);
  std::printf("%.9f %.9f\n", blocking,
              std::chrono::duration<double>(Clock::now() - start).count());
  return 0;
}

int Restore(const std::string& workdir) {
  const auto start = Clock::now();
  ckptdb::CheckpointerOptions options;
  options.create = false;
  auto opened = ckptdb::Checkpointer::Open(workdir, options);
  if (!opened.ok()) return Fail(opened.status());
  ckptdb::Result<ckptdb::Tree> tree = (*opened)->RestoreTree();
  if (!tree.ok()) return Fail(tree.status());
  std::printf("%.9f\n", std::chrono::duration<double>(Clock::now() - start).count());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 5 && std::strcmp(argv[1], "save") == 0) return Save(argv[2], argv[3], argv[4]);
  if (argc == 3 && std::strcmp(argv[1], "restore") == 0) return Restore(argv[2]);
  std::fprintf(stderr, "usage: cpp_side save WARM FILE WORKDIR | cpp_side restore WORKDIR\n");
  return 2;
}
