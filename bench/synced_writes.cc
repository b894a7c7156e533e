// The synced writes of a save: saves STEPS steps of a small float32 state
// (8 tensors of 64 KiB, new bytes every step) into a new store at WORKDIR,
// keeping the latest 2 (so each save past the second also runs retention and
// garbage collection). scripts/synced_writes.sh runs it under strace for
// two step counts and prints the difference per save: the fsync and
// fdatasync calls one save makes in a steady state, each a wait for the disk
// that a small step pays in full.
//
//   synced_writes STEPS WORKDIR

#include <cstdio>
#include <cstdlib>
#include <string>

#include "ckptdb/checkpointer.h"

namespace {

int Fail(const ckptdb::Status& status) {
  std::fprintf(stderr, "synced_writes: %s\n", status.ToString().c_str());
  return 1;
}

// Step `step`'s state: 8 tensors whose values differ from every other step's.
ckptdb::Tree StateOf(int64_t step) {
  ckptdb::Tree state;
  for (int t = 0; t < 8; ++t) {
    ckptdb::Tensor tensor = ckptdb::Tensor::Allocate(ckptdb::DType::kFloat32, {16384}).value();
    float* values = tensor.MutableValues<float>().value().data();
    for (int i = 0; i < 16384; ++i) values[i] = static_cast<float>(step * 131071 + t * 16384 + i);
    (void)state.Set("w" + std::to_string(t), ckptdb::Tree::Leaf(std::move(tensor)));
  }
  return state;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: synced_writes STEPS WORKDIR\n");
    return 2;
  }
  const int64_t steps = std::atoll(argv[1]);
  ckptdb::CheckpointerOptions options;
  options.save_interval_steps = 1;
  options.max_to_keep = 2;
  auto opened = ckptdb::Checkpointer::Open(argv[2], options);
  if (!opened.ok()) return Fail(opened.status());
  std::unique_ptr<ckptdb::Checkpointer> checkpointer = std::move(*opened);
  for (int64_t step = 0; step < steps; ++step) {
    ckptdb::Result<bool> saved = checkpointer->Save(StateOf(step), step);
    if (!saved.ok()) return Fail(saved.status());
    ckptdb::Status finished = checkpointer->WaitUntilFinished();
    if (!finished.ok()) return Fail(finished);
  }
  ckptdb::Status closed = checkpointer->Close();
  return closed.ok() ? 0 : Fail(closed);
}
