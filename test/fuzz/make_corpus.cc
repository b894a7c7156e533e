// Writes the seed corpus of the fuzz targets into DIR/manifest, DIR/chunk,
// DIR/safetensors, DIR/part and DIR/salvage: valid inputs made with the
// library's own encoders from a few trees, and hand-made edge cases (edge_*),
// valid or not. Deterministic (every run writes the same bytes) but for the
// salvage seeds: a small store's table files and log, into which RocksDB
// writes ids and times of its own. Files of the same name are replaced,
// others are left alone. test/fuzz/corpus holds its output, but for the
// salvage seeds (store files are never tracked: scripts/fuzz.sh writes them
// at every run):
//
//   make_corpus test/fuzz/corpus
//
// Input formats: manifest and safetensors seeds are the bytes DecodeManifest
// and ParseSafetensors read; a chunk seed is a 4-byte little-endian expected
// size followed by a stored chunk (see chunk_fuzzer.cc); a salvage seed is
// a byte choosing table file (0) or log (1), then the file
// (salvage_fuzzer.cc).

#include <flatbuffers/flatbuffers.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "chunk_codec.h"
#include "chunk_digest.h"
#include "ckptdb/checkpointer.h"
#include "manifest.h"
#include "manifest_generated.h"
#include "multiprocess.h"
#include "safetensors.h"

namespace ckptdb {
namespace {

namespace fs = std::filesystem;

// Seeds must stay small: libFuzzer mutates small inputs faster, and the corpus
// is checked in.
constexpr size_t kMaxSeedSize = 8 << 10;
// Tensors are cut into chunks this large in the manifests (several per tensor).
constexpr uint32_t kSeedChunkSize = 192;

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "make_corpus: %s\n", what.c_str());
  std::exit(1);
}

template <typename T>
T Must(Result<T> result, const std::string& what) {
  if (!result.ok()) Die(what + ": " + result.status().ToString());
  return std::move(*result);
}

void Must(const Status& status, const std::string& what) {
  if (!status.ok()) Die(what + ": " + status.ToString());
}

void WriteSeed(const fs::path& path, std::string_view bytes) {
  if (bytes.size() > kMaxSeedSize) {
    Die(path.string() + ": " + std::to_string(bytes.size()) + " bytes, more than a seed may be");
  }
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) Die("cannot write " + path.string());
}

std::string ReadAll(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (!in.good() && !in.eof()) Die("cannot read " + path.string());
  return bytes;
}

// std::mt19937's output sequence is fixed by the standard: the same bytes on
// every platform.
std::mt19937& Random() {
  static std::mt19937 random(20240601);
  return random;
}

enum class Fill { kZeros, kRandom, kRamp };

// A tensor of `dtype` and `shape`: zeros, random bytes, or a smooth ramp of
// values (float32 and float64 as real floats, other dtypes as a byte pattern).
Tensor Filled(DType dtype, std::vector<int64_t> shape, Fill fill) {
  Tensor tensor = Must(Tensor::Allocate(dtype, std::move(shape)), "allocate");
  std::byte* bytes = tensor.mutable_data();
  const uint64_t count = tensor.element_count();
  for (uint64_t i = 0; i < tensor.byte_size(); ++i) {
    switch (fill) {
      case Fill::kZeros: bytes[i] = std::byte{0}; break;
      case Fill::kRandom: bytes[i] = static_cast<std::byte>(Random()() & 0xff); break;
      case Fill::kRamp: bytes[i] = static_cast<std::byte>((i / 3) & 0xff); break;
    }
  }
  if (fill == Fill::kRamp && dtype == DType::kFloat32) {
    for (uint64_t i = 0; i < count; ++i) {
      const float value = -1.0f + 0.0625f * static_cast<float>(i % 37);
      std::memcpy(bytes + 4 * i, &value, 4);
    }
  } else if (fill == Fill::kRamp && dtype == DType::kFloat64) {
    for (uint64_t i = 0; i < count; ++i) {
      const double value = 0.001 * static_cast<double>(i);
      std::memcpy(bytes + 8 * i, &value, 8);
    }
  }
  return tensor;
}

// ---- Trees ----

struct NamedTree {
  std::string name;
  Tree tree;
};

Tree ScalarsTree() {
  Tree root;
  (void)root.Set("done", Tree::Bool(false));
  (void)root.Set("epoch", Tree::Int(3));
  (void)root.Set("lr", Tree::Float(3e-4));
  (void)root.Set("name", Tree::String("run-a"));
  return root;
}

Tree SmallModelTree() {
  Tree root;
  Tree* params = root.Set("params", Tree::Map()).value();
  Tree* dense = params->Set("dense", Tree::Map()).value();
  (void)dense->Set("bias", Tree::Leaf(Filled(DType::kFloat32, {8}, Fill::kZeros)));
  (void)dense->Set("kernel", Tree::Leaf(Filled(DType::kFloat32, {8, 16}, Fill::kRamp)));
  (void)params->Set("embed", Tree::Leaf(Filled(DType::kBFloat16, {32, 4}, Fill::kRandom)));
  Tree* opt = root.Set("opt_state", Tree::List()).value();
  (void)opt->Append(Tree::Leaf(Filled(DType::kInt64, {}, Fill::kRamp)));
  Tree* mu = opt->Append(Tree::Map()).value();
  (void)mu->Set("bias", Tree::Leaf(Filled(DType::kFloat32, {8}, Fill::kRamp)));
  (void)mu->Set("kernel", Tree::Leaf(Filled(DType::kFloat32, {8, 16}, Fill::kZeros)));
  (void)root.Set("step", Tree::Int(100));
  return root;
}

// Every node kind, every dtype, empty containers and tensors, rank-0 tensors,
// extreme ints, special floats, NUL and non-UTF-8 strings and keys (the
// latter only on scalars: safetensors cannot name such a tensor).
Tree RichTree() {
  Tree root;
  Tree* dtypes = root.Set("dtypes", Tree::Map()).value();
  for (uint8_t raw = 1; raw <= 15; ++raw) {
    const auto dtype = static_cast<DType>(raw);
    (void)dtypes->Set(DTypeName(dtype), Tree::Leaf(Filled(dtype, {3}, Fill::kRandom)));
  }
  (void)root.Set("empty_list", Tree::List());
  (void)root.Set("empty_map", Tree::Map());
  (void)root.Set("empty_tensor", Tree::Leaf(Filled(DType::kFloat16, {0, 3}, Fill::kZeros)));
  Tree* floats = root.Set("floats", Tree::List()).value();
  for (uint64_t bits : {uint64_t{0x8000000000000000}, uint64_t{0x7ff80000deadbeef},
                        uint64_t{0x7ff0000000000000}, uint64_t{0x0000000000000001}}) {
    (void)floats->Append(Tree::Float(std::bit_cast<double>(bits)));
  }
  Tree* ints = root.Set("ints", Tree::List()).value();
  (void)ints->Append(Tree::Int(std::numeric_limits<int64_t>::min()));
  (void)ints->Append(Tree::Int(std::numeric_limits<int64_t>::max()));
  (void)ints->Append(Tree::Int(-1));
  (void)root.Set("scalar", Tree::Leaf(Filled(DType::kFloat64, {}, Fill::kRamp)));
  Tree* strings = root.Set("strings", Tree::List()).value();
  (void)strings->Append(Tree::String(""));
  (void)strings->Append(Tree::String(std::string("nul\0byte", 8)));
  (void)strings->Append(Tree::String("h\xc3\xa9llo \xf0\x9f\x9a\x80"));
  (void)strings->Append(Tree::String("\xff\xfe\x80"));
  (void)root.Set("\xc3\xa9t\xc3\xa9", Tree::Bool(true));
  (void)root.Set("\xff-key", Tree::Bool(false));
  return root;
}

// Lists and maps alternating `depth` levels down to one tensor.
Tree DeepTree(int depth) {
  Tree root;
  Tree* node = &root;
  for (int level = 0; level < depth; ++level) {
    if (node->kind() == Tree::Kind::kMap) {
      node = node->Set(level % 4 == 0 ? "m" : "n" + std::to_string(level), Tree::List()).value();
    } else {
      node = node->Append(Tree::Map()).value();
    }
  }
  if (node->kind() == Tree::Kind::kMap) {
    (void)node->Set("leaf", Tree::Leaf(Filled(DType::kUInt8, {5}, Fill::kRamp)));
  } else {
    (void)node->Append(Tree::Leaf(Filled(DType::kUInt8, {5}, Fill::kRamp)));
  }
  return root;
}

std::vector<NamedTree> Trees() {
  std::vector<NamedTree> trees;
  trees.push_back({"empty", Tree()});
  trees.push_back({"scalars", ScalarsTree()});
  trees.push_back({"small_model", SmallModelTree()});
  trees.push_back({"rich", RichTree()});
  trees.push_back({"deep", DeepTree(24)});
  return trees;
}

// ---- Manifests ----

// The secret of the seeds' made-up store.
const ChunkHasher& Hasher() {
  static const ChunkHasher hasher([] {
    std::string secret(ChunkHasher::kSecretSize, '\0');
    for (size_t i = 0; i < secret.size(); ++i) secret[i] = static_cast<char>(i * 73 + 11);
    return secret;
  }());
  return hasher;
}

// The manifest a store would write for `tree`: chunk refs with the real
// digests and stored sizes of the tensors' bytes.
Manifest ManifestOf(const Tree& tree, int64_t step) {
  Manifest manifest;
  manifest.step = step;
  manifest.commit_time_ns = 1'700'000'000'000'000'000 + step;
  manifest.metrics = {{"eval/accuracy", 0.875}, {"loss", 0.25}};
  manifest.user_metadata = {{"config", "sha256:0123"}, {"empty", ""}};
  manifest.nodes = Must(FlattenTree(tree), "flatten");
  for (ManifestNode& node : manifest.nodes) {
    if (node.kind != Tree::Kind::kTensor) continue;
    const Tree* leaf = tree.Find(node.path);
    if (leaf == nullptr) Die("no tensor at '" + node.path + "'");
    const Tensor& tensor = leaf->tensor();
    ChunkEncoding encoding;
    encoding.element_width = DTypeSize(tensor.dtype());
    for (uint64_t offset = 0; offset < tensor.byte_size(); offset += kSeedChunkSize) {
      const auto raw_size =
          static_cast<uint32_t>(std::min<uint64_t>(kSeedChunkSize, tensor.byte_size() - offset));
      std::string stored;
      EncodeChunk(tensor.data() + offset, raw_size, encoding, &stored);
      node.chunks.push_back({Hasher().Digest(tensor.data() + offset, raw_size), raw_size,
                             static_cast<uint32_t>(stored.size())});
    }
  }
  return manifest;
}

// A manifest written with the FlatBuffers builder directly, for what
// EncodeManifest never writes.
struct RawNode {
  fb::NodeKind kind = fb::NodeKind::Map;
  std::string key;
  uint32_t child_count = 0;
  uint8_t dtype = 0;
  std::vector<int64_t> shape;
  std::vector<fb::ChunkRef> chunks;
  int64_t int_value = 0;
  uint64_t float_bits = 0;
  bool bool_value = false;
  std::string string_value;
  bool has_shape = false;
  bool has_string = false;
};

std::string RawManifest(uint32_t format_version, const std::vector<RawNode>& raw_nodes,
                        double metric) {
  flatbuffers::FlatBufferBuilder builder;
  std::vector<flatbuffers::Offset<fb::Node>> nodes;
  for (const RawNode& raw : raw_nodes) {
    auto key = raw.key.empty() ? 0 : builder.CreateString(raw.key);
    auto shape = raw.has_shape ? builder.CreateVector(raw.shape) : 0;
    auto chunks = raw.chunks.empty() ? 0 : builder.CreateVectorOfStructs(raw.chunks);
    auto string_value = raw.has_string ? builder.CreateString(raw.string_value) : 0;
    nodes.push_back(fb::CreateNode(builder, raw.kind, key, raw.child_count, raw.dtype, shape,
                                   chunks, raw.int_value, raw.float_bits, raw.bool_value,
                                   string_value));
  }
  std::vector<flatbuffers::Offset<fb::Metric>> metrics = {
      fb::CreateMetric(builder, builder.CreateString("loss"), metric)};
  auto root = fb::CreateManifest(builder, format_version, 7, 8, builder.CreateVector(metrics),
                                 builder.CreateVector(nodes));
  fb::FinishManifestBuffer(builder, root);
  return std::string(reinterpret_cast<const char*>(builder.GetBufferPointer()), builder.GetSize());
}

// Process `part` of 2 of a save of a float32 [8, 6] tensor sharded by rows
// (two boxes per process), an int64 [5] tensor every process holds whole,
// and a scalar: the manifest the process sends (ManifestScope::kProcess).
Manifest PartManifest(int part) {
  ShardedTensor sharded{DType::kFloat32, {8, 6}, {}};
  for (int64_t half = 0; half < 2; ++half) {
    const int64_t row = part * 4 + half * 2;
    Tensor data = Must(Tensor::Allocate(DType::kFloat32, {2, 6}), "allocate");
    std::memset(data.mutable_data(), part * 2 + static_cast<int>(half) + 1, data.byte_size());
    sharded.shards.push_back(Shard{{row, 0}, data, 0});
  }
  Tree tree;
  Must(tree.SetPath("w", Must(Tree::Sharded(sharded), "shard")), "set");
  Must(tree.SetPath("table", Tree::Leaf(Must(Tensor::Allocate(DType::kInt64, {5}), "table"))),
       "set");
  Must(tree.SetPath("step", Tree::Int(3)), "set");
  Manifest manifest;
  manifest.step = 3;
  manifest.nodes = Must(FlattenTree(tree), "flatten");
  for (ManifestNode& node : manifest.nodes) {
    if (node.kind != Tree::Kind::kTensor) continue;
    if (!node.boxed) {  // the table: written by process 0
      node.boxed = true;
      if (part == 0) node.boxes.push_back({WholeBox(node.shape), 0});
    }
    for (ManifestBox& box : node.boxes) {
      box.chunk_count = 1;
      const auto raw_size = static_cast<uint32_t>(BoxElements(box.box) * DTypeSize(node.dtype));
      node.chunks.push_back({ChunkDigest{static_cast<uint64_t>(part) + 1, raw_size}, raw_size, 20});
    }
  }
  return manifest;
}

// Parts of a multi-process save, and the primary's verdicts.
void WritePartSeeds(const fs::path& dir) {
  for (int part = 0; part < 2; ++part) {
    IndexEntry entry;
    entry.digest = ChunkDigest{static_cast<uint64_t>(part) + 1, 48};
    entry.location.raw_size = 48;
    entry.location.stored_size = 20;
    WriteSeed(dir / ("part_" + std::to_string(part)),
              EncodePart(Status::OK(), PartManifest(part), {entry}));
  }
  WriteSeed(dir / "part_error", EncodePart(Status::IOError("disk full"), PartManifest(0), {}));
  WriteSeed(dir / "verdict_ok", EncodeVerdict(Status::OK(), 17));
  WriteSeed(dir / "verdict_error", EncodeVerdict(Status::InvalidArgument("process 2: no")));
}

void WriteManifestSeeds(const fs::path& dir) {
  int64_t step = 1;
  // A step saved by two processes: a tensor of four boxes (version 2).
  {
    std::vector<ProcessPart> parts(2);
    for (int part = 0; part < 2; ++part) parts[part].manifest = PartManifest(part);
    std::vector<IndexEntry> new_chunks;
    const Manifest merged = Must(MergeParts(parts, 0, &new_chunks), "merge");
    WriteSeed(dir / "boxed_step", EncodeManifest(merged));
    WriteSeed(dir / "boxed_step_v2", EncodeManifest(merged, ManifestLayout::kNodeTables));
  }
  // Each tree packed (tensors of at most kMaxInlineTensorBytes inline, as a
  // store of format version 4 keeps them) and as the node tables of stores
  // of earlier versions.
  for (const NamedTree& named : Trees()) {
    const Manifest manifest = ManifestOf(named.tree, step++);
    WriteSeed(dir / (named.name + "_v1"), EncodeManifest(manifest, ManifestLayout::kNodeTables));
    Manifest packed = manifest;
    for (ManifestNode& node : packed.nodes) {
      if (node.kind != Tree::Kind::kTensor || node.byte_size == 0 ||
          node.byte_size > kMaxInlineTensorBytes) {
        continue;
      }
      node.chunks.clear();
      node.inlined = true;
      const Tensor& tensor = named.tree.Find(node.path)->tensor();
      node.inline_bytes.assign(reinterpret_cast<const char*>(tensor.data()), tensor.byte_size());
    }
    WriteSeed(dir / named.name, EncodeManifest(packed));
  }

  // Fields a node's kind does not use: DecodeManifest accepts them, and
  // EncodeManifest drops them.
  {
    RawNode root{.kind = fb::NodeKind::List,
                 .child_count = 3,
                 .shape = {2, 3},
                 .int_value = 42,
                 .float_bits = 0x3ff0000000000000,
                 .string_value = "stray",
                 .has_shape = true,
                 .has_string = true};
    RawNode number{.kind = fb::NodeKind::Int, .dtype = 12, .int_value = -5, .bool_value = true};
    RawNode text{
        .kind = fb::NodeKind::String, .float_bits = 1, .string_value = "s", .has_string = true};
    RawNode flag{.kind = fb::NodeKind::Bool, .int_value = 9, .bool_value = true};
    WriteSeed(dir / "edge_stray_fields", RawManifest(1, {root, number, text, flag}, 0.5));
  }
  // A 4 GiB tensor in 64 MiB chunks: valid, and far too large to build.
  {
    RawNode root{.kind = fb::NodeKind::Map, .child_count = 1};
    RawNode huge{.kind = fb::NodeKind::Tensor,
                 .key = "huge",
                 .dtype = 12,
                 .shape = {1 << 20, 1024},
                 .has_shape = true};
    for (uint64_t i = 0; i < 64; ++i) huge.chunks.emplace_back(i, ~i, kMaxChunkRawSize, 100);
    WriteSeed(dir / "edge_huge_tensor", RawManifest(1, {root, huge}, 1.0));
  }
  // Lists nested exactly kMaxTreeDepth deep: the deepest tree accepted.
  {
    std::vector<RawNode> chain(kMaxTreeDepth + 1);
    for (size_t i = 0; i < kMaxTreeDepth; ++i) {
      chain[i].kind = fb::NodeKind::List;
      chain[i].child_count = 1;
    }
    chain.back().kind = fb::NodeKind::Int;
    WriteSeed(dir / "edge_max_depth", RawManifest(1, chain, 2.0));
  }
  // A format version from the future (NotSupported), a NaN metric and an
  // empty node list (Corruption).
  {
    RawNode root{.kind = fb::NodeKind::Map};
    WriteSeed(dir / "edge_version_4", RawManifest(kManifestFormatVersion + 1, {root}, 0.0));
    WriteSeed(dir / "edge_nan_metric",
              RawManifest(1, {root}, std::numeric_limits<double>::quiet_NaN()));
    WriteSeed(dir / "edge_no_nodes", RawManifest(1, {}, 0.0));
  }
  // Map keys out of order, and a tensor whose chunks miss a byte.
  {
    RawNode root{.kind = fb::NodeKind::Map, .child_count = 2};
    RawNode b{.kind = fb::NodeKind::Int, .key = "b"};
    RawNode a{.kind = fb::NodeKind::Int, .key = "a"};
    WriteSeed(dir / "edge_unsorted_keys", RawManifest(1, {root, b, a}, 0.0));
    RawNode tensor{
        .kind = fb::NodeKind::Tensor, .key = "t", .dtype = 4, .shape = {3}, .has_shape = true};
    tensor.chunks.emplace_back(1, 2, 11, 11);
    root.child_count = 1;
    WriteSeed(dir / "edge_short_chunks", RawManifest(1, {root, tensor}, 0.0));
  }
}

// ---- Chunks ----

// A chunk fuzzer input: the expected size, then the stored chunk.
std::string ChunkInput(uint32_t expected_size, std::string_view stored) {
  std::string input;
  for (int i = 0; i < 4; ++i) input += static_cast<char>((expected_size >> (8 * i)) & 0xff);
  input += stored;
  return input;
}

// `byte_planes`: codec 3 for floats (a format-2 store); false: codec 2 (a
// format-1 store).
std::string Encoded(const Tensor& tensor, size_t width, bool byte_planes = true) {
  ChunkEncoding encoding;
  encoding.element_width = width;
  encoding.byte_planes = byte_planes;
  std::string stored;
  EncodeChunk(tensor.data(), tensor.byte_size(), encoding, &stored);
  return stored;
}

// A header and a payload, as DecodeChunk reads them.
std::string StoredChunk(uint8_t codec, uint8_t width, uint32_t raw_size, std::string_view payload) {
  std::string stored = ChunkInput(raw_size, "");
  stored.insert(stored.begin(), {static_cast<char>(codec), static_cast<char>(width)});
  return stored + std::string(payload);
}

void WriteChunkSeeds(const fs::path& dir) {
  struct Seed {
    const char* name;
    Tensor tensor;
    size_t width;
    bool byte_planes = true;
  };
  const Seed seeds[] = {
      {"zeros_zstd", Filled(DType::kUInt8, {4096}, Fill::kZeros), 0},
      {"random_raw", Filled(DType::kUInt8, {700}, Fill::kRandom), 0},
      {"ramp_zstd", Filled(DType::kUInt8, {1500}, Fill::kRamp), 0},
      {"float32_grouped", Filled(DType::kFloat32, {512}, Fill::kRamp), 4, false},
      {"float64_grouped", Filled(DType::kFloat64, {256}, Fill::kRamp), 8, false},
      {"bfloat16_grouped", Filled(DType::kBFloat16, {600}, Fill::kZeros), 2, false},
      {"float32_planes", Filled(DType::kFloat32, {512}, Fill::kRamp), 4},
      {"float64_planes", Filled(DType::kFloat64, {256}, Fill::kRamp), 8},
      {"bfloat16_planes", Filled(DType::kBFloat16, {600}, Fill::kZeros), 2},
      {"empty", Filled(DType::kUInt8, {0}, Fill::kZeros), 0},
  };
  for (const Seed& seed : seeds) {
    const std::string stored = Encoded(seed.tensor, seed.width, seed.byte_planes);
    WriteSeed(dir / seed.name, ChunkInput(static_cast<uint32_t>(seed.tensor.byte_size()), stored));
  }

  const Tensor ramp = Filled(DType::kUInt8, {1000}, Fill::kRamp);
  const std::string zstd = Encoded(ramp, 0);
  const std::string zstd_payload = zstd.substr(kChunkHeaderSize);
  if (StoredChunkCodec(zstd) != ChunkCodec::kZstd) Die("the ramp did not compress");
  // A zstd payload cut short, and one that decodes to one byte more or less
  // than its header says.
  WriteSeed(dir / "edge_zstd_truncated",
            ChunkInput(1000, std::string_view(zstd).substr(0, zstd.size() / 2)));
  WriteSeed(dir / "edge_zstd_longer", ChunkInput(999, StoredChunk(1, 0, 999, zstd_payload)));
  WriteSeed(dir / "edge_zstd_shorter", ChunkInput(1001, StoredChunk(1, 0, 1001, zstd_payload)));
  // Two zstd frames back to back: together exactly the header's size.
  WriteSeed(dir / "edge_zstd_two_frames",
            ChunkInput(2000, StoredChunk(1, 0, 2000, zstd_payload + zstd_payload)));
  // Byte grouping with a width that is not 2, 4 or 8, or does not divide the
  // size; an unknown codec; a raw chunk with a width.
  WriteSeed(dir / "edge_width_3", ChunkInput(999, StoredChunk(2, 3, 999, zstd_payload)));
  WriteSeed(dir / "edge_width_8_of_1004", ChunkInput(1004, StoredChunk(2, 8, 1004, zstd_payload)));
  WriteSeed(dir / "edge_unknown_codec", ChunkInput(4, StoredChunk(7, 0, 4, "abcd")));
  WriteSeed(dir / "edge_raw_with_width", ChunkInput(4, StoredChunk(0, 4, 4, "abcd")));
  // A plain zstd payload declared byte-grouped: decodes (to a permutation).
  WriteSeed(dir / "edge_zstd_as_grouped", ChunkInput(1000, StoredChunk(2, 8, 1000, zstd_payload)));
  // Byte planes (codec 3): a raw plane and a zstd plane of a 4-byte-wide
  // 1000-byte chunk; the same with the zstd plane's length one too long (it
  // overruns the chunk), and with an unknown plane mode.
  {
    const std::string raw_plane(250, 'r');
    const std::string zstd_plane = Encoded(Filled(DType::kUInt8, {250}, Fill::kZeros), 0)
                                       .substr(kChunkHeaderSize);
    auto descriptor = [](char mode, size_t length) {
      std::string d(1, mode);
      for (int i = 0; i < 4; ++i) d += static_cast<char>((length >> (8 * i)) & 0xff);
      return d;
    };
    const std::string good = descriptor(0, 250) + descriptor(1, zstd_plane.size()) +
                             descriptor(0, 250) + descriptor(0, 250) + raw_plane + zstd_plane +
                             raw_plane + raw_plane;
    WriteSeed(dir / "planes_raw_and_zstd", ChunkInput(1000, StoredChunk(3, 4, 1000, good)));
    std::string overrun = good;
    overrun[6] = static_cast<char>(zstd_plane.size() + 1);
    WriteSeed(dir / "edge_planes_overrun", ChunkInput(1000, StoredChunk(3, 4, 1000, overrun)));
    std::string bad_mode = good;
    bad_mode[0] = 7;
    WriteSeed(dir / "edge_planes_bad_mode", ChunkInput(1000, StoredChunk(3, 4, 1000, bad_mode)));
  }
  // Delta chunks (codec 4): a good one (base digest, depth 2, a raw
  // difference), one of depth 0, one whose difference is itself a delta.
  {
    const std::string base_and_depth = std::string("0123456789abcdef") + '\x02';
    const std::string difference = StoredChunk(0, 0, 4, "abcd");
    WriteSeed(dir / "delta", ChunkInput(4, StoredChunk(4, 0, 4, base_and_depth + difference)));
    std::string depth_zero = base_and_depth + difference;
    depth_zero[16] = 0;
    WriteSeed(dir / "edge_delta_depth_0", ChunkInput(4, StoredChunk(4, 0, 4, depth_zero)));
    const std::string nested = StoredChunk(4, 0, 4, base_and_depth + difference);
    WriteSeed(dir / "edge_delta_nested", ChunkInput(4, StoredChunk(4, 0, 4, base_and_depth + nested)));
  }
  // A raw payload shorter than its header says; a chunk shorter than a header.
  WriteSeed(dir / "edge_raw_short", ChunkInput(100, StoredChunk(0, 0, 100, "only ten b")));
  WriteSeed(dir / "edge_short_header", ChunkInput(0, std::string("\0\0\0", 3)));
}

// ---- safetensors ----

// A safetensors file from a header JSON text and the data buffer.
std::string SafetensorsBytes(std::string_view header, std::string_view data) {
  std::string bytes;
  for (int i = 0; i < 8; ++i) {
    bytes += static_cast<char>((static_cast<uint64_t>(header.size()) >> (8 * i)) & 0xff);
  }
  bytes += header;
  bytes += data;
  return bytes;
}

void WriteSafetensorsSeeds(const fs::path& dir) {
  for (const NamedTree& named : Trees()) {
    const fs::path path = dir / named.name;
    Must(WriteSafetensors(path.string(), named.tree, {{"format", "pt"}}), path.string());
    WriteSeed(path, ReadAll(path));  // checks the size
  }

  // A file another tool wrote (no ckptdb.tree): names split on '/' into maps,
  // entries not in data order, padding after the header.
  WriteSeed(dir / "edge_foreign",
            SafetensorsBytes(
                R"({"__metadata__":{"format":"pt"},)"
                R"("model/norm":{"dtype":"F16","shape":[2],"data_offsets":[8,12]},)"
                R"("model/layers/10/w":{"dtype":"I8","shape":[2,2],)"
                R"("data_offsets":[12,16]},)"
                R"("model/layers/2/w":{"dtype":"U8","shape":[],)"
                R"("data_offsets":[16,17]},)"
                R"("bias":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}}   )",
                std::string("\0\0\0\0\0\0\xf0\x3f\x00\x3c\x00\xc0\x01\x02\x03\x04\x05", 17)));
  // The smallest valid file: an empty header object.
  WriteSeed(dir / "edge_empty_header", SafetensorsBytes("{}", ""));
  // A zero-byte tensor of a huge shape, and a rank-0 tensor.
  WriteSeed(dir / "edge_zero_size",
            SafetensorsBytes(R"({"e":{"dtype":"F32","shape":[0,4611686018427387903],)"
                             R"("data_offsets":[0,0]},)"
                             R"("s":{"dtype":"I32","shape":[],"data_offsets":[0,4]}})",
                             "\x01\x02\x03\x04"));
  // "a" and "a/b": a name that would be both a tensor and a map.
  WriteSeed(dir / "edge_collide",
            SafetensorsBytes(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                             R"("a/b":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                             "xy"));
  // A ckptdb.tree written by hand: key_hex, value_hex, a list, every scalar.
  const std::string tree_json = R"([{\"kind\":\"map\",\"children\":3},)"
                                R"({\"kind\":\"tensor\",\"key\":\"t\"},)"
                                R"({\"kind\":\"list\",\"key\":\"z\",\"children\":0},)"
                                R"({\"kind\":\"list\",\"key_hex\":\"ff00\",\"children\":4},)"
                                R"({\"kind\":\"int\",\"value\":\"-9223372036854775808\"},)"
                                R"({\"kind\":\"float\",\"value\":\"7ff8000000000001\"},)"
                                R"({\"kind\":\"bool\",\"value\":true},)"
                                R"({\"kind\":\"string\",\"value_hex\":\"00ff\"}])";
  WriteSeed(dir / "edge_tree_by_hand",
            SafetensorsBytes(R"({"__metadata__":{"ckptdb.tree":")" + tree_json +
                                 R"("},"t":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}})",
                             std::string("\1\0", 2)));
  // A ckptdb.tree that does not name the header's tensor.
  WriteSeed(dir / "edge_tree_mismatch",
            SafetensorsBytes(R"({"__metadata__":{"ckptdb.tree":"[{\"kind\":\"map\",)"
                             R"(\"children\":1},{\"kind\":\"tensor\",\"key\":\"u\"}]"},)"
                             R"("t":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})",
                             "x"));
}

// A small store's table files and log, in two writer sessions (the second
// reopens, writing the first's log into table files of every family).
void WriteSalvageSeeds(const fs::path& dir) {
  const fs::path store = fs::temp_directory_path() / "ckptdb-make-corpus-store";
  fs::remove_all(store);
  CheckpointerOptions options;
  options.chunk_size_bytes = 4 << 10;  // the smallest
  options.staging_bytes = 1 << 20;
  for (int session = 0; session < 2; ++session) {
    std::unique_ptr<Checkpointer> checkpointer =
        Must(Checkpointer::Open(store.string(), options), "opening " + store.string());
    SaveOptions force;
    force.force = true;
    Must(checkpointer->Save(SmallModelTree(), 1 + 2 * session, force).status(), "saving");
    Must(checkpointer->Save(ScalarsTree(), 2 + 2 * session, force).status(), "saving");
    Must(checkpointer->Close(), "closing");
  }
  for (const fs::directory_entry& entry : fs::directory_iterator(store)) {
    const std::string name = entry.path().filename().string();
    const bool table = name.ends_with(".sst");
    if ((!table && !name.ends_with(".log")) || entry.file_size() + 1 > kMaxSeedSize ||
        entry.file_size() == 0) {
      continue;
    }
    WriteSeed(dir / ((table ? "table_" : "log_") + name),
              std::string(1, table ? '\0' : '\1') + ReadAll(entry.path()));
  }
  fs::remove_all(store);
}

}  // namespace
}  // namespace ckptdb

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  namespace fs = std::filesystem;
  const fs::path root = argv[1];
  for (const char* target : {"manifest", "chunk", "safetensors", "part", "salvage"})
    fs::create_directories(root / target);
  ckptdb::WritePartSeeds(root / "part");
  ckptdb::WriteManifestSeeds(root / "manifest");
  ckptdb::WriteChunkSeeds(root / "chunk");
  ckptdb::WriteSafetensorsSeeds(root / "safetensors");
  ckptdb::WriteSalvageSeeds(root / "salvage");
  return 0;
}
