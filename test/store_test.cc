// Tests of the Store on its own: what Open makes of a directory, the writer
// lock, generations of chunks and the commit of a step, the index, manifests,
// and a reader following a writer. (Damage to a store's files is
// damage_test's subject.)

#include "store.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <random>
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

// Reading ahead relies on LocateChunks: each chunk lies in the file its
// extent names, about where the extent says.
TEST(StoreTest, ChunksAreLocatedInTheirTableFiles) {
  TempDir dir;
  auto store = OpenOrDie(dir.path(), Store::Mode::kWrite);
  // Incompressible chunks, each stored in more than a table block (4 KiB).
  std::mt19937 random(7);
  auto incompressible = [&](int count) {
    std::vector<TestChunk> chunks = MakeChunks(*store, count, 'a');
    for (TestChunk& chunk : chunks) {
      for (char& c : chunk.raw) c = static_cast<char>(random());
      chunk.digest = store->hasher().Digest(reinterpret_cast<const std::byte*>(chunk.raw.data()),
                                            chunk.raw.size());
    }
    std::sort(chunks.begin(), chunks.end(),
              [](const TestChunk& a, const TestChunk& b) { return a.digest < b.digest; });
    return chunks;
  };
  const std::vector<TestChunk> first = incompressible(5);
  const std::vector<TestChunk> second = incompressible(3);
  CommitChunks(store.get(), 1, "manifest of 1", first);
  CommitChunks(store.get(), 2, "manifest of 2", second);
  // A chunk that shares its block is not placed.
  const std::vector<TestChunk> small = MakeChunks(*store, 2, 'z');
  CommitChunks(store.get(), 3, "manifest of 3", small);
  std::vector<std::pair<ChunkDigest, std::optional<ChunkLocation>>> wanted;
  std::vector<std::string> stored;
  for (const std::vector<TestChunk>* generation : {&second, &first}) {
    for (const TestChunk& chunk : *generation) {
      wanted.emplace_back(chunk.digest, *store->FindChunk(chunk.digest).value());
      stored.push_back(Encoded(chunk.raw));
    }
  }
  // No location, and a generation no file holds: nothing to read ahead.
  wanted.emplace_back(small[0].digest, *store->FindChunk(small[0].digest).value());
  wanted.emplace_back(first[0].digest, std::nullopt);
  ChunkLocation nowhere = *wanted[0].second;
  nowhere.generation += 100;
  wanted.emplace_back(first[0].digest, nowhere);

  std::vector<std::string> paths;
  const std::vector<ChunkExtent> extents = store->LocateChunks(wanted, &paths);
  ASSERT_EQ(extents.size(), wanted.size());
  EXPECT_EQ(paths.size(), 3u);
  EXPECT_EQ(extents[wanted.size() - 3].file, ChunkExtent::kNoFile);
  EXPECT_EQ(extents[wanted.size() - 2].file, ChunkExtent::kNoFile);
  EXPECT_EQ(extents[wanted.size() - 1].file, ChunkExtent::kNoFile);
  for (size_t i = 0; i < stored.size(); ++i) {
    ASSERT_LT(extents[i].file, paths.size()) << i;
    std::ifstream file(paths[extents[i].file], std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    const size_t at = bytes.find(stored[i]);
    ASSERT_NE(at, std::string::npos) << i;  // in the file the extent names
    // RocksDB scales a block's offset by the file's size over its data's
    // (here the index and properties are a tenth of the file; in a chunk
    // file of hundreds of MiB, a few KiB): the chunk's entry begins within
    // that of where the extent says, and the extent covers the chunk.
    const double at_most_off = 0.1 * static_cast<double>(at) + 64;
    EXPECT_LE(std::abs(static_cast<double>(extents[i].offset) - static_cast<double>(at)),
              at_most_off) << i;
    EXPECT_GE(extents[i].bytes, stored[i].size()) << i;
    // The chunks of one file lie in the order located (key order).
    if (i > 0 && extents[i].file == extents[i - 1].file) {
      EXPECT_GT(extents[i].offset, extents[i - 1].offset) << i;
    }
  }
  EXPECT_NE(extents[0].file, extents[stored.size() - 1].file);
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
