// Status and Result<T>: how every fallible ckptdb call reports failure.
//
// No exception crosses the public API. A Status is either OK or carries a code
// (what the caller should do about it) and a message (what went wrong and
// where: the step, the path of the tensor, the workdir).
//
// Thread safety: a const Status or Result may be read from many threads.

#ifndef CKPTDB_STATUS_H_
#define CKPTDB_STATUS_H_

#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "ckptdb/export.h"

namespace ckptdb {

class [[nodiscard]] CKPTDB_EXPORT Status {
 public:
  enum class Code {
    kOk = 0,
    kNotFound,            // no such step, path or store
    kAlreadyExists,       // the step is already stored
    kInvalidArgument,     // bad option, tree, template or input file
    kCorruption,          // a digest, verifier or size check failed on stored bytes
    kIOError,             // the file system or the storage engine failed
    kNotSupported,        // an option or format this build does not implement
    kFailedPrecondition,  // wrong state: read-only store, closed checkpointer
    kBusy,                // another process holds the store for writing
    kInternal,            // an invariant of ckptdb broke: a bug
  };

  Status() = default;  // OK

  static Status OK() { return Status(); }
  static Status NotFound(std::string_view msg) { return Status(Code::kNotFound, msg); }
  static Status AlreadyExists(std::string_view msg) { return Status(Code::kAlreadyExists, msg); }
  static Status InvalidArgument(std::string_view msg) {
    return Status(Code::kInvalidArgument, msg);
  }
  static Status Corruption(std::string_view msg) { return Status(Code::kCorruption, msg); }
  static Status IOError(std::string_view msg) { return Status(Code::kIOError, msg); }
  static Status NotSupported(std::string_view msg) { return Status(Code::kNotSupported, msg); }
  static Status FailedPrecondition(std::string_view msg) {
    return Status(Code::kFailedPrecondition, msg);
  }
  static Status Busy(std::string_view msg) { return Status(Code::kBusy, msg); }
  static Status Internal(std::string_view msg) { return Status(Code::kInternal, msg); }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }

  bool IsNotFound() const { return code_ == Code::kNotFound; }
  bool IsAlreadyExists() const { return code_ == Code::kAlreadyExists; }
  bool IsInvalidArgument() const { return code_ == Code::kInvalidArgument; }
  bool IsCorruption() const { return code_ == Code::kCorruption; }

  // A copy whose message starts with `context` ("restore of step 7: ...").
  Status WithContext(std::string_view context) const;

  // "NotFound: step 7 is not in /runs/a" (or "OK").
  std::string ToString() const;

 private:
  Status(Code code, std::string_view msg) : code_(code), message_(msg) {}

  Code code_ = Code::kOk;
  std::string message_;
};

CKPTDB_EXPORT std::string_view CodeName(Status::Code code);

namespace internal {
// Prints "ckptdb: WHAT: STATUS" to standard error and aborts: what reading
// the value of an error Result does, in every build type.
[[noreturn]] CKPTDB_EXPORT void DieOfBadResult(const char* what, const Status& status);
}  // namespace internal

// Either a value or a non-OK Status. value(), operator* and operator-> of an
// error abort the process with the status's text, in every build type (as
// absl::StatusOr does): check ok() first.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}         // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {  // NOLINT: implicit by design
    if (status_.ok()) internal::DieOfBadResult("a Result made from an OK status", status_);
  }

  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }

  T& value() & {
    CheckHasValue();
    return *value_;
  }
  const T& value() const& {
    CheckHasValue();
    return *value_;
  }
  T&& value() && {
    CheckHasValue();
    return std::move(*value_);
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  void CheckHasValue() const {
    if (!status_.ok()) internal::DieOfBadResult("value() of an error Result", status_);
  }

  Status status_;
  std::optional<T> value_;
};

}  // namespace ckptdb

#endif  // CKPTDB_STATUS_H_
