// SavePipeline: a save from the caller's tree to a committed step.
//
//   Prepare        caller's thread, the blocking phase: flattens the tree,
//                  hashes every chunk on all cores, looks each digest up in
//                  the store and lists the chunks it lacks, in digest order.
//                  A staged save copies chunks predicted to be new into the
//                  staging pool while hashing them (speculative copies).
//   Stage          caller's thread, staged saves only: copies the remaining
//                  new chunks into the staging pool, in order, waiting for
//                  slots the writer frees; the caller may change its buffers
//                  once it returns.
//   WriteAndCommit the writer (the Checkpointer's background thread, or the
//                  caller's for a synchronous save): compresses a window of
//                  staged chunks on all cores, appends them to one new
//                  generation, releases their slots, and finally commits the
//                  manifest with the new chunks' index entries.
//
// Ownership of staging slots between the stager and the writer: the chunks
// before the save's staged mark are the writer's (it reads them and releases
// their slots), the chunks from the mark on are the stager's. Whichever side
// stops first on an error makes the other stop too, and each releases the
// slots it owns, so that neither waits for ever and no slot leaks.
//
// Thread safety: a pipeline serves one save at a time (the Checkpointer's
// in-flight flag serializes saves); during that save, Stage and
// WriteAndCommit run concurrently on two threads and share only the
// PendingSave's hand-over state (guarded by its mutex) and the thread-safe
// staging pool. The pipeline's own members (encode buffers, save history)
// are owned by the save in flight: Prepare and WriteAndCommit use them, never
// at the same time.

#ifndef CKPTDB_LIB_SAVE_PIPELINE_H_
#define CKPTDB_LIB_SAVE_PIPELINE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "ckptdb/status.h"
#include "chunk_codec.h"
#include "ckptdb/tree.h"
#include "manifest.h"
#include "mutex.h"
#include "staging_pool.h"
#include "store.h"

namespace ckptdb {

// One save between its blocking phase and its commit.
class PendingSave {
 public:
  PendingSave() = default;
  PendingSave(const PendingSave&) = delete;
  PendingSave& operator=(const PendingSave&) = delete;

  // The step's manifest (its header, and the tensors stored as chunks alone
  // when drafted); chunk stored sizes are final once committed.
  const Manifest& manifest() const { return manifest_; }
  Manifest& mutable_manifest() { return manifest_; }
  // New chunks the writer will write.
  size_t new_chunk_count() const { return chunks_.size(); }
  // The index entries of the chunks written (WriteChunks).
  const std::vector<IndexEntry>& new_chunks() const { return new_chunks_; }
  // Multi-process saves: the generation the primary assigned this process;
  // its chunks go into that generation's file, which the primary ingests.
  // Unset: a new generation, ingested when written.
  void set_generation(uint64_t generation) { generation_ = generation; }

  // Delta encoding: the last chunk a position held, and a copy of its
  // bytes (SavePipeline::delta_bases_).
  struct PositionCopy {
    PositionCopy() = default;
    // A copy moved from is left empty and invalid: a save whose Prepare
    // fails after moving copies out must not leave entries that claim bytes
    // they no longer have.
    PositionCopy(PositionCopy&& other) noexcept { *this = std::move(other); }
    PositionCopy& operator=(PositionCopy&& other) noexcept {
      valid = std::exchange(other.valid, false);
      digest = other.digest;
      depth = other.depth;
      size = other.size;
      whole_stored_size = other.whole_stored_size;
      capacity = std::exchange(other.capacity, 0);
      bytes = std::move(other.bytes);
      return *this;
    }

    bool valid = false;  // bytes hold the chunk `digest` (`size` bytes), stored at `depth`
    ChunkDigest digest;
    uint8_t depth = 0;
    uint32_t size = 0;
    // The stored size of the last chunk of this position stored whole: what
    // a delta is compared with.
    uint32_t whole_stored_size = 0;
    uint32_t capacity = 0;
    std::unique_ptr<std::byte[]> bytes;
  };

 private:
  friend class SavePipeline;

  struct Chunk {
    ChunkDigest digest;
    const std::byte* data = nullptr;  // caller memory, or a staging slot
    uint32_t size = 0;
    size_t element_width = 0;                          // 0: not byte-grouped
    std::vector<std::pair<uint32_t, uint32_t>> refs;   // (node, chunk) in the manifest
    std::optional<size_t> slot;  // a staging slot holds the chunk's bytes
    // Chunks smaller than a slot share one, packed one after another; the
    // last of them gives it back (the writer writes chunks in order, so the
    // slot is free once that one is written).
    bool releases_slot = true;
    // Delta encoding: the base (the chunk the first position's copy holds),
    // and the copies of every position of this chunk, which the writer
    // refreshes with its bytes once it has encoded it.
    std::optional<DeltaBase> delta;
    std::vector<PositionCopy*> copies;
  };

  // Stager side. Moves the staged mark to `count`, handing chunks [mark,
  // count) and their slots to the writer; false (nothing handed over) once
  // the writer has stopped.
  bool MarkStaged(size_t count) EXCLUDES(mu_);
  // The stager needs slots back: the writer starts even before staging ends.
  void NeedWriter() EXCLUDES(mu_);
  // The stager failed: the writer stops at the chunks it has.
  void Abandon(const Status& why) EXCLUDES(mu_);

  // Writer side. Waits until staging ends, the stager needs slots back, or
  // it gave up (compressing earlier would slow down the caller's blocking
  // phase, which has the cores to itself until then).
  void AwaitWriterStart() EXCLUDES(mu_);
  // How many chunks are staged now.
  size_t Staged() EXCLUDES(mu_);
  // Waits until at least `count` chunks are staged and returns how many
  // are; the stager's error if it gave up first.
  Result<size_t> AwaitStaged(size_t count) EXCLUDES(mu_);
  // The writer stops (done or failed): returns the staged mark, below which
  // the writer owns every slot; the stager keeps the rest.
  size_t StopWriter() EXCLUDES(mu_);

  // Drafted saves (packed manifests, one process): `manifest_.nodes` are
  // the draft's kept nodes, the tensors stored as chunks.
  Manifest manifest_;
  std::optional<TreeDraft> draft_;
  std::vector<Chunk> chunks_;  // the new chunks, digest order
  std::vector<IndexEntry> new_chunks_;
  std::optional<uint64_t> generation_;
  // The writer reads caller memory that the caller may change meanwhile (an
  // asynchronous zero_copy save): it re-hashes what it compresses.
  bool recheck_caller_bytes_ = false;

  Mutex mu_;
  CondVar progress_{&mu_};
  size_t staged_ GUARDED_BY(mu_) = 0;
  bool writer_needed_ GUARDED_BY(mu_) = false;
  bool writer_stopped_ GUARDED_BY(mu_) = false;
  Status abandoned_ GUARDED_BY(mu_);
};

// The process that writes a tensor every process holds whole (not
// sharded), among `process_count`: spread by a hash of its path.
int WholeTensorWriter(std::string_view path, int process_count);

class SavePipeline {
 public:
  struct Settings {
    uint32_t chunk_size_bytes = 0;
    size_t staging_bytes = 0;  // the staging pool's bound
    size_t threads = 1;        // hashing, copying and compressing
    int compression_level = 1;
    uint8_t max_delta_chain = 0;  // CheckpointerOptions::max_delta_chain
    StagingPool::Allocator allocate_staging = nullptr;  // see StagingPool
    // Multi-process saves: this process among process_count. Each process
    // writes its own shards, and the whole tensors WholeTensorWriter gives
    // it; a single process writes every tensor, whose shards must tile it.
    int process_index = 0;
    int process_count = 1;
  };
  // Where the writer reads the new chunks' bytes.
  enum class Source {
    kCallerWaits,       // the caller's buffers, while the caller waits for the commit
    kCallerBuffers,     // the caller's buffers, after Save returned (zero_copy): re-hashed
    kStaged,            // copies in the staging pool (Stage)
  };

  SavePipeline(Store* store, Settings settings);
  ~SavePipeline();
  SavePipeline(const SavePipeline&) = delete;
  SavePipeline& operator=(const SavePipeline&) = delete;

  // The blocking phase. `header` carries the step, commit time, metrics and
  // user metadata; its nodes are filled here from `state`. Tensors under
  // `assume_unchanged` reuse the previous save's chunk list, unread, when the
  // store still holds all of it. InvalidArgument for a path of
  // `assume_unchanged` the state does not hold.
  Result<std::shared_ptr<PendingSave>> Prepare(const Tree& state, Manifest header,
                                               const std::vector<std::string>& assume_unchanged,
                                               Source source);
  // kStaged saves: copies every new chunk not copied yet into the staging
  // pool. On an error the writer stops too.
  Status Stage(PendingSave& save);
  // Writes the new chunks as one generation and commits the step. On an
  // error nothing of the step is visible and a staged save's stager stops.
  Status WriteAndCommit(PendingSave& save);
  // Drops a prepared save that will not be written (a multi-process save
  // whose begin round failed): gives back the staging slots its speculative
  // copies hold.
  void Discard(PendingSave& save);
  // The two halves of WriteAndCommit. WriteChunks writes the new chunks
  // (into the assigned generation's file, uningested, when one is set) and
  // records their index entries; CommitLocally commits the step alone
  // (multi-process saves commit through the primary instead).
  Status WriteChunks(PendingSave& save);
  Status CommitLocally(PendingSave& save);

  // The staging pool (nullptr before the first staged save), for tests.
  StagingPool* staging_pool() { return staging_.get(); }

 private:
  // Full-size chunks the writer compresses at once (never more than the
  // staging slots): the slots speculative copies leave free. Small chunks
  // go by the same bytes, at most kMaxWindowChunks of them.
  size_t WriterWindow() const;
  static constexpr size_t kMaxWindowChunks = 4096;
  // Near a save's end a window takes at most half the bytes left, down to
  // this (or one chunk): the last window's append overlaps no compression.
  static constexpr uint64_t kTailWindowBytes = uint64_t{256} << 10;
  // Makes the tensor nodes of this process's part boxed where they must be
  // (multi-process: every tensor, each process naming the boxes it
  // writes), and checks that a single process's shards tile their tensors.
  Status AssignBoxes(Manifest* manifest) const;
  // Whether a tensor may reuse the previous save's chunk list.
  static bool SameLayout(const ManifestNode& previous, const ManifestNode& node);
  // Where each box of `node` (the whole tensor, unboxed) lies in memory.
  static std::vector<const std::byte*> BoxBuffers(const Tree& leaf, const ManifestNode& node);
  // Delta encoding: this save's position copies, made of the last save's
  // (empty when delta encoding is off). `reused`: per node, whether it took
  // the last save's chunks unread.
  std::map<std::string, std::vector<PendingSave::PositionCopy>> CarryOverPositionCopies(
      const Manifest& manifest, const std::vector<bool>& reused);
  // The base a new chunk of `size` bytes at the position of `copy` is
  // stored against; nullopt: stored whole.
  Result<std::optional<DeltaBase>> DeltaBaseFor(const PendingSave::PositionCopy& copy,
                                                uint32_t size) const;

  Store* const store_;
  const Settings settings_;
  std::unique_ptr<StagingPool> staging_;  // made by the first staged save
  // The writer's compressed chunks, one per chunk of a window, for the
  // window being compressed and the one being appended, kept from save to
  // save: fresh buffers would cost a page fault per 4 KiB each time (more
  // than compressing the page).
  std::vector<std::string> encode_buffers_[2];
  // Per tensor path, the previous save's tensor: its chunk list (reused for
  // assume_unchanged) and which of its chunks were new then. Chunks that
  // were not (frozen weights) are hashed without a speculative copy.
  struct SavedTensor {
    ManifestNode node;
    std::vector<bool> chunk_was_new;
  };
  std::map<std::string, SavedTensor> last_save_;
  // Delta encoding: per tensor path, per chunk position, the chunk the last
  // save left there and a copy of its bytes. Prepare decides which copies
  // serve as bases; the writer refreshes them as it encodes. A copy names
  // the chunk whose bytes it holds, committed or not: Prepare bases a delta
  // only on a chunk the store holds at the depth the copy records.
  std::map<std::string, std::vector<PendingSave::PositionCopy>> delta_bases_;
};

}  // namespace ckptdb

#endif  // CKPTDB_LIB_SAVE_PIPELINE_H_
