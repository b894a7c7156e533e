// What the library and its tests may do with a Checkpointer beyond the
// public API.

#ifndef CKPTDB_LIB_CHECKPOINTER_INTERNAL_H_
#define CKPTDB_LIB_CHECKPOINTER_INTERNAL_H_

#include <memory>
#include <string>

#include "ckptdb/checkpointer.h"

namespace rocksdb {
class Env;
}  // namespace rocksdb

namespace ckptdb {

class CheckpointerAccess {
 public:
  // Checkpointer::Open with `env` (tests: a fault-injecting file system)
  // under the store's database; `env` must outlive the checkpointer.
  // nullptr: the default environment.
  static Result<std::unique_ptr<Checkpointer>> Open(const std::string& workdir,
                                                    CheckpointerOptions options,
                                                    rocksdb::Env* env);
};

// CheckpointerAccess::Open.
inline Result<std::unique_ptr<Checkpointer>> OpenCheckpointer(const std::string& workdir,
                                                              CheckpointerOptions options,
                                                              rocksdb::Env* env) {
  return CheckpointerAccess::Open(workdir, std::move(options), env);
}

}  // namespace ckptdb

#endif  // CKPTDB_LIB_CHECKPOINTER_INTERNAL_H_
