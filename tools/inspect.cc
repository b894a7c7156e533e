#include "inspect.h"

#include <algorithm>
#include <charconv>
#include <map>
#include <optional>
#include <set>

#include "inspect_internal.h"

namespace ckptdb {
namespace {

using namespace inspect;

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

// A command's run: its operands (WORKDIR first) and options, already checked
// against its table entry.
struct Invocation {
  const Context& context;
  const std::vector<std::string>& operands;
  const std::map<std::string, std::string>& options;  // --name value
  const std::set<std::string>& switches;              // --force
};

// What a run ended with: its error, whether the store is consistent
// (verify, repair), or a usage error found in an option's value.
struct Outcome {
  Outcome(Status status, bool healthy = true) : status(std::move(status)), healthy(healthy) {}
  static Outcome Usage(std::string message) {
    Outcome outcome(Status::OK());
    outcome.usage_error = std::move(message);
    return outcome;
  }
  Status status;
  bool healthy;
  std::string usage_error;
};

Outcome RunList(const Invocation& run) { return {List(run.context, run.operands[0])}; }
Outcome RunShow(const Invocation& run) {
  return {Show(run.context, run.operands[0], run.operands[1])};
}
Outcome RunStats(const Invocation& run) { return {Stats(run.context, run.operands[0])}; }
Outcome RunVerify(const Invocation& run) {
  bool healthy = true;
  const std::optional<std::string> step =
      run.operands.size() == 2 ? std::optional<std::string>(run.operands[1]) : std::nullopt;
  Status status = Verify(run.context, run.operands[0], step, &healthy);
  return {status, healthy};
}
Outcome RunGc(const Invocation& run) { return {Gc(run.context, run.operands[0])}; }
Outcome RunRepair(const Invocation& run) {
  bool healthy = true;
  Status status = Repair(run.context, run.operands[0], &healthy);
  return {status, healthy};
}
Outcome RunDiff(const Invocation& run) {
  return {Diff(run.context, run.operands[0], run.operands[1], run.operands[2])};
}

std::optional<int64_t> ParseCount(const std::string& text) {
  Result<int64_t> value = Inspector::ParseStepNumber(text);
  if (!value.ok()) return std::nullopt;
  return *value;
}

Outcome RunExport(const Invocation& run) {
  unsigned permissions = 0600;
  auto mode = run.options.find("--mode");
  if (mode != run.options.end()) {
    const std::string& text = mode->second;
    const auto [end, failed] = std::from_chars(text.data(), text.data() + text.size(), permissions, 8);
    if (text.empty() || failed != std::errc() || end != text.data() + text.size() ||
        permissions > 0777) {
      return Outcome::Usage("--mode needs octal permissions such as 600 or 644");
    }
  }
  return {Export(run.context, run.operands[0], run.operands[1], run.options.at("--out"),
                 permissions)};
}

Outcome RunImport(const Invocation& run) {
  ImportFlags flags;
  std::optional<int64_t> step = ParseCount(run.options.at("--step"));
  if (!step) return Outcome::Usage("--step needs a number >= 0");
  flags.step = *step;
  // An import keeps at least its own step: both counts start at 1.
  for (auto [flag, target] : {std::pair{"--max-to-keep", &flags.max_to_keep},
                              std::pair{"--keep-period", &flags.keep_period}}) {
    auto value = run.options.find(flag);
    if (value == run.options.end()) continue;
    *target = ParseCount(value->second);
    if (!*target || **target < 1) return Outcome::Usage(std::string(flag) + " needs a number >= 1");
  }
  flags.force = run.switches.count("--force") != 0;
  return {Import(run.context, run.operands[0], run.operands[1], flags)};
}

// The commands: their help, the operands and options they take, and their run.
struct Command {
  const char* name;
  const char* usage;  // the synopsis
  const char* text;   // --help
  const char* takes;  // what a wrong count of operands is told it takes
  size_t min_operands;
  size_t max_operands;
  size_t first_step;  // operands from this index on are STEPs (0: none)
  std::set<std::string> flags;  // the options and switches it takes
  const char* required_flag;    // "" when none
  Outcome (*run)(const Invocation&);
};

const Command kCommands[] = {
    {"list", "list WORKDIR",
     "Lists the steps held: commit time, logical size (the tensors' bytes), stored size (their\n"
     "chunks, compressed, before dedup), tensor count and metrics.\n",
     "WORKDIR", 1, 1, 0, {}, "", RunList},
    {"show", "show WORKDIR STEP",
     "Shows one step's tree: every leaf's path, kind, dtype, shape, logical and stored size,\n"
     "chunk count, and how many of its chunks other steps or leaves share (dedup). Scalars\n"
     "show their values. Reads the manifest only.\n",
     "WORKDIR STEP", 2, 2, 1, {}, "", RunShow},
    {"stats", "stats WORKDIR",
     "Store-wide figures: logical bytes of all steps, the unique chunks' raw and stored bytes,\n"
     "compression and dedup ratios, garbage (chunks no step references) and bytes on disk.\n"
     "Reads manifests and the chunk index, never chunk bytes.\n",
     "WORKDIR", 1, 1, 0, {}, "", RunStats},
    {"verify", "verify WORKDIR [STEP]",
     "Reads every chunk the step (or every step) references, decodes it and checks its\n"
     "digest; checks every manifest and that every chunk file is present; without STEP, also\n"
     "every other chunk the index holds (a later save could reuse it). Exit code 1 when\n"
     "anything is wrong, with one line per problem naming the step, the tensor, the chunk\n"
     "and its file, then each damaged file with the steps that use it.\n",
     "WORKDIR [STEP]", 1, 2, 1, {}, "", RunVerify},
    {"gc", "gc WORKDIR",
     "Garbage collection: deletes chunks no step references and gives their disk space back.\n"
     "Opens the store for writing (fails if a trainer has it open; its own GC runs after\n"
     "retention anyway).\n",
     "WORKDIR", 1, 1, 0, {}, "", RunGc},
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
     "a reader has the store open.\n",
     "WORKDIR", 1, 1, 0, {}, "", RunRepair},
    {"diff", "diff WORKDIR STEP STEP",
     "Compares two steps path by path: added, removed, changed (kind, dtype, shape, value or\n"
     "bytes, by chunk digests: no tensor data is read) and unchanged leaves.\n",
     "WORKDIR STEP STEP", 3, 3, 1, {}, "", RunDiff},
    {"export", "export WORKDIR STEP --out FILE [--mode OCTAL]",
     "Writes the step as a safetensors file: each tensor named by its tree path; the rest of\n"
     "the tree (lists, scalars) in __metadata__[\"ckptdb.tree\"], so import restores it\n"
     "bit-exact. Writes FILE only: a new file beside it under an unpredictable name, synced,\n"
     "then renamed over FILE. Refuses (nothing written) an empty FILE, a directory, a device,\n"
     "fifo or socket, and any path inside a store. FILE gets mode 600 unless --mode says\n"
     "otherwise (octal, e.g. --mode 644).\n",
     "WORKDIR STEP --out FILE", 2, 2, 1, {"--out", "--mode"}, "--out", RunExport},
    {"import", "import WORKDIR FILE --step N [--max-to-keep K] [--keep-period P] [--force]",
     "Stores a safetensors file (from ckptdb or any other tool) as step N, creating the store\n"
     "if needed. --max-to-keep and --keep-period are retention options for this save\n"
     "(default: keep every step). --force saves even when N is not above the latest step.\n",
     "WORKDIR FILE --step N", 2, 2, 0, {"--step", "--max-to-keep", "--keep-period", "--force"}, "--step", RunImport},
};

const Command* FindCommand(const std::string& name) {
  for (const Command& command : kCommands) {
    if (name == command.name) return &command;
  }
  return nullptr;
}

// A usage error: the message and the command it concerns ("" for global).
struct UsageError {
  std::string message;
};
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

int Usage(std::ostream& err, const std::string& message, const Command* command) {
  err << "ckpt-inspect: " << message << "\n";
  if (command != nullptr) {
    err << "usage: ckpt-inspect [--json] " << command->usage << "\n";
  } else {
    err << kUsage;
  }
  return kExitUsage;
}

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
  const Command* command = FindCommand(name);
  if (command == nullptr) return Usage(err, "unknown command '" + name + "'", nullptr);
  if (line.help) {
    out << "usage: ckpt-inspect [--json] " << command->usage << "\n\n" << command->text;
    return kExitOk;
  }
  if (error) return Usage(err, error->message, command);
  for (const auto& [flag, value] : line.options) {
    if (command->flags.count(flag) == 0) return Usage(err, flag + " does not apply to " + name, command);
  }
  for (const std::string& flag : line.switches) {
    if (command->flags.count(flag) == 0) return Usage(err, flag + " does not apply to " + name, command);
  }
  const std::vector<std::string> operands(line.positional.begin() + 1, line.positional.end());
  // Steps are checked before any store is opened: a bad one is a usage error.
  for (size_t i = command->first_step; command->first_step != 0 && i < operands.size(); ++i) {
    if (operands[i] != "latest" && !Inspector::ParseStepNumber(operands[i]).ok()) {
      return Usage(err, "'" + operands[i] + "' is not a step (a number >= 0 or latest)", command);
    }
  }
  if (operands.size() < command->min_operands || operands.size() > command->max_operands ||
      (*command->required_flag != '\0' && line.options.count(command->required_flag) == 0)) {
    return Usage(err, name + " takes " + command->takes, command);
  }
  const Context context{out, err, line.json, show_progress};
  const Outcome outcome = command->run({context, operands, line.options, line.switches});
  if (!outcome.usage_error.empty()) return Usage(err, outcome.usage_error, command);
  if (!outcome.status.ok()) {
    err << "ckpt-inspect " << name << ": " << outcome.status.ToString() << "\n";
    return kExitStoreProblem;
  }
  return outcome.healthy ? kExitOk : kExitStoreProblem;
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
