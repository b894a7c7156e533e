// Status and Result<T>: reading the value of an error aborts with the
// status's text in every build type (the suite builds release, where an
// assert would vanish and a test reading value() would pass on an error).

#include <gtest/gtest.h>

#include <string>

#include "ckptdb/status.h"

namespace ckptdb {
namespace {

Result<int> Failing() { return Status::NotFound("step 7 is not in /runs/a"); }
Result<std::string> Succeeding() { return std::string("ok"); }

TEST(ResultTest, AValueReadsBack) {
  Result<std::string> result = Succeeding();
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result.value(), "ok");
  EXPECT_EQ(*result, "ok");
  EXPECT_EQ(result->size(), 2u);
  EXPECT_EQ(std::move(result).value(), "ok");
}

TEST(ResultDeathTest, ReadingTheValueOfAnErrorAbortsWithItsText) {
  const std::string text = "value\\(\\) of an error Result: NotFound: step 7 is not in /runs/a";
  EXPECT_DEATH((void)Failing().value(), text);
  EXPECT_DEATH((void)*Failing(), text);
  const Result<int> failed = Failing();
  EXPECT_DEATH((void)failed.value(), text);
  EXPECT_DEATH((void)std::move(Result<std::string>(Status::Busy("x"))).value(), "Busy: x");
}

TEST(ResultDeathTest, AResultMadeFromAnOkStatusAborts) {
  EXPECT_DEATH((void)Result<int>(Status::OK()), "a Result made from an OK status");
}

TEST(StatusTest, ToStringNamesTheCodeAndTheMessage) {
  EXPECT_EQ(Status::OK().ToString(), "OK");
  EXPECT_EQ(Status::Corruption("chunk 5 of 'w'").ToString(), "Corruption: chunk 5 of 'w'");
}

}  // namespace
}  // namespace ckptdb
