// The packed tree of manifest format version 3 (doc/format.md §6): a
// manifest's nodes in pre-order as bytes, numbers as varints, map keys as
// indices into a table holding each distinct key once. Private to
// lib/manifest.cc.

#ifndef CKPTDB_LIB_MANIFEST_PACKED_H_
#define CKPTDB_LIB_MANIFEST_PACKED_H_

#include <string>
#include <string_view>
#include <vector>

#include "ckptdb/status.h"
#include "manifest.h"

namespace ckptdb {

// Appends `nodes` to `*tree`, and each key not yet in `*keys` to it. Every
// field of every node is kept as it is, valid or not, so that the decoder's
// checks see what the encoder was given. The views point into `nodes`.
void PackTree(const std::vector<ManifestNode>& nodes, std::vector<std::string_view>* keys,
              std::string* tree);

// The nodes `tree` holds, their keys taken from `keys`. Corruption when the
// bytes end early, run on past the nodes, or name a key `keys` lacks; what
// the nodes say is checked by the caller (CheckPreOrderTree), not here.
Result<std::vector<ManifestNode>> UnpackTree(const std::vector<std::string_view>& keys,
                                             std::string_view tree);

}  // namespace ckptdb

#endif  // CKPTDB_LIB_MANIFEST_PACKED_H_
