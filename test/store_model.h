// Which steps of a store damage leaves intact: the tests' model of where
// every record of a store lies, and of what each step needs.
//
// A step needs the store's identity (CKPTDB, or the copies of the store
// metadata in the database), one copy of its manifest, and one copy of every
// chunk it references and of every delta base below them. A copy is a block
// of a table file, or the fragments of a log batch: it survives damage that
// touches none of its bytes. This is what repair promises to salvage
// (doc/format.md §11), so a step the model calls intact must be kept.

#ifndef CKPTDB_TEST_STORE_MODEL_H_
#define CKPTDB_TEST_STORE_MODEL_H_

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "chunk_digest.h"

namespace ckptdb::testing {

// What was done to one file of a store (by its path relative to the store).
struct FileDamage {
  std::string file;
  bool deleted = false;
  std::optional<uint64_t> truncated_to;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;  // [begin, end) changed
};

// The bytes a record occupies.
struct Extent {
  std::string file;
  uint64_t begin = 0;
  uint64_t end = 0;
};

class StoreModel {
 public:
  // Models the intact store in `dir` (read-only; nothing is changed).
  static StoreModel Of(const std::string& dir);

  // The steps every copy of whose needs survives `damage`.
  std::set<int64_t> IntactSteps(const std::vector<FileDamage>& damage) const;
  std::set<int64_t> steps() const;

 private:
  std::vector<Extent> identity_file_;
  std::map<std::string, std::vector<Extent>> metadata_;  // key -> copies
  std::map<int64_t, std::vector<Extent>> manifests_;     // step -> copies
  std::map<ChunkDigest, std::vector<Extent>> chunks_;    // digest -> copies
  std::map<ChunkDigest, ChunkDigest> delta_base_;
  std::map<int64_t, std::set<ChunkDigest>> step_chunks_;
};

}  // namespace ckptdb::testing

#endif  // CKPTDB_TEST_STORE_MODEL_H_
