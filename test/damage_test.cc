// Damage on disk, the way failing disks, full file systems and people cause
// it: every kind of file of a store is deleted, truncated, has bytes flipped
// or is replaced by the same-named file of another store, and then opened by
// a reader, a writer, `ckpt-inspect verify` and `ckpt-inspect repair`.
// Whatever happens: no crash, no wrong byte ever returned, no file changed by
// an open that was refused, and after repair every step whose data was
// intact restores bit-exact and the store takes new saves again.

#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
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
#include "test_util.h"
#include "verifier.h"

namespace ckptdb {
namespace {

namespace fs = std::filesystem;
using testing::MakeStepState;
using testing::TempDir;

constexpr size_t kMegabytes = 1;
// Steps 2-5 are held; step 1 was pruned (so holds/ exists and the log
// holds a deletion).
const std::vector<int64_t> kSteps = {2, 3, 4, 5};
// The other store's states differ from this one's at every step.
constexpr int64_t kForeignOffset = 100;

CheckpointerOptions TemplateOptions() {
  CheckpointerOptions options;
  options.max_to_keep = 4;
  options.chunk_size_bytes = 64 << 10;
  options.staging_bytes = 4 << 20;  // the default pool (256 MiB) would dominate each case
  // Steps 2, 3 and 5 hold delta chunks: damage to a base reaches the steps
  // built on it, and repair must see that.
  options.max_delta_chain = 2;
  return options;
}

Tree ExpectedState(int64_t step) { return MakeStepState(step, kMegabytes); }

// Steps 1-3, then a reopen (RocksDB writes the log's contents into table
// files of every family), then steps 4-5, which stay in the write-ahead log.
void BuildStore(const std::string& dir, int64_t offset) {
  for (auto steps : {std::vector<int64_t>{1, 2, 3}, std::vector<int64_t>{4, 5}}) {
    auto opened = Checkpointer::Open(dir, TemplateOptions());
    ASSERT_OK(opened.status());
    for (int64_t step : steps) {
      ASSERT_OK((*opened)->Save(MakeStepState(step + offset, kMegabytes), step, testing::Forced())
                    .status());
    }
    ASSERT_OK((*opened)->Close());
  }
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
  kForeign
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
  }
  return "?";
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

std::string ReadBytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void WriteBytes(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
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

// The chunk file and the steps that use it, its chunks or chunks based on
// them: the file of step 4's newest generation (its kernel).
struct ChunkFileUse {
  std::string file;
  std::set<int64_t> steps;
};

ChunkFileUse Step4ChunkFile(const std::string& dir) {
  ChunkFileUse use;
  auto store = Store::Open(dir, Store::Mode::kReadOnly);
  EXPECT_OK(store.status());
  if (!store.ok()) return use;
  std::map<ChunkDigest, ChunkLocation> location_of;
  EXPECT_OK((*store)->ForEachIndexEntry([&](const IndexEntry& entry) {
    location_of[entry.digest] = entry.location;
    return Status::OK();
  }));
  std::map<int64_t, std::set<uint64_t>> generations_of_step;
  for (int64_t step : kSteps) {
    auto bytes = (*store)->ReadManifest(step);
    EXPECT_TRUE(bytes.ok() && bytes->has_value());
    auto manifest = DecodeManifest(**bytes);
    EXPECT_OK(manifest.status());
    for (const ManifestNode& node : manifest->nodes) {
      for (const ChunkRef& ref : node.chunks) {
        // A delta chunk's step uses the generations of its whole chain.
        for (ChunkLocation at = location_of.at(ref.digest);; at = location_of.at(at.delta_base)) {
          generations_of_step[step].insert(at.generation);
          if (at.delta_depth == 0) break;
        }
      }
    }
  }
  const uint64_t generation = *generations_of_step[4].rbegin();
  for (const ChunkFile& file : (*store)->ChunkFiles()) {
    if (generation >= file.first_generation && generation <= file.last_generation) {
      use.file = file.name;
    }
  }
  for (const auto& [step, generations] : generations_of_step) {
    if (generations.count(generation) != 0) use.steps.insert(step);
  }
  return use;
}

// The path (relative to the store) of each kind of file.
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
  files[FileKind::kChunkFile] = Step4ChunkFile(dir).file;
  files[FileKind::kIndexTable] = tables["chunk_index"].at(0);
  files[FileKind::kManifestTable] = tables["manifests"].at(0);
  files[FileKind::kIdentity] = "CKPTDB";
  files[FileKind::kHolds] = "holds/retention.lock";
  return files;
}

// Two stores built once for the whole run, copied for each case.
class Templates {
 public:
  static Templates& Get() {
    static Templates* templates = new Templates();
    return *templates;
  }
  const std::string& store() const { return store_; }
  const std::string& foreign() const { return foreign_; }
  const std::map<FileKind, std::string>& files() const { return files_; }
  const std::map<FileKind, std::string>& foreign_files() const { return foreign_files_; }
  const ChunkFileUse& chunk_file_use() const { return chunk_file_use_; }

 private:
  Templates() : store_(root_.Sub("store")), foreign_(root_.Sub("foreign")) {
    BuildStore(store_, 0);
    BuildStore(foreign_, kForeignOffset);
    files_ = FilesOfKinds(store_);
    foreign_files_ = FilesOfKinds(foreign_);
    chunk_file_use_ = Step4ChunkFile(store_);
  }
  TempDir root_;
  std::string store_;
  std::string foreign_;
  std::map<FileKind, std::string> files_;
  std::map<FileKind, std::string> foreign_files_;
  ChunkFileUse chunk_file_use_;
};

void CopyStore(const std::string& from, const std::string& to) {
  fs::copy(from, to, fs::copy_options::recursive);
}

void ApplyDamage(const fs::path& path, Damage damage, const fs::path& foreign) {
  const std::string bytes = fs::exists(path) ? ReadBytes(path) : "";
  auto flip = [&](size_t offset) {
    std::string damaged = bytes;
    if (damaged.empty()) damaged = std::string(16, '\0');  // an empty file gets garbage
    for (size_t i = 0; i < 16; ++i) {
      const size_t at = std::min(offset, damaged.size() >= 16 ? damaged.size() - 16 : 0) + i;
      if (at < damaged.size()) damaged[at] = static_cast<char>(~damaged[at]);
    }
    WriteBytes(path, damaged);
  };
  switch (damage) {
    case Damage::kDelete: fs::remove(path); break;
    case Damage::kTruncateEmpty: WriteBytes(path, ""); break;
    case Damage::kTruncateHalf: WriteBytes(path, bytes.substr(0, bytes.size() / 2)); break;
    case Damage::kFlipHeader: flip(0); break;
    case Damage::kFlipMiddle: flip(bytes.size() / 2); break;
    case Damage::kFlipFooter: flip(bytes.size()); break;
    case Damage::kForeign: WriteBytes(path, ReadBytes(foreign)); break;
  }
}

// Every file's bytes, but for logs RocksDB writes for people and the lock
// files: what a refused open must leave untouched.
std::map<std::string, std::string> Snapshot(const std::string& dir) {
  std::map<std::string, std::string> files;
  for (const fs::directory_entry& entry : fs::recursive_directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_regular_file() || name.starts_with("LOG") || name == "LOCK" ||
        name == "CKPTDB.lock") {
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

// After a successful repair: every kept step restores bit-exact, verify is
// clean, and saves, retention and GC work. Returns the kept steps.
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

using DamageCase = std::tuple<FileKind, Damage, Opener>;

class DamageMatrixTest : public ::testing::TestWithParam<DamageCase> {};

TEST_P(DamageMatrixTest, NoCrashNoWrongByteNothingChangedByARefusalAndRepairSalvages) {
  const auto [kind, damage, opener] = GetParam();
  const Templates& templates = Templates::Get();
  TempDir scratch;
  const std::string dir = scratch.Sub("store");
  CopyStore(templates.store(), dir);
  const fs::path target = fs::path(dir) / templates.files().at(kind);
  if (kind == FileKind::kHolds && damage == Damage::kDelete) {
    fs::remove_all(fs::path(dir) / "holds");
  } else {
    ApplyDamage(target, damage, fs::path(templates.foreign()) / templates.foreign_files().at(kind));
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
        EXPECT_NE((out.str() + err.str()).find(templates.files().at(kind)), std::string::npos)
            << "verify does not name the damaged file:\n"
            << out.str() << err.str();
      }
      break;
    }
    case Opener::kRepair: {
      Result<RepairReport> report = RepairStore(dir);
      ASSERT_OK(report.status());
      const std::set<int64_t> kept = CheckRepaired(dir, &wrong);
      EXPECT_EQ(kept, std::set<int64_t>(report->kept_steps.begin(), report->kept_steps.end()));
      if (report->changed) {
        EXPECT_TRUE(fs::is_directory(report->backup_dir));
      } else {
        EXPECT_EQ(Snapshot(dir).count("CURRENT"), 1u);
      }
      // Containment: what the damage could not have touched is kept.
      std::set<int64_t> must_keep;
      switch (kind) {
        case FileKind::kCurrent:
        case FileKind::kManifest:
        case FileKind::kOptions:
        case FileKind::kIdentity:
        case FileKind::kHolds:
          must_keep.insert(kSteps.begin(), kSteps.end());
          break;
        case FileKind::kChunkFile:
          for (int64_t step : kSteps) {
            if (templates.chunk_file_use().steps.count(step) == 0) must_keep.insert(step);
          }
          break;
        case FileKind::kWal:  // steps 2 and 3 are in table files
          must_keep = {2, 3};
          break;
        case FileKind::kIndexTable:     // steps 4 and 5 and the index
        case FileKind::kManifestTable:  // entries of their chunks are in the log
          must_keep = {};
          break;
      }
      for (int64_t step : must_keep) {
        EXPECT_EQ(kept.count(step), 1u) << "repair lost step " << step << ", which was intact";
      }
      break;
    }
  }
  EXPECT_EQ(wrong, 0);
}

std::string CaseName(const ::testing::TestParamInfo<DamageCase>& info) {
  return std::string(Name(std::get<0>(info.param))) + Name(std::get<1>(info.param)) +
         Name(std::get<2>(info.param));
}

INSTANTIATE_TEST_SUITE_P(
    AllFiles, DamageMatrixTest,
    ::testing::Combine(
        ::testing::Values(FileKind::kCurrent, FileKind::kManifest, FileKind::kWal,
                          FileKind::kOptions, FileKind::kChunkFile, FileKind::kIndexTable,
                          FileKind::kManifestTable, FileKind::kIdentity, FileKind::kHolds),
        ::testing::Values(Damage::kDelete, Damage::kTruncateEmpty, Damage::kTruncateHalf,
                          Damage::kFlipHeader, Damage::kFlipMiddle, Damage::kFlipFooter,
                          Damage::kForeign),
        ::testing::Values(Opener::kReader, Opener::kWriter, Opener::kVerify, Opener::kRepair)),
    CaseName);

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

// Random damage to a random file, many rounds. CKPTDB_DAMAGE_ROUNDS sets the
// count (default 12), CKPTDB_DAMAGE_SEED the seed (printed).
TEST(RandomDamageTest, NoWrongByteAndRepairAlwaysLeavesAWorkingStore) {
  const uint64_t rounds = testing::EnvNumber("CKPTDB_DAMAGE_ROUNDS", 12);
  const uint64_t seed = testing::SeedFromEnv("CKPTDB_DAMAGE_SEED", 20261201);
  std::mt19937_64 random(seed);
  const Templates& templates = Templates::Get();
  std::map<std::string, int> kinds;
  int wrong = 0;
  uint64_t salvaged = 0;
  uint64_t dropped = 0;
  uint64_t failed_repairs = 0;
  for (uint64_t round = 0; round < rounds; ++round) {
    TempDir scratch;
    const std::string dir = scratch.Sub("store");
    CopyStore(templates.store(), dir);
    std::vector<fs::path> files;
    for (const fs::directory_entry& entry : fs::recursive_directory_iterator(dir)) {
      if (entry.is_regular_file()) files.push_back(entry.path());
    }
    std::sort(files.begin(), files.end());
    const fs::path target = files[random() % files.size()];
    std::string bytes = ReadBytes(target);
    std::string kind;
    switch (random() % 4) {
      case 0:
        kind = "delete";
        fs::remove(target);
        break;
      case 1:
        kind = "truncate";
        WriteBytes(target, bytes.substr(0, bytes.empty() ? 0 : random() % bytes.size()));
        break;
      case 2: {
        kind = "flip";
        if (bytes.empty()) bytes = "x";
        const size_t at = random() % bytes.size();
        const size_t count = 1 + random() % 64;
        for (size_t i = at; i < std::min(bytes.size(), at + count); ++i) {
          bytes[i] = static_cast<char>(bytes[i] ^ static_cast<char>(1 + random() % 255));
        }
        WriteBytes(target, bytes);
        break;
      }
      default: {
        kind = "zero a block";
        const size_t at = bytes.empty() ? 0 : random() % bytes.size();
        for (size_t i = at; i < std::min(bytes.size(), at + 4096); ++i) bytes[i] = '\0';
        WriteBytes(target, bytes);
        break;
      }
    }
    ++kinds[kind];
    SCOPED_TRACE("round " + std::to_string(round) + ": " + kind + " " +
                 fs::relative(target, dir).string());
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
    Result<RepairReport> report = RepairStore(dir);
    if (!report.ok()) {
      ++failed_repairs;
      ADD_FAILURE() << "repair failed: " << report.status().ToString();
      continue;
    }
    const std::set<int64_t> kept = CheckRepaired(dir, &wrong);
    salvaged += kept.size();
    dropped += report->dropped_steps.size();
  }
  std::printf("random damage: %llu rounds (", static_cast<unsigned long long>(rounds));
  for (const auto& [kind, count] : kinds) std::printf("%s %d; ", kind.c_str(), count);
  std::printf(") steps salvaged %llu of %llu, dropped by repair %llu, failed repairs %llu, "
              "wrong bytes %d\n",
              static_cast<unsigned long long>(salvaged),
              static_cast<unsigned long long>(rounds * kSteps.size()),
              static_cast<unsigned long long>(dropped),
              static_cast<unsigned long long>(failed_repairs), wrong);
  EXPECT_EQ(wrong, 0);
}

}  // namespace
}  // namespace ckptdb
