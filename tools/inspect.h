// ckpt-inspect: the command-line window into a store. The whole command line
// is handled here, so tests can run it in-process as well as through the
// binary (tools/ckpt_inspect.cc is only main()).

#ifndef CKPTDB_TOOLS_INSPECT_H_
#define CKPTDB_TOOLS_INSPECT_H_

#include <ostream>
#include <string>
#include <vector>

namespace ckptdb {

// Exit codes: what scripts can rely on.
inline constexpr int kExitOk = 0;
inline constexpr int kExitStoreProblem = 1;  // the store has a problem, or an operation failed
inline constexpr int kExitUsage = 2;         // the command line is wrong

// Runs `args` (without the program name). Results go to `out`, errors and
// progress to `err`; progress lines only when `show_progress`.
int RunInspect(const std::vector<std::string>& args, std::ostream& out, std::ostream& err,
               bool show_progress);

}  // namespace ckptdb

#endif  // CKPTDB_TOOLS_INSPECT_H_
