#include "inspect.h"

#include <nlohmann/json.hpp>

#include <charconv>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include "ckptdb/checkpointer.h"
#include "garbage_collector.h"
#include "manifest.h"
#include "repair.h"
#include "restore.h"
#include "utf8.h"
#include "safetensors.h"
#include "store.h"
#include "verifier.h"

namespace ckptdb {
namespace {

using Json = nlohmann::ordered_json;

// Appends a member without nlohmann's search for an existing key, which is
// linear per insertion (operator[] in a loop is quadratic): keys must be
// distinct.
void AppendMember(Json& object, std::string key, Json value) {
  auto& members = static_cast<std::vector<std::pair<const std::string, Json>>&>(
      object.get_ref<Json::object_t&>());
  members.emplace_back(std::move(key), std::move(value));
}

// A JSON object of a map's entries, in the map's order.
template <typename Map>
Json JsonObject(const Map& map) {
  Json object = Json::object();
  for (const auto& [key, value] : map) AppendMember(object, key, value);
  return object;
}

// `json` with every string, keys included, made valid UTF-8
// (EscapeInvalidUtf8): nlohmann refuses to print anything else.
Json Printable(const Json& json) {
  switch (json.type()) {
    case Json::value_t::string:
      return EscapeInvalidUtf8(json.get_ref<const std::string&>());
    case Json::value_t::array: {
      Json array = Json::array();
      for (const Json& element : json) array.push_back(Printable(element));
      return array;
    }
    case Json::value_t::object: {
      Json object = Json::object();
      for (const auto& [key, value] : json.items()) {
        AppendMember(object, EscapeInvalidUtf8(key), Printable(value));
      }
      return object;
    }
    default:
      return json;
  }
}

void PrintJson(std::ostream& out, const Json& json) { out << Printable(json).dump(2) << "\n"; }

// Passes text through to `target`, writing each byte that is not part of
// well-formed UTF-8 as \xHH, so that whatever a store or a command line
// holds, ckpt-inspect prints valid UTF-8. A sequence cut by the end of one
// write waits for the next.
class EscapingBuffer : public std::streambuf {
 public:
  explicit EscapingBuffer(std::ostream& target) : target_(target) {}
  ~EscapingBuffer() override { Drain(true); }

 protected:
  int_type overflow(int_type c) override {
    if (!traits_type::eq_int_type(c, traits_type::eof())) pending_ += traits_type::to_char_type(c);
    Drain(false);
    return traits_type::not_eof(c);
  }
  std::streamsize xsputn(const char* text, std::streamsize count) override {
    pending_.append(text, static_cast<size_t>(count));
    Drain(false);
    return count;
  }
  int sync() override {
    Drain(true);
    target_.flush();
    return 0;
  }

 private:
  // Bytes at the end of `text` that begin a sequence still incomplete.
  static size_t IncompleteTail(std::string_view text) {
    for (size_t back = 1; back <= 3 && back <= text.size(); ++back) {
      const auto byte = static_cast<unsigned char>(text[text.size() - back]);
      if ((byte & 0xc0) == 0x80) continue;  // a continuation byte: look further back
      const size_t needed = byte >= 0xf0 ? 4 : byte >= 0xe0 ? 3 : byte >= 0xc2 ? 2 : 1;
      return needed > back ? back : 0;
    }
    return 0;
  }
  void Drain(bool at_end) {
    const size_t keep = at_end ? 0 : IncompleteTail(pending_);
    target_ << EscapeInvalidUtf8(std::string_view(pending_).substr(0, pending_.size() - keep));
    pending_.erase(0, pending_.size() - keep);
  }

  std::ostream& target_;
  std::string pending_;
};

constexpr char kUsage[] = R"(usage: ckpt-inspect [--json] COMMAND ARGS...

Looks inside a ckptdb store. Read-only commands work while a trainer writes.

commands:
  list WORKDIR                        the steps held, with sizes and metrics
  show WORKDIR STEP                   one step's tree: paths, dtypes, shapes, sizes, chunks
  stats WORKDIR                       logical vs stored bytes, compression, dedup, garbage
  verify WORKDIR [STEP]               re-hash every chunk, check every reference
  gc WORKDIR                          delete unreferenced chunks, give their space back
  repair WORKDIR                      salvage a damaged store: keep every intact step
  diff WORKDIR STEP STEP              what changed between two steps
  export WORKDIR STEP --out FILE      write a step as a .safetensors file
  import WORKDIR FILE --step N        store a .safetensors file as step N

STEP is a number or "latest". --json prints one JSON document (schema in
doc/ckpt-inspect.md). `ckpt-inspect COMMAND --help` describes a command.
Exit codes: 0 ok; 1 the store has a problem or the operation failed; 2 usage.
)";

struct CommandHelp {
  const char* name;
  const char* usage;
  const char* text;
};

constexpr CommandHelp kCommands[] = {
    {"list", "list WORKDIR",
     "Lists the steps held: commit time, logical size (the tensors' bytes), stored size (their\n"
     "chunks, compressed, before dedup), tensor count and metrics.\n"},
    {"show", "show WORKDIR STEP",
     "Shows one step's tree: every leaf's path, kind, dtype, shape, logical and stored size,\n"
     "chunk count, and how many of its chunks other steps or leaves share (dedup). Scalars\n"
     "show their values. Reads the manifest only.\n"},
    {"stats", "stats WORKDIR",
     "Store-wide figures: logical bytes of all steps, the unique chunks' raw and stored bytes,\n"
     "compression and dedup ratios, garbage (chunks no step references) and bytes on disk.\n"
     "Reads manifests and the chunk index, never chunk bytes.\n"},
    {"verify", "verify WORKDIR [STEP]",
     "Reads every chunk the step (or every step) references, decodes it and checks its\n"
     "digest; checks every manifest and that every chunk file is present. Exit code 1 when\n"
     "anything is wrong, with one line per problem naming the step, the tensor, the chunk\n"
     "and its file, then each damaged file with the steps that use it.\n"},
    {"gc", "gc WORKDIR",
     "Garbage collection: deletes chunks no step references and gives their disk space back.\n"
     "Opens the store for writing (fails if a trainer has it open; its own GC runs after\n"
     "retention anyway).\n"},
    {"repair", "repair WORKDIR",
     "Brings a damaged store back to a consistent, writable state, keeping every step whose\n"
     "manifest and chunks can still be read intact. On a healthy store it changes nothing and\n"
     "says so. Otherwise it reads every record it can from every table file and write-ahead\n"
     "log (around bad blocks), rebuilds the store beside the old one in\n"
     "WORKDIR/repair-<UTC time>/ (intact chunk files kept as they are, every chunk read back\n"
     "and re-hashed, damaged ones dropped), then swaps it in; the replaced files stay in\n"
     "that folder's old/ (the newest two repair folders are kept). Prints what it kept and\n"
     "what it dropped and why. Exit code 0 when the store is consistent afterwards, 1 when\n"
     "nothing could be salvaged or repair failed. Fails (changing nothing) while a trainer or\n"
     "a reader has the store open.\n"},
    {"diff", "diff WORKDIR STEP STEP",
     "Compares two steps path by path: added, removed, changed (kind, dtype, shape, value or\n"
     "bytes, by chunk digests: no tensor data is read) and unchanged leaves.\n"},
    {"export", "export WORKDIR STEP --out FILE [--mode OCTAL]",
     "Writes the step as a safetensors file: each tensor named by its tree path; the rest of\n"
     "the tree (lists, scalars) in __metadata__[\"ckptdb.tree\"], so import restores it\n"
     "bit-exact. Writes FILE only: a new file beside it under an unpredictable name, synced,\n"
     "then renamed over FILE. Refuses (nothing written) an empty FILE, a directory, a device,\n"
     "fifo or socket, and any path inside a store. FILE gets mode 600 unless --mode says\n"
     "otherwise (octal, e.g. --mode 644).\n"},
    {"import", "import WORKDIR FILE --step N [--max-to-keep K] [--keep-period P] [--force]",
     "Stores a safetensors file (from ckptdb or any other tool) as step N, creating the store\n"
     "if needed. --max-to-keep and --keep-period are retention options for this save\n"
     "(default: keep every step). --force saves even when N is not above the latest step.\n"},
};

const CommandHelp* FindCommand(const std::string& name) {
  for (const CommandHelp& command : kCommands) {
    if (name == command.name) return &command;
  }
  return nullptr;
}

// A usage error: the message and the command it concerns ("" for global).
struct UsageError {
  std::string message;
};

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

// Aligned columns; numbers right-aligned.
class Table {
 public:
  Table() = default;
  explicit Table(std::vector<std::string> header) { rows_.push_back(std::move(header)); }
  void Add(std::vector<std::string> row) {
    for (std::string& cell : row) cell = EscapeInvalidUtf8(cell);  // aligned as printed
    rows_.push_back(std::move(row));
  }
  void Print(std::ostream& out, const std::set<size_t>& right_aligned) const {
    std::vector<size_t> widths;
    for (const auto& row : rows_) {
      widths.resize(std::max(widths.size(), row.size()));
      for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
    }
    for (const auto& row : rows_) {
      std::string line;
      for (size_t i = 0; i < row.size(); ++i) {
        const size_t pad = widths[i] - row[i].size();
        if (i > 0) line += "  ";
        if (right_aligned.count(i)) line += std::string(pad, ' ');
        line += row[i];
        if (!right_aligned.count(i) && i + 1 < row.size()) line += std::string(pad, ' ');
      }
      while (!line.empty() && line.back() == ' ') line.pop_back();
      out << line << "\n";
    }
  }

 private:
  std::vector<std::vector<std::string>> rows_;
};

// A string as a JSON string literal, except that bytes which are not UTF-8
// appear as \xHH (what the rest of the human form prints for them).
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
  uint64_t total = 0;
  for (const ChunkRef& chunk : node.chunks) total += chunk.stored_size;
  return total;
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

// A manifest that cannot be decoded: one step's problem, not the store's.
bool IsUnreadable(const Status& status) {
  return status.IsCorruption() || status.code() == Status::Code::kNotSupported;
}

uint64_t LogicalBytes(const Manifest& manifest) {
  uint64_t total = 0;
  for (const ManifestNode& node : manifest.nodes) total += node.byte_size;
  return total;
}

Status List(const Context& context, const std::string& workdir) {
  Result<Inspector> inspector = Inspector::Open(workdir);
  if (!inspector.ok()) return inspector.status();
  Result<std::vector<int64_t>> steps = inspector->Steps();
  if (!steps.ok()) return steps.status();
  Json json_steps = Json::array();
  Table table({"STEP", "COMMITTED (UTC)", "LOGICAL", "STORED", "TENSORS", "METRICS"});
  for (int64_t step : *steps) {
    Result<Manifest> manifest = inspector->ReadManifest(step);
    if (manifest.status().IsNotFound()) continue;  // deleted by the writer meanwhile
    if (IsUnreadable(manifest.status())) {
      json_steps.push_back({{"step", step}, {"error", manifest.status().ToString()}});
      table.Add({std::to_string(step), "unreadable: " + manifest.status().ToString()});
      continue;
    }
    if (!manifest.ok()) return manifest.status();
    uint64_t stored = 0;
    uint64_t tensors = 0;
    for (const ManifestNode& node : manifest->nodes) {
      stored += StoredBytes(node);
      tensors += node.kind == Tree::Kind::kTensor;
    }
    std::string metrics_text;
    for (const auto& [name, value] : manifest->metrics) {
      char number[32];
      std::snprintf(number, sizeof(number), "%.6g", value);
      metrics_text += (metrics_text.empty() ? "" : " ") + name + "=" + number;
    }
    const Json metrics = JsonObject(manifest->metrics);
    const uint64_t logical = LogicalBytes(*manifest);
    json_steps.push_back({{"step", step},
                          {"commit_time", FormatTime(manifest->commit_time_ns)},
                          {"commit_time_ns", manifest->commit_time_ns},
                          {"logical_bytes", logical},
                          {"stored_bytes", stored},
                          {"tensors", tensors},
                          {"metrics", metrics}});
    table.Add({std::to_string(step), FormatTime(manifest->commit_time_ns), FormatBytes(logical),
               FormatBytes(stored), std::to_string(tensors), metrics_text});
  }
  if (context.json) {
    PrintJson(context.out, Json{{"workdir", workdir}, {"steps", json_steps}});
  } else if (json_steps.empty()) {
    context.out << "no checkpoint in " << workdir << "\n";
  } else {
    table.Print(context.out, {0, 2, 3, 4});
  }
  return Status::OK();
}

// How many manifests (other steps) or leaves reference each chunk.
Result<std::map<ChunkDigest, uint32_t>> ChunkReferenceCounts(const Inspector& inspector) {
  std::map<ChunkDigest, uint32_t> counts;
  Result<std::vector<int64_t>> steps = inspector.Steps();
  if (!steps.ok()) return steps.status();
  for (int64_t step : *steps) {
    Result<Manifest> manifest = inspector.ReadManifest(step);
    if (manifest.status().IsNotFound() || IsUnreadable(manifest.status())) continue;
    if (!manifest.ok()) return manifest.status();
    for (const ManifestNode& node : manifest->nodes) {
      for (const ChunkRef& chunk : node.chunks) ++counts[chunk.digest];
    }
  }
  return counts;
}

Status Show(const Context& context, const std::string& workdir, const std::string& step_text) {
  Result<Inspector> inspector = Inspector::Open(workdir);
  if (!inspector.ok()) return inspector.status();
  Result<int64_t> step = inspector->ParseStep(step_text);
  if (!step.ok()) return step.status();
  Result<Manifest> manifest = inspector->ReadManifest(*step);
  if (!manifest.ok()) return manifest.status();
  Result<std::map<ChunkDigest, uint32_t>> references = ChunkReferenceCounts(*inspector);
  if (!references.ok()) return references.status();

  Json leaves = Json::array();
  Table table({"PATH", "KIND", "DTYPE", "SHAPE | VALUE", "LOGICAL", "STORED", "CHUNKS", "SHARED"});
  uint64_t logical = 0;
  uint64_t stored = 0;
  for (const ManifestNode& node : manifest->nodes) {
    if (node.kind == Tree::Kind::kMap || node.kind == Tree::Kind::kList) continue;
    const std::string path = node.path.empty() ? "(root)" : node.path;
    if (node.kind != Tree::Kind::kTensor) {
      leaves.push_back({{"path", node.path},
                        {"kind", std::string(KindName(node.kind))},
                        {"value", ScalarJson(node)}});
      table.Add({path, std::string(KindName(node.kind)), "", ScalarText(node)});
      continue;
    }
    // A chunk is shared when it is referenced more than once anywhere.
    uint32_t shared = 0;
    for (const ChunkRef& chunk : node.chunks) shared += (*references)[chunk.digest] > 1;
    const uint64_t leaf_stored = StoredBytes(node);
    logical += node.byte_size;
    stored += leaf_stored;
    leaves.push_back({{"path", node.path},
                      {"kind", "tensor"},
                      {"dtype", std::string(DTypeName(node.dtype))},
                      {"shape", node.shape},
                      {"logical_bytes", node.byte_size},
                      {"stored_bytes", leaf_stored},
                      {"chunks", node.chunks.size()},
                      {"shared_chunks", shared}});
    // A tensor saved as shards: how many boxes they covered.
    std::string shape = ShapeString(node.shape);
    if (node.boxed) {
      leaves.back()["saved_boxes"] = node.boxes.size();
      shape += " in " + std::to_string(node.boxes.size()) + " boxes";
    }
    table.Add({path, "tensor", std::string(DTypeName(node.dtype)), shape,
               FormatBytes(node.byte_size), FormatBytes(leaf_stored),
               std::to_string(node.chunks.size()), std::to_string(shared)});
  }
  const Json metrics = JsonObject(manifest->metrics);
  const Json user_metadata = JsonObject(manifest->user_metadata);
  if (context.json) {
    PrintJson(context.out, Json{{"workdir", workdir},
                        {"step", *step},
                        {"commit_time", FormatTime(manifest->commit_time_ns)},
                        {"commit_time_ns", manifest->commit_time_ns},
                        {"logical_bytes", logical},
                        {"stored_bytes", stored},
                        {"metrics", metrics},
                        {"user_metadata", user_metadata},
                        {"leaves", leaves}});
    return Status::OK();
  }
  context.out << "step " << *step << " of " << workdir << ", committed "
              << FormatTime(manifest->commit_time_ns) << "\n";
  for (const auto& [name, value] : manifest->metrics) {
    context.out << "metric " << name << " = " << value << "\n";
  }
  for (const auto& [key, value] : manifest->user_metadata) {
    context.out << "metadata " << key << " = " << value << "\n";
  }
  table.Add({"total", "", "", "", FormatBytes(logical), FormatBytes(stored)});
  table.Print(context.out, {4, 5, 6, 7});
  context.out << "(STORED: the leaf's chunks as compressed, before dedup; SHARED: chunks also "
                 "referenced by other leaves or steps)\n";
  return Status::OK();
}

uint64_t DirectoryBytes(const std::string& dir) {
  uint64_t total = 0;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    std::error_code size_error;
    if (it->is_regular_file(size_error)) {
      const uint64_t size = it->file_size(size_error);
      if (!size_error) total += size;
    }
  }
  return total;
}

Status Stats(const Context& context, const std::string& workdir) {
  Result<Inspector> inspector = Inspector::Open(workdir);
  if (!inspector.ok()) return inspector.status();
  Result<std::vector<int64_t>> steps = inspector->Steps();
  if (!steps.ok()) return steps.status();
  uint64_t logical = 0;
  uint64_t referenced_stored = 0;  // before dedup
  size_t held = 0;
  size_t unreadable = 0;
  for (int64_t step : *steps) {
    Result<Manifest> manifest = inspector->ReadManifest(step);
    if (manifest.status().IsNotFound()) continue;
    if (IsUnreadable(manifest.status())) {
      ++unreadable;
      continue;
    }
    if (!manifest.ok()) return manifest.status();
    ++held;
    logical += LogicalBytes(*manifest);
    for (const ManifestNode& node : manifest->nodes) referenced_stored += StoredBytes(node);
  }
  uint64_t unique_raw = 0;
  uint64_t unique_stored = 0;
  uint64_t chunks = 0;
  Status status = inspector->store().ForEachIndexEntry([&](const IndexEntry& entry) {
    ++chunks;
    unique_raw += entry.location.raw_size;
    unique_stored += entry.location.stored_size;
    return Status::OK();
  });
  if (!status.ok()) return status;
  // Garbage is unknown while a manifest is unreadable: its chunks may be live.
  Result<GcStats> garbage =
      unreadable > 0 ? Result<GcStats>(GcStats{}) : MeasureGarbage(inspector->store());
  if (!garbage.ok()) return garbage.status();
  uint64_t chunk_files = 0;
  for (const ChunkFile& file : inspector->store().ChunkFiles()) chunk_files += file.bytes;
  const uint64_t on_disk = DirectoryBytes(workdir);
  const uint64_t live_raw_estimate = unique_raw;  // includes garbage chunks' raw bytes
  const double compression =
      unique_stored > 0 ? static_cast<double>(unique_raw) / static_cast<double>(unique_stored) : 1;
  const double dedup =
      live_raw_estimate > 0 ? static_cast<double>(logical) / static_cast<double>(unique_raw) : 1;
  const double overall =
      on_disk > 0 ? static_cast<double>(logical) / static_cast<double>(on_disk) : 1;
  if (context.json) {
    PrintJson(context.out, Json{{"workdir", workdir},
                        {"steps", held},
                        {"unreadable_steps", unreadable},
                        {"logical_bytes", logical},
                        {"chunks", chunks},
                        {"chunks_raw_bytes", unique_raw},
                        {"chunks_stored_bytes", unique_stored},
                        {"referenced_stored_bytes", referenced_stored},
                        {"compression_ratio", compression},
                        {"dedup_ratio", dedup},
                        {"garbage_chunks", garbage->chunks_scanned - garbage->chunks_live},
                        {"garbage_bytes", garbage->garbage_bytes},
                        {"chunk_file_bytes", chunk_files},
                        {"disk_bytes", on_disk},
                        {"logical_over_disk", overall}});
    return Status::OK();
  }
  Table table;
  table.Add({"steps", std::to_string(held)});
  if (unreadable > 0) {
    table.Add({"unreadable steps", std::to_string(unreadable) + " (run verify; garbage unknown)"});
  }
  table.Add({"logical bytes (all steps)", FormatBytes(logical)});
  table.Add({"unique chunks", std::to_string(chunks)});
  table.Add({"  raw", FormatBytes(unique_raw)});
  table.Add({"  stored", FormatBytes(unique_stored)});
  table.Add({"compression (raw / stored)", FormatRatio(compression)});
  table.Add({"dedup (logical / unique raw)", FormatRatio(dedup)});
  table.Add({"garbage", std::to_string(garbage->chunks_scanned - garbage->chunks_live) +
                            " chunks, " + FormatBytes(garbage->garbage_bytes)});
  table.Add({"chunk files", FormatBytes(chunk_files)});
  table.Add({"on disk (all files)", FormatBytes(on_disk)});
  table.Add({"logical / on disk", FormatRatio(overall)});
  table.Print(context.out, {});
  return Status::OK();
}

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

// Verify returns whether the store is healthy through `healthy`.
Status Verify(const Context& context, const std::string& workdir,
              const std::optional<std::string>& step_text, bool* healthy) {
  Result<Inspector> inspector = Inspector::Open(workdir);
  // A store readers refuse is examined as it lies on disk, so that the
  // report names the damaged files and the steps that use them.
  std::string open_problem;
  if (!inspector.ok() && inspector.status().code() == Status::Code::kCorruption) {
    open_problem = inspector.status().ToString();
    inspector = Inspector::Open(workdir, Store::Mode::kDiagnose);
    if (!inspector.ok()) {
      *healthy = false;
      if (context.json) {
        PrintJson(context.out, Json{{"workdir", workdir}, {"ok", false}, {"problems", {open_problem}}});
      } else {
        context.out << "problem: " << open_problem << "\nFAILED: the store cannot be read\n";
      }
      return Status::OK();
    }
  }
  if (!inspector.ok()) return inspector.status();
  std::optional<int64_t> step;
  if (step_text.has_value()) {
    Result<int64_t> parsed = inspector->ParseStep(*step_text);
    if (!parsed.ok()) return parsed.status();
    step = *parsed;
  }
  auto progress = [&](uint64_t done, uint64_t total) {
    if (!context.show_progress) return;
    context.err << "\rverifying: " << done << " / " << total << " chunks" << std::flush;
    if (done == total) context.err << "\n";
  };
  Result<VerifyReport> report = VerifyStore(inspector->store(), step, progress);
  if (!report.ok()) return report.status();
  if (!open_problem.empty()) report->problems.insert(report->problems.begin(), open_problem);
  *healthy = report->ok();
  Json damaged_files = Json::array();
  for (const auto& [file, steps] : report->damaged_files) {
    damaged_files.push_back({{"file", file}, {"steps", steps}});
  }
  Json damaged_steps = Json::array();
  for (const auto& [damaged, why] : report->damaged_steps) {
    damaged_steps.push_back({{"step", damaged}, {"problem", why}});
  }
  if (context.json) {
    PrintJson(context.out, Json{{"workdir", workdir},
                        {"ok", report->ok()},
                        {"steps_checked", report->steps_checked},
                        {"chunks_checked", report->chunks_checked},
                        {"bytes_checked", report->bytes_checked},
                        {"problems", report->problems},
                        {"damaged_files", damaged_files},
                        {"damaged_steps", damaged_steps}});
    return Status::OK();
  }
  for (const std::string& problem : report->problems) context.out << "problem: " << problem << "\n";
  for (const auto& [file, steps] : report->damaged_files) {
    context.out << "damaged: " << file << ", used by " << StepList(steps) << "\n";
  }
  context.out << (report->ok() ? "ok" : "FAILED") << ": " << report->steps_checked << " steps, "
              << report->chunks_checked << " chunks (" << FormatBytes(report->bytes_checked)
              << ") checked, " << report->problems.size() << " problems\n";
  return Status::OK();
}

// Repair returns through `healthy` whether anything could be salvaged.
Status Repair(const Context& context, const std::string& workdir, bool* healthy) {
  Result<RepairReport> report = RepairStore(workdir);
  if (!report.ok()) return report.status();
  *healthy = !report->salvaged_nothing();
  if (context.json) {
    Json dropped = Json::array();
    for (const auto& [step, why] : report->dropped_steps) {
      dropped.push_back({{"step", step}, {"reason", why}});
    }
    PrintJson(context.out, Json{{"workdir", workdir},
                        {"changed", report->changed},
                        {"backup_dir", report->backup_dir},
                        {"findings", report->findings},
                        {"kept_steps", report->kept_steps},
                        {"dropped_steps", dropped},
                        {"chunks_kept", report->chunks_kept},
                        {"chunks_dropped", report->chunks_dropped},
                        {"chunk_files_carried", report->chunk_files_carried},
                        {"chunk_files_rewritten", report->chunk_files_rewritten},
                        {"backups_removed", report->backups_removed}});
    return Status::OK();
  }
  if (!report->changed) {
    context.out << "healthy: nothing to repair, nothing changed (" << StepList(report->kept_steps)
                << ")\n";
    return Status::OK();
  }
  for (const std::string& finding : report->findings) context.out << "found: " << finding << "\n";
  for (const auto& [step, why] : report->dropped_steps) {
    context.out << "dropped: step " << step << ": " << why << "\n";
  }
  context.out << "kept: " << StepList(report->kept_steps) << "\n";
  if (!report->backup_dir.empty()) {
    context.out << "chunks: " << report->chunks_kept << " kept, each read back intact; "
                << report->chunks_dropped << " damaged dropped; chunk files: "
                << report->chunk_files_carried << " kept as they were, "
                << report->chunk_files_rewritten << " copied without their damage\n";
    context.out << "the replaced files are in " << report->backup_dir << "\n";
  }
  for (const std::string& removed : report->backups_removed) {
    context.out << "removed the older repair folder " << removed << "\n";
  }
  context.out << (*healthy ? "repaired" : "FAILED: nothing could be salvaged") << "\n";
  return Status::OK();
}

Status Gc(const Context& context, const std::string& workdir) {
  CheckpointerOptions options;
  options.max_to_keep = std::nullopt;  // gc never prunes steps
  // gc never creates a store: a missing or empty directory has none (a
  // writer's open refuses any other directory that is not a store).
  std::error_code ec;
  if (std::filesystem::is_empty(workdir, ec) || ec) {
    return Status::NotFound("no ckptdb store in " + workdir);
  }
  Result<std::unique_ptr<Checkpointer>> checkpointer = Checkpointer::Open(workdir, options);
  if (!checkpointer.ok()) return checkpointer.status();
  Result<GcStats> stats = (*checkpointer)->CollectGarbage();
  if (!stats.ok()) return stats.status();
  Status closed = (*checkpointer)->Close();
  if (!closed.ok()) return closed;
  if (context.json) {
    PrintJson(context.out, Json{{"workdir", workdir},
                        {"chunks_scanned", stats->chunks_scanned},
                        {"chunks_live", stats->chunks_live},
                        {"chunks_deleted", stats->chunks_deleted},
                        {"live_bytes", stats->live_bytes},
                        {"garbage_bytes", stats->garbage_bytes},
                        {"files_deleted", stats->generations_dropped},
                        {"files_rewritten", stats->generations_rewritten},
                        {"bytes_freed", stats->bytes_freed},
                        {"bytes_rewritten", stats->bytes_rewritten},
                        {"seconds", stats->seconds}});
    return Status::OK();
  }
  context.out << "deleted " << stats->chunks_deleted << " of " << stats->chunks_scanned
              << " chunks (" << FormatBytes(stats->garbage_bytes) << "); removed "
              << stats->generations_dropped << " chunk files, rewrote "
              << stats->generations_rewritten << "; freed "
              << FormatBytes(stats->bytes_freed -
                             std::min(stats->bytes_freed, stats->bytes_rewritten))
              << " in " << stats->seconds << " s\n";
  return Status::OK();
}

Status Diff(const Context& context, const std::string& workdir, const std::string& from_text,
            const std::string& to_text) {
  Result<Inspector> inspector = Inspector::Open(workdir);
  if (!inspector.ok()) return inspector.status();
  Result<int64_t> from = inspector->ParseStep(from_text);
  if (!from.ok()) return from.status();
  Result<int64_t> to = inspector->ParseStep(to_text);
  if (!to.ok()) return to.status();
  Result<Manifest> before = inspector->ReadManifest(*from);
  if (!before.ok()) return before.status();
  Result<Manifest> after = inspector->ReadManifest(*to);
  if (!after.ok()) return after.status();

  std::map<std::string, const ManifestNode*> old_leaves;
  for (const ManifestNode& node : before->nodes) {
    if (node.kind != Tree::Kind::kMap && node.kind != Tree::Kind::kList) {
      old_leaves[node.path] = &node;
    }
  }
  Json changes = Json::array();
  Table table({"CHANGE", "PATH", "DETAIL"});
  size_t unchanged = 0;
  auto record = [&](const std::string& change, const std::string& path, const std::string& detail,
                    Json extra) {
    extra["change"] = change;
    extra["path"] = path;
    changes.push_back(extra);
    table.Add({change, path.empty() ? "(root)" : path, detail});
  };
  for (const ManifestNode& node : after->nodes) {
    if (node.kind == Tree::Kind::kMap || node.kind == Tree::Kind::kList) continue;
    auto found = old_leaves.find(node.path);
    if (found == old_leaves.end()) {
      record("added", node.path, std::string(KindName(node.kind)), Json::object());
      continue;
    }
    const ManifestNode& old = *found->second;
    old_leaves.erase(found);
    if (old.kind != node.kind) {
      record("changed", node.path,
             "kind " + std::string(KindName(old.kind)) + " -> " + std::string(KindName(node.kind)),
             Json::object());
    } else if (node.kind != Tree::Kind::kTensor) {
      if (ScalarText(old) != ScalarText(node)) {
        record("changed", node.path, ScalarText(old) + " -> " + ScalarText(node),
               {{"from", ScalarJson(old)}, {"to", ScalarJson(node)}});
      } else {
        ++unchanged;
      }
    } else if (old.dtype != node.dtype || old.shape != node.shape) {
      record("changed", node.path,
             std::string(DTypeName(old.dtype)) + ShapeString(old.shape) + " -> " +
                 std::string(DTypeName(node.dtype)) + ShapeString(node.shape),
             Json::object());
    } else {
      // Chunks compare position by position when both steps cut the tensor
      // alike; cut differently (another chunk_size_bytes, other shards),
      // equal digests anywhere still mean equal bytes.
      std::set<ChunkDigest> old_digests;
      for (const ChunkRef& chunk : old.chunks) old_digests.insert(chunk.digest);
      const bool same_cut = old.chunks.size() == node.chunks.size() && old.boxed == node.boxed &&
                            std::equal(old.boxes.begin(), old.boxes.end(), node.boxes.begin(),
                                       node.boxes.end(),
                                       [](const ManifestBox& a, const ManifestBox& b) {
                                         return a.box == b.box && a.chunk_count == b.chunk_count;
                                       });
      uint64_t changed_bytes = 0;
      size_t changed_chunks = 0;
      for (size_t k = 0; k < node.chunks.size(); ++k) {
        const bool same = same_cut ? node.chunks[k].digest == old.chunks[k].digest &&
                                         node.chunks[k].raw_size == old.chunks[k].raw_size
                                   : old_digests.count(node.chunks[k].digest) != 0;
        if (!same) {
          ++changed_chunks;
          changed_bytes += node.chunks[k].raw_size;
        }
      }
      if (changed_chunks == 0) {
        ++unchanged;
      } else {
        record("changed", node.path,
               std::to_string(changed_chunks) + " of " + std::to_string(node.chunks.size()) +
                   " chunks (" + FormatBytes(changed_bytes) + ")",
               {{"changed_chunks", changed_chunks},
                {"chunks", node.chunks.size()},
                {"changed_bytes", changed_bytes}});
      }
    }
  }
  for (const auto& [path, node] : old_leaves) {
    record("removed", path, std::string(KindName(node->kind)), Json::object());
  }
  if (context.json) {
    PrintJson(context.out, Json{{"workdir", workdir},
                        {"from", *from},
                        {"to", *to},
                        {"unchanged", unchanged},
                        {"changes", changes}});
    return Status::OK();
  }
  context.out << "step " << *from << " -> step " << *to << ": " << changes.size()
              << " leaves differ, " << unchanged << " unchanged\n";
  if (!changes.empty()) table.Print(context.out, {});
  return Status::OK();
}

// An export never writes into a store, the one exported or any other: a
// directory on the way up from FILE's that holds CKPTDB or CURRENT refuses it.
Status CheckOutsideStores(const std::string& out_path) {
  std::filesystem::path parent = std::filesystem::path(out_path).parent_path();
  if (parent.empty()) parent = ".";
  std::error_code ec;
  const std::filesystem::path resolved = std::filesystem::weakly_canonical(parent, ec);
  if (ec) return Status::IOError("cannot resolve '" + parent.string() + "': " + ec.message());
  for (std::filesystem::path at = resolved;; at = at.parent_path()) {
    for (const char* marker : {"CKPTDB", "CURRENT"}) {
      if (std::filesystem::exists(at / marker, ec)) {
        return Status::InvalidArgument("'" + out_path + "' is inside the store " + at.string() +
                                       "; nothing was written");
      }
    }
    if (at == at.parent_path()) break;
  }
  return Status::OK();
}

Status Export(const Context& context, const std::string& workdir, const std::string& step_text,
              const std::string& out_path, unsigned permissions) {
  Status outside = CheckOutsideStores(out_path);
  if (!outside.ok()) return outside;
  Result<Inspector> inspector = Inspector::Open(workdir);
  if (!inspector.ok()) return inspector.status();
  Result<int64_t> step = inspector->ParseStep(step_text);
  if (!step.ok()) return step.status();
  CheckpointerOptions options;
  options.create = false;
  Result<std::unique_ptr<Checkpointer>> checkpointer = Checkpointer::Open(workdir, options);
  if (!checkpointer.ok()) return checkpointer.status();
  Result<Tree> tree = (*checkpointer)->RestoreTree(*step);
  if (!tree.ok()) return tree.status();
  Result<StepMetadata> metadata = (*checkpointer)->ItemMetadata(*step);
  if (!metadata.ok()) return metadata.status();
  std::map<std::string, std::string> file_metadata = metadata->user_metadata;
  file_metadata["ckptdb.step"] = std::to_string(*step);
  Status status = WriteSafetensors(out_path, *tree, file_metadata, permissions);
  if (!status.ok()) return status;
  if (context.json) {
    PrintJson(context.out, Json{{"workdir", workdir},
                        {"step", *step},
                        {"file", out_path},
                        {"logical_bytes", metadata->logical_bytes}});
  } else {
    context.out << "exported step " << *step << " (" << FormatBytes(metadata->logical_bytes)
                << ") to " << out_path << "\n";
  }
  return Status::OK();
}

struct ImportFlags {
  int64_t step = -1;
  std::optional<int64_t> max_to_keep;
  std::optional<int64_t> keep_period;
  bool force = false;
};

Status Import(const Context& context, const std::string& workdir, const std::string& file,
              const ImportFlags& flags) {
  // Mapped, not read: the save reads the tensors' bytes from the page cache,
  // and the mapping outlives the checkpointer (closed below).
  Result<MappedSafetensors> contents = MapSafetensors(file);
  if (!contents.ok()) return contents.status();
  CheckpointerOptions options;
  options.max_to_keep = flags.max_to_keep;
  options.keep_period = flags.keep_period;
  Result<std::unique_ptr<Checkpointer>> checkpointer = Checkpointer::Open(workdir, options);
  if (!checkpointer.ok()) return checkpointer.status();
  SaveOptions save;
  save.zero_copy = true;  // the mapping stays unchanged until Close
  save.force = true;      // an explicit step is always wanted...
  save.user_metadata = contents->metadata;
  save.user_metadata.erase("ckptdb.step");
  // The name as printed: metadata must be UTF-8 to export again.
  save.user_metadata["ckptdb.imported_from"] =
      EscapeInvalidUtf8(std::filesystem::path(file).filename().string());
  // ...but not below the latest step unless --force says so.
  std::optional<int64_t> latest = (*checkpointer)->LatestStep();
  if (!flags.force && latest.has_value() && flags.step <= *latest) {
    return Status::InvalidArgument("step " + std::to_string(flags.step) +
                                   " is not above the latest step " + std::to_string(*latest) +
                                   " (use --force)");
  }
  Result<bool> saved = (*checkpointer)->Save(contents->tree, flags.step, save);
  if (!saved.ok()) return saved.status();
  Result<StepMetadata> metadata = (*checkpointer)->ItemMetadata(flags.step);
  Status closed = (*checkpointer)->Close();
  if (!closed.ok()) return closed;
  const uint64_t logical = metadata.ok() ? metadata->logical_bytes : 0;
  if (context.json) {
    PrintJson(context.out, Json{{"workdir", workdir},
                        {"step", flags.step},
                        {"file", file},
                        {"logical_bytes", logical},
                        {"steps", (*checkpointer)->AllSteps()}});
  } else {
    context.out << "imported " << file << " (" << FormatBytes(logical) << ") as step " << flags.step
                << " of " << workdir << "\n";
  }
  return Status::OK();
}

// ---- Command line ----

struct CommandLine {
  bool json = false;
  bool help = false;
  std::vector<std::string> positional;
  std::map<std::string, std::string> options;  // --name value
  std::set<std::string> switches;              // --force
};

// Flags that take a value.
const std::set<std::string> kValueFlags = {"--out", "--mode", "--step", "--max-to-keep",
                                           "--keep-period"};
const std::set<std::string> kSwitches = {"--force"};

std::optional<UsageError> Parse(const std::vector<std::string>& args, CommandLine* line) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--json") {
      line->json = true;
    } else if (arg == "--help" || arg == "-h") {
      line->help = true;
    } else if (kValueFlags.count(arg)) {
      if (i + 1 >= args.size()) return UsageError{arg + " needs a value"};
      line->options[arg] = args[++i];
    } else if (!line->positional.empty() && arg.size() > 1 && arg[0] == '-' &&
               arg.find_first_not_of("0123456789", 1) == std::string::npos) {
      line->positional.push_back(arg);  // a negative number: refused as a step later
    } else if (kSwitches.count(arg)) {
      line->switches.insert(arg);
    } else if (arg.size() > 1 && arg[0] == '-') {
      return UsageError{"unknown option " + arg};
    } else {
      line->positional.push_back(arg);
    }
  }
  return std::nullopt;
}

std::optional<int64_t> ParseCount(const std::string& text) {
  Result<int64_t> value = Inspector::ParseStepNumber(text);
  if (!value.ok()) return std::nullopt;
  return *value;
}

int Usage(std::ostream& err, const std::string& message, const CommandHelp* command) {
  err << "ckpt-inspect: " << message << "\n";
  if (command != nullptr) {
    err << "usage: ckpt-inspect [--json] " << command->usage << "\n";
  } else {
    err << kUsage;
  }
  return kExitUsage;
}

}  // namespace

namespace {

int RunEscaped(const std::vector<std::string>& args, std::ostream& out, std::ostream& err,
               bool show_progress) {
  CommandLine line;
  std::optional<UsageError> error = Parse(args, &line);
  // --help anywhere wins over other mistakes on the line.
  line.help = line.help || std::find(args.begin(), args.end(), "--help") != args.end() ||
              std::find(args.begin(), args.end(), "-h") != args.end();
  if (line.positional.empty()) {
    if (line.help) {
      out << kUsage;
      return kExitOk;
    }
    return Usage(err, error ? error->message : "no command given", nullptr);
  }
  const std::string& name = line.positional[0];
  const CommandHelp* command = FindCommand(name);
  if (command == nullptr) return Usage(err, "unknown command '" + name + "'", nullptr);
  if (line.help) {
    out << "usage: ckpt-inspect [--json] " << command->usage << "\n\n" << command->text;
    return kExitOk;
  }
  if (error) return Usage(err, error->message, command);
  const std::vector<std::string> operands(line.positional.begin() + 1, line.positional.end());
  auto expect_operands = [&](size_t least, size_t most) {
    return operands.size() >= least && operands.size() <= most;
  };
  const bool wants_values = name == "export" || name == "import";
  for (const auto& [flag, value] : line.options) {
    const bool allowed = (name == "export" && (flag == "--out" || flag == "--mode")) ||
                         (name == "import" && flag != "--out" && flag != "--mode");
    if (!allowed) return Usage(err, flag + " does not apply to " + name, command);
  }
  if (!line.switches.empty() && name != "import") {
    return Usage(err, "--force does not apply to " + name, command);
  }
  (void)wants_values;

  // Steps are checked before any store is opened: a bad one is a usage error.
  const size_t first_step =
      name == "show" || name == "verify" || name == "diff" || name == "export";
  for (size_t i = first_step; first_step && i < operands.size(); ++i) {
    if (operands[i] != "latest" && !Inspector::ParseStepNumber(operands[i]).ok()) {
      return Usage(err, "'" + operands[i] + "' is not a step (a number >= 0 or latest)", command);
    }
  }

  Context context{out, err, line.json, show_progress};
  Status status;
  bool healthy = true;
  if (name == "list" || name == "stats" || name == "gc" || name == "repair") {
    if (!expect_operands(1, 1)) return Usage(err, name + " takes WORKDIR", command);
    status = name == "list"    ? List(context, operands[0])
             : name == "stats" ? Stats(context, operands[0])
             : name == "gc"    ? Gc(context, operands[0])
                               : Repair(context, operands[0], &healthy);
  } else if (name == "show") {
    if (!expect_operands(2, 2)) return Usage(err, "show takes WORKDIR STEP", command);
    status = Show(context, operands[0], operands[1]);
  } else if (name == "verify") {
    if (!expect_operands(1, 2)) return Usage(err, "verify takes WORKDIR [STEP]", command);
    status = Verify(context, operands[0],
                    operands.size() == 2 ? std::optional<std::string>(operands[1]) : std::nullopt,
                    &healthy);
  } else if (name == "diff") {
    if (!expect_operands(3, 3)) return Usage(err, "diff takes WORKDIR STEP STEP", command);
    status = Diff(context, operands[0], operands[1], operands[2]);
  } else if (name == "export") {
    if (!expect_operands(2, 2) || !line.options.count("--out")) {
      return Usage(err, "export takes WORKDIR STEP --out FILE", command);
    }
    unsigned permissions = 0600;
    if (line.options.count("--mode")) {
      const std::string& text = line.options["--mode"];
      const auto [end, failed] =
          std::from_chars(text.data(), text.data() + text.size(), permissions, 8);
      if (text.empty() || failed != std::errc() || end != text.data() + text.size() ||
          permissions > 0777) {
        return Usage(err, "--mode needs octal permissions such as 600 or 644", command);
      }
    }
    status = Export(context, operands[0], operands[1], line.options["--out"], permissions);
  } else {  // import
    if (!expect_operands(2, 2) || !line.options.count("--step")) {
      return Usage(err, "import takes WORKDIR FILE --step N", command);
    }
    ImportFlags flags;
    std::optional<int64_t> step = ParseCount(line.options["--step"]);
    if (!step) return Usage(err, "--step needs a number >= 0", command);
    flags.step = *step;
    // An import keeps at least its own step: both counts start at 1.
    for (auto [flag, target] : {std::pair{"--max-to-keep", &flags.max_to_keep},
                                std::pair{"--keep-period", &flags.keep_period}}) {
      if (!line.options.count(flag)) continue;
      *target = ParseCount(line.options[flag]);
      if (!*target || **target < 1) {
        return Usage(err, std::string(flag) + " needs a number >= 1", command);
      }
    }
    flags.force = line.switches.count("--force") != 0;
    status = Import(context, operands[0], operands[1], flags);
  }
  if (!status.ok()) {
    err << "ckpt-inspect " << name << ": " << status.ToString() << "\n";
    return kExitStoreProblem;
  }
  return healthy ? kExitOk : kExitStoreProblem;
}

}  // namespace

int RunInspect(const std::vector<std::string>& args, std::ostream& out, std::ostream& err,
               bool show_progress) {
  EscapingBuffer out_buffer(out);
  EscapingBuffer err_buffer(err);
  std::ostream escaped_out(&out_buffer);
  std::ostream escaped_err(&err_buffer);
  return RunEscaped(args, escaped_out, escaped_err, show_progress);
}

}  // namespace ckptdb
