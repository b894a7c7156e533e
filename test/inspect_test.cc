// End-to-end tests of the ckpt-inspect binary (doc/ckpt-inspect.md): stores
// are made with the public API, the built tool is run on them as a separate
// process, and its exit code, human output and --json output are checked.

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <random>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "chunk_digest.h"
#include "ckptdb/checkpointer.h"
#include "coding.h"
#include "store.h"
#include "test_util.h"

namespace ckptdb {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using testing::MakeStepState;
using testing::TempDir;

// ---- Running the tool ----

// testing::TestProcessPath() is <builddir>/test/test_process; the tool is
// <builddir>/tools/ckpt-inspect.
std::string InspectBinary() {
  const fs::path build_dir = fs::path(testing::TestProcessPath()).parent_path().parent_path();
  return (build_dir / "tools" / "ckpt-inspect").string();
}

std::string ShellQuote(const std::string& text) {
  std::string quoted = "'";
  for (char c : text) {
    if (c == '\'') {
      quoted += "'\\''";
    } else {
      quoted += c;
    }
  }
  return quoted + "'";
}

std::string ReadFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  file.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

struct ToolRun {
  int exit_code = -1;
  std::string out;
  std::string err;
};

std::string Describe(const ToolRun& run) {
  return "exit code " + std::to_string(run.exit_code) + "\n--- stdout:\n" + run.out +
         "--- stderr:\n" + run.err;
}

// Runs ckpt-inspect with `args` (in `cwd` when given) and captures its
// standard output and error through files.
ToolRun RunTool(const std::vector<std::string>& args, const std::string& cwd = "") {
  TempDir capture;
  std::string command;
  if (!cwd.empty()) command += "cd " + ShellQuote(cwd) + " && ";
  command += "exec " + ShellQuote(InspectBinary());
  for (const std::string& arg : args) command += " " + ShellQuote(arg);
  command += " > " + ShellQuote(capture.Sub("out")) + " 2> " + ShellQuote(capture.Sub("err"));
  ToolRun run;
  run.exit_code = testing::RunProcess({"/bin/sh", "-c", command});
  run.out = ReadFile(capture.Sub("out"));
  run.err = ReadFile(capture.Sub("err"));
  return run;
}

Json ParseJson(const std::string& text) {
  Json json = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  EXPECT_TRUE(json.is_object()) << "not a JSON object:\n" << text;
  return json;
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

bool StartsWith(const std::string& text, const std::string& prefix) {
  return text.rfind(prefix, 0) == 0;
}

// ---- The human form's formats (doc/ckpt-inspect.md, section 3) ----

std::string HumanBytes(uint64_t bytes) {
  if (bytes < 1024) return std::to_string(bytes) + " B";
  static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes) / 1024;
  size_t unit = 0;
  while (value >= 1024 && unit + 1 < std::size(kUnits)) {
    value /= 1024;
    ++unit;
  }
  char text[32];
  std::snprintf(text, sizeof(text), "%.1f %s", value, kUnits[unit]);
  return text;
}

std::string HumanShape(const std::vector<int64_t>& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) text += ", ";
    text += std::to_string(shape[i]);
  }
  return text + "]";
}

std::string Printf(const char* format, double value) {
  char text[64];
  std::snprintf(text, sizeof(text), format, value);
  return text;
}

std::string Utc(int64_t unix_ns) {
  const std::time_t seconds = static_cast<std::time_t>(unix_ns / 1000000000);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &utc);
  return text;
}

int64_t UnixNanos(std::chrono::system_clock::time_point time) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(time.time_since_epoch()).count();
}

// `text` right-aligned in `width` columns.
std::string RightAligned(const std::string& text, size_t width) {
  return std::string(width > text.size() ? width - text.size() : 0, ' ') + text;
}

// Checks that `row` holds `cell` right-aligned so that it ends at column
// `end` (exclusive), with a blank before it.
void ExpectCellEndsAt(const std::string& row, size_t end, const std::string& cell) {
  ASSERT_GE(end, cell.size() + 1) << row;
  ASSERT_GE(row.size(), end) << row;
  EXPECT_EQ(row.substr(end - cell.size() - 1, cell.size() + 1), " " + cell)
      << "'" << cell << "' should end at column " << end << " of:\n"
      << row;
  if (row.size() > end) {
    EXPECT_EQ(row[end], ' ') << row;
  }
}

// ---- Stores ----

constexpr size_t kStateMegabytes = 1;

// MakeStepState(step, 1): params/frozen_embedding (the same at every step),
// params/kernel (different at every step), params/bias, layers/{0,1}/scale,
// and the scalars step, learning_rate and name.
Tree StateOf(int64_t step) { return MakeStepState(step, kStateMegabytes); }

constexpr size_t kTensorsPerState = 5;
constexpr size_t kLeavesPerState = 8;

CheckpointerOptions KeepAll() {
  CheckpointerOptions options;
  options.max_to_keep = std::nullopt;
  return options;
}

std::unique_ptr<Checkpointer> OpenOrDie(const std::string& dir,
                                        CheckpointerOptions options = KeepAll()) {
  auto opened = Checkpointer::Open(dir, std::move(options));
  EXPECT_TRUE(opened.ok()) << opened.status().ToString();
  return opened.ok() ? std::move(*opened) : nullptr;
}

std::unique_ptr<Checkpointer> OpenReadOnly(const std::string& dir) {
  CheckpointerOptions options;
  options.create = false;
  return OpenOrDie(dir, options);
}

double LossOf(int64_t step) { return 0.25 * static_cast<double>(step); }
constexpr double kAccuracy = 0.9;

SaveOptions SaveOptionsFor(int64_t step) {
  SaveOptions save;
  save.metrics = {{"eval/accuracy", kAccuracy}, {"loss", LossOf(step)}};
  save.user_metadata = {{"config", "mlp"}};
  return save;
}

// Saves StateOf(step) for each of `steps` in the store in `dir` and closes it.
void MakeStore(const std::string& dir, const std::vector<int64_t>& steps,
               CheckpointerOptions options = KeepAll()) {
  auto checkpointer = OpenOrDie(dir, std::move(options));
  ASSERT_NE(checkpointer, nullptr);
  for (int64_t step : steps) {
    Result<bool> saved = checkpointer->Save(StateOf(step), step, SaveOptionsFor(step));
    ASSERT_OK(saved.status());
    ASSERT_TRUE(*saved) << "step " << step;
  }
  ASSERT_OK(checkpointer->Close());
}

StepMetadata MetadataOf(const std::string& dir, int64_t step) {
  auto reader = OpenReadOnly(dir);
  if (reader == nullptr) return {};
  Result<StepMetadata> metadata = reader->ItemMetadata(step);
  EXPECT_TRUE(metadata.ok()) << metadata.status().ToString();
  return metadata.ok() ? *metadata : StepMetadata();
}

uint64_t StoredBytesOf(const StepMetadata& metadata) {
  uint64_t total = 0;
  for (const LeafMetadata& leaf : metadata.leaves) total += leaf.stored_bytes;
  return total;
}

std::vector<int64_t> StepsOf(const std::string& dir) {
  auto reader = OpenReadOnly(dir);
  return reader == nullptr ? std::vector<int64_t>() : reader->AllSteps();
}

std::vector<IndexEntry> IndexEntriesOf(const std::string& dir) {
  std::vector<IndexEntry> entries;
  auto store = Store::Open(dir, Store::Mode::kReadOnly);
  EXPECT_TRUE(store.ok()) << store.status().ToString();
  if (!store.ok()) return entries;
  EXPECT_OK((*store)->ForEachIndexEntry([&](const IndexEntry& entry) {
    entries.push_back(entry);
    return Status::OK();
  }));
  return entries;
}

Json StatsOf(const std::string& dir) {
  ToolRun run = RunTool({"--json", "stats", dir});
  EXPECT_EQ(run.exit_code, 0) << Describe(run);
  return ParseJson(run.out);
}

// Every file and directory under `root`, except what is inside `skip`.
std::set<std::string> EntriesUnder(const std::string& root, const std::string& skip) {
  std::set<std::string> entries;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator();
       ++it) {
    if (it->path() == fs::path(skip)) {
      it.disable_recursion_pending();
      continue;
    }
    entries.insert(it->path().string());
  }
  return entries;
}

TEST(InspectTest, TheToolIsBuiltBesideTheTests) {
  EXPECT_TRUE(fs::exists(InspectBinary())) << InspectBinary();
}

// ---- list ----

TEST(InspectListTest, HumanFormHasAHeaderAndOneAlignedRowPerStep) {
  TempDir dir;
  const std::string store = dir.Sub("store");
  ASSERT_NO_FATAL_FAILURE(MakeStore(store, {1, 2, 10}));
  ToolRun run = RunTool({"list", store});
  ASSERT_EQ(run.exit_code, 0) << Describe(run);
  EXPECT_EQ(run.err, "");
  const std::vector<std::string> lines = Lines(run.out);
  ASSERT_EQ(lines.size(), 4u) << run.out;

  const std::string& header = lines[0];
  for (const char* column :
       {"STEP", "COMMITTED (UTC)", "LOGICAL", "STORED", "TENSORS", "METRICS"}) {
    ASSERT_TRUE(Contains(header, column)) << column << " not in: " << header;
  }
  EXPECT_TRUE(StartsWith(header, "STEP  COMMITTED (UTC)")) << header;
  // Numbers are right-aligned under the end of their header; text columns
  // start under the start of theirs.
  const size_t step_end = header.find("STEP") + std::strlen("STEP");
  const size_t committed = header.find("COMMITTED (UTC)");
  const size_t logical_end = header.find("LOGICAL") + std::strlen("LOGICAL");
  const size_t stored_end = header.find("STORED") + std::strlen("STORED");
  const size_t tensors_end = header.find("TENSORS") + std::strlen("TENSORS");
  const size_t metrics = header.find("METRICS");
  const std::regex utc(R"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z)");

  const int64_t steps[] = {1, 2, 10};
  for (size_t i = 0; i < std::size(steps); ++i) {
    const std::string& row = lines[i + 1];
    SCOPED_TRACE(row);
    const StepMetadata metadata = MetadataOf(store, steps[i]);
    ASSERT_GT(row.size(), metrics);
    EXPECT_EQ(row.substr(0, step_end), RightAligned(std::to_string(steps[i]), step_end));
    EXPECT_TRUE(std::regex_match(row.substr(committed, 20), utc));
    EXPECT_EQ(row.substr(committed, 20), Utc(UnixNanos(metadata.commit_time)));
    ExpectCellEndsAt(row, logical_end, HumanBytes(metadata.logical_bytes));
    ExpectCellEndsAt(row, stored_end, HumanBytes(StoredBytesOf(metadata)));
    ExpectCellEndsAt(row, tensors_end, std::to_string(kTensorsPerState));
    EXPECT_EQ(row.substr(metrics), "eval/accuracy=" + Printf("%.6g", kAccuracy) +
                                       " loss=" + Printf("%.6g", LossOf(steps[i])));
  }
}

TEST(InspectListTest, JsonHasEveryDocumentedFieldWithTheStoredValues) {
  TempDir dir;
  const std::string store = dir.Sub("store");
  ASSERT_NO_FATAL_FAILURE(MakeStore(store, {1, 2, 10}));
  ToolRun run = RunTool({"--json", "list", store});
  ASSERT_EQ(run.exit_code, 0) << Describe(run);
  EXPECT_EQ(run.err, "");
  const Json json = ParseJson(run.out);
  ASSERT_TRUE(json.is_object());
  EXPECT_EQ(json.at("workdir").get<std::string>(), store);
  const Json& steps = json.at("steps");
  ASSERT_TRUE(steps.is_array());
  ASSERT_EQ(steps.size(), 3u);

  auto reader = OpenReadOnly(store);
  ASSERT_NE(reader, nullptr);
  const int64_t expected_steps[] = {1, 2, 10};
  for (size_t i = 0; i < steps.size(); ++i) {
    const Json& entry = steps[i];
    const int64_t step = expected_steps[i];
    SCOPED_TRACE("step " + std::to_string(step));
    Result<StepMetadata> metadata = reader->ItemMetadata(step);
    ASSERT_OK(metadata.status());
    EXPECT_EQ(entry.at("step").get<int64_t>(), step);
    EXPECT_EQ(entry.at("logical_bytes").get<uint64_t>(), metadata->logical_bytes);
    EXPECT_EQ(entry.at("stored_bytes").get<uint64_t>(), StoredBytesOf(*metadata));
    EXPECT_EQ(entry.at("tensors").get<uint64_t>(), kTensorsPerState);
    EXPECT_EQ(entry.at("commit_time_ns").get<int64_t>(), UnixNanos(metadata->commit_time));
    EXPECT_EQ(entry.at("commit_time").get<std::string>(),
              Utc(entry.at("commit_time_ns").get<int64_t>()));
    const Json& metrics = entry.at("metrics");
    ASSERT_TRUE(metrics.is_object());
    EXPECT_EQ(metrics.size(), 2u);
    EXPECT_DOUBLE_EQ(metrics.at("loss").get<double>(), LossOf(step));
    EXPECT_DOUBLE_EQ(metrics.at("eval/accuracy").get<double>(), kAccuracy);
  }

  // --json may come anywhere on the line.
  ToolRun after = RunTool({"list", store, "--json"});
  ASSERT_EQ(after.exit_code, 0) << Describe(after);
  EXPECT_EQ(ParseJson(after.out), json);
}

TEST(InspectListTest, AnEmptyStoreHasNoStepsAndAMissingStoreIsAnError) {
  TempDir dir;
  const std::string store = dir.Sub("store");
  {
    auto checkpointer = OpenOrDie(store);
    ASSERT_NE(checkpointer, nullptr);
    ASSERT_OK(checkpointer->Close());
  }
  ToolRun human = RunTool({"list", store});
  ASSERT_EQ(human.exit_code, 0) << Describe(human);
  EXPECT_EQ(human.out, "no checkpoint in " + store + "\n");
  ToolRun json = RunTool({"--json", "list", store});
  ASSERT_EQ(json.exit_code, 0) << Describe(json);
  EXPECT_EQ(ParseJson(json.out).at("steps"), Json::array());

  const std::string absent = dir.Sub("absent");
  ToolRun missing = RunTool({"list", absent});
  EXPECT_EQ(missing.exit_code, 1) << Describe(missing);
  EXPECT_EQ(missing.out, "");
  EXPECT_TRUE(Contains(missing.err, "no ckptdb store in " + absent)) << missing.err;
  EXPECT_FALSE(fs::exists(absent)) << "a read-only command must create nothing";
}

// ---- show ----

TEST(InspectShowTest, HumanFormListsEveryLeafWithKindDtypeAndShape) {
  TempDir dir;
  const std::string store = dir.Sub("store");
  ASSERT_NO_FATAL_FAILURE(MakeStore(store, {1, 2, 3}));
  ToolRun run = RunTool({"show", store, "2"});
  ASSERT_EQ(run.exit_code, 0) << Describe(run);
  EXPECT_EQ(run.err, "");
  const std::vector<std::string> lines = Lines(run.out);
  ASSERT_FALSE(lines.empty());
  EXPECT_TRUE(StartsWith(lines[0], "step 2 of " + store + ", committed ")) << lines[0];
  EXPECT_TRUE(Contains(run.out, "\nmetric loss = 0.5\n")) << run.out;
  EXPECT_TRUE(Contains(run.out, "\nmetric eval/accuracy = 0.9\n")) << run.out;
  EXPECT_TRUE(Contains(run.out, "\nmetadata config = mlp\n")) << run.out;

  auto header_line = std::find_if(lines.begin(), lines.end(), [](const std::string& line) {
    return StartsWith(line, "PATH ");
  });
  ASSERT_NE(header_line, lines.end()) << run.out;
  const std::string header = *header_line;
  const size_t kind = header.find("KIND");
  const size_t dtype = header.find("DTYPE");
  const size_t value = header.find("SHAPE | VALUE");
  const size_t logical_end = header.find("LOGICAL") + std::strlen("LOGICAL");
  const size_t stored_end = header.find("STORED") + std::strlen("STORED");
  const size_t chunks_end = header.find("CHUNKS") + std::strlen("CHUNKS");
  const size_t shared_end = header.find("SHARED") + std::strlen("SHARED");
  for (size_t column : {kind, dtype, value}) ASSERT_NE(column, std::string::npos) << header;

  // The rows after the header, by their first word.
  std::map<std::string, std::string> rows;
  for (auto it = header_line + 1; it != lines.end(); ++it) {
    rows[it->substr(0, it->find(' '))] = *it;
  }
  const StepMetadata metadata = MetadataOf(store, 2);
  ASSERT_EQ(metadata.leaves.size(), kLeavesPerState);
  const Tree state = StateOf(2);
  for (const LeafMetadata& leaf : metadata.leaves) {
    SCOPED_TRACE(leaf.path);
    ASSERT_EQ(rows.count(leaf.path), 1u) << run.out;
    const std::string& row = rows[leaf.path];
    const std::string kind_name(KindName(leaf.kind));
    EXPECT_EQ(row.substr(kind, kind_name.size() + 1), kind_name + " ") << row;
    if (leaf.kind == Tree::Kind::kTensor) {
      const std::string dtype_name(DTypeName(leaf.dtype));
      EXPECT_EQ(row.substr(dtype, dtype_name.size() + 1), dtype_name + " ") << row;
      const std::string shape = HumanShape(leaf.shape);
      EXPECT_EQ(row.substr(value, shape.size() + 1), shape + " ") << row;
      ExpectCellEndsAt(row, logical_end, HumanBytes(leaf.logical_bytes));
      ExpectCellEndsAt(row, stored_end, HumanBytes(leaf.stored_bytes));
      ExpectCellEndsAt(row, chunks_end, std::to_string(leaf.chunk_count));
      EXPECT_EQ(row.size(), shared_end) << "SHARED is the last column: " << row;
    }
  }
  EXPECT_EQ(rows["params/kernel"].substr(dtype, 8), "float32 ");
  EXPECT_EQ(rows["params/kernel"].substr(value, 10), "[512, 256]");
  EXPECT_EQ(rows["params/bias"].substr(dtype, 9), "bfloat16 ");
  EXPECT_EQ(rows["params/bias"].substr(value, 5), "[64] ");
  // The frozen part's chunk is also used by steps 1 and 3; the kernel's by
  // no other step.
  EXPECT_EQ(rows["params/frozen_embedding"].back(), '1') << rows["params/frozen_embedding"];
  EXPECT_EQ(rows["params/kernel"].back(), '0') << rows["params/kernel"];
  // Scalars show their values.
  EXPECT_EQ(rows["step"].substr(value), "2");
  EXPECT_EQ(rows["name"].substr(value), "\"run-2\"");
  EXPECT_EQ(rows["learning_rate"].substr(value),
            Printf("%.17g", state.Find("learning_rate")->float_value()));
  ASSERT_EQ(rows.count("total"), 1u) << run.out;
  ExpectCellEndsAt(rows["total"], logical_end, HumanBytes(metadata.logical_bytes));
  EXPECT_TRUE(StartsWith(lines.back(), "(STORED:")) << lines.back();
}

TEST(InspectShowTest, JsonDescribesEveryLeaf) {
  TempDir dir;
  const std::string store = dir.Sub("store");
  ASSERT_NO_FATAL_FAILURE(MakeStore(store, {1, 2, 3}));
  ToolRun run = RunTool({"--json", "show", store, "2"});
  ASSERT_EQ(run.exit_code, 0) << Describe(run);
  const Json json = ParseJson(run.out);
  ASSERT_TRUE(json.is_object());
  // Printed as it is made, leaf by leaf, in the layout of nlohmann's
  // dump(2) (which printed the whole document before).
  EXPECT_EQ(nlohmann::ordered_json::parse(run.out).dump(2) + "\n", run.out);
  const StepMetadata metadata = MetadataOf(store, 2);
  EXPECT_EQ(json.at("workdir").get<std::string>(), store);
  EXPECT_EQ(json.at("step").get<int64_t>(), 2);
  EXPECT_EQ(json.at("commit_time_ns").get<int64_t>(), UnixNanos(metadata.commit_time));
  EXPECT_EQ(json.at("commit_time").get<std::string>(), Utc(UnixNanos(metadata.commit_time)));
  EXPECT_EQ(json.at("logical_bytes").get<uint64_t>(), metadata.logical_bytes);
  EXPECT_EQ(json.at("stored_bytes").get<uint64_t>(), StoredBytesOf(metadata));
  EXPECT_DOUBLE_EQ(json.at("metrics").at("loss").get<double>(), LossOf(2));
  EXPECT_EQ(json.at("user_metadata"), Json::object({{"config", "mlp"}}));

  const Json& leaves = json.at("leaves");
  ASSERT_TRUE(leaves.is_array());
  ASSERT_EQ(leaves.size(), metadata.leaves.size());
  std::map<std::string, Json> by_path;
  for (size_t i = 0; i < leaves.size(); ++i) {
    const LeafMetadata& expected = metadata.leaves[i];
    const Json& leaf = leaves[i];
    SCOPED_TRACE(expected.path);
    EXPECT_EQ(leaf.at("path").get<std::string>(), expected.path) << "leaves are in pre-order";
    EXPECT_EQ(leaf.at("kind").get<std::string>(), std::string(KindName(expected.kind)));
    if (expected.kind == Tree::Kind::kTensor) {
      EXPECT_EQ(leaf.at("dtype").get<std::string>(), std::string(DTypeName(expected.dtype)));
      EXPECT_EQ(leaf.at("shape").get<std::vector<int64_t>>(), expected.shape);
      EXPECT_EQ(leaf.at("logical_bytes").get<uint64_t>(), expected.logical_bytes);
      EXPECT_EQ(leaf.at("stored_bytes").get<uint64_t>(), expected.stored_bytes);
      EXPECT_EQ(leaf.at("chunks").get<uint64_t>(), expected.chunk_count);
      EXPECT_TRUE(leaf.at("shared_chunks").is_number_unsigned());
    } else {
      EXPECT_TRUE(leaf.contains("value"));
    }
    by_path[expected.path] = leaf;
  }
  EXPECT_EQ(by_path["params/kernel"].at("dtype"), "float32");
  EXPECT_EQ(by_path["params/kernel"].at("shape"), Json::array({512, 256}));
  EXPECT_EQ(by_path["params/kernel"].at("shared_chunks"), 0);
  EXPECT_EQ(by_path["params/frozen_embedding"].at("shared_chunks"), 1);
  EXPECT_EQ(by_path["params/bias"].at("dtype"), "bfloat16");
  EXPECT_EQ(by_path["params/bias"].at("shape"), Json::array({64}));
  EXPECT_EQ(by_path["layers/1/scale"].at("dtype"), "int32");
  EXPECT_TRUE(by_path["step"].at("value").is_number_integer());
  EXPECT_EQ(by_path["step"].at("value").get<int64_t>(), 2);
  EXPECT_EQ(by_path["name"].at("value"), "run-2");
  EXPECT_DOUBLE_EQ(by_path["learning_rate"].at("value").get<double>(),
                   StateOf(2).Find("learning_rate")->float_value());
}

TEST(InspectShowTest, LatestIsTheLargestStep) {
  TempDir dir;
  const std::string store = dir.Sub("store");
  ASSERT_NO_FATAL_FAILURE(MakeStore(store, {1, 2, 3}));
  ToolRun human = RunTool({"show", store, "latest"});
  ASSERT_EQ(human.exit_code, 0) << Describe(human);
  EXPECT_TRUE(StartsWith(human.out, "step 3 of " + store + ", committed ")) << human.out;
  ToolRun json = RunTool({"--json", "show", store, "latest"});
  ASSERT_EQ(json.exit_code, 0) << Describe(json);
  EXPECT_EQ(ParseJson(json.out).at("step"), 3);
}

TEST(InspectShowTest, AMissingStepExitsOneAndNamesIt) {
  TempDir dir;
  const std::string store = dir.Sub("store");
  ASSERT_NO_FATAL_FAILURE(MakeStore(store, {1, 2, 3}));
  for (bool json : {false, true}) {
    std::vector<std::string> args = {"show", store, "7"};
    if (json) args.insert(args.begin(), "--json");
    ToolRun run = RunTool(args);
    EXPECT_EQ(run.exit_code, 1) << Describe(run);
    EXPECT_EQ(run.out, "");
    EXPECT_TRUE(Contains(run.err, "step 7")) << run.err;
    EXPECT_TRUE(Contains(run.err, "NotFound")) << run.err;
  }
}

TEST(InspectShowTest, AStepThatIsNotANumberIsAUsageError) {
  TempDir dir;
  const std::string store = dir.Sub("store");
  ASSERT_NO_FATAL_FAILURE(MakeStore(store, {1}));
  for (const std::string step : {"abc", "1.5", "0x10", "2abc", ""}) {
    ToolRun run = RunTool({"show", store, step});
    EXPECT_EQ(run.exit_code, 2) << step << ": " << Describe(run);
    EXPECT_EQ(run.out, "");
    EXPECT_TRUE(Contains(run.err, "'" + step + "' is not a step")) << run.err;
  }
}

// ---- stats ----

// StateOf(step) with a zero-filled tensor: well compressible, and the same
// bytes at every step.
Tree CompressibleStateOf(int64_t step) {
  Tree state = StateOf(step);
  (void)state.Set("zeros", Tree::Leaf(Tensor::Allocate(DType::kFloat32, {64 * 1024}).value()));
  return state;
}

TEST(InspectStatsTest, JsonFiguresAreConsistent) {
  TempDir dir;
  const std::string store = dir.Sub("store");
  uint64_t logical = 0;
  uint64_t referenced_stored = 0;
  {
    auto checkpointer = OpenOrDie(store);
    ASSERT_NE(checkpointer, nullptr);
    for (int64_t step : {1, 2, 3}) {
      ASSERT_TRUE(checkpointer->Save(CompressibleStateOf(step), step).value());
      Result<StepMetadata> metadata = checkpointer->ItemMetadata(step);
      ASSERT_OK(metadata.status());
      logical += metadata->logical_bytes;
      referenced_stored += StoredBytesOf(*metadata);
    }
    ASSERT_OK(checkpointer->Close());
  }
  uint64_t index_raw = 0;
  uint64_t index_stored = 0;
  const std::vector<IndexEntry> entries = IndexEntriesOf(store);
  for (const IndexEntry& entry : entries) {
    index_raw += entry.location.raw_size;
    index_stored += entry.location.stored_size;
  }

  ToolRun run = RunTool({"--json", "stats", store});
  ASSERT_EQ(run.exit_code, 0) << Describe(run);
  EXPECT_EQ(run.err, "");
  const Json json = ParseJson(run.out);
  ASSERT_TRUE(json.is_object());
  EXPECT_EQ(json.at("workdir").get<std::string>(), store);
  EXPECT_EQ(json.at("steps").get<uint64_t>(), 3u);
  EXPECT_EQ(json.at("logical_bytes").get<uint64_t>(), logical);
  EXPECT_EQ(json.at("chunks").get<uint64_t>(), entries.size());
  const uint64_t raw = json.at("chunks_raw_bytes").get<uint64_t>();
  const uint64_t stored = json.at("chunks_stored_bytes").get<uint64_t>();
  EXPECT_EQ(raw, index_raw);
  EXPECT_EQ(stored, index_stored);
  EXPECT_LE(stored, raw) << "the zeros and the floats' exponents compress";
  EXPECT_LT(raw, logical) << "the frozen part and the zeros are stored once";
  EXPECT_EQ(json.at("referenced_stored_bytes").get<uint64_t>(), referenced_stored);
  EXPECT_NEAR(json.at("compression_ratio").get<double>(),
              static_cast<double>(raw) / static_cast<double>(stored), 1e-9);
  EXPECT_NEAR(json.at("dedup_ratio").get<double>(),
              static_cast<double>(logical) / static_cast<double>(raw), 1e-9);
  EXPECT_GT(json.at("dedup_ratio").get<double>(), 1.0);
  EXPECT_EQ(json.at("garbage_chunks").get<uint64_t>(), 0u);
  EXPECT_EQ(json.at("garbage_bytes").get<uint64_t>(), 0u);
  const uint64_t chunk_files = json.at("chunk_file_bytes").get<uint64_t>();
  const uint64_t disk = json.at("disk_bytes").get<uint64_t>();
  EXPECT_GE(chunk_files, stored);
  EXPECT_GE(disk, chunk_files);
  EXPECT_EQ(disk, testing::DirectoryBytes(store));
  EXPECT_NEAR(json.at("logical_over_disk").get<double>(),
              static_cast<double>(logical) / static_cast<double>(disk), 1e-9);
}

TEST(InspectStatsTest, ADeletedStepLeavesGarbageWhenGcIsOff) {
  TempDir dir;
  const std::string store = dir.Sub("store");
  CheckpointerOptions options = KeepAll();
  options.gc_mode = GcMode::kOff;
  ASSERT_NO_FATAL_FAILURE(MakeStore(store, {1, 2, 3}, options));
  const Json fresh = StatsOf(store);
  ASSERT_TRUE(fresh.is_object());
  EXPECT_EQ(fresh.at("garbage_chunks").get<uint64_t>(), 0u);
  EXPECT_EQ(fresh.at("garbage_bytes").get<uint64_t>(), 0u);
  {
    auto checkpointer = OpenOrDie(store, options);
    ASSERT_NE(checkpointer, nullptr);
    ASSERT_OK(checkpointer->Delete(2));  // its kernel and bias are used by no other step
    ASSERT_OK(checkpointer->Close());
  }
  const Json pruned = StatsOf(store);
  ASSERT_TRUE(pruned.is_object());
  EXPECT_EQ(pruned.at("steps").get<uint64_t>(), 2u);
  const uint64_t garbage = pruned.at("garbage_chunks").get<uint64_t>();
  EXPECT_GT(garbage, 0u);
  EXPECT_GT(pruned.at("garbage_bytes").get<uint64_t>(), 0u);
  EXPECT_EQ(pruned.at("chunks"), fresh.at("chunks")) << "nothing was collected";

  ToolRun human = RunTool({"stats", store});
  ASSERT_EQ(human.exit_code, 0) << Describe(human);
  const std::string garbage_cell = std::to_string(garbage) + " chunks, " +
                                   HumanBytes(pruned.at("garbage_bytes").get<uint64_t>());
  bool found = false;
  for (const std::string& line : Lines(human.out)) {
    if (!StartsWith(line, "garbage ")) continue;
    found = true;
    EXPECT_TRUE(line.size() >= garbage_cell.size() &&
                line.substr(line.size() - garbage_cell.size()) == garbage_cell)
        << line;
  }
  EXPECT_TRUE(found) << human.out;
}

// ---- verify ----

TEST(InspectVerifyTest, AHealthyStoreIsOk) {
  TempDir dir;
  const std::string store = dir.Sub("store");
  ASSERT_NO_FATAL_FAILURE(MakeStore(store, {1, 2}));
  const std::vector<IndexEntry> entries = IndexEntriesOf(store);
  uint64_t raw = 0;
  for (const IndexEntry& entry : entries) raw += entry.location.raw_size;

  ToolRun run = RunTool({"verify", store});
  ASSERT_EQ(run.exit_code, 0) << Describe(run);
  EXPECT_EQ(run.err, "") << "no progress when stdout is not a terminal";
  EXPECT_EQ(run.out, "ok: 2 steps, " + std::to_string(entries.size()) + " chunks (" +
                         HumanBytes(raw) + ") checked, 0 problems\n");

  ToolRun json_run = RunTool({"--json", "verify", store});
  ASSERT_EQ(json_run.exit_code, 0) << Describe(json_run);
  const Json json = ParseJson(json_run.out);
  ASSERT_TRUE(json.is_object());
  EXPECT_EQ(json.at("workdir").get<std::string>(), store);
  EXPECT_EQ(json.at("ok"), true);
  EXPECT_EQ(json.at("steps_checked").get<uint64_t>(), 2u);
  EXPECT_EQ(json.at("chunks_checked").get<uint64_t>(), entries.size());
  EXPECT_EQ(json.at("bytes_checked").get<uint64_t>(), raw);
  EXPECT_EQ(json.at("problems"), Json::array());

  ToolRun one = RunTool({"verify", store, "1"});
  EXPECT_EQ(one.exit_code, 0) << Describe(one);
  EXPECT_TRUE(StartsWith(one.out, "ok: 1 steps, ")) << one.out;

  ToolRun missing = RunTool({"verify", store, "9"});
  EXPECT_EQ(missing.exit_code, 1) << Describe(missing);
  EXPECT_TRUE(Contains(missing.out, "problem: step 9: no such step\n")) << missing.out;
  EXPECT_TRUE(Contains(missing.out, "FAILED: 0 steps")) << missing.out;
}

TEST(InspectVerifyTest, ACorruptChunkIsReportedWithItsStepAndTensor) {
  TempDir dir;
  const std::string store = dir.Sub("store");
  ASSERT_NO_FATAL_FAILURE(MakeStore(store, {1, 2}));

  // params/kernel differs at every step. The chunks of its size are the
  // frozen embedding's and the two kernels'; step 2's kernel is the one in
  // the newest generation (each save writes its new chunks as one).
  const uint64_t kernel_bytes = StateOf(2).Find("params/kernel")->tensor().byte_size();
  std::vector<IndexEntry> candidates;
  for (const IndexEntry& entry : IndexEntriesOf(store)) {
    if (entry.location.raw_size == kernel_bytes) candidates.push_back(entry);
  }
  ASSERT_EQ(candidates.size(), 3u);
  const IndexEntry target = *std::max_element(
      candidates.begin(), candidates.end(), [](const IndexEntry& a, const IndexEntry& b) {
        return a.location.generation < b.location.generation;
      });
  ASSERT_EQ(std::count_if(candidates.begin(), candidates.end(),
                          [&](const IndexEntry& entry) {
                            return entry.location.generation == target.location.generation;
                          }),
            1);

  // A raw chunk (codec 0) of the right size whose bytes are not the kernel's.
  std::string key;
  AppendBigEndian64(&key, target.location.generation);
  key += target.digest.ToBytes();
  std::string value(6, '\0');
  for (int i = 0; i < 4; ++i) value[2 + i] = static_cast<char>((kernel_bytes >> (8 * i)) & 0xff);
  value.append(kernel_bytes, '\x5a');
  ASSERT_OK(testing::PutRawValue(store, "chunks", key, value));

  // The problem names the chunk's file (the test's raw write landed in a
  // table file of its own, whose number RocksDB chose).
  const std::string problem_start =
      "step 2, tensor 'params/kernel', chunk 0 (" + target.digest.ToHex() + ", in ";
  const std::string problem_end = ".sst): Corruption: the bytes read fail their digest check";
  ToolRun run = RunTool({"verify", store});
  EXPECT_EQ(run.exit_code, 1) << Describe(run);
  EXPECT_TRUE(Contains(run.out, "problem: " + problem_start)) << run.out;
  EXPECT_TRUE(Contains(run.out, problem_end + "\n")) << run.out;
  EXPECT_TRUE(Contains(run.out, ".sst, used by step 2\n")) << run.out;
  EXPECT_TRUE(Contains(run.out, "FAILED: 2 steps, ")) << run.out;
  EXPECT_TRUE(Contains(run.out, ", 1 problems\n")) << run.out;

  ToolRun json_run = RunTool({"--json", "verify", store});
  EXPECT_EQ(json_run.exit_code, 1) << Describe(json_run);
  const Json json = ParseJson(json_run.out);
  ASSERT_TRUE(json.is_object());
  EXPECT_EQ(json.at("ok"), false);
  ASSERT_EQ(json.at("problems").size(), 1u);
  const std::string reported = json.at("problems")[0];
  EXPECT_TRUE(reported.starts_with(problem_start) && reported.ends_with(problem_end)) << reported;
  ASSERT_EQ(json.at("damaged_files").size(), 1u);
  EXPECT_EQ(json.at("damaged_files")[0].at("steps"), Json::array({2}));
  EXPECT_EQ(json.at("damaged_steps")[0].at("step"), 2);

  ToolRun healthy = RunTool({"verify", store, "1"});
  EXPECT_EQ(healthy.exit_code, 0) << Describe(healthy);
  ToolRun broken = RunTool({"verify", store, "2"});
  EXPECT_EQ(broken.exit_code, 1) << Describe(broken);

  auto checkpointer = OpenOrDie(store);
  ASSERT_NE(checkpointer, nullptr);
  Result<Tree> restored = checkpointer->RestoreTree(2);
  ASSERT_FALSE(restored.ok());
  EXPECT_TRUE(restored.status().IsCorruption()) << restored.status().ToString();
  EXPECT_TRUE(Contains(restored.status().message(), "step 2")) << restored.status().ToString();
  EXPECT_TRUE(Contains(restored.status().message(), "'params/kernel'"))
      << restored.status().ToString();
  Result<Tree> step1 = checkpointer->RestoreTree(1);
  ASSERT_OK(step1.status());
  EXPECT_TRUE(step1->ContentEquals(StateOf(1)));
}

TEST(InspectVerifyTest, AnUnreadableManifestIsAProblemOfItsStep) {
  TempDir dir;
  const std::string store = dir.Sub("store");
  ASSERT_NO_FATAL_FAILURE(MakeStore(store, {1, 2, 3}));
  std::string key;
  AppendBigEndian64(&key, 2);
  ASSERT_OK(testing::PutRawValue(store, "manifests", key, "not a manifest"));
  ToolRun run = RunTool({"verify", store});
  EXPECT_EQ(run.exit_code, 1) << Describe(run);
  EXPECT_TRUE(Contains(run.out, "problem: step 2: manifest: Corruption")) << run.out;
  EXPECT_TRUE(Contains(run.out, "FAILED: 2 steps, ")) << run.out;
  ToolRun other = RunTool({"verify", store, "3"});
  EXPECT_EQ(other.exit_code, 0) << Describe(other);
}

// ---- gc ----

// A store holding only step 3: retention pruned steps 1 and 2 and, with GC
// off, left their chunks behind.
void MakePrunedStore(const std::string& dir) {
  CheckpointerOptions options;
  options.max_to_keep = 1;
  options.gc_mode = GcMode::kOff;
  ASSERT_NO_FATAL_FAILURE(MakeStore(dir, {1, 2, 3}, options));
  ASSERT_EQ(StepsOf(dir), std::vector<int64_t>{3});
}

TEST(InspectGcTest, CollectsWhatPruningLeftAndLeavesNoGarbage) {
  TempDir dir;
  const std::string store = dir.Sub("store");
  ASSERT_NO_FATAL_FAILURE(MakePrunedStore(store));
  const Json before = StatsOf(store);
  ASSERT_TRUE(before.is_object());
  const uint64_t garbage = before.at("garbage_chunks").get<uint64_t>();
  const uint64_t chunks = before.at("chunks").get<uint64_t>();
  ASSERT_GT(garbage, 0u);

  ToolRun run = RunTool({"gc", store});
  ASSERT_EQ(run.exit_code, 0) << Describe(run);
  EXPECT_EQ(run.err, "");
  const std::regex line(
      R"(deleted (\d+) of (\d+) chunks \((.+)\); removed (\d+) chunk files, rewrote (\d+); freed (.+) in (.+) s\n)");
  std::smatch match;
  ASSERT_TRUE(std::regex_match(run.out, match, line)) << run.out;
  EXPECT_EQ(std::stoull(match[1].str()), garbage);
  EXPECT_EQ(std::stoull(match[2].str()), chunks);
  EXPECT_EQ(match[3].str(), HumanBytes(before.at("garbage_bytes").get<uint64_t>()));
  EXPECT_GE(std::stoull(match[4].str()) + std::stoull(match[5].str()), 1u)
      << "some chunk file was freed";

  const Json after = StatsOf(store);
  ASSERT_TRUE(after.is_object());
  EXPECT_EQ(after.at("garbage_chunks").get<uint64_t>(), 0u);
  EXPECT_EQ(after.at("garbage_bytes").get<uint64_t>(), 0u);
  EXPECT_EQ(after.at("chunks").get<uint64_t>(), chunks - garbage);
  EXPECT_EQ(after.at("steps").get<uint64_t>(), 1u);

  ToolRun again = RunTool({"gc", store});
  ASSERT_EQ(again.exit_code, 0) << Describe(again);
  EXPECT_TRUE(StartsWith(again.out, "deleted 0 of " + std::to_string(chunks - garbage) + " "))
      << again.out;

  auto checkpointer = OpenOrDie(store);
  ASSERT_NE(checkpointer, nullptr);
  Result<Tree> restored = checkpointer->RestoreTree(3);
  ASSERT_OK(restored.status());
  EXPECT_TRUE(restored->ContentEquals(StateOf(3)));
}

TEST(InspectGcTest, JsonReportsWhatWasCollected) {
  TempDir dir;
  const std::string store = dir.Sub("store");
  ASSERT_NO_FATAL_FAILURE(MakePrunedStore(store));
  const Json before = StatsOf(store);
  ASSERT_TRUE(before.is_object());

  ToolRun run = RunTool({"--json", "gc", store});
  ASSERT_EQ(run.exit_code, 0) << Describe(run);
  const Json json = ParseJson(run.out);
  ASSERT_TRUE(json.is_object());
  EXPECT_EQ(json.at("workdir").get<std::string>(), store);
  const uint64_t scanned = json.at("chunks_scanned").get<uint64_t>();
  const uint64_t live = json.at("chunks_live").get<uint64_t>();
  const uint64_t deleted = json.at("chunks_deleted").get<uint64_t>();
  EXPECT_EQ(scanned, before.at("chunks").get<uint64_t>());
  EXPECT_EQ(deleted, before.at("garbage_chunks").get<uint64_t>());
  EXPECT_GT(deleted, 0u);
  EXPECT_EQ(live + deleted, scanned);
  EXPECT_EQ(json.at("garbage_bytes").get<uint64_t>(), before.at("garbage_bytes").get<uint64_t>());
  EXPECT_GT(json.at("live_bytes").get<uint64_t>(), 0u);
  EXPECT_GE(json.at("files_deleted").get<uint64_t>() + json.at("files_rewritten").get<uint64_t>(),
            1u);
  EXPECT_GT(json.at("bytes_freed").get<uint64_t>(), 0u);
  EXPECT_TRUE(json.at("bytes_rewritten").is_number_unsigned());
  EXPECT_TRUE(json.at("seconds").is_number());
  EXPECT_GE(json.at("seconds").get<double>(), 0.0);
  EXPECT_EQ(StatsOf(store).at("garbage_chunks").get<uint64_t>(), 0u);
}

// ---- diff ----

TEST(InspectDiffTest, ShowsTheTrainedKernelChangedAndTheFrozenPartUnchanged) {
  TempDir dir;
  const std::string store = dir.Sub("store");
  ASSERT_NO_FATAL_FAILURE(MakeStore(store, {1, 2}));
  const uint64_t kernel_bytes = StateOf(2).Find("params/kernel")->tensor().byte_size();

  ToolRun run = RunTool({"diff", store, "1", "2"});
  ASSERT_EQ(run.exit_code, 0) << Describe(run);
  const std::vector<std::string> lines = Lines(run.out);
  ASSERT_GE(lines.size(), 2u) << run.out;
  // Only the frozen embedding is the same at steps 1 and 2.
  EXPECT_EQ(lines[0], "step 1 -> step 2: " + std::to_string(kLeavesPerState - 1) +
                          " leaves differ, 1 unchanged");
  const std::string& header = lines[1];
  ASSERT_TRUE(StartsWith(header, "CHANGE ")) << header;
  const size_t path = header.find("PATH");
  const size_t detail = header.find("DETAIL");
  ASSERT_NE(path, std::string::npos);
  ASSERT_NE(detail, std::string::npos);
  std::map<std::string, std::string> details;
  for (size_t i = 2; i < lines.size(); ++i) {
    const std::string& row = lines[i];
    ASSERT_GT(row.size(), detail) << row;
    EXPECT_EQ(row.substr(0, path), "changed" + std::string(path - std::strlen("changed"), ' '));
    details[row.substr(path, row.find(' ', path) - path)] = row.substr(detail);
  }
  EXPECT_EQ(details.size(), kLeavesPerState - 1);
  EXPECT_EQ(details["params/kernel"], "1 of 1 chunks (" + HumanBytes(kernel_bytes) + ")");
  EXPECT_EQ(details["step"], "1 -> 2");
  EXPECT_EQ(details["name"], "\"run-1\" -> \"run-2\"");
  EXPECT_EQ(details.count("params/frozen_embedding"), 0u);
  EXPECT_FALSE(Contains(run.out, "frozen_embedding")) << run.out;

  ToolRun json_run = RunTool({"--json", "diff", store, "1", "2"});
  ASSERT_EQ(json_run.exit_code, 0) << Describe(json_run);
  const Json json = ParseJson(json_run.out);
  ASSERT_TRUE(json.is_object());
  EXPECT_EQ(json.at("workdir").get<std::string>(), store);
  EXPECT_EQ(json.at("from"), 1);
  EXPECT_EQ(json.at("to"), 2);
  EXPECT_EQ(json.at("unchanged"), 1);
  const Json& changes = json.at("changes");
  ASSERT_TRUE(changes.is_array());
  EXPECT_EQ(changes.size(), kLeavesPerState - 1);
  std::map<std::string, Json> by_path;
  for (const Json& change : changes) {
    EXPECT_EQ(change.at("change"), "changed");
    by_path[change.at("path").get<std::string>()] = change;
  }
  ASSERT_EQ(by_path.count("params/kernel"), 1u) << json_run.out;
  EXPECT_EQ(by_path["params/kernel"].at("changed_chunks"), 1);
  EXPECT_EQ(by_path["params/kernel"].at("chunks"), 1);
  EXPECT_EQ(by_path["params/kernel"].at("changed_bytes").get<uint64_t>(), kernel_bytes);
  EXPECT_EQ(by_path.count("params/frozen_embedding"), 0u);
  EXPECT_EQ(by_path["step"].at("from"), 1);
  EXPECT_EQ(by_path["step"].at("to"), 2);
  EXPECT_EQ(by_path["name"].at("from"), "run-1");
  EXPECT_EQ(by_path["name"].at("to"), "run-2");
}

TEST(InspectDiffTest, ReportsAddedAndRemovedLeavesAndNothingForTheSameStep) {
  TempDir dir;
  const std::string store = dir.Sub("store");
  {
    auto checkpointer = OpenOrDie(store);
    ASSERT_NE(checkpointer, nullptr);
    Tree first = StateOf(1);
    (void)first.Set("only_in_1", Tree::Int(7));
    Tree second = StateOf(2);
    (void)second.Set("only_in_2", Tree::String("new"));
    ASSERT_TRUE(checkpointer->Save(first, 1).value());
    ASSERT_TRUE(checkpointer->Save(second, 2).value());
    ASSERT_OK(checkpointer->Close());
  }
  ToolRun json_run = RunTool({"--json", "diff", store, "1", "2"});
  ASSERT_EQ(json_run.exit_code, 0) << Describe(json_run);
  const Json json = ParseJson(json_run.out);
  ASSERT_TRUE(json.is_object());
  const Json& changes = json.at("changes");
  ASSERT_TRUE(changes.is_array());
  ASSERT_FALSE(changes.empty());
  EXPECT_EQ(changes.back(), Json::object({{"change", "removed"}, {"path", "only_in_1"}}))
      << "removed leaves come last";
  bool added = false;
  for (const Json& change : changes) {
    if (change.at("path") == "only_in_2") {
      added = true;
      EXPECT_EQ(change.at("change"), "added");
    }
  }
  EXPECT_TRUE(added) << json_run.out;

  ToolRun human = RunTool({"diff", store, "1", "2"});
  ASSERT_EQ(human.exit_code, 0) << Describe(human);
  const std::regex added_row(R"((^|\n)added +only_in_2 +string\n)");
  const std::regex removed_row(R"((^|\n)removed +only_in_1 +int\n)");
  EXPECT_TRUE(std::regex_search(human.out, added_row)) << human.out;
  EXPECT_TRUE(std::regex_search(human.out, removed_row)) << human.out;

  ToolRun same = RunTool({"diff", store, "2", "latest"});
  ASSERT_EQ(same.exit_code, 0) << Describe(same);
  EXPECT_EQ(same.out, "step 2 -> step 2: 0 leaves differ, " + std::to_string(kLeavesPerState + 1) +
                          " unchanged\n");
  ToolRun missing = RunTool({"diff", store, "1", "5"});
  EXPECT_EQ(missing.exit_code, 1) << Describe(missing);
  EXPECT_TRUE(Contains(missing.err, "step 5")) << missing.err;
}

// diff compares tensors' chunk digests position by position. A tensor cut
// into more chunks in the second step (saved with a smaller chunk_size_bytes)
// than in the first must not be read past the first step's chunk list.
TEST(InspectDiffTest, ComparesStepsSavedWithDifferentChunkSizes) {
  TempDir dir;
  const std::string store = dir.Sub("store");
  ASSERT_NO_FATAL_FAILURE(MakeStore(store, {1}));
  CheckpointerOptions small_chunks = KeepAll();
  small_chunks.chunk_size_bytes = 64 << 10;
  ASSERT_NO_FATAL_FAILURE(MakeStore(store, {2}, small_chunks));
  ToolRun run = RunTool({"--json", "diff", store, "1", "2"});
  ASSERT_EQ(run.exit_code, 0) << Describe(run);
  const Json json = ParseJson(run.out);
  ASSERT_TRUE(json.is_object());
  bool kernel_changed = false;
  for (const Json& change : json.at("changes")) {
    kernel_changed |= change.at("path") == "params/kernel" && change.at("change") == "changed";
  }
  EXPECT_TRUE(kernel_changed) << run.out;
}

// ---- export and import ----

struct SafetensorsHeader {
  uint64_t length = 0;
  Json json;
};

SafetensorsHeader ReadSafetensorsHeader(const std::string& bytes) {
  SafetensorsHeader header;
  EXPECT_GE(bytes.size(), 8u);
  if (bytes.size() < 8) return header;
  for (int i = 0; i < 8; ++i) {
    header.length |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  }
  EXPECT_LE(header.length, bytes.size() - 8);
  if (header.length > bytes.size() - 8) return header;
  header.json = ParseJson(bytes.substr(8, header.length));
  return header;
}

TEST(InspectExportImportTest, ARoundTripThroughTheBinaryIsBitExact) {
  TempDir dir;
  const std::string source = dir.Sub("source");
  ASSERT_NO_FATAL_FAILURE(MakeStore(source, {1, 2}));
  const StepMetadata metadata = MetadataOf(source, 2);
  fs::create_directories(dir.Sub("out"));
  const std::string file = dir.Sub("out") + "/step2.safetensors";

  ToolRun exported = RunTool({"export", source, "2", "--out", file});
  ASSERT_EQ(exported.exit_code, 0) << Describe(exported);
  EXPECT_EQ(exported.out,
            "exported step 2 (" + HumanBytes(metadata.logical_bytes) + ") to " + file + "\n");
  EXPECT_FALSE(fs::exists(file + ".tmp"));

  // An 8-byte little-endian header length, a JSON header, the tensors' bytes.
  const std::string bytes = ReadFile(file);
  const SafetensorsHeader header = ReadSafetensorsHeader(bytes);
  ASSERT_TRUE(header.json.is_object());
  EXPECT_EQ(bytes.size(), 8 + header.length + metadata.logical_bytes);
  const Json& kernel = header.json.at("params/kernel");
  EXPECT_EQ(kernel.at("dtype"), "F32");
  EXPECT_EQ(kernel.at("shape"), Json::array({512, 256}));
  const auto offsets = kernel.at("data_offsets").get<std::vector<uint64_t>>();
  ASSERT_EQ(offsets.size(), 2u);
  EXPECT_EQ(offsets[1] - offsets[0], StateOf(2).Find("params/kernel")->tensor().byte_size());
  EXPECT_EQ(header.json.at("params/bias").at("dtype"), "BF16");
  const Json& file_metadata = header.json.at("__metadata__");
  EXPECT_EQ(file_metadata.at("ckptdb.step"), "2");
  EXPECT_TRUE(file_metadata.at("ckptdb.tree").is_string());
  EXPECT_EQ(file_metadata.at("config"), "mlp");

  const std::string target = dir.Sub("imported");
  ToolRun imported = RunTool({"import", target, file, "--step", "7"});
  ASSERT_EQ(imported.exit_code, 0) << Describe(imported);
  EXPECT_EQ(imported.out, "imported " + file + " (" + HumanBytes(metadata.logical_bytes) +
                              ") as step 7 of " + target + "\n");
  {
    auto checkpointer = OpenOrDie(target);
    ASSERT_NE(checkpointer, nullptr);
    EXPECT_EQ(checkpointer->AllSteps(), std::vector<int64_t>{7});
    Result<Tree> restored = checkpointer->RestoreTree(7);
    ASSERT_OK(restored.status());
    EXPECT_TRUE(restored->ContentEquals(StateOf(2)));
    Result<StepMetadata> stored = checkpointer->ItemMetadata(7);
    ASSERT_OK(stored.status());
    EXPECT_EQ(stored->user_metadata.at("ckptdb.imported_from"), "step2.safetensors");
    EXPECT_EQ(stored->user_metadata.at("config"), "mlp");
    EXPECT_EQ(stored->user_metadata.count("ckptdb.step"), 0u);
    EXPECT_EQ(stored->user_metadata.count("ckptdb.tree"), 0u);
    ASSERT_OK(checkpointer->Close());
  }

  // The JSON forms.
  const std::string latest_file = dir.Sub("out") + "/latest.safetensors";
  ToolRun export_json = RunTool({"--json", "export", source, "latest", "--out", latest_file});
  ASSERT_EQ(export_json.exit_code, 0) << Describe(export_json);
  EXPECT_EQ(ParseJson(export_json.out), Json::object({{"workdir", source},
                                                      {"step", 2},
                                                      {"file", latest_file},
                                                      {"logical_bytes", metadata.logical_bytes}}));
  EXPECT_EQ(ReadFile(latest_file), bytes) << "export is deterministic";
  ToolRun import_json = RunTool({"--json", "import", target, latest_file, "--step", "8"});
  ASSERT_EQ(import_json.exit_code, 0) << Describe(import_json);
  EXPECT_EQ(ParseJson(import_json.out), Json::object({{"workdir", target},
                                                      {"step", 8},
                                                      {"file", latest_file},
                                                      {"logical_bytes", metadata.logical_bytes},
                                                      {"steps", {7, 8}}}));
}

TEST(InspectExportImportTest, ImportBelowTheLatestStepNeedsForceAndNeverOverwrites) {
  TempDir dir;
  const std::string source = dir.Sub("source");
  ASSERT_NO_FATAL_FAILURE(MakeStore(source, {3}));
  const std::string file = dir.Sub("step3.safetensors");
  ToolRun exported = RunTool({"export", source, "3", "--out", file});
  ASSERT_EQ(exported.exit_code, 0) << Describe(exported);

  const std::string target = dir.Sub("target");
  ASSERT_EQ(RunTool({"import", target, file, "--step", "7"}).exit_code, 0);
  ToolRun below = RunTool({"import", target, file, "--step", "5"});
  EXPECT_EQ(below.exit_code, 1) << Describe(below);
  EXPECT_TRUE(Contains(below.err, "step 5 is not above the latest step 7")) << below.err;
  EXPECT_TRUE(Contains(below.err, "--force")) << below.err;
  EXPECT_EQ(StepsOf(target), std::vector<int64_t>{7});

  ToolRun forced = RunTool({"import", target, file, "--step", "5", "--force"});
  EXPECT_EQ(forced.exit_code, 0) << Describe(forced);
  EXPECT_EQ(StepsOf(target), (std::vector<int64_t>{5, 7}));

  ToolRun existing = RunTool({"import", target, file, "--step", "7", "--force"});
  EXPECT_EQ(existing.exit_code, 1) << Describe(existing);
  EXPECT_TRUE(Contains(existing.err, "AlreadyExists")) << existing.err;
  EXPECT_EQ(StepsOf(target), (std::vector<int64_t>{5, 7}));
}

TEST(InspectExportImportTest, AMalformedFileIsRefusedAndCreatesNothing) {
  TempDir dir;
  const std::string source = dir.Sub("source");
  ASSERT_NO_FATAL_FAILURE(MakeStore(source, {1}));
  const std::string good = dir.Sub("good.safetensors");
  ASSERT_EQ(RunTool({"export", source, "1", "--out", good}).exit_code, 0);
  const std::string bytes = ReadFile(good);
  ASSERT_GT(bytes.size(), 4096u);

  std::mt19937_64 rng(42);
  std::string random(4096, '\0');
  for (char& c : random) c = static_cast<char>(rng());
  const std::map<std::string, std::string> malformed = {
      {"empty", ""},
      {"length_only", bytes.substr(0, 8)},
      {"truncated_header", bytes.substr(0, 100)},
      {"truncated_data", bytes.substr(0, bytes.size() - 1000)},
      {"random", random},
  };
  const std::string never = dir.Sub("never");
  for (const auto& [name, contents] : malformed) {
    SCOPED_TRACE(name);
    const std::string file = dir.Sub(name + ".safetensors");
    WriteFile(file, contents);
    ToolRun run = RunTool({"import", never, file, "--step", "1"});
    EXPECT_EQ(run.exit_code, 1) << Describe(run);
    EXPECT_EQ(run.out, "");
    EXPECT_TRUE(Contains(run.err, "InvalidArgument: safetensors file '" + file + "'")) << run.err;
    EXPECT_FALSE(fs::exists(never)) << "a refused import must create no store";

    ToolRun into_existing = RunTool({"import", source, file, "--step", "5"});
    EXPECT_EQ(into_existing.exit_code, 1) << Describe(into_existing);
    EXPECT_EQ(StepsOf(source), std::vector<int64_t>{1});
  }
}

TEST(InspectExportImportTest, ExportWritesOnlyItsFileWhateverTheTensorNames) {
  TempDir dir;
  // Map keys may be "..": the paths "../../etc/passwd" and "etc/.." must
  // never become file names.
  Tree state;
  Tree* up = state.Set("..", Tree::Map()).value();
  Tree* up_up = up->Set("..", Tree::Map()).value();
  Tree* etc = up_up->Set("etc", Tree::Map()).value();
  Tensor passwd = Tensor::Allocate(DType::kUInt8, {16}).value();
  for (int i = 0; i < 16; ++i) passwd.mutable_data()[i] = static_cast<std::byte>(i);
  (void)etc->Set("passwd", Tree::Leaf(passwd));
  Tree* top_etc = state.Set("etc", Tree::Map()).value();
  (void)top_etc->Set("..", Tree::Leaf(Tensor::Allocate(DType::kInt32, {4}).value()));
  (void)state.Set("step", Tree::Int(1));
  const std::string store = dir.Sub("store");
  {
    auto checkpointer = OpenOrDie(store);
    ASSERT_NE(checkpointer, nullptr);
    ASSERT_TRUE(checkpointer->Save(state, 1).value());
    ASSERT_OK(checkpointer->Close());
  }
  // Run from two levels down, so that "../../etc" would land inside dir.
  const std::string work = dir.Sub("work/a/b");
  fs::create_directories(work);
  const std::set<std::string> before = EntriesUnder(dir.path(), store);

  ToolRun run = RunTool({"export", store, "1", "--out", "exported.safetensors"}, work);
  ASSERT_EQ(run.exit_code, 0) << Describe(run);
  std::set<std::string> added;
  const std::set<std::string> after = EntriesUnder(dir.path(), store);
  std::set_difference(after.begin(), after.end(), before.begin(), before.end(),
                      std::inserter(added, added.end()));
  EXPECT_EQ(added, std::set<std::string>{work + "/exported.safetensors"});
  EXPECT_EQ(before.size() + 1, after.size()) << "nothing was removed either";
  for (const auto& entry : fs::recursive_directory_iterator(dir.path())) {
    EXPECT_NE(entry.path().filename(), "passwd") << entry.path();
  }

  const SafetensorsHeader header = ReadSafetensorsHeader(ReadFile(work + "/exported.safetensors"));
  ASSERT_TRUE(header.json.is_object());
  EXPECT_TRUE(header.json.contains("../../etc/passwd")) << header.json.dump();
  EXPECT_TRUE(header.json.contains("etc/..")) << header.json.dump();

  const std::string copy = dir.Sub("copy");
  ToolRun imported = RunTool({"import", copy, work + "/exported.safetensors", "--step", "1"});
  ASSERT_EQ(imported.exit_code, 0) << Describe(imported);
  auto checkpointer = OpenOrDie(copy);
  ASSERT_NE(checkpointer, nullptr);
  Result<Tree> restored = checkpointer->RestoreTree(1);
  ASSERT_OK(restored.status());
  EXPECT_TRUE(restored->ContentEquals(state));
}

// ---- usage ----

const char* const kCommandNames[] = {"list", "show", "stats",  "verify",
                                     "gc",   "diff", "export", "import"};

TEST(InspectUsageTest, NoArgumentsIsAUsageError) {
  ToolRun run = RunTool({});
  EXPECT_EQ(run.exit_code, 2) << Describe(run);
  EXPECT_EQ(run.out, "");
  EXPECT_TRUE(Contains(run.err, "no command given")) << run.err;
  EXPECT_TRUE(Contains(run.err, "usage: ckpt-inspect")) << run.err;
  ToolRun json_only = RunTool({"--json"});
  EXPECT_EQ(json_only.exit_code, 2) << Describe(json_only);
}

TEST(InspectUsageTest, AnUnknownCommandIsAUsageError) {
  ToolRun run = RunTool({"frob", "/tmp"});
  EXPECT_EQ(run.exit_code, 2) << Describe(run);
  EXPECT_EQ(run.out, "");
  EXPECT_TRUE(Contains(run.err, "unknown command 'frob'")) << run.err;
  EXPECT_EQ(RunTool({"frob", "--help"}).exit_code, 2);
}

TEST(InspectUsageTest, HelpPrintsTheUsageAndSucceeds) {
  for (const std::string flag : {"--help", "-h"}) {
    ToolRun run = RunTool({flag});
    EXPECT_EQ(run.exit_code, 0) << Describe(run);
    EXPECT_EQ(run.err, "");
    EXPECT_TRUE(StartsWith(run.out, "usage: ckpt-inspect [--json] COMMAND ARGS...\n")) << run.out;
    for (const char* command : kCommandNames) {
      EXPECT_TRUE(Contains(run.out, std::string("\n  ") + command + " ")) << command;
    }
    EXPECT_TRUE(Contains(run.out, "Exit codes:")) << run.out;
  }
}

TEST(InspectUsageTest, EveryCommandHasHelp) {
  ToolRun show = RunTool({"show", "--help"});
  EXPECT_EQ(show.exit_code, 0) << Describe(show);
  EXPECT_EQ(show.err, "");
  EXPECT_TRUE(StartsWith(show.out, "usage: ckpt-inspect [--json] show WORKDIR STEP\n\n"))
      << show.out;
  for (const char* command : kCommandNames) {
    ToolRun run = RunTool({command, "--help"});
    EXPECT_EQ(run.exit_code, 0) << Describe(run);
    EXPECT_TRUE(StartsWith(run.out, std::string("usage: ckpt-inspect [--json] ") + command + " "))
        << run.out;
    EXPECT_GT(Lines(run.out).size(), 2u) << "a description follows the usage: " << run.out;
  }
  // --help wins over the rest of the line once it was read.
  EXPECT_EQ(RunTool({"export", "--help", "--bogus"}).exit_code, 0);
  EXPECT_EQ(RunTool({"import", "--help"}).exit_code, 0);
}

TEST(InspectUsageTest, AnUnknownOptionIsAUsageError) {
  TempDir dir;
  const std::string absent = dir.Sub("absent");
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{"list", absent, "--bogus"},
                                             {"--bogus", "list", absent},
                                             {"list", absent, "--out=file"}}) {
    ToolRun run = RunTool(args);
    EXPECT_EQ(run.exit_code, 2) << args[0] << " " << args[1] << " " << args[2] << ": "
                                << Describe(run);
    EXPECT_EQ(run.out, "");
    EXPECT_TRUE(Contains(run.err, "unknown option ")) << run.err;
  }
  // A negative number where a step goes is a bad step, not an option.
  ToolRun negative = RunTool({"show", absent, "-5"});
  EXPECT_EQ(negative.exit_code, 2) << Describe(negative);
  EXPECT_TRUE(Contains(negative.err, "'-5' is not a step")) << negative.err;
  EXPECT_FALSE(fs::exists(absent));
}

TEST(InspectUsageTest, MissingOrExtraOperandsAreUsageErrors) {
  TempDir dir;
  const std::string absent = dir.Sub("absent");
  const std::string file = dir.Sub("file.safetensors");
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"list"},
           {"list", absent, "extra"},
           {"stats"},
           {"gc"},
           {"show", absent},
           {"show", absent, "1", "2"},
           {"verify"},
           {"verify", absent, "1", "2"},
           {"diff", absent, "1"},
           {"export", absent, "1"},
           {"export", absent, "--out", file},
           {"export", absent, "1", "--out"},
           {"import", absent, file},
           {"import", absent, "--step", "1"},
           {"import", absent, file, "--step"},
       }) {
    std::string line;
    for (const std::string& arg : args) line += arg + " ";
    ToolRun run = RunTool(args);
    EXPECT_EQ(run.exit_code, 2) << line << ": " << Describe(run);
    EXPECT_EQ(run.out, "") << line;
    EXPECT_TRUE(Contains(run.err, "usage: ckpt-inspect [--json] " + args[0])) << line << run.err;
  }
  EXPECT_FALSE(fs::exists(absent)) << "usage errors must not touch the store";
  EXPECT_FALSE(fs::exists(file));
}

TEST(InspectUsageTest, OptionsOfOtherCommandsAreUsageErrors) {
  TempDir dir;
  const std::string absent = dir.Sub("absent");
  const std::string file = dir.Sub("file.safetensors");
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"list", absent, "--out", file},
           {"show", absent, "1", "--out", file},
           {"stats", absent, "--max-to-keep", "1"},
           {"verify", absent, "--step", "3"},
           {"gc", absent, "--force"},
           {"diff", absent, "1", "2", "--keep-period", "2"},
           {"export", absent, "1", "--out", file, "--step", "2"},
           {"import", absent, file, "--step", "1", "--out", file},
       }) {
    ToolRun run = RunTool(args);
    EXPECT_EQ(run.exit_code, 2) << args[0] << ": " << Describe(run);
    EXPECT_EQ(run.out, "");
    EXPECT_TRUE(Contains(run.err, "does not apply to " + args[0])) << run.err;
  }
  EXPECT_FALSE(fs::exists(absent));
  EXPECT_FALSE(fs::exists(file));
}

TEST(InspectUsageTest, ImportCountsMustBeNumbers) {
  TempDir dir;
  const std::string absent = dir.Sub("absent");
  const std::string file = dir.Sub("file.safetensors");
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"import", absent, file, "--step", "abc"},
           {"import", absent, file, "--step", "latest"},
           {"import", absent, file, "--step", "-1"},
           {"import", absent, file, "--step", "1", "--max-to-keep", "x"},
           {"import", absent, file, "--step", "1", "--keep-period", "-2"},
       }) {
    ToolRun run = RunTool(args);
    EXPECT_EQ(run.exit_code, 2) << args[3] << " " << args[4] << ": " << Describe(run);
    EXPECT_TRUE(Contains(run.err, "needs a number >= ")) << run.err;
  }
  // An import keeps its own step: retention counts start at 1.
  ToolRun keep_none = RunTool({"import", absent, file, "--step", "1", "--max-to-keep", "0"});
  EXPECT_EQ(keep_none.exit_code, 2) << Describe(keep_none);
  EXPECT_TRUE(Contains(keep_none.err, "--max-to-keep needs a number >= 1")) << keep_none.err;
  EXPECT_FALSE(fs::exists(absent));
}

// ---- alongside a writer ----

TEST(InspectWhileWritingTest, ReadOnlyCommandsWorkWhileATrainerHasTheStoreOpen) {
  TempDir dir;
  const std::string store = dir.Sub("store");
  auto writer = OpenOrDie(store);
  ASSERT_NE(writer, nullptr);
  for (int64_t step : {1, 2}) {
    ASSERT_TRUE(writer->Save(StateOf(step), step, SaveOptionsFor(step)).value());
  }
  // Saves are asynchronous by default: the tool sees a step once committed.
  ASSERT_OK(writer->WaitUntilFinished());

  ToolRun list = RunTool({"--json", "list", store});
  ASSERT_EQ(list.exit_code, 0) << Describe(list);
  const Json listed = ParseJson(list.out);
  ASSERT_TRUE(listed.is_object());
  ASSERT_EQ(listed.at("steps").size(), 2u);
  EXPECT_EQ(listed.at("steps")[1].at("step"), 2);

  ToolRun show = RunTool({"--json", "show", store, "latest"});
  ASSERT_EQ(show.exit_code, 0) << Describe(show);
  EXPECT_EQ(ParseJson(show.out).at("step"), 2);

  ToolRun verify = RunTool({"verify", store});
  EXPECT_EQ(verify.exit_code, 0) << Describe(verify);
  EXPECT_TRUE(StartsWith(verify.out, "ok: 2 steps, ")) << verify.out;

  ToolRun stats = RunTool({"stats", store});
  EXPECT_EQ(stats.exit_code, 0) << Describe(stats);
  ToolRun diff = RunTool({"diff", store, "1", "2"});
  EXPECT_EQ(diff.exit_code, 0) << Describe(diff);
  const std::string file = dir.Sub("step2.safetensors");
  ToolRun exported = RunTool({"export", store, "2", "--out", file});
  EXPECT_EQ(exported.exit_code, 0) << Describe(exported);

  // A step committed after the tool last looked is seen by its next run.
  ASSERT_TRUE(writer->Save(StateOf(3), 3, SaveOptionsFor(3)).value());
  ASSERT_OK(writer->WaitUntilFinished());
  ToolRun relisted = RunTool({"--json", "list", store});
  ASSERT_EQ(relisted.exit_code, 0) << Describe(relisted);
  const Json steps = ParseJson(relisted.out).at("steps");
  ASSERT_EQ(steps.size(), 3u);
  EXPECT_EQ(steps[2].at("step"), 3);
  ToolRun verify3 = RunTool({"verify", store, "3"});
  EXPECT_EQ(verify3.exit_code, 0) << Describe(verify3);

  // The writing commands refuse while the trainer has the store open.
  ToolRun gc = RunTool({"gc", store});
  EXPECT_EQ(gc.exit_code, 1) << Describe(gc);
  EXPECT_TRUE(Contains(gc.err, "Busy")) << gc.err;
  ToolRun imported = RunTool({"import", store, file, "--step", "4"});
  EXPECT_EQ(imported.exit_code, 1) << Describe(imported);
  EXPECT_TRUE(Contains(imported.err, "Busy")) << imported.err;

  // The trainer was not disturbed.
  ASSERT_TRUE(writer->Save(StateOf(4), 4).value());
  EXPECT_EQ(writer->AllSteps(), (std::vector<int64_t>{1, 2, 3, 4}));
  Result<Tree> restored = writer->RestoreTree(2);
  ASSERT_OK(restored.status());
  EXPECT_TRUE(restored->ContentEquals(StateOf(2)));
  ASSERT_OK(writer->Close());
}

}  // namespace
}  // namespace ckptdb
