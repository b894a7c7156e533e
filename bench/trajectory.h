// A real training trajectory for the benchmarks: an MLP trained with Adam,
// step after step, at the size of the state being measured, so that each
// step's parameters and moments change as a real run's do (small updates to
// trained weights, moments drifting), not as a synthetic perturbation.

#ifndef CKPTDB_BENCH_TRAJECTORY_H_
#define CKPTDB_BENCH_TRAJECTORY_H_

#include <cstdint>
#include <vector>

#include "ckptdb/ckptdb.h"

namespace ckptdb::bench {

// A tanh MLP (64 inputs, two hidden layers of width H, 16 outputs) fitting a
// fixed random teacher network plus noise, with Adam (lr 1e-3, betas 0.9 and
// 0.999). H is chosen so that the parameters and both moments, in `dtype`,
// fill about `bytes`. The state a trainer checkpoints: params/layer_N/
// {kernel,bias}, opt/mu/..., opt/nu/... and step (bfloat16 rounds the
// float32 master values, as mixed-precision training stores them).
class Trajectory {
 public:
  Trajectory(uint64_t bytes, DType dtype, uint64_t seed);

  // One Adam step on a fresh batch. The constructor already took
  // `warmup_steps` of them, so that the first state seen is trained.
  void Step();
  // The current state (owned copies, in `dtype`): valid after later Steps.
  Tree State() const;
  int64_t step() const { return step_; }
  uint64_t bytes() const;  // of one state's tensors
  DType dtype() const { return dtype_; }

 private:
  struct Layer {
    int in = 0;
    int out = 0;
    std::vector<float> weight, bias;          // weight: [in][out]
    std::vector<float> mu_weight, mu_bias;    // Adam's first moment
    std::vector<float> nu_weight, nu_bias;    // Adam's second moment
    std::vector<float> grad_weight, grad_bias;
  };
  void Adam(std::vector<float>& value, const std::vector<float>& grad, std::vector<float>& mu,
            std::vector<float>& nu) const;

  DType dtype_;
  uint64_t seed_;
  int64_t step_ = 0;
  int batch_ = 16;
  std::vector<Layer> layers_;
  std::vector<float> teacher_;  // [inputs][outputs]
};

}  // namespace ckptdb::bench

#endif  // CKPTDB_BENCH_TRAJECTORY_H_
