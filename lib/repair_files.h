// The files of a repair (doc/format.md §11): its folder
// WORKDIR/repair-<UTC time>[-N]/, which ends up holding the files it replaced
// (old/) and what it found (REPORT); while it runs, the rebuilt store
// (rebuilt/); and the swap that moves the rebuilt store in.
//
// Nothing here follows a symbolic link or writes outside the workdir: every
// folder is created here, inside it, and every move is a rename inside it.

#ifndef CKPTDB_LIB_REPAIR_FILES_H_
#define CKPTDB_LIB_REPAIR_FILES_H_

#include <cstddef>
#include <string>
#include <vector>

#include "ckptdb/status.h"

namespace ckptdb {

// How many repair folders are kept: after a repair, the newest this many;
// older ones are removed with what they hold.
inline constexpr size_t kKeptRepairDirs = 2;

// A new, empty repair folder in `workdir`.
Result<std::string> NewRepairDir(const std::string& workdir);

// Where a repair folder holds the rebuilt store, and the replaced files.
std::string RebuiltDir(const std::string& repair_dir);
std::string ReplacedDir(const std::string& repair_dir);

// Removes what repairs stopped before their swap left: rebuilt stores
// without the swap marker (links to chunk files and new files only, never
// an original), and their repair folders when nothing else is in them.
Status RemoveAbandonedBuilds(const std::string& workdir);

// Moves the complete rebuilt store of `repair_dir` into `workdir`:
//   1. the swap marker, synced: from here on the swap is finished by the
//      next repair if this one stops (and every open refuses the store);
//   2. every file of the old database (and CKPTDB, copied) goes to old/,
//      but a chunk file the rebuilt store links is unlinked instead;
//   3. the rebuilt store's files move in, CURRENT last;
//   4. the marker and rebuilt/ go.
// Idempotent: the marker records whether step 2 is complete.
Status SwapIn(const std::string& workdir, const std::string& repair_dir);

// Finishes the swap of a repair that stopped within it, if there is one;
// `finished` gets that repair folder ("" when there was none).
Status FinishInterruptedSwap(const std::string& workdir, std::string* finished);

// Removes the repair folders beyond the newest kKeptRepairDirs; their paths
// go into `removed`.
Status TrimRepairDirs(const std::string& workdir, std::vector<std::string>* removed);

}  // namespace ckptdb

#endif  // CKPTDB_LIB_REPAIR_FILES_H_
