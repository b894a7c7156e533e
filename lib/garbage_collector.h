// Garbage collection: reclaims the chunks no manifest references.
//
// Mark: the digests referenced by every manifest are live, and so are the
// bases of live delta chunks, down their chains; the chunk index lists every
// stored chunk with its generation, size and delta base. Neither step reads a chunk's bytes, so the cost grows with the
// number of chunks and manifests, not with the bytes stored.
//
// Sweep: dead chunks leave the index first (one synced batch), so that no
// later lookup can dedup against them; then generations with no live chunk
// are dropped whole (their files deleted), and generations whose live part
// has fallen below `rewrite_below_live_fraction` of their file have their live
// chunks copied into a new generation, the index repointed, and the old
// generation dropped.
//
// Safety: a chunk referenced by a manifest is never removed from the index.
// If a manifest references a chunk the index lacks, GC refuses to run and
// reports it (Corruption): deleting anything then could make things worse.
// Callers serialize GC with saves, so that no save can dedup against a chunk
// while it is being swept: the Checkpointer runs GC as the last phase of the
// save in flight (its mutex released, but no other save can start) or under
// its mutex with no save in flight.

#ifndef CKPTDB_LIB_GARBAGE_COLLECTOR_H_
#define CKPTDB_LIB_GARBAGE_COLLECTOR_H_

#include "ckptdb/results.h"
#include "store.h"

namespace ckptdb {

struct GcSettings {
  // Sweep only when dead chunks make up at least this fraction of the stored
  // chunk bytes (0: whenever there is garbage).
  double min_garbage_fraction = 0.0;
  // Rewrite a generation whose live bytes are below this fraction of its
  // file; 0 never rewrites (only wholly dead generations are freed).
  double rewrite_below_live_fraction = 0.5;
};

Result<GcStats> CollectGarbage(Store* store, const GcSettings& settings);

// The mark phase alone: what a collection would find (live and garbage
// chunks and bytes), changing nothing. Works on a read-only store.
Result<GcStats> MeasureGarbage(const Store& store);

}  // namespace ckptdb

#endif  // CKPTDB_LIB_GARBAGE_COLLECTOR_H_
