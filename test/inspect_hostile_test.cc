// ckpt-inspect handed what users and attackers hand it: bytes that are not
// UTF-8 in names, values and paths; export targets that are links, devices,
// directories or files of a store; the largest step numbers; and stores with
// hundreds of thousands of entries. The tool runs in-process (RunInspect).

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "ckptdb/checkpointer.h"
#include "inspect.h"
#include "test_util.h"

namespace ckptdb {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using testing::ReadBytes;
using testing::TempDir;
using testing::WriteBytes;

struct ToolRun {
  int code = -1;
  std::string out;
  std::string err;
  std::string Describe() const {
    return "exit " + std::to_string(code) + "\n--- out:\n" + out + "--- err:\n" + err;
  }
};

ToolRun Inspect(const std::vector<std::string>& args) {
  std::ostringstream out;
  std::ostringstream err;
  ToolRun run;
  run.code = RunInspect(args, out, err, false);
  run.out = out.str();
  run.err = err.str();
  return run;
}

// Parses JSON that must be valid (nlohmann throws on invalid UTF-8 too).
Json ParseOrFail(const std::string& text) {
  Json json = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(json.is_discarded()) << "not JSON:\n" << text;
  return json;
}

Tensor Floats(std::vector<int64_t> shape, float value) {
  Tensor tensor = Tensor::Allocate(DType::kFloat32, std::move(shape)).value();
  float* data = reinterpret_cast<float*>(tensor.mutable_data());
  for (uint64_t i = 0; i < tensor.element_count(); ++i) data[i] = value + static_cast<float>(i);
  return tensor;
}

// "\xff" and "\xfe" are never part of UTF-8; "\xc3" alone is a cut sequence.
const std::string kBadString = std::string("ok") + "\xff\xfe" + "-\xc3";
const std::string kBadEscaped = "ok\\xff\\xfe-\\xc3";

Tree StateWithBadBytes() {
  Tree state;
  EXPECT_OK(state.Set("weights", Tree::Leaf(Floats({4, 4}, 1.0f))).status());
  EXPECT_OK(state.Set("name", Tree::String(kBadString)).status());
  EXPECT_OK(state.Set(std::string("key\xff"), Tree::Int(7)).status());
  return state;
}

void SaveStep(const std::string& dir, const Tree& state, int64_t step, SaveOptions save = {}) {
  CheckpointerOptions options;
  options.max_to_keep = std::nullopt;
  auto opened = Checkpointer::Open(dir, options);
  ASSERT_OK(opened.status());
  save.force = true;
  ASSERT_OK((*opened)->Save(state, step, save).status());
  ASSERT_OK((*opened)->Close());
}

TEST(InspectHostileTest, BytesThatAreNotUtf8AreEscapedInEveryOutputAndNeverCrash) {
  TempDir root;
  const std::string dir = root.Sub(std::string("store\xff"));
  SaveOptions save;
  save.user_metadata = {{std::string("k\xff"), std::string("v\xfe")}, {"plain", "text"}};
  SaveStep(dir, StateWithBadBytes(), 1, save);

  const ToolRun show = Inspect({"show", dir, "1"});
  ASSERT_EQ(show.code, 0) << show.Describe();
  EXPECT_NE(show.out.find("\"" + kBadEscaped + "\""), std::string::npos) << show.out;
  EXPECT_NE(show.out.find("key\\xff"), std::string::npos) << show.out;
  EXPECT_NE(show.out.find("metadata k\\xff = v\\xfe"), std::string::npos) << show.out;
  EXPECT_NE(show.out.find("store\\xff"), std::string::npos) << show.out;

  const ToolRun json_show = Inspect({"--json", "show", dir, "1"});
  ASSERT_EQ(json_show.code, 0) << json_show.Describe();
  const Json shown = ParseOrFail(json_show.out);
  EXPECT_EQ(shown.at("user_metadata").at("k\\xff"), "v\\xfe");
  EXPECT_EQ(shown.at("workdir"), root.Sub("store\\xff"));
  bool found = false;
  for (const Json& leaf : shown.at("leaves")) {
    if (leaf.at("path") == "name") {
      EXPECT_EQ(leaf.at("value"), kBadEscaped);
      found = true;
    }
  }
  EXPECT_TRUE(found) << json_show.out;

  for (const std::vector<std::string>& command :
       {std::vector<std::string>{"--json", "list", dir}, {"--json", "stats", dir},
        {"--json", "verify", dir}, {"--json", "diff", dir, "1", "1"}, {"--json", "gc", dir}}) {
    const ToolRun run = Inspect(command);
    EXPECT_EQ(run.code, 0) << command[1] << ": " << run.Describe();
    ParseOrFail(run.out);
  }
  // The file name is escaped in the report; the metadata, which the format
  // requires to be UTF-8, is refused with a clear error.
  const std::string out = root.Sub(std::string("out\xff.safetensors"));
  const ToolRun exported = Inspect({"--json", "export", dir, "1", "--out", out});
  EXPECT_EQ(exported.code, 1) << exported.Describe();
  EXPECT_NE(exported.err.find("UTF-8"), std::string::npos) << exported.err;
  EXPECT_FALSE(fs::exists(out));
}

TEST(InspectHostileTest, ImportKeepsStringsThatAreNotUtf8SoTheyExportAgain) {
  TempDir root;
  SaveStep(root.Sub("a"), StateWithBadBytes(), 1);
  const std::string first = root.Sub("first.safetensors");
  ASSERT_EQ(Inspect({"export", root.Sub("a"), "1", "--out", first}).code, 0);
  // Imported under a name that is not UTF-8: recorded escaped.
  const std::string odd_name = root.Sub(std::string("\xff.safetensors"));
  fs::rename(first, odd_name);
  const ToolRun imported = Inspect({"import", root.Sub("b"), odd_name, "--step", "5"});
  ASSERT_EQ(imported.code, 0) << imported.Describe();
  const ToolRun shown = Inspect({"--json", "show", root.Sub("b"), "5"});
  ASSERT_EQ(shown.code, 0) << shown.Describe();
  EXPECT_EQ(ParseOrFail(shown.out).at("user_metadata").at("ckptdb.imported_from"),
            "\\xff.safetensors");
  const std::string second = root.Sub("second.safetensors");
  const ToolRun exported = Inspect({"export", root.Sub("b"), "5", "--out", second});
  ASSERT_EQ(exported.code, 0) << exported.Describe();

  auto opened = Checkpointer::Open(root.Sub("b"), CheckpointerOptions());
  ASSERT_OK(opened.status());
  Result<Tree> restored = (*opened)->RestoreTree(5);
  ASSERT_OK(restored.status());
  EXPECT_TRUE(restored->ContentEquals(StateWithBadBytes()));
}

class ExportTargetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SaveStep(store_, PlainState(), 1);
    WriteBytes(victim_, "precious");
  }
  static Tree PlainState() {
    Tree state;
    EXPECT_OK(state.Set("weights", Tree::Leaf(Floats({8}, 2.0f))).status());
    return state;
  }
  ToolRun Export(const std::string& out, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"export", store_, "1", "--out", out};
    args.insert(args.end(), extra.begin(), extra.end());
    return Inspect(args);
  }
  // Every entry of the scratch folder but the store, with its kind.
  std::vector<std::string> Entries() {
    std::vector<std::string> entries;
    for (const fs::directory_entry& entry : fs::directory_iterator(root_.path())) {
      if (entry.path() == fs::path(store_)) continue;
      entries.push_back(entry.path().filename().string() +
                        (entry.is_symlink() ? "@" : entry.is_directory() ? "/" : ""));
    }
    std::sort(entries.begin(), entries.end());
    return entries;
  }

  TempDir root_;
  const std::string store_ = root_.Sub("store");
  const std::string victim_ = root_.Sub("victim");
};

TEST_F(ExportTargetTest, APlantedLinkIsNeverFollowed) {
  const std::string out = root_.Sub("out.safetensors");
  fs::create_symlink(victim_, out + ".tmp");
  fs::create_symlink(victim_, out);
  const ToolRun run = Export(out);
  ASSERT_EQ(run.code, 0) << run.Describe();
  EXPECT_EQ(ReadBytes(victim_), "precious");
  EXPECT_TRUE(fs::is_symlink(out + ".tmp"));
  EXPECT_FALSE(fs::is_symlink(out)) << "the link itself is replaced by the file";
  EXPECT_EQ(Entries(), (std::vector<std::string>{"out.safetensors", "out.safetensors.tmp@",
                                                 "victim"}));
}

TEST_F(ExportTargetTest, EmptyNamesDirectoriesDevicesAndStoreFilesAreRefused) {
  const std::string fifo = root_.Sub("fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  fs::create_directory(root_.Sub("dir"));
  const std::vector<std::string> before = Entries();
  for (const std::string& out :
       {std::string(""), root_.Sub("dir"), root_.Sub("dir") + "/", fifo, std::string("/dev/null"),
        store_ + "/CURRENT", store_ + "/new.safetensors", store_ + "/holds/x.safetensors"}) {
    const ToolRun run = Export(out);
    EXPECT_EQ(run.code, 1) << "--out '" << out << "': " << run.Describe();
  }
  EXPECT_EQ(Entries(), before);
  EXPECT_TRUE(fs::is_fifo(fifo));
  EXPECT_TRUE(fs::is_character_file("/dev/null"));
  EXPECT_TRUE(fs::is_empty(root_.Sub("dir")));
  const ToolRun verified = Inspect({"verify", store_});
  EXPECT_EQ(verified.code, 0) << verified.Describe();
}

TEST_F(ExportTargetTest, TheFileIsPrivateUnlessAModeIsGiven) {
  const std::string out = root_.Sub("out.safetensors");
  ASSERT_EQ(Export(out).code, 0);
  EXPECT_EQ(fs::status(out).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);
  const ToolRun shared = Export(out, {"--mode", "644"});
  ASSERT_EQ(shared.code, 0) << shared.Describe();
  EXPECT_EQ(fs::status(out).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                fs::perms::others_read);
  for (const char* bad : {"999", "1000", "rw", ""}) {
    EXPECT_EQ(Export(out, {"--mode", bad}).code, kExitUsage) << bad;
  }
  EXPECT_EQ(Entries(), (std::vector<std::string>{"out.safetensors", "victim"}));
}

TEST(InspectHostileTest, EveryStepTheLibraryAcceptsCanBeNamed) {
  TempDir root;
  const int64_t largest = std::numeric_limits<int64_t>::max();
  Tree state;
  ASSERT_OK(state.Set("w", Tree::Leaf(Floats({3}, 1.0f))).status());
  SaveStep(root.Sub("a"), state, largest);
  const std::string number = std::to_string(largest);
  for (const std::vector<std::string>& command :
       {std::vector<std::string>{"show", root.Sub("a"), number}, {"verify", root.Sub("a"), number},
        {"export", root.Sub("a"), number, "--out", root.Sub("x.safetensors")}}) {
    const ToolRun run = Inspect(command);
    EXPECT_EQ(run.code, 0) << command[0] << ": " << run.Describe();
  }
  const ToolRun imported =
      Inspect({"import", root.Sub("b"), root.Sub("x.safetensors"), "--step", number});
  ASSERT_EQ(imported.code, 0) << imported.Describe();
  const ToolRun listed = Inspect({"--json", "list", root.Sub("b")});
  EXPECT_EQ(ParseOrFail(listed.out).at("steps").at(0).at("step"), largest);
  for (const char* bad : {"9223372036854775808", "-1", "+5", "1e3", " 5"}) {
    EXPECT_EQ(Inspect({"show", root.Sub("a"), bad}).code, kExitUsage) << bad;
  }
}

// Sanitizers slow everything down about tenfold.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr double kSecondsPerCommand = 200;
#else
constexpr double kSecondsPerCommand = 20;
#endif

// 200,000 tensors and 300,000 metadata entries in one step: every command is
// linear (or n log n) in what it reads, so each takes seconds (a quadratic
// one took minutes: show with 300k entries, 170 s).
TEST(InspectHostileTest, EveryCommandIsFastOnAHugeStep) {
  TempDir root;
  const std::string dir = root.Sub("store");
  Tree state;
  Tree* params = state.Set("params", Tree::Map()).value();
  const Tensor one = Floats({1}, 0.5f);
  for (int i = 0; i < 200000; ++i) {
    ASSERT_OK(params->Set("t" + std::to_string(1000000 + i), Tree::Leaf(one)).status());
  }
  SaveOptions save;
  for (int i = 0; i < 300000; ++i) save.user_metadata["key" + std::to_string(1000000 + i)] = "v";
  SaveStep(dir, state, 1, save);
  const std::string out = root.Sub("huge.safetensors");
  for (const std::vector<std::string>& command :
       {std::vector<std::string>{"list", dir}, {"show", dir, "1"}, {"--json", "show", dir, "1"},
        {"stats", dir}, {"verify", dir}, {"diff", dir, "1", "1"},
        {"export", dir, "1", "--out", out}, {"import", root.Sub("copy"), out, "--step", "1"}}) {
    const auto start = std::chrono::steady_clock::now();
    const ToolRun run = Inspect(command);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_EQ(run.code, 0) << command[0] << ": " << run.Describe().substr(0, 2000);
    EXPECT_LT(seconds, kSecondsPerCommand) << command[0] << (command.size() > 1 ? " " + command[1] : "");
    std::printf("%-8s %s: %.2f s\n", command[0].c_str(), command[1].c_str(), seconds);
  }
}

TEST(InspectHostileTest, TheManualsExitCodesForWorkdirsThatAreNoStore) {
  TempDir root;
  const ToolRun missing = Inspect({"show", root.Sub("nothing"), "1"});
  EXPECT_EQ(missing.code, 1) << missing.Describe();
  EXPECT_NE(missing.err.find("NotFound: no ckptdb store in"), std::string::npos) << missing.err;
  WriteBytes(root.Sub("file"), "x");
  const ToolRun file = Inspect({"list", root.Sub("file")});
  EXPECT_EQ(file.code, 1) << file.Describe();
  EXPECT_NE(file.err.find("is not a directory"), std::string::npos) << file.err;
}

}  // namespace
}  // namespace ckptdb
