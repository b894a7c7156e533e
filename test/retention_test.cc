// Tests of StepsToDelete, the pure retention function: one table of cases per
// rule and combination, every expected value worked out by hand from the rules
// (orbax-semantics.md sections 2.2-2.7 and 4.1; DESIGN.md section 2).

#include "retention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "test_util.h"

namespace ckptdb {
namespace {

using std::chrono::seconds;

// A held step committed `commit_second` seconds after the epoch.
RetainedStep At(int64_t step, int64_t commit_second, std::optional<double> metric = std::nullopt) {
  RetainedStep retained;
  retained.step = step;
  retained.commit_time = std::chrono::system_clock::time_point(seconds(commit_second));
  retained.metric = metric;
  return retained;
}

// Steps committed at the second equal to their number, without metrics: for
// cases where time plays no part.
std::vector<RetainedStep> Steps(const std::vector<int64_t>& steps) {
  std::vector<RetainedStep> held;
  for (int64_t step : steps) held.push_back(At(step, step));
  return held;
}

// Steps 1, 2, ... committed at second 1, 2, ..., with the given metrics.
std::vector<RetainedStep> WithMetrics(const std::vector<std::optional<double>>& metrics) {
  std::vector<RetainedStep> held;
  for (size_t i = 0; i < metrics.size(); ++i) {
    const auto step = static_cast<int64_t>(i + 1);
    held.push_back(At(step, step, metrics[i]));
  }
  return held;
}

// Steps 1, 2, ... committed at the given seconds, without metrics.
std::vector<RetainedStep> AtSeconds(const std::vector<int64_t>& commit_seconds) {
  std::vector<RetainedStep> held;
  for (size_t i = 0; i < commit_seconds.size(); ++i) {
    held.push_back(At(static_cast<int64_t>(i + 1), commit_seconds[i]));
  }
  return held;
}

// Rule builders.

// max_to_keep by recency; std::nullopt keeps every step.
RetentionRules Latest(std::optional<int64_t> max_to_keep) {
  RetentionRules rules;
  rules.max_to_keep = max_to_keep;
  return rules;
}

// max_to_keep ranked by best_metric_path.
RetentionRules Best(std::optional<int64_t> max_to_keep, BestMode mode = BestMode::kMax,
                    bool keep_without_metrics = true) {
  RetentionRules rules = Latest(max_to_keep);
  rules.rank_by_metric = true;
  rules.best_mode = mode;
  rules.keep_checkpoints_without_metrics = keep_without_metrics;
  return rules;
}

RetentionRules WithPeriod(RetentionRules rules, int64_t keep_period) {
  rules.keep_period = keep_period;
  return rules;
}

RetentionRules WithInterval(RetentionRules rules, int64_t interval_seconds) {
  rules.keep_time_interval = seconds(interval_seconds);
  return rules;
}

// Saves `saves` one at a time, running retention after each save as the
// checkpointer does, and returns the steps left.
std::vector<int64_t> SaveOneAtATime(const std::vector<RetainedStep>& saves,
                                    const RetentionRules& rules) {
  std::vector<RetainedStep> held;
  for (const RetainedStep& saved : saves) {
    held.push_back(saved);
    const std::vector<int64_t> doomed = StepsToDelete(held, rules);
    std::erase_if(held, [&](const RetainedStep& retained) {
      return std::find(doomed.begin(), doomed.end(), retained.step) != doomed.end();
    });
  }
  std::vector<int64_t> remaining;
  for (const RetainedStep& retained : held) remaining.push_back(retained.step);
  return remaining;
}

struct RetentionCase {
  std::string name;
  std::vector<RetainedStep> held;
  RetentionRules rules;
  std::vector<int64_t> expected_deleted;
};

constexpr std::nullopt_t kNoMetric = std::nullopt;

std::vector<RetentionCase> Cases() {
  constexpr bool kDropMetricless = false;
  constexpr bool kKeepMetricless = true;
  return {
      // ---- max_to_keep unset: keeps every step whatever the other rules ----
      {"unset_keeps_all", Steps({1, 2, 3, 4, 5}), Latest(std::nullopt), {}},
      // keep_period has no visible effect without max_to_keep (section 2.4).
      {"unset_keeps_all_with_keep_period",
       Steps({1, 2, 3, 4, 5}),
       WithPeriod(Latest(std::nullopt), 2),
       {}},
      {"unset_keeps_all_with_time_interval",
       AtSeconds({0, 1, 2, 3}),
       WithInterval(Latest(std::nullopt), 100),
       {}},
      {"unset_keeps_all_in_best_mode",
       WithMetrics({0.9, 0.1, 0.5, kNoMetric}),
       Best(std::nullopt, BestMode::kMax, kDropMetricless),
       {}},

      // ---- max_to_keep 0: keeps none ----
      {"zero_deletes_all", Steps({1, 2, 3}), Latest(0), {1, 2, 3}},
      // The step just saved is deleted once committed (section 2.2).
      {"zero_deletes_the_only_step", Steps({7}), Latest(0), {7}},
      // BestN(0) keeps none, metric-less steps included, whatever the flag.
      {"zero_best_mode_deletes_all_including_metricless",
       WithMetrics({0.5, kNoMetric, 0.9}),
       Best(0, BestMode::kMax, kKeepMetricless),
       {1, 2, 3}},
      {"zero_with_keep_period_keeps_period_steps",
       Steps({1, 2, 3, 4}),
       WithPeriod(Latest(0), 2),
       {1, 3}},
      // Only the oldest (the anchor) survives: 1 and 2 s are within 100 s of it.
      {"zero_best_mode_with_time_interval_keeps_anchor",
       {At(1, 0, 0.5), At(2, 1), At(3, 2, 0.9)},
       WithInterval(Best(0), 100),
       {2, 3}},

      // ---- max_to_keep >= 1 without best metric: the latest n ----
      {"one_keeps_latest", Steps({1, 2, 3, 4}), Latest(1), {1, 2, 3}},
      {"three_with_fewer_steps", Steps({1, 2}), Latest(3), {}},
      {"three_with_equal_steps", Steps({1, 2, 3}), Latest(3), {}},
      {"three_with_more_steps", Steps({1, 2, 3, 4, 5}), Latest(3), {1, 2}},
      {"three_counts_entries_not_step_numbers", Steps({10, 20, 30, 40, 50}), Latest(3), {10, 20}},
      // Metrics are ignored without best_metric_path: the latest step wins.
      {"metrics_ignored_without_rank_by_metric", WithMetrics({0.9, 0.1, 0.1}), Latest(1), {1, 2}},

      // ---- keep_period ----
      // Section 4.1's example: period keeps 2 and 4, latest-2 keeps 4 and 5.
      {"keep_period_with_max_to_keep", Steps({1, 2, 3, 4, 5}), WithPeriod(Latest(2), 2), {1, 3}},
      // 0 % 3 == 0 and 3 % 3 == 0; 4 is the latest.
      {"keep_period_keeps_step_zero", Steps({0, 1, 2, 3, 4}), WithPeriod(Latest(1), 3), {1, 2}},

      // ---- keep_time_interval: the anchor chain ----
      // Everything is within 100 s of step 1 (the anchor); 4 is the latest.
      {"time_oldest_always_kept", AtSeconds({0, 1, 2, 3}), WithInterval(Latest(1), 100), {2, 3}},
      // Step 2 is exactly 10 s after the anchor: kept (inclusive). Step 3 is
      // 5 s after step 2, the new anchor: deleted. Step 4 is the latest.
      {"time_boundary_is_inclusive", AtSeconds({0, 10, 15, 16}), WithInterval(Latest(1), 10), {3}},
      // Step 2 is 9 s after the anchor: deleted. Step 3 is 15 s after it:
      // kept. Step 4 is the latest.
      {"time_just_under_interval_is_not_kept",
       AtSeconds({0, 9, 15, 16}),
       WithInterval(Latest(1), 10),
       {2}},
      // Chain 0 -> 10 (10 after 0) -> 20 (10 after 10); 5 and 12 are too close
      // to the anchor before them.
      {"time_chain_keeps_0_10_20",
       AtSeconds({0, 5, 10, 12, 20}),
       WithInterval(Latest(0), 10),
       {2, 4}},
      // Measured from the last kept step, not the previous step: 12 is 12 s
      // after the anchor 0 (kept) though only 6 s after the step before it;
      // 18 is 6 s after the new anchor 12 (deleted).
      {"time_chain_measured_from_anchor",
       AtSeconds({0, 6, 12, 18}),
       WithInterval(Latest(0), 10),
       {2, 4}},
      // The anchor is the oldest step held, not time zero: 105 is 5 s after 100.
      {"time_anchor_is_oldest_held",
       {At(5, 100), At(6, 105), At(7, 111)},
       WithInterval(Latest(0), 10),
       {6}},

      // ---- best metric ----
      // Max: 0.9 (step 4) and 0.5 (step 2) are best; the latest is not protected.
      {"best_max_keeps_highest",
       WithMetrics({0.1, 0.5, 0.3, 0.9, 0.2}),
       Best(2, BestMode::kMax),
       {1, 3, 5}},
      // Min: 0.1 (step 1) and 0.2 (step 5) are best.
      {"best_min_keeps_lowest",
       WithMetrics({0.1, 0.5, 0.3, 0.9, 0.2}),
       Best(2, BestMode::kMin),
       {2, 3, 4}},
      // Steps 2 and 3 tie at 0.9: the later one wins.
      {"best_max_tie_keeps_later_step",
       WithMetrics({0.7, 0.9, 0.9, 0.1}),
       Best(1, BestMode::kMax),
       {1, 2, 4}},
      // Steps 2 and 3 tie at 0.1: the later one wins in min mode too.
      {"best_min_tie_keeps_later_step",
       WithMetrics({0.7, 0.1, 0.1, 0.9}),
       Best(1, BestMode::kMin),
       {1, 2, 4}},
      // 0.8 (step 2) is best; of the three tied at 0.5 the latest (4) fills
      // the second slot.
      {"best_tie_at_cutoff_keeps_latest_of_tied",
       WithMetrics({0.5, 0.8, 0.5, 0.5}),
       Best(2, BestMode::kMax),
       {1, 3}},
      // Ranked 1 (0.1), 4 (0.5), 3 (0.9): keep 3 and 4; 2 and 5 lack the metric.
      {"best_keeps_metricless_when_flag_true",
       WithMetrics({0.1, kNoMetric, 0.9, 0.5, kNoMetric}),
       Best(2, BestMode::kMax, kKeepMetricless),
       {1}},
      {"best_deletes_metricless_when_flag_false",
       WithMetrics({0.1, kNoMetric, 0.9, 0.5, kNoMetric}),
       Best(2, BestMode::kMax, kDropMetricless),
       {1, 2, 5}},
      // Metric-less steps do not fill empty slots: only step 1 has a metric.
      {"best_metricless_do_not_fill_slots_when_flag_false",
       WithMetrics({0.3, kNoMetric, kNoMetric}),
       Best(2, BestMode::kMax, kDropMetricless),
       {2, 3}},
      {"best_no_metrics_at_all_flag_false_deletes_all",
       WithMetrics({kNoMetric, kNoMetric, kNoMetric}),
       Best(2, BestMode::kMax, kDropMetricless),
       {1, 2, 3}},
      // len(held) <= n keeps all, counting metric-less steps (rule 1 of BestN).
      {"best_at_most_n_keeps_all_even_metricless",
       WithMetrics({kNoMetric, kNoMetric}),
       Best(2, BestMode::kMax, kDropMetricless),
       {}},
      {"best_exactly_n_keeps_all_mixed",
       WithMetrics({0.1, kNoMetric, 0.2}),
       Best(3, BestMode::kMin, kDropMetricless),
       {}},

      // ---- unions ----
      // Period 2 keeps 2 and 4; best max-1 keeps 1 (0.9); 3 is neither.
      {"best_with_keep_period", WithMetrics({0.9, 0.1, 0.2, 0.3}), WithPeriod(Best(1), 2), {3}},
      // Chain at 0, 10 keeps 1 and 3; best min-1 keeps 2 (0.1); the latest
      // (4) is not protected in best mode.
      {"best_with_time_interval",
       {At(1, 0, 0.4), At(2, 5, 0.1), At(3, 10, 0.2), At(4, 15, 0.5)},
       WithInterval(Best(1, BestMode::kMin), 10),
       {4}},
      // Steps 1..8 at 0, 4, ..., 28 s. Chain: 0 (1), 12 (4), 24 (7).
      // Period 3: 3, 6. Latest 2: 7, 8. Union {1,3,4,6,7,8}.
      {"union_period_time_latest",
       AtSeconds({0, 4, 8, 12, 16, 20, 24, 28}),
       WithInterval(WithPeriod(Latest(2), 3), 10),
       {2, 5}},
  };
}

TEST(StepsToDeleteTest, Table) {
  for (const RetentionCase& test_case : Cases()) {
    SCOPED_TRACE(test_case.name);
    EXPECT_EQ(StepsToDelete(test_case.held, test_case.rules), test_case.expected_deleted);
  }
}

TEST(StepsToDeleteTest, EmptyInputDeletesNothing) {
  const std::vector<RetentionRules> rule_sets = {
      Latest(std::nullopt),
      Latest(0),
      Latest(3),
      WithInterval(WithPeriod(Latest(0), 2), 10),
      Best(0),
      Best(2, BestMode::kMin, /*keep_without_metrics=*/false),
  };
  for (size_t i = 0; i < rule_sets.size(); ++i) {
    SCOPED_TRACE("rule set " + std::to_string(i));
    EXPECT_TRUE(StepsToDelete({}, rule_sets[i]).empty());
  }
}

// A store reopened with six steps and max_to_keep 2 prunes the four oldest at
// its first save (section 4.1: retention runs only after a save).
TEST(StepsToDeleteTest, RestartedStorePrunesAllExcessAtOnce) {
  CheckpointerOptions options;
  options.max_to_keep = 2;
  EXPECT_EQ(StepsToDelete(Steps({100, 200, 300, 400, 500, 600}), RetentionRulesFrom(options)),
            (std::vector<int64_t>{100, 200, 300, 400}));
}

TEST(StepsToDeleteTest, ManyStepsWithPeriodAndLatest) {
  std::vector<int64_t> steps;
  for (int64_t step = 0; step < 100; ++step) steps.push_back(step);
  // Kept: multiples of 10 (period) and 95..99 (latest 5).
  std::vector<int64_t> expected;
  for (int64_t step = 0; step < 95; ++step) {
    if (step % 10 != 0) expected.push_back(step);
  }
  EXPECT_EQ(StepsToDelete(Steps(steps), WithPeriod(Latest(5), 10)), expected);
}

// Commit second = 3 x step. By hand: after save 3 held {1,3} (3 is 6 s after
// 1); save 4 -> {1,4}; save 5 -> {1,5} (15 - 3 = 12 s: 5 joins the chain, 4
// is neither chain nor latest); 6 -> {1,5,6}; 7 -> {1,5,7}; 8 -> {1,5,8};
// 9 -> {1,5,9} (27 - 15 = 12 s); 10 -> {1,5,9,10}.
TEST(StepsToDeleteTest, IncrementalSavesRecomputeTimeChain) {
  std::vector<RetainedStep> saves;
  for (int64_t step = 1; step <= 10; ++step) saves.push_back(At(step, 3 * step));
  EXPECT_EQ(SaveOneAtATime(saves, WithInterval(Latest(1), 10)),
            (std::vector<int64_t>{1, 5, 9, 10}));
}

// Each save deletes the step two below it unless it is a multiple of 4, so
// 1..10 end as the period steps plus the latest two.
TEST(StepsToDeleteTest, IncrementalSavesKeepPeriodAndLatest) {
  EXPECT_EQ(SaveOneAtATime(Steps({1, 2, 3, 4, 5, 6, 7, 8, 9, 10}), WithPeriod(Latest(2), 4)),
            (std::vector<int64_t>{4, 8, 9, 10}));
}

TEST(RetentionRulesFromTest, CopiesOptions) {
  CheckpointerOptions options;
  options.max_to_keep = 5;
  options.keep_time_interval = seconds(3600);
  options.keep_period = 1000;
  options.best_metric_path = "eval/accuracy";
  options.best_mode = BestMode::kMin;
  options.keep_checkpoints_without_metrics = false;
  const RetentionRules rules = RetentionRulesFrom(options);
  EXPECT_EQ(rules.max_to_keep, std::optional<int64_t>(5));
  EXPECT_EQ(rules.keep_time_interval, std::optional<seconds>(seconds(3600)));
  EXPECT_EQ(rules.keep_period, std::optional<int64_t>(1000));
  EXPECT_TRUE(rules.rank_by_metric);
  EXPECT_EQ(rules.best_mode, BestMode::kMin);
  EXPECT_FALSE(rules.keep_checkpoints_without_metrics);
}

TEST(RetentionRulesFromTest, DefaultsRankByRecencyAndKeepThree) {
  const RetentionRules rules = RetentionRulesFrom(CheckpointerOptions{});
  EXPECT_EQ(rules.max_to_keep, std::optional<int64_t>(3));
  EXPECT_FALSE(rules.keep_time_interval.has_value());
  EXPECT_FALSE(rules.keep_period.has_value());
  EXPECT_FALSE(rules.rank_by_metric);
  EXPECT_EQ(rules.best_mode, BestMode::kMax);
  EXPECT_TRUE(rules.keep_checkpoints_without_metrics);
}

}  // namespace
}  // namespace ckptdb
