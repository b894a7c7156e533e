// safetensors headers (layout in safetensors.h, the ckptdb.tree format in
// safetensors_internal.h): both JSON texts (the header, then ckptdb.tree)
// are read by SAX state machines: no recursion, no nesting beyond what the
// format allows, and no document tree built for hostile input. Tensor names,
// metadata keys and metadata values are JSON strings, so they must be valid
// UTF-8.

#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <limits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "coding.h"
#include "manifest.h"
#include "safetensors.h"
#include "safetensors_internal.h"
#include "utf8.h"

namespace ckptdb::safetensors {
namespace {

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

}  // namespace

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


}  // namespace ckptdb::safetensors
