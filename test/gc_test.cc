// Garbage collection: what it frees, what it must never free, and what it
// must not read.

#include "garbage_collector.h"

#include <gtest/gtest.h>
#include <rocksdb/perf_context.h>
#include <rocksdb/perf_level.h>

#include <filesystem>
#include <random>

#include "ckptdb/checkpointer.h"
#include "store.h"
#include "test_util.h"

namespace ckptdb {
namespace {

using testing::MakeStepState;
using testing::TempDir;

// Bytes of the table files holding chunks (RocksDB's metadata of the store).
uint64_t ChunkFileBytes(const std::string& dir) {
  auto store = Store::Open(dir, Store::Mode::kReadOnly);
  EXPECT_TRUE(store.ok()) << store.status().ToString();
  uint64_t bytes = 0;
  for (const ChunkFile& file : (*store)->ChunkFiles()) bytes += file.bytes;
  return bytes;
}

Tree IncompressibleState(size_t kib, uint64_t seed) {
  Tensor tensor = Tensor::Allocate(DType::kUInt8, {static_cast<int64_t>(kib) * 1024}).value();
  std::mt19937_64 rng(seed);
  for (uint64_t i = 0; i < tensor.byte_size(); ++i) {
    tensor.mutable_data()[i] = static_cast<std::byte>(rng());
  }
  Tree state;
  (void)state.Set("data", Tree::Leaf(tensor));
  return state;
}

std::unique_ptr<Checkpointer> Open(const std::string& dir, CheckpointerOptions options) {
  auto opened = Checkpointer::Open(dir, std::move(options));
  EXPECT_TRUE(opened.ok()) << opened.status().ToString();
  return opened.ok() ? std::move(*opened) : nullptr;
}

void ExpectRestores(Checkpointer& checkpointer, const std::vector<int64_t>& steps,
                    size_t megabytes) {
  for (int64_t step : steps) {
    Result<Tree> restored = checkpointer.RestoreTree(step);
    ASSERT_OK(restored.status());
    EXPECT_TRUE(restored->ContentEquals(MakeStepState(step, megabytes))) << "step " << step;
  }
}

TEST(GcTest, AStoreUnderRetentionStaysBounded) {
  TempDir dir;
  constexpr size_t kMegabytes = 4;
  CheckpointerOptions options;
  options.max_to_keep = 3;
  options.chunk_size_bytes = 256 << 10;
  auto checkpointer = Open(dir.path(), options);
  uint64_t live_bytes = 0;
  for (int64_t step = 0; step < 40; ++step) {
    ASSERT_TRUE(checkpointer->Save(MakeStepState(step, kMegabytes), step).value());
  }
  EXPECT_EQ(checkpointer->AllSteps(), (std::vector<int64_t>{37, 38, 39}));
  Result<GcStats> stats = checkpointer->CollectGarbage();
  ASSERT_OK(stats.status());
  live_bytes = stats->live_bytes;
  ASSERT_OK(checkpointer->Close());
  const uint64_t on_disk = testing::DirectoryBytes(dir.path());
  // Everything on disk (chunks, index, manifests, logs) within 1.3x of the
  // chunk bytes the three live steps need.
  EXPECT_LE(static_cast<double>(on_disk), 1.3 * static_cast<double>(live_bytes))
      << on_disk << " bytes on disk for " << live_bytes << " live chunk bytes";
  auto reopened = Open(dir.path(), options);
  ExpectRestores(*reopened, {37, 38, 39}, kMegabytes);
}

TEST(GcTest, GcOffLeavesGarbageAndOnDemandCollectionFreesIt) {
  TempDir dir;
  CheckpointerOptions options;
  options.max_to_keep = 1;
  options.gc_mode = GcMode::kOff;
  auto checkpointer = Open(dir.path(), options);
  for (int64_t step = 0; step < 5; ++step) {
    ASSERT_TRUE(checkpointer->Save(IncompressibleState(512, step), step).value());
  }
  ASSERT_OK(checkpointer->WaitUntilFinished());
  const uint64_t before = ChunkFileBytes(dir.path());
  EXPECT_GE(before, 5u * 512 * 1024) << "without GC every step's chunks stay";
  Result<GcStats> stats = checkpointer->CollectGarbage();
  ASSERT_OK(stats.status());
  EXPECT_EQ(stats->chunks_deleted, 4u);
  EXPECT_EQ(stats->generations_dropped, 4u);
  EXPECT_EQ(stats->chunks_live, 1u);
  const uint64_t after = ChunkFileBytes(dir.path());
  EXPECT_LT(after, 600u * 1024);
  Result<Tree> restored = checkpointer->RestoreTree(4);
  ASSERT_OK(restored.status());
  EXPECT_TRUE(restored->ContentEquals(IncompressibleState(512, 4)));
}

TEST(GcTest, ThresholdModeWaitsForEnoughGarbage) {
  TempDir dir;
  CheckpointerOptions options;
  options.max_to_keep = 2;
  options.gc_mode = GcMode::kGarbageThreshold;
  options.gc_garbage_threshold = 0.5;
  auto checkpointer = Open(dir.path(), options);
  constexpr uint64_t kStepBytes = 256u * 1024;
  for (int64_t step = 0; step < 3; ++step) {
    ASSERT_TRUE(checkpointer->Save(IncompressibleState(256, step), step).value());
  }
  // Saving step 2 pruned step 0: one step of three is garbage, 33% < 50%.
  ASSERT_OK(checkpointer->WaitUntilFinished());
  EXPECT_GE(ChunkFileBytes(dir.path()), 3 * kStepBytes);
  // Saving step 3 prunes step 1: two of four, 50%, so GC runs.
  ASSERT_TRUE(checkpointer->Save(IncompressibleState(256, 3), 3).value());
  ASSERT_OK(checkpointer->WaitUntilFinished());
  EXPECT_LT(ChunkFileBytes(dir.path()), 3 * kStepBytes);
  EXPECT_GE(ChunkFileBytes(dir.path()), 2 * kStepBytes);
}

TEST(GcTest, PartlyDeadGenerationsAreRewritten) {
  TempDir dir;
  CheckpointerOptions options;
  options.max_to_keep = 1;
  options.gc_mode = GcMode::kOff;
  auto checkpointer = Open(dir.path(), options);
  // Step 0 writes a small tensor that every step keeps and a big one that
  // changes: once step 0 is pruned, its file is mostly dead.
  Tree shared = IncompressibleState(64, 100);
  auto state_for = [&](int64_t step) {
    Tree state = IncompressibleState(1024, step);
    (void)state.Set("shared", Tree::Leaf(shared.Find("data")->tensor()));
    return state;
  };
  ASSERT_TRUE(checkpointer->Save(state_for(0), 0).value());
  ASSERT_TRUE(checkpointer->Save(state_for(1), 1).value());
  Result<GcStats> stats = checkpointer->CollectGarbage();
  ASSERT_OK(stats.status());
  EXPECT_EQ(stats->generations_rewritten, 1u);
  EXPECT_EQ(stats->bytes_rewritten, 64u * 1024 + 6);  // the shared chunk and its header
  EXPECT_EQ(stats->chunks_deleted, 1u);
  EXPECT_LT(ChunkFileBytes(dir.path()), (1024u + 64 + 64) * 1024);
  Result<Tree> restored = checkpointer->RestoreTree(1);
  ASSERT_OK(restored.status());
  EXPECT_TRUE(restored->ContentEquals(state_for(1)));
  // A second pass finds nothing more to do.
  stats = checkpointer->CollectGarbage();
  ASSERT_OK(stats.status());
  EXPECT_EQ(stats->chunks_deleted + stats->generations_dropped + stats->generations_rewritten, 0u);
}

TEST(GcTest, ASaveThatDedupsAgainstGarbageKeepsItAlive) {
  // The interleaving the invariant is about: retention drops the only step
  // using a chunk, a new save dedups against that chunk before GC runs, then
  // GC runs. The chunk must survive.
  TempDir dir;
  CheckpointerOptions options;
  options.max_to_keep = 1;
  options.gc_mode = GcMode::kOff;
  auto checkpointer = Open(dir.path(), options);
  ASSERT_TRUE(checkpointer->Save(IncompressibleState(256, 7), 0).value());
  ASSERT_TRUE(checkpointer->Save(IncompressibleState(256, 8), 1).value());  // prunes 0
  ASSERT_TRUE(checkpointer->Save(IncompressibleState(256, 7), 2).value());  // dedups 0's chunk
  Result<GcStats> stats = checkpointer->CollectGarbage();
  ASSERT_OK(stats.status());
  EXPECT_EQ(stats->chunks_deleted, 1u);  // step 1's chunk only
  Result<Tree> restored = checkpointer->RestoreTree(2);
  ASSERT_OK(restored.status());
  EXPECT_TRUE(restored->ContentEquals(IncompressibleState(256, 7)));
}

TEST(GcTest, GarbageLeftByACrashedSaveIsReclaimed) {
  TempDir dir;
  {
    auto checkpointer = Open(dir.path(), CheckpointerOptions());
    ASSERT_TRUE(checkpointer->Save(IncompressibleState(128, 1), 1).value());
  }
  {
    // What a save killed between ingestion and commit leaves behind.
    auto store = Store::Open(dir.path(), Store::Mode::kWrite);
    ASSERT_OK(store.status());
    auto writer = (*store)->NewGeneration();
    ASSERT_OK(writer.status());
    ASSERT_OK((*writer)->Add(ChunkDigest{1, 2}, std::string(100000, 'x')));
    ASSERT_OK((*writer)->Finish());
  }
  auto checkpointer = Open(dir.path(), CheckpointerOptions());
  Result<GcStats> stats = checkpointer->CollectGarbage();
  ASSERT_OK(stats.status());
  EXPECT_EQ(stats->generations_dropped, 1u);
  EXPECT_EQ(stats->chunks_live, 1u);
  Result<Tree> restored = checkpointer->RestoreTree(1);
  ASSERT_OK(restored.status());
  EXPECT_TRUE(restored->ContentEquals(IncompressibleState(128, 1)));
}

TEST(GcTest, RefusesWhenAStepReferencesAMissingChunk) {
  TempDir dir;
  {
    CheckpointerOptions options;
    options.max_to_keep = std::nullopt;
    auto checkpointer = Open(dir.path(), options);
    ASSERT_TRUE(checkpointer->Save(IncompressibleState(64, 1), 1).value());
    ASSERT_TRUE(checkpointer->Save(IncompressibleState(64, 2), 2).value());
    ASSERT_OK(checkpointer->Delete(1));  // leaves garbage GC would delete
  }
  {
    // Lose step 2's index entry, as a corrupted store might.
    auto store = Store::Open(dir.path(), Store::Mode::kWrite);
    ASSERT_OK(store.status());
    std::vector<IndexEntry> entries;
    ASSERT_OK((*store)->ForEachIndexEntry([&](const IndexEntry& entry) {
      entries.push_back(entry);
      return Status::OK();
    }));
    ASSERT_EQ(entries.size(), 2u);
    std::vector<ChunkDigest> step2_digest;
    auto manifest_bytes = (*store)->ReadManifest(2);
    ASSERT_OK(manifest_bytes.status());
    for (const IndexEntry& entry : entries) {
      if (manifest_bytes->value().find(std::string(reinterpret_cast<const char*>(&entry.digest.low),
                                                   8)) != std::string::npos) {
        step2_digest.push_back(entry.digest);
      }
    }
    ASSERT_EQ(step2_digest.size(), 1u);
    ASSERT_OK((*store)->UpdateIndex({}, step2_digest));
  }
  const uint64_t before = ChunkFileBytes(dir.path());
  auto checkpointer = Open(dir.path(), CheckpointerOptions());
  Result<GcStats> stats = checkpointer->CollectGarbage();
  EXPECT_TRUE(stats.status().IsCorruption()) << stats.status().ToString();
  EXPECT_NE(stats.status().message().find("nothing was deleted"), std::string::npos);
  EXPECT_NE(stats.status().message().find("is referenced but missing"), std::string::npos);
  EXPECT_EQ(ChunkFileBytes(dir.path()), before);
}

TEST(GcTest, ReadsNoChunkBytesWhenNothingNeedsRewriting) {
  TempDir dir;
  CheckpointerOptions options;
  options.max_to_keep = 2;
  options.gc_mode = GcMode::kOff;
  auto checkpointer = Open(dir.path(), options);
  for (int64_t step = 0; step < 6; ++step) {
    ASSERT_TRUE(checkpointer->Save(IncompressibleState(2048, step), step).value());
  }
  rocksdb::SetPerfLevel(rocksdb::PerfLevel::kEnableCount);
  rocksdb::get_perf_context()->Reset();
  Result<GcStats> stats = checkpointer->CollectGarbage();
  const uint64_t block_bytes_read = rocksdb::get_perf_context()->block_read_byte;
  rocksdb::SetPerfLevel(rocksdb::PerfLevel::kDisable);
  ASSERT_OK(stats.status());
  EXPECT_EQ(stats->generations_dropped, 4u);
  EXPECT_EQ(stats->generations_rewritten, 0u);
  // 12 MiB of chunks are stored; GC reads index and manifest blocks only.
  EXPECT_LT(block_bytes_read, 64u * 1024) << "GC read chunk payloads";
}

}  // namespace
}  // namespace ckptdb
