// Coordinator: what ckptdb needs from the runtime of a job of many
// processes that write one checkpoint together (MultiprocessingOptions).
// ckptdb itself never depends on MPI: libckptdb-mpi implements this over an
// MPI communicator (ckptdb/mpi.h); a program on another runtime implements
// it over that runtime's collectives.
//
// Every method is collective: every process of the coordinator calls it, in
// the same order, with the same `root`. Chunk bytes never travel through it
// (each process writes its own into the store's directory on the shared
// file system); only small messages do: per save, each process's list of
// boxes and chunk digests to the primary, and the primary's answer back.
//
// Thread safety: ckptdb calls each coordinator from one thread at a time:
// the caller's, or, when background_calls_allowed(), its background
// writer's (while the program's own threads may be using the runtime too).
// At Open it makes a second coordinator of the same processes (Subgroup of
// all) for save decisions; with background calls allowed, the two may be in
// use at once, from two threads. One coordinator serves one Checkpointer:
// two checkpointers open at once need two (MpiCoordinator duplicates the
// communicator for each).
#ifndef CKPTDB_COORDINATOR_H_
#define CKPTDB_COORDINATOR_H_

#include <memory>
#include <string>
#include <vector>

#include "ckptdb/export.h"
#include "ckptdb/status.h"

namespace ckptdb {

class CKPTDB_EXPORT Coordinator {
 public:
  virtual ~Coordinator();

  // This process, in [0, process_count()).
  virtual int process_index() const = 0;
  virtual int process_count() const = 0;
  // Whether ckptdb may call the coordinator from its background thread
  // while other threads of the program call the runtime (MPI: the runtime
  // granted MPI_THREAD_MULTIPLE). false: an asynchronous save's commit,
  // which needs every process, waits for the caller's next collective call
  // into the Checkpointer (Save, MaybeSave, ShouldSave, WaitUntilFinished,
  // Delete, CollectGarbage, Close). The step is listed meanwhile
  // (LatestStep, AllSteps), and reading it, as the latest step or by number,
  // is FailedPrecondition until then (checkpointer.h, kLatestStep).
  virtual bool background_calls_allowed() const = 0;
  // Returns once every process has called it.
  virtual Status Barrier() = 0;
  // Gives every process root's `bytes`.
  virtual Status Broadcast(int root, std::string* bytes) = 0;
  // Gives root every process's `bytes`, by process index (others get an
  // empty list).
  virtual Status Gather(int root, const std::string& bytes, std::vector<std::string>* gathered) = 0;
  // A coordinator of `processes` (indices in this one, ascending; this
  // process among them), numbered by their position in the list: for
  // MultiprocessingOptions::active_processes. Called by those processes
  // only, not collectively over all.
  virtual Result<std::shared_ptr<Coordinator>> Subgroup(const std::vector<int>& processes) = 0;
};

}  // namespace ckptdb

#endif  // CKPTDB_COORDINATOR_H_
