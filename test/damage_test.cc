// Damage on disk, the way failing disks, full file systems and people cause
// it: every kind of file of a store is deleted, truncated, has bytes flipped
// or is replaced by the same-named file of another store, one file or two at
// once, in stores written in several writer sessions and in one (whose
// records then live only in the write-ahead log), and then opened by a
// reader, a writer, `ckpt-inspect verify` and `ckpt-inspect repair`.
// Whatever happens: no crash, no wrong byte ever returned, no file changed by
// an open that was refused, and after repair every step the damage left
// intact (StoreModel) restores bit-exact, for readers and writers, and the
// store takes new saves again.

#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <random>
#include <set>
#include <sstream>

#include "ckptdb/checkpointer.h"
#include "inspect.h"
#include "manifest.h"
#include "repair.h"
#include "store.h"
#include "store_model.h"
#include "test_util.h"
#include "verifier.h"

namespace ckptdb {
namespace {

namespace fs = std::filesystem;
using testing::FileDamage;
using testing::MakeStepState;
using testing::StoreModel;
using testing::ReadBytes;
using testing::TempDir;
using testing::WriteBytes;

constexpr size_t kMegabytes = 1;
// Steps 2-5 are held; step 1 was pruned (so holds/ exists and the log
// holds a deletion).
const std::vector<int64_t> kSteps = {2, 3, 4, 5};

// How a store was written: in two writer sessions (steps 1-3, closed, which
// writes the records into table files of every family, then 4-5 by a writer
// killed after its last commit, left in the log), or in one such killed
// session (every record of the small families only in the log, as a
// trainer killed in its first run leaves it).
enum class StoreKind { kSessions, kOneSession };
// The other store's states differ from this one's at every step.
constexpr int64_t kForeignOffset = 100;

// Steps 2, 3 and 5 hold delta chunks: damage to a base reaches the steps
// built on it, and repair must see that.
constexpr uint32_t kMaxDeltaChain = 2;

CheckpointerOptions TemplateOptions() { return testing::SmallStoreOptions(kMaxDeltaChain); }

Tree ExpectedState(int64_t step) { return MakeStepState(step, kMegabytes); }

// The last session's writer is killed after its last commit (a closed
// writer flushes its records into table files).
void BuildStore(const std::string& dir, int64_t offset, StoreKind kind) {
  static_assert(kMegabytes == 1, "SaveSmallStoreSteps saves 1 MiB states");
  if (kind == StoreKind::kSessions) {
    auto opened = testing::SaveSmallStoreSteps(dir, offset, kMaxDeltaChain, {1, 2, 3});
    ASSERT_OK(opened.status());
    ASSERT_OK((*opened)->Close());
  }
  testing::SaveStepsAndDie(dir, offset, kMaxDeltaChain,
                           kind == StoreKind::kSessions ? std::vector<int64_t>{4, 5}
                                                        : std::vector<int64_t>{1, 2, 3, 4, 5});
}

enum class FileKind {
  kCurrent,
  kManifest,
  kWal,
  kOptions,
  kChunkFile,
  kIndexTable,
  kManifestTable,
  kIdentity,
  kHolds
};
enum class Damage {
  kDelete,
  kTruncateEmpty,
  kTruncateHalf,
  kFlipHeader,
  kFlipMiddle,
  kFlipFooter,
  kForeign,
  kInsertBeforeFooter
};
enum class Opener { kReader, kWriter, kVerify, kRepair };

const char* Name(FileKind kind) {
  switch (kind) {
    case FileKind::kCurrent: return "Current";
    case FileKind::kManifest: return "Manifest";
    case FileKind::kWal: return "Wal";
    case FileKind::kOptions: return "Options";
    case FileKind::kChunkFile: return "ChunkFile";
    case FileKind::kIndexTable: return "IndexTable";
    case FileKind::kManifestTable: return "ManifestTable";
    case FileKind::kIdentity: return "Identity";
    case FileKind::kHolds: return "Holds";
  }
  return "?";
}

const char* Name(Damage damage) {
  switch (damage) {
    case Damage::kDelete: return "Delete";
    case Damage::kTruncateEmpty: return "TruncateEmpty";
    case Damage::kTruncateHalf: return "TruncateHalf";
    case Damage::kFlipHeader: return "FlipHeader";
    case Damage::kFlipMiddle: return "FlipMiddle";
    case Damage::kFlipFooter: return "FlipFooter";
    case Damage::kForeign: return "Foreign";
    case Damage::kInsertBeforeFooter: return "InsertBeforeFooter";
  }
  return "?";
}

const char* Name(StoreKind kind) {
  return kind == StoreKind::kSessions ? "Sessions" : "OneSession";
}

const char* Name(Opener opener) {
  switch (opener) {
    case Opener::kReader: return "Reader";
    case Opener::kWriter: return "Writer";
    case Opener::kVerify: return "Verify";
    case Opener::kRepair: return "Repair";
  }
  return "?";
}

// Table files by family, from RocksDB's own metadata.
std::map<std::string, std::vector<std::string>> TableFiles(const std::string& dir) {
  std::vector<rocksdb::ColumnFamilyDescriptor> families = {
      {rocksdb::kDefaultColumnFamilyName, {}}, {"chunks", {}}, {"chunk_index", {}}, {"manifests", {}}};
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* db = nullptr;
  rocksdb::Status opened = rocksdb::DB::OpenForReadOnly(rocksdb::DBOptions(), dir, families,
                                                        &handles, &db);
  EXPECT_TRUE(opened.ok()) << opened.ToString();
  std::map<std::string, std::vector<std::string>> files;
  if (!opened.ok()) return files;
  std::vector<rocksdb::LiveFileMetaData> live;
  db->GetLiveFilesMetaData(&live);
  for (const rocksdb::LiveFileMetaData& file : live) {
    files[file.column_family_name].push_back(fs::path(file.name).filename().string());
  }
  for (rocksdb::ColumnFamilyHandle* handle : handles) db->DestroyColumnFamilyHandle(handle);
  delete db;
  for (auto& [family, names] : files) std::sort(names.begin(), names.end());
  return files;
}

// The chunk file of step 4's newest generation (its kernel): chunks of
// steps 4 and 5 lie there, and delta chunks of step 5 rest on them.
std::string Step4ChunkFile(const std::string& dir) {
  auto store = Store::Open(dir, Store::Mode::kReadOnly);
  EXPECT_OK(store.status());
  if (!store.ok()) return "";
  std::map<ChunkDigest, ChunkLocation> location_of;
  EXPECT_OK((*store)->ForEachIndexEntry([&](const IndexEntry& entry) {
    location_of[entry.digest] = entry.location;
    return Status::OK();
  }));
  auto bytes = (*store)->ReadManifest(4);
  EXPECT_TRUE(bytes.ok() && bytes->has_value());
  auto manifest = DecodeManifest(**bytes);
  EXPECT_OK(manifest.status());
  uint64_t newest = 0;
  for (const ManifestNode& node : manifest->nodes) {
    for (const ChunkRef& ref : node.chunks) {
      newest = std::max(newest, location_of.at(ref.digest).generation);
    }
  }
  for (const ChunkFile& file : (*store)->ChunkFiles()) {
    if (newest >= file.first_generation && newest <= file.last_generation) return file.name;
  }
  return "";
}

// The path (relative to the store) of each kind of file the store has: a
// store written in one session has no table files of the small families.
std::map<FileKind, std::string> FilesOfKinds(const std::string& dir) {
  std::map<FileKind, std::string> files;
  files[FileKind::kCurrent] = "CURRENT";
  std::string current = ReadBytes(fs::path(dir) / "CURRENT");
  files[FileKind::kManifest] = current.substr(0, current.find('\n'));
  uint64_t largest_log = 0;
  uint64_t largest_options = 0;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name.ends_with(".log") && entry.file_size() > 0) {
      const uint64_t number = std::stoull(name);
      if (number >= largest_log) files[FileKind::kWal] = name;
      largest_log = std::max(largest_log, number);
    }
    if (name.starts_with("OPTIONS-")) {
      const uint64_t number = std::stoull(name.substr(8));
      if (number >= largest_options) files[FileKind::kOptions] = name;
      largest_options = std::max(largest_options, number);
    }
  }
  std::map<std::string, std::vector<std::string>> tables = TableFiles(dir);
  files[FileKind::kChunkFile] = Step4ChunkFile(dir);
  if (!tables["chunk_index"].empty()) files[FileKind::kIndexTable] = tables["chunk_index"].front();
  if (!tables["manifests"].empty()) files[FileKind::kManifestTable] = tables["manifests"].front();
  files[FileKind::kIdentity] = "CKPTDB";
  files[FileKind::kHolds] = "holds/retention.lock";
  return files;
}

// A store and another store of the same kind (whose files replace its own
// in the Foreign cases), built once for the whole run, copied for each case.
struct Template {
  std::string store;
  std::string foreign;
  std::map<FileKind, std::string> files;
  std::map<FileKind, std::string> foreign_files;
  StoreModel model;
};

class Templates {
 public:
  static const Template& Get(StoreKind kind) {
    // Destroyed at exit, which removes the stores' folder.
    static Templates templates;
    return templates.of_.at(kind);
  }

 private:
  Templates() {
    for (StoreKind kind : {StoreKind::kSessions, StoreKind::kOneSession}) {
      Template& made = of_[kind];
      made.store = root_.Sub(std::string(Name(kind)) + "-store");
      made.foreign = root_.Sub(std::string(Name(kind)) + "-foreign");
      BuildStore(made.store, 0, kind);
      BuildStore(made.foreign, kForeignOffset, kind);
      made.files = FilesOfKinds(made.store);
      made.foreign_files = FilesOfKinds(made.foreign);
      made.model = StoreModel::Of(made.store);
      EXPECT_EQ(made.model.steps(), std::set<int64_t>(kSteps.begin(), kSteps.end()));
    }
  }
  TempDir root_;
  std::map<StoreKind, Template> of_;
};

void CopyStore(const std::string& from, const std::string& to) {
  fs::copy(from, to, fs::copy_options::recursive);
}

// Damages the file `name` of the store in `dir` (`foreign`: the same-named
// file of another store, for kForeign); returns what changed. `at` places a
// flip at that fraction of the file instead of where `damage` says.
FileDamage ApplyDamage(const std::string& dir, const std::string& name, Damage damage,
                       const fs::path& foreign, std::optional<double> at = std::nullopt) {
  const fs::path path = fs::path(dir) / name;
  const std::string bytes = fs::exists(path) ? ReadBytes(path) : "";
  FileDamage done{name, false, std::nullopt, {}};
  auto flip = [&](size_t offset) {
    std::string damaged = bytes;
    if (damaged.empty()) damaged = std::string(16, '\0');  // an empty file gets garbage
    const size_t begin = std::min(offset, damaged.size() >= 16 ? damaged.size() - 16 : 0);
    for (size_t i = begin; i < std::min(damaged.size(), begin + 16); ++i) {
      damaged[i] = static_cast<char>(~damaged[i]);
    }
    done.ranges.emplace_back(begin, begin + 16);
    WriteBytes(path, damaged);
  };
  if (at.has_value()) {
    flip(static_cast<size_t>(*at * static_cast<double>(bytes.size())));
    return done;
  }
  switch (damage) {
    case Damage::kDelete:
      fs::remove(path);
      done.deleted = true;
      break;
    case Damage::kTruncateEmpty:
      WriteBytes(path, "");
      done.truncated_to = 0;
      break;
    case Damage::kTruncateHalf:
      WriteBytes(path, bytes.substr(0, bytes.size() / 2));
      done.truncated_to = bytes.size() / 2;
      break;
    case Damage::kFlipHeader: flip(0); break;
    case Damage::kFlipMiddle: flip(bytes.size() / 2); break;
    case Damage::kFlipFooter: flip(bytes.size()); break;
    case Damage::kForeign: {
      const std::string other = ReadBytes(foreign);
      WriteBytes(path, other);
      done.ranges.emplace_back(0, std::max(bytes.size(), other.size()));
      break;
    }
    case Damage::kInsertBeforeFooter: {
      // Five bytes where a table file's 53-byte footer begins: the file is
      // now longer than its MANIFEST records (as when another store's
      // MANIFEST replaced it), and a footer decoded at the recorded size
      // starts in the inserted bytes: checksum type 0 (none), a metaindex
      // block of 5 bytes at offset 0. RocksDB 7.8 reads table properties so
      // at open without checking the magic number, and its Block asserts on
      // a block that short.
      const size_t at = bytes.size() >= 53 ? bytes.size() - 53 : 0;
      WriteBytes(path, bytes.substr(0, at) + std::string("\0\0\x05\0\0", 5) + bytes.substr(at));
      done.ranges.emplace_back(at, bytes.size() + 5);
      break;
    }
  }
  return done;
}

// Every file's bytes, but for logs RocksDB writes for people and the lock
// files: what a refused open must leave untouched.
std::map<std::string, std::string> Snapshot(const std::string& dir) {
  std::map<std::string, std::string> files;
  for (const fs::directory_entry& entry : fs::recursive_directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_regular_file() || name.starts_with("LOG") || name == "LOCK" ||
        name == "CKPTDB.lock" || name == "CKPTDB.readers") {
      continue;
    }
    files[fs::relative(entry.path(), dir).string()] = ReadBytes(entry.path());
  }
  return files;
}

// Restores every listed step; a restore either fails or returns exactly the
// step's state. Returns the steps that restored.
std::set<int64_t> RestoreAll(Checkpointer& checkpointer, int* wrong) {
  std::set<int64_t> restored;
  for (int64_t step : checkpointer.AllSteps()) {
    Result<Tree> tree = checkpointer.RestoreTree(step);
    if (!tree.ok()) continue;
    if (tree->ContentEquals(ExpectedState(step))) {
      restored.insert(step);
    } else {
      ++*wrong;
      ADD_FAILURE() << "step " << step << " restored wrong bytes";
    }
  }
  return restored;
}

bool IsExpectedRefusal(const Status& status) {
  switch (status.code()) {
    case Status::Code::kCorruption:
    case Status::Code::kNotFound:
    case Status::Code::kFailedPrecondition:
    case Status::Code::kIOError:
      return true;
    default:
      return false;
  }
}

// After a successful repair: verify is clean; a reader restores every kept
// step, again and again (readers once crashed in RocksDB's catch-up on a
// repaired store); a writer restores them too, and saves, retention and GC
// work. Returns the kept steps.
std::set<int64_t> CheckRepaired(const std::string& dir, int* wrong) {
  {
    auto store = Store::Open(dir, Store::Mode::kReadOnly);
    EXPECT_OK(store.status());
    if (store.ok()) {
      Result<VerifyReport> verified = VerifyStore(**store, std::nullopt, {});
      EXPECT_OK(verified.status());
      if (verified.ok()) {
        EXPECT_TRUE(verified->ok()) << verified->problems.front();
      }
    }
  }
  CheckpointerOptions options = TemplateOptions();
  options.max_to_keep = std::nullopt;
  for (int reader = 0; reader < 3; ++reader) {
    CheckpointerOptions reading = options;
    reading.create = false;
    auto opened = Checkpointer::Open(dir, reading);
    EXPECT_OK(opened.status());
    if (!opened.ok()) break;
    const std::vector<int64_t> listed = (*opened)->AllSteps();
    EXPECT_EQ(RestoreAll(**opened, wrong), std::set<int64_t>(listed.begin(), listed.end()));
  }
  auto opened = Checkpointer::Open(dir, options);
  EXPECT_OK(opened.status());
  if (!opened.ok()) return {};
  Checkpointer& checkpointer = **opened;
  const std::vector<int64_t> listed = checkpointer.AllSteps();
  std::set<int64_t> kept = RestoreAll(checkpointer, wrong);
  EXPECT_EQ(kept, std::set<int64_t>(listed.begin(), listed.end()));
  EXPECT_OK(checkpointer.Save(ExpectedState(6), 6, testing::Forced()).status());
  EXPECT_OK(checkpointer.WaitUntilFinished());
  Result<Tree> six = checkpointer.RestoreTree(6);
  EXPECT_OK(six.status());
  if (six.ok()) {
    EXPECT_TRUE(six->ContentEquals(ExpectedState(6)));
  }
  EXPECT_OK(checkpointer.CollectGarbage().status());
  EXPECT_OK(checkpointer.Close());
  return kept;
}

// What a repair did with the steps a damage left intact.
struct RepairOutcome {
  std::set<int64_t> intact;  // by the model
  std::set<int64_t> kept;
  bool identity_lost = false;  // repair refused: nothing could be salvaged
};

// Repairs `dir` and checks the promise: every step `model` calls intact
// after `damage` is kept, and everything kept restores bit-exact. Repair may
// refuse only when the store's identity is lost (then nothing is intact),
// changing nothing.
RepairOutcome RepairAndCheck(const std::string& dir, const StoreModel& model,
                             const std::vector<FileDamage>& damage, int* wrong) {
  RepairOutcome outcome;
  outcome.intact = model.IntactSteps(damage);
  const std::map<std::string, std::string> before = Snapshot(dir);
  Result<RepairReport> report = RepairStore(dir);
  if (!report.ok()) {
    outcome.identity_lost = true;
    EXPECT_TRUE(outcome.intact.empty()) << report.status().ToString();
    EXPECT_EQ(report.status().code(), Status::Code::kCorruption) << report.status().ToString();
    EXPECT_EQ(Snapshot(dir), before);
    return outcome;
  }
  outcome.kept = CheckRepaired(dir, wrong);
  EXPECT_EQ(outcome.kept, std::set<int64_t>(report->kept_steps.begin(), report->kept_steps.end()));
  if (report->changed) {
    EXPECT_TRUE(fs::is_directory(report->backup_dir));
  } else {
    EXPECT_EQ(Snapshot(dir).count("CURRENT"), 1u);
  }
  for (int64_t step : outcome.intact) {
    EXPECT_EQ(outcome.kept.count(step), 1u) << "repair lost step " << step << ", which was intact";
  }
  return outcome;
}

// Sanitizer builds run a fixed share of the cases: CKPTDB_DAMAGE_STRIDE=N
// (default 1, every case) runs those whose name hashes to 0 modulo N.
void SkipUnlessSampled() {
  const uint64_t stride = std::max<uint64_t>(1, testing::EnvNumber("CKPTDB_DAMAGE_STRIDE", 1));
  const std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
  if (std::hash<std::string>{}(name) % stride != 0) GTEST_SKIP() << "not sampled in this run";
}

using DamageCase = std::tuple<StoreKind, FileKind, Damage, Opener>;

class DamageMatrixTest : public ::testing::TestWithParam<DamageCase> {};

TEST_P(DamageMatrixTest, NoCrashNoWrongByteNothingChangedByARefusalAndRepairSalvages) {
  SkipUnlessSampled();
  const auto [store_kind, kind, damage, opener] = GetParam();
  const Template& made = Templates::Get(store_kind);
  ASSERT_EQ(made.files.count(kind), 1u);
  TempDir scratch;
  const std::string dir = scratch.Sub("store");
  CopyStore(made.store, dir);
  std::vector<FileDamage> done;
  if (kind == FileKind::kHolds && damage == Damage::kDelete) {
    fs::remove_all(fs::path(dir) / "holds");
  } else {
    done.push_back(ApplyDamage(dir, made.files.at(kind), damage,
                               fs::path(made.foreign) / made.foreign_files.at(kind)));
  }
  const std::map<std::string, std::string> before = Snapshot(dir);
  int wrong = 0;

  switch (opener) {
    case Opener::kReader:
    case Opener::kWriter: {
      CheckpointerOptions options = TemplateOptions();
      options.max_to_keep = std::nullopt;
      options.create = opener == Opener::kWriter;
      auto opened = Checkpointer::Open(dir, options);
      if (!opened.ok()) {
        EXPECT_TRUE(IsExpectedRefusal(opened.status())) << opened.status().ToString();
        EXPECT_EQ(Snapshot(dir), before) << "a refused open changed files: "
                                         << opened.status().ToString();
        break;
      }
      RestoreAll(**opened, &wrong);
      if (opener == Opener::kWriter) {
        Result<bool> saved = (*opened)->Save(ExpectedState(6), 6, testing::Forced());
        if (saved.ok() && (*opened)->WaitUntilFinished().ok()) {
          // A new step deduplicates onto the chunks already stored: where
          // those sit in a damaged block nobody has read yet, it is as
          // damaged as the steps that stored them (an error, never wrong
          // bytes). Repair removes such chunks from the index.
          Result<Tree> six = (*opened)->RestoreTree(6);
          if (six.ok()) {
            EXPECT_TRUE(six->ContentEquals(ExpectedState(6)));
          } else {
            EXPECT_EQ(kind, FileKind::kChunkFile) << six.status().ToString();
            EXPECT_EQ(six.status().code(), Status::Code::kCorruption) << six.status().ToString();
          }
        }
      }
      (void)(*opened)->Close();
      break;
    }
    case Opener::kVerify: {
      std::ostringstream out;
      std::ostringstream err;
      const int code = RunInspect({"verify", dir}, out, err, false);
      EXPECT_TRUE(code == kExitOk || code == kExitStoreProblem) << out.str() << err.str();
      EXPECT_EQ(Snapshot(dir), before) << "verify changed files";
      if (kind == FileKind::kChunkFile) {
        EXPECT_EQ(code, kExitStoreProblem) << out.str() << err.str();
        EXPECT_NE((out.str() + err.str()).find(made.files.at(kind)), std::string::npos)
            << "verify does not name the damaged file:\n"
            << out.str() << err.str();
      }
      break;
    }
    case Opener::kRepair:
      RepairAndCheck(dir, made.model, done, &wrong);
      break;
  }
  EXPECT_EQ(wrong, 0);
}

std::string CaseName(const ::testing::TestParamInfo<DamageCase>& info) {
  return std::string(Name(std::get<0>(info.param))) + Name(std::get<1>(info.param)) +
         Name(std::get<2>(info.param)) + Name(std::get<3>(info.param));
}

// The kinds of file a store has: one written in one session has no table
// files of the small families.
std::vector<FileKind> FileKindsOf(StoreKind store, const std::vector<FileKind>& kinds) {
  std::vector<FileKind> present;
  for (FileKind kind : kinds) {
    if (store == StoreKind::kSessions ||
        (kind != FileKind::kIndexTable && kind != FileKind::kManifestTable)) {
      present.push_back(kind);
    }
  }
  return present;
}

const std::vector<StoreKind> kStoreKinds = {StoreKind::kSessions, StoreKind::kOneSession};

std::vector<DamageCase> MatrixCases() {
  std::vector<DamageCase> cases;
  for (StoreKind store : kStoreKinds) {
    for (FileKind kind : FileKindsOf(store, {FileKind::kCurrent, FileKind::kManifest, FileKind::kWal,
                                             FileKind::kOptions, FileKind::kChunkFile,
                                             FileKind::kIndexTable, FileKind::kManifestTable,
                                             FileKind::kIdentity, FileKind::kHolds})) {
      for (Damage damage : {Damage::kDelete, Damage::kTruncateEmpty, Damage::kTruncateHalf,
                            Damage::kFlipHeader, Damage::kFlipMiddle, Damage::kFlipFooter,
                            Damage::kForeign, Damage::kInsertBeforeFooter}) {
        for (Opener opener : {Opener::kReader, Opener::kWriter, Opener::kVerify, Opener::kRepair}) {
          cases.emplace_back(store, kind, damage, opener);
        }
      }
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(AllFiles, DamageMatrixTest, ::testing::ValuesIn(MatrixCases()), CaseName);

// Two damages at once: two files, or (the same kind twice) two places a
// third and two thirds into one file; then repair.
using DoubleDamageCase = std::tuple<StoreKind, FileKind, FileKind, Damage>;

class DoubleDamageTest : public ::testing::TestWithParam<DoubleDamageCase> {};

TEST_P(DoubleDamageTest, RepairKeepsEveryStepBothDamagesLeftIntact) {
  SkipUnlessSampled();
  const auto [store_kind, first, second, damage] = GetParam();
  const Template& made = Templates::Get(store_kind);
  ASSERT_EQ(made.files.count(first) + made.files.count(second), 2u);
  TempDir scratch;
  const std::string dir = scratch.Sub("store");
  CopyStore(made.store, dir);
  std::vector<FileDamage> done;
  if (first == second) {
    for (double at : {1.0 / 3, 2.0 / 3}) {
      done.push_back(ApplyDamage(dir, made.files.at(first), damage, "", at));
    }
  } else {
    for (FileKind kind : {first, second}) {
      done.push_back(ApplyDamage(dir, made.files.at(kind), damage,
                                 fs::path(made.foreign) / made.foreign_files.at(kind)));
    }
  }
  int wrong = 0;
  RepairAndCheck(dir, made.model, done, &wrong);
  EXPECT_EQ(wrong, 0);
}

std::string DoubleCaseName(const ::testing::TestParamInfo<DoubleDamageCase>& info) {
  return std::string(Name(std::get<0>(info.param))) + Name(std::get<1>(info.param)) + "And" +
         Name(std::get<2>(info.param)) + Name(std::get<3>(info.param));
}

// The files that hold records (and CURRENT), each with each other and with
// itself.
std::vector<DoubleDamageCase> DoubleCases() {
  std::vector<DoubleDamageCase> cases;
  for (StoreKind store : kStoreKinds) {
    const std::vector<FileKind> kinds =
        FileKindsOf(store, {FileKind::kWal, FileKind::kChunkFile, FileKind::kIndexTable,
                            FileKind::kManifestTable, FileKind::kIdentity, FileKind::kCurrent});
    for (size_t first = 0; first < kinds.size(); ++first) {
      for (size_t second = first; second < kinds.size(); ++second) {
        for (Damage damage : {Damage::kDelete, Damage::kFlipMiddle, Damage::kForeign}) {
          cases.emplace_back(store, kinds[first], kinds[second], damage);
        }
      }
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(TwoDamages, DoubleDamageTest, ::testing::ValuesIn(DoubleCases()),
                         DoubleCaseName);

// A store in a directory the process may not enter (another user's 0700
// store), and a path below it: IOError naming the path, for readers and
// writers; no exception escapes (it would abort the helper process).
TEST(PermissionTest, AStoreThatCannotBeEnteredIsAnIOErrorNamingThePath) {
  TempDir root;
  const std::string store = root.Sub("store");
  {
    auto opened = Checkpointer::Open(store, TemplateOptions());
    ASSERT_OK(opened.status());
    ASSERT_OK((*opened)->Save(ExpectedState(1), 1).status());
    ASSERT_OK((*opened)->Close());
  }
  // The helper runs as another user when this test runs as root; as
  // anyone else, the mode alone keeps it out.
  fs::permissions(root.path(), fs::perms::owner_all | fs::perms::others_exec,
                  fs::perm_options::replace);
  fs::permissions(store, ::geteuid() == 0 ? fs::perms::owner_all : fs::perms::none,
                  fs::perm_options::replace);
  for (const std::string& dir : {store, store + "/below"}) {
    for (const char* mode : {"reader", "writer"}) {
      EXPECT_EQ(testing::RunProcess({testing::TestProcessPath(), "open-unprivileged", dir, mode}), 0)
          << mode << " of " << dir;
    }
  }
  fs::permissions(store, fs::perms::owner_all, fs::perm_options::replace);
}

// A damaged OPTIONS file (RocksDB never reads it back): readers, which
// change no file, open and restore every step without parsing it; a writer,
// whose open would replace it, refuses the store and changes nothing; verify
// reports the file.
TEST(DamagedOptionsTest, ReadersRestoreAWriterRefusesVerifyNamesTheFile) {
  const Template& made = Templates::Get(StoreKind::kSessions);
  TempDir scratch;
  const std::string dir = scratch.Sub("store");
  CopyStore(made.store, dir);
  const std::string options_file = made.files.at(FileKind::kOptions);
  ApplyDamage(dir, options_file, Damage::kTruncateHalf, "");
  const std::map<std::string, std::string> before = Snapshot(dir);

  CheckpointerOptions reading = TemplateOptions();
  reading.max_to_keep = std::nullopt;
  reading.create = false;
  {
    auto reader = Checkpointer::Open(dir, reading);
    ASSERT_OK(reader.status());
    int wrong = 0;
    EXPECT_EQ(RestoreAll(**reader, &wrong), std::set<int64_t>(kSteps.begin(), kSteps.end()));
    EXPECT_EQ(wrong, 0);
  }
  CheckpointerOptions writing = reading;
  writing.create = true;
  auto writer = Checkpointer::Open(dir, writing);
  ASSERT_FALSE(writer.ok());
  EXPECT_EQ(writer.status().code(), Status::Code::kCorruption) << writer.status().ToString();
  EXPECT_NE(writer.status().ToString().find(options_file), std::string::npos)
      << writer.status().ToString();

  std::ostringstream out;
  std::ostringstream err;
  EXPECT_EQ(RunInspect({"verify", dir}, out, err, false), kExitStoreProblem) << out.str() << err.str();
  EXPECT_NE(out.str().find(options_file), std::string::npos) << out.str() << err.str();
  EXPECT_EQ(Snapshot(dir), before);
}

// One random damage to a random file.
FileDamage RandomDamage(const std::string& dir, std::mt19937_64& random, std::string* kind) {
  std::vector<fs::path> files;
  for (const fs::directory_entry& entry : fs::recursive_directory_iterator(dir)) {
    if (entry.is_regular_file()) files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  const fs::path target = files[random() % files.size()];
  std::string bytes = ReadBytes(target);
  FileDamage done{fs::relative(target, dir).string(), false, std::nullopt, {}};
  switch (random() % 4) {
    case 0:
      *kind = "delete";
      fs::remove(target);
      done.deleted = true;
      break;
    case 1: {
      *kind = "truncate";
      const size_t size = bytes.empty() ? 0 : random() % bytes.size();
      WriteBytes(target, bytes.substr(0, size));
      done.truncated_to = size;
      break;
    }
    case 2: {
      *kind = "flip";
      if (bytes.empty()) bytes = "x";
      const size_t at = random() % bytes.size();
      const size_t end = std::min(bytes.size(), at + 1 + random() % 64);
      for (size_t i = at; i < end; ++i) {
        bytes[i] = static_cast<char>(bytes[i] ^ static_cast<char>(1 + random() % 255));
      }
      WriteBytes(target, bytes);
      done.ranges.emplace_back(at, end);
      break;
    }
    default: {
      *kind = "zero a block";
      const size_t at = bytes.empty() ? 0 : random() % bytes.size();
      const size_t end = std::min(bytes.size(), at + 4096);
      for (size_t i = at; i < end; ++i) bytes[i] = '\0';
      WriteBytes(target, bytes);
      done.ranges.emplace_back(at, end);
      break;
    }
  }
  return done;
}

// Two random damages each round (a third of the time in the same file),
// to stores of both kinds. CKPTDB_DAMAGE_ROUNDS sets the count (default
// 60), CKPTDB_DAMAGE_SEED the seed (printed). Reports the steps repair kept
// of those the damage left intact; none may be lost, no byte may be wrong.
TEST(RandomDamageTest, RepairLosesNoIntactStepAndReturnsNoWrongByte) {
  const uint64_t rounds = testing::EnvNumber("CKPTDB_DAMAGE_ROUNDS", 60);
  const uint64_t seed = testing::SeedFromEnv("CKPTDB_DAMAGE_SEED", 20261206);
  std::mt19937_64 random(seed);
  std::map<std::string, int> kinds;
  int wrong = 0;
  uint64_t intact = 0;
  uint64_t salvaged = 0;
  uint64_t lost_intact = 0;
  uint64_t identity_lost = 0;
  for (uint64_t round = 0; round < rounds; ++round) {
    const StoreKind store_kind = round % 2 == 0 ? StoreKind::kSessions : StoreKind::kOneSession;
    const Template& made = Templates::Get(store_kind);
    TempDir scratch;
    const std::string dir = scratch.Sub("store");
    CopyStore(made.store, dir);
    std::vector<FileDamage> done;
    std::string trace = std::string(Name(store_kind)) + ":";
    for (int damage = 0; damage < 2; ++damage) {
      std::string kind;
      if (damage == 1 && random() % 3 == 0 && fs::exists(fs::path(dir) / done[0].file) &&
          fs::file_size(fs::path(dir) / done[0].file) > 0) {
        // A second place in the same file.
        std::string bytes = ReadBytes(fs::path(dir) / done[0].file);
        const size_t at = random() % bytes.size();
        const size_t end = std::min(bytes.size(), at + 1 + random() % 64);
        for (size_t i = at; i < end; ++i) bytes[i] = static_cast<char>(~bytes[i]);
        WriteBytes(fs::path(dir) / done[0].file, bytes);
        done.push_back({done[0].file, false, std::nullopt, {{at, end}}});
        kind = "flip (same file)";
      } else {
        done.push_back(RandomDamage(dir, random, &kind));
      }
      ++kinds[kind];
      trace += " " + kind + " " + done.back().file;
    }
    SCOPED_TRACE("round " + std::to_string(round) + ": " + trace);
    {
      CheckpointerOptions options = TemplateOptions();
      options.create = false;
      auto reader = Checkpointer::Open(dir, options);
      if (reader.ok()) RestoreAll(**reader, &wrong);
    }
    std::ostringstream out;
    std::ostringstream err;
    const int code = RunInspect({"verify", dir}, out, err, false);
    EXPECT_TRUE(code == kExitOk || code == kExitStoreProblem) << out.str() << err.str();
    const RepairOutcome outcome = RepairAndCheck(dir, made.model, done, &wrong);
    identity_lost += outcome.identity_lost;
    intact += outcome.intact.size();
    for (int64_t step : outcome.intact) outcome.kept.count(step) != 0 ? ++salvaged : ++lost_intact;
  }
  std::printf("random double damage: %llu rounds (", static_cast<unsigned long long>(rounds));
  for (const auto& [kind, count] : kinds) std::printf("%s %d; ", kind.c_str(), count);
  std::printf(") intact steps salvaged %llu of %llu (of %llu steps), intact steps lost %llu, "
              "rounds with the identity lost (nothing intact) %llu, wrong bytes %d\n",
              static_cast<unsigned long long>(salvaged), static_cast<unsigned long long>(intact),
              static_cast<unsigned long long>(rounds * kSteps.size()),
              static_cast<unsigned long long>(lost_intact),
              static_cast<unsigned long long>(identity_lost), wrong);
  EXPECT_EQ(lost_intact, 0u);
  EXPECT_EQ(wrong, 0);
}

}  // namespace
}  // namespace ckptdb
