// Retention: which steps to delete after a save. A pure function of the
// steps held and the options, so that every rule is tested by tables.
//
// Rules (Orbax's preservation policies, with the step list always sorted):
// a step is kept if ANY of these keeps it:
//  - keep_period: step % keep_period == 0;
//  - keep_time_interval: the oldest step, then each step whose commit time is
//    at least the interval after the last step kept this way (inclusive);
//  - max_to_keep without best metric: the latest max_to_keep steps
//    (unset: all; 0: none);
//  - max_to_keep with best metric: all if unset or if at most max_to_keep
//    steps are held; none if 0; otherwise the best max_to_keep among steps
//    that have the metric (ties: the later step wins), plus the steps without
//    the metric when keep_checkpoints_without_metrics.

#ifndef CKPTDB_LIB_RETENTION_H_
#define CKPTDB_LIB_RETENTION_H_

#include <chrono>
#include <cstdint>
#include <optional>
#include <vector>

#include "ckptdb/options.h"

namespace ckptdb {

struct RetainedStep {
  int64_t step = 0;
  std::chrono::system_clock::time_point commit_time;
  std::optional<double> metric;  // the best_metric_path metric, if stored
};

struct RetentionRules {
  std::optional<int64_t> max_to_keep;
  std::optional<std::chrono::seconds> keep_time_interval;
  std::optional<int64_t> keep_period;
  bool rank_by_metric = false;  // best_metric_path is set
  BestMode best_mode = BestMode::kMax;
  bool keep_checkpoints_without_metrics = true;
};

RetentionRules RetentionRulesFrom(const CheckpointerOptions& options);

// The steps of `held` (ascending by step) that no rule keeps, ascending.
std::vector<int64_t> StepsToDelete(const std::vector<RetainedStep>& held,
                                   const RetentionRules& rules);

}  // namespace ckptdb

#endif  // CKPTDB_LIB_RETENTION_H_
