// End-to-end tests through the public API: round trips, reopen, dedup,
// template restore, and every error the foundation promises.

#include "ckptdb/checkpointer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <random>

#include "store.h"
#include "verifier.h"
#include "test_util.h"

namespace ckptdb {
namespace {

using testing::MakeStepState;
using testing::TempDir;
using testing::ZeroedLike;

constexpr DType kAllDTypes[] = {
    DType::kBool,     DType::kInt8,    DType::kInt16,   DType::kInt32,        DType::kInt64,
    DType::kUInt8,    DType::kUInt16,  DType::kUInt32,  DType::kUInt64,       DType::kFloat16,
    DType::kBFloat16, DType::kFloat32, DType::kFloat64, DType::kFloat8E4M3FN, DType::kFloat8E5M2,
};

Tensor RandomTensor(DType dtype, std::vector<int64_t> shape, uint64_t seed) {
  Tensor tensor = Tensor::Allocate(dtype, std::move(shape)).value();
  std::mt19937_64 rng(seed);
  for (uint64_t i = 0; i < tensor.byte_size(); ++i) {
    // bool elements must be 0 or 1 to be meaningful; other dtypes take any bits.
    tensor.mutable_data()[i] = static_cast<std::byte>(dtype == DType::kBool ? rng() & 1 : rng());
  }
  return tensor;
}

std::unique_ptr<Checkpointer> OpenOrDie(const std::string& dir, CheckpointerOptions options = {}) {
  auto opened = Checkpointer::Open(dir, std::move(options));
  EXPECT_TRUE(opened.ok()) << opened.status().ToString();
  return opened.ok() ? std::move(*opened) : nullptr;
}

CheckpointerOptions KeepAll() {
  CheckpointerOptions options;
  options.max_to_keep = std::nullopt;
  return options;
}

TEST(CheckpointerTest, RoundTripsEveryDTypeWithScalarAndEmptyShapes) {
  TempDir dir;
  Tree state;
  for (DType dtype : kAllDTypes) {
    Tree* group = state.Set(std::string(DTypeName(dtype)), Tree::Map()).value();
    uint64_t seed = static_cast<uint64_t>(dtype);
    (void)group->Set("matrix", Tree::Leaf(RandomTensor(dtype, {3, 5}, seed)));
    (void)group->Set("scalar", Tree::Leaf(RandomTensor(dtype, {}, seed + 100)));
    (void)group->Set("empty", Tree::Leaf(RandomTensor(dtype, {0, 4}, seed + 200)));
    (void)group->Set("rank4", Tree::Leaf(RandomTensor(dtype, {2, 1, 3, 2}, seed + 300)));
  }
  {
    auto checkpointer = OpenOrDie(dir.path());
    ASSERT_TRUE(checkpointer->Save(state, 0).value());
    ASSERT_OK(checkpointer->Close());
  }
  auto checkpointer = OpenOrDie(dir.path());
  Result<Tree> restored = checkpointer->RestoreTree(0);
  ASSERT_OK(restored.status());
  EXPECT_TRUE(restored->ContentEquals(state));

  Tree into = ZeroedLike(state);
  ASSERT_OK(checkpointer->Restore(&into, 0));
  EXPECT_TRUE(into.ContentEquals(state));

  Result<StepMetadata> metadata = checkpointer->ItemMetadata(0);
  ASSERT_OK(metadata.status());
  ASSERT_EQ(metadata->leaves.size(), std::size(kAllDTypes) * 4);
  const LeafMetadata& first = metadata->leaves[0];  // "bfloat16/empty" sorts first
  EXPECT_EQ(first.path, "bfloat16/empty");
  EXPECT_EQ(first.dtype, DType::kBFloat16);
  EXPECT_EQ(first.shape, (std::vector<int64_t>{0, 4}));
  EXPECT_EQ(first.logical_bytes, 0u);
  EXPECT_EQ(first.chunk_count, 0u);
}

TEST(CheckpointerTest, MultiChunkTensorsRoundTripAndReportTheirChunks) {
  TempDir dir;
  CheckpointerOptions options;
  options.chunk_size_bytes = 4096;
  auto checkpointer = OpenOrDie(dir.path(), options);
  Tree state;
  // 10000 float32 = 40000 bytes: 9 full chunks and one of 3136 bytes.
  (void)state.Set("weights", Tree::Leaf(RandomTensor(DType::kFloat32, {100, 100}, 1)));
  (void)state.Set("exact", Tree::Leaf(RandomTensor(DType::kUInt8, {8192}, 2)));
  ASSERT_TRUE(checkpointer->Save(state, 0).value());
  Result<StepMetadata> metadata = checkpointer->ItemMetadata(0);
  ASSERT_OK(metadata.status());
  ASSERT_EQ(metadata->leaves.size(), 2u);
  EXPECT_EQ(metadata->leaves[0].chunk_count, 2u);   // exact: 8192 = 2 x 4096
  EXPECT_EQ(metadata->leaves[1].chunk_count, 10u);  // weights
  EXPECT_EQ(metadata->logical_bytes, 48192u);
  Result<Tree> restored = checkpointer->RestoreTree();
  ASSERT_OK(restored.status());
  EXPECT_TRUE(restored->ContentEquals(state));
}

TEST(CheckpointerTest, DeepTreesWithListsScalarsAndStrings) {
  TempDir dir;
  Tree state;
  Tree* node = &state;
  for (int depth = 0; depth < 20; ++depth) {
    Tree* list = node->Set("level" + std::to_string(depth), Tree::List()).value();
    (void)list->Append(Tree::Int(depth));
    (void)list->Append(Tree::String(std::string(depth, 'x')));
    node = list->Append(Tree::Map()).value();
  }
  (void)node->Set("leaf", Tree::Leaf(RandomTensor(DType::kFloat64, {7}, 3)));
  (void)state.Set("int_min", Tree::Int(std::numeric_limits<int64_t>::min()));
  (void)state.Set("int_max", Tree::Int(std::numeric_limits<int64_t>::max()));
  (void)state.Set("negative_zero", Tree::Float(-0.0));
  (void)state.Set("nan", Tree::Float(std::numeric_limits<double>::quiet_NaN()));
  (void)state.Set("true", Tree::Bool(true));
  (void)state.Set("false", Tree::Bool(false));
  (void)state.Set("utf8", Tree::String("Grüße, 世界"));
  (void)state.Set("empty_string", Tree::String(""));
  (void)state.Set("empty_map", Tree::Map());
  (void)state.Set("empty_list", Tree::List());
  auto checkpointer = OpenOrDie(dir.path());
  ASSERT_TRUE(checkpointer->Save(state, 3).value());
  Result<Tree> restored = checkpointer->RestoreTree(3);
  ASSERT_OK(restored.status());
  EXPECT_TRUE(restored->ContentEquals(state));
  Tree into = ZeroedLike(state);
  ASSERT_OK(checkpointer->Restore(&into));
  EXPECT_TRUE(into.ContentEquals(state));
}

TEST(CheckpointerTest, ReopenSeesEveryStepAndMetadata) {
  TempDir dir;
  {
    auto checkpointer = OpenOrDie(dir.path(), KeepAll());
    for (int64_t step : {0, 5, 10}) {
      SaveOptions save;
      save.metrics = {{"loss", 1.0 / (1.0 + step)}};
      save.user_metadata = {{"config", "mlp"}};
      ASSERT_TRUE(checkpointer->Save(MakeStepState(step), step, save).value());
    }
    ASSERT_OK(checkpointer->Close());
    EXPECT_EQ(checkpointer->Save(MakeStepState(11), 11).status().code(),
              Status::Code::kFailedPrecondition);
  }
  auto checkpointer = OpenOrDie(dir.path(), KeepAll());
  EXPECT_EQ(checkpointer->AllSteps(), (std::vector<int64_t>{0, 5, 10}));
  EXPECT_EQ(checkpointer->LatestStep(), 10);
  for (int64_t step : {0, 5, 10}) {
    Result<Tree> restored = checkpointer->RestoreTree(step);
    ASSERT_OK(restored.status());
    EXPECT_TRUE(restored->ContentEquals(MakeStepState(step))) << "step " << step;
  }
  Result<StepMetadata> metadata = checkpointer->ItemMetadata(5);
  ASSERT_OK(metadata.status());
  EXPECT_EQ(metadata->metrics.at("loss"), 1.0 / 6.0);
  EXPECT_EQ(metadata->user_metadata.at("config"), "mlp");
}

// MaybeSave takes the save options (metrics for best-metric retention, user
// metadata) and still saves only due steps; ItemMetadata carries scalars.
TEST(CheckpointerTest, MaybeSaveWithOptionsAndScalarsInTheMetadata) {
  TempDir dir;
  CheckpointerOptions options = KeepAll();
  options.save_interval_steps = 10;
  auto checkpointer = OpenOrDie(dir.path(), options);
  Tree state;
  ASSERT_OK(state.SetPath("params/w", Tree::Leaf(Tensor::Allocate(DType::kFloat32, {4}).value())));
  ASSERT_OK(state.SetPath("config/name", Tree::String("mlp")));
  ASSERT_OK(state.SetPath("config/lr", Tree::Float(0.25)));
  ASSERT_OK(state.SetPath("config/ema", Tree::Bool(true)));
  ASSERT_OK(state.SetPath("step", Tree::Int(10)));
  SaveOptions save;
  save.metrics = {{"loss", 0.5}};
  save.user_metadata = {{"run", "a"}};
  ASSERT_TRUE(checkpointer->MaybeSave(state, 10, save).value());
  save.force = true;  // does not make step 11 due
  ASSERT_FALSE(checkpointer->MaybeSave(state, 11, save).value());
  ASSERT_OK(checkpointer->WaitUntilFinished());
  EXPECT_EQ(checkpointer->AllSteps(), (std::vector<int64_t>{10}));
  Result<StepMetadata> metadata = checkpointer->ItemMetadata(10);
  ASSERT_OK(metadata.status());
  EXPECT_EQ(metadata->metrics.at("loss"), 0.5);
  EXPECT_EQ(metadata->user_metadata.at("run"), "a");
  std::map<std::string, const LeafMetadata*> leaves;
  for (const LeafMetadata& leaf : metadata->leaves) leaves[leaf.path] = &leaf;
  EXPECT_EQ(leaves.at("config/name")->string_value, "mlp");
  EXPECT_EQ(leaves.at("config/lr")->float_value, 0.25);
  EXPECT_TRUE(leaves.at("config/ema")->bool_value);
  EXPECT_EQ(leaves.at("step")->int_value, 10);
  EXPECT_EQ(leaves.at("params/w")->kind, Tree::Kind::kTensor);
  EXPECT_EQ(leaves.at("params/w")->int_value, 0);
}

// Size of the manifest of `step` as stored.
size_t StoredManifestBytes(const std::string& dir, int64_t step) {
  auto store = Store::Open(dir, Store::Mode::kReadOnly);
  EXPECT_TRUE(store.ok()) << store.status().ToString();
  auto manifest = (*store)->ReadManifest(step);
  EXPECT_TRUE(manifest.ok() && manifest->has_value());
  return (*manifest)->size();
}

TEST(CheckpointerTest, SavingTheSameStateAgainAddsOnlyTheManifest) {
  TempDir dir;
  const std::string store_dir = dir.Sub("store");
  Tree state = MakeStepState(1, 8);
  uint64_t after_first = 0;
  uint64_t after_second = 0;
  {
    auto checkpointer = OpenOrDie(store_dir, KeepAll());
    ASSERT_TRUE(checkpointer->Save(state, 1).value());
    ASSERT_OK(checkpointer->WaitUntilFinished());
    after_first = testing::DirectoryBytes(store_dir);
    ASSERT_TRUE(checkpointer->Save(state, 2).value());
    ASSERT_OK(checkpointer->WaitUntilFinished());
    after_second = testing::DirectoryBytes(store_dir);
  }
  const size_t manifest = StoredManifestBytes(store_dir, 2);
  // The write-ahead log frames the manifest with a few bytes of headers, and
  // every batch restates the store id (doc/format.md §3: 31 bytes of key and
  // value, plus their own framing).
  constexpr uint64_t kLogFraming = 112;
  EXPECT_LE(after_second - after_first, manifest + kLogFraming)
      << "first save " << after_first << " bytes, manifest " << manifest;
  EXPECT_GT(after_first, 4u << 20) << "the first save should hold the state's bytes";
}

// A writer's Close leaves its records in table files: the write-ahead log
// is empty, so the next open (a reader's replays it twice: probe and
// instance) has nothing to replay. Left in the log, 100 saves of 1000
// tensors cost every later open 0.4 s.
TEST(CheckpointerTest, AClosedWriterLeavesNothingInTheLogToReplay) {
  namespace fs = std::filesystem;
  TempDir dir;
  {
    auto checkpointer = OpenOrDie(dir.path(), KeepAll());
    for (int64_t step = 1; step <= 3; ++step) {
      ASSERT_TRUE(checkpointer->Save(MakeStepState(step, 1), step).value());
    }
    ASSERT_OK(checkpointer->Close());
  }
  int logs = 0;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir.path())) {
    if (entry.path().extension() != ".log") continue;
    ++logs;
    EXPECT_EQ(entry.file_size(), 0u) << entry.path();
  }
  EXPECT_GE(logs, 1);
  CheckpointerOptions reading;
  reading.create = false;
  auto reader = OpenOrDie(dir.path(), reading);
  for (int64_t step = 1; step <= 3; ++step) {
    Result<Tree> restored = reader->RestoreTree(step);
    ASSERT_OK(restored.status());
    EXPECT_TRUE(restored->ContentEquals(MakeStepState(step, 1)));
  }
}

TEST(CheckpointerTest, IdenticalTensorsAreStoredOnce) {
  TempDir dir;
  Tensor block = RandomTensor(DType::kUInt8, {1 << 20}, 9);  // incompressible
  Tree one;
  (void)one.Set("a", Tree::Leaf(block));
  Tree three;
  (void)three.Set("a", Tree::Leaf(block));
  (void)three.Set("b", Tree::Leaf(Tensor::CopyOf(block)));
  (void)three.Set("c", Tree::Leaf(Tensor::CopyOf(block)));
  auto checkpointer_one = OpenOrDie(dir.Sub("one"));
  auto checkpointer_three = OpenOrDie(dir.Sub("three"));
  ASSERT_TRUE(checkpointer_one->Save(one, 0).value());
  ASSERT_TRUE(checkpointer_three->Save(three, 0).value());
  // Saves are asynchronous: the bytes are on disk once they finish (an
  // ASan run once measured "one" before its chunks were written).
  ASSERT_OK(checkpointer_one->WaitUntilFinished());
  ASSERT_OK(checkpointer_three->WaitUntilFinished());
  const uint64_t one_bytes = testing::DirectoryBytes(dir.Sub("one"));
  const uint64_t three_bytes = testing::DirectoryBytes(dir.Sub("three"));
  EXPECT_LT(three_bytes, one_bytes + (64u << 10)) << one_bytes << " vs " << three_bytes;
  Result<Tree> restored = checkpointer_three->RestoreTree();
  ASSERT_OK(restored.status());
  EXPECT_TRUE(restored->ContentEquals(three));
}

TEST(CheckpointerTest, RestoreOfAMissingStepNamesStepAndWorkdir) {
  TempDir dir;
  auto checkpointer = OpenOrDie(dir.path());
  Tree state = MakeStepState(0);
  Status empty = checkpointer->Restore(&state);
  EXPECT_TRUE(empty.IsNotFound()) << empty.ToString();
  EXPECT_NE(empty.message().find(dir.path()), std::string::npos) << empty.ToString();
  EXPECT_TRUE(checkpointer->RestoreTree().status().IsNotFound());
  EXPECT_TRUE(checkpointer->ItemMetadata().status().IsNotFound());

  ASSERT_TRUE(checkpointer->Save(state, 0).value());
  Status missing = checkpointer->Restore(&state, 7);
  EXPECT_TRUE(missing.IsNotFound()) << missing.ToString();
  EXPECT_NE(missing.message().find("step 7"), std::string::npos) << missing.ToString();
  EXPECT_NE(missing.message().find(dir.path()), std::string::npos) << missing.ToString();
}

TEST(CheckpointerTest, NoopIfMissingLeavesTheTemplateUntouched) {
  TempDir dir;
  auto checkpointer = OpenOrDie(dir.path());
  Tree state = MakeStepState(4);
  const Tree original = ZeroedLike(state);
  Tree untouched = ZeroedLike(state);
  RestoreOptions options;
  options.noop_if_missing = true;
  ASSERT_OK(checkpointer->Restore(&untouched, kLatestStep, options));
  EXPECT_TRUE(untouched.ContentEquals(original));
  // A specific missing step is still an error.
  ASSERT_TRUE(checkpointer->Save(state, 4).value());
  EXPECT_TRUE(checkpointer->Restore(&untouched, 9, options).IsNotFound());
}

TEST(CheckpointerTest, TemplateMismatchListsEveryProblemAndWritesNothing) {
  TempDir dir;
  auto checkpointer = OpenOrDie(dir.path());
  Tree state;
  (void)state.Set("kept", Tree::Leaf(RandomTensor(DType::kFloat32, {4}, 1)));
  (void)state.Set("wrong_dtype", Tree::Leaf(RandomTensor(DType::kFloat32, {4}, 2)));
  (void)state.Set("wrong_shape", Tree::Leaf(RandomTensor(DType::kFloat32, {4}, 3)));
  (void)state.Set("only_stored", Tree::Leaf(RandomTensor(DType::kInt8, {2}, 4)));
  (void)state.Set("wrong_kind", Tree::Int(3));
  ASSERT_TRUE(checkpointer->Save(state, 0).value());

  Tree wanted;
  (void)wanted.Set("kept", Tree::Leaf(Tensor::Allocate(DType::kFloat32, {4}).value()));
  (void)wanted.Set("wrong_dtype", Tree::Leaf(Tensor::Allocate(DType::kBFloat16, {4}).value()));
  (void)wanted.Set("wrong_shape", Tree::Leaf(Tensor::Allocate(DType::kFloat32, {2, 2}).value()));
  (void)wanted.Set("only_template", Tree::Leaf(Tensor::Allocate(DType::kInt8, {2}).value()));
  (void)wanted.Set("wrong_kind", Tree::String("3"));
  Status status = checkpointer->Restore(&wanted);
  ASSERT_TRUE(status.IsInvalidArgument()) << status.ToString();
  for (const char* expected :
       {"dtype: 'wrong_dtype'", "shape: 'wrong_shape'", "missing: 'only_stored'",
        "extra: 'only_template'", "kind: 'wrong_kind'", "5 problems"}) {
    EXPECT_NE(status.message().find(expected), std::string::npos)
        << expected << " not in: " << status.message();
  }
  EXPECT_EQ(status.message().find("'kept'"), std::string::npos) << status.message();
  // Nothing was written: the matching tensor is still zero.
  const Tensor& kept = wanted.Find("kept")->tensor();
  for (uint64_t i = 0; i < kept.byte_size(); ++i) ASSERT_EQ(kept.data()[i], std::byte{0});
}

TEST(CheckpointerTest, TemplateOfAnotherModelListsTheFirstProblemsAndCountsTheRest) {
  TempDir dir;
  auto checkpointer = OpenOrDie(dir.path());
  Tree state;
  for (int i = 0; i < 500; ++i) (void)state.Set("stored_" + std::to_string(i), Tree::Int(i));
  ASSERT_TRUE(checkpointer->Save(state, 0).value());
  Tree wanted;
  for (int i = 0; i < 500; ++i) (void)wanted.Set("wanted_" + std::to_string(i), Tree::Int(i));
  const Status status = checkpointer->Restore(&wanted);
  ASSERT_TRUE(status.IsInvalidArgument()) << status.ToString();
  const std::string& message = status.message();
  EXPECT_NE(message.find("(1000 problems):"), std::string::npos) << message;
  EXPECT_NE(message.find("\n  ... and 980 more"), std::string::npos) << message;
  // The header line, 20 problems and the count of the rest.
  EXPECT_EQ(std::count(message.begin(), message.end(), '\n'), 21) << message;
}

TEST(CheckpointerTest, DonatedRestoreWritesIntoCallerBuffers) {
  TempDir dir;
  auto checkpointer = OpenOrDie(dir.path());
  Tree state = MakeStepState(2);
  ASSERT_TRUE(checkpointer->Save(state, 2).value());
  std::vector<float> caller_buffer(state.Find("params/kernel")->tensor().element_count());
  Tree into = ZeroedLike(state);
  Tree* kernel = into.Find("params/kernel");
  *kernel = Tree::Leaf(
      Tensor::View(DType::kFloat32, kernel->tensor().shape(), caller_buffer.data()).value());
  ASSERT_OK(checkpointer->Restore(&into));
  EXPECT_EQ(into.Find("params/kernel")->tensor().data(),
            reinterpret_cast<std::byte*>(caller_buffer.data()));
  EXPECT_EQ(std::memcmp(caller_buffer.data(), state.Find("params/kernel")->tensor().data(),
                        caller_buffer.size() * sizeof(float)),
            0);
  EXPECT_TRUE(into.ContentEquals(state));
}

TEST(CheckpointerTest, RestoreWithoutDonationLeavesTemplateBuffersAlone) {
  TempDir dir;
  auto checkpointer = OpenOrDie(dir.path());
  Tree state = MakeStepState(2);
  ASSERT_TRUE(checkpointer->Save(state, 2).value());
  std::vector<float> caller_buffer(state.Find("params/kernel")->tensor().element_count(), 0.5f);
  Tree into = ZeroedLike(state);
  Tree* kernel = into.Find("params/kernel");
  // A read-only view is fine without donation.
  *kernel = Tree::Leaf(
      Tensor::ConstView(DType::kFloat32, kernel->tensor().shape(), caller_buffer.data()).value());
  Tree donating = into;
  Status refused = checkpointer->Restore(&donating);
  EXPECT_TRUE(refused.IsInvalidArgument()) << refused.ToString();
  EXPECT_NE(refused.message().find("read-only: 'params/kernel'"), std::string::npos);

  RestoreOptions options;
  options.donate = false;
  ASSERT_OK(checkpointer->Restore(&into, kLatestStep, options));
  EXPECT_TRUE(into.ContentEquals(state));
  EXPECT_TRUE(into.Find("params/kernel")->tensor().owns_data());
  for (float value : caller_buffer) ASSERT_EQ(value, 0.5f);
}

TEST(CheckpointerTest, SavingAStoredStepIsNotDueAndForcingItFails) {
  TempDir dir;
  auto checkpointer = OpenOrDie(dir.path());
  Tree state = MakeStepState(0);
  ASSERT_TRUE(checkpointer->Save(state, 0).value());
  Result<bool> again = checkpointer->Save(state, 0);
  ASSERT_OK(again.status());
  EXPECT_FALSE(*again);
  Result<bool> forced = checkpointer->Save(state, 0, ckptdb::testing::Forced());
  EXPECT_EQ(forced.status().code(), Status::Code::kAlreadyExists) << forced.status().ToString();
  EXPECT_NE(forced.status().message().find("step 0"), std::string::npos);
  EXPECT_TRUE(
      checkpointer->Save(state, -3, ckptdb::testing::Forced()).status().IsInvalidArgument());
}

TEST(CheckpointerTest, NaNMetricsAreRefusedAndNothingIsSaved) {
  TempDir dir;
  auto checkpointer = OpenOrDie(dir.path());
  SaveOptions options;
  options.metrics = {{"loss", std::nan("")}};
  Result<bool> saved = checkpointer->Save(MakeStepState(0), 0, options);
  EXPECT_TRUE(saved.status().IsInvalidArgument()) << saved.status().ToString();
  EXPECT_TRUE(checkpointer->AllSteps().empty());
}

TEST(CheckpointerTest, ADirectoryThatIsNotAStoreIsLeftAlone) {
  TempDir dir;
  {
    std::ofstream file(dir.Sub("notes.txt"));
    file << "my data";
  }
  auto opened = Checkpointer::Open(dir.path(), CheckpointerOptions());
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.status().code(), Status::Code::kFailedPrecondition)
      << opened.status().ToString();
  EXPECT_NE(opened.status().message().find("not a ckptdb store"), std::string::npos);
  size_t entries = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) {
    EXPECT_EQ(entry.path().filename(), "notes.txt");
    ++entries;
  }
  EXPECT_EQ(entries, 1u);
}

TEST(CheckpointerTest, ReadOnlyOpenOfAMissingStoreIsNotFound) {
  TempDir dir;
  CheckpointerOptions options;
  options.create = false;
  auto opened = Checkpointer::Open(dir.Sub("absent"), options);
  EXPECT_TRUE(opened.status().IsNotFound()) << opened.status().ToString();
  EXPECT_FALSE(std::filesystem::exists(dir.Sub("absent")));
}

TEST(CheckpointerTest, ReadOnlyStoresRefuseWrites) {
  TempDir dir;
  auto writer = OpenOrDie(dir.path());
  ASSERT_TRUE(writer->Save(MakeStepState(0), 0).value());
  ASSERT_OK(writer->WaitUntilFinished());  // the reader sees committed steps only
  CheckpointerOptions options;
  options.create = false;
  auto reader = OpenOrDie(dir.path(), options);
  EXPECT_FALSE(reader->ShouldSave(10));
  EXPECT_EQ(reader->Save(MakeStepState(1), 1, ckptdb::testing::Forced()).status().code(),
            Status::Code::kFailedPrecondition);
  EXPECT_EQ(reader->Delete(0).code(), Status::Code::kFailedPrecondition);
  Result<Tree> restored = reader->RestoreTree(0);
  ASSERT_OK(restored.status());
  EXPECT_TRUE(restored->ContentEquals(MakeStepState(0)));
}

TEST(CheckpointerTest, ANewerStoreFormatIsRefused) {
  TempDir dir;
  { auto checkpointer = OpenOrDie(dir.path()); }
  // Rewrite the format version as a future build would.
  std::string version(4, '\0');
  version[0] = static_cast<char>(kStoreFormatVersion + 1);
  ASSERT_OK(testing::PutRawValue(dir.path(), "default", "ckptdb.format_version", version));
  auto opened = Checkpointer::Open(dir.path(), CheckpointerOptions());
  EXPECT_EQ(opened.status().code(), Status::Code::kNotSupported) << opened.status().ToString();
  EXPECT_NE(opened.status().message().find("format version " +
                                           std::to_string(kStoreFormatVersion + 1)),
            std::string::npos);
}

TEST(CheckpointerTest, ASecondWriterInTheSameProcessIsBusy) {
  TempDir dir;
  auto first = OpenOrDie(dir.path());
  auto second = Checkpointer::Open(dir.path(), CheckpointerOptions());
  EXPECT_EQ(second.status().code(), Status::Code::kBusy) << second.status().ToString();
  // Told it is this process (not "another process"), by any spelling of the path.
  EXPECT_NE(second.status().message().find("this process already has"), std::string::npos)
      << second.status().ToString();
  auto spelled = Checkpointer::Open(dir.path() + "/./", CheckpointerOptions());
  EXPECT_EQ(spelled.status().code(), Status::Code::kBusy) << spelled.status().ToString();
  EXPECT_OK(first->Close());
  auto third = Checkpointer::Open(dir.path(), CheckpointerOptions());
  EXPECT_OK(third.status()) << "the claim ends with the first writer's Close";
}

TEST(CheckpointerTest, InvalidOptionsAreNamed) {
  TempDir dir;
  auto expect_invalid = [&](CheckpointerOptions options, const std::string& name,
                            Status::Code code = Status::Code::kInvalidArgument) {
    auto opened = Checkpointer::Open(dir.path(), std::move(options));
    EXPECT_EQ(opened.status().code(), code) << opened.status().ToString();
    EXPECT_NE(opened.status().message().find(name), std::string::npos)
        << opened.status().ToString();
  };
  CheckpointerOptions options;
  options.save_interval_steps = 0;
  expect_invalid(options, "save_interval_steps");
  options = {};
  options.max_to_keep = -1;
  expect_invalid(options, "max_to_keep");
  options = {};
  options.keep_period = 0;
  expect_invalid(options, "keep_period");
  options = {};
  options.keep_time_interval = std::chrono::seconds(0);
  expect_invalid(options, "keep_time_interval");
  options = {};
  options.chunk_size_bytes = 1000;
  expect_invalid(options, "chunk_size_bytes");
  options = {};
  options.max_delta_chain = 33;
  expect_invalid(options, "max_delta_chain");
  options = {};
  options.multiprocessing.primary_host = 1;
  expect_invalid(options, "multiprocessing.primary_host", Status::Code::kInvalidArgument);
  EXPECT_TRUE(std::filesystem::is_empty(dir.path())) << "a refused open must create nothing";
}

TEST(CheckpointerTest, DeleteRemovesOneStep) {
  TempDir dir;
  auto checkpointer = OpenOrDie(dir.path(), KeepAll());
  for (int64_t step : {1, 2, 3}) {
    ASSERT_TRUE(checkpointer->Save(MakeStepState(step), step).value());
  }
  ASSERT_OK(checkpointer->Delete(2));
  EXPECT_EQ(checkpointer->AllSteps(), (std::vector<int64_t>{1, 3}));
  EXPECT_TRUE(checkpointer->Delete(2).IsNotFound());
  EXPECT_TRUE(checkpointer->RestoreTree(2).status().IsNotFound());
  Result<Tree> restored = checkpointer->RestoreTree(1);
  ASSERT_OK(restored.status());
  EXPECT_TRUE(restored->ContentEquals(MakeStepState(1)));
}

TEST(CheckpointerTest, MaxToKeepPrunesAfterEachSave) {
  TempDir dir;
  CheckpointerOptions options;
  options.max_to_keep = 3;
  auto checkpointer = OpenOrDie(dir.path(), options);
  for (int64_t step = 0; step < 6; ++step) {
    ASSERT_TRUE(checkpointer->Save(MakeStepState(step), step).value());
  }
  EXPECT_EQ(checkpointer->AllSteps(), (std::vector<int64_t>{3, 4, 5}));
  for (int64_t step : {3, 4, 5}) {
    Result<Tree> restored = checkpointer->RestoreTree(step);
    ASSERT_OK(restored.status());
    EXPECT_TRUE(restored->ContentEquals(MakeStepState(step)));
  }
}

}  // namespace
}  // namespace ckptdb

namespace ckptdb {
namespace {

TEST(RetentionThroughCheckpointerTest, AReopenedStoreWithTooManyStepsPrunesAtItsFirstSave) {
  testing::TempDir dir;
  {
    auto checkpointer = OpenOrDie(dir.path(), KeepAll());
    for (int64_t step = 0; step < 6; ++step) {
      ASSERT_TRUE(checkpointer->Save(testing::MakeStepState(step, 1), step).value());
    }
  }
  CheckpointerOptions options;
  options.max_to_keep = 2;
  auto checkpointer = OpenOrDie(dir.path(), options);
  EXPECT_EQ(checkpointer->AllSteps().size(), 6u) << "opening alone must not prune";
  ASSERT_TRUE(checkpointer->Save(testing::MakeStepState(6, 1), 6).value());
  EXPECT_EQ(checkpointer->AllSteps(), (std::vector<int64_t>{5, 6}));
}

TEST(RetentionThroughCheckpointerTest, BestMetricSurvivesARestart) {
  testing::TempDir dir;
  CheckpointerOptions options;
  options.max_to_keep = 2;
  options.best_metric_path = "eval/accuracy";
  const double accuracy[] = {0.5, 0.9, 0.7, 0.8, 0.6};
  {
    auto checkpointer = OpenOrDie(dir.path(), options);
    for (int64_t step = 0; step < 3; ++step) {
      SaveOptions save;
      save.metrics = {{"eval/accuracy", accuracy[step]}};
      ASSERT_TRUE(checkpointer->Save(testing::MakeStepState(step, 1), step, save).value());
    }
    EXPECT_EQ(checkpointer->AllSteps(), (std::vector<int64_t>{1, 2}));
  }
  auto checkpointer = OpenOrDie(dir.path(), options);
  for (int64_t step = 3; step < 5; ++step) {
    SaveOptions save;
    save.metrics = {{"eval/accuracy", accuracy[step]}};
    ASSERT_TRUE(checkpointer->Save(testing::MakeStepState(step, 1), step, save).value());
  }
  // The best two of 0.9 (1), 0.7 (2), 0.8 (3), 0.6 (4): steps 1 and 3; the
  // metrics of steps 1 and 2 came back from their manifests.
  EXPECT_EQ(checkpointer->AllSteps(), (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(checkpointer->LatestStep(), 3);
}

TEST(RetentionThroughCheckpointerTest, KeepTimeIntervalUsesTheInjectedClock) {
  testing::TempDir dir;
  auto now = std::chrono::system_clock::time_point(std::chrono::hours(1000));
  CheckpointerOptions options;
  options.max_to_keep = 1;
  options.keep_time_interval = std::chrono::seconds(60);
  options.clock = [&now] { return now; };
  auto checkpointer = OpenOrDie(dir.path(), options);
  // Steps every 25 s: 0 (t=0, the anchor), 1 (25), 2 (50), 3 (75: 75 >= 60
  // after the anchor, kept), 4 (100, the latest).
  for (int64_t step = 0; step < 5; ++step) {
    ASSERT_TRUE(checkpointer->Save(testing::MakeStepState(step, 1), step).value());
    now += std::chrono::seconds(25);
  }
  EXPECT_EQ(checkpointer->AllSteps(), (std::vector<int64_t>{0, 3, 4}));
  Result<StepMetadata> metadata = checkpointer->ItemMetadata(3);
  ASSERT_OK(metadata.status());
  EXPECT_EQ(metadata->commit_time, std::chrono::system_clock::time_point(std::chrono::hours(1000)) +
                                       std::chrono::seconds(75));
}

TEST(RetentionThroughCheckpointerTest, KeepPeriodKeepsMultiplesBeyondMaxToKeep) {
  testing::TempDir dir;
  CheckpointerOptions options;
  options.max_to_keep = 2;
  options.keep_period = 4;
  auto checkpointer = OpenOrDie(dir.path(), options);
  for (int64_t step = 0; step < 10; ++step) {
    ASSERT_TRUE(checkpointer->Save(testing::MakeStepState(step, 1), step).value());
  }
  EXPECT_EQ(checkpointer->AllSteps(), (std::vector<int64_t>{0, 4, 8, 9}));
  for (int64_t step : {0, 4, 8, 9}) {
    Result<Tree> restored = checkpointer->RestoreTree(step);
    ASSERT_OK(restored.status());
    EXPECT_TRUE(restored->ContentEquals(testing::MakeStepState(step, 1)));
  }
}

}  // namespace
}  // namespace ckptdb

namespace ckptdb {
namespace {

TEST(CheckpointerTest, DonatingIntoTensorsThatShareMemoryIsRefused) {
  testing::TempDir dir;
  auto checkpointer = OpenOrDie(dir.path());
  Tree state;
  (void)state.Set("mu", Tree::Leaf(RandomTensor(DType::kFloat32, {256}, 1)));
  (void)state.Set("nu", Tree::Leaf(RandomTensor(DType::kFloat32, {256}, 2)));
  ASSERT_TRUE(checkpointer->Save(state, 0).value());
  // One zeros tensor used for both moments, as an optimizer's init might do.
  Tensor zeros = Tensor::Allocate(DType::kFloat32, {256}).value();
  Tree shared;
  (void)shared.Set("mu", Tree::Leaf(zeros));
  (void)shared.Set("nu", Tree::Leaf(zeros));
  Status status = checkpointer->Restore(&shared);
  EXPECT_TRUE(status.IsInvalidArgument()) << status.ToString();
  EXPECT_NE(status.message().find("aliased: 'mu' and 'nu'"), std::string::npos) << status.message();
  RestoreOptions options;
  options.donate = false;  // fresh buffers: fine
  ASSERT_OK(checkpointer->Restore(&shared, kLatestStep, options));
  EXPECT_TRUE(shared.ContentEquals(state));
}

TEST(CheckpointerTest, AnUnreadableManifestSpoilsOnlyItsOwnStep) {
  testing::TempDir dir;
  {
    auto checkpointer = OpenOrDie(dir.path(), KeepAll());
    for (int64_t step : {1, 2, 3}) {
      ASSERT_TRUE(checkpointer->Save(testing::MakeStepState(step, 1), step).value());
    }
  }
  std::string key(8, '\0');
  key[7] = 2;  // step 2, big-endian
  ASSERT_OK(testing::PutRawValue(dir.path(), "manifests", key, "not a manifest"));
  auto checkpointer = OpenOrDie(dir.path(), KeepAll());
  EXPECT_EQ(checkpointer->AllSteps(), (std::vector<int64_t>{1, 2, 3}));
  Result<Tree> broken = checkpointer->RestoreTree(2);
  EXPECT_TRUE(broken.status().IsCorruption()) << broken.status().ToString();
  EXPECT_NE(broken.status().message().find("step 2"), std::string::npos);
  for (int64_t step : {1, 3}) {
    Result<Tree> restored = checkpointer->RestoreTree(step);
    ASSERT_OK(restored.status());
    EXPECT_TRUE(restored->ContentEquals(testing::MakeStepState(step, 1)));
  }
  ASSERT_OK(checkpointer->Delete(2));
  EXPECT_EQ(checkpointer->AllSteps(), (std::vector<int64_t>{1, 3}));
}

TEST(CheckpointerTest, NoopIfMissingCoversAnyStepOfAnEmptyStore) {
  testing::TempDir dir;
  auto checkpointer = OpenOrDie(dir.path());
  Tree state = testing::MakeStepState(1, 1);
  const Tree before = ZeroedLike(state);
  Tree untouched = ZeroedLike(state);
  RestoreOptions options;
  options.noop_if_missing = true;
  ASSERT_OK(checkpointer->Restore(&untouched, 12, options));
  EXPECT_TRUE(untouched.ContentEquals(before));
}

}  // namespace
}  // namespace ckptdb

namespace ckptdb {
namespace {

TEST(CheckpointerTest, ANewStoreIsPrivateToItsOwnerUnlessAskedOtherwise) {
  testing::TempDir dir;
  namespace fs = std::filesystem;
  {
    auto checkpointer = OpenOrDie(dir.Sub("private"));
  }
  EXPECT_EQ(fs::status(dir.Sub("private")).permissions() & fs::perms::all, fs::perms::owner_all);
  CheckpointerOptions shared;
  shared.owner_only = false;
  { auto checkpointer = OpenOrDie(dir.Sub("shared"), shared); }
  EXPECT_NE(fs::status(dir.Sub("shared")).permissions() & fs::perms::others_read, fs::perms::none)
      << "with owner_only = false the umask (022 here) decides";
}

}  // namespace
}  // namespace ckptdb

namespace ckptdb {
namespace {

// The largest table file in `dir` (empty when there is none).
std::filesystem::path LargestTableFile(const std::string& dir) {
  namespace fs = std::filesystem;
  fs::path largest;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() == ".sst" &&
        (largest.empty() || entry.file_size() > fs::file_size(largest))) {
      largest = entry.path();
    }
  }
  return largest;
}

TEST(CheckpointerTest, ATruncatedChunkFileIsCorruptionNamingTheTensorNeverWrongData) {
  testing::TempDir dir;
  namespace fs = std::filesystem;
  CheckpointerOptions options = KeepAll();
  options.enable_async_checkpointing = false;
  Tree unique_state;  // a step whose chunks no other step shares
  (void)unique_state.Set("weights", Tree::Leaf(RandomTensor(DType::kUInt8, {3 << 20}, 77)));
  {
    auto checkpointer = OpenOrDie(dir.path(), options);
    ASSERT_TRUE(checkpointer->Save(testing::MakeStepState(1, 1), 1).value());
    ASSERT_TRUE(checkpointer->Save(unique_state, 2).value());
  }
  // The largest table file holds step 2's incompressible chunks.
  const std::filesystem::path largest = LargestTableFile(dir.path());
  ASSERT_FALSE(largest.empty());
  fs::resize_file(largest, fs::file_size(largest) / 2);
  for (bool read_only : {false, true}) {
    SCOPED_TRACE(read_only ? "reader" : "writer");
    CheckpointerOptions open_options = options;
    open_options.create = !read_only;
    auto opened = Checkpointer::Open(dir.path(), open_options);
    if (!opened.ok()) {
      // RocksDB may refuse the whole database: an error, never wrong data.
      EXPECT_TRUE(opened.status().IsCorruption() ||
                  opened.status().code() == Status::Code::kIOError)
          << opened.status().ToString();
      continue;
    }
    Result<Tree> damaged = (*opened)->RestoreTree(2);
    ASSERT_FALSE(damaged.ok());
    EXPECT_TRUE(damaged.status().IsCorruption()) << damaged.status().ToString();
    EXPECT_NE(damaged.status().message().find("tensor 'weights'"), std::string::npos)
        << damaged.status().ToString();
    Result<Tree> healthy = (*opened)->RestoreTree(1);
    ASSERT_OK(healthy.status());
    EXPECT_TRUE(healthy->ContentEquals(testing::MakeStepState(1, 1)));
  }
}

// A flipped byte in a chunk, or in the table block around it (its
// compression type, its count of restart points), must be an error naming
// the tensor, stop the reads ahead, and mark the store damaged, so that
// garbage collection refuses to run on it until it is verified and
// repaired. Restores once skipped the blocks' checksums, relying on the
// chunk digests: Debian's RocksDB then aborted the process on the block's
// damaged compression type (an assertion) instead of failing the read.
TEST(CheckpointerTest, AFlippedByteInAChunkOrItsBlockIsCorruptionAndStopsGarbageCollection) {
  namespace fs = std::filesystem;
  CheckpointerOptions options = KeepAll();
  options.enable_async_checkpointing = false;
  options.chunk_size_bytes = 1u << 20;
  // 24 incompressible chunks of 1 MiB: more than a restore reads ahead.
  const Tensor weights = RandomTensor(DType::kUInt8, {24 << 20}, 78);
  Tree unique_state;
  (void)unique_state.Set("weights", Tree::Leaf(weights));
  // The third chunk's last bytes: an incompressible chunk is stored as it
  // is, one per table block, so its block's restart array (one restart, at
  // 0) and compression type byte follow them.
  const std::string third_chunk_end(reinterpret_cast<const char*>(weights.data()) + (3 << 20) - 32,
                                    32);
  enum class Damage { kChunkByte, kBlockCompressionType, kBlockRestartCount };
  for (Damage damage :
       {Damage::kChunkByte, Damage::kBlockCompressionType, Damage::kBlockRestartCount}) {
    SCOPED_TRACE("damage " + std::to_string(static_cast<int>(damage)));
    testing::TempDir dir;
    {
      auto checkpointer = OpenOrDie(dir.path(), options);
      ASSERT_TRUE(checkpointer->Save(testing::MakeStepState(1, 1), 1).value());
      ASSERT_TRUE(checkpointer->Save(unique_state, 2).value());
      Result<Tree> intact = checkpointer->RestoreTree(2);
      ASSERT_OK(intact.status());
      EXPECT_TRUE(intact->ContentEquals(unique_state));
    }
    const std::filesystem::path largest = LargestTableFile(dir.path());
    ASSERT_FALSE(largest.empty());
    std::string bytes = testing::ReadBytes(largest.string());
    const size_t chunk_end = bytes.find(third_chunk_end);
    ASSERT_NE(chunk_end, std::string::npos);
    const size_t block_end = chunk_end + third_chunk_end.size() + 8;  // restart array
    ASSERT_EQ(bytes.substr(block_end - 8, 8), std::string("\0\0\0\0\1\0\0\0", 8));
    switch (damage) {
      case Damage::kChunkByte: bytes[chunk_end - 1000] ^= 0x40; break;
      case Damage::kBlockCompressionType: bytes[block_end] = 0x55; break;  // no such type
      case Damage::kBlockRestartCount: bytes[block_end - 4] = 0x7f; break;
    }
    testing::WriteBytes(largest.string(), bytes);
    std::map<std::string, std::string> tables_before;  // every table file, with its bytes
    for (const auto& entry : fs::directory_iterator(dir.path())) {
      if (entry.path().extension() == ".sst") {
        tables_before[entry.path()] = testing::ReadBytes(entry.path().string());
      }
    }

    auto checkpointer = OpenOrDie(dir.path(), options);
    Result<Tree> damaged = checkpointer->RestoreTree(2);
    ASSERT_FALSE(damaged.ok());
    EXPECT_TRUE(damaged.status().IsCorruption()) << damaged.status().ToString();
    EXPECT_NE(damaged.status().message().find("tensor 'weights'"), std::string::npos)
        << damaged.status().ToString();
    Result<Tree> healthy = checkpointer->RestoreTree(1);
    ASSERT_OK(healthy.status());
    EXPECT_TRUE(healthy->ContentEquals(testing::MakeStepState(1, 1)));
    Result<GcStats> refused = checkpointer->CollectGarbage();
    EXPECT_EQ(refused.status().code(), Status::Code::kFailedPrecondition)
        << refused.status().ToString();
    ASSERT_OK(checkpointer->Close());
    for (const auto& [path, table] : tables_before) {
      EXPECT_EQ(testing::ReadBytes(path), table) << path << " changed or was deleted";
    }
  }
}

}  // namespace
}  // namespace ckptdb

namespace ckptdb {
namespace {

// A fine-tuning state: a frozen backbone of two tensors and a trained head.
Tree FineTuningState() {
  Tree state;
  Tree* backbone = state.Set("backbone", Tree::Map()).value();
  (void)backbone->Set("a", Tree::Leaf(RandomTensor(DType::kFloat32, {300, 1000}, 1)));
  (void)backbone->Set("b", Tree::Leaf(RandomTensor(DType::kBFloat16, {7, 11}, 2)));
  (void)state.Set("head", Tree::Leaf(RandomTensor(DType::kFloat32, {1000}, 3)));
  (void)state.Set("step", Tree::Int(0));
  return state;
}

// Changes every byte of the tensor at `path`.
void Perturb(Tree& state, const std::string& path) {
  Tensor& tensor = state.Find(path)->tensor();
  for (uint64_t i = 0; i < tensor.byte_size(); ++i) {
    tensor.mutable_data()[i] = ~tensor.mutable_data()[i];
  }
}

SaveOptions AssumeUnchanged(std::vector<std::string> paths) {
  SaveOptions options;
  options.force = true;
  options.assume_unchanged = std::move(paths);
  return options;
}

// The proof that declared tensors are not read: bytes changed behind the
// declaration are not what the step stores (a broken promise keeps the
// previous save's values), while undeclared tensors are read as usual.
TEST(AssumeUnchangedTest, DeclaredTensorsAreNotReadAndReuseThePreviousChunks) {
  TempDir dir;
  auto checkpointer = OpenOrDie(dir.path(), KeepAll());
  Tree state = FineTuningState();
  const Tree first = testing::DeepCopy(state);
  ASSERT_TRUE(checkpointer->Save(state, 1).value());
  Perturb(state, "backbone/a");
  Perturb(state, "backbone/b");
  Perturb(state, "head");
  ASSERT_TRUE(checkpointer->Save(state, 2, AssumeUnchanged({"backbone"})).value());
  ASSERT_OK(checkpointer->WaitUntilFinished());
  Result<Tree> second = checkpointer->RestoreTree(2);
  ASSERT_OK(second.status());
  EXPECT_TRUE(second->Find("backbone")->ContentEquals(*first.Find("backbone")));
  EXPECT_TRUE(second->Find("head")->ContentEquals(*state.Find("head")));
  // Step 2 lists the very chunks of step 1 for the backbone.
  Result<StepMetadata> before = checkpointer->ItemMetadata(1);
  Result<StepMetadata> after = checkpointer->ItemMetadata(2);
  ASSERT_OK(before.status());
  ASSERT_OK(after.status());
  ASSERT_EQ(before->leaves.size(), after->leaves.size());
  for (size_t i = 0; i < after->leaves.size(); ++i) {
    if (after->leaves[i].path.rfind("backbone/", 0) != 0) continue;
    EXPECT_EQ(after->leaves[i].stored_bytes, before->leaves[i].stored_bytes);
    EXPECT_EQ(after->leaves[i].chunk_count, before->leaves[i].chunk_count);
  }
}

TEST(AssumeUnchangedTest, TensorsAreReadWhenThereIsNothingToReuse) {
  TempDir dir;
  Tree state = FineTuningState();
  {
    auto checkpointer = OpenOrDie(dir.path(), KeepAll());
    ASSERT_TRUE(checkpointer->Save(state, 1).value());
  }
  // The first save after Open has no previous save to reuse.
  auto checkpointer = OpenOrDie(dir.path(), KeepAll());
  Perturb(state, "backbone/a");
  ASSERT_TRUE(checkpointer->Save(state, 2, AssumeUnchanged({"backbone"})).value());
  ASSERT_OK(checkpointer->WaitUntilFinished());
  EXPECT_TRUE(checkpointer->RestoreTree(2)->ContentEquals(state));

  // A tensor whose shape changed is read.
  Tree reshaped = testing::DeepCopy(state);
  (void)reshaped.Find("backbone")->Set("b", Tree::Leaf(RandomTensor(DType::kBFloat16, {77}, 4)));
  ASSERT_TRUE(checkpointer->Save(reshaped, 3, AssumeUnchanged({"backbone/b"})).value());
  ASSERT_OK(checkpointer->WaitUntilFinished());
  EXPECT_TRUE(checkpointer->RestoreTree(3)->ContentEquals(reshaped));

  // A tensor whose previous chunks were collected is read.
  Perturb(reshaped, "backbone/b");
  ASSERT_TRUE(checkpointer->Save(reshaped, 4).value());
  ASSERT_OK(checkpointer->WaitUntilFinished());
  ASSERT_OK(checkpointer->Delete(4));
  ASSERT_OK(checkpointer->CollectGarbage().status());
  Perturb(reshaped, "backbone/b");
  ASSERT_TRUE(checkpointer->Save(reshaped, 5, AssumeUnchanged({"backbone/b"})).value());
  ASSERT_OK(checkpointer->WaitUntilFinished());
  EXPECT_TRUE(checkpointer->RestoreTree(5)->ContentEquals(reshaped));
}

TEST(AssumeUnchangedTest, APathTheStateLacksIsRefusedAndNothingIsSaved) {
  TempDir dir;
  auto checkpointer = OpenOrDie(dir.path(), KeepAll());
  Tree state = FineTuningState();
  ASSERT_TRUE(checkpointer->Save(state, 1).value());
  Result<bool> saved = checkpointer->Save(state, 2, AssumeUnchanged({"backbone", "backbon/a"}));
  ASSERT_FALSE(saved.ok());
  EXPECT_EQ(saved.status().code(), Status::Code::kInvalidArgument);
  EXPECT_NE(saved.status().message().find("'backbon/a'"), std::string::npos)
      << saved.status().ToString();
  EXPECT_EQ(checkpointer->AllSteps(), std::vector<int64_t>{1});
}

TEST(AssumeUnchangedTest, TheRootCoversEveryTensorAndSavesNoNewChunk) {
  TempDir dir;
  auto checkpointer = OpenOrDie(dir.path(), KeepAll());
  Tree state = FineTuningState();
  ASSERT_TRUE(checkpointer->Save(state, 1).value());
  ASSERT_OK(checkpointer->WaitUntilFinished());
  const Tree first = testing::DeepCopy(state);
  Perturb(state, "head");
  (void)state.Set("step", Tree::Int(2));  // scalars are always stored as given
  ASSERT_TRUE(checkpointer->Save(state, 2, AssumeUnchanged({""})).value());
  ASSERT_OK(checkpointer->WaitUntilFinished());
  Result<Tree> second = checkpointer->RestoreTree(2);
  ASSERT_OK(second.status());
  EXPECT_TRUE(second->Find("head")->ContentEquals(*first.Find("head")));
  EXPECT_EQ(second->Find("step")->int_value(), 2);
}

// ---- Delta encoding ----

// A float32 state as training moves it: every value a little each step.
Tree TrainingStep(int step) {
  Tensor weights = Tensor::Allocate(DType::kFloat32, {256 << 10}).value();
  std::span<float> values = weights.MutableValues<float>().value();
  for (size_t i = 0; i < values.size(); ++i) {
    values[i] = 0.02f * std::sin(float(i) * 0.37f) + 1e-6f * float(step) * std::cos(float(i));
  }
  Tree state;
  EXPECT_OK(state.SetPath("params/w", Tree::Leaf(std::move(weights))));
  EXPECT_OK(state.SetPath("step", Tree::Int(step)));
  return state;
}

// Retention deletes the manifests of the steps whose chunks later steps'
// deltas are based on, and GC runs after each save: every retained step
// still restores bit-exact and verifies clean, across a reopen (which
// starts the chains afresh), and the store is smaller than without deltas.
TEST(DeltaEncodingTest, RetentionAndGcKeepEveryRetainedStepRestorable) {
  uint64_t stored_bytes[2] = {0, 0};
  for (uint32_t chain : {0u, 3u}) {
    SCOPED_TRACE("max_delta_chain " + std::to_string(chain));
    TempDir dir;
    CheckpointerOptions options;
    options.max_delta_chain = chain;
    options.max_to_keep = 2;
    options.chunk_size_bytes = 64 << 10;
    std::map<int, Tree> saved;
    // Reopened after step 5: the process's copies of the last save are gone.
    for (int first : {1, 6}) {
      auto checkpointer = OpenOrDie(dir.path(), options);
      for (int step = first; step < first + 5; ++step) {
        saved[step] = TrainingStep(step);
        ASSERT_TRUE(checkpointer->Save(saved[step], step).value());
        ASSERT_OK(checkpointer->WaitUntilFinished());
        for (int64_t kept : checkpointer->AllSteps()) {
          Result<Tree> restored = checkpointer->RestoreTree(kept);
          ASSERT_OK(restored.status());
          EXPECT_TRUE(restored->ContentEquals(saved[static_cast<int>(kept)])) << "step " << kept;
        }
      }
      ASSERT_OK(checkpointer->CollectGarbage().status());
    }
    auto checkpointer = OpenOrDie(dir.path(), options);
    Result<StepMetadata> latest = checkpointer->ItemMetadata(9);  // a delta of depth 3
    ASSERT_OK(latest.status());
    for (const LeafMetadata& leaf : latest->leaves) stored_bytes[chain != 0] += leaf.stored_bytes;
    checkpointer.reset();
    auto store = Store::Open(dir.path(), Store::Mode::kReadOnly).value();
    Result<VerifyReport> report = VerifyStore(*store, std::nullopt, nullptr);
    ASSERT_OK(report.status());
    EXPECT_TRUE(report->ok()) << (report->problems.empty() ? "" : report->problems.front());
    EXPECT_EQ(report->steps_checked, 2u);
  }
  EXPECT_LT(stored_bytes[1], stored_bytes[0] * 3 / 4);
}

// Delta chunks need a store of format 3, which earlier builds cannot read:
// an older store refuses the option for writing, and reads as before.
TEST(DeltaEncodingTest, AStoreOfAnEarlierFormatRefusesDeltaEncodingForWriting) {
  TempDir dir;
  {
    auto checkpointer = OpenOrDie(dir.path());
    ASSERT_TRUE(checkpointer->Save(TrainingStep(1), 1).value());
  }
  std::string version(4, '\0');
  version[0] = static_cast<char>(kFirstDeltaStoreFormatVersion - 1);
  ASSERT_OK(testing::PutRawValue(dir.path(), "default", "ckptdb.format_version", version));
  CheckpointerOptions options;
  options.max_delta_chain = 2;
  auto refused = Checkpointer::Open(dir.path(), options);
  EXPECT_EQ(refused.status().code(), Status::Code::kFailedPrecondition) << refused.status().ToString();
  EXPECT_NE(refused.status().message().find("max_delta_chain"), std::string::npos);
  options.create = false;
  auto reader = Checkpointer::Open(dir.path(), options);
  ASSERT_OK(reader.status());
  Result<Tree> restored = (*reader)->RestoreTree(1);
  ASSERT_OK(restored.status());
  EXPECT_TRUE(restored->ContentEquals(TrainingStep(1)));
}

}  // namespace
}  // namespace ckptdb
