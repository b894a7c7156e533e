// MpiCoordinator: the Coordinator of an MPI job, in libckptdb-mpi (built
// when Open MPI's development files are present; link with
// `pkg-config ckptdb-mpi`).
//
//   MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
//   ckptdb::CheckpointerOptions options;
//   options.multiprocessing.coordinator = ckptdb::MpiCoordinator().value();
//   auto ckpt = ckptdb::Checkpointer::Open(workdir, options);
//
// What ckptdb needs from the runtime: MPI initialized before the
// coordinator is made and finalized only after the Checkpointer is closed;
// every process of the communicator opening the same workdir on a shared
// file system. With MPI_THREAD_MULTIPLE granted, an asynchronous save
// commits from ckptdb's background thread as soon as every process has
// written; with a lower level (FUNNELED, SERIALIZED), ckptdb calls MPI only
// from the threads that call the Checkpointer, so the commit of an
// asynchronous save waits for the next Save, WaitUntilFinished or Close
// (the chunks are written in the background all the same). With FUNNELED,
// call the Checkpointer from the main thread only.
#ifndef CKPTDB_MPI_H_
#define CKPTDB_MPI_H_

#include <mpi.h>

#include <memory>

#include "ckptdb/coordinator.h"
#include "ckptdb/status.h"

namespace ckptdb {

// A coordinator over a duplicate of `communicator` (ckptdb's messages never
// mix with the program's). Collective over `communicator`. FailedPrecondition
// when MPI is not initialized.
CKPTDB_EXPORT Result<std::shared_ptr<Coordinator>> MpiCoordinator(
    MPI_Comm communicator = MPI_COMM_WORLD);

}  // namespace ckptdb

#endif  // CKPTDB_MPI_H_
