// What a Checkpointer reports: a stored step's metadata (ItemMetadata) and
// what a garbage collection found and did (CollectGarbage).

#ifndef CKPTDB_RESULTS_H_
#define CKPTDB_RESULTS_H_

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "ckptdb/tensor.h"
#include "ckptdb/tree.h"

namespace ckptdb {

// A box of a tensor saved as shards: its start offsets and extents in the
// global tensor.
struct SavedBox {
  std::vector<int64_t> start;
  std::vector<int64_t> shape;
};

// One leaf of a stored step, without its data.
struct LeafMetadata {
  std::string path = {};
  Tree::Kind kind = Tree::Kind::kTensor;
  // Tensor leaves only.
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;
  uint64_t logical_bytes = 0;  // dtype size x elements
  // The sum of the chunks' stored sizes (before dedup); a whole tensor of
  // at most 64 bytes is kept in the step's manifest instead: its bytes, and
  // no chunk.
  uint64_t stored_bytes = 0;
  uint32_t chunk_count = 0;
  // The boxes the shards that saved it covered (sorted by start); empty
  // when it was saved whole.
  std::vector<SavedBox> saved_boxes = {};
  // Scalar leaves only: the value of the leaf's kind (the others stay 0).
  int64_t int_value = 0;
  double float_value = 0;
  bool bool_value = false;
  std::string string_value = {};
};

// What a step holds, read from its manifest alone (no tensor data is read).
struct StepMetadata {
  int64_t step = 0;
  std::chrono::system_clock::time_point commit_time = {};
  std::map<std::string, double> metrics = {};
  std::map<std::string, std::string> user_metadata = {};
  std::vector<LeafMetadata> leaves;  // pre-order, as Tree::ForEachLeaf
  uint64_t logical_bytes = 0;        // sum over tensor leaves
  uint64_t manifest_bytes = 0;       // the step's metadata as stored (its manifest)
};

// What one garbage collection found and did. Sizes are stored (encoded) bytes.
struct GcStats {
  uint64_t manifests_scanned = 0;
  uint64_t chunks_scanned = 0;  // chunk index entries read (no chunk bytes are)
  uint64_t chunks_live = 0;
  uint64_t chunks_deleted = 0;
  uint64_t live_bytes = 0;
  uint64_t garbage_bytes = 0;          // of the chunks deleted
  uint64_t generations_dropped = 0;    // chunk files deleted whole
  uint64_t generations_rewritten = 0;  // partly dead chunk files compacted
  uint64_t bytes_freed = 0;            // size of the chunk files removed
  uint64_t bytes_rewritten = 0;        // live bytes copied out of them
  bool skipped = false;                // garbage below gc_garbage_threshold: nothing done
  double seconds = 0;
};

}  // namespace ckptdb

#endif  // CKPTDB_RESULTS_H_
