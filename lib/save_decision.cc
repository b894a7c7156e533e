#include "save_decision.h"

#include <algorithm>

namespace ckptdb {

bool IsSaveDue(const SaveDecisionInput& input, const CheckpointerOptions& options) {
  if (input.read_only || input.step < 0) return false;
  if (input.latest_step.has_value() && input.step <= *input.latest_step) return false;
  if (input.step % options.save_interval_steps == 0) return true;
  const auto& listed = options.save_on_steps;
  if (std::find(listed.begin(), listed.end(), input.step) != listed.end()) return true;
  return input.preempted || !input.latest_step.has_value();
}

}  // namespace ckptdb
