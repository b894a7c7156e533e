// Tests of the save pipeline on its own, with the stager (this thread) and
// the writer (a second thread) running as the Checkpointer runs them, in the
// corners the randomized model test only reaches by chance: a staging pool of
// one slot, speculative copies beside a writer waiting for slots, a stager
// that fails mid-save, a writer that fails mid-save. Every case must end
// (no thread waits for ever), commit all or nothing, and give every staging
// slot back.

#include "save_pipeline.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "chunk_codec.h"
#include "fault_injection_fs.h"
#include "manifest_generated.h"
#include "restore.h"
#include "store.h"
#include "test_util.h"

namespace ckptdb {
namespace {

using testing::TempDir;

constexpr uint32_t kChunk = 64 << 10;

// A state of `chunks` chunks of pseudo-random (incompressible) values that
// differ with `seed`: every chunk is new, and stored as large as it is.
Tree MakeState(int chunks, uint32_t seed) {
  const int64_t elements = int64_t{chunks} * kChunk / 4;
  Tensor tensor = Tensor::Allocate(DType::kUInt32, {elements}).value();
  std::span<uint32_t> values = tensor.MutableValues<uint32_t>().value();
  uint32_t x = seed * 2654435761u + 1;
  for (int64_t i = 0; i < elements; ++i) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    values[i] = x;
  }
  Tree state;
  EXPECT_OK(state.SetPath("params/w", Tree::Leaf(std::move(tensor))));
  EXPECT_OK(state.SetPath("step", Tree::Int(static_cast<int64_t>(seed))));
  return state;
}

SavePipeline::Settings Settings(size_t staging_slots) {
  SavePipeline::Settings settings;
  settings.chunk_size_bytes = kChunk;
  settings.staging_bytes = staging_slots * kChunk;
  settings.threads = 2;
  return settings;
}

Manifest Header(int64_t step) {
  Manifest header;
  header.step = step;
  return header;
}

struct SaveOutcome {
  Status staged;
  Status written;
  // OK when both sides succeeded.
  Status Error() const { return staged.ok() ? written : staged; }
};

// Runs a staged save the way the Checkpointer does: the writer on its own
// thread, staging on this one.
SaveOutcome StagedSave(SavePipeline& pipeline, const Tree& state, int64_t step) {
  Result<std::shared_ptr<PendingSave>> save =
      pipeline.Prepare(state, Header(step), {}, SavePipeline::Source::kStaged);
  EXPECT_OK(save.status());
  if (!save.ok()) return {save.status(), save.status()};
  SaveOutcome outcome;
  std::thread writer([&] { outcome.written = pipeline.WriteAndCommit(**save); });
  outcome.staged = pipeline.Stage(**save);
  writer.join();
  return outcome;
}

void ExpectStored(Store& store, int64_t step, const Tree& state) {
  Result<Manifest> manifest = ReadStepManifest(store, step);
  ASSERT_OK(manifest.status());
  Result<Tree> restored = RestoreSubtree(store, *manifest, "", 2);
  ASSERT_OK(restored.status());
  EXPECT_TRUE(restored->ContentEquals(state));
}

class SavePipelineTest : public ::testing::Test {
 protected:
  std::unique_ptr<Store> OpenStore(rocksdb::Env* env = nullptr) {
    Result<std::unique_ptr<Store>> store = Store::Open(dir_.path(), Store::Mode::kWrite, env);
    EXPECT_OK(store.status());
    return store.ok() ? std::move(*store) : nullptr;
  }
  TempDir dir_;
};

TEST_F(SavePipelineTest, OneStagingSlotCarriesAWholeSave) {
  auto store = OpenStore();
  SavePipeline pipeline(store.get(), Settings(1));
  const Tree state = MakeState(48, 1);
  ASSERT_OK(StagedSave(pipeline, state, 1).Error());
  ExpectStored(*store, 1, state);
  EXPECT_EQ(pipeline.staging_pool()->max_slots(), 1u);
  EXPECT_EQ(pipeline.staging_pool()->SlotsInUse(), 0u);
}

TEST_F(SavePipelineTest, SpeculativeCopiesBesideAWriterWaitingForSlots) {
  auto store = OpenStore();
  // 6 slots, a writer window of 4: 2 slots for speculative copies while
  // hashing, the rest staged while the writer frees slots.
  SavePipeline pipeline(store.get(), Settings(6));
  const Tree first = MakeState(40, 1);
  ASSERT_OK(StagedSave(pipeline, first, 1).Error());
  // The second save's chunks were all new at their paths last time: each is
  // predicted new and copied while hashed, as far as the budget goes.
  const Tree second = MakeState(40, 2);
  ASSERT_OK(StagedSave(pipeline, second, 2).Error());
  ExpectStored(*store, 1, first);
  ExpectStored(*store, 2, second);
  EXPECT_EQ(pipeline.staging_pool()->SlotsInUse(), 0u);
}

// Tensors of many sizes below and around the chunk size: staged chunks
// share slots, the last of each slot's chunks gives it back.
Tree SmallTensorsState(uint32_t seed) {
  Tree state;
  uint32_t x = seed * 2654435761u + 7;
  for (int i = 0; i < 600; ++i) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    // 65 bytes (just past the manifest's inline limit) up to 1.5 chunks.
    const int64_t elements = 17 + x % (kChunk * 3 / 8);
    Tensor tensor = Tensor::Allocate(DType::kUInt32, {elements}).value();
    std::span<uint32_t> values = tensor.MutableValues<uint32_t>().value();
    for (int64_t k = 0; k < elements; ++k) values[k] = x + static_cast<uint32_t>(k) * 40503u;
    EXPECT_OK(state.SetPath("t/" + std::to_string(i), Tree::Leaf(std::move(tensor))));
  }
  return state;
}

TEST_F(SavePipelineTest, SmallChunksShareStagingSlots) {
  for (size_t slots : {1, 2, 3}) {
    SCOPED_TRACE(std::to_string(slots) + " slots");
    TempDir dir;
    auto store = Store::Open(dir.path(), Store::Mode::kWrite).value();
    SavePipeline pipeline(store.get(), Settings(slots));
    for (uint32_t step = 1; step <= 3; ++step) {
      const Tree state = SmallTensorsState(step);
      ASSERT_OK(StagedSave(pipeline, state, step).Error());
      ExpectStored(*store, step, state);
      EXPECT_EQ(pipeline.staging_pool()->SlotsInUse(), 0u);
    }
  }
}

TEST_F(SavePipelineTest, AStagerThatFailsStopsTheWriterAndNothingCommits) {
  auto store = OpenStore();
  // Memory for 2 slots, then none: the stager fails once the writer has
  // taken those two.
  std::atomic<int> allocations{0};
  std::atomic<bool> memory_left{false};
  SavePipeline::Settings settings = Settings(4);
  settings.allocate_staging = [&](size_t alignment, size_t bytes) -> void* {
    if (!memory_left && allocations >= 2) return nullptr;
    ++allocations;
    return std::aligned_alloc(alignment, bytes);
  };
  SavePipeline pipeline(store.get(), settings);
  const Tree state = MakeState(32, 3);
  SaveOutcome outcome = StagedSave(pipeline, state, 3);
  EXPECT_EQ(outcome.staged.code(), Status::Code::kInvalidArgument) << outcome.staged.ToString();
  EXPECT_FALSE(outcome.written.ok());
  EXPECT_TRUE(store->ListSteps().value().empty());
  EXPECT_EQ(pipeline.staging_pool()->SlotsInUse(), 0u);

  // With memory again, the next save goes through.
  memory_left = true;
  ASSERT_OK(StagedSave(pipeline, state, 3).Error());
  ExpectStored(*store, 3, state);
  EXPECT_EQ(pipeline.staging_pool()->SlotsInUse(), 0u);
}

TEST_F(SavePipelineTest, AWriterThatFailsStopsTheStagerAndNothingCommits) {
  testing::FaultInjectionFs fs;
  auto store = OpenStore(fs.env());
  SavePipeline pipeline(store.get(), Settings(2));
  const Tree state = MakeState(64, 4);
  // The generation's file cannot be written: the writer, started when the
  // stager ran out of slots, stops while the stager waits for the slots it
  // holds (its writes are buffered, so a later failure would come only
  // after staging ended).
  fs.Arm("staging/generation", testing::FaultInjectionFs::Fault::kIOError);
  SaveOutcome outcome = StagedSave(pipeline, state, 4);
  EXPECT_FALSE(outcome.written.ok());
  EXPECT_FALSE(outcome.staged.ok());
  EXPECT_TRUE(store->ListSteps().value().empty());
  EXPECT_EQ(pipeline.staging_pool()->SlotsInUse(), 0u);

  fs.Disarm();
  ASSERT_OK(StagedSave(pipeline, state, 4).Error());
  ExpectStored(*store, 4, state);
}

TEST_F(SavePipelineTest, ChunksTheStoreHoldsAreNotWrittenAgain) {
  auto store = OpenStore();
  SavePipeline pipeline(store.get(), Settings(4));
  const Tree state = MakeState(16, 5);
  ASSERT_OK(StagedSave(pipeline, state, 1).Error());
  Result<std::shared_ptr<PendingSave>> again =
      pipeline.Prepare(state, Header(2), {}, SavePipeline::Source::kCallerWaits);
  ASSERT_OK(again.status());
  EXPECT_EQ((*again)->new_chunk_count(), 0u);
  ASSERT_OK(pipeline.WriteAndCommit(**again));
  // A staged save with nothing new: its writer, waiting for nothing, may
  // commit before the stager runs; staging then has nothing to do.
  Result<std::shared_ptr<PendingSave>> staged =
      pipeline.Prepare(state, Header(3), {}, SavePipeline::Source::kStaged);
  ASSERT_OK(staged.status());
  ASSERT_EQ((*staged)->new_chunk_count(), 0u);
  ASSERT_OK(pipeline.WriteAndCommit(**staged));
  ASSERT_OK(pipeline.Stage(**staged));
  EXPECT_EQ(store->ChunkFiles().size(), 1u);
  ExpectStored(*store, 2, state);
}

// Float chunks are stored as byte planes (codec 3) in a store of format 2,
// and as one grouped frame (codec 2) in a store of format 1, which earlier
// builds must keep reading; both restore bit-exact.
TEST_F(SavePipelineTest, AStoreKeepsTheCodecsOfItsFormatVersion) {
  for (uint32_t version : {kStoreFormatVersion, kFirstPackedStoreFormatVersion - 1,
                           kOldestStoreFormatVersion}) {
    SCOPED_TRACE("format version " + std::to_string(version));
    TempDir dir;
    { ASSERT_OK(Store::Open(dir.path(), Store::Mode::kWrite).status()); }
    std::string encoded(4, '\0');
    encoded[0] = static_cast<char>(version);
    ASSERT_OK(testing::PutRawValue(dir.path(), "default", "ckptdb.format_version", encoded));
    Result<std::unique_ptr<Store>> store = Store::Open(dir.path(), Store::Mode::kWrite);
    ASSERT_OK(store.status());
    EXPECT_EQ((*store)->format_version(), version);
    SavePipeline pipeline(store->get(), Settings(4));
    Tensor weights = Tensor::Allocate(DType::kFloat32, {kChunk / 4}).value();
    std::span<float> values = weights.MutableValues<float>().value();
    for (size_t i = 0; i < values.size(); ++i) values[i] = 0.02f * std::sin(float(i) * 0.37f);
    Tree state;
    ASSERT_OK(state.SetPath("w", Tree::Leaf(std::move(weights))));
    ASSERT_OK(state.SetPath("b", Tree::Leaf(Tensor::Allocate(DType::kFloat32, {4}).value())));
    ASSERT_OK(StagedSave(pipeline, state, 1).Error());
    Result<Manifest> manifest = ReadStepManifest(**store, 1);
    ASSERT_OK(manifest.status());
    // Packed manifests, holding tiny tensors inline, from version 4 on:
    // earlier builds read neither.
    Result<std::optional<std::string>> raw = (*store)->ReadManifest(1);
    ASSERT_OK(raw.status());
    const bool packed = version >= kFirstPackedStoreFormatVersion;
    EXPECT_EQ(fb::GetManifest((*raw)->data())->format_version(), packed ? 3u : 1u);
    const ManifestNode& tiny = manifest->nodes.at(1);
    ASSERT_EQ(tiny.path, "b");
    EXPECT_EQ(tiny.inlined, packed);
    EXPECT_EQ(tiny.chunks.size(), packed ? 0u : 1u);
    const ChunkRef& chunk = manifest->nodes.back().chunks.at(0);
    Result<std::optional<ChunkLocation>> location = (*store)->FindChunk(chunk.digest);
    ASSERT_OK(location.status());
    ASSERT_TRUE(location->has_value());
    char codec = 0;
    ASSERT_OK((*store)->ReadChunk(chunk.digest, **location, [&](std::string_view stored) {
      codec = stored[0];
      return Status::OK();
    }));
    EXPECT_EQ(codec, version >= 2 ? 3 : 2);
    ExpectStored(**store, 1, state);
  }
}

// Float32 weights as training leaves them step after step: each step moves
// every value a little.
Tree TrainedState(int chunks, int step) {
  Tensor weights = Tensor::Allocate(DType::kFloat32, {int64_t{chunks} * kChunk / 4}).value();
  std::span<float> values = weights.MutableValues<float>().value();
  for (size_t i = 0; i < values.size(); ++i) {
    values[i] = 0.02f * std::sin(float(i) * 0.37f) + 1e-6f * float(step) * std::cos(float(i));
  }
  Tree state;
  EXPECT_OK(state.SetPath("w", Tree::Leaf(std::move(weights))));
  return state;
}

// The delta depth of each chunk of `step` as stored (0: whole).
std::vector<int> StoredDepths(Store& store, int64_t step) {
  Result<Manifest> manifest = ReadStepManifest(store, step);
  EXPECT_OK(manifest.status());
  std::vector<int> depths;
  if (!manifest.ok()) return depths;
  for (const ChunkRef& chunk : manifest->nodes.back().chunks) {
    Result<std::optional<ChunkLocation>> location = store.FindChunk(chunk.digest);
    EXPECT_OK(location.status());
    EXPECT_TRUE(location.ok() && location->has_value());
    if (!location.ok() || !location->has_value()) continue;
    ChunkCodec codec = ChunkCodec::kRaw;
    EXPECT_OK(store.ReadChunk(chunk.digest, **location, [&](std::string_view stored) {
      codec = StoredChunkCodec(stored);
      return Status::OK();
    }));
    EXPECT_EQ(codec == ChunkCodec::kDelta, (*location)->delta_depth != 0);
    depths.push_back((*location)->delta_depth);
  }
  return depths;
}

SavePipeline::Settings DeltaSettings(uint8_t max_delta_chain) {
  SavePipeline::Settings settings = Settings(4);
  settings.max_delta_chain = max_delta_chain;
  return settings;
}

// Each source the writer reads from (the caller's buffers while it waits,
// after Save returned, staged copies) stores chunks as deltas against the
// previous save's, at most max_delta_chain in a row, and every step
// restores bit-exact.
TEST_F(SavePipelineTest, DeltaChunksChainUpToTheLimitAndRestoreBitExact) {
  using Source = SavePipeline::Source;
  for (Source source : {Source::kCallerWaits, Source::kCallerBuffers, Source::kStaged}) {
    SCOPED_TRACE("source " + std::to_string(static_cast<int>(source)));
    TempDir dir;
    auto store = Store::Open(dir.path(), Store::Mode::kWrite).value();
    SavePipeline pipeline(store.get(), DeltaSettings(2));
    std::vector<Tree> states;
    for (int step = 1; step <= 7; ++step) {
      states.push_back(TrainedState(3, step));
      if (source == Source::kStaged) {
        ASSERT_OK(StagedSave(pipeline, states.back(), step).Error());
      } else {
        auto save = pipeline.Prepare(states.back(), Header(step), {}, source);
        ASSERT_OK(save.status());
        ASSERT_OK(pipeline.WriteAndCommit(**save));
      }
    }
    const std::vector<int> expected[] = {{0, 0, 0}, {1, 1, 1}, {2, 2, 2}, {0, 0, 0},
                                         {1, 1, 1}, {2, 2, 2}, {0, 0, 0}};
    for (int step = 1; step <= 7; ++step) {
      SCOPED_TRACE("step " + std::to_string(step));
      EXPECT_EQ(StoredDepths(*store, step), expected[step - 1]);
      ExpectStored(*store, step, states[step - 1]);
    }
  }
}

// A delta is stored smaller than the chunk whole, on data like training's.
TEST_F(SavePipelineTest, DeltaChunksAreSmallerThanWholeOnes) {
  uint64_t stored[2] = {0, 0};
  for (uint8_t chain : {0, 1}) {
    TempDir dir;
    auto store = Store::Open(dir.path(), Store::Mode::kWrite).value();
    SavePipeline pipeline(store.get(), DeltaSettings(chain));
    for (int step = 1; step <= 2; ++step) {
      const Tree state = TrainedState(2, step);  // read by the writer: alive until it ends
      auto save = pipeline.Prepare(state, Header(step), {}, SavePipeline::Source::kCallerWaits);
      ASSERT_OK(save.status());
      ASSERT_OK(pipeline.WriteAndCommit(**save));
    }
    const Manifest second = ReadStepManifest(*store, 2).value();
    for (const ChunkRef& chunk : second.nodes.back().chunks) stored[chain] += chunk.stored_size;
  }
  EXPECT_LT(stored[1], stored[0] * 3 / 4);
}

// A base the store no longer holds (collected, or its save failed) is never
// used: the chunk is stored whole. And a delta whose base went missing
// afterwards fails its restore as Corruption naming the base.
TEST_F(SavePipelineTest, ADeltaIsOnlyBasedOnAChunkTheStoreHolds) {
  auto store = OpenStore();
  SavePipeline pipeline(store.get(), DeltaSettings(4));
  auto save_step = [&](int step) {
    const Tree state = TrainedState(1, step);
    auto save = pipeline.Prepare(state, Header(step), {}, SavePipeline::Source::kCallerWaits);
    ASSERT_OK(save.status());
    ASSERT_OK(pipeline.WriteAndCommit(**save));
  };
  save_step(1);
  const ChunkDigest first = ReadStepManifest(*store, 1).value().nodes.back().chunks.at(0).digest;
  ASSERT_OK(store->UpdateIndex({}, {first}));
  save_step(2);
  EXPECT_EQ(StoredDepths(*store, 2), std::vector<int>{0});
  save_step(3);
  EXPECT_EQ(StoredDepths(*store, 3), std::vector<int>{1});
  const ChunkDigest second = ReadStepManifest(*store, 2).value().nodes.back().chunks.at(0).digest;
  ASSERT_OK(store->UpdateIndex({}, {second}));
  Result<Tree> restored = RestoreSubtree(*store, ReadStepManifest(*store, 3).value(), "", 2);
  EXPECT_EQ(restored.status().code(), Status::Code::kCorruption);
  EXPECT_NE(restored.status().message().find("base chunk " + second.ToHex()), std::string::npos)
      << restored.status().message();
}

// Prepare moves the last save's position copies out before it can fail
// (an index lookup); what it leaves behind must not claim bytes it lost, or
// the next save would XOR with and copy into a null buffer.
TEST_F(SavePipelineTest, APositionCopyMovedFromIsEmptyAndInvalid) {
  PendingSave::PositionCopy copy;
  copy.valid = true;
  copy.size = copy.capacity = 8;
  copy.bytes.reset(new std::byte[8]);
  PendingSave::PositionCopy moved = std::move(copy);
  EXPECT_TRUE(moved.valid);
  EXPECT_EQ(moved.capacity, 8u);
  EXPECT_NE(moved.bytes, nullptr);
  EXPECT_FALSE(copy.valid);  // NOLINT(bugprone-use-after-move): the point of the test
  EXPECT_EQ(copy.capacity, 0u);
  EXPECT_EQ(copy.bytes, nullptr);
}

}  // namespace
}  // namespace ckptdb
