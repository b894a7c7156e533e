// What the inspecting commands share: formatting and JSON.

#include <algorithm>
#include <cassert>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <ctime>

#include "inspect_internal.h"

namespace ckptdb::inspect {

void AppendMember(Json& object, std::string key, Json value) {
  auto& members = static_cast<std::vector<std::pair<const std::string, Json>>&>(
      object.get_ref<Json::object_t&>());
  members.emplace_back(std::move(key), std::move(value));
}

void JsonStream::Open(char bracket) {
  NextItem();
  buffer_ += bracket;
  filled_.push_back(false);
}

void JsonStream::Close(char bracket) {
  assert(!filled_.empty() && !after_key_);
  const bool filled = filled_.back();
  filled_.pop_back();
  if (filled) {
    buffer_ += '\n';
    buffer_.append(2 * filled_.size(), ' ');
  }
  buffer_ += bracket;
}

void JsonStream::NextItem() {
  if (after_key_) {  // a member's value: on its key's line
    after_key_ = false;
    return;
  }
  if (filled_.empty()) return;  // the document itself
  Write(filled_.back() ? ",\n" : "\n");
  buffer_.append(2 * filled_.size(), ' ');
  filled_.back() = true;
}

void JsonStream::Key(std::string_view key) {
  NextItem();
  WriteString(key);
  buffer_ += ": ";
  after_key_ = true;
}

void JsonStream::WriteString(std::string_view text) {
  // Most strings (paths, names) are ASCII with nothing to escape: copied as
  // they are. The others are quoted as nlohmann prints strings (as
  // QuotedText does), after EscapeInvalidUtf8.
  const bool plain = std::none_of(text.begin(), text.end(), [](char c) {
    const auto byte = static_cast<unsigned char>(c);
    return byte < 0x20 || byte >= 0x80 || c == '"' || c == '\\';
  });
  if (!plain) {
    Write(Json(EscapeInvalidUtf8(text)).dump());
    return;
  }
  buffer_ += '"';
  buffer_ += text;
  Write("\"");
}

void JsonStream::String(std::string_view text) {
  NextItem();
  WriteString(text);
}

void JsonStream::Number(uint64_t number) {
  NextItem();
  Write(std::to_string(number));
}

void JsonStream::Number(int64_t number) {
  NextItem();
  Write(std::to_string(number));
}

void JsonStream::Bool(bool flag) {
  NextItem();
  Write(flag ? "true" : "false");
}

void JsonStream::Value(const Json& value) {
  switch (value.type()) {
    case Json::value_t::object:
      BeginObject();
      for (const auto& [key, member] : value.items()) {
        Key(key);
        Value(member);
      }
      EndObject();
      return;
    case Json::value_t::array:
      BeginArray();
      for (const Json& element : value) Value(element);
      EndArray();
      return;
    case Json::value_t::string:
      String(value.get_ref<const std::string&>());
      return;
    default:  // numbers, booleans, null: as nlohmann prints them
      NextItem();
      Write(value.dump());
  }
}

void PrintJson(std::ostream& out, const Json& json) {
  JsonStream stream(out);
  stream.Value(json);
  stream.Flush();
  out << "\n";
}

std::string FormatBytes(uint64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  size_t unit = 0;
  while (value >= 1024 && unit + 1 < std::size(kUnits)) {
    value /= 1024;
    ++unit;
  }
  char text[32];
  if (unit == 0) {
    std::snprintf(text, sizeof(text), "%" PRIu64 " B", bytes);
  } else {
    std::snprintf(text, sizeof(text), "%.1f %s", value, kUnits[unit]);
  }
  return text;
}

std::string FormatRatio(double ratio) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.2fx", ratio);
  return text;
}

std::string FormatTime(int64_t unix_ns) {
  const std::time_t seconds = static_cast<std::time_t>(unix_ns / 1000000000);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &utc);
  return text;
}

std::string QuotedText(std::string_view text) {
  std::string quoted = "\"";
  size_t run_start = 0;
  auto flush_run = [&](size_t end) {
    const std::string run = Json(std::string(text.substr(run_start, end - run_start))).dump();
    quoted.append(run, 1, run.size() - 2);  // without the quotes
  };
  for (size_t i = 0; i < text.size();) {
    const size_t length = Utf8SequenceLength(text, i);
    if (length > 0) {
      i += length;
      continue;
    }
    flush_run(i);
    quoted += EscapeInvalidUtf8(text.substr(i, 1));
    run_start = ++i;
  }
  flush_run(text.size());
  return quoted + "\"";
}

std::string ScalarText(const ManifestNode& node) {
  switch (node.kind) {
    case Tree::Kind::kInt: return std::to_string(node.int_value);
    case Tree::Kind::kBool: return node.int_value ? "true" : "false";
    case Tree::Kind::kFloat: {
      char text[40];
      std::snprintf(text, sizeof(text), "%.17g", node.float_value);
      return text;
    }
    case Tree::Kind::kString: return QuotedText(node.string_value);
    default: return "";
  }
}

Json ScalarJson(const ManifestNode& node) {
  switch (node.kind) {
    case Tree::Kind::kInt: return node.int_value;
    case Tree::Kind::kBool: return node.int_value != 0;
    // JSON has no NaN or infinity: those become strings.
    case Tree::Kind::kFloat:
      return std::isfinite(node.float_value) ? Json(node.float_value) : Json(ScalarText(node));
    case Tree::Kind::kString: return node.string_value;
    default: return nullptr;
  }
}

uint64_t StoredBytes(const ManifestNode& node) {
  uint64_t total = node.inline_bytes.size();  // a tiny tensor's bytes, in the manifest
  for (const ChunkRef& chunk : node.chunks) total += chunk.stored_size;
  return total;
}

bool IsUnreadable(const Status& status) {
  return status.IsCorruption() || status.code() == Status::Code::kNotSupported;
}

uint64_t LogicalBytes(const Manifest& manifest) {
  uint64_t total = 0;
  for (const ManifestNode& node : manifest.nodes) total += node.byte_size;
  return total;
}

}  // namespace ckptdb::inspect
