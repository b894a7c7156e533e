// Private to lib/safetensors*.cc: what the writer (safetensors_write.cc),
// the header's validation (safetensors_header.cc) and the readers
// (safetensors.cc) share.
//
// The tree's structure, as the writer writes it and the reader reads it:
// __metadata__["ckptdb.tree"] is a string holding a JSON array with one
// object per node of the tree, in pre-order (the root first; a map's children
// by key, a list's by index), each with the fields:
//
//   "kind"       "map", "list", "tensor", "int", "float", "bool" or "string"
//                (KindName).
//   "key"        the node's map key, present exactly when its parent is a map.
//                "key_hex" (its bytes in hex) instead when the key is not
//                valid UTF-8, which a JSON string cannot hold.
//   "children"   maps and lists only: the number of children, whose subtrees
//                follow in order.
//   "value"      int: a decimal string ("-9223372036854775808"), since many
//                JSON readers turn numbers into doubles; float: a string of
//                the 16 hex digits of the IEEE-754 bits ("8000000000000000" is
//                -0.0), so that every NaN payload survives; bool: true or
//                false; string: the string, or "value_hex" (its bytes in hex)
//                instead when it is not valid UTF-8.
//
// Tensor nodes carry no other field: their tensor is the header entry named
// by their path (keys and list indices joined by '/'). For example
// {"hist": [1.5], "params": {"w": <tensor>}, "step": 7} is
//
//   [{"kind":"map","children":3},
//    {"kind":"list","key":"hist","children":1},
//    {"kind":"float","value":"3ff8000000000000"},
//    {"kind":"map","key":"params","children":1},
//    {"kind":"tensor","key":"w"},
//    {"kind":"int","key":"step","value":"7"}]
//
// and the header has one tensor, "params/w". A reader checks that the nodes
// form one tree (child counts, strictly sorted map keys without '/', depth at
// most kMaxTreeDepth) whose tensor nodes are exactly the header's tensors.
//
// Tensor names, metadata keys and metadata values are JSON strings, so they
// must be valid UTF-8: writing a tree with a tensor under a non-UTF-8 key is
// refused.

#ifndef CKPTDB_LIB_SAFETENSORS_INTERNAL_H_
#define CKPTDB_LIB_SAFETENSORS_INTERNAL_H_

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "ckptdb/status.h"
#include "ckptdb/tensor.h"
#include "manifest.h"

namespace ckptdb::safetensors {

inline constexpr std::string_view kMetadataEntry = "__metadata__";
// The byte length of the header-length field.
inline constexpr uint64_t kLengthFieldSize = 8;

struct SafetensorsDType {
  DType dtype;
  std::string_view name;
};

inline constexpr SafetensorsDType kSafetensorsDTypes[] = {
    {DType::kBool, "BOOL"},
    {DType::kUInt8, "U8"},
    {DType::kInt8, "I8"},
    {DType::kInt16, "I16"},
    {DType::kUInt16, "U16"},
    {DType::kInt32, "I32"},
    {DType::kUInt32, "U32"},
    {DType::kInt64, "I64"},
    {DType::kUInt64, "U64"},
    {DType::kFloat16, "F16"},
    {DType::kBFloat16, "BF16"},
    {DType::kFloat32, "F32"},
    {DType::kFloat64, "F64"},
    {DType::kFloat8E4M3FN, "F8_E4M3"},
    {DType::kFloat8E5M2, "F8_E5M2"},
};

// The entry of `dtype`, or nullptr for a dtype safetensors cannot name.
const SafetensorsDType* FindDType(DType dtype);

// errno's text, for messages.
std::string ErrnoText(int error);

// A tensor entry of a header, checked (dtype, shape, offsets).
struct TensorEntry {
  std::string name;
  DType dtype = DType::kUInt8;
  std::vector<int64_t> shape;
  uint64_t begin = 0;
  uint64_t end = 0;
};

// A header checked whole: the JSON, each entry, the names, the tiling of the
// data buffer and the tree.
struct ValidatedHeader {
  std::map<std::string, std::string> metadata;  // without kTreeMetadataKey
  std::vector<TensorEntry> tensors;             // in data order
  std::vector<ManifestNode> nodes;  // the tree in pre-order; tensors with dtype and shape
};

// The one validation of a header, for files and for bytes in memory: the
// JSON, each entry, the names, the tiling of the `data_size`-byte buffer and
// the tree. Nothing is allocated for the tensors yet. `source` names the
// input in messages.
Result<ValidatedHeader> ValidateHeader(std::string_view header, uint64_t data_size,
                                       const std::string& source);

// The header length in the first bytes of a `total_size`-byte input, checked
// against the limit and the bytes that follow.
Result<uint64_t> HeaderLength(std::string_view first_bytes, uint64_t total_size,
                              const std::string& source);

}  // namespace ckptdb::safetensors

#endif  // CKPTDB_LIB_SAFETENSORS_INTERNAL_H_
