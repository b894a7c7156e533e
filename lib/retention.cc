#include "retention.h"

#include <algorithm>

namespace ckptdb {

RetentionRules RetentionRulesFrom(const CheckpointerOptions& options) {
  RetentionRules rules;
  rules.max_to_keep = options.max_to_keep;
  rules.keep_time_interval = options.keep_time_interval;
  rules.keep_period = options.keep_period;
  rules.rank_by_metric = !options.best_metric_path.empty();
  rules.best_mode = options.best_mode;
  rules.keep_checkpoints_without_metrics = options.keep_checkpoints_without_metrics;
  return rules;
}

namespace {

void KeepByPeriod(const std::vector<RetainedStep>& held, int64_t period, std::vector<bool>* keep) {
  for (size_t i = 0; i < held.size(); ++i) {
    if (held[i].step % period == 0) (*keep)[i] = true;
  }
}

void KeepByTime(const std::vector<RetainedStep>& held, std::chrono::seconds interval,
                std::vector<bool>* keep) {
  if (held.empty()) return;
  size_t anchor = 0;
  (*keep)[0] = true;
  for (size_t i = 1; i < held.size(); ++i) {
    if (held[i].commit_time - held[anchor].commit_time >= interval) {
      (*keep)[i] = true;
      anchor = i;
    }
  }
}

void KeepLatest(const std::vector<RetainedStep>& held, int64_t count, std::vector<bool>* keep) {
  size_t first = held.size() > static_cast<size_t>(count) ? held.size() - count : 0;
  for (size_t i = first; i < held.size(); ++i) (*keep)[i] = true;
}

void KeepBest(const std::vector<RetainedStep>& held, const RetentionRules& rules, int64_t count,
              std::vector<bool>* keep) {
  if (held.size() <= static_cast<size_t>(count)) {
    std::fill(keep->begin(), keep->end(), true);
    return;
  }
  if (count == 0) return;
  std::vector<size_t> ranked;
  for (size_t i = 0; i < held.size(); ++i) {
    if (held[i].metric.has_value()) {
      ranked.push_back(i);
    } else if (rules.keep_checkpoints_without_metrics) {
      (*keep)[i] = true;
    }
  }
  // Worst first; stable, so among equal metrics the later step ranks better.
  const bool larger_is_better = rules.best_mode == BestMode::kMax;
  std::stable_sort(ranked.begin(), ranked.end(), [&](size_t a, size_t b) {
    return larger_is_better ? *held[a].metric < *held[b].metric : *held[a].metric > *held[b].metric;
  });
  size_t first = ranked.size() > static_cast<size_t>(count) ? ranked.size() - count : 0;
  for (size_t i = first; i < ranked.size(); ++i) (*keep)[ranked[i]] = true;
}

}  // namespace

std::vector<int64_t> StepsToDelete(const std::vector<RetainedStep>& held,
                                   const RetentionRules& rules) {
  std::vector<bool> keep(held.size(), false);
  if (!rules.max_to_keep.has_value()) return {};  // unset keeps every step
  if (rules.keep_period.has_value()) KeepByPeriod(held, *rules.keep_period, &keep);
  if (rules.keep_time_interval.has_value()) KeepByTime(held, *rules.keep_time_interval, &keep);
  if (rules.rank_by_metric) {
    KeepBest(held, rules, *rules.max_to_keep, &keep);
  } else {
    KeepLatest(held, *rules.max_to_keep, &keep);
  }
  std::vector<int64_t> doomed;
  for (size_t i = 0; i < held.size(); ++i) {
    if (!keep[i]) doomed.push_back(held[i].step);
  }
  return doomed;
}

}  // namespace ckptdb
