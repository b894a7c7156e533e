// ckptdb._mpi: libckptdb-mpi's MpiCoordinator for Python programs, over the
// communicator mpi4py hands over (the same MPI library: Debian's python3-mpi4py
// is built on Debian's Open MPI), so that ckptdb's rounds run in C++, from
// ckptdb's background thread when mpi4py initialized MPI with
// MPI_THREAD_MULTIPLE (its default).

#include <mpi.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>

#include "ckptdb/mpi.h"

namespace py = pybind11;

PYBIND11_MODULE(_mpi, module) {
  module.doc() = "ckptdb's MPI coordinator; use ckptdb.MpiCoordinator";
  // Registers ckptdb.NativeCoordinator, the type returned below.
  py::module_::import("ckptdb._ckptdb");
  module.def(
      "coordinator",
      [](uintptr_t handle) {
        // mpi4py's MPI._handleof(comm): the MPI_Comm itself (Open MPI's is a
        // pointer).
        const MPI_Comm communicator = reinterpret_cast<MPI_Comm>(handle);
        ckptdb::Result<std::shared_ptr<ckptdb::Coordinator>> coordinator =
            ckptdb::Status::Internal("not made");
        {
          py::gil_scoped_release unlocked;  // collective: duplicates the communicator
          coordinator = ckptdb::MpiCoordinator(communicator);
        }
        if (!coordinator.ok()) throw std::runtime_error(coordinator.status().ToString());
        return *coordinator;
      },
      py::arg("handle"),
      "A coordinator over a duplicate of the communicator whose handle is given "
      "(collective over it).");
}
