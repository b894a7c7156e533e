// The packed tree of manifest format version 3 (doc/format.md §6): a
// manifest's nodes in pre-order as bytes, numbers as varints, map keys as
// indices into a table holding each distinct key once. Private to
// lib/manifest.cc.

#ifndef CKPTDB_LIB_MANIFEST_PACKED_H_
#define CKPTDB_LIB_MANIFEST_PACKED_H_

#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "ckptdb/status.h"
#include "manifest.h"

namespace ckptdb {

// Packs nodes one at a time, giving each distinct key an index in the order
// the keys are first met. Every field of every node is kept as it is, valid
// or not, so that the decoder's checks see what the encoder was given.
class TreePacker {
 public:
  // Appends `node`'s bytes to `*tree`.
  void Append(const ManifestNode& node, std::string* tree);
  // The index of `key`, which is added to the keys if new.
  uint64_t KeyIndex(const std::string& key);
  // Each distinct key met, by index (views of the packer's own copies).
  const std::vector<std::string_view>& keys() const { return keys_; }

 private:
  // The map's nodes hold the key text: their addresses survive rehashing
  // and moves of the map, so keys_ may view them.
  std::unordered_map<std::string, uint64_t> index_;
  std::vector<std::string_view> keys_;
};

// The nodes `tree` holds, their keys taken from `keys`. Corruption when the
// bytes end early, run on past the nodes, or name a key `keys` lacks; what
// the nodes say is checked by the caller (CheckPreOrderTree), not here.
Result<std::vector<ManifestNode>> UnpackTree(const std::vector<std::string_view>& keys,
                                             std::string_view tree);

}  // namespace ckptdb

#endif  // CKPTDB_LIB_MANIFEST_PACKED_H_
