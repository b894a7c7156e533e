// safetensors files (layout in safetensors.h).
//
// The tree's structure: __metadata__["ckptdb.tree"] is a string holding a
// JSON array with one object per node of the tree, in pre-order (the root
// first; a map's children by key, a list's by index), each with the fields:
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
//
// Both JSON texts (the header, then ckptdb.tree) are read by SAX state
// machines: no recursion, no nesting beyond what the format allows, and no
// document tree built for hostile input.

#include "safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <system_error>
#include <unordered_map>
#include <utility>
#include <vector>

#include "coding.h"
#include "file_util.h"
#include "manifest.h"
#include "utf8.h"

namespace ckptdb {
namespace {

constexpr std::string_view kMetadataEntry = "__metadata__";
// The byte length of the header-length field.
constexpr uint64_t kLengthFieldSize = 8;

struct SafetensorsDType {
  DType dtype;
  std::string_view name;
};

constexpr SafetensorsDType kSafetensorsDTypes[] = {
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

// ---- Strings ----


// The 16 hex digits of `bits`.
std::string HexBits(uint64_t bits) {
  std::string hex(16, '0');
  for (int i = 15; i >= 0; --i, bits >>= 4) hex[static_cast<size_t>(i)] = kHexDigits[bits & 0xf];
  return hex;
}

bool ParseHexBits(std::string_view text, uint64_t* bits) {
  if (text.size() != 16) return false;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), *bits, 16);
  return error == std::errc() && end == text.data() + text.size();
}

// Only the canonical spelling (what std::to_string writes) is accepted.
bool ParseDecimal(std::string_view text, int64_t* value) {
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), *value);
  return error == std::errc() && end == text.data() + text.size() && std::to_string(*value) == text;
}

// A JSON string literal; `text` must be valid UTF-8.
std::string JsonString(std::string_view text) { return nlohmann::json(std::string(text)).dump(); }

// 'name' for messages, cut short when long.
std::string ErrnoText(int error) { return std::generic_category().message(error); }

const SafetensorsDType* FindDType(DType dtype) {
  for (const SafetensorsDType& entry : kSafetensorsDTypes) {
    if (entry.dtype == dtype) return &entry;
  }
  return nullptr;
}

// ---- Writing ----

// Appends ,"field":"text" or, when `text` is not UTF-8, ,"field_hex":"<hex>".
void AppendText(std::string_view field, std::string_view text, std::string* out) {
  *out += ",\"";
  *out += field;
  if (IsValidUtf8(text)) {
    *out += "\":";
    *out += JsonString(text);
  } else {
    *out += "_hex\":\"";
    *out += HexEncode(text);
    *out += '"';
  }
}

// The ckptdb.tree array (see the top of this file) for FlattenTree's nodes.
std::string EncodeTreeNodes(const std::vector<ManifestNode>& nodes) {
  std::string out = "[";
  for (const ManifestNode& node : nodes) {
    if (out.size() > 1) out += ',';
    out += "{\"kind\":\"";
    out += KindName(node.kind);
    out += '"';
    if (!node.key.empty()) AppendText("key", node.key, &out);
    switch (node.kind) {
      case Tree::Kind::kMap:
      case Tree::Kind::kList: out += ",\"children\":" + std::to_string(node.child_count); break;
      case Tree::Kind::kTensor: break;
      case Tree::Kind::kInt: out += ",\"value\":\"" + std::to_string(node.int_value) + "\""; break;
      case Tree::Kind::kFloat:
        out += ",\"value\":\"" + HexBits(std::bit_cast<uint64_t>(node.float_value)) + "\"";
        break;
      case Tree::Kind::kBool:
        out += node.int_value != 0 ? ",\"value\":true" : ",\"value\":false";
        break;
      case Tree::Kind::kString: AppendText("value", node.string_value, &out); break;
      case Tree::Kind::kShardedTensor: break;  // stored as kTensor
    }
    out += '}';
  }
  out += ']';
  return out;
}

// Appends the header entry of the tensor at `path`, whose bytes start at
// *offset, and advances *offset past them.
Status AppendTensorEntry(const std::string& path, const Tensor& tensor, uint64_t* offset,
                         std::string* header) {
  if (path.empty()) {
    return Status::InvalidArgument("a tensor at the root has no name: put it in a map");
  }
  if (path == kMetadataEntry) {
    return Status::InvalidArgument("a tensor at '__metadata__', a name safetensors reserves");
  }
  if (!IsValidUtf8(path)) {
    return Status::InvalidArgument("tensor path " + QuotedName(path) +
                                   " is not valid UTF-8, which safetensors names must be");
  }
  const SafetensorsDType* dtype = FindDType(tensor.dtype());
  if (dtype == nullptr) {
    return Status::InvalidArgument("tensor " + QuotedName(path) + " has an unknown dtype");
  }
  *header += ',';
  *header += JsonString(path);
  *header += ":{\"dtype\":\"";
  *header += dtype->name;
  *header += "\",\"shape\":[";
  for (size_t i = 0; i < tensor.shape().size(); ++i) {
    if (i > 0) *header += ',';
    *header += std::to_string(tensor.shape()[i]);
  }
  *header += "],\"data_offsets\":[" + std::to_string(*offset) + ",";
  *offset += tensor.byte_size();
  *header += std::to_string(*offset) + "]}";
  return Status::OK();
}

struct EncodedFile {
  std::string head;                    // length field, header JSON and padding
  std::vector<const Tensor*> tensors;  // their bytes follow in this order
};

Result<EncodedFile> EncodeFile(const Tree& tree,
                               const std::map<std::string, std::string>& metadata) {
  if (metadata.count(kTreeMetadataKey) != 0) {
    return Status::InvalidArgument(std::string("metadata key '") + kTreeMetadataKey +
                                   "' is reserved for the tree's structure");
  }
  for (const auto& [key, value] : metadata) {
    if (!IsValidUtf8(key) || !IsValidUtf8(value)) {
      return Status::InvalidArgument("metadata entry " + QuotedName(key) +
                                     " is not valid UTF-8, which safetensors metadata must be");
    }
  }
  std::map<std::string, std::string> all_metadata = metadata;
  {
    Result<std::vector<ManifestNode>> nodes = FlattenTree(tree);
    if (!nodes.ok()) return nodes.status();
    all_metadata.emplace(kTreeMetadataKey, EncodeTreeNodes(*nodes));
  }

  EncodedFile file;
  std::string header = "{\"__metadata__\":";
  try {
    header += nlohmann::json(all_metadata).dump();
  } catch (const nlohmann::json::exception& e) {
    return Status::Internal(std::string("cannot encode the metadata: ") + e.what());
  }
  uint64_t offset = 0;
  Status status;
  tree.ForEachLeaf([&](const std::string& path, const Tree& leaf) {
    if (!status.ok() || leaf.kind() != Tree::Kind::kTensor) return;
    status = AppendTensorEntry(path, leaf.tensor(), &offset, &header);
    file.tensors.push_back(&leaf.tensor());
  });
  if (!status.ok()) return status;
  header += '}';
  // Spaces up to a multiple of 8 bytes, as the reference writer pads, so that
  // the tensor bytes start aligned.
  header.append((8 - header.size() % 8) % 8, ' ');
  if (header.size() > kMaxSafetensorsHeaderSize) {
    return Status::InvalidArgument("header of " + std::to_string(header.size()) +
                                   " bytes; readers refuse more than " +
                                   std::to_string(kMaxSafetensorsHeaderSize));
  }
  file.head.reserve(kLengthFieldSize + header.size());
  AppendLittleEndian(&file.head, header.size(), kLengthFieldSize);
  file.head += header;
  return file;
}

Status WriteAll(int fd, const void* data, uint64_t size, const std::string& path) {
  const auto* cursor = static_cast<const char*>(data);
  while (size > 0) {
    const size_t chunk = static_cast<size_t>(std::min<uint64_t>(size, uint64_t{1} << 30));
    const ssize_t written = ::write(fd, cursor, chunk);
    if (written < 0) {
      if (errno == EINTR) continue;
      return Status::IOError("cannot write '" + path + "': " + ErrnoText(errno));
    }
    cursor += written;
    size -= static_cast<uint64_t>(written);
  }
  return Status::OK();
}

// ---- Reading: the JSON texts ----

// One SAX event. Each parser below is a state machine fed these in order.
struct Event {
  enum class Type {
    kNull,
    kBool,
    kNegative,  // a negative integer
    kUnsigned,  // a non-negative integer that fits in 64 bits
    kFloat,     // any other number
    kString,
    kBinary,  // never produced by the JSON parser
    kKey,
    kBeginObject,
    kEndObject,
    kBeginArray,
    kEndArray,
  };
  Type type = Type::kNull;
  bool boolean = false;
  uint64_t number = 0;
  std::string* text = nullptr;  // kString and kKey; the parser may move from it
};

std::string Describe(Event::Type type) {
  switch (type) {
    case Event::Type::kNull: return "null";
    case Event::Type::kBool: return "a boolean";
    case Event::Type::kNegative: return "a negative integer";
    case Event::Type::kUnsigned: return "an integer";
    case Event::Type::kFloat: return "a non-integer number";
    case Event::Type::kString: return "a string";
    case Event::Type::kBinary: return "binary data";
    case Event::Type::kKey: return "a key";
    case Event::Type::kBeginObject: return "an object";
    case Event::Type::kEndObject: return "the end of an object";
    case Event::Type::kBeginArray: return "an array";
    case Event::Type::kEndArray: return "the end of an array";
  }
  return "unknown";
}

// Keeps the first error of a parser. Returning false from an event handler
// stops the JSON parser at once.
class Machine {
 public:
  const std::string& error() const { return error_; }
  bool SyntaxError(std::string_view what) {
    constexpr size_t kMaxShown = 300;
    return Fail("not valid JSON: " + std::string(what.substr(0, kMaxShown)) +
                (what.size() > kMaxShown ? "..." : ""));
  }

 protected:
  bool Fail(std::string what) {
    if (error_.empty()) error_ = std::move(what);
    return false;
  }

 private:
  std::string error_;
};

template <typename M>
class SaxAdapter final : public nlohmann::json_sax<nlohmann::json> {
 public:
  explicit SaxAdapter(M* machine) : machine_(machine) {}

  bool null() override { return Emit(Event::Type::kNull); }
  bool boolean(bool value) override {
    Event event{Event::Type::kBool};
    event.boolean = value;
    return machine_->On(event);
  }
  bool number_integer(number_integer_t value) override {
    if (value >= 0) return number_unsigned(static_cast<number_unsigned_t>(value));  // "-0"
    return Emit(Event::Type::kNegative);
  }
  bool number_unsigned(number_unsigned_t value) override {
    Event event{Event::Type::kUnsigned};
    event.number = value;
    return machine_->On(event);
  }
  bool number_float(number_float_t, const string_t&) override { return Emit(Event::Type::kFloat); }
  bool string(string_t& value) override { return EmitText(Event::Type::kString, &value); }
  bool binary(binary_t&) override { return Emit(Event::Type::kBinary); }
  bool start_object(std::size_t) override { return Emit(Event::Type::kBeginObject); }
  bool key(string_t& value) override { return EmitText(Event::Type::kKey, &value); }
  bool end_object() override { return Emit(Event::Type::kEndObject); }
  bool start_array(std::size_t) override { return Emit(Event::Type::kBeginArray); }
  bool end_array() override { return Emit(Event::Type::kEndArray); }
  bool parse_error(std::size_t, const std::string&, const nlohmann::json::exception& e) override {
    return machine_->SyntaxError(e.what());
  }

 private:
  bool Emit(Event::Type type) {
    Event event{type};
    return machine_->On(event);
  }
  bool EmitText(Event::Type type, std::string* text) {
    Event event{type};
    event.text = text;
    return machine_->On(event);
  }

  M* machine_;
};

// Feeds `text` to `machine`: the machine's first error, or the JSON syntax
// error, or "" when the text is one complete value the machine accepted.
template <typename M>
std::string RunMachine(std::string_view text, M* machine) {
  SaxAdapter<M> adapter(machine);
  bool parsed = false;
  try {
    parsed = nlohmann::json::sax_parse(text.begin(), text.end(), &adapter);
  } catch (const nlohmann::json::exception& e) {
    machine->SyntaxError(e.what());
  }
  if ((!parsed || !machine->done()) && machine->error().empty()) {
    machine->SyntaxError("incomplete");
  }
  return machine->error();
}

struct TensorEntry {
  std::string name;
  DType dtype = DType::kUInt8;
  std::vector<int64_t> shape;
  uint64_t begin = 0;
  uint64_t end = 0;
};

// Empty names, empty path segments and paths deeper than a tree may be are
// refused; "" when the name is fine.
std::string CheckTensorName(std::string_view name) {
  if (name.empty()) return "a tensor has an empty name";
  if (name.front() == '/' || name.back() == '/' || name.find("//") != std::string_view::npos) {
    return "tensor " + QuotedName(name) + ": empty path segment";
  }
  const auto segments = static_cast<size_t>(std::count(name.begin(), name.end(), '/')) + 1;
  if (segments > kMaxTreeDepth) {
    return "tensor " + QuotedName(name) + ": more than " + std::to_string(kMaxTreeDepth) +
           " path segments";
  }
  return "";
}

// The header object: __metadata__ and the tensor entries, each checked on its
// own (dtype, shape, offsets against the byte size) as it ends.
class HeaderMachine : public Machine {
 public:
  bool On(Event& event);
  bool done() const { return state_ == State::kDone; }

  std::map<std::string, std::string> metadata;
  std::vector<TensorEntry> tensors;

 private:
  enum class State {
    kStart,
    kTop,  // a key of the header object, or its end
    kMetadataObject,
    kMetadataKey,
    kMetadataValue,
    kEntryObject,
    kEntryKey,
    kDType,
    kShapeArray,
    kShape,
    kOffsetsArray,
    kOffsets,
    kDone,
  };
  static constexpr unsigned kDTypeField = 1;
  static constexpr unsigned kShapeField = 2;
  static constexpr unsigned kOffsetsField = 4;

  bool FailTensor(const std::string& what) {
    return Fail("tensor " + QuotedName(tensors.back().name) + ": " + what);
  }
  bool FinishEntry();

  State state_ = State::kStart;
  bool seen_metadata_ = false;
  std::string metadata_key_;
  unsigned fields_ = 0;
  uint64_t offsets_[2] = {0, 0};
  size_t offset_count_ = 0;
};

bool HeaderMachine::On(Event& event) {
  using Type = Event::Type;
  const Type type = event.type;
  switch (state_) {
    case State::kStart:
      if (type != Type::kBeginObject) {
        return Fail("header is " + Describe(type) + ", not an object");
      }
      state_ = State::kTop;
      return true;
    case State::kTop: {
      if (type == Type::kEndObject) {
        state_ = State::kDone;
        return true;
      }
      if (type != Type::kKey) return Fail("unexpected " + Describe(type));
      if (*event.text == kMetadataEntry) {
        if (seen_metadata_) return Fail("__metadata__ appears twice");
        seen_metadata_ = true;
        state_ = State::kMetadataObject;
        return true;
      }
      const std::string error = CheckTensorName(*event.text);
      if (!error.empty()) return Fail(error);
      tensors.emplace_back();
      tensors.back().name = std::move(*event.text);
      fields_ = 0;
      state_ = State::kEntryObject;
      return true;
    }
    case State::kMetadataObject:
      if (type != Type::kBeginObject) {
        return Fail("__metadata__ is " + Describe(type) + ", not an object");
      }
      state_ = State::kMetadataKey;
      return true;
    case State::kMetadataKey:
      if (type == Type::kEndObject) {
        state_ = State::kTop;
        return true;
      }
      if (type != Type::kKey) return Fail("unexpected " + Describe(type) + " in __metadata__");
      metadata_key_ = std::move(*event.text);
      state_ = State::kMetadataValue;
      return true;
    case State::kMetadataValue: {
      if (type != Type::kString) {
        return Fail("__metadata__ entry " + QuotedName(metadata_key_) + " is " + Describe(type) +
                    ", not a string");
      }
      const auto [entry, inserted] = metadata.try_emplace(metadata_key_);
      if (!inserted) return Fail("__metadata__ entry " + QuotedName(metadata_key_) + " appears twice");
      entry->second = std::move(*event.text);
      state_ = State::kMetadataKey;
      return true;
    }
    case State::kEntryObject:
      if (type != Type::kBeginObject) return FailTensor(Describe(type) + ", not an object");
      state_ = State::kEntryKey;
      return true;
    case State::kEntryKey: {
      if (type == Type::kEndObject) {
        state_ = State::kTop;
        return FinishEntry();
      }
      if (type != Type::kKey) return FailTensor("unexpected " + Describe(type));
      const std::string& field = *event.text;
      unsigned bit = 0;
      if (field == "dtype") {
        bit = kDTypeField;
        state_ = State::kDType;
      } else if (field == "shape") {
        bit = kShapeField;
        state_ = State::kShapeArray;
      } else if (field == "data_offsets") {
        bit = kOffsetsField;
        offset_count_ = 0;
        state_ = State::kOffsetsArray;
      } else {
        return FailTensor("unknown field " + QuotedName(field));
      }
      if ((fields_ & bit) != 0) return FailTensor("field " + QuotedName(field) + " appears twice");
      fields_ |= bit;
      return true;
    }
    case State::kDType: {
      if (type != Type::kString) return FailTensor("dtype is " + Describe(type) + ", not a string");
      Result<DType> dtype = DTypeFromSafetensorsName(*event.text);
      if (!dtype.ok()) return FailTensor(dtype.status().message());
      tensors.back().dtype = *dtype;
      state_ = State::kEntryKey;
      return true;
    }
    case State::kShapeArray:
      if (type != Type::kBeginArray) {
        return FailTensor("shape is " + Describe(type) + ", not an array");
      }
      state_ = State::kShape;
      return true;
    case State::kShape:
      if (type == Type::kEndArray) {
        state_ = State::kEntryKey;
        return true;
      }
      if (type == Type::kNegative) return FailTensor("negative dimension in shape");
      if (type != Type::kUnsigned) return FailTensor("shape holds " + Describe(type));
      if (event.number > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return FailTensor("dimension " + std::to_string(event.number) + " is too large");
      }
      tensors.back().shape.push_back(static_cast<int64_t>(event.number));
      return true;
    case State::kOffsetsArray:
      if (type != Type::kBeginArray) {
        return FailTensor("data_offsets is " + Describe(type) + ", not an array");
      }
      state_ = State::kOffsets;
      return true;
    case State::kOffsets:
      if (type == Type::kEndArray) {
        if (offset_count_ != 2) {
          return FailTensor("data_offsets holds " + std::to_string(offset_count_) +
                            " numbers, not [begin, end]");
        }
        tensors.back().begin = offsets_[0];
        tensors.back().end = offsets_[1];
        state_ = State::kEntryKey;
        return true;
      }
      if (type != Type::kUnsigned) return FailTensor("data_offsets holds " + Describe(type));
      if (offset_count_ == 2) return FailTensor("data_offsets holds more than [begin, end]");
      offsets_[offset_count_++] = event.number;
      return true;
    case State::kDone: return Fail("content after the header object");
  }
  return Fail("unexpected " + Describe(type));
}

bool HeaderMachine::FinishEntry() {
  for (const auto& [bit, name] : {std::pair<unsigned, const char*>{kDTypeField, "dtype"},
                                  {kShapeField, "shape"},
                                  {kOffsetsField, "data_offsets"}}) {
    if ((fields_ & bit) == 0) return FailTensor(std::string("no ") + name);
  }
  const TensorEntry& entry = tensors.back();
  Result<uint64_t> byte_size = TensorByteSize(entry.dtype, entry.shape);
  if (!byte_size.ok()) {
    return FailTensor("shape " + ShapeString(entry.shape) + ": " + byte_size.status().message());
  }
  const std::string offsets =
      "data_offsets [" + std::to_string(entry.begin) + ", " + std::to_string(entry.end) + "]";
  if (entry.begin > entry.end) return FailTensor(offsets + " end before they begin");
  if (entry.end - entry.begin != *byte_size) {
    return FailTensor(offsets + " hold " + std::to_string(entry.end - entry.begin) +
                      " bytes, but " + std::string(SafetensorsDTypeName(entry.dtype)) + " x " +
                      ShapeString(entry.shape) + " is " + std::to_string(*byte_size));
  }
  return true;
}

// The ckptdb.tree array, one ManifestNode per node object (the fields of each
// checked against its kind; how they form a tree is MatchTree's business).
class TreeMachine : public Machine {
 public:
  bool On(Event& event);
  bool done() const { return state_ == State::kDone; }

  std::vector<ManifestNode> nodes;

 private:
  enum class State { kStart, kNodes, kField, kValue, kDone };
  enum Field : unsigned { kKind, kKey, kKeyHex, kChildren, kValue, kValueHex, kFieldCount };
  static constexpr std::string_view kFieldNames[kFieldCount] = {"kind",     "key",   "key_hex",
                                                                "children", "value", "value_hex"};

  bool FailNode(const std::string& what) {
    return Fail("ckptdb.tree node " + std::to_string(nodes.size()) + ": " + what);
  }
  bool Has(Field field) const { return (seen_ & (1u << field)) != 0; }
  bool FinishNode();

  State state_ = State::kStart;
  Field field_ = kKind;
  unsigned seen_ = 0;
  // The fields of the node being read. key and key_hex share key_, value and
  // value_hex share text_ (a node holding both is refused).
  std::string kind_;
  std::string key_;
  std::string text_;
  uint64_t children_ = 0;
  bool value_is_bool_ = false;
  bool bool_ = false;
};

bool TreeMachine::On(Event& event) {
  using Type = Event::Type;
  const Type type = event.type;
  switch (state_) {
    case State::kStart:
      if (type != Type::kBeginArray) {
        return Fail(std::string(kTreeMetadataKey) + " is " + Describe(type) + ", not an array");
      }
      state_ = State::kNodes;
      return true;
    case State::kNodes:
      if (type == Type::kEndArray) {
        state_ = State::kDone;
        return true;
      }
      if (type != Type::kBeginObject) return FailNode(Describe(type) + ", not an object");
      if (nodes.size() >= kMaxTreeNodes) {
        return Fail(std::string(kTreeMetadataKey) + " has more than " +
                    std::to_string(kMaxTreeNodes) + " nodes");
      }
      seen_ = 0;
      children_ = 0;
      value_is_bool_ = false;
      state_ = State::kField;
      return true;
    case State::kField: {
      if (type == Type::kEndObject) {
        state_ = State::kNodes;
        return FinishNode();
      }
      if (type != Type::kKey) return FailNode("unexpected " + Describe(type));
      const auto* found = std::find(std::begin(kFieldNames), std::end(kFieldNames), *event.text);
      if (found == std::end(kFieldNames)) return FailNode("unknown field " + QuotedName(*event.text));
      field_ = static_cast<Field>(found - std::begin(kFieldNames));
      if (Has(field_)) return FailNode("field " + QuotedName(*event.text) + " appears twice");
      seen_ |= 1u << field_;
      state_ = State::kValue;
      return true;
    }
    case State::kValue: {
      state_ = State::kField;
      switch (field_) {
        case kChildren:
          if (type != Type::kUnsigned || event.number > std::numeric_limits<uint32_t>::max()) {
            return FailNode("children is " + Describe(type) + ", not a count below 2^32");
          }
          children_ = event.number;
          return true;
        case kValue:
          if (type == Type::kBool) {
            value_is_bool_ = true;
            bool_ = event.boolean;
            return true;
          }
          if (type != Type::kString) {
            return FailNode("value is " + Describe(type) + ", not a string or a boolean");
          }
          text_ = std::move(*event.text);
          return true;
        default:
          if (type != Type::kString) {
            return FailNode("field " + QuotedName(kFieldNames[field_]) + " is " + Describe(type) +
                            ", not a string");
          }
          (field_ == kKind ? kind_ : field_ == kValueHex ? text_ : key_) = std::move(*event.text);
          return true;
      }
    }
    case State::kDone: return Fail(std::string("content after the ") + kTreeMetadataKey + " array");
  }
  return Fail("unexpected " + Describe(type));
}

bool TreeMachine::FinishNode() {
  ManifestNode node;
  if (!Has(kKind)) return FailNode("no kind");
  bool known = false;
  for (uint8_t raw = 0; raw <= static_cast<uint8_t>(Tree::Kind::kString); ++raw) {
    if (KindName(static_cast<Tree::Kind>(raw)) == kind_) {
      node.kind = static_cast<Tree::Kind>(raw);
      known = true;
    }
  }
  if (!known) return FailNode("unknown kind " + QuotedName(kind_));
  const std::string kind = QuotedName(kind_) + " node";

  if (Has(kKey) && Has(kKeyHex)) return FailNode("both key and key_hex");
  if (Has(kKey)) node.key = std::move(key_);
  if (Has(kKeyHex)) {
    std::optional<std::string> key = HexDecode(key_, HexCase::kEither);
    if (!key.has_value()) return FailNode("key_hex is not hex");
    node.key = std::move(*key);
  }
  if ((Has(kKey) || Has(kKeyHex)) && node.key.empty()) return FailNode("empty key");

  const bool container = node.kind == Tree::Kind::kMap || node.kind == Tree::Kind::kList;
  if (container != Has(kChildren)) {
    return FailNode(container ? kind + " without children" : kind + " with children");
  }
  if (container) node.child_count = static_cast<uint32_t>(children_);

  if (Has(kValue) && Has(kValueHex)) return FailNode("both value and value_hex");
  const bool has_value = Has(kValue) || Has(kValueHex);
  const bool needs_value = !container && node.kind != Tree::Kind::kTensor;
  if (has_value != needs_value) {
    return FailNode(needs_value ? kind + " without a value" : kind + " with a value");
  }
  if (Has(kValueHex) && node.kind != Tree::Kind::kString) return FailNode(kind + " with value_hex");
  switch (node.kind) {
    case Tree::Kind::kInt:
      if (value_is_bool_ || !ParseDecimal(text_, &node.int_value)) {
        return FailNode("value is not a decimal int64 string");
      }
      break;
    case Tree::Kind::kFloat: {
      uint64_t bits = 0;
      if (value_is_bool_ || !ParseHexBits(text_, &bits)) {
        return FailNode("value is not 16 hex digits of float bits");
      }
      node.float_value = std::bit_cast<double>(bits);
      break;
    }
    case Tree::Kind::kBool:
      if (!value_is_bool_) return FailNode("value is not true or false");
      node.int_value = bool_ ? 1 : 0;
      break;
    case Tree::Kind::kString:
      if (Has(kValueHex)) {
        std::optional<std::string> value = HexDecode(text_, HexCase::kEither);
        if (!value.has_value()) return FailNode("value_hex is not hex");
        node.string_value = std::move(*value);
      } else if (value_is_bool_) {
        return FailNode("value is not a string");
      } else {
        node.string_value = std::move(text_);
      }
      break;
    case Tree::Kind::kMap:
    case Tree::Kind::kList:
    case Tree::Kind::kTensor:
    case Tree::Kind::kShardedTensor: break;  // not among the kinds parsed
  }
  nodes.push_back(std::move(node));
  return true;
}

// ---- Reading: the tree ----

using NameIndex = std::unordered_map<std::string_view, size_t>;

// Checks that `nodes` (pre-order, from ckptdb.tree) form one tree
// (CheckPreOrderTree) whose tensor nodes are exactly the header's tensors;
// gives each tensor node the dtype and shape of its tensor.
Status MatchTree(const std::vector<TensorEntry>& tensors, const NameIndex& by_name,
                 const std::string& source, std::vector<ManifestNode>* nodes) {
  const auto invalid = [&](size_t index, const std::string& what) {
    return Status::InvalidArgument(source + ": " + kTreeMetadataKey + " node " +
                                   std::to_string(index) + ": " + what);
  };
  if (nodes->empty()) {
    return Status::InvalidArgument(source + ": " + kTreeMetadataKey + " has no nodes");
  }
  std::vector<bool> matched(tensors.size(), false);
  Status status = CheckPreOrderTree(nodes, invalid, [&](size_t i, ManifestNode& node) -> Status {
    if (node.kind != Tree::Kind::kTensor) return Status::OK();
    const auto found = by_name.find(node.path);
    if (found == by_name.end()) {
      return invalid(i, "no tensor named " + QuotedName(node.path) + " in the header");
    }
    if (matched[found->second]) return invalid(i, "tensor " + QuotedName(node.path) + " twice");
    matched[found->second] = true;
    const TensorEntry& tensor = tensors[found->second];
    node.dtype = tensor.dtype;
    node.shape = tensor.shape;
    node.byte_size = tensor.end - tensor.begin;
    return Status::OK();
  });
  if (!status.ok()) return status;
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (!matched[i]) {
      return Status::InvalidArgument(source + ": tensor " + QuotedName(tensors[i].name) + " is not in " +
                                     kTreeMetadataKey);
    }
  }
  return Status::OK();
}

// The order of paths segment by segment: a path sorts before its extensions
// and siblings sort by key, so that sorted names come in the pre-order of the
// tree of maps they form.
bool SegmentLess(std::string_view a, std::string_view b) {
  const size_t common = std::min(a.size(), b.size());
  for (size_t i = 0; i < common; ++i) {
    if (a[i] == b[i]) continue;
    if (a[i] == '/') return true;
    if (b[i] == '/') return false;
    return static_cast<unsigned char>(a[i]) < static_cast<unsigned char>(b[i]);
  }
  return a.size() < b.size();
}

// For a file without ckptdb.tree: the nodes of a tree of maps, split on '/'.
// Names must not collide: "a" and "a/b" would make 'a' a tensor and a map.
Result<std::vector<ManifestNode>> NodesFromNames(const std::vector<TensorEntry>& tensors,
                                                 const std::string& source) {
  std::vector<size_t> order(tensors.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return SegmentLess(tensors[a].name, tensors[b].name); });
  std::vector<ManifestNode> nodes(1);  // the root map
  // The maps holding the previous name, root first.
  struct OpenMap {
    size_t node_index;
    size_t path_length;
  };
  std::vector<OpenMap> open = {{0, 0}};
  const std::string* previous = nullptr;
  for (size_t index : order) {
    const TensorEntry& tensor = tensors[index];
    const std::string& name = tensor.name;
    if (previous != nullptr) {
      if (name == *previous) {
        return Status::InvalidArgument(source + ": tensor " + QuotedName(name) + " appears twice");
      }
      if (name.size() > previous->size() && name[previous->size()] == '/' &&
          name.compare(0, previous->size(), *previous) == 0) {
        return Status::InvalidArgument(source + ": tensor names " + QuotedName(*previous) + " and " +
                                       QuotedName(name) + " collide: " + QuotedName(*previous) +
                                       " would be both a tensor and a map");
      }
      while (open.size() > 1) {
        const size_t length = open.back().path_length;
        if (name.size() > length && name[length] == '/' &&
            name.compare(0, length, *previous, 0, length) == 0) {
          break;
        }
        open.pop_back();
      }
    }
    previous = &name;
    size_t start = open.back().path_length == 0 ? 0 : open.back().path_length + 1;
    while (true) {
      const size_t slash = name.find('/', start);
      ManifestNode node;
      node.key = name.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
      node.depth = static_cast<uint32_t>(open.size());
      ++nodes[open.back().node_index].child_count;
      if (slash == std::string::npos) {
        node.kind = Tree::Kind::kTensor;
        node.dtype = tensor.dtype;
        node.shape = tensor.shape;
        node.byte_size = tensor.end - tensor.begin;
        nodes.push_back(std::move(node));
        break;
      }
      node.kind = Tree::Kind::kMap;
      nodes.push_back(std::move(node));
      open.push_back({nodes.size() - 1, slash});
      start = slash + 1;
    }
  }
  return nodes;
}

// ---- Reading: the whole header ----

struct ValidatedHeader {
  std::map<std::string, std::string> metadata;  // without kTreeMetadataKey
  std::vector<TensorEntry> tensors;             // in data order
  std::vector<ManifestNode> nodes;  // the tree in pre-order; tensors with dtype and shape
};

// Sorts `tensors` by offset and checks that they tile the data buffer.
Status CheckTiling(uint64_t data_size, const std::string& source,
                   std::vector<TensorEntry>* tensors) {
  std::sort(tensors->begin(), tensors->end(), [](const TensorEntry& a, const TensorEntry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t covered = 0;
  for (const TensorEntry& tensor : *tensors) {
    const auto invalid = [&](const std::string& problem) {
      return Status::InvalidArgument(source + ": tensor " + QuotedName(tensor.name) +
                                     ": data_offsets [" + std::to_string(tensor.begin) + ", " +
                                     std::to_string(tensor.end) + "] " + problem);
    };
    if (tensor.end > data_size) {
      return invalid("reach past the " + std::to_string(data_size) + "-byte data buffer");
    }
    if (tensor.begin > covered) return invalid("leave a gap after byte " + std::to_string(covered));
    if (tensor.begin < covered) {
      return invalid("overlap another tensor, which ends at " + std::to_string(covered));
    }
    covered = tensor.end;
  }
  if (covered != data_size) {
    return Status::InvalidArgument(source + ": the tensors cover " + std::to_string(covered) +
                                   " bytes of the " + std::to_string(data_size) +
                                   "-byte data buffer");
  }
  return Status::OK();
}

// The one validation of a header, for files and for bytes in memory: the
// JSON, each entry, the names, the tiling of the `data_size`-byte buffer and
// the tree. Nothing is allocated for the tensors yet.
Result<ValidatedHeader> ValidateHeader(std::string_view header, uint64_t data_size,
                                       const std::string& source) {
  // The format's header is a JSON object padded with spaces: no byte-order
  // mark (which the JSON parser would skip), no NUL (no JSON either, which
  // the parser would take for the end of the text).
  if (header.starts_with("\xef\xbb\xbf")) {
    return Status::InvalidArgument(source + ": header: starts with a byte-order mark");
  }
  if (header.find('\0') != std::string_view::npos) {
    return Status::InvalidArgument(source + ": header: holds a NUL byte");
  }
  HeaderMachine machine;
  const std::string error = RunMachine(header, &machine);
  if (!error.empty()) return Status::InvalidArgument(source + ": header: " + error);
  ValidatedHeader result;
  result.metadata = std::move(machine.metadata);
  result.tensors = std::move(machine.tensors);
  {
    NameIndex by_name;  // views of result.tensors' names: reordering them comes after
    by_name.reserve(result.tensors.size());
    for (size_t i = 0; i < result.tensors.size(); ++i) {
      if (!by_name.emplace(result.tensors[i].name, i).second) {
        return Status::InvalidArgument(source + ": tensor " + QuotedName(result.tensors[i].name) +
                                       " appears twice");
      }
    }
    const auto tree_entry = result.metadata.find(kTreeMetadataKey);
    if (tree_entry != result.metadata.end()) {
      const std::string tree_json = std::move(tree_entry->second);
      result.metadata.erase(tree_entry);
      TreeMachine tree_machine;
      const std::string tree_error = RunMachine(tree_json, &tree_machine);
      if (!tree_error.empty()) {
        return Status::InvalidArgument(source + ": " + kTreeMetadataKey + ": " + tree_error);
      }
      result.nodes = std::move(tree_machine.nodes);
      Status status = MatchTree(result.tensors, by_name, source, &result.nodes);
      if (!status.ok()) return status;
    } else {
      Result<std::vector<ManifestNode>> nodes = NodesFromNames(result.tensors, source);
      if (!nodes.ok()) return nodes.status();
      result.nodes = std::move(*nodes);
    }
  }
  Status status = CheckTiling(data_size, source, &result.tensors);
  if (!status.ok()) return status;
  return result;
}

// The header length in the first bytes of a `total_size`-byte input, checked
// against the limit and the bytes that follow.
Result<uint64_t> HeaderLength(std::string_view first_bytes, uint64_t total_size,
                              const std::string& source) {
  if (total_size < kLengthFieldSize || first_bytes.size() < kLengthFieldSize) {
    return Status::InvalidArgument(source + ": " + std::to_string(total_size) +
                                   " bytes, too short for the 8-byte header length");
  }
  const uint64_t length = ReadLittleEndian(first_bytes.data(), kLengthFieldSize);
  if (length > kMaxSafetensorsHeaderSize) {
    return Status::InvalidArgument(source + ": header length " + std::to_string(length) +
                                   " exceeds the limit of " +
                                   std::to_string(kMaxSafetensorsHeaderSize));
  }
  if (length > total_size - kLengthFieldSize) {
    return Status::InvalidArgument(source + ": header length " + std::to_string(length) +
                                   " exceeds the " + std::to_string(total_size - kLengthFieldSize) +
                                   " bytes that follow");
  }
  return length;
}

// Copies `size` bytes at `offset` of the data buffer into `out`.
using ReadData = std::function<Status(uint64_t offset, std::byte* out, uint64_t size)>;

// Builds the tree of a validated header, allocating each tensor and reading
// its bytes straight into it.
Result<SafetensorsFile> Materialize(ValidatedHeader header, const ReadData& read_data,
                                    const std::string& source) {
  Result<Tree> tree = BuildTree(header.nodes);
  if (!tree.ok()) return tree.status().WithContext(source);
  header.nodes = std::vector<ManifestNode>();  // freed before the tensors are read
  for (const TensorEntry& entry : header.tensors) {
    Tree* leaf = tree->Find(entry.name);
    const uint64_t size = entry.end - entry.begin;
    if (leaf == nullptr || leaf->kind() != Tree::Kind::kTensor ||
        leaf->tensor().byte_size() != size) {
      return Status::Internal(source + ": tensor " + QuotedName(entry.name) +
                              " is not where the tree should hold it");
    }
    if (size == 0) continue;
    Status status = read_data(entry.begin, leaf->tensor().mutable_data(), size);
    if (!status.ok()) return status;
  }
  SafetensorsFile file;
  file.tree = std::move(*tree);
  file.metadata = std::move(header.metadata);
  return file;
}

Status ReadAt(int fd, uint64_t offset, void* out, uint64_t size, const std::string& path) {
  auto* cursor = static_cast<char*>(out);
  while (size > 0) {
    const size_t chunk = static_cast<size_t>(std::min<uint64_t>(size, uint64_t{1} << 30));
    const ssize_t got = ::pread(fd, cursor, chunk, static_cast<off_t>(offset));
    if (got < 0) {
      if (errno == EINTR) continue;
      return Status::IOError("cannot read '" + path + "': " + ErrnoText(errno));
    }
    if (got == 0) {
      return Status::IOError("'" + path + "' ends at byte " + std::to_string(offset) +
                             ": did it shrink while being read?");
    }
    cursor += got;
    offset += static_cast<uint64_t>(got);
    size -= static_cast<uint64_t>(got);
  }
  return Status::OK();
}

// A regular file open for reading; closed on destruction.
class RegularFile {
 public:
  RegularFile(int fd, uint64_t size) : fd_(fd), size_(size) {}
  RegularFile(RegularFile&& other) noexcept
      : fd_(std::exchange(other.fd_, -1)), size_(other.size_) {}
  RegularFile& operator=(RegularFile&&) = delete;
  ~RegularFile() {
    if (fd_ >= 0) ::close(fd_);
  }
  int fd() const { return fd_; }
  uint64_t size() const { return size_; }

 private:
  int fd_;
  uint64_t size_;
};

}  // namespace

std::string_view SafetensorsDTypeName(DType dtype) {
  const SafetensorsDType* entry = FindDType(dtype);
  return entry == nullptr ? "unknown" : entry->name;
}

Result<DType> DTypeFromSafetensorsName(std::string_view name) {
  for (const SafetensorsDType& entry : kSafetensorsDTypes) {
    if (entry.name == name) return entry.dtype;
  }
  return Status::InvalidArgument("unknown safetensors dtype " + QuotedName(name));
}

namespace {

// What may be replaced by a written file: nothing, a regular file, or a
// symbolic link (the rename replaces the link itself, never what it names).
Status CheckWriteTarget(const std::string& path) {
  if (path.empty()) return Status::InvalidArgument("an empty file name; nothing was written");
  if (path.back() == '/') {
    return Status::InvalidArgument("'" + path + "' names a directory; nothing was written");
  }
  struct stat target {};
  if (::lstat(path.c_str(), &target) != 0) {
    if (errno == ENOENT) return Status::OK();
    return Status::IOError("cannot examine '" + path + "': " + ErrnoText(errno));
  }
  if (S_ISDIR(target.st_mode)) {
    return Status::InvalidArgument("'" + path + "' is a directory; nothing was written");
  }
  if (!S_ISREG(target.st_mode) && !S_ISLNK(target.st_mode)) {
    return Status::InvalidArgument("'" + path +
                                   "' is not a regular file (a device, fifo or socket); nothing "
                                   "was written");
  }
  return Status::OK();
}

// Creates a new file beside `path` under an unpredictable name, never
// following a link and never opening an existing file.
Result<std::pair<int, std::string>> CreateTemporaryBeside(const std::string& path,
                                                          unsigned permissions) {
  const std::filesystem::path target(path);
  std::random_device random;
  for (int attempt = 0; attempt < 16; ++attempt) {
    char suffix[32];
    std::snprintf(suffix, sizeof(suffix), ".%08x%08x.tmp", random(), random());
    const std::string temporary =
        (target.parent_path() / ("." + target.filename().string() + suffix)).string();
    const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                          permissions);
    if (fd >= 0) {
      // Exactly the permissions asked for, whatever the umask.
      if (::fchmod(fd, permissions) != 0) {
        const Status error =
            Status::IOError("cannot set the mode of '" + temporary + "': " + ErrnoText(errno));
        ::close(fd);
        ::unlink(temporary.c_str());
        return error;
      }
      return std::pair<int, std::string>(fd, temporary);
    }
    if (errno != EEXIST) {
      return Status::IOError("cannot create a temporary file beside '" + path +
                             "': " + ErrnoText(errno));
    }
  }
  return Status::IOError("cannot find a free temporary name beside '" + path + "'");
}

}  // namespace

Status WriteSafetensors(const std::string& path, const Tree& tree,
                        const std::map<std::string, std::string>& metadata, unsigned permissions) {
  Status status = CheckWriteTarget(path);
  if (!status.ok()) return status;
  Result<EncodedFile> file = EncodeFile(tree, metadata);
  if (!file.ok()) return file.status().WithContext("safetensors file '" + path + "'");
  Result<std::pair<int, std::string>> created = CreateTemporaryBeside(path, permissions & 07777);
  if (!created.ok()) return created.status();
  const auto [fd, temp] = *created;
  status = WriteAll(fd, file->head.data(), file->head.size(), temp);
  for (const Tensor* tensor : file->tensors) {
    if (!status.ok()) break;
    status = WriteAll(fd, tensor->data(), tensor->byte_size(), temp);
  }
  if (status.ok() && ::fsync(fd) != 0) {
    status = Status::IOError("cannot sync '" + temp + "': " + ErrnoText(errno));
  }
  if (::close(fd) != 0 && status.ok()) {
    status = Status::IOError("cannot close '" + temp + "': " + ErrnoText(errno));
  }
  // The target is checked again: it may have changed since.
  if (status.ok()) status = CheckWriteTarget(path);
  if (status.ok() && ::rename(temp.c_str(), path.c_str()) != 0) {
    status = Status::IOError("cannot rename '" + temp + "' to '" + path + "': " + ErrnoText(errno));
  }
  if (!status.ok()) {
    ::unlink(temp.c_str());
    return status;
  }
  return SyncParentDirectory(path);
}

namespace {

// `path` open for reading, when it is a regular file: NotFound, IOError or
// InvalidArgument naming `source` otherwise.
Result<RegularFile> OpenRegularFile(const std::string& path, const std::string& source) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int error = errno;
    const std::string message = "cannot open " + source + ": " + ErrnoText(error);
    return error == ENOENT ? Status::NotFound(message) : Status::IOError(message);
  }
  struct stat info {};
  Status refused;
  if (::fstat(fd, &info) != 0) {
    refused = Status::IOError("cannot stat " + source + ": " + ErrnoText(errno));
  } else if (!S_ISREG(info.st_mode)) {
    refused = Status::InvalidArgument(source + " is not a regular file");
  }
  if (refused.ok()) return RegularFile(fd, static_cast<uint64_t>(info.st_size));
  ::close(fd);
  return refused;
}

}  // namespace

Result<SafetensorsFile> ReadSafetensors(const std::string& path) {
  const std::string source = "safetensors file '" + path + "'";
  Result<RegularFile> file = OpenRegularFile(path, source);
  if (!file.ok()) return file.status();
  const int fd = file->fd();
  const uint64_t file_size = file->size();

  std::string first_bytes(std::min(file_size, kLengthFieldSize), '\0');
  Status status = ReadAt(fd, 0, first_bytes.data(), first_bytes.size(), path);
  if (!status.ok()) return status;
  Result<uint64_t> header_size = HeaderLength(first_bytes, file_size, source);
  if (!header_size.ok()) return header_size.status();
  std::string header(*header_size, '\0');
  status = ReadAt(fd, kLengthFieldSize, header.data(), header.size(), path);
  if (!status.ok()) return status;
  const uint64_t data_start = kLengthFieldSize + *header_size;
  Result<ValidatedHeader> validated = ValidateHeader(header, file_size - data_start, source);
  if (!validated.ok()) return validated.status();
  header = std::string();  // freed before the tensors are allocated
  return Materialize(
      std::move(*validated),
      [&](uint64_t offset, std::byte* out, uint64_t size) {
        return ReadAt(fd, data_start + offset, out, size, path);
      },
      source);
}

Result<MappedSafetensors> MapSafetensors(const std::string& path) {
  const std::string source = "safetensors file '" + path + "'";
  Result<RegularFile> file = OpenRegularFile(path, source);
  if (!file.ok()) return file.status();
  const int fd = file->fd();
  const uint64_t file_size = file->size();
  if (file_size < kLengthFieldSize) {
    return HeaderLength(std::string(file_size, '\0'), file_size, source).status();
  }
  void* address = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
  if (address == MAP_FAILED) return Status::IOError("cannot map " + source + ": " + ErrnoText(errno));
  ::madvise(address, file_size, MADV_SEQUENTIAL);
  std::shared_ptr<const void> mapping(address,
                                      [file_size](const void* at) {
                                        ::munmap(const_cast<void*>(at), file_size);
                                      });
  const std::string_view bytes(static_cast<const char*>(address), file_size);
  Result<uint64_t> header_size = HeaderLength(bytes.substr(0, kLengthFieldSize), file_size, source);
  if (!header_size.ok()) return header_size.status();
  const uint64_t data_start = kLengthFieldSize + *header_size;
  Result<ValidatedHeader> validated =
      ValidateHeader(bytes.substr(kLengthFieldSize, *header_size), file_size - data_start, source);
  if (!validated.ok()) return validated.status();
  // The tree's leaves first view the start of the data, then each is pointed
  // at its own bytes (the nodes do not carry their paths; the entries do).
  const std::byte* data = reinterpret_cast<const std::byte*>(bytes.data()) + data_start;
  Result<Tree> tree = BuildTree(validated->nodes, [&](const ManifestNode& node) {
    return Tensor::ConstView(node.dtype, node.shape, data);
  });
  if (!tree.ok()) return tree.status().WithContext(source);
  for (const TensorEntry& entry : validated->tensors) {
    Tree* leaf = tree->Find(entry.name);
    if (leaf == nullptr || leaf->kind() != Tree::Kind::kTensor ||
        leaf->tensor().byte_size() != entry.end - entry.begin) {
      return Status::Internal(source + ": tensor " + QuotedName(entry.name) +
                              " is not where the tree should hold it");
    }
    Result<Tensor> view = Tensor::ConstView(entry.dtype, entry.shape, data + entry.begin);
    if (!view.ok()) return view.status().WithContext(source);
    *leaf = Tree::Leaf(std::move(*view));
  }
  MappedSafetensors mapped;
  mapped.tree = std::move(*tree);
  mapped.metadata = std::move(validated->metadata);
  mapped.mapping = std::move(mapping);
  return mapped;
}

Result<SafetensorsFile> ParseSafetensors(std::string_view bytes) {
  const std::string source = "safetensors input";
  Result<uint64_t> header_size =
      HeaderLength(bytes.substr(0, kLengthFieldSize), bytes.size(), source);
  if (!header_size.ok()) return header_size.status();
  const std::string_view data = bytes.substr(kLengthFieldSize + *header_size);
  Result<ValidatedHeader> validated =
      ValidateHeader(bytes.substr(kLengthFieldSize, *header_size), data.size(), source);
  if (!validated.ok()) return validated.status();
  return Materialize(
      std::move(*validated),
      [data](uint64_t offset, std::byte* out, uint64_t size) {
        std::memcpy(out, data.data() + offset, size);
        return Status::OK();
      },
      source);
}

}  // namespace ckptdb
