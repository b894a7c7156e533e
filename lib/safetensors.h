// safetensors files: the tensor format PyTorch, JAX and Hugging Face users
// read and write. Layout: an 8-byte little-endian header length N, N bytes of
// JSON header, then the tensor bytes:
//
//   {"__metadata__": {"key": "value", ...},
//    "<name>": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}
//
// Offsets are relative to the first byte after the header; the tensors'
// ranges must tile that byte buffer exactly (no gap, no overlap).
//
// ckptdb maps a Tree to a file: each tensor leaf is a tensor named by its
// path ("params/layers/0/kernel"). The rest of the tree (maps, lists,
// scalars, empty containers) is recorded in __metadata__["ckptdb.tree"], so
// that a store -> safetensors -> store round trip is bit-exact. A file without
// that key (written by another tool) becomes a tree of maps split on '/'.

#ifndef CKPTDB_LIB_SAFETENSORS_H_
#define CKPTDB_LIB_SAFETENSORS_H_

#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "ckptdb/status.h"
#include "ckptdb/tensor.h"
#include "ckptdb/tree.h"

namespace ckptdb {

// Headers larger than this are refused (the reference implementation's limit).
inline constexpr uint64_t kMaxSafetensorsHeaderSize = 100u << 20;
// The __metadata__ key holding the non-tensor structure of a ckptdb tree.
inline constexpr char kTreeMetadataKey[] = "ckptdb.tree";

// "F32", "BF16", "F8_E4M3", ... for every DType.
std::string_view SafetensorsDTypeName(DType dtype);
// Inverse; InvalidArgument naming the unknown dtype.
Result<DType> DTypeFromSafetensorsName(std::string_view name);

struct SafetensorsFile {
  Tree tree;                                    // tensors own their buffers
  std::map<std::string, std::string> metadata;  // __metadata__ minus kTreeMetadataKey
};

// Writes `tree` and `metadata` to `path`, and nothing else: the bytes go to
// a new file beside `path` (created with O_EXCL and O_NOFOLLOW under an
// unpredictable name, mode `permissions` whatever the umask), synced, renamed
// over `path`, and the directory synced, so a crash never leaves a
// half-written `path` and a planted link is never followed. Tensor names
// never become file names. InvalidArgument, nothing written, for an empty
// `path`, a directory, or an existing file that is not regular (a device, a
// fifo, a socket; a symbolic link is replaced, not followed), and for trees a
// safetensors file cannot name: a tensor at the root or at path
// "__metadata__", names or metadata that are not valid UTF-8.
Status WriteSafetensors(const std::string& path, const Tree& tree,
                        const std::map<std::string, std::string>& metadata,
                        unsigned permissions = 0600);

// Reads a file written by any tool. InvalidArgument naming the file and the
// problem for anything malformed. Memory: the tensors (at most the file's
// size) plus a small multiple of the header's size (itself at most
// kMaxSafetensorsHeaderSize). Without kTreeMetadataKey, "layers/0/w" becomes
// maps ("0" a map key): only ckptdb's own metadata can say it was a list.
Result<SafetensorsFile> ReadSafetensors(const std::string& path);

// A file mapped into memory: the tree's tensors are read-only views of the
// mapping, which lives as long as any copy of `mapping` does.
struct MappedSafetensors {
  Tree tree;
  std::map<std::string, std::string> metadata;
  std::shared_ptr<const void> mapping;
};

// As ReadSafetensors, without reading the tensors into memory of their own:
// their bytes come from the page cache as they are used (no allocation, no
// first touch of fresh pages). Memory: the header's. The file must not shrink
// while it is mapped (reading a page past its new end kills the process with
// SIGBUS).
Result<MappedSafetensors> MapSafetensors(const std::string& path);

// The same from bytes in memory (for tests and fuzzing).
Result<SafetensorsFile> ParseSafetensors(std::string_view bytes);

}  // namespace ckptdb

#endif  // CKPTDB_LIB_SAFETENSORS_H_
