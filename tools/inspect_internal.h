// Private to tools/inspect*.cc: what the commands share (formatting, JSON,
// a read-only view of a store) and the commands themselves, one file per
// family: inspect_read.cc (list, show, stats, diff), inspect_maintain.cc
// (verify, repair, gc), inspect_transfer.cc (export, import). inspect.cc is
// the command line: the table of commands and how it runs them.

#ifndef CKPTDB_TOOLS_INSPECT_INTERNAL_H_
#define CKPTDB_TOOLS_INSPECT_INTERNAL_H_

#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <memory>
#include <optional>
#include <ostream>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "ckptdb/status.h"
#include "manifest.h"
#include "restore.h"
#include "store.h"
#include "utf8.h"

namespace ckptdb::inspect {

using Json = nlohmann::ordered_json;

// Appends a member without nlohmann's search for an existing key, which is
// linear per insertion (operator[] in a loop is quadratic): keys must be
// distinct.
void AppendMember(Json& object, std::string key, Json value);

// A JSON object of a map's entries, in the map's order.
template <typename Map>
Json JsonObject(const Map& map) {
  Json object = Json::object();
  for (const auto& [key, value] : map) AppendMember(object, key, value);
  return object;
}

// JSON printed indented by two spaces as it is produced, so that a document
// of a million leaves is never built whole; every string made valid UTF-8
// (EscapeInvalidUtf8). Containers: Begin, then their members (Key, then a
// value) or elements, then End.
class JsonStream {
 public:
  explicit JsonStream(std::ostream& out) : out_(out) {}
  JsonStream(const JsonStream&) = delete;
  JsonStream& operator=(const JsonStream&) = delete;
  ~JsonStream() { Flush(); }
  void BeginObject() { Open('{'); }
  void EndObject() { Close('}'); }
  void BeginArray() { Open('['); }
  void EndArray() { Close(']'); }
  // The next member's key.
  void Key(std::string_view key);
  // A whole value: a scalar, or a container printed member by member.
  void Value(const Json& value);
  // Scalars, without making a Json of them.
  void String(std::string_view text);
  void Number(uint64_t number);
  void Number(int64_t number);
  void Bool(bool flag);
  // Writes what is buffered to the stream (the destructor does too).
  void Flush() {
    out_.write(buffer_.data(), static_cast<std::streamsize>(buffer_.size()));
    buffer_.clear();
  }

 private:
  void Open(char bracket);
  void Close(char bracket);
  // The separator and indentation of an element or a member's key.
  void NextItem();
  void WriteString(std::string_view text);
  // Output is gathered and written to the stream 1 MiB at a time (a
  // stream's operator<< per token took most of the time).
  void Write(std::string_view text) {
    buffer_ += text;
    if (buffer_.size() >= (1 << 20)) Flush();
  }

  std::ostream& out_;
  std::string buffer_;
  // Per open container, whether anything went into it yet.
  std::vector<bool> filled_;
  bool after_key_ = false;  // the value that follows goes on the key's line
};

// Prints `json` (every string made valid UTF-8) indented, and a newline.
void PrintJson(std::ostream& out, const Json& json);

std::string FormatBytes(uint64_t bytes);
std::string FormatRatio(double ratio);
std::string FormatTime(int64_t unix_ns);

// Aligned columns; numbers right-aligned.
class Table {
 public:
  Table() = default;
  explicit Table(std::vector<std::string> header) { Add(std::move(header)); }
  void Add(const std::vector<std::string>& row) {
    if (widths_.size() < row.size()) widths_.resize(row.size());
    for (size_t i = 0; i < row.size(); ++i) {
      const size_t start = text_.size();
      text_ += EscapeInvalidUtf8(row[i]);  // aligned as printed
      widths_[i] = std::max(widths_[i], text_.size() - start);
      cell_ends_.push_back(text_.size());
    }
    row_ends_.push_back(cell_ends_.size());
  }
  void Print(std::ostream& out, const std::set<size_t>& right_aligned) const {
    size_t cell = 0;
    size_t start = 0;
    std::string line;
    for (size_t row_end : row_ends_) {
      line.clear();
      for (size_t i = 0; cell < row_end; ++i, ++cell) {
        const std::string_view text(text_.data() + start, cell_ends_[cell] - start);
        start = cell_ends_[cell];
        const size_t pad = widths_[i] - text.size();
        if (i > 0) line += "  ";
        if (right_aligned.count(i)) line.append(pad, ' ');
        line += text;
        if (!right_aligned.count(i) && cell + 1 < row_end) line.append(pad, ' ');
      }
      while (!line.empty() && line.back() == ' ') line.pop_back();
      out << line << "\n";
    }
  }

 private:
  // Every cell's text, one after the other (a million rows are one buffer,
  // not eight million strings): cell k ends at cell_ends_[k], row r's
  // cells end at cell_ends_[row_ends_[r] - 1].
  std::string text_;
  std::vector<size_t> cell_ends_;
  std::vector<size_t> row_ends_;
  std::vector<size_t> widths_;
};

// A string as a JSON string literal, except that bytes which are not UTF-8
// appear as \xHH (what the rest of the human form prints for them).
std::string QuotedText(std::string_view text);
// A scalar leaf's value, as text and as JSON.
std::string ScalarText(const ManifestNode& node);
Json ScalarJson(const ManifestNode& node);
uint64_t StoredBytes(const ManifestNode& node);
uint64_t LogicalBytes(const Manifest& manifest);
// A manifest that cannot be decoded: one step's problem, not the store's.
bool IsUnreadable(const Status& status);

// "step 50" or "steps 50, 60".
template <typename Steps>
std::string StepList(const Steps& steps) {
  std::string text = steps.size() == 1 ? "step " : "steps ";
  bool first = true;
  for (int64_t step : steps) {
    text += (first ? "" : ", ") + std::to_string(step);
    first = false;
  }
  return steps.empty() ? "no step" : text;
}

// A read-only view of a store for the inspecting commands.
class Inspector {
 public:
  static Result<Inspector> Open(const std::string& workdir,
                                Store::Mode mode = Store::Mode::kReadOnly) {
    Result<std::unique_ptr<Store>> store = Store::Open(workdir, mode);
    if (!store.ok()) return store.status();
    return Inspector(workdir, std::move(*store));
  }

  const Store& store() const { return *store_; }

  Result<std::vector<int64_t>> Steps() const { return store_->ListSteps(); }

  // "latest" or a number.
  Result<int64_t> ParseStep(const std::string& text) const {
    if (text == "latest") {
      Result<std::vector<int64_t>> steps = Steps();
      if (!steps.ok()) return steps.status();
      if (steps->empty()) return Status::NotFound("no checkpoint in " + workdir_);
      return steps->back();
    }
    return ParseStepNumber(text);
  }

  // Every step the library accepts, 0 to INT64_MAX, in plain decimal.
  static Result<int64_t> ParseStepNumber(const std::string& text) {
    int64_t step = 0;
    const char* end = text.data() + text.size();
    const auto [parsed_to, error] = std::from_chars(text.data(), end, step);
    const bool digits_only = !text.empty() && text.find_first_not_of("0123456789") == std::string::npos;
    if (!digits_only || error != std::errc() || parsed_to != end) {
      return Status::InvalidArgument("'" + text + "' is not a step (a number >= 0 or latest)");
    }
    return step;
  }

  Result<Manifest> ReadManifest(int64_t step) const { return ReadStepManifest(*store_, step); }


 private:
  Inspector(std::string workdir, std::unique_ptr<Store> store)
      : workdir_(std::move(workdir)), store_(std::move(store)) {}
  std::string workdir_;
  std::unique_ptr<Store> store_;
};

struct Context {
  std::ostream& out;
  std::ostream& err;
  bool json;
  bool show_progress;
};

// The commands. Each returns the error that stops it; `healthy` (verify,
// repair) whether the store is consistent.
Status List(const Context& context, const std::string& workdir);
Status Show(const Context& context, const std::string& workdir, const std::string& step_text);
Status Stats(const Context& context, const std::string& workdir);
Status Diff(const Context& context, const std::string& workdir, const std::string& from_text,
            const std::string& to_text);
Status Verify(const Context& context, const std::string& workdir,
              const std::optional<std::string>& step_text, bool* healthy);
Status Repair(const Context& context, const std::string& workdir, bool* healthy);
Status Gc(const Context& context, const std::string& workdir);
Status Export(const Context& context, const std::string& workdir, const std::string& step_text,
              const std::string& out_path, unsigned permissions);
struct ImportFlags {
  int64_t step = -1;
  std::optional<int64_t> max_to_keep;
  std::optional<int64_t> keep_period;
  bool force = false;
};
Status Import(const Context& context, const std::string& workdir, const std::string& file,
              const ImportFlags& flags);

}  // namespace ckptdb::inspect

#endif  // CKPTDB_TOOLS_INSPECT_INTERNAL_H_
