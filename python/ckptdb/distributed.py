"""Checkpoints of many processes: the coordinators ckptdb's rounds run over.

A job of several processes writes each checkpoint together: every process
writes its own shards' chunks into the store's folder (a shared file system),
and the primary commits one step (doc/format.md §7.1). The processes agree
through a coordinator, which carries only small messages: per save, each
process's list of boxes and chunk digests to the primary and its answer back.

    import torch.distributed as dist
    dist.init_process_group("gloo")          # torchrun started the processes
    ckpt = ckptdb.Checkpointer(workdir, save_interval_steps=100,
        multiprocessing_options=ckptdb.MultiprocessingOptions())

MultiprocessingOptions() without a coordinator takes torch.distributed's
default group when it is initialized, else MPI_COMM_WORLD when mpi4py has
initialized MPI. Collective calls: every process of the job makes them, in
the same order, with the same step: the Checkpointer's constructor, save,
maybe_save, should_save, wait_until_finished, delete and close (and
iter_new_checkpoints and restore are not: each process reads what it asks
for).
"""

import dataclasses

from ckptdb import _ckptdb


class Coordinator:
    """The messages between the processes of a job, for ckptdb's rounds.

    Implement over a runtime's collectives; every method but the three
    queries is collective (every process calls it, in the same order, with
    the same `root`). ckptdb calls them from the thread that calls the
    Checkpointer (holding the GIL while it does), or, when
    background_calls_allowed() is True, from its own background thread too.
    An exception raised here fails the ckptdb call (an OSError naming it).
    """

    def process_index(self):
        """This process, in [0, process_count())."""
        raise NotImplementedError

    def process_count(self):
        raise NotImplementedError

    def background_calls_allowed(self):
        """Whether ckptdb may call from its background thread while the
        program's threads use the runtime too. False: an asynchronous save's
        commit waits for the next collective call (listed meanwhile, not
        readable). Default False."""
        return False

    def barrier(self):
        """Returns once every process has called it."""
        raise NotImplementedError

    def broadcast(self, root, data):
        """Root's `data` (bytes), on every process."""
        raise NotImplementedError

    def gather(self, root, data):
        """On root, every process's `data` by process index; elsewhere []."""
        raise NotImplementedError

    def subgroup(self, processes):
        """A coordinator of `processes` (indices of this one, ascending; this
        process among them), numbered by position. Called by those processes
        only."""
        raise NotImplementedError


class TorchDistributedCoordinator(Coordinator):
    """A coordinator over torch.distributed: `group` (default: the default
    process group, which must be initialized), with its object collectives
    (gloo on CPU works). Calls come only from the thread that calls the
    Checkpointer: torch's collectives of one group must not interleave.
    """

    def __init__(self, group=None):
        import torch.distributed as dist  # pylint: disable=import-outside-toplevel
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("torch.distributed is not initialized: call "
                               "torch.distributed.init_process_group first")
        self._dist = dist
        self._group = group
        self._index = dist.get_rank(group)
        if self._index < 0:
            raise ValueError("this process is not in the given process group")
        self._count = dist.get_world_size(group)
        self._ranks = (list(range(self._count)) if group is None
                       else list(dist.get_process_group_ranks(group)))

    def process_index(self):
        return self._index

    def process_count(self):
        return self._count

    def barrier(self):
        self._dist.barrier(group=self._group)

    def broadcast(self, root, data):
        message = [data if self._index == root else None]
        self._dist.broadcast_object_list(message, src=self._ranks[root], group=self._group)
        return message[0]

    def gather(self, root, data):
        gathered = [None] * self._count if self._index == root else None
        self._dist.gather_object(data, gathered, dst=self._ranks[root], group=self._group)
        return gathered if self._index == root else []

    def subgroup(self, processes):
        if list(processes) == list(range(self._count)):
            # Every process: the same group serves (ckptdb's rounds never
            # overlap, every call coming from the caller's thread).
            return TorchDistributedCoordinator(self._group)
        raise NotImplementedError(
            "active_processes with torch.distributed: torch 1.13's new_group is collective "
            "over every process, which the others do not call; create the group of the "
            "active processes on every process and pass TorchDistributedCoordinator(group)")


def MpiCoordinator(comm=None):  # pylint: disable=invalid-name
    """A coordinator over an mpi4py communicator (default: MPI.COMM_WORLD),
    in C++ (libckptdb-mpi, on the communicator's duplicate). Collective over
    `comm`. With MPI_THREAD_MULTIPLE (mpi4py's default), an asynchronous
    save commits from ckptdb's background thread."""
    from mpi4py import MPI  # pylint: disable=import-outside-toplevel
    try:
        from ckptdb import _mpi  # pylint: disable=import-outside-toplevel
    except ImportError as error:
        raise NotImplementedError("this build of ckptdb has no MPI support "
                                  "(libckptdb-mpi was not built)") from error
    if comm is None:
        comm = MPI.COMM_WORLD
    return _mpi.coordinator(MPI._handleof(comm))  # pylint: disable=protected-access


def _default_coordinator():
    """torch.distributed's default group, else MPI_COMM_WORLD."""
    try:
        import torch.distributed as dist  # pylint: disable=import-outside-toplevel
        if dist.is_available() and dist.is_initialized():
            return TorchDistributedCoordinator()
    except ImportError:
        pass
    try:
        from mpi4py import MPI  # pylint: disable=import-outside-toplevel
        if MPI.Is_initialized():
            return MpiCoordinator(MPI.COMM_WORLD)
    except ImportError:
        pass
    raise ValueError("MultiprocessingOptions needs a coordinator: initialize "
                     "torch.distributed or MPI (mpi4py), or pass one")


@dataclasses.dataclass
class MultiprocessingOptions:
    """Orbax's multiprocessing options, with the coordinator ckptdb's rounds
    run over (default: torch.distributed's default group if initialized,
    else MPI_COMM_WORLD if mpi4py initialized MPI).

    primary_host: the process (an index of the coordinator) that creates the
      store, commits, and runs retention and GC. Default 0.
    active_processes: only these processes take part (each opens the
      Checkpointer; the others must not). Must hold primary_host. Default
      None: every process.
    """
    coordinator: object = None
    primary_host: int = 0
    active_processes: object = None

    def _native_options(self):
        coordinator = self.coordinator if self.coordinator is not None else _default_coordinator()
        if not isinstance(coordinator, (Coordinator, _ckptdb.NativeCoordinator)):
            raise TypeError("coordinator must be a ckptdb.Coordinator (or MpiCoordinator()), "
                            f"got {type(coordinator).__name__}")
        active = self.active_processes
        if active is not None:
            active = [int(process) for process in active]
        return coordinator, dict(coordinator=coordinator, primary_host=int(self.primary_host),
                                 active_processes=active)
