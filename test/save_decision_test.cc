// The save decision as a table, plus the same rules through the public API.

#include "save_decision.h"

#include <gtest/gtest.h>

#include "ckptdb/checkpointer.h"
#include "test_util.h"

namespace ckptdb {
namespace {

struct DecisionCase {
  const char* name;
  int64_t interval;
  std::vector<int64_t> save_on_steps;
  std::optional<int64_t> latest;
  bool preempted;
  bool read_only;
  int64_t step;
  bool due;
};

TEST(SaveDecisionTest, Table) {
  const DecisionCase cases[] = {
      {"first step of an empty store is due", 100, {}, std::nullopt, false, false, 7, true},
      {"step 0 of an empty store", 100, {}, std::nullopt, false, false, 0, true},
      {"aligned step", 100, {}, 0, false, false, 200, true},
      {"unaligned step", 100, {}, 0, false, false, 150, false},
      // Alignment is absolute: after a save at 1234 the next is at 1300.
      {"absolute alignment after an off-interval save", 100, {}, 1234, false, false, 1300, true},
      {"absolute alignment, not yet", 100, {}, 1234, false, false, 1299, false},
      {"listed step", 100, {150, 175}, 0, false, false, 175, true},
      {"listed step below latest", 100, {150}, 160, false, false, 150, false},
      {"step equal to latest is never due", 1, {}, 5, false, false, 5, false},
      {"step below latest is never due", 1, {}, 5, false, false, 4, false},
      {"preemption makes any later step due", 100, {}, 0, true, false, 37, true},
      {"preemption does not make an old step due", 100, {}, 40, true, false, 37, false},
      {"read-only is never due", 1, {}, std::nullopt, false, true, 10, false},
      {"read-only even when preempted", 1, {}, 0, true, true, 10, false},
      {"negative step", 1, {}, std::nullopt, false, false, -1, false},
      {"interval 1 saves every step", 1, {}, 9, false, false, 10, true},
  };
  for (const DecisionCase& c : cases) {
    SCOPED_TRACE(c.name);
    CheckpointerOptions options;
    options.save_interval_steps = c.interval;
    options.save_on_steps = c.save_on_steps;
    SaveDecisionInput input;
    input.step = c.step;
    input.latest_step = c.latest;
    input.preempted = c.preempted;
    input.read_only = c.read_only;
    EXPECT_EQ(IsSaveDue(input, options), c.due);
  }
}

TEST(SaveDecisionTest, ThroughTheCheckpointer) {
  testing::TempDir dir;
  CheckpointerOptions options;
  options.save_interval_steps = 10;
  options.save_on_steps = {25};
  options.max_to_keep = std::nullopt;
  auto checkpointer = Checkpointer::Open(dir.path(), options);
  ASSERT_OK(checkpointer.status());
  Checkpointer& ckpt = **checkpointer;
  const Tree state = testing::MakeStepState(0, 1);

  EXPECT_TRUE(ckpt.ShouldSave(3));  // initial save
  std::vector<int64_t> saved;
  for (int64_t step = 3; step <= 40; ++step) {
    Result<bool> result = ckpt.MaybeSave(state, step);
    ASSERT_OK(result.status());
    if (*result) saved.push_back(step);
  }
  EXPECT_EQ(saved, (std::vector<int64_t>{3, 10, 20, 25, 30, 40}));

  // Not due: Save returns false and stores nothing.
  Result<bool> not_due = ckpt.Save(state, 45);
  ASSERT_OK(not_due.status());
  EXPECT_FALSE(*not_due);
  // MaybeSave ignores force for a step that is not due (Kauldron's rule).
  Result<bool> maybe_forced = ckpt.MaybeSave(state, 45, /*force=*/true);
  ASSERT_OK(maybe_forced.status());
  EXPECT_FALSE(*maybe_forced);
  // Save with force saves it.
  EXPECT_TRUE(ckpt.Save(state, 45, testing::Forced()).value());

  // A preemption makes the next step due, once.
  EXPECT_FALSE(ckpt.ShouldSave(47));
  ckpt.SignalPreemption();
  EXPECT_TRUE(ckpt.ShouldSave(47));
  EXPECT_TRUE(ckpt.MaybeSave(state, 47).value());
  EXPECT_FALSE(ckpt.ShouldSave(48));
  EXPECT_EQ(ckpt.AllSteps(), (std::vector<int64_t>{3, 10, 20, 25, 30, 40, 45, 47}));
}

TEST(SaveDecisionTest, MaxToKeepZeroKeepsNothingAndEveryStepIsAnInitialSave) {
  testing::TempDir dir;
  CheckpointerOptions options;
  options.save_interval_steps = 100;
  options.max_to_keep = 0;
  auto checkpointer = Checkpointer::Open(dir.path(), options);
  ASSERT_OK(checkpointer.status());
  const Tree state = testing::MakeStepState(0, 1);
  EXPECT_TRUE((*checkpointer)->Save(state, 1).value());
  EXPECT_TRUE((*checkpointer)->AllSteps().empty());
  EXPECT_FALSE((*checkpointer)->LatestStep().has_value());
  // The store is empty again, so the next step is an initial save.
  EXPECT_TRUE((*checkpointer)->ShouldSave(2));
}

}  // namespace
}  // namespace ckptdb
