"""How the Python package's costs grow with the number of leaves: one
operation on one size per run, in a fresh process, as bench/scale_bench.cc
measures the C++ API's.

    PYTHONPATH=build/python /usr/bin/python3 bench/python_scale_bench.py OPERATION N DIR

Operations: save_flat (a flat dict of N scalars, its keys inserted in a
shuffled order, saved: the tree is built from the dict and written), save (N tiny numpy arrays in a nested dict, "layers/123/attn/q/kernel" as
bench/scale_bench.cc lays them out, keys set in a shuffled order), restore
(that state into the same structure as template). Prints one line:
"python-scale operation=... n=... seconds=... peak_rss_mb=... before_rss_mb=...",
the peak taken from the kernel (VmHWM) after resetting it before the
operation, and what the process held before it (the interpreter, the state
and the open store).
"""

import random
import sys
import time

import numpy as np

import ckptdb

LEAVES = ["attn/q/kernel", "attn/k/kernel", "attn/v/kernel", "attn/o/kernel", "mlp/up/kernel",
          "mlp/down/kernel", "norm/scale", "norm/bias"]


def reset_peak():
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")


def status_megabytes(field):
    """VmHWM: the peak resident size since the last reset; VmRSS: now."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    return 0.0


def nested_state(n):
    order = list(range(n))
    random.Random(1).shuffle(order)
    state = {"layers": {}}
    for i in order:
        node = state["layers"].setdefault(str(i // 8), {})
        *maps, leaf = LEAVES[i % 8].split("/")
        for name in maps:
            node = node.setdefault(name, {})
        node[leaf] = np.arange(i * 4, i * 4 + 4, dtype=np.float32) * np.float32(0.25)
    return state


def main():
    operation, n, directory = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if operation in ("save_flat", "save"):
        state = {f"param_{i * 7919 % n}": 1 for i in range(n)} if operation == "save_flat" \
            else nested_state(n)
        ckpt = ckptdb.Checkpointer(directory, save_interval_steps=1)
        reset_peak()
        before = status_megabytes("VmRSS:")
        start = time.perf_counter()
        ckpt.save(state, step=1)
        ckpt.wait_until_finished()
    elif operation == "restore":
        state = nested_state(n)
        ckpt = ckptdb.Checkpointer(directory, save_interval_steps=1)
        if ckpt.latest_step is None:
            ckpt.save(state, step=1)
            ckpt.wait_until_finished()
        reset_peak()
        before = status_megabytes("VmRSS:")
        start = time.perf_counter()
        ckpt.restore(state, step=1)
    else:
        sys.exit(f"unknown operation {operation}")
    seconds = time.perf_counter() - start
    ckpt.close()
    print(f"python-scale operation={operation} n={n} seconds={seconds:.3f} "
          f"peak_rss_mb={status_megabytes('VmHWM:'):.0f} before_rss_mb={before:.0f}", flush=True)


if __name__ == "__main__":
    main()
