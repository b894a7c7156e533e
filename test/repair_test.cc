// Repair (lib/repair.h) beyond the damage matrix: what it refuses to touch,
// readers before, during and after it, a repair killed at any moment, the
// rule that no damaged chunk stays indexed, space given back, and its
// folders.

#include "repair.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <set>

#include "ckptdb/checkpointer.h"
#include "repair_files.h"
#include "store.h"
#include "store_directory.h"
#include "store_model.h"
#include "fault_injection_fs.h"
#include "test_util.h"
#include "verifier.h"

namespace ckptdb {
namespace {

namespace fs = std::filesystem;
using testing::MakeStepState;
using testing::ReadBytes;
using testing::TempDir;
using testing::WriteBytes;

constexpr size_t kMegabytes = 1;

CheckpointerOptions SmallOptions() {
  CheckpointerOptions options;
  options.chunk_size_bytes = 64 << 10;
  options.staging_bytes = 4 << 20;
  options.max_to_keep = std::nullopt;
  return options;
}

// Steps `steps` saved in one writer session.
void SaveSteps(const std::string& dir, const std::vector<int64_t>& steps,
               CheckpointerOptions options = SmallOptions()) {
  auto opened = Checkpointer::Open(dir, options);
  ASSERT_OK(opened.status());
  for (int64_t step : steps) {
    ASSERT_OK((*opened)->Save(MakeStepState(step, kMegabytes), step, testing::Forced()).status());
  }
  ASSERT_OK((*opened)->Close());
}

void FlipMiddle(const fs::path& path) {
  std::string bytes = ReadBytes(path);
  for (size_t i = bytes.size() / 2; i < bytes.size() / 2 + 16 && i < bytes.size(); ++i) {
    bytes[i] = static_cast<char>(~bytes[i]);
  }
  WriteBytes(path, bytes);
}

std::set<std::string> Listing(const std::string& dir) {
  std::set<std::string> names;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    names.insert(fs::relative(entry.path(), dir).string());
  }
  return names;
}

// Every step listed restores bit-exact; returns them.
std::set<int64_t> RestoreAll(const std::string& dir, bool reader) {
  CheckpointerOptions options = SmallOptions();
  options.create = !reader;
  auto opened = Checkpointer::Open(dir, options);
  EXPECT_OK(opened.status());
  if (!opened.ok()) return {};
  std::set<int64_t> restored;
  for (int64_t step : (*opened)->AllSteps()) {
    Result<Tree> tree = (*opened)->RestoreTree(step);
    EXPECT_OK(tree.status()) << "step " << step;
    if (tree.ok() && tree->ContentEquals(MakeStepState(step, kMegabytes))) restored.insert(step);
  }
  EXPECT_OK((*opened)->Close());
  return restored;
}

// The chunk files (names) of the store, by the generation they hold.
std::map<uint64_t, std::string> ChunkFilesByGeneration(const std::string& dir) {
  auto store = Store::Open(dir, Store::Mode::kReadOnly);
  EXPECT_OK(store.status());
  std::map<uint64_t, std::string> files;
  if (!store.ok()) return files;
  for (const ChunkFile& file : (*store)->ChunkFiles()) files[file.first_generation] = file.name;
  return files;
}

// One tensor of 256 KiB of compressible noise drawn from `seed`; with
// `tweak`, the same but one byte changed in every 4 KiB (so that a delta
// encoding of it rests on every chunk of the untweaked state).
Tree NoiseState(uint64_t seed, uint8_t tweak) {
  Tensor bytes = Tensor::Allocate(DType::kUInt8, {256 << 10}).value();
  std::mt19937_64 random(seed);
  auto* data = reinterpret_cast<uint8_t*>(bytes.mutable_data());
  for (int64_t i = 0; i < bytes.shape()[0]; ++i) data[i] = static_cast<uint8_t>(random() % 7);
  for (int64_t i = 0; i < bytes.shape()[0]; i += 4 << 10) data[i] ^= tweak;
  Tree tree;
  (void)tree.Set("bytes", Tree::Leaf(bytes));
  return tree;
}

TEST(RepairTest, AMissingPathAnEmptyFolderAndAFolderOfOtherFilesAreLeftAsTheyAre) {
  TempDir root;
  const std::string missing = root.Sub("missing");
  Result<RepairReport> report = RepairStore(missing);
  EXPECT_EQ(report.status().code(), Status::Code::kNotFound) << report.status().ToString();
  EXPECT_FALSE(fs::exists(missing));

  const std::string empty = root.Sub("empty");
  fs::create_directory(empty);
  report = RepairStore(empty);
  EXPECT_EQ(report.status().code(), Status::Code::kNotFound) << report.status().ToString();
  EXPECT_TRUE(fs::is_empty(empty));

  const std::string other = root.Sub("other");
  fs::create_directory(other);
  WriteBytes(fs::path(other) / "notes.txt", "mine");
  report = RepairStore(other);
  EXPECT_EQ(report.status().code(), Status::Code::kFailedPrecondition) << report.status().ToString();
  EXPECT_EQ(Listing(other), std::set<std::string>{"notes.txt"});
}

TEST(RepairTest, AHealthyStoreIsLeftUntouched) {
  TempDir root;
  const std::string dir = root.Sub("store");
  SaveSteps(dir, {1, 2});
  const std::set<std::string> before = Listing(dir);
  Result<RepairReport> report = RepairStore(dir);
  ASSERT_OK(report.status());
  EXPECT_FALSE(report->changed);
  EXPECT_EQ(report->kept_steps, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(Listing(dir), before);
}

TEST(RepairTest, RefusesWhileAReaderHasTheStoreOpenAndKeepsReadersOutWhileItRuns) {
  TempDir root;
  const std::string dir = root.Sub("store");
  SaveSteps(dir, {1});
  {
    CheckpointerOptions options = SmallOptions();
    options.create = false;
    auto reader = Checkpointer::Open(dir, options);
    ASSERT_OK(reader.status());
    Result<RepairReport> report = RepairStore(dir);
    EXPECT_EQ(report.status().code(), Status::Code::kBusy) << report.status().ToString();
    EXPECT_NE(report.status().ToString().find("readers"), std::string::npos);
  }
  // What repair holds while it works keeps a reader out, with a clear word.
  Result<LockedFile> repairing = LockOutReaders(dir);
  ASSERT_OK(repairing.status());
  CheckpointerOptions options = SmallOptions();
  options.create = false;
  auto reader = Checkpointer::Open(dir, options);
  EXPECT_EQ(reader.status().code(), Status::Code::kBusy) << reader.status().ToString();
  EXPECT_NE(reader.status().ToString().find("repair"), std::string::npos);
}

// An evaluator opening and restoring in a loop in another process while the
// store is damaged and repaired again and again: it never crashes and never
// reads a wrong byte; repair waits for a moment the evaluator has it closed.
TEST(RepairTest, ALiveEvaluatorNeverCrashesNorReadsAWrongByteAcrossRepairs) {
  TempDir root;
  const std::string dir = root.Sub("store");
  SaveSteps(dir, {1, 2, 3});
  const pid_t evaluator = testing::SpawnProcess(
      {testing::TestProcessPath(), "restore-loop", dir, std::to_string(kMegabytes), "6"});
  ASSERT_GT(evaluator, 0);
  int repairs = 0;
  for (int round = 0; round < 6; ++round) {
    fs::remove(fs::path(dir) / "CURRENT");
    for (int attempt = 0; attempt < 2000; ++attempt) {
      Result<RepairReport> report = RepairStore(dir);
      if (report.ok()) {
        ++repairs;
        break;
      }
      ASSERT_EQ(report.status().code(), Status::Code::kBusy) << report.status().ToString();
    }
  }
  EXPECT_EQ(testing::WaitProcess(evaluator), 0);
  EXPECT_EQ(repairs, 6);
  EXPECT_EQ(RestoreAll(dir, /*reader=*/true), (std::set<int64_t>{1, 2, 3}));
}

// Repair killed at a random moment, again and again: every open in between
// either works or is refused cleanly, and the next repair finishes the job
// and keeps every step.
TEST(RepairTest, ARepairKilledAtAnyMomentIsFinishedByTheNext) {
  TempDir root;
  const std::string dir = root.Sub("store");
  SaveSteps(dir, {1, 2, 3});
  std::mt19937_64 random(testing::SeedFromEnv("CKPTDB_REPAIR_KILL_SEED", 17));
  const int rounds = static_cast<int>(testing::EnvNumber("CKPTDB_REPAIR_KILLS", 12));
  for (int round = 0; round < rounds; ++round) {
    fs::remove(fs::path(dir) / "CURRENT");
    const pid_t repair = testing::SpawnProcess({testing::TestProcessPath(), "repair", dir});
    ASSERT_GT(repair, 0);
    usleep(static_cast<useconds_t>(random() % 150000));
    kill(repair, SIGKILL);
    testing::WaitProcess(repair);
    CheckpointerOptions options = SmallOptions();
    options.create = false;
    auto reader = Checkpointer::Open(dir, options);
    if (!reader.ok()) {
      EXPECT_EQ(reader.status().code(), Status::Code::kCorruption) << reader.status().ToString();
    }
  }
  Result<RepairReport> report = RepairStore(dir);
  ASSERT_OK(report.status());
  EXPECT_EQ(RestoreAll(dir, /*reader=*/true), (std::set<int64_t>{1, 2, 3}));
  EXPECT_EQ(RestoreAll(dir, /*reader=*/false), (std::set<int64_t>{1, 2, 3}));
  // No folder of the killed repairs outlives the kept ones.
  size_t repair_dirs = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    repair_dirs += entry.path().filename().string().starts_with("repair-");
  }
  EXPECT_LE(repair_dirs, kKeptRepairDirs);
}

// The rule: a chunk is used for dedup or as a delta base only if it is
// indexed and intact, and after repair every indexed chunk is intact. A
// damaged chunk no step uses (a pruned step's, before GC) leaves the index,
// so saving the same bytes again stores them anew.
TEST(RepairTest, ADamagedChunkNoStepUsesLeavesTheIndexAndTheNextSaveStoresItAnew) {
  TempDir root;
  const std::string dir = root.Sub("store");
  CheckpointerOptions options = SmallOptions();
  options.gc_mode = GcMode::kOff;
  // Two states that share no chunk, so that step 1's file is step 1's alone.
  auto state = [](uint64_t seed) { return NoiseState(seed, 0); };
  {
    auto opened = Checkpointer::Open(dir, options);
    ASSERT_OK(opened.status());
    for (int64_t step : {1, 2}) {
      ASSERT_OK((*opened)->Save(state(step), step, testing::Forced()).status());
    }
    ASSERT_OK((*opened)->Delete(1));  // its chunks stay indexed: GC is off
    ASSERT_OK((*opened)->Close());
  }
  const std::map<uint64_t, std::string> files = ChunkFilesByGeneration(dir);
  ASSERT_EQ(files.size(), 2u);
  FlipMiddle(fs::path(dir) / files.begin()->second);  // step 1's chunks
  Result<RepairReport> report = RepairStore(dir);
  ASSERT_OK(report.status());
  EXPECT_TRUE(report->changed) << "a damaged indexed chunk is damage, referenced or not";
  EXPECT_EQ(report->kept_steps, (std::vector<int64_t>{2}));
  {
    auto store = Store::Open(dir, Store::Mode::kReadOnly);
    ASSERT_OK(store.status());
    Result<VerifyReport> verified = VerifyStore(**store, std::nullopt, {});
    ASSERT_OK(verified.status());
    EXPECT_TRUE(verified->ok()) << verified->problems.front();
  }
  // Step 1's state again, as step 3: it must restore.
  auto opened = Checkpointer::Open(dir, options);
  ASSERT_OK(opened.status());
  ASSERT_OK((*opened)->Save(state(1), 3, testing::Forced()).status());
  ASSERT_OK((*opened)->WaitUntilFinished());
  Result<Tree> three = (*opened)->RestoreTree(3);
  ASSERT_OK(three.status());
  EXPECT_TRUE(three->ContentEquals(state(1)));
}

// Delta chunks whose base GC deleted are garbage that can no longer be
// decoded: repair must not index them, or the next save of the same bytes
// (and retention after it) leaves only an unrestorable step.
TEST(RepairTest, GarbageDeltaChunksWithoutTheirBaseAreNotIndexed) {
  TempDir root;
  const std::string dir = root.Sub("store");
  CheckpointerOptions options = SmallOptions();
  options.max_delta_chain = 1;
  options.max_to_keep = 1;
  SaveSteps(dir, {1, 2, 3}, options);
  fs::remove(fs::path(dir) / "CURRENT");
  ASSERT_OK(RepairStore(dir).status());
  auto opened = Checkpointer::Open(dir, options);
  ASSERT_OK(opened.status());
  for (int64_t step : {2, 4}) {  // step 2's bytes again: its chunks are garbage now
    ASSERT_OK((*opened)->Save(MakeStepState(step, kMegabytes), step + 2, testing::Forced()).status());
    ASSERT_OK((*opened)->WaitUntilFinished());
    Result<Tree> latest = (*opened)->RestoreTree(kLatestStep);
    ASSERT_OK(latest.status()) << "after saving step " << step + 2;
    EXPECT_TRUE(latest->ContentEquals(MakeStepState(step, kMegabytes)));
  }
}

uint64_t StoreBytes(const std::string& dir) {
  uint64_t bytes = 0;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    const std::string relative = fs::relative(entry.path(), dir).string();
    if (entry.is_regular_file() && !relative.starts_with("repair-")) bytes += entry.file_size();
  }
  return bytes;
}

// After a repair that dropped steps, GC gives their space back: the chunk
// files lie in the bottom level, where GC can drop them whole. Damage and
// repair again and again: the store does not grow, nor do the repair
// folders pile up.
TEST(RepairTest, GcGivesBackTheSpaceOfDroppedStepsAndRepairFoldersStayFew) {
  TempDir root;
  const std::string damaged = root.Sub("damaged");
  SaveSteps(damaged, {1, 2, 3, 4});
  const std::map<uint64_t, std::string> files = ChunkFilesByGeneration(damaged);
  ASSERT_EQ(files.size(), 4u);
  // Steps 3 and 4 lose their own chunk files.
  for (auto it = std::next(files.begin(), 2); it != files.end(); ++it) {
    fs::remove(fs::path(damaged) / it->second);
  }
  Result<RepairReport> report = RepairStore(damaged);
  ASSERT_OK(report.status());
  EXPECT_EQ(report->kept_steps, (std::vector<int64_t>{1, 2}));
  // The same history without the dropped steps, undamaged.
  const std::string reference = root.Sub("reference");
  SaveSteps(reference, {1, 2});
  auto collect = [](const std::string& dir) {
    auto opened = Checkpointer::Open(dir, SmallOptions());
    EXPECT_OK(opened.status());
    if (opened.ok()) {
      EXPECT_OK((*opened)->CollectGarbage().status());
      EXPECT_OK((*opened)->Close());
    }
  };
  collect(damaged);
  collect(reference);
  {
    auto store = Store::Open(damaged, Store::Mode::kReadOnly);
    ASSERT_OK(store.status());
    for (const ChunkFile& file : (*store)->ChunkFiles()) EXPECT_GT(file.level, 0) << file.name;
  }
  const uint64_t reference_bytes = StoreBytes(reference);
  EXPECT_LE(StoreBytes(damaged), reference_bytes + (256u << 10))
      << "reference " << reference_bytes;
  for (int cycle = 0; cycle < 4; ++cycle) {
    fs::remove(fs::path(damaged) / "CURRENT");
    ASSERT_OK(RepairStore(damaged).status());
    collect(damaged);
  }
  EXPECT_LE(StoreBytes(damaged), reference_bytes + (256u << 10));
  size_t repair_dirs = 0;
  for (const auto& entry : fs::directory_iterator(damaged)) {
    repair_dirs += entry.path().filename().string().starts_with("repair-");
  }
  EXPECT_EQ(repair_dirs, kKeptRepairDirs);
  EXPECT_EQ(RestoreAll(damaged, /*reader=*/true), (std::set<int64_t>{1, 2}));
}

// Names planted in the store that point outside it: repair moves nothing
// there and writes nothing there.
TEST(RepairTest, NothingIsWrittenOrMovedOutsideTheStore) {
  TempDir root;
  const std::string dir = root.Sub("store");
  SaveSteps(dir, {1, 2});
  const std::string outside = root.Sub("outside");
  fs::create_directory(outside);
  WriteBytes(fs::path(outside) / "keep", "mine");
  fs::create_directory_symlink(outside, fs::path(dir) / "lost");
  fs::create_directory_symlink(outside, fs::path(dir) / "repair-20991231T235959Z");
  fs::remove(fs::path(dir) / "CURRENT");
  Result<RepairReport> report = RepairStore(dir);
  ASSERT_OK(report.status());
  EXPECT_EQ(report->kept_steps, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(Listing(outside), std::set<std::string>{"keep"});
  EXPECT_TRUE(fs::is_symlink(fs::path(dir) / "lost"));
  EXPECT_EQ(RestoreAll(dir, /*reader=*/true), (std::set<int64_t>{1, 2}));
}

// A repair that runs out of space (or meets an I/O error) while it builds
// the new store, wherever that happens, leaves the store as it was and no
// repair folder; the next repair, with space, keeps every step.
TEST(RepairTest, NoSpaceWhileRebuildingLeavesTheStoreAsItWas) {
  TempDir root;
  const std::string dir = root.Sub("store");
  SaveSteps(dir, {1, 2, 3});
  fs::remove(fs::path(dir) / "CURRENT");
  const std::set<std::string> before = Listing(dir);
  for (int successes : {0, 1, 3, 8, 20, 60}) {
    testing::FaultInjectionFs faults;
    faults.Arm("/rebuilt/", testing::FaultInjectionFs::Fault::kNoSpace, successes);
    Result<RepairReport> report = RepairStore(dir, faults.env());
    if (report.ok()) break;  // the build needed fewer writes than that
    EXPECT_GT(faults.injected(), 0);
    EXPECT_NE(report.status().ToString().find("nothing in " + dir + " was changed"),
              std::string::npos)
        << report.status().ToString();
    EXPECT_EQ(Listing(dir), before) << "after " << successes << " writes";
  }
  ASSERT_OK(RepairStore(dir).status());
  EXPECT_EQ(RestoreAll(dir, /*reader=*/true), (std::set<int64_t>{1, 2, 3}));
}

// Verify names a damaged delta base's file, and not the intact files of the
// delta chunks resting on it (they cannot be restored, but are not damaged).
TEST(VerifyTest, ADamagedDeltaBaseIsTheOnlyDamagedFile) {
  TempDir root;
  const std::string dir = root.Sub("store");
  CheckpointerOptions options = SmallOptions();
  options.max_delta_chain = 1;
  {
    auto opened = Checkpointer::Open(dir, options);
    ASSERT_OK(opened.status());
    // Every chunk of step 2 is stored as a delta on step 1's.
    ASSERT_OK((*opened)->Save(NoiseState(1, 0), 1, testing::Forced()).status());
    ASSERT_OK((*opened)->Save(NoiseState(1, 1), 2, testing::Forced()).status());
    ASSERT_OK((*opened)->Close());
  }
  const std::map<uint64_t, std::string> files = ChunkFilesByGeneration(dir);
  ASSERT_EQ(files.size(), 2u);
  FlipMiddle(fs::path(dir) / files.begin()->second);  // step 1's: step 2's deltas rest on it
  auto store = Store::Open(dir, Store::Mode::kReadOnly);
  ASSERT_OK(store.status());
  Result<VerifyReport> verified = VerifyStore(**store, std::nullopt, {});
  ASSERT_OK(verified.status());
  ASSERT_FALSE(verified->ok());
  EXPECT_EQ(verified->damaged_steps.count(2), 1u) << "step 2's deltas cannot be restored";
  std::set<std::string> damaged;
  for (const auto& [file, steps] : verified->damaged_files) damaged.insert(file);
  EXPECT_EQ(damaged, std::set<std::string>{files.begin()->second});
}

// A reader opened before the writer's first commit, asked to restore with
// noop_if_missing, looks at the store again instead of trusting its
// empty step list.
TEST(ReaderTest, NoopIfMissingLooksForStepsCommittedSinceTheReaderOpened) {
  TempDir root;
  const std::string dir = root.Sub("store");
  auto writer = Checkpointer::Open(dir, SmallOptions());
  ASSERT_OK(writer.status());
  CheckpointerOptions options = SmallOptions();
  options.create = false;
  auto reader = Checkpointer::Open(dir, options);
  ASSERT_OK(reader.status());
  Tree state = testing::ZeroedLike(MakeStepState(1, kMegabytes));
  RestoreOptions restore;
  restore.noop_if_missing = true;
  ASSERT_OK((*reader)->Restore(&state, kLatestStep, restore));  // nothing yet: untouched
  ASSERT_OK((*writer)->Save(MakeStepState(1, kMegabytes), 1, testing::Forced()).status());
  ASSERT_OK((*writer)->WaitUntilFinished());
  ASSERT_OK((*reader)->Restore(&state, kLatestStep, restore));
  EXPECT_TRUE(state.ContentEquals(MakeStepState(1, kMegabytes)));
}

}  // namespace
}  // namespace ckptdb
