// The read path: a committed step's manifest, its chunks verified against
// their digests, and trees restored from them. The Checkpointer, garbage
// collection, verification, repair and ckpt-inspect all read steps through
// these functions.

#ifndef CKPTDB_LIB_RESTORE_H_
#define CKPTDB_LIB_RESTORE_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ckptdb/options.h"
#include "ckptdb/status.h"
#include "ckptdb/tree.h"
#include "manifest.h"

namespace ckptdb {

class PinnedChunk;
class Store;
struct ChunkLocation;

// "step N".
std::string StepName(int64_t step);

// The decoded manifest of `step`: NotFound when the store holds no such
// step; Corruption (naming the step and the store) when the bytes are not a
// manifest or describe another step; NotSupported for a newer format.
// `encoded_bytes`, if given, gets the manifest's size as stored.
Result<Manifest> ReadStepManifest(const Store& store, int64_t step,
                                  uint64_t* encoded_bytes = nullptr,
                                  ManifestParts parts = ManifestParts::kWhole);

// Reads chunk `digest` (of `raw_size` bytes, stored at `location`) into
// `dest` and checks its digest: NotFound when the chunk file lacks it,
// Corruption when the bytes read are not the chunk's. `read_ahead`, when
// given, holds the chunk's own stored bytes, already read (Store::PinChunk);
// the bases of a delta chunk are read here all the same.
Status ReadVerifiedChunk(const Store& store, const ChunkDigest& digest,
                         const ChunkLocation& location, uint32_t raw_size, std::byte* dest,
                         const PinnedChunk* read_ahead = nullptr);

// A tensor to decode: its node, and where its bytes go: the whole tensor,
// or only `region` of it (a shard's box), laid out row-major.
struct DecodeTarget {
  const ManifestNode* node;
  std::byte* dest;
  std::optional<Box> region = {};
};

// Decodes the tensors of `step` on `threads` threads. A region reads only
// the chunks of the saved boxes that overlap it (from the first to the last
// byte of the overlap in each box); chunks decode in place where the
// overlap is one run of bytes in both layouts, else into scratch memory,
// copied out row by row. A missing chunk is
// Corruption for a writer; a reader catches up with the writer and retries
// (a held step's chunks stay live, but GC may move them to a new
// generation) a bounded number of times.
Status DecodeTensors(Store& store, int64_t step, const std::vector<DecodeTarget>& targets,
                     size_t threads);

// Restores `manifest` into the template `state` (Checkpointer::Restore):
// InvalidArgument listing every mismatch between template and step, nothing
// changed then.
Status RestoreIntoTemplate(Store& store, const Manifest& manifest, Tree* state,
                           const RestoreOptions& options, size_t threads);

// A fresh tree of the subtree at `path` ("" = all) of `manifest`
// (Checkpointer::RestoreTree); NotFound for a path the step does not hold.
Result<Tree> RestoreSubtree(Store& store, const Manifest& manifest, const std::string& path,
                            size_t threads);

}  // namespace ckptdb

#endif  // CKPTDB_LIB_RESTORE_H_
