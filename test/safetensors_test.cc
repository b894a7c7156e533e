// Tests of safetensors files: round trips (bit-exact), the format against
// bytes written by hand, files from other tools (no ckptdb.tree), and hostile
// input (each refused as InvalidArgument, never a crash).

#include "safetensors.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "manifest.h"
#include "test_util.h"

namespace ckptdb {
namespace {

using testing::MakeStepState;
using testing::TempDir;

// ---- Helpers ----

// A tensor whose bytes are a pure function of their index.
Tensor Filled(DType dtype, std::vector<int64_t> shape, int seed = 7) {
  Tensor tensor = Tensor::Allocate(dtype, std::move(shape)).value();
  for (uint64_t i = 0; i < tensor.byte_size(); ++i) {
    tensor.mutable_data()[i] = static_cast<std::byte>(i * 31 + static_cast<uint64_t>(seed));
  }
  return tensor;
}

// A tensor holding exactly `bytes`.
Tensor WithBytes(DType dtype, std::vector<int64_t> shape, std::string_view bytes) {
  Tensor tensor = Tensor::Allocate(dtype, std::move(shape)).value();
  EXPECT_EQ(tensor.byte_size(), bytes.size());
  std::memcpy(tensor.mutable_data(), bytes.data(),
              std::min<size_t>(bytes.size(), tensor.byte_size()));
  return tensor;
}

std::string BytesOf(const Tensor& tensor) {
  return std::string(reinterpret_cast<const char*>(tensor.data()), tensor.byte_size());
}

double FromBits(uint64_t bits) { return std::bit_cast<double>(bits); }

std::string Le64(uint64_t value) {
  std::string bytes;
  for (int i = 0; i < 8; ++i) bytes += static_cast<char>((value >> (8 * i)) & 0xff);
  return bytes;
}

// A safetensors file: the header's length, the header padded with spaces to
// a multiple of 8 bytes, then `data`.
std::string Frame(std::string header, const std::string& data) {
  header.append((8 - header.size() % 8) % 8, ' ');
  return Le64(header.size()) + header + data;
}

std::string ReadFileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void WriteFileBytes(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// The JSON header of a file.
std::string HeaderOf(const std::string& bytes) {
  uint64_t length = 0;
  for (int i = 0; i < 8; ++i) length |= uint64_t{static_cast<unsigned char>(bytes[i])} << (8 * i);
  return bytes.substr(8, length);
}

void ExpectInvalid(std::string_view bytes, const std::string& needle = "") {
  Result<SafetensorsFile> parsed = ParseSafetensors(bytes);
  EXPECT_EQ(parsed.status().code(), Status::Code::kInvalidArgument) << parsed.status().ToString();
  if (!needle.empty()) {
    EXPECT_NE(parsed.status().message().find(needle), std::string::npos)
        << "'" << needle << "' not in: " << parsed.status().ToString();
  }
}

// Every dtype, in DType order.
std::vector<DType> AllDTypes() {
  std::vector<DType> dtypes;
  for (int raw = 0; raw < 256; ++raw) {
    if (IsKnownDType(static_cast<uint8_t>(raw))) dtypes.push_back(static_cast<DType>(raw));
  }
  return dtypes;
}

// Every dtype, tensors of rank 0 and empty ones, tensors under lists, empty
// containers, every scalar kind with its extreme values, keys and strings
// that are not ASCII or not UTF-8.
Tree RichTree() {
  Tree root;
  Tree* dtypes = root.Set("dtypes", Tree::Map()).value();
  int seed = 0;
  for (DType dtype : AllDTypes()) {
    (void)dtypes->Set(std::string(SafetensorsDTypeName(dtype)),
                      Tree::Leaf(Filled(dtype, {3, 2}, ++seed)));
  }
  Tree* shapes = root.Set("shapes", Tree::Map()).value();
  (void)shapes->Set("rank0", Tree::Leaf(Filled(DType::kFloat64, {})));
  (void)shapes->Set("empty", Tree::Leaf(Filled(DType::kFloat32, {0})));
  (void)shapes->Set("empty_2d", Tree::Leaf(Filled(DType::kInt16, {3, 0})));
  (void)shapes->Set("rank4", Tree::Leaf(Filled(DType::kUInt8, {2, 1, 3, 2})));
  Tree* layers = root.Set("layers", Tree::List()).value();
  for (int i = 0; i < 3; ++i) {
    Tree* layer = layers->Append(Tree::Map()).value();
    (void)layer->Set("kernel", Tree::Leaf(Filled(DType::kBFloat16, {4, 4}, i)));
    (void)layer->Set("step", Tree::Int(i));
  }
  Tree* nested = layers->Append(Tree::List()).value();
  (void)nested->Append(Tree::Leaf(Filled(DType::kFloat32, {2})));
  (void)nested->Append(Tree::List());
  (void)root.Set("empty_list", Tree::List());
  (void)root.Set("empty_map", Tree::Map());
  Tree* ints = root.Set("ints", Tree::List()).value();
  for (int64_t value : {std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max(),
                        int64_t{0}, int64_t{-1}, (int64_t{1} << 53) + 1}) {
    (void)ints->Append(Tree::Int(value));
  }
  Tree* floats = root.Set("floats", Tree::List()).value();
  const uint64_t float_bits[] = {
      0x8000000000000000,  // -0.0
      0x0000000000000000,  // +0.0
      0x7ff80000deadbeef,  // quiet NaN with a payload
      0xfff8000000000001,  // negative NaN with a payload
      0x7ff0000000000000,  // +inf
      0xfff0000000000000,  // -inf
      0x0000000000000001,  // smallest denormal
      0x3fb999999999999a,  // 0.1
  };
  for (uint64_t bits : float_bits) {
    (void)floats->Append(Tree::Float(FromBits(bits)));
  }
  Tree* bools = root.Set("bools", Tree::List()).value();
  (void)bools->Append(Tree::Bool(true));
  (void)bools->Append(Tree::Bool(false));
  Tree* strings = root.Set("strings", Tree::List()).value();
  (void)strings->Append(Tree::String(""));
  (void)strings->Append(Tree::String(std::string("a\0b\0", 4)));
  (void)strings->Append(Tree::String("h\xc3\xa9llo \xe4\xb8\x96\xe7\x95\x8c \xf0\x9f\x9a\x80"));
  (void)strings->Append(Tree::String("\xff\xfe\x80"));  // not UTF-8
  (void)strings->Append(Tree::String("quote \" backslash \\ newline \n tab \t \x01 \x7f"));
  // Keys: non-ASCII over a tensor, not UTF-8 over a scalar, JSON-hostile
  // characters, and "__metadata__" where it is not a header name.
  Tree* keys = root.Set("keys", Tree::Map()).value();
  (void)keys->Set("cl\xc3\xa9", Tree::Leaf(Filled(DType::kInt32, {2})));
  (void)keys->Set("\xc0\xaf", Tree::Int(1));  // overlong '/': not UTF-8
  (void)keys->Set("a \"quoted\" \\ key", Tree::Leaf(Filled(DType::kInt8, {1})));
  (void)keys->Set("__metadata__", Tree::Leaf(Filled(DType::kUInt16, {1})));
  (void)keys->Set("a!x", Tree::Bool(true));  // sorts before "a/..." paths
  (void)root.Set("__metadata__", Tree::String("not a tensor, so not a header name"));
  return root;
}

const std::map<std::string, std::string>& RichMetadata() {
  static const std::map<std::string, std::string> metadata = {
      {"format", "pt"},
      {"empty", ""},
      {"nul", std::string("a\0b", 3)},
      {"note",
       "\xc3\xbc"
       "nicode \xe2\x9c\x93"},
      {"json", R"({"nested": [1, 2]})"},
  };
  return metadata;
}

Result<SafetensorsFile> WriteAndRead(const Tree& tree,
                                     const std::map<std::string, std::string>& metadata) {
  TempDir dir;
  const std::string path = dir.Sub("model.safetensors");
  Status status = WriteSafetensors(path, tree, metadata);
  if (!status.ok()) return status;
  return ReadSafetensors(path);
}

// ---- DType names ----

TEST(SafetensorsDTypeTest, EveryDTypeHasANameThatMapsBack) {
  std::set<std::string_view> names;
  for (DType dtype : AllDTypes()) {
    const std::string_view name = SafetensorsDTypeName(dtype);
    SCOPED_TRACE(std::string(name));
    EXPECT_NE(name, "unknown");
    EXPECT_TRUE(names.insert(name).second) << "name used twice";
    Result<DType> back = DTypeFromSafetensorsName(name);
    ASSERT_OK(back.status());
    EXPECT_EQ(*back, dtype);
  }
  EXPECT_EQ(names.size(), 15u);
  EXPECT_EQ(SafetensorsDTypeName(DType::kFloat8E4M3FN), "F8_E4M3");
  EXPECT_EQ(SafetensorsDTypeName(DType::kFloat8E5M2), "F8_E5M2");
  EXPECT_EQ(SafetensorsDTypeName(DType::kBFloat16), "BF16");
  EXPECT_EQ(SafetensorsDTypeName(DType::kBool), "BOOL");
  EXPECT_EQ(SafetensorsDTypeName(DType::kUInt64), "U64");
}

TEST(SafetensorsDTypeTest, UnknownNamesAreInvalidArgument) {
  for (const char* name : {"", "f32", "F33", "float32", "F8_E4M3FN", "C64", "F4", " F32"}) {
    SCOPED_TRACE(name);
    Result<DType> dtype = DTypeFromSafetensorsName(name);
    EXPECT_EQ(dtype.status().code(), Status::Code::kInvalidArgument) << dtype.status().ToString();
  }
}

// ---- Round trips ----

TEST(SafetensorsRoundTripTest, StepStateIsBitExact) {
  const Tree state = MakeStepState(3);
  Result<SafetensorsFile> read = WriteAndRead(state, {{"step", "3"}});
  ASSERT_OK(read.status());
  EXPECT_TRUE(read->tree.ContentEquals(state));
  EXPECT_EQ(read->metadata, (std::map<std::string, std::string>{{"step", "3"}}));
  read->tree.ForEachLeaf([](const std::string& path, const Tree& leaf) {
    if (leaf.kind() == Tree::Kind::kTensor) {
      EXPECT_TRUE(leaf.tensor().owns_data()) << path;
    }
  });
}

TEST(SafetensorsRoundTripTest, EveryDTypeShapeAndNodeKindIsBitExact) {
  const Tree tree = RichTree();
  Result<SafetensorsFile> read = WriteAndRead(tree, RichMetadata());
  ASSERT_OK(read.status());
  EXPECT_TRUE(read->tree.ContentEquals(tree));
  EXPECT_EQ(read->metadata, RichMetadata());
  // ContentEquals compares floats bitwise; check a NaN payload explicitly.
  const double nan = read->tree.Find("floats/2")->float_value();
  EXPECT_EQ(std::bit_cast<uint64_t>(nan), 0x7ff80000deadbeefu);
  EXPECT_EQ(read->tree.Find("strings/1")->string_value(), std::string("a\0b\0", 4));
}

TEST(SafetensorsRoundTripTest, ParseOfTheWrittenBytesEqualsRead) {
  TempDir dir;
  const std::string path = dir.Sub("rich.safetensors");
  ASSERT_OK(WriteSafetensors(path, RichTree(), RichMetadata()));
  Result<SafetensorsFile> parsed = ParseSafetensors(ReadFileBytes(path));
  ASSERT_OK(parsed.status());
  EXPECT_TRUE(parsed->tree.ContentEquals(RichTree()));
  EXPECT_EQ(parsed->metadata, RichMetadata());
}

TEST(SafetensorsRoundTripTest, OtherRootsAndEmptyTrees) {
  Tree list_root = Tree::List();
  (void)list_root.Append(Tree::Leaf(Filled(DType::kFloat32, {2})));
  (void)list_root.Append(Tree::Map());
  (void)list_root.Append(Tree::Leaf(Filled(DType::kInt64, {1})));
  Tree nested_list_root = Tree::List();
  (void)nested_list_root.Append(Tree::List())
      .value()
      ->Append(Tree::Leaf(Filled(DType::kUInt8, {5})));
  for (const Tree& tree : {Tree::Map(), Tree::List(), Tree::Int(-5), Tree::String("only"),
                           list_root, nested_list_root}) {
    SCOPED_TRACE(std::string(KindName(tree.kind())) + " root");
    Result<SafetensorsFile> read = WriteAndRead(tree, {});
    ASSERT_OK(read.status());
    EXPECT_TRUE(read->tree.ContentEquals(tree));
    EXPECT_TRUE(read->metadata.empty());
  }
}

TEST(SafetensorsRoundTripTest, MaxDepthRoundTrips) {
  Tree root;
  Tree* node = &root;
  for (size_t i = 1; i < kMaxTreeDepth; ++i) node = node->Set("k", Tree::Map()).value();
  (void)node->Set("t", Tree::Leaf(Filled(DType::kUInt8, {3})));  // at depth kMaxTreeDepth
  Result<SafetensorsFile> read = WriteAndRead(root, {});
  ASSERT_OK(read.status());
  EXPECT_TRUE(read->tree.ContentEquals(root));

  (void)node->Set("deeper", Tree::Map()).value()->Set("t", Tree::Int(1));
  TempDir dir;
  const Status status = WriteSafetensors(dir.Sub("deep.safetensors"), root, {});
  EXPECT_EQ(status.code(), Status::Code::kInvalidArgument) << status.ToString();
}

TEST(SafetensorsRoundTripTest, RewriteReplacesTheFileAndLeavesNoTemporary) {
  TempDir dir;
  const std::string path = dir.Sub("m.safetensors");
  ASSERT_OK(WriteSafetensors(path, MakeStepState(1, 1), {}));
  ASSERT_OK(WriteSafetensors(path, MakeStepState(2, 1), {{"k", "v"}}));
  Result<SafetensorsFile> read = ReadSafetensors(path);
  ASSERT_OK(read.status());
  EXPECT_TRUE(read->tree.ContentEquals(MakeStepState(2, 1)));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()),
                          std::filesystem::directory_iterator()),
            1);
}

TEST(SafetensorsRoundTripTest, AMappedFileEqualsTheReadOneWithoutOwningItsBytes) {
  TempDir dir;
  const std::string path = dir.Sub("m.safetensors");
  ASSERT_OK(WriteSafetensors(path, MakeStepState(3, 1), {{"k", "v"}}));
  Result<MappedSafetensors> mapped = MapSafetensors(path);
  ASSERT_OK(mapped.status());
  EXPECT_TRUE(mapped->tree.ContentEquals(MakeStepState(3, 1)));
  EXPECT_EQ(mapped->metadata, (std::map<std::string, std::string>{{"k", "v"}}));
  mapped->tree.ForEachLeaf([](const std::string& path, const Tree& leaf) {
    if (leaf.kind() == Tree::Kind::kTensor) {
      EXPECT_FALSE(leaf.tensor().owns_data()) << path;
      EXPECT_FALSE(leaf.tensor().writable() && leaf.tensor().byte_size() > 0) << path;
    }
  });
  // Malformed files are refused as ReadSafetensors refuses them.
  const std::string bytes = ReadFileBytes(path);
  for (size_t size : {size_t{0}, size_t{7}, size_t{12}, bytes.size() - 1}) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes.substr(0, size);
    EXPECT_EQ(MapSafetensors(path).status().code(), Status::Code::kInvalidArgument) << size;
  }
  EXPECT_EQ(MapSafetensors(dir.Sub("missing")).status().code(), Status::Code::kNotFound);
}

// ---- The format ----

// The bytes of the hand-written reference below: {"a": F32 [1.0, -2.0],
// "b": I16 [[0x1234]]} (little-endian), metadata {"format": "pt"}.
constexpr char kReferenceA[] = "\x00\x00\x80\x3f\x00\x00\x00\xc0";
constexpr char kReferenceB[] = "\x34\x12";

std::string ReferenceFile() {
  // Compact JSON, __metadata__ first (its keys sorted), tensors in tree
  // order with offsets from 0, then spaces to a multiple of 8 bytes.
  const std::string header =
      R"json({"__metadata__":{"ckptdb.tree":"[{\"kind\":\"map\",\"children\":2},)json"
      R"json({\"kind\":\"tensor\",\"key\":\"a\"},{\"kind\":\"tensor\",\"key\":\"b\"}]",)json"
      R"json("format":"pt"},)json"
      R"json("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)json"
      R"json("b":{"dtype":"I16","shape":[1,1],"data_offsets":[8,10]}})json";
  EXPECT_EQ(header.size(), 265u);
  std::string bytes = Le64(272) + header + std::string(7, ' ');
  bytes += std::string(kReferenceA, 8) + std::string(kReferenceB, 2);
  EXPECT_EQ(bytes.size(), 8u + 272u + 10u);
  return bytes;
}

TEST(SafetensorsFormatTest, WriterOutputIsTheHandWrittenReference) {
  Tree tree;
  (void)tree.Set("b", Tree::Leaf(WithBytes(DType::kInt16, {1, 1}, std::string(kReferenceB, 2))));
  (void)tree.Set("a", Tree::Leaf(WithBytes(DType::kFloat32, {2}, std::string(kReferenceA, 8))));
  TempDir dir;
  const std::string path = dir.Sub("ref.safetensors");
  ASSERT_OK(WriteSafetensors(path, tree, {{"format", "pt"}}));
  EXPECT_EQ(ReadFileBytes(path), ReferenceFile());
}

TEST(SafetensorsFormatTest, HandWrittenReferenceParses) {
  Result<SafetensorsFile> parsed = ParseSafetensors(ReferenceFile());
  ASSERT_OK(parsed.status());
  EXPECT_EQ(parsed->metadata, (std::map<std::string, std::string>{{"format", "pt"}}));
  const Tree& tree = parsed->tree;
  ASSERT_EQ(tree.kind(), Tree::Kind::kMap);
  std::vector<std::string> keys;
  tree.ForEachChild([&](std::string_view key, const Tree&) { keys.emplace_back(key); });
  EXPECT_EQ(keys, (std::vector<std::string>{"a", "b"}));
  const Tensor& a = tree.Find("a")->tensor();
  EXPECT_EQ(a.dtype(), DType::kFloat32);
  EXPECT_EQ(a.shape(), (std::vector<int64_t>{2}));
  EXPECT_EQ(BytesOf(a), std::string(kReferenceA, 8));
  float values[2];
  std::memcpy(values, a.data(), sizeof(values));
  if constexpr (std::endian::native == std::endian::little) {
    EXPECT_EQ(values[0], 1.0f);
    EXPECT_EQ(values[1], -2.0f);
  }
  const Tensor& b = tree.Find("b")->tensor();
  EXPECT_EQ(b.dtype(), DType::kInt16);
  EXPECT_EQ(b.shape(), (std::vector<int64_t>{1, 1}));
  EXPECT_EQ(BytesOf(b), std::string(kReferenceB, 2));
}

// What another tool reads: the writer's header as plain JSON.
TEST(SafetensorsFormatTest, WrittenHeaderIsPlainSafetensorsJson) {
  TempDir dir;
  const std::string path = dir.Sub("rich.safetensors");
  const Tree tree = RichTree();
  ASSERT_OK(WriteSafetensors(path, tree, RichMetadata()));
  const std::string bytes = ReadFileBytes(path);
  const std::string header = HeaderOf(bytes);
  EXPECT_EQ(header.size() % 8, 0u);
  EXPECT_EQ(header.rfind("{\"__metadata__\":", 0), 0u);
  const nlohmann::json json = nlohmann::json::parse(header);
  ASSERT_TRUE(json.is_object());

  // __metadata__: the caller's entries and the tree, all strings.
  const nlohmann::json& metadata = json.at("__metadata__");
  ASSERT_TRUE(metadata.is_object());
  EXPECT_EQ(metadata.size(), RichMetadata().size() + 1);
  for (const auto& [key, value] : RichMetadata()) EXPECT_EQ(metadata.at(key), value) << key;
  ASSERT_TRUE(metadata.at(kTreeMetadataKey).is_string());
  const nlohmann::json nodes =
      nlohmann::json::parse(metadata.at(kTreeMetadataKey).get<std::string>());
  const std::vector<ManifestNode> flat = FlattenTree(tree).value();
  ASSERT_TRUE(nodes.is_array());
  ASSERT_EQ(nodes.size(), flat.size());
  for (size_t i = 0; i < flat.size(); ++i) {
    EXPECT_EQ(nodes[i].at("kind"), std::string(KindName(flat[i].kind))) << flat[i].path;
  }
  EXPECT_EQ(nodes[0], nlohmann::json::parse(R"({"kind":"map","children":11})"));

  // One entry per tensor, in pre-order, offsets contiguous from 0.
  std::vector<std::string> tensor_paths;
  tree.ForEachLeaf([&](const std::string& path, const Tree& leaf) {
    if (leaf.kind() == Tree::Kind::kTensor) tensor_paths.push_back(path);
  });
  EXPECT_EQ(json.size(), tensor_paths.size() + 1);
  uint64_t offset = 0;
  size_t search_from = 0;
  for (const std::string& path : tensor_paths) {
    SCOPED_TRACE(path);
    const Tensor& tensor = tree.Find(path)->tensor();
    ASSERT_TRUE(json.contains(path));
    const nlohmann::json& entry = json.at(path);
    EXPECT_EQ(entry.size(), 3u);
    EXPECT_EQ(entry.at("dtype"), std::string(SafetensorsDTypeName(tensor.dtype())));
    EXPECT_EQ(entry.at("shape").get<std::vector<int64_t>>(), tensor.shape());
    EXPECT_EQ(entry.at("data_offsets").get<std::vector<uint64_t>>(),
              (std::vector<uint64_t>{offset, offset + tensor.byte_size()}));
    EXPECT_EQ(bytes.substr(8 + header.size() + offset, tensor.byte_size()), BytesOf(tensor));
    offset += tensor.byte_size();
    // Entries appear in the text in the same order.
    const size_t at = header.find(nlohmann::json(path).dump() + ":{", search_from);
    ASSERT_NE(at, std::string::npos);
    search_from = at;
  }
  EXPECT_EQ(bytes.size(), 8 + header.size() + offset);
}

// A file from another tool: no ckptdb.tree, names split on '/' into maps.
TEST(SafetensorsFormatTest, ForeignFileBecomesNestedMaps) {
  const std::string header =
      R"({"encoder/layers/0/kernel":{"dtype":"F16","shape":[2,2],"data_offsets":[0,8]},)"
      R"("lm_head.weight":{"dtype":"BF16","shape":[],"data_offsets":[14,16]},)"
      R"("encoder/layers/0/bias":{"dtype":"F16","shape":[2],"data_offsets":[8,12]},)"
      R"("a!x":{"dtype":"U8","shape":[1],"data_offsets":[16,17]},)"
      R"("decoder/out":{"dtype":"I16","shape":[1],"data_offsets":[12,14]},)"
      R"("a/b":{"dtype":"BOOL","shape":[1,1],"data_offsets":[17,18]},)"
      R"("encoder/empty":{"dtype":"F64","shape":[0,4],"data_offsets":[18,18]},)"
      R"("__metadata__":{"format":"pt","source":"another tool"}})";
  std::string data;
  for (int i = 0; i < 18; ++i) data += static_cast<char>(100 + i);
  Result<SafetensorsFile> parsed = ParseSafetensors(Frame(header, data));
  ASSERT_OK(parsed.status());
  EXPECT_EQ(parsed->metadata,
            (std::map<std::string, std::string>{{"format", "pt"}, {"source", "another tool"}}));
  Tree expected;
  Tree* encoder = expected.Set("encoder", Tree::Map()).value();
  Tree* layer = encoder->Set("layers", Tree::Map()).value()->Set("0", Tree::Map()).value();
  (void)layer->Set("kernel", Tree::Leaf(WithBytes(DType::kFloat16, {2, 2}, data.substr(0, 8))));
  (void)layer->Set("bias", Tree::Leaf(WithBytes(DType::kFloat16, {2}, data.substr(8, 4))));
  (void)encoder->Set("empty", Tree::Leaf(WithBytes(DType::kFloat64, {0, 4}, "")));
  (void)expected.Set("decoder", Tree::Map())
      .value()
      ->Set("out", Tree::Leaf(WithBytes(DType::kInt16, {1}, data.substr(12, 2))));
  (void)expected.Set("lm_head.weight",
                     Tree::Leaf(WithBytes(DType::kBFloat16, {}, data.substr(14, 2))));
  (void)expected.Set("a!x", Tree::Leaf(WithBytes(DType::kUInt8, {1}, data.substr(16, 1))));
  (void)expected.Set("a", Tree::Map())
      .value()
      ->Set("b", Tree::Leaf(WithBytes(DType::kBool, {1, 1}, data.substr(17, 1))));
  EXPECT_TRUE(parsed->tree.ContentEquals(expected));
  // "0" is a map key: without ckptdb.tree nothing says it was a list.
  EXPECT_EQ(parsed->tree.Find("encoder/layers")->kind(), Tree::Kind::kMap);
}

TEST(SafetensorsFormatTest, ForeignFileVariants) {
  // No __metadata__, no padding, whitespace, tensors listed out of data order.
  const std::string header =
      "{ \"b\" : {\"data_offsets\": [4, 6], \"shape\": [1], \"dtype\": \"U16\"},\n"
      "  \"a\" : {\"dtype\": \"U32\", \"shape\": [1], \"data_offsets\": [0, 4]} }";
  const std::string bytes = Le64(header.size()) + header + "ABCDEF";
  Result<SafetensorsFile> parsed = ParseSafetensors(bytes);
  ASSERT_OK(parsed.status());
  EXPECT_TRUE(parsed->metadata.empty());
  EXPECT_EQ(BytesOf(parsed->tree.Find("a")->tensor()), "ABCD");
  EXPECT_EQ(BytesOf(parsed->tree.Find("b")->tensor()), "EF");

  // No tensors at all.
  Result<SafetensorsFile> empty = ParseSafetensors(Frame("{}", ""));
  ASSERT_OK(empty.status());
  EXPECT_TRUE(empty->tree.ContentEquals(Tree::Map()));

  // Several empty tensors at the same offset.
  Result<SafetensorsFile> empties =
      ParseSafetensors(Frame(R"({"x":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},)"
                             R"("y":{"dtype":"F32","shape":[2,0],"data_offsets":[0,0]},)"
                             R"("z":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})",
                             "z"));
  ASSERT_OK(empties.status());
  EXPECT_EQ(empties->tree.child_count(), 3u);
}

// ---- Writing errors ----

TEST(SafetensorsWriteTest, UnwritableTreesAndMetadataAreInvalidArgument) {
  Tree non_utf8_tensor_key;
  (void)non_utf8_tensor_key.Set("\xff", Tree::Leaf(Filled(DType::kUInt8, {1})));
  Tree metadata_tensor;
  (void)metadata_tensor.Set("__metadata__", Tree::Leaf(Filled(DType::kUInt8, {1})));
  struct Case {
    std::string name;
    Tree tree;
    std::map<std::string, std::string> metadata;
  };
  const std::vector<Case> cases = {
      {"reserved_metadata_key", MakeStepState(1, 1), {{kTreeMetadataKey, "[]"}}},
      {"non_utf8_metadata_value", Tree::Map(), {{"k", "\xff"}}},
      {"non_utf8_metadata_key", Tree::Map(), {{"\xc3", "v"}}},
      {"tensor_root", Tree::Leaf(Filled(DType::kUInt8, {1})), {}},
      {"non_utf8_tensor_path", non_utf8_tensor_key, {}},
      {"tensor_named___metadata__", metadata_tensor, {}},
  };
  for (const Case& test_case : cases) {
    SCOPED_TRACE(test_case.name);
    TempDir dir;
    const std::string path = dir.Sub("x.safetensors");
    const Status status = WriteSafetensors(path, test_case.tree, test_case.metadata);
    EXPECT_EQ(status.code(), Status::Code::kInvalidArgument) << status.ToString();
    EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
  }
}

TEST(SafetensorsWriteTest, MissingDirectoryIsIOErrorAndLeavesNothing) {
  TempDir dir;
  const std::string path = dir.Sub("missing/model.safetensors");
  const Status status = WriteSafetensors(path, MakeStepState(1, 1), {});
  EXPECT_EQ(status.code(), Status::Code::kIOError) << status.ToString();
  EXPECT_NE(status.message().find(path), std::string::npos) << status.ToString();
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
}

TEST(SafetensorsWriteTest, PathThatIsADirectoryIsRefusedAndLeavesNothing) {
  TempDir dir;
  const std::string path = dir.Sub("taken");
  std::filesystem::create_directory(path);
  const Status status = WriteSafetensors(path, MakeStepState(1, 1), {});
  EXPECT_EQ(status.code(), Status::Code::kInvalidArgument) << status.ToString();
  EXPECT_TRUE(std::filesystem::is_empty(path));
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()),
                          std::filesystem::directory_iterator()),
            1);
}

// ---- Reading errors ----

TEST(SafetensorsReadTest, MissingFileIsNotFoundNamingThePath) {
  TempDir dir;
  const std::string path = dir.Sub("absent.safetensors");
  Result<SafetensorsFile> read = ReadSafetensors(path);
  EXPECT_TRUE(read.status().code() == Status::Code::kNotFound ||
              read.status().code() == Status::Code::kIOError)
      << read.status().ToString();
  EXPECT_NE(read.status().message().find(path), std::string::npos) << read.status().ToString();
}

TEST(SafetensorsReadTest, DirectoryIsRefused) {
  TempDir dir;
  Result<SafetensorsFile> read = ReadSafetensors(dir.path());
  EXPECT_FALSE(read.ok());
  EXPECT_NE(read.status().message().find(dir.path()), std::string::npos);
}

// A small file with every node kind and metadata.
std::string SmallFile() {
  Tree tree;
  Tree* list = tree.Set("l", Tree::List()).value();
  (void)list->Append(Tree::Bool(true));
  (void)list->Append(Tree::Float(1.5));
  (void)list->Append(Tree::Leaf(Filled(DType::kUInt8, {3})));
  (void)tree.Set("m", Tree::Map());
  (void)tree.Set("s", Tree::String("hi"));
  (void)tree.Set("t", Tree::Leaf(Filled(DType::kFloat32, {2})));
  (void)tree.Set("x", Tree::Int(7));
  TempDir dir;
  const std::string path = dir.Sub("small.safetensors");
  EXPECT_OK(WriteSafetensors(path, tree, {{"k", "v"}}));
  return ReadFileBytes(path);
}

TEST(SafetensorsReadTest, TruncatedFilesAreInvalidArgumentNamingThePath) {
  const std::string bytes = SmallFile();
  TempDir dir;
  const std::string path = dir.Sub("cut.safetensors");
  for (size_t length : {size_t{0}, size_t{5}, size_t{8}, size_t{40}, bytes.size() - 1}) {
    SCOPED_TRACE("length " + std::to_string(length));
    WriteFileBytes(path, std::string_view(bytes).substr(0, length));
    Result<SafetensorsFile> read = ReadSafetensors(path);
    EXPECT_EQ(read.status().code(), Status::Code::kInvalidArgument) << read.status().ToString();
    EXPECT_NE(read.status().message().find(path), std::string::npos) << read.status().ToString();
  }
  WriteFileBytes(path, bytes);
  EXPECT_OK(ReadSafetensors(path).status());
}

// ---- Hostile input ----

TEST(SafetensorsHostileTest, TruncatedAtEveryLength) {
  const std::string bytes = SmallFile();
  ASSERT_OK(ParseSafetensors(bytes).status());
  for (size_t length = 0; length < bytes.size(); ++length) {
    SCOPED_TRACE("length " + std::to_string(length));
    ExpectInvalid(std::string_view(bytes).substr(0, length));
  }
}

TEST(SafetensorsHostileTest, BadLengthFields) {
  const std::string header = HeaderOf(SmallFile());
  ExpectInvalid(Le64(uint64_t{1} << 63) + header, "header length");
  ExpectInvalid(Le64(std::numeric_limits<uint64_t>::max()) + header, "header length");
  ExpectInvalid(Le64(kMaxSafetensorsHeaderSize + 1) + header, "limit");
  ExpectInvalid(Le64(header.size() + 1) + header, "header length");
  ExpectInvalid(Le64(0) + header, "header");
  ExpectInvalid(Le64(0));
}

struct HeaderCase {
  std::string name;
  std::string header;
  size_t data_size;
  std::string needle;  // in the message
};

void ExpectInvalidHeaders(const std::vector<HeaderCase>& cases) {
  for (const HeaderCase& test_case : cases) {
    SCOPED_TRACE(test_case.name);
    ExpectInvalid(Frame(test_case.header, std::string(test_case.data_size, '\x5a')),
                  test_case.needle);
  }
}

// Entry {"dtype": dtype, "shape": shape, "data_offsets": offsets}.
std::string Entry(const std::string& dtype, const std::string& shape, const std::string& offsets) {
  return R"({"dtype":)" + dtype + R"(,"shape":)" + shape + R"(,"data_offsets":)" + offsets + "}";
}

TEST(SafetensorsHostileTest, ValidNeighboursOfTheBadHeadersParse) {
  for (const auto& [header, data_size] : std::vector<std::pair<std::string, size_t>>{
           {R"({"a":)" + Entry(R"("F32")", "[2]", "[0,8]") + "}", 8},
           {R"({"a":)" + Entry(R"("F32")", "[2]", "[0,8]") + R"(,"b":)" +
                Entry(R"("U8")", "[3]", "[8,11]") + "}",
            11},
           {R"({"__metadata__":{},"a/b":)" + Entry(R"("F64")", "[0,4611686018427387904]", "[0,0]") +
                "}",
            0},
       }) {
    SCOPED_TRACE(header);
    EXPECT_OK(ParseSafetensors(Frame(header, std::string(data_size, 'x'))).status());
  }
}

TEST(SafetensorsHostileTest, MalformedHeadersAreInvalidArgument) {
  const std::string a = R"("a":)";
  ExpectInvalidHeaders({
      {"empty", "", 0, "not valid JSON"},
      {"array", "[]", 0, "not an object"},
      {"string", R"("x")", 0, "not an object"},
      {"number", "8", 0, "not an object"},
      {"unterminated", R"({"a":)", 0, "not valid JSON"},
      {"trailing_garbage", "{} x", 0, "not valid JSON"},
      {"two_values", "{}{}", 0, "not valid JSON"},
      {"byte_order_mark", "\xef\xbb\xbf{}", 0, "byte-order mark"},
      {"nul_padding", std::string("{}\0\0\0", 5), 0, "NUL"},
      {"nul_inside", std::string("{\0}", 3), 0, "NUL"},
      {"comment", "{/**/}", 0, "not valid JSON"},
      {"invalid_utf8_name", "{\"\xff\":" + Entry(R"("U8")", "[1]", "[0,1]") + "}", 1, "JSON"},
      {"lone_surrogate", R"({"\ud800":)" + Entry(R"("U8")", "[1]", "[0,1]") + "}", 1, "JSON"},
      {"entry_array", "{" + a + "[1]}", 0, "'a'"},
      {"entry_string", "{" + a + R"("x"})", 0, "'a'"},
      {"entry_null", "{" + a + "null}", 0, "'a'"},
      {"missing_dtype", "{" + a + R"({"shape":[2],"data_offsets":[0,8]}})", 8, "dtype"},
      {"missing_shape", "{" + a + R"({"dtype":"F32","data_offsets":[0,8]}})", 8, "shape"},
      {"missing_offsets", "{" + a + R"({"dtype":"F32","shape":[2]}})", 8, "data_offsets"},
      {"extra_field", "{" + a + R"({"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}})", 8,
       "'x'"},
      {"repeated_field",
       "{" + a + R"({"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8, "twice"},
      {"unknown_dtype", "{" + a + Entry(R"("F33")", "[2]", "[0,8]") + "}", 8, "F33"},
      {"lowercase_dtype", "{" + a + Entry(R"("f32")", "[2]", "[0,8]") + "}", 8, "f32"},
      {"numeric_dtype", "{" + a + Entry("12", "[2]", "[0,8]") + "}", 8, "dtype"},
      {"negative_dimension", "{" + a + Entry(R"("F32")", "[-2]", "[0,8]") + "}", 8, "negative"},
      {"negative_dimension_after_zero", "{" + a + Entry(R"("F32")", "[0,-1]", "[0,0]") + "}", 0,
       "negative"},
      {"fractional_dimension", "{" + a + Entry(R"("F32")", "[2.0]", "[0,8]") + "}", 8, "shape"},
      {"dimension_beyond_uint64",
       "{" + a + Entry(R"("U8")", "[18446744073709551616]", "[0,8]") + "}", 8, "shape"},
      {"dimension_beyond_int64", "{" + a + Entry(R"("U8")", "[9223372036854775808]", "[0,8]") + "}",
       8, "too large"},
      {"string_dimension", "{" + a + Entry(R"("F32")", R"(["2"])", "[0,8]") + "}", 8, "shape"},
      {"nested_shape", "{" + a + Entry(R"("F32")", "[[2]]", "[0,8]") + "}", 8, "shape"},
      {"shape_not_array", "{" + a + Entry(R"("F32")", "2", "[0,8]") + "}", 8, "shape"},
      {"overflowing_element_count",
       "{" + a + Entry(R"("F32")", "[4294967296,4294967296]", "[0,8]") + "}", 8, "2^62"},
      {"overflowing_byte_size", "{" + a + Entry(R"("F64")", "[2305843009213693952]", "[0,8]") + "}",
       8, "2^62"},
      {"one_offset", "{" + a + Entry(R"("F32")", "[2]", "[8]") + "}", 8, "data_offsets"},
      {"three_offsets", "{" + a + Entry(R"("F32")", "[2]", "[0,8,8]") + "}", 8, "data_offsets"},
      {"offsets_not_array", "{" + a + Entry(R"("F32")", "[2]", R"("0-8")") + "}", 8,
       "data_offsets"},
      {"negative_offset", "{" + a + Entry(R"("F32")", "[2]", "[-8,0]") + "}", 8, "data_offsets"},
      {"offsets_reversed", "{" + a + Entry(R"("F32")", "[2]", "[8,0]") + "}", 8, "before"},
      {"offset_overflowing_double", "{" + a + Entry(R"("F32")", "[2]", "[0,1e400]") + "}", 8,
       "JSON"},
      {"wrong_byte_count", "{" + a + Entry(R"("F32")", "[2]", "[0,4]") + "}", 4, "bytes"},
      {"wrong_byte_count_for_dtype", "{" + a + Entry(R"("F64")", "[2]", "[0,8]") + "}", 8, "bytes"},
  });
}

TEST(SafetensorsHostileTest, OffsetsThatDoNotTileTheBufferAreInvalidArgument) {
  const auto two = [](const std::string& first, const std::string& second) {
    return R"({"a":)" + Entry(R"("F32")", "[2]", first) + R"(,"b":)" +
           Entry(R"("U8")", "[4]", second) + "}";
  };
  ExpectInvalidHeaders({
      {"overlap", two("[0,8]", "[4,8]"), 8, "overlap"},
      {"same_range", two("[0,8]", "[0,4]"), 8, "overlap"},
      {"gap", two("[0,8]", "[9,13]"), 13, "gap"},
      {"gap_at_start", two("[4,12]", "[12,16]"), 16, "gap"},
      {"past_the_end", two("[0,8]", "[8,12]"), 11, "past"},
      {"far_past_the_end", two("[0,8]", "[18446744073709551611,18446744073709551615]"), 12, "past"},
      {"short_of_the_end", two("[0,8]", "[8,12]"), 13, "cover"},
      {"no_tensors_but_data", "{}", 8, "cover"},
  });
}

TEST(SafetensorsHostileTest, BadNamesAreInvalidArgument) {
  const auto one = [](const std::string& name) {
    return "{" + nlohmann::json(name).dump() + ":" + Entry(R"("U8")", "[1]", "[0,1]") + "}";
  };
  const auto two = [](const std::string& first, const std::string& second) {
    return "{" + nlohmann::json(first).dump() + ":" + Entry(R"("U8")", "[1]", "[0,1]") + "," +
           nlohmann::json(second).dump() + ":" + Entry(R"("U8")", "[1]", "[1,2]") + "}";
  };
  std::string deep;
  for (size_t i = 0; i <= kMaxTreeDepth; ++i) deep += (i > 0 ? "/k" : "k");
  ExpectInvalidHeaders({
      {"empty", one(""), 1, "empty name"},
      {"leading_slash", one("/a"), 1, "empty path segment"},
      {"trailing_slash", one("a/"), 1, "empty path segment"},
      {"double_slash", one("a//b"), 1, "empty path segment"},
      {"only_slash", one("/"), 1, "empty path segment"},
      {"too_many_segments", one(deep), 1, "segments"},
      {"duplicate", two("a", "a"), 2, "twice"},
      {"tensor_and_map", two("a", "a/b"), 2, "collide"},
      {"map_and_tensor", two("a/b", "a"), 2, "collide"},
      {"deep_collision", two("x/y/z", "x/y"), 2, "collide"},
      {"metadata_twice", R"({"__metadata__":{},"__metadata__":{}})", 0, "twice"},
  });
  // A name between the two colliding ones in plain byte order.
  ExpectInvalid(Frame(R"({"a":)" + Entry(R"("U8")", "[1]", "[0,1]") + R"(,"a!x":)" +
                          Entry(R"("U8")", "[1]", "[1,2]") + R"(,"a/b":)" +
                          Entry(R"("U8")", "[1]", "[2,3]") + "}",
                      "xyz"),
                "collide");
  // The deepest names that are allowed.
  const std::string deepest = deep.substr(2);
  EXPECT_OK(ParseSafetensors(Frame(one(deepest), "x")).status());
}

TEST(SafetensorsHostileTest, BadMetadataIsInvalidArgument) {
  const std::string tensor = R"(,"a":)" + Entry(R"("U8")", "[1]", "[0,1]") + "}";
  ExpectInvalidHeaders({
      {"array", R"({"__metadata__":[])" + tensor, 1, "__metadata__"},
      {"string", R"({"__metadata__":"x")" + tensor, 1, "__metadata__"},
      {"null", R"({"__metadata__":null)" + tensor, 1, "__metadata__"},
      {"number_value", R"({"__metadata__":{"k":1})" + tensor, 1, "'k'"},
      {"null_value", R"({"__metadata__":{"k":null})" + tensor, 1, "'k'"},
      {"object_value", R"({"__metadata__":{"k":{}})" + tensor, 1, "'k'"},
      {"array_value", R"({"__metadata__":{"k":["v"]})" + tensor, 1, "'k'"},
      {"repeated_key", R"({"__metadata__":{"k":"v","k":"w"})" + tensor, 1, "twice"},
      {"tree_not_string", R"({"__metadata__":{"ckptdb.tree":[]})" + tensor, 1, "ckptdb.tree"},
  });
}

// A file whose tensor "a/b" (U8 [1]) is described by `tree` (JSON text).
std::string WithTree(const std::string& tree, const std::string& extra_tensors = "") {
  const std::string metadata = nlohmann::json({{kTreeMetadataKey, tree}}).dump();
  return Frame(R"({"__metadata__":)" + metadata + R"(,"a/b":)" + Entry(R"("U8")", "[1]", "[0,1]") +
                   extra_tensors + "}",
               "x");
}

constexpr char kValidTree[] =
    R"([{"kind":"map","children":1},{"kind":"map","key":"a","children":1},)"
    R"({"kind":"tensor","key":"b"}])";

TEST(SafetensorsHostileTest, ValidTreesParse) {
  const std::vector<std::string> trees = {
      kValidTree,
      // Every scalar kind, key_hex and value_hex.
      R"([{"kind":"map","children":6},{"kind":"map","key":"a","children":1},)"
      R"({"kind":"tensor","key":"b"},{"kind":"bool","key":"c","value":false},)"
      R"({"kind":"float","key":"d","value":"7FF80000DEADBEEF"},)"
      R"({"kind":"int","key":"e","value":"-9223372036854775808"},)"
      R"({"kind":"list","key":"z","children":1},{"kind":"string","value":""},)"
      R"({"kind":"string","key_hex":"ff","value_hex":"00ff"}])",
      // Fields in another order.
      R"([{"children":1,"kind":"map"},{"children":1,"key":"a","kind":"map"},)"
      R"({"key":"b","kind":"tensor"}])",
  };
  for (const std::string& tree : trees) {
    SCOPED_TRACE(tree);
    Result<SafetensorsFile> parsed = ParseSafetensors(WithTree(tree));
    ASSERT_OK(parsed.status());
    EXPECT_TRUE(parsed->metadata.empty());
    EXPECT_EQ(BytesOf(parsed->tree.Find("a/b")->tensor()), "x");
  }
  Result<SafetensorsFile> parsed = ParseSafetensors(WithTree(trees[1]));
  ASSERT_OK(parsed.status());
  EXPECT_EQ(parsed->tree.Find("\xff")->string_value(), std::string("\0\xff", 2));
  EXPECT_EQ(std::bit_cast<uint64_t>(parsed->tree.Find("d")->float_value()), 0x7ff80000deadbeefu);
  EXPECT_EQ(parsed->tree.Find("z")->kind(), Tree::Kind::kList);
}

TEST(SafetensorsHostileTest, MalformedTreeMetadataIsInvalidArgument) {
  // Builds a tree array: the root map with one child "a", then `rest`.
  const auto tree = [](const std::string& a_children, const std::string& rest) {
    return R"([{"kind":"map","children":1},{"kind":"map","key":"a","children":)" + a_children +
           "}," + rest + "]";
  };
  const std::string b = R"({"kind":"tensor","key":"b"})";
  std::string too_deep = R"([{"kind":"map","children":1})";
  for (size_t depth = 1; depth <= kMaxTreeDepth + 1; ++depth) {
    too_deep += R"(,{"kind":"map","key":"k","children":)" +
                std::string(depth <= kMaxTreeDepth ? "1" : "0") + "}";
  }
  too_deep += "]";
  struct TreeCase {
    std::string name;
    std::string tree;
    std::string needle;
  };
  const std::vector<TreeCase> cases = {
      {"not_json", "[{", "JSON"},
      {"empty_string", "", "JSON"},
      {"object", "{}", "not an array"},
      {"no_nodes", "[]", "no nodes"},
      {"node_not_object", "[1]", "not an object"},
      {"node_array", "[[]]", "not an object"},
      {"deeply_nested_node", "[" + std::string(100000, '[') + std::string(100000, ']') + "]",
       "not an object"},
      {"deeply_nested_field", R"([{"kind":)" + std::string(100000, '['), "kind"},
      {"no_kind", tree("1", R"({"key":"b"})"), "no kind"},
      {"unknown_kind", tree("1", R"({"kind":"tensors","key":"b"})"), "unknown kind"},
      {"kind_not_string", tree("1", R"({"kind":2,"key":"b"})"), "kind"},
      {"unknown_field", tree("1", R"({"kind":"tensor","key":"b","dtype":"U8"})"), "'dtype'"},
      {"repeated_field", tree("1", R"({"kind":"tensor","key":"b","key":"b"})"), "twice"},
      {"key_not_string", tree("1", R"({"kind":"tensor","key":5})"), "key"},
      {"empty_key", tree("1", R"({"kind":"tensor","key":""})"), "empty key"},
      {"key_and_key_hex", tree("1", R"({"kind":"tensor","key":"b","key_hex":"62"})"), "key_hex"},
      {"bad_key_hex", tree("1", R"({"kind":"tensor","key_hex":"6"})"), "key_hex"},
      {"key_with_slash", tree("1", R"({"kind":"tensor","key":"b/c"})"), "'/'"},
      {"map_child_without_key", tree("1", R"({"kind":"tensor"})"), "without a key"},
      {"list_child_with_key",
       R"([{"kind":"map","children":1},{"kind":"list","key":"a","children":1},)" + b + "]",
       "list element with a key"},
      {"root_with_key",
       R"([{"kind":"map","key":"r","children":1},{"kind":"map","key":"a",)"
       R"("children":1},)" +
           b + "]",
       "root with a key"},
      {"keys_out_of_order",
       R"([{"kind":"map","children":2},{"kind":"map","key":"a","children":1},)" + b +
           R"(,{"kind":"int","key":"0","value":"1"}])",
       "out of order"},
      {"keys_repeated",
       R"([{"kind":"map","children":2},{"kind":"map","key":"a","children":1},)" + b +
           R"(,{"kind":"int","key":"a","value":"1"}])",
       "out of order or repeated"},
      {"too_many_children", tree("2", b), "children"},
      {"root_too_many_children",
       R"([{"kind":"map","children":2},{"kind":"map","key":"a","children":1},)" + b + "]",
       "children"},
      {"too_few_children", tree("0", b), "follows a complete tree"},
      {"subtree_ends_early", tree("2", b + R"(,{"kind":"map","key":"c","children":1})"),
       "children"},
      {"children_uint32_max", tree("4294967295", b), "children"},
      {"children_beyond_uint32", tree("4294967296", b), "children"},
      {"negative_children", tree("-1", b), "children"},
      {"container_without_children", R"([{"kind":"map"}])", "without children"},
      {"leaf_with_children", tree("1", R"({"kind":"tensor","key":"b","children":0})"),
       "with children"},
      {"tensor_with_value", tree("1", R"({"kind":"tensor","key":"b","value":"1"})"),
       "with a value"},
      {"tensor_not_in_header", tree("1", R"({"kind":"tensor","key":"c"})"),
       "no tensor named 'a/c'"},
      {"header_tensor_not_in_tree", tree("1", R"({"kind":"int","key":"b","value":"1"})"),
       "not in ckptdb.tree"},
      {"tensor_root", R"([{"kind":"tensor"}])", "no tensor named ''"},
      {"tensor_under_list_index",
       R"([{"kind":"map","children":1},{"kind":"list","key":"a","children":1},{"kind":"tensor"}])",
       "no tensor named 'a/0'"},
      {"too_deep", too_deep, "deeper"},
      {"int_without_value", tree("1", R"({"kind":"int","key":"b"})"), "without a value"},
      {"int_as_number", tree("1", R"({"kind":"int","key":"b","value":7})"), "value"},
      {"int_leading_zero", tree("1", R"({"kind":"int","key":"b","value":"07"})"), "decimal"},
      {"int_plus_sign", tree("1", R"({"kind":"int","key":"b","value":"+7"})"), "decimal"},
      {"int_negative_zero", tree("1", R"({"kind":"int","key":"b","value":"-0"})"), "decimal"},
      {"int_overflow", tree("1", R"({"kind":"int","key":"b","value":"9223372036854775808"})"),
       "decimal"},
      {"int_as_bool", tree("1", R"({"kind":"int","key":"b","value":true})"), "decimal"},
      {"float_as_number", tree("1", R"({"kind":"float","key":"b","value":1.5})"), "value"},
      {"float_short", tree("1", R"({"kind":"float","key":"b","value":"3ff8"})"), "hex"},
      {"float_not_hex", tree("1", R"({"kind":"float","key":"b","value":"3ff800000000000g"})"),
       "hex"},
      {"float_signed", tree("1", R"({"kind":"float","key":"b","value":"-ff8000000000000"})"),
       "hex"},
      {"bool_as_string", tree("1", R"({"kind":"bool","key":"b","value":"true"})"), "true or false"},
      {"bool_as_number", tree("1", R"({"kind":"bool","key":"b","value":1})"), "value"},
      {"string_as_bool", tree("1", R"({"kind":"string","key":"b","value":false})"), "not a string"},
      {"string_value_and_hex",
       tree("1", R"({"kind":"string","key":"b","value":"x","value_hex":"78"})"), "both"},
      {"bad_value_hex", tree("1", R"({"kind":"string","key":"b","value_hex":"zz"})"), "value_hex"},
      {"value_hex_on_int", tree("1", R"({"kind":"int","key":"b","value_hex":"31"})"), "value_hex"},
      {"map_with_value", R"([{"kind":"map","children":0,"value":"1"}])", "with a value"},
      {"content_after_array", kValidTree + std::string(" []"), "JSON"},
  };
  for (const TreeCase& test_case : cases) {
    SCOPED_TRACE(test_case.name);
    ExpectInvalid(WithTree(test_case.tree), test_case.needle);
  }
}

TEST(SafetensorsHostileTest, DeepNestingIsRefusedWithoutRecursion) {
  const std::string deep(1 << 20, '[');
  ExpectInvalid(Frame(deep, ""), "not an object");
  ExpectInvalid(Frame(R"({"a":)" + deep, ""), "'a'");
  ExpectInvalid(Frame(R"({"a":{"shape":)" + deep, ""), "shape");
  ExpectInvalid(Frame(R"({"__metadata__":{"k":)" + deep, ""), "'k'");
  ExpectInvalid(Frame(std::string(1 << 20, '{'), ""), "JSON");
}

// Any single-byte change is either accepted or refused as InvalidArgument.
TEST(SafetensorsHostileTest, ByteFlipsNeverCrash) {
  const std::string bytes = SmallFile();
  ASSERT_OK(ParseSafetensors(bytes).status());
  size_t accepted = 0;
  for (size_t position = 0; position < bytes.size(); ++position) {
    for (int mask : {0x01, 0x02, 0x20, 0x80, 0xff}) {
      std::string flipped = bytes;
      flipped[position] = static_cast<char>(flipped[position] ^ mask);
      Result<SafetensorsFile> parsed = ParseSafetensors(flipped);
      const Status::Code code = parsed.status().code();
      ASSERT_TRUE(code == Status::Code::kOk || code == Status::Code::kInvalidArgument)
          << "byte " << position << " mask " << mask << ": " << parsed.status().ToString();
      if (parsed.ok()) ++accepted;
    }
  }
  EXPECT_GT(accepted, 0u);  // at least the flips of tensor bytes
}

TEST(SafetensorsHostileTest, RandomBytesNeverCrash) {
  std::mt19937_64 rng(7);
  const std::string valid_header = HeaderOf(SmallFile());
  for (int i = 0; i < 2000; ++i) {
    std::string header;
    if (i % 2 == 0) {
      header.assign(rng() % 200, '\0');
      for (char& c : header) c = static_cast<char>(rng());
    } else {
      // A valid header with a few random bytes overwritten.
      header = valid_header;
      for (int k = 0; k < 3; ++k) header[rng() % header.size()] = static_cast<char>(rng());
    }
    const std::string data(rng() % 64, 'd');
    Result<SafetensorsFile> parsed = ParseSafetensors(Le64(header.size()) + header + data);
    const Status::Code code = parsed.status().code();
    ASSERT_TRUE(code == Status::Code::kOk || code == Status::Code::kInvalidArgument)
        << "input " << i << ": " << parsed.status().ToString();
  }
}

}  // namespace
}  // namespace ckptdb
