// Tests of the Store on its own: what Open makes of a directory, the writer
// lock, generations of chunks and the commit of a step, the index, manifests,
// and a reader following a writer. (Damage to a store's files is
// damage_test's subject.)

#include "store.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "chunk_codec.h"
#include "test_util.h"

namespace ckptdb {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

std::unique_ptr<Store> OpenOrDie(const std::string& dir, Store::Mode mode) {
  Result<std::unique_ptr<Store>> store = Store::Open(dir, mode);
  EXPECT_TRUE(store.ok()) << store.status().ToString();
  return store.ok() ? std::move(*store) : nullptr;
}

// Stored (encoded) bytes of a chunk holding `raw`.
std::string Encoded(const std::string& raw) {
  std::string stored;
  EncodeChunk(reinterpret_cast<const std::byte*>(raw.data()), raw.size(), ChunkEncoding{0, 1},
              &stored);
  return stored;
}

struct TestChunk {
  std::string raw;
  ChunkDigest digest;
};

// Chunks with distinct contents, in digest order (the order a generation
// must be written in).
std::vector<TestChunk> MakeChunks(const Store& store, int count, char seed) {
  std::vector<TestChunk> chunks;
  for (int i = 0; i < count; ++i) {
    std::string raw(4096 + i, static_cast<char>(seed + i));
    const ChunkDigest digest =
        store.hasher().Digest(reinterpret_cast<const std::byte*>(raw.data()), raw.size());
    chunks.push_back({std::move(raw), digest});
  }
  std::sort(chunks.begin(), chunks.end(),
            [](const TestChunk& a, const TestChunk& b) { return a.digest < b.digest; });
  return chunks;
}

// Writes `chunks` as one generation and commits `step` with `manifest`.
void CommitChunks(Store* store, int64_t step, const std::string& manifest,
                  const std::vector<TestChunk>& chunks) {
  Result<std::unique_ptr<GenerationWriter>> writer = store->NewGeneration();
  ASSERT_OK(writer.status());
  std::vector<IndexEntry> entries;
  for (const TestChunk& chunk : chunks) {
    const std::string stored = Encoded(chunk.raw);
    ASSERT_OK((*writer)->Add(chunk.digest, stored));
    entries.push_back({chunk.digest,
                       {.generation = (*writer)->generation(),
                        .raw_size = static_cast<uint32_t>(chunk.raw.size()),
                        .stored_size = static_cast<uint32_t>(stored.size())}});
  }
  ASSERT_OK((*writer)->Finish());
  ASSERT_OK(store->CommitStep(step, manifest, entries));
}

std::string ReadRaw(const Store& store, const TestChunk& chunk) {
  Result<std::optional<ChunkLocation>> location = store.FindChunk(chunk.digest);
  EXPECT_TRUE(location.ok() && location->has_value());
  if (!location.ok() || !location->has_value()) return "";
  std::string raw(chunk.raw.size(), '\0');
  Status read = store.ReadChunk(chunk.digest, **location, [&](std::string_view stored) {
    return DecodeChunk(stored, raw.size(), reinterpret_cast<std::byte*>(raw.data()));
  });
  EXPECT_OK(read);
  return raw;
}

TEST(StoreTest, WhatOpenMakesOfADirectory) {
  TempDir dir;
  // Missing or empty: readers find nothing; a writer creates.
  EXPECT_TRUE(Store::Open(dir.Sub("missing"), Store::Mode::kReadOnly).status().IsNotFound());
  fs::create_directory(dir.Sub("empty"));
  EXPECT_TRUE(Store::Open(dir.Sub("empty"), Store::Mode::kReadOnly).status().IsNotFound());
  EXPECT_NE(OpenOrDie(dir.Sub("empty"), Store::Mode::kWrite), nullptr);
  EXPECT_TRUE(fs::exists(dir.Sub("empty") + "/CKPTDB"));
  EXPECT_FALSE(fs::exists(dir.Sub("empty") + "/CKPTDB.creating"));

  // Someone else's files: refused, untouched.
  fs::create_directory(dir.Sub("foreign"));
  std::ofstream(dir.Sub("foreign") + "/notes.txt") << "mine";
  for (Store::Mode mode : {Store::Mode::kWrite, Store::Mode::kReadOnly}) {
    Status status = Store::Open(dir.Sub("foreign"), mode).status();
    EXPECT_EQ(status.code(), Status::Code::kFailedPrecondition) << status.ToString();
  }
  EXPECT_EQ(std::vector<fs::path>(fs::directory_iterator(dir.Sub("foreign")), {}).size(), 1u);

  // A file where the directory should be.
  std::ofstream(dir.Sub("file")) << "x";
  EXPECT_EQ(Store::Open(dir.Sub("file"), Store::Mode::kWrite).status().code(),
            Status::Code::kFailedPrecondition);
}

TEST(StoreTest, AnInterruptedCreationIsFinishedByTheNextWriterAndHiddenFromReaders) {
  TempDir dir;
  fs::create_directory(dir.Sub("s"));
  std::ofstream(dir.Sub("s") + "/CKPTDB.creating");  // a writer died while creating
  EXPECT_TRUE(Store::Open(dir.Sub("s"), Store::Mode::kReadOnly).status().IsNotFound());
  EXPECT_NE(OpenOrDie(dir.Sub("s"), Store::Mode::kWrite), nullptr);
  EXPECT_FALSE(fs::exists(dir.Sub("s") + "/CKPTDB.creating"));
  EXPECT_NE(OpenOrDie(dir.Sub("s"), Store::Mode::kReadOnly), nullptr);
}

TEST(StoreTest, OneWriterAtATime) {
  TempDir dir;
  auto writer = OpenOrDie(dir.path(), Store::Mode::kWrite);
  Status second = Store::Open(dir.path(), Store::Mode::kWrite).status();
  EXPECT_EQ(second.code(), Status::Code::kBusy) << second.ToString();
  EXPECT_NE(OpenOrDie(dir.path(), Store::Mode::kReadOnly), nullptr);  // readers are welcome
  ASSERT_OK(writer->Close());
  EXPECT_NE(OpenOrDie(dir.path(), Store::Mode::kWrite), nullptr);
}

TEST(StoreTest, TheHashSecretIsTheStoresForLife) {
  TempDir dir;
  const std::string bytes(1000, 'a');
  auto digest_in = [&](const std::string& workdir) {
    auto store = OpenOrDie(workdir, Store::Mode::kWrite);
    return store->hasher().Digest(reinterpret_cast<const std::byte*>(bytes.data()), bytes.size());
  };
  const ChunkDigest first = digest_in(dir.Sub("a"));
  EXPECT_EQ(digest_in(dir.Sub("a")), first);   // reopened: same secret
  EXPECT_NE(digest_in(dir.Sub("b")), first);   // another store: another secret
}

TEST(StoreTest, CommittedChunksAndManifestsReadBack) {
  TempDir dir;
  auto store = OpenOrDie(dir.path(), Store::Mode::kWrite);
  EXPECT_EQ(store->format_version(), kStoreFormatVersion);  // what new stores get
  const std::vector<TestChunk> chunks = MakeChunks(*store, 5, 'a');
  CommitChunks(store.get(), 7, "manifest of 7", chunks);
  for (const TestChunk& chunk : chunks) EXPECT_EQ(ReadRaw(*store, chunk), chunk.raw);
  EXPECT_EQ(store->ListSteps().value(), std::vector<int64_t>{7});
  EXPECT_EQ(store->ReadManifest(7).value(), std::optional<std::string>("manifest of 7"));
  EXPECT_EQ(store->ReadManifest(8).value(), std::nullopt);

  // The generation is one chunk file spanning just its generation.
  const std::vector<ChunkFile> files = store->ChunkFiles();
  ASSERT_EQ(files.size(), 1u);
  const uint64_t generation = store->FindChunk(chunks[0].digest).value()->generation;
  EXPECT_EQ(files[0].first_generation, generation);
  EXPECT_EQ(files[0].last_generation, generation);
  EXPECT_EQ(FileHolding(files, generation), &files[0]);
  EXPECT_EQ(FileHolding(files, generation + 1), nullptr);

  // Deleting the manifest leaves the chunks (garbage collection's business).
  ASSERT_OK(store->DeleteManifests({7}));
  EXPECT_TRUE(store->ListSteps().value().empty());
  EXPECT_EQ(ReadRaw(*store, chunks[0]), chunks[0].raw);
}

TEST(StoreTest, AGenerationTakesDigestsInIncreasingOrderOnly) {
  TempDir dir;
  auto store = OpenOrDie(dir.path(), Store::Mode::kWrite);
  const std::vector<TestChunk> chunks = MakeChunks(*store, 2, 'x');
  Result<std::unique_ptr<GenerationWriter>> writer = store->NewGeneration();
  ASSERT_OK(writer.status());
  ASSERT_OK((*writer)->Add(chunks[1].digest, Encoded(chunks[1].raw)));
  EXPECT_FALSE((*writer)->Add(chunks[0].digest, Encoded(chunks[0].raw)).ok());
  EXPECT_FALSE((*writer)->Add(chunks[1].digest, Encoded(chunks[1].raw)).ok());  // repeated
}

TEST(StoreTest, AnAbandonedGenerationLeavesNothing) {
  TempDir dir;
  auto store = OpenOrDie(dir.path(), Store::Mode::kWrite);
  const std::vector<TestChunk> chunks = MakeChunks(*store, 3, 'k');
  {
    Result<std::unique_ptr<GenerationWriter>> writer = store->NewGeneration();
    ASSERT_OK(writer.status());
    for (const TestChunk& chunk : chunks) ASSERT_OK((*writer)->Add(chunk.digest, Encoded(chunk.raw)));
  }  // destroyed unfinished
  EXPECT_TRUE(store->ChunkFiles().empty());
  EXPECT_FALSE(store->FindChunk(chunks[0].digest).value().has_value());
  const fs::path staging = fs::path(dir.path()) / "staging";
  EXPECT_TRUE(!fs::exists(staging) || fs::is_empty(staging));
  // The next generation gets a new number: never reused.
  CommitChunks(store.get(), 1, "m", chunks);
  EXPECT_EQ(store->ChunkFiles().size(), 1u);
}

TEST(StoreTest, TheIndexIsUpdatedInOneBatch) {
  TempDir dir;
  auto store = OpenOrDie(dir.path(), Store::Mode::kWrite);
  const std::vector<TestChunk> chunks = MakeChunks(*store, 3, 'p');
  CommitChunks(store.get(), 1, "m", chunks);
  const ChunkLocation location = store->FindChunk(chunks[0].digest).value().value();
  ChunkLocation moved = location;
  moved.generation += 100;
  ASSERT_OK(store->UpdateIndex({{chunks[0].digest, moved}}, {chunks[1].digest}));
  EXPECT_EQ(store->FindChunk(chunks[0].digest).value()->generation, location.generation + 100);
  EXPECT_FALSE(store->FindChunk(chunks[1].digest).value().has_value());
  std::vector<ChunkDigest> listed;
  ASSERT_OK(store->ForEachIndexEntry([&](const IndexEntry& entry) {
    listed.push_back(entry.digest);
    return Status::OK();
  }));
  EXPECT_EQ(listed, (std::vector<ChunkDigest>{chunks[0].digest, chunks[2].digest}));
}

TEST(StoreTest, AReaderSeesTheWritersCommitsAfterCatchingUp) {
  TempDir dir;
  auto writer = OpenOrDie(dir.path(), Store::Mode::kWrite);
  CommitChunks(writer.get(), 1, "one", MakeChunks(*writer, 2, 'a'));
  auto reader = OpenOrDie(dir.path(), Store::Mode::kReadOnly);
  ASSERT_NE(reader, nullptr);
  EXPECT_TRUE(reader->read_only());
  EXPECT_EQ(reader->ListSteps().value(), std::vector<int64_t>{1});
  EXPECT_FALSE(reader->NewGeneration().ok());  // readers write nothing

  const std::vector<TestChunk> later = MakeChunks(*writer, 2, 'z');
  CommitChunks(writer.get(), 2, "two", later);
  ASSERT_OK(writer->DeleteManifests({1}));
  ASSERT_OK(reader->CatchUp());
  EXPECT_EQ(reader->ListSteps().value(), std::vector<int64_t>{2});
  EXPECT_EQ(reader->ReadManifest(2).value(), std::optional<std::string>("two"));
  EXPECT_EQ(ReadRaw(*reader, later[1]), later[1].raw);
}

}  // namespace
}  // namespace ckptdb
