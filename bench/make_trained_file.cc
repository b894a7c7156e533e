// Writes a safetensors file holding a trained-like float32 state (bench_util's
// TrainedState), the input of scripts/bench_import.sh.
//   make_trained_file PATH MEGABYTES

#include <cstdio>
#include <string>

#include "bench_util.h"
#include "safetensors.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: make_trained_file PATH MEGABYTES\n");
    return 2;
  }
  ckptdb::bench::TrainedState state(std::stoull(argv[2]) << 20, ckptdb::DType::kFloat32,
                                    /*seed=*/11);
  const ckptdb::Status written = ckptdb::WriteSafetensors(argv[1], state.View(), {});
  if (!written.ok()) {
    std::fprintf(stderr, "make_trained_file: %s\n", written.ToString().c_str());
    return 1;
  }
  return 0;
}
