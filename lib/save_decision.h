// The save decision (Orbax's SaveDecisionPolicy, DESIGN.md §2), as a pure
// function so that it is tested by tables.

#ifndef CKPTDB_LIB_SAVE_DECISION_H_
#define CKPTDB_LIB_SAVE_DECISION_H_

#include <cstdint>
#include <optional>

#include "ckptdb/options.h"

namespace ckptdb {

struct SaveDecisionInput {
  int64_t step = 0;
  std::optional<int64_t> latest_step;  // nullopt: the store holds no step
  bool preempted = false;
  bool read_only = false;
};

// False when read-only, for a negative step, or when step <= latest_step.
// Otherwise true when step % save_interval_steps == 0, step is in
// save_on_steps, a preemption was signalled, or no step is held yet.
bool IsSaveDue(const SaveDecisionInput& input, const CheckpointerOptions& options);

}  // namespace ckptdb

#endif  // CKPTDB_LIB_SAVE_DECISION_H_
