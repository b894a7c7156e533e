// The messages of a multi-process save (doc/format.md §7) and the primary's
// merge of the processes' parts into one step. Pure: the Checkpointer moves
// the messages through its Coordinator.
//
//   round     every process sends             the primary answers
//   begin     its Prepare's status             the first of the generations it
//                                              allocated (one per process), or
//                                              the first error
//   commit    its part: the step's tree with   the commit's status, after
//             the boxes and chunks it saved,   ingesting every file and
//             the index entries of the chunks  writing the one manifest (and
//             it wrote, or its error           running retention and GC)
//
// Messages come from the job's own processes, but are decoded as bytes from
// anywhere: every length is checked before it is used.
#ifndef CKPTDB_LIB_MULTIPROCESS_H_
#define CKPTDB_LIB_MULTIPROCESS_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "ckptdb/status.h"
#include "manifest.h"
#include "store.h"

namespace ckptdb {

// A status, the number that goes with it (the begin round's first
// generation; 1 when the commit round committed), and the primary's step
// list after a commit, a deletion or a GC (empty otherwise).
std::string EncodeVerdict(const Status& status, uint64_t value = 0,
                          const std::vector<int64_t>& steps = {});
// Corruption for bytes that are not a verdict.
Result<uint64_t> DecodeVerdict(std::string_view bytes, Status* status,
                               std::vector<int64_t>* steps = nullptr);

// One process's part of a save.
struct ProcessPart {
  Manifest manifest;  // ManifestScope::kProcess
  std::vector<IndexEntry> new_chunks;
};
// `part` is ignored unless `status` is OK.
std::string EncodePart(const Status& status, const Manifest& manifest,
                       const std::vector<IndexEntry>& new_chunks);
// The part sent by `process`, whose new chunks lie in `generation`.
// `status` gets the process's own error (the part is then empty);
// Corruption for bytes that are not a part.
Result<ProcessPart> DecodePart(std::string_view bytes, int process, uint64_t generation,
                               Status* status);

// The step made of every process's part (parts[primary] is the primary's, whose
// step, time, metrics, user metadata and scalar values the step takes):
// InvalidArgument naming the process and path when the processes' trees
// differ in structure, dtype or shape, or when a tensor's saved boxes do
// not tile it. `new_chunks` gets every part's index entries, each digest
// once.
Result<Manifest> MergeParts(const std::vector<ProcessPart>& parts, size_t primary,
                            std::vector<IndexEntry>* new_chunks);

}  // namespace ckptdb

#endif  // CKPTDB_LIB_MULTIPROCESS_H_
