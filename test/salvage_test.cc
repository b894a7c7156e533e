// Salvage reads RocksDB's files without RocksDB: on intact files it must read
// exactly what RocksDB reads, and around damage everything outside it.

#include "salvage.h"

#include <gtest/gtest.h>
#include <rocksdb/options.h>
#include <rocksdb/sst_file_reader.h>
#include <rocksdb/sst_file_writer.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <set>

#include "ckptdb/checkpointer.h"
#include "test_util.h"

namespace ckptdb {
namespace {

namespace fs = std::filesystem;
using testing::ReadBytes;
using testing::TempDir;
using testing::WriteBytes;

// Steps 1-3 in one writer session (its records flushed into table files of
// every family at its close), steps 4-5 by a writer killed after its last
// commit, left in the log.
std::string BuildStore(const TempDir& root) {
  const std::string dir = root.Sub("store");
  auto opened = testing::SaveSmallStoreSteps(dir, 0, 0, {1, 2, 3});
  EXPECT_OK(opened.status());
  if (!opened.ok()) return dir;
  EXPECT_OK((*opened)->Close());
  testing::SaveStepsAndDie(dir, 0, 0, {4, 5});
  return dir;
}

std::vector<fs::path> FilesEndingIn(const std::string& dir, const std::string& suffix) {
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().string().ends_with(suffix) && entry.file_size() > 0) files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

// key -> value of every live entry, as RocksDB reads the file.
std::map<std::string, std::string> RocksDbEntries(const fs::path& path) {
  rocksdb::SstFileReader reader{rocksdb::Options()};
  EXPECT_TRUE(reader.Open(path.string()).ok());
  std::map<std::string, std::string> entries;
  std::unique_ptr<rocksdb::Iterator> it(reader.NewIterator(rocksdb::ReadOptions()));
  for (it->SeekToFirst(); it->Valid(); it->Next()) entries[it->key().ToString()] = it->value().ToString();
  EXPECT_TRUE(it->status().ok()) << it->status().ToString();
  return entries;
}

struct Salvaged {
  TableSalvage table;
  std::map<std::string, std::string> values;
};

Salvaged SalvageBytes(std::string bytes) {
  Salvaged salvaged;
  auto source = SalvageSource::FromBytes(std::move(bytes), "table");
  Result<TableSalvage> table = SalvageTable(*source, [&](const SalvagedRecord& record) {
    if (!record.deletion) salvaged.values[std::string(record.key)] = std::string(record.value);
    return Status::OK();
  });
  EXPECT_OK(table.status());
  if (table.ok()) salvaged.table = *table;
  return salvaged;
}

class SalvageTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new TempDir();
    dir_ = new std::string(BuildStore(*root_));
  }
  static void TearDownTestSuite() {
    delete dir_;
    delete root_;
  }
  static TempDir* root_;
  static std::string* dir_;
};
TempDir* SalvageTest::root_ = nullptr;
std::string* SalvageTest::dir_ = nullptr;

TEST_F(SalvageTest, IntactTableFilesReadExactlyAsRocksDbReadsThem) {
  std::set<std::string> families;
  for (const fs::path& path : FilesEndingIn(*dir_, ".sst")) {
    SCOPED_TRACE(path.string());
    Salvaged salvaged = SalvageBytes(ReadBytes(path));
    EXPECT_TRUE(salvaged.table.intact) << salvaged.table.damage.front();
    EXPECT_TRUE(salvaged.table.damage.empty());
    EXPECT_EQ(salvaged.values, RocksDbEntries(path));
    families.insert(salvaged.table.family);
  }
  EXPECT_EQ(families, (std::set<std::string>{"default", "chunks", "chunk_index", "manifests"}));
}

TEST_F(SalvageTest, AFileWithADamagedFooterOrIndexIsWalkedAndLosesNothing) {
  for (const fs::path& path : FilesEndingIn(*dir_, ".sst")) {
    SCOPED_TRACE(path.string());
    const std::string bytes = ReadBytes(path);
    std::string damaged = bytes;
    for (size_t i = damaged.size() - 20; i < damaged.size(); ++i) damaged[i] = static_cast<char>(~damaged[i]);
    Salvaged salvaged = SalvageBytes(damaged);
    EXPECT_FALSE(salvaged.table.intact);
    EXPECT_EQ(salvaged.values, RocksDbEntries(path));
  }
}

TEST_F(SalvageTest, ADamagedBlockCostsOnlyItsRecords) {
  for (const fs::path& path : FilesEndingIn(*dir_, ".sst")) {
    const std::map<std::string, std::string> all = RocksDbEntries(path);
    if (all.size() < 4) continue;
    SCOPED_TRACE(path.string());
    const std::string bytes = ReadBytes(path);
    // A byte in the first block's data: the indexed read, and with the
    // footer gone as well the walk, must lose exactly that block's records,
    // the smallest keys.
    size_t lost_by_indexed_read = 0;
    for (bool footer_too : {false, true}) {
      std::string damaged = bytes;
      damaged[40] = static_cast<char>(~damaged[40]);
      if (footer_too) damaged.resize(damaged.size() - 10);
      Salvaged salvaged = SalvageBytes(damaged);
      EXPECT_FALSE(salvaged.table.intact);
      EXPECT_FALSE(salvaged.table.damage.empty());
      ASSERT_LT(salvaged.values.size(), all.size());
      const size_t lost = all.size() - salvaged.values.size();
      auto kept = std::next(all.begin(), static_cast<std::ptrdiff_t>(lost));
      EXPECT_TRUE(std::equal(kept, all.end(), salvaged.values.begin(), salvaged.values.end()))
          << "footer gone: " << footer_too;
      if (!footer_too) lost_by_indexed_read = lost;
      // The walk finds the same blocks (small families' blocks are
      // compressed, which the walk does not scan for past damage).
      if (footer_too && all.begin()->first.size() == 24) {
        EXPECT_EQ(lost, lost_by_indexed_read);
      }
    }
  }
}

TEST_F(SalvageTest, ATruncatedChunkFileKeepsTheBlocksBeforeTheCut) {
  for (const fs::path& path : FilesEndingIn(*dir_, ".sst")) {
    const std::map<std::string, std::string> all = RocksDbEntries(path);
    if (all.size() < 4 || all.begin()->first.size() != 24) continue;  // chunk files only
    SCOPED_TRACE(path.string());
    std::string bytes = ReadBytes(path);
    bytes.resize(bytes.size() / 2);
    Salvaged salvaged = SalvageBytes(bytes);
    EXPECT_GE(salvaged.values.size(), all.size() / 2 - 1);
    for (const auto& [key, value] : salvaged.values) EXPECT_EQ(all.at(key), value);
  }
}

// Every record of the logs, by family id and key.
std::map<std::pair<uint32_t, std::string>, std::string> LoggedValues(const std::string& bytes,
                                                                   LogSalvage* salvage) {
  std::map<std::pair<uint32_t, std::string>, std::string> values;
  auto source = SalvageSource::FromBytes(bytes, "log");
  Result<LogSalvage> log = SalvageLog(*source, [&](const std::vector<LoggedRecord>& batch) {
    for (const LoggedRecord& logged : batch) {
      if (!logged.record.deletion) {
        values[{logged.family_id, std::string(logged.record.key)}] = std::string(logged.record.value);
      }
    }
    return Status::OK();
  });
  EXPECT_OK(log.status());
  if (log.ok()) *salvage = *log;
  return values;
}

TEST_F(SalvageTest, TheLogOfASessionHoldsItsManifestsAndADamagedRecordCostsOnlyItsBatch) {
  const std::vector<fs::path> logs = FilesEndingIn(*dir_, ".log");
  ASSERT_FALSE(logs.empty());
  const std::string bytes = ReadBytes(logs.back());
  LogSalvage salvage;
  const auto values = LoggedValues(bytes, &salvage);
  EXPECT_TRUE(salvage.damage.empty()) << salvage.damage.front();
  std::set<std::string> manifest_keys;
  for (const auto& [key, value] : values) {
    if (key.second.size() == 8) manifest_keys.insert(key.second);
  }
  EXPECT_EQ(manifest_keys.size(), 2u);  // steps 4 and 5
  // Flip a byte inside the first batch: it is lost, and nothing else.
  std::string damaged = bytes;
  damaged[20] = static_cast<char>(~damaged[20]);
  LogSalvage damaged_salvage;
  const auto survivors = LoggedValues(damaged, &damaged_salvage);
  EXPECT_EQ(damaged_salvage.batches + 1, salvage.batches);
  EXPECT_FALSE(damaged_salvage.damage.empty());
  for (const auto& [key, value] : survivors) EXPECT_EQ(values.at(key), value);
}

TEST(SalvageHostileTest, RandomBytesNeverCrashAndYieldNothingWrong) {
  std::mt19937_64 random(testing::SeedFromEnv("CKPTDB_SALVAGE_SEED", 7));
  // Bytes of four values parse as plausible entries and fragment headers at
  // nearly every offset: the worst case of the scans past damage.
  for (int round = 0; round < 60; ++round) {
    std::string bytes(random() % 70000, '\0');
    for (char& c : bytes) c = static_cast<char>(random() % (round % 2 == 0 ? 4 : 256));
    auto source = SalvageSource::FromBytes(bytes, "random");
    EXPECT_OK(SalvageTable(*source, [](const SalvagedRecord&) { return Status::OK(); }).status());
    EXPECT_OK(SalvageLog(*source, [](const std::vector<LoggedRecord>&) { return Status::OK(); }).status());
  }
}

}  // namespace
}  // namespace ckptdb
