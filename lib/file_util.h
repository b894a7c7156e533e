// Durable file operations shared by the store and the safetensors writer.

#ifndef CKPTDB_LIB_FILE_UTIL_H_
#define CKPTDB_LIB_FILE_UTIL_H_

#include <string>
#include <string_view>

#include "ckptdb/status.h"

namespace ckptdb {

// fsyncs directory `dir`, making the creations, renames and removals in it
// durable. File systems that cannot sync a directory (EINVAL) count as done.
Status SyncDirectory(const std::string& dir);
// SyncDirectory of the directory holding `path` ("." when it names none).
Status SyncParentDirectory(const std::string& path);

// Writes `contents` to `path` durably: a temporary file beside it
// ("PATH.tmp"), synced, renamed over `path`, and the directory synced.
Status WriteFileDurably(const std::string& path, std::string_view contents);

// Creates the empty file `path` (no temporary file: others may be watching
// the directory for it), synced with its directory. An existing file is kept.
Status CreateEmptyFileDurably(const std::string& path);

}  // namespace ckptdb

#endif  // CKPTDB_LIB_FILE_UTIL_H_
