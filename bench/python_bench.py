"""The Python package against torch.save / torch.load and against ckptdb's
C++ API, on the same training state, interleaved round by round.

    PYTHONPATH=build/python /usr/bin/python3 bench/python_bench.py \
        --cpp-side build/bench/cpp_side [--megabytes 256] [--rounds 5]

The state: an MLP (64 -> H -> H -> 16, tanh) fitted with Adam for a few
steps, its parameters and both moments as torch float32 tensors (H sized so
that they fill --megabytes), as bench/trajectory.h makes for the C++ suite.
Each round takes one more Adam step, then, with every dirty page flushed
before each timed operation and the one that goes first taking turns:
  save     torch.save to a new file + fsync; ckptdb from Python (Save +
           wait_until_finished on a long-lived checkpointer, the torch
           tensors as leaves); the C++ API (bench/cpp_side: the same tensors
           read from a safetensors file first, the previous round's state
           saved first, untimed, as a long-lived checkpointer would have);
  restore  each in a fresh process after the files' pages were dropped from
           the page cache: torch.load; ckptdb's restore() from Python; the
           C++ API's RestoreTree (bench/cpp_side).
Prints medians, and the median (min-max) of the per-round ratios.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

import ckptdb


class Trajectory:
    """The MLP and its Adam optimizer; state() is what a trainer checkpoints."""

    def __init__(self, megabytes):
        floats = megabytes * (1 << 20) // 4 // 3  # parameters, then two moments as large
        hidden = int(floats ** 0.5)  # the H x H layer holds nearly all of them
        torch.manual_seed(42)
        self.model = torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.Tanh(),
                                         torch.nn.Linear(hidden, hidden), torch.nn.Tanh(),
                                         torch.nn.Linear(hidden, 16))
        self.teacher = torch.randn(64, 16)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        for _ in range(5):
            self.step()

    def step(self):
        x = torch.randn(16, 64)
        self.optimizer.zero_grad()
        target = torch.tanh(x @ self.teacher)
        torch.nn.functional.mse_loss(self.model(x), target).backward()
        self.optimizer.step()

    def state(self):
        params, mu, nu = {}, {}, {}
        for name, p in self.model.named_parameters():
            key = name.replace(".", "_")
            params[key] = p.detach().clone()
            mu[key] = self.optimizer.state[p]["exp_avg"].clone()
            nu[key] = self.optimizer.state[p]["exp_avg_sq"].clone()
        return {"params": params, "opt": {"mu": mu, "nu": nu}}


def flat(tree, path=""):
    if isinstance(tree, dict):
        out = {}
        for key, child in tree.items():
            out.update(flat(child, f"{path}/{key}" if path else key))
        return out
    return {path: tree}


def write_safetensors(path, tensors):
    header, offset = {}, 0
    for name, tensor in tensors.items():
        size = tensor.numel() * 4
        header[name] = {"dtype": "F32", "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text)
        for tensor in tensors.values():
            f.write(tensor.numpy().tobytes())


def drop_cache(path):
    paths = [path] if os.path.isfile(path) else [
        os.path.join(root, name) for root, _, names in os.walk(path) for name in names]
    for name in paths:
        fd = os.open(name, os.O_RDONLY)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)


def size_of(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(path) for name in names)


def seconds_of(command):
    """The numbers `command` printed (seconds)."""
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return [float(word) for word in out.split()]


TORCH_LOAD = ("import sys, time, torch\n"
              "start = time.monotonic(); torch.load(sys.argv[1])\n"
              "print(time.monotonic() - start)")
# Both restoring processes import torch before the clock starts: a program
# that restores torch tensors has imported it (ckptdb imports it only when
# a step holds torch tensors and the program has not).
PYTHON_RESTORE = ("import sys, time, torch, ckptdb\n"
                  "start = time.monotonic()\n"
                  "ckpt = ckptdb.Checkpointer(sys.argv[1], save_interval_steps=1, create=False)\n"
                  "ckpt.restore()\n"
                  "print(time.monotonic() - start)")


def in_turn(contenders, round_index):
    """Runs the contenders one after the other, starting with a different one
    each round: a read or write right after others ran up to 3x slower on
    these machines (the disk still busy with what came before), so that in
    a fixed order the same side always paid for it."""
    first = round_index % len(contenders)
    for contender in contenders[first:] + contenders[:first]:
        contender()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpp-side", required=True)
    parser.add_argument("--megabytes", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    trajectory = Trajectory(args.megabytes)
    warm = trajectory.state()
    logical = sum(t.numel() * 4 for t in flat(warm).values())
    times = {key: [] for key in ["torch_save", "py_save", "cpp_save", "py_blocking",
                                 "cpp_blocking", "torch_load", "py_restore", "cpp_restore"]}
    sizes = {}
    with tempfile.TemporaryDirectory(prefix="ckptdb-pybench-",
                                     dir=os.environ.get("CKPTDB_BENCH_DIR")) as scratch:
        # A long-lived Python checkpointer, as a trainer's, warmed up by a
        # first save; the C++ side saves the previous state first, untimed.
        py_store = os.path.join(scratch, "py")
        ckpt = ckptdb.Checkpointer(py_store, save_interval_steps=1, max_to_keep=None)
        ckpt.save(warm, step=0)
        ckpt.wait_until_finished()
        previous = os.path.join(scratch, "previous.safetensors")
        write_safetensors(previous, flat(warm))
        for round_index in range(1, args.rounds + 1):
            trajectory.step()
            state = trajectory.state()
            here = os.path.join(scratch, str(round_index))
            os.mkdir(here)
            torch_file = os.path.join(here, "state.pt")
            cpp_store = os.path.join(here, "cpp")
            source = os.path.join(here, "state.safetensors")
            write_safetensors(source, flat(state))

            def torch_save():
                os.sync()
                start = time.monotonic()
                torch.save(state, torch_file)
                with open(torch_file, "rb+") as f:
                    os.fsync(f.fileno())
                times["torch_save"].append(time.monotonic() - start)

            def py_save():
                os.sync()
                start = time.monotonic()
                ckpt.save(state, step=round_index)
                times["py_blocking"].append(time.monotonic() - start)
                ckpt.wait_until_finished()
                times["py_save"].append(time.monotonic() - start)

            def cpp_save():
                os.sync()
                blocking, whole = seconds_of([args.cpp_side, "save", previous, source, cpp_store])
                times["cpp_blocking"].append(blocking)
                times["cpp_save"].append(whole)

            def cold(key, path, command):
                def run():
                    drop_cache(path)
                    times[key].append(seconds_of(command)[-1])
                return run

            in_turn([torch_save, py_save, cpp_save], round_index)
            in_turn([cold("torch_load", torch_file, [sys.executable, "-c", TORCH_LOAD, torch_file]),
                     cold("py_restore", py_store, [sys.executable, "-c", PYTHON_RESTORE, py_store]),
                     cold("cpp_restore", cpp_store, [args.cpp_side, "restore", cpp_store])],
                    round_index)
            leaves = ckpt.item_metadata(round_index)["leaves"].values()
            sizes = {"torch": size_of(torch_file),
                     "py": sum(leaf.get("stored_bytes", 0) for leaf in leaves)}
            os.replace(source, previous)
            os.remove(torch_file)
        ckpt.close()

    def row(what, mine, theirs, speedup):
        ratios = [(t / m if speedup else m / t) for m, t in zip(times[mine], times[theirs])]
        gb = logical / 1e9
        print(f"{what:<52} {gb / statistics.median(times[mine]):>7.3f} "
              f"{gb / statistics.median(times[theirs]):>8.3f} "
              f"{statistics.median(ratios):>6.2f} ({min(ratios):.2f}-{max(ratios):.2f})")

    print(f"{args.rounds} interleaved rounds, {logical / (1 << 20):.0f} MiB of float32 "
          "(an MLP's parameters and Adam moments); GB/s, medians; ratio: median (min-max)")
    print(f"{'measurement':<52} {'ckptdb':>7} {'baseline':>8}  ratio")
    row("save until durable, Python vs torch.save + fsync", "py_save", "torch_save", True)
    row("cold restore, new process, Python vs torch.load", "py_restore", "torch_load", True)
    row("save, Python vs the C++ API (time ratio, 1 = same)", "py_save", "cpp_save", False)
    row("  its blocking phase, Python vs the C++ API (time)", "py_blocking", "cpp_blocking",
        False)
    row("cold restore, Python vs the C++ API (time ratio)", "py_restore", "cpp_restore", False)
    print(f"{'bytes stored for a step: ckptdb / torch.save file':<52} "
          f"{sizes['py'] / sizes['torch']:>7.3f}")


if __name__ == "__main__":
    main()
