// Store: the RocksDB database of one workdir, and the only code that speaks
// RocksDB. Layout (byte-level contract in doc/format.md):
//
//   column family  key                              value
//   default        "ckptdb.format_version" etc.     store metadata
//   chunks         generation (8, BE) + digest (16)  encoded chunk (chunk_codec.h)
//   chunk_index    digest (16)                       generation, raw and stored size
//   manifests      step (8, BE)                      FlatBuffers Manifest
//
// Each save writes its new chunks as one new *generation*: a single SST file
// built in digest order and ingested, so chunk bytes are written once (no WAL,
// no compaction rewrite: the file's key range is new, so it lands in the
// bottom level). The step then commits with one synced write batch holding its
// manifest and the index entries of its new chunks. A crash before that batch
// leaves only an unreferenced generation, which garbage collection reclaims.
//
// Thread safety: reads may run concurrently; writes must be serialized by the
// caller (the Checkpointer does).

#ifndef CKPTDB_LIB_STORE_H_
#define CKPTDB_LIB_STORE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "chunk_digest.h"
#include "ckptdb/status.h"
#include "store_directory.h"

namespace rocksdb {
class Env;
class PinnableSlice;
}  // namespace rocksdb

namespace ckptdb {

// A chunk's stored bytes as Store::PinChunk read them, held in memory until
// this is destroyed (which must be before the Store).
class PinnedChunk {
 public:
  PinnedChunk();
  PinnedChunk(PinnedChunk&&) noexcept;
  PinnedChunk& operator=(PinnedChunk&&) noexcept;
  ~PinnedChunk();

 private:
  friend class Store;
  std::unique_ptr<rocksdb::PinnableSlice> value_;
};

// The store format version of the stores this build creates, and the newest
// it opens. Version 2 added chunk codec 3 (byte planes, doc/format.md §5),
// version 3 delta chunks (codec 4) and their index entries (§4), version 4
// packed manifests (manifest format version 3, with inline tensors, §6). A
// store keeps the version it was created with and is written with what
// that version has, so that the builds that created it keep reading it.
inline constexpr uint32_t kStoreFormatVersion = 4;
inline constexpr uint32_t kOldestStoreFormatVersion = 1;
inline constexpr uint32_t kFirstDeltaStoreFormatVersion = 3;
inline constexpr uint32_t kFirstPackedStoreFormatVersion = 4;

struct ChunkLocation {
  uint64_t generation = 0;
  uint32_t raw_size = 0;
  uint32_t stored_size = 0;
  // A delta chunk's base and depth (chunk_codec.h); depth 0: stored whole.
  // Garbage collection keeps a live chunk's base live.
  uint8_t delta_depth = 0;
  ChunkDigest delta_base = {};
};

struct IndexEntry {
  ChunkDigest digest;
  ChunkLocation location;
};

// One table file of the chunks family: the generations its keys span.
// Ingested files hold one generation each; a file can span several only if
// RocksDB compacted files of the family together.
struct ChunkFile {
  std::string name;  // file name in the workdir, e.g. "000027.sst"
  uint64_t first_generation = 0;
  uint64_t last_generation = 0;
  uint64_t bytes = 0;
  // RocksDB's level: ingested files land in the bottom one. A file in level
  // 0 (which only a RocksDB repair of older builds left) cannot be dropped
  // by GC (DeleteFilesInRanges skips level 0); repair moves it down.
  int level = 0;
};

// The file among `files` holding `generation`, or nullptr when none does.
const ChunkFile* FileHolding(const std::vector<ChunkFile>& files, uint64_t generation);

class GenerationWriter;

class Store {
 public:
  enum class Mode {
    kWrite,     // create if missing; takes the single-writer lock
    kReadOnly,  // follows a writer in another process (a RocksDB secondary)
    kRepair,    // read-only, for repair's look at a store before it decides
                // anything: the writer's checks, then a static snapshot (the
                // caller holds the writer lock and keeps readers out)
    kDiagnose,  // read-only, for verify on a store the other modes refuse:
                // opens what RocksDB can read without checking table files,
                // so that reads name the damaged ones (a static snapshot)
  };

  // Opens the store in `dir`. Nothing is ever deleted, truncated or rolled
  // back to make an open succeed: a store whose metadata files (CURRENT,
  // MANIFEST, OPTIONS, write-ahead log, CKPTDB) or chunk files are damaged,
  // missing or inconsistent is Corruption naming the file, every file left
  // as it was (a writer checks everything on a read-only open first).
  // Readers open stores with damaged chunk files: the steps that do not use
  // them stay readable.
  // `env` (tests: a fault-injecting file system) replaces RocksDB's default
  // environment for every file the store touches; it must outlive the store.
  // A directory created here gets mode 0700 when `owner_only`.
  static Result<std::unique_ptr<Store>> Open(const std::string& dir, Mode mode,
                                             rocksdb::Env* env = nullptr, bool owner_only = true);
  // Repair: creates a new store in the empty directory `dir` with the
  // identity (store id, hash secret, format version) of the store it
  // rebuilds, open for writing.
  static Result<std::unique_ptr<Store>> CreateWithIdentity(const std::string& dir,
                                                           const StoreIdentity& identity,
                                                           rocksdb::Env* env = nullptr);
  ~Store();

  const std::string& dir() const { return dir_; }
  bool read_only() const { return mode_ != Mode::kWrite; }
  const ChunkHasher& hasher() const { return *hasher_; }
  // The store's format version (what it was created with).
  uint32_t format_version() const { return format_version_; }
  // Whether its manifests are packed (manifest format version 3, with
  // inline tensors); else they are written as versions 1 and 2 were.
  bool packs_manifests() const { return format_version_ >= kFirstPackedStoreFormatVersion; }

  // Where a chunk is stored, or nullopt if the index does not know it.
  Result<std::optional<ChunkLocation>> FindChunk(const ChunkDigest& digest) const;

  // Calls `use` with the stored (encoded) bytes of a chunk; the bytes are
  // valid only during the call. NotFound if the chunk is absent. A read that
  // fails, or a `use` that finds Corruption, marks the store damaged. The
  // table block's checksum is always checked, a restore's reads included
  // (doc/format.md §11): RocksDB parses a block before the chunk's digest
  // can be checked, and Debian's build aborts on some malformed blocks.
  Status ReadChunk(const ChunkDigest& digest, const ChunkLocation& location,
                   const std::function<Status(std::string_view stored)>& use) const;

  // ReadChunk in two halves, for reading on one thread and decoding on
  // another: ReadChunk(d, l, use) is UseChunk(*PinChunk(d, l), use).
  Result<PinnedChunk> PinChunk(const ChunkDigest& digest, const ChunkLocation& location) const;
  Status UseChunk(const PinnedChunk& chunk,
                  const std::function<Status(std::string_view stored)>& use) const;

  // Starts writing a new generation of chunks (write mode only).
  Result<std::unique_ptr<GenerationWriter>> NewGeneration();

  // Multi-process saves (doc/format.md §7). The primary allocates one
  // generation per process (made durable before any is written: the first
  // of `count`); each process writes its chunks into its generation's file
  // (any mode: the file is not ingested); the primary ingests all the files
  // of a save in one atomic call, then commits the step.
  Result<uint64_t> AllocateGenerations(uint64_t count);
  Result<std::unique_ptr<GenerationWriter>> NewGenerationFile(uint64_t generation);
  Status IngestGenerationFiles(const std::vector<uint64_t>& generations);
  // Where generation `generation`'s file waits for ingestion.
  std::string GenerationFilePath(uint64_t generation) const;
  // The primary, before a save: removes the files of saves that failed
  // before their commit (no process writes one between saves).
  Status RemoveGenerationFiles();

  // The commit point of a step: writes the manifest and the index entries of
  // the step's new chunks in one synced batch. Takes the manifest to free it
  // once the batch holds its copy: RocksDB copies it again into its memtable,
  // and a manifest of a million leaves is tens of MB.
  Status CommitStep(int64_t step, std::string manifest,
                    const std::vector<IndexEntry>& new_chunks);

  // Repair, on a store made by CreateWithIdentity: ingests chunk files
  // (SSTs of the chunks family, written by SstFileWriter, with disjoint key
  // ranges) in one call, into the bottom level. Each file is linked into
  // the store, and the given name then removed.
  Status IngestChunkFiles(const std::vector<std::string>& paths);
  // Repair: raises the next generation to allocate to at least `next`,
  // durably (generations found in salvaged chunk files are never reused).
  Status RaiseNextGeneration(uint64_t next);
  // Repair: writes manifests in one synced batch.
  Status PutManifests(const std::map<int64_t, std::string>& manifests);
  // Writes every family's memtable into table files, so that no record
  // lives only in the write-ahead log.
  Status Flush();
  // Calls `visit` for every chunk_index entry, in digest order.
  Status ForEachIndexEntry(const std::function<Status(const IndexEntry&)>& visit) const;
  // Puts and removes index entries in one synced batch.
  Status UpdateIndex(const std::vector<IndexEntry>& put, const std::vector<ChunkDigest>& remove);
  // The table files of the chunks family (from RocksDB's file metadata; no
  // chunk is read).
  std::vector<ChunkFile> ChunkFiles() const;
  // Removes every chunk of these generations: whole files are deleted, any
  // remaining keys get range tombstones. The index must no longer point at them.
  Status DropGenerations(const std::vector<uint64_t>& generations);

  // Steps with a manifest, ascending.
  Result<std::vector<int64_t>> ListSteps() const;
  // The manifest bytes of `step`, or nullopt.
  Result<std::optional<std::string>> ReadManifest(int64_t step) const;
  // Deletes manifests in one synced batch (chunks are left to GC).
  Status DeleteManifests(const std::vector<int64_t>& steps);

  // Read-only mode: catch up with the writer. Write mode: no-op.
  Status CatchUp();

  // Table files that are missing or whose size differs from what RocksDB
  // recorded, one line each naming the file (stat only): the chunk files,
  // which only ckptdb's GC removes, and in kDiagnose and kRepair modes (a static store)
  // the files of every family.
  std::vector<std::string> CheckTableFiles() const;
  // Whether a chunk read failed (Corruption or I/O error) since open;
  // garbage collection refuses to run then.
  bool damage_seen() const;

  // Closes the database; idempotent.
  Status Close();

  class Rep;  // RocksDB handles: lib/store_internal.h, private to lib/store*.cc

 private:
  Store(std::string dir, Mode mode);
  // Open, and CreateWithIdentity (`identity` set: `dir` must hold no store).
  static Result<std::unique_ptr<Store>> OpenOrCreate(const std::string& dir, Mode mode,
                                                     rocksdb::Env* env, bool owner_only,
                                                     const StoreIdentity* identity);

  friend class GenerationWriter;
  // Makes ckptdb.next_generation at least `next` durable (doc/format.md §7).
  Status ReserveGenerations(uint64_t next);

  std::string dir_;
  Mode mode_;
  std::unique_ptr<ChunkHasher> hasher_;
  uint32_t format_version_ = 0;
  std::unique_ptr<Rep> rep_;
};

// Writes one generation's chunks into an SST file, then ingests it.
class GenerationWriter {
 public:
  ~GenerationWriter();  // abandons (deletes the staging file) unless finished

  uint64_t generation() const { return generation_; }
  // Adds a chunk; digests must be strictly increasing.
  Status Add(const ChunkDigest& digest, std::string_view stored);
  // Makes the generation durable in the store, or for a generation file
  // only its file (no-op when nothing was added).
  Status Finish();

  class Rep;

 private:
  friend class Store;
  GenerationWriter(Store* store, uint64_t generation, bool ingest);
  Store* store_;
  uint64_t generation_;
  bool ingest_;  // Finish ingests the file (else it only writes and syncs it)
  std::unique_ptr<Rep> rep_;
};

}  // namespace ckptdb

#endif  // CKPTDB_LIB_STORE_H_
