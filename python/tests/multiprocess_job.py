"""One process of a multi-process job, under torchrun (torch.distributed,
gloo) or mpirun (mpi4py): the scenarios test_multiprocess.py runs.

    python -m torch.distributed.run --standalone --nproc_per_node N multiprocess_job.py \
        --launcher torch --workdir DIR SCENARIO [ARGS]
    mpirun -n N python3 multiprocess_job.py --launcher mpi --workdir DIR SCENARIO [ARGS]

Scenarios:
  save FIRST LAST [--kill-rank R --kill-at S]: saves steps FIRST..LAST, each
      process holding a slice of rows of a global tensor (and a replicated
      array, a torch tensor every process holds whole, scalars); with
      --kill-rank, that process SIGKILLs itself right after save(S) returns
      (its chunks being written in the background).
  restore STEP: restores STEP (or "latest") with each process holding a
      slice of columns (another sharding than the save's) and checks every
      value; prints "restored STEP".
  mismatch STEP: saves STEP with an extra leaf on the last process; every
      process must fail, naming the leaf, and nothing be committed.
Every process prints "rank R ok" when its part succeeded.
"""

import argparse
import os
import signal
import sys

import numpy as np

import ckptdb

ROWS, COLS = 96, 40


def global_values(step):
    return (np.arange(ROWS * COLS, dtype=np.float32) * 3 + step * 1000).reshape(ROWS, COLS)


def part(extent, index, count):
    return extent * index // count, extent * (index + 1) // count


def state_of(step, rank, count, torch):
    begin, end = part(ROWS, rank, count)
    rows = ckptdb.Sharded("float32", (ROWS, COLS),
                          [ckptdb.Shard((begin, 0), global_values(step)[begin:end].copy())])
    return {
        "w": rows,
        # Every process holds it whole: written once.
        "replicated": np.full((5,), step, np.int64),
        "model": {"bias": torch.arange(7, dtype=torch.float32) + step} if torch else {},
        "step": step,
    }


def init(launcher):
    """The job's rank and size, after the launcher's runtime is up."""
    if launcher == "torch":
        import torch.distributed as dist  # pylint: disable=import-outside-toplevel
        dist.init_process_group("gloo")
        return dist.get_rank(), dist.get_world_size()
    from mpi4py import MPI  # pylint: disable=import-outside-toplevel
    return MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size()


def open_checkpointer(workdir):
    return ckptdb.Checkpointer(workdir, save_interval_steps=1, max_to_keep=None,
                               multiprocessing_options=ckptdb.MultiprocessingOptions(),
                               chunk_size_bytes=4096)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--launcher", choices=["torch", "mpi"], required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("scenario")
    parser.add_argument("args", nargs="*")
    parser.add_argument("--kill-rank", type=int, default=-1)
    parser.add_argument("--kill-at", type=int, default=-1)
    options = parser.parse_args()
    rank, count = init(options.launcher)
    torch = None
    try:
        import torch  # pylint: disable=import-outside-toplevel,redefined-outer-name
    except ImportError:
        pass

    ckpt = open_checkpointer(options.workdir)
    if options.scenario == "save":
        first, last = int(options.args[0]), int(options.args[1])
        for step in range(first, last + 1):
            assert ckpt.save(state_of(step, rank, count, torch), step=step)
            if rank == options.kill_rank and step == options.kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        ckpt.wait_until_finished()
        assert ckpt.latest_step == last, ckpt.all_steps
    elif options.scenario == "restore":
        latest = ckpt.latest_step
        step = latest if options.args[0] == "latest" else int(options.args[0])
        begin, end = part(COLS, rank, count)
        template = state_of(-1, 0, 1, torch)
        columns = np.zeros((ROWS, end - begin), np.float32)
        template["w"] = ckptdb.Sharded("float32", (ROWS, COLS), [ckptdb.Shard((0, begin), columns)])
        restored = ckpt.restore(template, step=step)
        assert np.array_equal(columns, global_values(step)[:, begin:end]), "wrong values"
        assert restored["step"] == step
        assert np.array_equal(restored["replicated"], np.full((5,), step, np.int64))
        if torch:
            assert torch.equal(restored["model"]["bias"], torch.arange(7, dtype=torch.float32) + step)
        boxes = ckpt.item_metadata(step)["leaves"]["w"]["boxes"]
        assert len(boxes) >= 1 and all(len(start) == 2 for start, _ in boxes), boxes
        print(f"restored {step}", flush=True)
    elif options.scenario == "mismatch":
        step = int(options.args[0])
        before = ckpt.all_steps
        state = state_of(step, rank, count, torch)
        if rank == count - 1:
            state["extra"] = np.zeros(3, np.float32)
        ckpt.save(state, step=step)
        try:
            ckpt.wait_until_finished()
        except ValueError as error:
            assert "extra" in str(error) and f"process {count - 1}" in str(error), str(error)
        else:
            raise AssertionError("a tree with an extra leaf on one process was saved")
        assert ckpt.all_steps == before, (ckpt.all_steps, before)
    else:
        raise ValueError(f"unknown scenario {options.scenario}")
    ckpt.close()
    if options.launcher == "torch":
        # Without it, gloo's threads can abort the interpreter's exit
        # ("terminate called without an active exception": torch with gloo).
        import torch.distributed as dist  # pylint: disable=import-outside-toplevel
        dist.destroy_process_group()
    print(f"rank {rank} ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
