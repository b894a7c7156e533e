// Tests of the manifest: FlattenTree, EncodeManifest/DecodeManifest round
// trips, BuildTree, and DecodeManifest on hostile input (each refused with its
// specific code, never a crash).

#include "manifest.h"

#include <flatbuffers/flatbuffers.h>
#include <gtest/gtest.h>
#include <xxhash.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "chunk_codec.h"
#include "manifest_generated.h"
#include "test_util.h"

namespace ckptdb {
namespace {

// A tensor whose bytes are a pure function of their index.
Tensor Filled(DType dtype, std::vector<int64_t> shape) {
  Tensor tensor = Tensor::Allocate(dtype, std::move(shape)).value();
  for (uint64_t i = 0; i < tensor.byte_size(); ++i) {
    tensor.mutable_data()[i] = static_cast<std::byte>(i * 31 + 7);
  }
  return tensor;
}

double FromBits(uint64_t bits) { return std::bit_cast<double>(bits); }

// The float scalars of RichTree, as bit patterns.
const std::vector<uint64_t>& FloatBits() {
  static const std::vector<uint64_t> bits = {
      0x8000000000000000,  // -0.0
      0x7ff80000deadbeef,  // quiet NaN with a payload
      0xfff8000000000001,  // negative NaN with a payload
      0x7ff0000000000000,  // +inf
      0xfff0000000000000,  // -inf
      0x0000000000000001,  // smallest denormal
      0x3ff8000000000000,  // 1.5
  };
  return bits;
}

// A tree with every node kind: nested maps and lists, an empty map and list,
// tensors (rank 0, empty, several chunks), extreme ints, special floats, and
// empty and non-ASCII strings.
Tree RichTree() {
  Tree root;
  Tree* a = root.Set("a", Tree::List()).value();
  for (int i = 0; i < 2; ++i) {
    Tree* element = a->Append(Tree::Map()).value();
    (void)element->Set("b", Tree::Leaf(Filled(DType::kFloat32, {3, 5})));
  }
  Tree* bools = root.Set("bools", Tree::List()).value();
  (void)bools->Append(Tree::Bool(true));
  (void)bools->Append(Tree::Bool(false));
  (void)root.Set("empty_list", Tree::List());
  (void)root.Set("empty_map", Tree::Map());
  Tree* floats = root.Set("floats", Tree::List()).value();
  for (uint64_t bits : FloatBits()) (void)floats->Append(Tree::Float(FromBits(bits)));
  Tree* ints = root.Set("ints", Tree::List()).value();
  (void)ints->Append(Tree::Int(std::numeric_limits<int64_t>::min()));
  (void)ints->Append(Tree::Int(std::numeric_limits<int64_t>::max()));
  (void)ints->Append(Tree::Int(0));
  (void)ints->Append(Tree::Int(-1));
  Tree* params = root.Set("params", Tree::Map()).value();
  (void)params->Set("bias", Tree::Leaf(Filled(DType::kBFloat16, {4})));
  (void)params->Set("empty", Tree::Leaf(Filled(DType::kFloat32, {0, 3})));
  (void)params->Set("kernel", Tree::Leaf(Filled(DType::kFloat32, {300, 7})));
  (void)params->Set("scalar", Tree::Leaf(Filled(DType::kInt64, {})));
  Tree* strings = root.Set("strings", Tree::List()).value();
  (void)strings->Append(Tree::String(""));
  (void)strings->Append(Tree::String("h\xc3\xa9llo \xe4\xb8\x96\xe7\x95\x8c \xf0\x9f\x9a\x80"));
  (void)strings->Append(Tree::String("\xff\xfe\x80"));  // not UTF-8
  return root;
}

// RichTree's nodes in pre-order (map children sorted by key).
const std::vector<std::string>& RichPaths() {
  static const std::vector<std::string> paths = {
      "",          "a",           "a/0",          "a/0/b",         "a/1",           "a/1/b",
      "bools",     "bools/0",     "bools/1",      "empty_list",    "empty_map",     "floats",
      "floats/0",  "floats/1",    "floats/2",     "floats/3",      "floats/4",      "floats/5",
      "floats/6",  "ints",        "ints/0",       "ints/1",        "ints/2",        "ints/3",
      "params",    "params/bias", "params/empty", "params/kernel", "params/scalar", "strings",
      "strings/0", "strings/1",   "strings/2",
  };
  return paths;
}

std::vector<std::string> PathsOf(const std::vector<ManifestNode>& nodes) {
  std::vector<std::string> paths;
  for (const ManifestNode& node : nodes) paths.push_back(node.path);
  return paths;
}

// The node at `path`; fails the test (and returns the root) when there is none.
const ManifestNode& NodeAt(const std::vector<ManifestNode>& nodes, const std::string& path) {
  for (const ManifestNode& node : nodes) {
    if (node.path == path) return node;
  }
  ADD_FAILURE() << "no node at '" << path << "'";
  return nodes.front();
}

// Cuts every tensor node's bytes (but inline ones, and those given chunks
// already) into chunks of at most `chunk_size` bytes, with distinct made-up
// digests.
void AssignChunks(std::vector<ManifestNode>* nodes, uint32_t chunk_size) {
  uint64_t counter = 1;
  for (ManifestNode& node : *nodes) {
    if (node.kind != Tree::Kind::kTensor || node.inlined || !node.chunks.empty()) continue;
    for (uint64_t offset = 0; offset < node.byte_size; offset += chunk_size) {
      const auto raw_size =
          static_cast<uint32_t>(std::min<uint64_t>(chunk_size, node.byte_size - offset));
      node.chunks.push_back({ChunkDigest{counter, ~counter}, raw_size, raw_size / 2 + 1});
      ++counter;
    }
  }
}

Manifest ManifestOf(const Tree& tree) {
  Manifest manifest;
  manifest.step = 1234;
  manifest.commit_time_ns = 1'700'000'000'123'456'789;
  manifest.metrics = {{"eval/accuracy", 0.91}, {"loss", 1e-3}, {"neg", -2.5}};
  manifest.user_metadata = {{"config", "sha256:abc"},
                            {"empty", ""},
                            {"note",
                             "\xc3\xbc"
                             "n"
                             "\xc3\xaf"
                             "c"
                             "\xc3\xb6"
                             "de"}};
  manifest.nodes = FlattenTree(tree).value();
  AssignChunks(&manifest.nodes, 4096);
  return manifest;
}

// The structure of `tree` with every tensor replaced by a zero-filled one of
// the same dtype and shape.
Tree ZeroedTensors(const Tree& tree) {
  switch (tree.kind()) {
    case Tree::Kind::kMap: {
      Tree copy = Tree::Map();
      tree.ForEachChild([&](std::string_view key, const Tree& child) {
        (void)copy.Set(key, ZeroedTensors(child));
      });
      return copy;
    }
    case Tree::Kind::kList: {
      Tree copy = Tree::List();
      tree.ForEachChild([&](std::string_view, const Tree& child) {
        (void)copy.Append(ZeroedTensors(child));
      });
      return copy;
    }
    case Tree::Kind::kTensor:
      return Tree::Leaf(Tensor::Allocate(tree.tensor().dtype(), tree.tensor().shape()).value());
    default: return tree;
  }
}

void ExpectNodeEq(const ManifestNode& actual, const ManifestNode& expected) {
  EXPECT_EQ(actual.kind, expected.kind);
  EXPECT_EQ(actual.key, expected.key);
  EXPECT_EQ(actual.child_count, expected.child_count);
  EXPECT_EQ(actual.path, expected.path);
  EXPECT_EQ(actual.depth, expected.depth);
  switch (expected.kind) {
    case Tree::Kind::kTensor:
      EXPECT_EQ(actual.dtype, expected.dtype);
      EXPECT_EQ(actual.shape, expected.shape);
      EXPECT_EQ(actual.byte_size, expected.byte_size);
      ASSERT_EQ(actual.chunks.size(), expected.chunks.size());
      for (size_t i = 0; i < expected.chunks.size(); ++i) {
        EXPECT_TRUE(actual.chunks[i].digest == expected.chunks[i].digest) << "chunk " << i;
        EXPECT_EQ(actual.chunks[i].raw_size, expected.chunks[i].raw_size) << "chunk " << i;
        EXPECT_EQ(actual.chunks[i].stored_size, expected.chunks[i].stored_size) << "chunk " << i;
      }
      EXPECT_EQ(actual.inlined, expected.inlined);
      EXPECT_EQ(actual.inline_bytes, expected.inline_bytes);
      EXPECT_EQ(actual.boxed, expected.boxed);
      ASSERT_EQ(actual.boxes.size(), expected.boxes.size());
      for (size_t b = 0; b < expected.boxes.size(); ++b) {
        EXPECT_EQ(actual.boxes[b].box, expected.boxes[b].box) << "box " << b;
        EXPECT_EQ(actual.boxes[b].chunk_count, expected.boxes[b].chunk_count) << "box " << b;
      }
      break;
    case Tree::Kind::kInt:
    case Tree::Kind::kBool: EXPECT_EQ(actual.int_value, expected.int_value); break;
    case Tree::Kind::kFloat:
      EXPECT_EQ(std::bit_cast<uint64_t>(actual.float_value),
                std::bit_cast<uint64_t>(expected.float_value));
      break;
    case Tree::Kind::kString: EXPECT_EQ(actual.string_value, expected.string_value); break;
    case Tree::Kind::kMap:
    case Tree::Kind::kList:
    case Tree::Kind::kShardedTensor: break;  // never in a manifest
  }
}

// ---- FlattenTree ----

TEST(FlattenTreeTest, ListsNodesInPreOrderWithPathsAndSizes) {
  Result<std::vector<ManifestNode>> nodes = FlattenTree(RichTree());
  ASSERT_OK(nodes.status());
  EXPECT_EQ(PathsOf(*nodes), RichPaths());
  for (const ManifestNode& node : *nodes) {
    SCOPED_TRACE(node.path);
    // The depth is the number of path components.
    const auto slashes = static_cast<uint32_t>(std::count(node.path.begin(), node.path.end(), '/'));
    EXPECT_EQ(node.depth, node.path.empty() ? 0 : slashes + 1);
    EXPECT_TRUE(node.chunks.empty());
  }
  const auto find = [&](const std::string& path) -> const ManifestNode& {
    return NodeAt(*nodes, path);
  };
  EXPECT_EQ(find("").child_count, 8u);
  EXPECT_EQ(find("").key, "");
  EXPECT_EQ(find("a").child_count, 2u);
  EXPECT_EQ(find("a/0").key, "");  // list elements carry no key
  EXPECT_EQ(find("a/0/b").key, "b");
  EXPECT_EQ(find("a/0/b").byte_size, 60u);  // 3 x 5 float32
  EXPECT_EQ(find("empty_list").child_count, 0u);
  EXPECT_EQ(find("empty_map").kind, Tree::Kind::kMap);
  EXPECT_EQ(find("floats").child_count, 7u);
  EXPECT_EQ(find("params/bias").byte_size, 8u);
  EXPECT_EQ(find("params/empty").byte_size, 0u);
  EXPECT_EQ(find("params/kernel").byte_size, 8400u);
  EXPECT_EQ(find("params/kernel").dtype, DType::kFloat32);
  EXPECT_EQ(find("params/kernel").shape, (std::vector<int64_t>{300, 7}));
  EXPECT_EQ(find("params/scalar").byte_size, 8u);
  EXPECT_EQ(find("params/scalar").shape, std::vector<int64_t>{});
  EXPECT_EQ(find("ints/0").int_value, std::numeric_limits<int64_t>::min());
  EXPECT_EQ(find("bools/0").int_value, 1);
  EXPECT_EQ(find("strings/2").string_value, "\xff\xfe\x80");
}

// Root + `levels` nested maps under key "k": the deepest node has depth `levels`.
Tree NestedMaps(size_t levels) {
  Tree root;
  Tree* node = &root;
  for (size_t i = 0; i < levels; ++i) node = node->Set("k", Tree::Map()).value();
  return root;
}

TEST(FlattenTreeTest, AcceptsMaxDepthAndRefusesDeeper) {
  Result<std::vector<ManifestNode>> at_max = FlattenTree(NestedMaps(kMaxTreeDepth));
  ASSERT_OK(at_max.status());
  EXPECT_EQ(at_max->back().depth, kMaxTreeDepth);
  // What FlattenTree accepts, DecodeManifest accepts too.
  Manifest manifest;
  manifest.nodes = *at_max;
  EXPECT_OK(DecodeManifest(EncodeManifest(manifest)).status());

  Result<std::vector<ManifestNode>> deeper = FlattenTree(NestedMaps(kMaxTreeDepth + 1));
  EXPECT_EQ(deeper.status().code(), Status::Code::kInvalidArgument) << deeper.status().ToString();
}

// ---- Round trips ----

TEST(ManifestTest, RoundTripPreservesEverything) {
  const Manifest manifest = ManifestOf(RichTree());
  Result<Manifest> decoded = DecodeManifest(EncodeManifest(manifest));
  ASSERT_OK(decoded.status());
  EXPECT_EQ(decoded->step, 1234);
  EXPECT_EQ(decoded->commit_time_ns, 1'700'000'000'123'456'789);
  EXPECT_EQ(decoded->metrics, manifest.metrics);
  EXPECT_EQ(decoded->user_metadata, manifest.user_metadata);
  // Paths, depths and byte sizes are not stored: decoding fills them in.
  EXPECT_EQ(PathsOf(decoded->nodes), RichPaths());
  ASSERT_EQ(decoded->nodes.size(), manifest.nodes.size());
  for (size_t i = 0; i < manifest.nodes.size(); ++i) {
    SCOPED_TRACE("node " + std::to_string(i) + " '" + manifest.nodes[i].path + "'");
    ExpectNodeEq(decoded->nodes[i], manifest.nodes[i]);
  }
}

TEST(ManifestTest, ChunkRawSizesSumToByteSize) {
  const Manifest manifest = ManifestOf(RichTree());
  Result<Manifest> decoded = DecodeManifest(EncodeManifest(manifest));
  ASSERT_OK(decoded.status());
  for (const ManifestNode& node : decoded->nodes) {
    if (node.kind != Tree::Kind::kTensor) continue;
    SCOPED_TRACE(node.path);
    uint64_t sum = 0;
    for (const ChunkRef& chunk : node.chunks) sum += chunk.raw_size;
    EXPECT_EQ(sum, node.byte_size);
  }
  // 8400 bytes in chunks of 4096: 4096 + 4096 + 208.
  const ManifestNode& kernel = NodeAt(decoded->nodes, "params/kernel");
  ASSERT_EQ(kernel.chunks.size(), 3u);
  EXPECT_EQ(kernel.chunks[2].raw_size, 208u);
}

TEST(ManifestTest, FloatBitPatternsRoundTrip) {
  for (uint64_t bits : FloatBits()) {
    SCOPED_TRACE("bits " + std::to_string(bits));
    Tree tree;
    (void)tree.Set("x", Tree::Float(FromBits(bits)));
    Result<Manifest> decoded = DecodeManifest(EncodeManifest(ManifestOf(tree)));
    ASSERT_OK(decoded.status());
    const double value = decoded->nodes[1].float_value;
    EXPECT_EQ(std::memcmp(&value, &bits, sizeof(double)), 0);
  }
}

TEST(ManifestTest, StringsWithEmbeddedNulRoundTrip) {
  const std::string with_nul("a\0b", 3);
  Tree tree;
  (void)tree.Set("s", Tree::String(with_nul));
  Manifest manifest = ManifestOf(tree);
  manifest.user_metadata = {{"blob", with_nul}};
  Result<Manifest> decoded = DecodeManifest(EncodeManifest(manifest));
  ASSERT_OK(decoded.status());
  EXPECT_EQ(decoded->nodes[1].string_value, with_nul);
  EXPECT_EQ(decoded->user_metadata, manifest.user_metadata);
}

TEST(ManifestTest, EmptyManifestMetadataRoundTrips) {
  Manifest manifest;
  manifest.nodes = FlattenTree(Tree::Map()).value();
  Result<Manifest> decoded = DecodeManifest(EncodeManifest(manifest));
  ASSERT_OK(decoded.status());
  EXPECT_EQ(decoded->step, 0);
  EXPECT_TRUE(decoded->metrics.empty());
  EXPECT_TRUE(decoded->user_metadata.empty());
  ASSERT_EQ(decoded->nodes.size(), 1u);
  EXPECT_EQ(decoded->nodes[0].kind, Tree::Kind::kMap);
  EXPECT_EQ(decoded->nodes[0].child_count, 0u);
}

// ---- BuildTree ----

TEST(BuildTreeTest, MatchesStructureWithZeroedTensors) {
  const Tree tree = RichTree();
  const Tree expected = ZeroedTensors(tree);
  Result<Tree> built = BuildTree(ManifestOf(tree).nodes);
  ASSERT_OK(built.status());
  EXPECT_TRUE(built->ContentEquals(expected));
  EXPECT_FALSE(built->ContentEquals(tree));  // tensors are zero, not copied
  built->ForEachLeaf([](const std::string& path, const Tree& leaf) {
    if (leaf.kind() == Tree::Kind::kTensor) {
      EXPECT_TRUE(leaf.tensor().owns_data()) << path;
    }
  });
}

TEST(BuildTreeTest, FromDecodedManifest) {
  const Tree tree = RichTree();
  Result<Manifest> decoded = DecodeManifest(EncodeManifest(ManifestOf(tree)));
  ASSERT_OK(decoded.status());
  Result<Tree> built = BuildTree(decoded->nodes);
  ASSERT_OK(built.status());
  EXPECT_TRUE(built->ContentEquals(ZeroedTensors(tree)));
}

// ---- Hostile input: whole buffers ----

void ExpectDecodeCode(std::string_view bytes, Status::Code code) {
  Result<Manifest> decoded = DecodeManifest(bytes);
  EXPECT_EQ(decoded.status().code(), code) << decoded.status().ToString();
}

TEST(DecodeManifestTest, EmptyInputIsCorruption) {
  ExpectDecodeCode("", Status::Code::kCorruption);
}

TEST(DecodeManifestTest, RandomBytesAreCorruption) {
  std::mt19937_64 rng(1);
  for (int i = 0; i < 500; ++i) {
    SCOPED_TRACE("input " + std::to_string(i));
    std::string bytes(rng() % 300, '\0');
    for (char& c : bytes) c = static_cast<char>(rng());
    // Half carry the identifier, to reach the verifier.
    if (i % 2 == 0 && bytes.size() >= 8) bytes.replace(4, 4, "CKPT");
    ExpectDecodeCode(bytes, Status::Code::kCorruption);
  }
}

TEST(DecodeManifestTest, TruncatedAtEveryLengthIsCorruption) {
  const std::string bytes = EncodeManifest(ManifestOf(RichTree()));
  ASSERT_OK(DecodeManifest(bytes).status());
  // The buffer may end in up to 3 bytes of alignment padding after the
  // packed tree: cutting only those loses nothing, and decodes the same.
  size_t padding = 0;
  for (size_t length = bytes.size(); length-- > 0;) {
    SCOPED_TRACE("length " + std::to_string(length));
    Result<Manifest> decoded = DecodeManifest(std::string_view(bytes).substr(0, length));
    if (decoded.ok() && length + padding + 1 == bytes.size() && padding < 3) {
      ++padding;
      EXPECT_EQ(EncodeManifest(*decoded), bytes);
      continue;
    }
    EXPECT_EQ(decoded.status().code(), Status::Code::kCorruption) << decoded.status().ToString();
  }
}

Tree SmallTree() {
  Tree tree;
  Tree* list = tree.Set("l", Tree::List()).value();
  (void)list->Append(Tree::Bool(true));
  (void)list->Append(Tree::Float(1.5));
  (void)tree.Set("s", Tree::String("hi"));
  (void)tree.Set("t", Tree::Leaf(Filled(DType::kFloat32, {2})));
  (void)tree.Set("x", Tree::Int(7));
  return tree;
}

// Any single-byte change either decodes to a manifest that BuildTree accepts or
// is refused (Corruption, or NotSupported when it raises format_version).
TEST(DecodeManifestTest, ByteFlipsNeverCrash) {
  Manifest manifest = ManifestOf(SmallTree());
  manifest.metrics = {{"m", 1.0}};
  manifest.user_metadata = {{"k", "v"}};
  const std::string bytes = EncodeManifest(manifest);
  ASSERT_OK(DecodeManifest(bytes).status());
  for (size_t position = 0; position < bytes.size(); ++position) {
    for (int mask : {0x01, 0x80, 0xff}) {
      std::string flipped = bytes;
      flipped[position] = static_cast<char>(flipped[position] ^ mask);
      Result<Manifest> decoded = DecodeManifest(flipped);
      const Status::Code code = decoded.status().code();
      ASSERT_TRUE(code == Status::Code::kOk || code == Status::Code::kCorruption ||
                  code == Status::Code::kNotSupported)
          << "byte " << position << " mask " << mask << ": " << decoded.status().ToString();
      if (decoded.ok()) {
        EXPECT_OK(BuildTree(decoded->nodes).status());
      }
      // Decoding all but the nodes checks less, never more.
      Result<Manifest> header =
          DecodeManifest(flipped, ManifestScope::kStep, ManifestParts::kWithoutNodes);
      const Status::Code header_code = header.status().code();
      ASSERT_TRUE(header_code == Status::Code::kOk || header_code == Status::Code::kCorruption ||
                  header_code == Status::Code::kNotSupported)
          << "byte " << position << " mask " << mask << ": " << header.status().ToString();
      if (decoded.ok()) {
        EXPECT_OK(header.status());
      }
    }
  }
}

// What opening a store reads of every step: all but the nodes, from either
// layout; a damaged packed tree still fails its checksum.
TEST(DecodeManifestTest, WithoutNodesGivesTheRestAndStillChecksThePackedTree) {
  const Manifest manifest = ManifestOf(RichTree());
  for (ManifestLayout layout : {ManifestLayout::kPacked, ManifestLayout::kNodeTables}) {
    const std::string bytes = EncodeManifest(manifest, layout);
    Result<Manifest> header =
        DecodeManifest(bytes, ManifestScope::kStep, ManifestParts::kWithoutNodes);
    ASSERT_OK(header.status());
    EXPECT_EQ(header->step, manifest.step);
    EXPECT_EQ(header->commit_time_ns, manifest.commit_time_ns);
    EXPECT_EQ(header->metrics, manifest.metrics);
    EXPECT_EQ(header->user_metadata, manifest.user_metadata);
    EXPECT_TRUE(header->nodes.empty());
  }
  std::string bytes = EncodeManifest(manifest);
  const fb::Manifest* stored = fb::GetManifest(bytes.data());
  ASSERT_NE(stored->tree(), nullptr);
  const size_t inside_tree =
      static_cast<size_t>(reinterpret_cast<const char*>(stored->tree()->data()) - bytes.data()) +
      stored->tree()->size() / 2;
  bytes[inside_tree] = static_cast<char>(~bytes[inside_tree]);
  Result<Manifest> damaged =
      DecodeManifest(bytes, ManifestScope::kStep, ManifestParts::kWithoutNodes);
  EXPECT_EQ(damaged.status().code(), Status::Code::kCorruption) << damaged.status().ToString();
}

TEST(DecodeManifestTest, WrongIdentifierIsCorruption) {
  const std::string bytes = EncodeManifest(ManifestOf(SmallTree()));
  ASSERT_EQ(bytes.substr(4, 4), "CKPT");
  for (const char* identifier : {"XXXX", "ckpt", "CKP\0"}) {
    SCOPED_TRACE(identifier);
    std::string wrong = bytes;
    wrong.replace(4, 4, std::string(identifier, 4));
    ExpectDecodeCode(wrong, Status::Code::kCorruption);
  }
}

// A small manifest built with FlatBuffers directly, for fields that
// EncodeManifest always writes the same way: the root map alone (a tensor
// of two boxes under it when `boxed`), as node tables (versions 1 and 2) or
// packed (version 3 on), unless `layout` says otherwise.
std::string RawManifest(uint32_t format_version, bool metric_without_name = false,
                        std::optional<ManifestLayout> layout = std::nullopt, bool boxed = false) {
  flatbuffers::FlatBufferBuilder builder;
  std::vector<flatbuffers::Offset<fb::Metric>> metrics;
  if (metric_without_name) {
    // By hand: fb::CreateMetric asserts its required name in debug builds.
    const flatbuffers::uoffset_t start = builder.StartTable();
    builder.AddElement<uint64_t>(fb::Metric::VT_VALUE_BITS, std::bit_cast<uint64_t>(1.0), 0);
    metrics.push_back(flatbuffers::Offset<fb::Metric>(builder.EndTable(start)));
  }
  if (!layout.has_value()) {
    layout = format_version > 0 && format_version < kFirstPackedManifestFormatVersion
                 ? ManifestLayout::kNodeTables
                 : ManifestLayout::kPacked;
  }
  if (*layout == ManifestLayout::kNodeTables) {
    std::vector<flatbuffers::Offset<fb::Node>> nodes = {
        fb::CreateNodeDirect(builder, fb::NodeKind::Map, nullptr, boxed ? 1 : 0)};
    if (boxed) {
      const std::vector<int64_t> shape = {2};
      const std::vector<fb::ChunkRef> chunks = {{1, 2, 4, 4}, {3, 4, 4, 4}};
      std::vector<flatbuffers::Offset<fb::Box>> boxes;
      for (int64_t start : {0, 1}) {
        const std::vector<int64_t> box_start = {start}, box_shape = {1};
        boxes.push_back(fb::CreateBoxDirect(builder, &box_start, &box_shape, 1));
      }
      nodes.push_back(fb::CreateNodeDirect(builder, fb::NodeKind::Tensor, "t", 0,
                                           static_cast<uint8_t>(DType::kFloat32), &shape, &chunks,
                                           0, 0, false, nullptr, &boxes));
    }
    auto root = fb::CreateManifestDirect(builder, format_version, 1, 0, &metrics, &nodes, nullptr);
    fb::FinishManifestBuffer(builder, root);
  } else {
    const std::vector<uint8_t> tree = {0};  // a map without children
    auto root = fb::CreateManifestDirect(builder, format_version, 1, 0, &metrics, nullptr,
                                         nullptr, nullptr, &tree, XXH3_64bits(tree.data(), 1));
    fb::FinishManifestBuffer(builder, root);
  }
  return std::string(reinterpret_cast<const char*>(builder.GetBufferPointer()), builder.GetSize());
}

TEST(DecodeManifestTest, FormatVersions) {
  for (uint32_t version = 1; version <= kManifestFormatVersion; ++version) {
    EXPECT_OK(DecodeManifest(RawManifest(version)).status()) << "version " << version;
  }
  ExpectDecodeCode(RawManifest(kManifestFormatVersion + 1), Status::Code::kNotSupported);
  ExpectDecodeCode(RawManifest(std::numeric_limits<uint32_t>::max()), Status::Code::kNotSupported);
  ExpectDecodeCode(RawManifest(0), Status::Code::kCorruption);
  // Each version's layout, and boxes from version 2 on.
  EXPECT_OK(DecodeManifest(RawManifest(2, false, std::nullopt, /*boxed=*/true)).status());
  ExpectDecodeCode(RawManifest(1, false, std::nullopt, /*boxed=*/true), Status::Code::kCorruption);
  ExpectDecodeCode(RawManifest(3, false, ManifestLayout::kNodeTables), Status::Code::kCorruption);
  ExpectDecodeCode(RawManifest(2, false, ManifestLayout::kPacked), Status::Code::kCorruption);
}

TEST(DecodeManifestTest, MetricWithoutNameIsCorruption) {
  ExpectDecodeCode(RawManifest(kManifestFormatVersion, /*metric_without_name=*/true),
                   Status::Code::kCorruption);
}

// ---- Hostile input: inconsistent trees ----

ManifestNode Node(Tree::Kind kind, std::string key, uint32_t child_count = 0) {
  ManifestNode node;
  node.kind = kind;
  node.key = std::move(key);
  node.child_count = child_count;
  return node;
}

ManifestNode MapNode(std::string key, uint32_t child_count) {
  return Node(Tree::Kind::kMap, std::move(key), child_count);
}

ManifestNode ListNode(std::string key, uint32_t child_count) {
  return Node(Tree::Kind::kList, std::move(key), child_count);
}

ManifestNode IntNode(std::string key) { return Node(Tree::Kind::kInt, std::move(key)); }

ManifestNode TensorNode(std::string key, DType dtype, std::vector<int64_t> shape,
                        const std::vector<uint32_t>& chunk_raw_sizes) {
  ManifestNode node = Node(Tree::Kind::kTensor, std::move(key));
  node.dtype = dtype;
  node.shape = std::move(shape);
  for (uint32_t raw_size : chunk_raw_sizes) node.chunks.push_back({{}, raw_size, raw_size});
  return node;
}

// A root map holding `child` alone.
std::vector<ManifestNode> Under(ManifestNode child) { return {MapNode("", 1), std::move(child)}; }

ManifestNode WithChildCount(ManifestNode node, uint32_t child_count) {
  node.child_count = child_count;
  return node;
}

// Root map, then maps under "k" down to depth `depth`.
std::vector<ManifestNode> NestedMapNodes(uint32_t depth) {
  std::vector<ManifestNode> nodes = {MapNode("", depth > 0 ? 1 : 0)};
  for (uint32_t d = 1; d <= depth; ++d) nodes.push_back(MapNode("k", d < depth ? 1 : 0));
  return nodes;
}

struct TreeCase {
  std::string name;
  std::vector<ManifestNode> nodes;
};

Status DecodeNodes(const std::vector<ManifestNode>& nodes) {
  Manifest manifest;
  manifest.nodes = nodes;
  return DecodeManifest(EncodeManifest(manifest)).status();
}

constexpr uint32_t kMaxRaw = kMaxChunkRawSize;

// Valid neighbours of the invalid cases below: the node builders produce
// decodable manifests, so those fail for the reason they name.
TEST(DecodeManifestTest, HandBuiltValidTreesDecode) {
  const std::vector<TreeCase> cases = {
      {"root_only", {MapNode("", 0)}},
      {"list_root", {ListNode("", 2), IntNode(""), IntNode("")}},
      {"sorted_keys", {MapNode("", 3), IntNode("a"), IntNode("ab"), IntNode("b")}},
      {"nested", {MapNode("", 2), ListNode("a", 1), MapNode("", 1), IntNode("x"), IntNode("b")}},
      {"empty_tensor_without_chunks", Under(TensorNode("t", DType::kFloat32, {0, 5}, {}))},
      {"tensor_in_chunks", Under(TensorNode("t", DType::kFloat32, {4}, {8, 8}))},
      {"chunk_at_max_raw_size",
       Under(TensorNode("t", DType::kUInt8, {int64_t{kMaxRaw} + 1}, {kMaxRaw, 1}))},
      {"max_depth", NestedMapNodes(kMaxTreeDepth)},
  };
  for (const TreeCase& test_case : cases) {
    SCOPED_TRACE(test_case.name);
    EXPECT_OK(DecodeNodes(test_case.nodes));
  }
}

TEST(DecodeManifestTest, InconsistentTreesAreCorruption) {
  const std::vector<TreeCase> cases = {
      {"no_nodes", {}},
      {"child_count_beyond_remaining_nodes", {MapNode("", 2), IntNode("a")}},
      {"nested_child_count_beyond_remaining_nodes",
       {MapNode("", 1), ListNode("a", 3), IntNode(""), IntNode("")}},
      {"child_count_uint32_max", {MapNode("", 0xffffffff), IntNode("a")}},
      {"nodes_after_complete_tree", {MapNode("", 1), IntNode("a"), IntNode("b")}},
      {"subtree_ends_early", {MapNode("", 2), MapNode("a", 1), IntNode("x")}},
      {"map_keys_out_of_order", {MapNode("", 2), IntNode("b"), IntNode("a")}},
      {"map_keys_duplicate", {MapNode("", 2), IntNode("a"), IntNode("a")}},
      {"map_keys_duplicate_across_subtree",
       {MapNode("", 2), MapNode("a", 1), IntNode("z"), IntNode("a")}},
      {"empty_map_key", Under(IntNode(""))},
      {"map_key_with_slash", Under(IntNode("a/b"))},
      {"list_element_with_key", {ListNode("", 1), IntNode("a")}},
      {"root_with_key", {MapNode("root", 0)}},
      {"leaf_with_children", {MapNode("", 2), WithChildCount(IntNode("a"), 1), IntNode("b")}},
      {"tensor_with_children",
       {MapNode("", 2), WithChildCount(TensorNode("a", DType::kFloat32, {1}, {4}), 1),
        IntNode("b")}},
      {"unknown_kind", Under(Node(static_cast<Tree::Kind>(7), "a"))},
      {"chunks_short_of_tensor", Under(TensorNode("t", DType::kFloat32, {4}, {8, 4}))},
      {"chunks_beyond_tensor", Under(TensorNode("t", DType::kFloat32, {4}, {8, 16}))},
      {"tensor_without_chunks", Under(TensorNode("t", DType::kFloat32, {4}, {}))},
      {"zero_size_chunk", Under(TensorNode("t", DType::kFloat32, {4}, {16, 0}))},
      {"chunk_for_empty_tensor", Under(TensorNode("t", DType::kFloat32, {0}, {1}))},
      {"chunk_above_max_raw_size",
       Under(TensorNode("t", DType::kUInt8, {int64_t{kMaxRaw} + 1}, {kMaxRaw + 1}))},
      {"unknown_dtype_0", Under(TensorNode("t", static_cast<DType>(0), {4}, {4}))},
      {"unknown_dtype_16", Under(TensorNode("t", static_cast<DType>(16), {4}, {4}))},
      {"unknown_dtype_255", Under(TensorNode("t", static_cast<DType>(255), {4}, {4}))},
      {"negative_dimension", Under(TensorNode("t", DType::kFloat32, {-1}, {}))},
      {"negative_dimension_with_zero", Under(TensorNode("t", DType::kFloat32, {0, -3}, {}))},
      {"overflowing_shape",
       Under(TensorNode("t", DType::kFloat32, {int64_t{1} << 40, int64_t{1} << 40}, {4}))},
      {"overflowing_byte_size", Under(TensorNode("t", DType::kFloat64, {int64_t{1} << 61}, {8}))},
      {"deeper_than_max", NestedMapNodes(kMaxTreeDepth + 1)},
  };
  for (const TreeCase& test_case : cases) {
    SCOPED_TRACE(test_case.name);
    const Status status = DecodeNodes(test_case.nodes);
    EXPECT_EQ(status.code(), Status::Code::kCorruption) << status.ToString();
  }
}

TEST(ManifestTest, EarlierFormatsStillRead) {
  // Stores of earlier builds get manifests as those builds wrote them: one
  // table per node, version 1 (2 with boxes), read back the same.
  Manifest manifest = ManifestOf(RichTree());
  for (uint32_t version : {1u, 2u}) {
    SCOPED_TRACE("version " + std::to_string(version));
    if (version == 2) {
      for (ManifestNode& node : manifest.nodes) {
        if (node.path != "params/kernel") continue;
        const int64_t rows = node.shape[0];
        std::vector<BoxChunks> boxes;
        for (int64_t start : {int64_t{0}, rows / 2}) {
          Box box{{start, 0}, {start == 0 ? rows / 2 : rows - rows / 2, node.shape[1]}};
          const auto bytes = static_cast<uint32_t>(BoxElements(box) * DTypeSize(node.dtype));
          boxes.push_back({box, {{ChunkDigest{static_cast<uint64_t>(start) + 7, 9}, bytes, bytes}}});
        }
        ASSERT_OK(SetBoxes(&node, boxes));
        ASSERT_TRUE(node.boxed);
      }
    }
    const std::string bytes = EncodeManifest(manifest, ManifestLayout::kNodeTables);
    const fb::Manifest* stored = fb::GetManifest(bytes.data());
    EXPECT_EQ(stored->format_version(), version);
    EXPECT_EQ(stored->tree(), nullptr);
    Result<Manifest> decoded = DecodeManifest(bytes);
    ASSERT_OK(decoded.status());
    ASSERT_EQ(decoded->nodes.size(), manifest.nodes.size());
    for (size_t i = 0; i < manifest.nodes.size(); ++i) {
      SCOPED_TRACE(manifest.nodes[i].path);
      ExpectNodeEq(decoded->nodes[i], manifest.nodes[i]);
    }
  }
}

TEST(ManifestTest, TinyTensorsLiveInTheManifest) {
  Tree tree;
  ASSERT_OK(tree.SetPath("scalar", Tree::Leaf(Filled(DType::kFloat64, {}))));
  ASSERT_OK(tree.SetPath("largest", Tree::Leaf(Filled(DType::kUInt8, {int64_t{kMaxInlineTensorBytes}}))));
  Manifest manifest;
  manifest.nodes = FlattenTree(tree).value();
  for (ManifestNode& node : manifest.nodes) {
    if (node.kind != Tree::Kind::kTensor) continue;
    node.inlined = true;
    node.inline_bytes.assign(node.byte_size, static_cast<char>(node.byte_size));
  }
  const std::string bytes = EncodeManifest(manifest);
  Result<Manifest> decoded = DecodeManifest(bytes);
  ASSERT_OK(decoded.status());
  for (size_t i = 0; i < manifest.nodes.size(); ++i) ExpectNodeEq(decoded->nodes[i], manifest.nodes[i]);
  // Each inline byte is covered by the tree's checksum.
  const size_t at = bytes.find(std::string(kMaxInlineTensorBytes, static_cast<char>(kMaxInlineTensorBytes)));
  ASSERT_NE(at, std::string::npos);
  std::string flipped = bytes;
  flipped[at + 10] ^= 1;
  ExpectDecodeCode(flipped, Status::Code::kCorruption);
  // Inline bytes must be the tensor's, 1 to kMaxInlineTensorBytes of them,
  // and come without chunks or boxes.
  struct Case {
    const char* name;
    std::function<void(ManifestNode&)> spoil;
  };
  const Case cases[] = {
      {"one byte short", [](ManifestNode& node) { node.inline_bytes.pop_back(); }},
      {"one byte more", [](ManifestNode& node) { node.inline_bytes.push_back('x'); }},
      {"too large", [](ManifestNode& node) {
         node.shape = {int64_t{kMaxInlineTensorBytes} + 1};
         node.inline_bytes.assign(kMaxInlineTensorBytes + 1, 'x');
       }},
      {"empty", [](ManifestNode& node) {
         node.shape = {0};
         node.inline_bytes.clear();
       }},
      {"with a chunk", [](ManifestNode& node) {
         node.chunks.push_back({ChunkDigest{1, 2}, 64, 64});
       }},
      {"boxed", [](ManifestNode& node) {
         node.boxed = true;
         node.boxes.push_back({WholeBox(node.shape), 0});
       }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    Manifest spoiled = manifest;
    for (ManifestNode& node : spoiled.nodes) {
      if (node.path == "largest") c.spoil(node);
    }
    ExpectDecodeCode(EncodeManifest(spoiled), Status::Code::kCorruption);
  }
}

// A save drafts its tree: every node is packed as it is flattened, but the
// tensors stored as chunks, which are spliced in at the commit. The bytes are
// those of the whole node list with the same tensors inline.
TEST(ManifestTest, DraftedTreeEncodesAsTheWholeNodeList) {
  Tree tree = RichTree();
  ShardedTensor sharded;
  sharded.dtype = DType::kFloat32;
  sharded.global_shape = {2, 2};
  sharded.shards.push_back({{0, 0}, Filled(DType::kFloat32, {1, 2}), 0});
  sharded.shards.push_back({{1, 0}, Filled(DType::kFloat32, {1, 2}), 0});
  ASSERT_OK(tree.SetPath("sharded", Tree::Sharded(std::move(sharded)).value()));
  Manifest whole = ManifestOf(tree);
  whole.nodes = FlattenTree(tree).value();
  for (ManifestNode& node : whole.nodes) {
    if (node.kind != Tree::Kind::kTensor || node.boxed || node.byte_size == 0 ||
        node.byte_size > kMaxInlineTensorBytes) {
      continue;
    }
    node.inlined = true;
    const Tensor& tensor = tree.Find(node.path)->tensor();
    node.inline_bytes.assign(reinterpret_cast<const char*>(tensor.data()), tensor.byte_size());
  }
  // A chunk per box of the sharded tensor, and chunks for the rest.
  auto chunk = [](std::vector<ManifestNode>* nodes) {
    for (ManifestNode& node : *nodes) {
      if (!node.boxed) continue;
      for (ManifestBox& box : node.boxes) {
        box.chunk_count = 1;
        node.chunks.push_back({ChunkDigest{static_cast<uint64_t>(box.box.start[0]), 7}, 8, 5});
      }
    }
    AssignChunks(nodes, 4096);
  };
  chunk(&whole.nodes);

  Manifest drafted = whole;
  TreeDraft draft;
  std::vector<const Tree*> sources;
  drafted.nodes = FlattenTree(tree, &sources, &draft).value();
  EXPECT_EQ(PathsOf(drafted.nodes), (std::vector<std::string>{"params/kernel", "sharded"}));
  ASSERT_EQ(sources.size(), 2u);
  EXPECT_EQ(sources[0], tree.Find("params/kernel"));
  EXPECT_EQ(sources[1], tree.Find("sharded"));
  chunk(&drafted.nodes);
  const std::string bytes = EncodeManifest(whole);
  EXPECT_EQ(EncodeManifest(drafted, std::move(draft)), bytes);
  ASSERT_OK(DecodeManifest(bytes).status());
}

TEST(ManifestTest, PackedTreeTakesFewBytesPerLeaf) {
  // 8,000 tiny tensors "layers/N/attn/q/kernel" and the like, kept inline:
  // about 30 bytes each with their share of the maps above them.
  Tree tree;
  static const char* const kLeaves[] = {"attn/q/kernel", "attn/k/kernel", "mlp/up/kernel",
                                        "norm/scale"};
  for (int i = 0; i < 8000; ++i) {
    ASSERT_OK(tree.SetPath("layers/" + std::to_string(i / 4) + "/" + kLeaves[i % 4],
                           Tree::Leaf(Filled(DType::kFloat32, {4}))));
  }
  Manifest manifest;
  manifest.nodes = FlattenTree(tree).value();
  for (ManifestNode& node : manifest.nodes) {
    if (node.kind != Tree::Kind::kTensor) continue;
    node.inlined = true;
    node.inline_bytes.assign(node.byte_size, 'v');
  }
  const std::string bytes = EncodeManifest(manifest);
  EXPECT_LT(bytes.size(), 8000u * 32) << bytes.size() / 8000.0 << " bytes per leaf";
  // (16 of them the tensor's own bytes, 3 the distinct layer keys.)
  ASSERT_OK(DecodeManifest(bytes).status());
}

}  // namespace
}  // namespace ckptdb
