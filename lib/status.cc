#include "ckptdb/status.h"

#include <cstdio>
#include <cstdlib>

namespace ckptdb {

std::string_view CodeName(Status::Code code) {
  switch (code) {
    case Status::Code::kOk: return "OK";
    case Status::Code::kNotFound: return "NotFound";
    case Status::Code::kAlreadyExists: return "AlreadyExists";
    case Status::Code::kInvalidArgument: return "InvalidArgument";
    case Status::Code::kCorruption: return "Corruption";
    case Status::Code::kIOError: return "IOError";
    case Status::Code::kNotSupported: return "NotSupported";
    case Status::Code::kFailedPrecondition: return "FailedPrecondition";
    case Status::Code::kBusy: return "Busy";
    case Status::Code::kInternal: return "Internal";
  }
  return "Unknown";
}

Status Status::WithContext(std::string_view context) const {
  if (ok()) return *this;
  std::string message(context);
  message += ": ";
  message += message_;
  return Status(code_, message);
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  std::string text(CodeName(code_));
  text += ": ";
  text += message_;
  return text;
}

namespace internal {

void DieOfBadResult(const char* what, const Status& status) {
  std::fprintf(stderr, "ckptdb: %s: %s\n", what, status.ToString().c_str());
  std::abort();
}

}  // namespace internal
}  // namespace ckptdb
