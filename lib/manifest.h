// Manifest: the metadata of one committed step (the tree, its chunk lists,
// metrics), and its FlatBuffers encoding (schema/manifest.fbs). Every decode
// verifies the buffer and the tree's invariants before anything uses it.

#ifndef CKPTDB_LIB_MANIFEST_H_
#define CKPTDB_LIB_MANIFEST_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "box.h"
#include "chunk_digest.h"
#include "ckptdb/status.h"
#include "ckptdb/tensor.h"
#include "ckptdb/tree.h"

namespace ckptdb {

// The manifest format this build writes and the newest it reads. Version 2
// added boxes (tensors saved as shards); version 3 packs the tree into bytes
// (keys stored once, numbers as varints) and keeps tensors of at most
// kMaxInlineTensorBytes in the manifest itself. Versions 1 and 2 are still
// read.
inline constexpr uint32_t kManifestFormatVersion = 3;
inline constexpr uint32_t kFirstBoxedManifestFormatVersion = 2;
inline constexpr uint32_t kFirstPackedManifestFormatVersion = 3;
// A whole (unboxed) tensor of at most this many bytes is stored in the
// manifest rather than as a chunk: a chunk's reference alone takes about 24
// bytes, and its lookup, write and read cost far more than copying it.
inline constexpr uint64_t kMaxInlineTensorBytes = 64;
// Deeper trees are refused: bounds recursion on hostile input.
inline constexpr size_t kMaxTreeDepth = 128;
// Larger trees are refused at save, so that every saved manifest passes the
// verifier's table limit below (a node is one table; metrics and metadata
// entries are tables too, bounded by the margin).
inline constexpr size_t kMaxTreeNodes = size_t{1} << 22;
inline constexpr size_t kMaxManifestTables = size_t{1} << 24;
// Keys and string values of one tree, together, stay below this (FlatBuffers
// buffers are limited to 2 GiB).
inline constexpr uint64_t kMaxTreeTextBytes = uint64_t{1} << 30;

struct ChunkRef {
  ChunkDigest digest;
  uint32_t raw_size = 0;
  uint32_t stored_size = 0;
};

// A box of a sharded tensor and the number of the node's chunks holding it.
struct ManifestBox {
  Box box;
  uint32_t chunk_count = 0;
};

// The fields are ordered so that the small ones share one word: a step of a
// million leaves holds two million of these while it is saved or read.
struct ManifestNode {
  Tree::Kind kind = Tree::Kind::kMap;
  DType dtype = DType::kFloat32;
  bool inlined = false;  // see inline_bytes
  bool boxed = false;    // see chunks
  uint32_t child_count = 0;  // containers only
  uint32_t depth = 0;        // not stored: filled by FlattenTree and DecodeManifest
  std::string key;           // the key under a map parent; empty otherwise
  std::vector<int64_t> shape;
  // Tensors only. Unboxed: the chunks cover the tensor's bytes in order.
  // Boxed: each box's chunks cover its elements row-major, box after box;
  // a stored step's boxes tile the tensor (sorted by start), a process's
  // part of a save holds the boxes it writes (maybe none).
  std::vector<ChunkRef> chunks;
  std::vector<ManifestBox> boxes;
  // A tensor of 1 to kMaxInlineTensorBytes bytes kept in the manifest
  // (`inlined`): its bytes, and no chunks or boxes.
  std::string inline_bytes;
  int64_t int_value = 0;  // kInt, and kBool as 0/1
  double float_value = 0;
  std::string string_value;
  // Not stored: filled by FlattenTree and DecodeManifest.
  std::string path;
  uint64_t byte_size = 0;  // tensors only
};

struct Manifest {
  int64_t step = 0;
  int64_t commit_time_ns = 0;
  std::map<std::string, double> metrics;
  std::map<std::string, std::string> user_metadata;
  std::vector<ManifestNode> nodes;  // pre-order; nodes[0] is the root
};

class TreePacker;  // manifest_packed.h

// A save's packed tree (format version 3) drafted while its state is
// flattened: every node is packed at once but the tensors stored as chunks,
// whose chunk lists are known only once they are hashed and written, which
// are kept whole (ManifestNodes) and marked where they go. A step of a
// million tiny leaves then holds about 30 bytes a leaf until its commit
// rather than a ManifestNode (about 300 with its path and buffers).
struct TreeDraft {
  TreeDraft();
  ~TreeDraft();
  TreeDraft(TreeDraft&&) noexcept;
  TreeDraft& operator=(TreeDraft&&) noexcept;

  std::unique_ptr<TreePacker> packer;  // holds the keys met so far
  std::string packed;                  // the packed nodes, kept ones left out
  // Per kept node, in pre-order: where in `packed` its bytes go.
  std::vector<size_t> kept_at;
};

// The nodes of `tree` in pre-order, with paths and byte sizes, chunk lists
// empty; `sources`, if given, gets the tree node of each (parallel to the
// result), so callers need not look paths up again. With a `draft`, only
// the tensors stored as chunks are returned (and their sources): the other
// nodes are packed into `draft`, whole tensors of 1 to kMaxInlineTensorBytes
// bytes with their bytes (inlined). InvalidArgument for a tree deeper than
// kMaxTreeDepth, of more than kMaxTreeNodes nodes or kMaxTreeTextBytes of
// keys and strings.
Result<std::vector<ManifestNode>> FlattenTree(const Tree& tree,
                                              std::vector<const Tree*>* sources = nullptr,
                                              TreeDraft* draft = nullptr);

// A tree with the structure and scalar values of `nodes` (a subtree in
// pre-order, its root first; the root's key is ignored), and tensors
// allocated (zero-filled, owned) with the stored dtypes and shapes.
Result<Tree> BuildTree(const std::vector<ManifestNode>& nodes);
// The same with each tensor leaf made by `make_tensor` from its node.
Result<Tree> BuildTree(const std::vector<ManifestNode>& nodes,
                       const std::function<Result<Tensor>(const ManifestNode&)>& make_tensor);

// Checks that `nodes` (pre-order, nodes[0] the root) form one tree: the root
// has no key; a map's children have non-empty keys without '/' in strictly
// increasing order; a list's children have none; a container's children fit
// in the list and only containers have children; no node is deeper than
// kMaxTreeDepth. Fills in every node's path and depth, then calls
// `check_node(index, node)` for what depends on the source (kinds, tensors).
// Each problem is `invalid(index, what)`.
Status CheckPreOrderTree(
    std::vector<ManifestNode>* nodes,
    const std::function<Status(size_t index, const std::string& what)>& invalid,
    const std::function<Status(size_t index, ManifestNode& node)>& check_node);

// 'NAME' for messages, cut to its first 200 bytes (a hostile name can be
// gigabytes long).
std::string QuotedName(std::string_view name);

// True when `path` is `prefix` or below it ("" is the root, above all).
bool IsUnder(std::string_view path, std::string_view prefix);
bool IsUnderAny(std::string_view path, const std::vector<std::string>& prefixes);
// The first of `paths` that names none of `nodes`, if any.
std::optional<std::string> MissingPath(const std::vector<ManifestNode>& nodes,
                                       const std::vector<std::string>& paths);

// The boxes of a tensor node with their chunks, for SetBoxes.
struct BoxChunks {
  Box box;
  std::vector<ChunkRef> chunks;
};
// Makes `node` hold `boxes` (sorted by start) and their chunks: unboxed when
// they are one box of the whole tensor. InvalidArgument naming the tensor
// unless the boxes tile it exactly and each box's chunks cover its bytes.
Status SetBoxes(ManifestNode* node, std::vector<BoxChunks> boxes);
// The boxes of a tensor node with their chunk counts (an unboxed node's
// chunks as one box of the whole tensor), without copying chunks: box i's
// chunks follow box i-1's in node.chunks.
std::vector<ManifestBox> BoxLayout(const ManifestNode& node);
// Each box of a node with a copy of its chunks (BoxLayout's boxes).
std::vector<BoxChunks> BoxesOf(const ManifestNode& node);

// How a manifest is written: packed (version 3), or one table per node
// (version 1, or 2 when a tensor has boxes) for stores whose builds read
// only those. Inline tensors need kPacked.
enum class ManifestLayout { kPacked, kNodeTables };
std::string EncodeManifest(const Manifest& manifest,
                           ManifestLayout layout = ManifestLayout::kPacked);
// The packed manifest of a drafted save: `manifest.nodes` are the kept
// nodes of `draft`, in its order, their chunk lists filled in. The bytes are
// those EncodeManifest gives for the whole node list.
std::string EncodeManifest(const Manifest& manifest, TreeDraft draft);

// Which manifests DecodeManifest accepts.
enum class ManifestScope {
  kStep,     // a stored step: boxed tensors are tiled by their boxes
  kProcess,  // one process's part of a save: its boxes need not tile
};
// What DecodeManifest returns.
enum class ManifestParts {
  kWhole,
  // All but the nodes (left empty): step, commit time, metrics and user
  // metadata. The buffer is verified and a packed tree's checksum checked,
  // but the tree is not unpacked: opening a store reads every step's
  // manifest this way (300 steps of 1000 tensors: most of a reader's open).
  kWithoutNodes,
};
// Corruption for anything that is not a well-formed manifest (failed
// verifier, wrong identifier, inconsistent tree); NotSupported for a newer
// format version.
Result<Manifest> DecodeManifest(std::string_view bytes, ManifestScope scope = ManifestScope::kStep,
                                ManifestParts parts = ManifestParts::kWhole);

}  // namespace ckptdb

#endif  // CKPTDB_LIB_MANIFEST_H_
