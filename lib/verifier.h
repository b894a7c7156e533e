// Verification of a store: every manifest decodes, every chunk file is
// present with its recorded size, and every chunk a manifest references is
// indexed, readable, decodes to its recorded size and hashes to its digest;
// verifying the whole store checks every other indexed chunk too. Reads every
// chunk checked once (the cost is the bytes).

#ifndef CKPTDB_LIB_VERIFIER_H_
#define CKPTDB_LIB_VERIFIER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "ckptdb/status.h"
#include "store.h"

namespace ckptdb {

struct VerifyReport {
  uint64_t steps_checked = 0;
  uint64_t chunks_checked = 0;  // distinct chunks read and re-hashed
  uint64_t bytes_checked = 0;   // their raw bytes
  // One line per problem, naming the step, the tensor path and the chunk.
  std::vector<std::string> problems;
  // Steps that cannot be restored completely, each with its first problem.
  std::map<int64_t, std::string> damaged_steps;
  // Referenced chunks that are missing, unreadable or fail their digest.
  std::vector<ChunkDigest> damaged_chunks;
  // Indexed chunks no step references that are unreadable or fail their
  // digest (checked when verifying the whole store).
  std::vector<ChunkDigest> damaged_unreferenced_chunks;
  // The files behind the damage ("000027.sst", or "chunk index" for chunks
  // the index does not know), each with the steps that use them.
  std::map<std::string, std::set<int64_t>> damaged_files;
  bool ok() const { return problems.empty(); }
};

// Verifies `step`, or every step when unset. `progress(done, total)` is
// called now and then with counts of chunks. The Status is non-OK only when
// verification itself could not run (I/O errors listing the store);
// everything found wrong in the store goes into the report.
Result<VerifyReport> VerifyStore(const Store& store, std::optional<int64_t> step,
                                 const std::function<void(uint64_t, uint64_t)>& progress);

}  // namespace ckptdb

#endif  // CKPTDB_LIB_VERIFIER_H_
