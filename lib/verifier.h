// Verification of a store: every manifest decodes and every chunk a manifest
// references is indexed, readable, decodes to its recorded size and hashes to
// its digest. Reads every referenced chunk once (the cost is the bytes).

#ifndef CKPTDB_LIB_VERIFIER_H_
#define CKPTDB_LIB_VERIFIER_H_

#include <cstdint>
#include <functional>
#include <optional>
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
