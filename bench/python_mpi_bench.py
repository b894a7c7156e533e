"""The Python package's multi-process save, measured under mpirun (mpi4py),
as bench/mpi_bench's `throughput` measures the C++ API's on the same state:
8 float32 tensors of MEGABYTES in all, row-sharded over the processes (the
same values, bench/mpi_bench.cc's Fill); one save (save to
wait_until_finished, slowest process), then each process restores its rows
(slowest process). scripts/mpi_bench.sh runs both, rounds interleaved.

    mpirun -n 4 /usr/bin/python3 bench/python_mpi_bench.py DIR MEGABYTES

Prints one line of key=value pairs (rank 0): "python-throughput ranks=...".
"""

import os
import sys
import time

import numpy as np
from mpi4py import MPI

import ckptdb

TENSORS = 8
COLS = 1024


def fill(count, seed):
    """bench/mpi_bench.cc's Fill: a hash of each element's index."""
    x = (np.arange(count, dtype=np.uint64) + np.uint64(seed)) * np.uint64(0x9E3779B97F4A7C15)
    x ^= x >> np.uint64(29)
    return ((x % np.uint64(2000001)).astype(np.int64) - 1000000).astype(np.float32) * \
        np.float32(1e-7)


def main():
    directory, megabytes = sys.argv[1], int(sys.argv[2])
    comm = MPI.COMM_WORLD
    rank, count = comm.Get_rank(), comm.Get_size()
    rows = megabytes * (1 << 20) // TENSORS // COLS // 4
    begin, end = rows * rank // count, rows * (rank + 1) // count
    state = {}
    for tensor in range(TENSORS):
        data = fill((end - begin) * COLS, tensor * rows * COLS + begin * COLS).reshape(end - begin,
                                                                                   COLS)
        state[f"t{tensor}"] = ckptdb.Sharded("float32", (rows, COLS), [ckptdb.Shard((begin, 0), data)])
    ckpt = ckptdb.Checkpointer(
        directory, save_interval_steps=1, max_to_keep=2,
        worker_threads=max(1, (os.cpu_count() or 1) // count),
        multiprocessing_options=ckptdb.MultiprocessingOptions(ckptdb.MpiCoordinator(comm)))
    comm.Barrier()
    start = time.perf_counter()
    ckpt.save(state, step=1, force=True)
    ckpt.wait_until_finished()
    save = comm.allreduce(time.perf_counter() - start, op=MPI.MAX)
    comm.Barrier()
    start = time.perf_counter()
    ckpt.restore(state, step=1)
    restore = comm.allreduce(time.perf_counter() - start, op=MPI.MAX)
    ckpt.close()
    if rank == 0:
        gigabytes = rows * COLS * 4 * TENSORS / 1e9
        print(f"python-throughput ranks={count} megabytes={megabytes} "
              f"save_gbps={gigabytes / save:.3f} restore_gbps={gigabytes / restore:.3f}",
              flush=True)


if __name__ == "__main__":
    main()
