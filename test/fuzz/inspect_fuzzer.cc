// libFuzzer target: ckpt-inspect end to end on an arbitrary file. The input
// is written as a .safetensors file and imported into a new store; when the
// import succeeds, the step is shown (human and --json), exported, and the
// export imported into a second store.
//
// Properties (a violation is __builtin_trap()):
//   - no exit code but 0 or 1 (never a usage error, never a crash);
//   - everything printed is valid UTF-8, and --json output parses;
//   - a file that imports shows, exports, and imports again, and the second
//     store restores exactly the tree of the first (a bit-exact round trip).

#include <stdlib.h>

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "ckptdb/checkpointer.h"
#include "inspect.h"
#include "utf8.h"

namespace ckptdb {
namespace {

struct ToolRun {
  int code = -1;
  std::string out;
};

ToolRun Inspect(const std::vector<std::string>& args) {
  std::ostringstream out;
  std::ostringstream err;
  ToolRun run;
  run.code = RunInspect(args, out, err, false);
  if ((run.code != kExitOk && run.code != kExitStoreProblem) || !IsValidUtf8(out.str()) ||
      !IsValidUtf8(err.str())) {
    __builtin_trap();
  }
  run.out = out.str();
  return run;
}

Result<Tree> Restore(const std::string& dir) {
  CheckpointerOptions options;
  options.create = false;
  Result<std::unique_ptr<Checkpointer>> opened = Checkpointer::Open(dir, options);
  if (!opened.ok()) return opened.status();
  return (*opened)->RestoreTree(1);
}

void Check(const std::string& work, const uint8_t* data, size_t size) {
  const std::string file = work + "/in.safetensors";
  std::ofstream(file, std::ios::binary).write(reinterpret_cast<const char*>(data),
                                              static_cast<std::streamsize>(size));
  if (Inspect({"import", work + "/a", file, "--step", "1"}).code != kExitOk) return;
  if (Inspect({"show", work + "/a", "1"}).code != kExitOk) __builtin_trap();
  const ToolRun json = Inspect({"--json", "show", work + "/a", "1"});
  if (json.code != kExitOk || nlohmann::json::parse(json.out, nullptr, false).is_discarded()) {
    __builtin_trap();
  }
  const std::string exported = work + "/out.safetensors";
  if (Inspect({"export", work + "/a", "1", "--out", exported}).code != kExitOk) __builtin_trap();
  if (Inspect({"import", work + "/b", exported, "--step", "1"}).code != kExitOk) __builtin_trap();
  Result<Tree> first = Restore(work + "/a");
  Result<Tree> second = Restore(work + "/b");
  if (!first.ok() || !second.ok() || !first->ContentEquals(*second)) __builtin_trap();
}

}  // namespace
}  // namespace ckptdb

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  char pattern[] = "/tmp/ckptdb-inspect-fuzz-XXXXXX";
  if (mkdtemp(pattern) == nullptr) return 0;
  ckptdb::Check(pattern, data, size);
  std::error_code ec;
  std::filesystem::remove_all(pattern, ec);
  return 0;
}
