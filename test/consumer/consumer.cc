// A program outside the project that uses an installed ckptdb: it must build
// from the installed headers alone and round-trip a tensor.
#include <ckptdb/ckptdb.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  std::vector<float> weights = {1.5f, -2.25f, 3.0f};
  ckptdb::Tree state;
  (void)state.Set("w",
                  ckptdb::Tree::Leaf(
                      ckptdb::Tensor::View(ckptdb::DType::kFloat32, {3}, weights.data()).value()));
  auto checkpointer = ckptdb::Checkpointer::Open(argv[1], {});
  if (!checkpointer.ok()) {
    std::fprintf(stderr, "%s\n", checkpointer.status().ToString().c_str());
    return 1;
  }
  if (!(*checkpointer)->Save(state, 0).ok()) return 1;
  auto restored = (*checkpointer)->RestoreTree(0);
  if (!restored.ok() || !restored->ContentEquals(state)) return 1;
  std::printf("consumer: round trip ok\n");
  return 0;
}
