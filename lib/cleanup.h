// Cleanup: runs a function when the scope ends, on every way out, unless
// cancelled (as absl::Cleanup).

#ifndef CKPTDB_LIB_CLEANUP_H_
#define CKPTDB_LIB_CLEANUP_H_

#include <utility>

namespace ckptdb {

template <typename Function>
class Cleanup {
 public:
  explicit Cleanup(Function function) : function_(std::move(function)) {}
  ~Cleanup() {
    if (armed_) function_();
  }
  Cleanup(const Cleanup&) = delete;
  Cleanup& operator=(const Cleanup&) = delete;

  // The function will not run.
  void Cancel() { armed_ = false; }

 private:
  Function function_;
  bool armed_ = true;
};

}  // namespace ckptdb

#endif  // CKPTDB_LIB_CLEANUP_H_
