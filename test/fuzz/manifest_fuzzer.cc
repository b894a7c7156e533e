// libFuzzer target: DecodeManifest on arbitrary bytes.
//
// Properties (a violation is __builtin_trap()):
//   - what decodes as a stored step decodes as a process's part too, and
//     without its nodes to the same step, time, metrics and metadata;
//   - a manifest that decodes re-encodes (EncodeManifest) to bytes that decode
//     to the same manifest (the fields each node kind stores, paths, depths,
//     byte sizes, chunk lists, metrics, metadata);
//   - when its tensors take at most kMaxBuildBytes, BuildTree either fails
//     cleanly or gives a tree whose FlattenTree is the same node list.
// Anything else (a crash, a sanitizer report, a leak) is found by the fuzzer.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <vector>

#include "manifest.h"

namespace ckptdb {
namespace {

// A valid manifest may describe terabytes of tensors, which BuildTree would
// allocate: skip it above this many tensor bytes in all.
constexpr uint64_t kMaxBuildBytes = uint64_t{64} << 20;

bool SameBits(double a, double b) { return std::memcmp(&a, &b, sizeof(double)) == 0; }

bool SameChunks(const std::vector<ChunkRef>& a, const std::vector<ChunkRef>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].digest != b[i].digest || a[i].raw_size != b[i].raw_size ||
        a[i].stored_size != b[i].stored_size) {
      return false;
    }
  }
  return true;
}

bool SameBoxes(const ManifestNode& a, const ManifestNode& b) {
  if (a.boxed != b.boxed || a.boxes.size() != b.boxes.size()) return false;
  for (size_t i = 0; i < a.boxes.size(); ++i) {
    if (a.boxes[i].box != b.boxes[i].box || a.boxes[i].chunk_count != b.boxes[i].chunk_count) {
      return false;
    }
  }
  return true;
}

// Compares what a node of its kind stores: DecodeManifest keeps fields a kind
// does not use (an int_value on a map, a shape on a string), EncodeManifest and
// FlattenTree drop them.
bool SameNode(const ManifestNode& a, const ManifestNode& b, bool compare_chunks) {
  if (a.kind != b.kind || a.key != b.key || a.path != b.path || a.depth != b.depth) return false;
  switch (a.kind) {
    case Tree::Kind::kMap:
    case Tree::Kind::kList: return a.child_count == b.child_count;
    case Tree::Kind::kTensor:
      return a.dtype == b.dtype && a.shape == b.shape && a.byte_size == b.byte_size &&
             (!compare_chunks || (SameChunks(a.chunks, b.chunks) && SameBoxes(a, b) &&
                                  a.inlined == b.inlined && a.inline_bytes == b.inline_bytes));
    case Tree::Kind::kInt:
    case Tree::Kind::kBool: return a.int_value == b.int_value;
    case Tree::Kind::kFloat: return SameBits(a.float_value, b.float_value);
    case Tree::Kind::kString: return a.string_value == b.string_value;
    case Tree::Kind::kShardedTensor: return false;  // never decoded
  }
  return false;
}

bool SameNodes(const std::vector<ManifestNode>& a, const std::vector<ManifestNode>& b,
               bool compare_chunks) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!SameNode(a[i], b[i], compare_chunks)) return false;
  }
  return true;
}

bool SameManifest(const Manifest& a, const Manifest& b) {
  if (a.step != b.step || a.commit_time_ns != b.commit_time_ns ||
      a.user_metadata != b.user_metadata || a.metrics.size() != b.metrics.size()) {
    return false;
  }
  for (auto i = a.metrics.begin(), j = b.metrics.begin(); i != a.metrics.end(); ++i, ++j) {
    if (i->first != j->first || !SameBits(i->second, j->second)) return false;
  }
  return SameNodes(a.nodes, b.nodes, /*compare_chunks=*/true);
}

}  // namespace
}  // namespace ckptdb

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ckptdb;
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  Result<Manifest> manifest = DecodeManifest(bytes);
  // One process's part of a save checks less than a stored step: every step
  // passes as a part.
  Result<Manifest> part = DecodeManifest(bytes, ManifestScope::kProcess);
  if (manifest.ok() && !part.ok()) __builtin_trap();
  // All but the nodes, as a store's open reads every step: what decodes
  // whole decodes so too, with the same step, time, metrics and metadata.
  Result<Manifest> header = DecodeManifest(bytes, ManifestScope::kStep, ManifestParts::kWithoutNodes);
  if (manifest.ok() && (!header.ok() || !header->nodes.empty() || header->step != manifest->step ||
                        header->commit_time_ns != manifest->commit_time_ns ||
                        header->metrics != manifest->metrics ||
                        header->user_metadata != manifest->user_metadata)) {
    __builtin_trap();
  }
  if (!manifest.ok()) return 0;

  Result<Manifest> again = DecodeManifest(EncodeManifest(*manifest));
  if (!again.ok() || !SameManifest(*manifest, *again)) __builtin_trap();

  uint64_t tensor_bytes = 0;  // each byte_size is below 2^62: the sum cannot wrap before the test
  for (const ManifestNode& node : manifest->nodes) {
    tensor_bytes += node.byte_size;
    if (tensor_bytes > kMaxBuildBytes) return 0;
  }
  Result<Tree> tree = BuildTree(manifest->nodes);
  if (!tree.ok()) return 0;  // a clean refusal is allowed
  Result<std::vector<ManifestNode>> flat = FlattenTree(*tree);
  if (!flat.ok() || !SameNodes(manifest->nodes, *flat, /*compare_chunks=*/false)) {
    __builtin_trap();
  }
  return 0;
}
