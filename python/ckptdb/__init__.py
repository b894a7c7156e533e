"""ckptdb: a checkpoint store for training state, with Kauldron's interface.

    import ckptdb
    with ckptdb.Checkpointer("/runs/a/checkpoints", save_interval_steps=100) as ckpt:
        for step in range(n):
            state = train_step(state)
            ckpt.save(state, step=step)          # True when a save was due
        state = ckpt.restore(state)              # the latest step, in place

A state is a pytree: nested dicts (str keys), lists and tuples whose leaves
are numpy arrays (or numpy scalars), PyTorch tensors (when torch is
installed; a tensor off the CPU is copied there to be saved) and Python int,
float, bool and str.
Restoring gives the same structure back, tuples included (a numpy scalar
comes back as a 0-d array when restored without a template); tensor bytes are
never copied between Python and the library. Tensors of dtypes numpy lacks
(bfloat16, float8_e4m3fn, float8_e5m2) travel as ckptdb.TensorBits: the raw
bits as an unsigned-integer array of the same width, and the dtype's name;
a bfloat16 torch tensor is restored as one (float8 needs a torch that has
those dtypes: 1.13, Debian 12's, has not).

Errors are Python exceptions: FileNotFoundError (no such step or store),
FileExistsError (a forced save of a step already held), TypeError (an
argument of the wrong type, named), ValueError (an argument out of range, or
a tree or option the library refuses, named), OSError (I/O),
ckptdb.CorruptionError (an OSError: stored bytes failed a check),
BlockingIOError (another process, or another Checkpointer of this process,
writes the store), RuntimeError (the call does not fit the store's state: a
save or delete on a reader, a folder that is not a store, a step a reader
holds), NotImplementedError (a store of a newer format).
"""

import datetime
import json
import math
import numbers
import os
import sys
import time

import numpy as np

from ckptdb._ckptdb import CorruptionError, Shard, Sharded, TensorBits
from ckptdb import _ckptdb
from ckptdb.distributed import (Coordinator, MpiCoordinator, MultiprocessingOptions,
                                TorchDistributedCoordinator)

__all__ = ["Checkpointer", "Coordinator", "CorruptionError", "MpiCoordinator",
           "MultiprocessingOptions", "Shard", "Sharded", "TensorBits",
           "TorchDistributedCoordinator"]

# user_metadata keys under which a save records the paths of its tuples and
# of its torch tensors, so that restore() without a template gives them back.
_TUPLES_KEY = "ckptdb/python_tuples"
_TORCH_KEY = "ckptdb/python_torch"
# How often restore() looks the latest step up again when retention deletes
# it between the lookup and the hold (each time, a newer step exists).
_LATEST_STEP_ATTEMPTS = 16


def _workdir(path):
    """A store's path as the library takes it (bytes: file names need not be
    UTF-8): str, os.PathLike or bytes; TypeError or ValueError otherwise."""
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, (str, bytes)):
        raise TypeError(f"workdir must be a str, bytes or os.PathLike path, got "
                        f"{type(path).__name__}")
    path = os.fsencode(path)
    if not path:
        raise ValueError("workdir is empty")
    if b"\0" in path:
        raise ValueError(f"workdir {os.fsdecode(path)!r} holds a NUL character")
    return path


def _integer(name, value, minimum=None, maximum=None, optional=False):
    """`value` as an int (TypeError unless an integer, bools refused; None
    when `optional`), checked against the bounds (ValueError)."""
    if value is None and optional:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int{' or None' if optional else ''}, got "
                        f"{value!r}")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = (f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}")
        raise ValueError(f"{name} must be {bounds}, got {value}")
    return value


def _boolean(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return bool(value)


# ckptdb's own options and how each is checked (the library checks the
# rest: ranges that depend on each other, values it refuses).
_UINT32_MAX = (1 << 32) - 1
_INT64_MAX = (1 << 63) - 1
_NATIVE_OPTIONS = {
    "enable_async_checkpointing": lambda v: _boolean("enable_async_checkpointing", v),
    "owner_only": lambda v: _boolean("owner_only", v),
    "staging_bytes": lambda v: _integer("staging_bytes", v, 0, _INT64_MAX),
    "worker_threads": lambda v: _integer("worker_threads", v, 0, _UINT32_MAX),
    "chunk_size_bytes": lambda v: _integer("chunk_size_bytes", v, 0, _UINT32_MAX),
    "max_delta_chain": lambda v: _integer("max_delta_chain", v, 0, _UINT32_MAX),
    "wait_for_store_seconds": lambda v: _seconds("wait_for_store_seconds", v),
}


def _seconds(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0 or value > 1e9:
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value}")
    return float(value)


def _loaded_torch():
    """torch if this program has imported it, else None. A value can be a
    torch tensor only then, so ckptdb does not import torch to look (the
    import takes about 200 MB and a second or more)."""
    torch = sys.modules.get("torch")
    return torch if hasattr(torch, "Tensor") else None  # None, or torch mid-import


def _installed_torch():
    """torch, imported if needed, for leaves a save recorded as torch
    tensors; None when PyTorch (optional) is not installed."""
    try:
        import torch  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    return torch


def _is_torch(value):
    torch = _loaded_torch()
    return torch is not None and isinstance(value, torch.Tensor)


def _torch_to_native(tensor, path, writable):
    """A CPU torch tensor as a numpy array sharing its memory (bfloat16: a
    TensorBits of its bits). A template to restore into must be contiguous
    and on the CPU; a tensor to save is copied there if it is not."""
    torch = _loaded_torch()
    tensor = tensor.detach()
    if tensor.device.type != "cpu" or not tensor.is_contiguous():
        if writable:
            raise ValueError(f"'{path}': a template to restore into needs contiguous CPU "
                             "tensors")
        tensor = tensor.to("cpu").contiguous()
    if tensor.dtype == torch.bfloat16:
        return TensorBits(tensor.view(torch.int16).numpy().view(np.uint16), "bfloat16")
    return tensor.numpy()


def _native_to_torch(value, torch):
    """A restored array (or bfloat16 bits) as a torch tensor on its memory."""
    if isinstance(value, TensorBits):
        if value.dtype != "bfloat16":
            return value  # no such torch dtype in this version
        return torch.from_numpy(value.bits.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(np.asarray(value))


def _join(path, key):
    """A child's path: keys joined with '/', as ckptdb's paths are."""
    return f"{path}/{key}" if path else str(key)


def _path_string(chain):
    """The path of a (parent chain, key) chain: keys joined with '/', as
    ckptdb's paths are; made only when needed (a million-leaf state would
    otherwise make a million strings)."""
    keys = []
    while chain:
        chain, key = chain
        keys.append(str(key))
    return "/".join(reversed(keys))


# Leaves handed to the native side as they are (checked there).
_PASSED_AS_IS = (np.ndarray, int, float, bool, str)


def _to_native(state, writable, torch_paths, tuple_paths, chain=None):
    """`state` with its torch tensors as numpy views (`state` itself where
    there are none); the paths of its torch tensors and of its tuples
    collected on the way."""
    if isinstance(state, dict):
        converted = None
        for key, child in state.items():
            if type(child) in _PASSED_AS_IS:
                continue
            native = _to_native(child, writable, torch_paths, tuple_paths, (chain, key))
            if native is not child:
                if converted is None:
                    converted = dict(state)
                converted[key] = native
        return state if converted is None else converted
    if isinstance(state, (list, tuple)):
        items = [child if type(child) in _PASSED_AS_IS else
                 _to_native(child, writable, torch_paths, tuple_paths, (chain, index))
                 for index, child in enumerate(state)]
        if isinstance(state, tuple):
            tuple_paths.append(_path_string(chain))
            return tuple(items)
        return items
    if _is_torch(state):
        path = _path_string(chain)
        torch_paths.append(path)
        return _torch_to_native(state, path, writable)
    if isinstance(state, Sharded) and any(_is_torch(shard.data) for shard in state.shards):
        path = _path_string(chain)
        torch_paths.append(path)
        shards = [Shard(shard.start,
                        _torch_to_native(shard.data, f"{path} (shard {index})", writable)
                        if _is_torch(shard.data) else shard.data, shard.replica_id)
                  for index, shard in enumerate(state.shards)]
        return Sharded(state.dtype, state.global_shape, shards)
    return state


def _back_to_torch(template, restored, donate):
    """The restored tree with torch tensors where the template had them: the
    template's own (filled in place) when donated, else new ones."""
    if isinstance(template, dict):
        return {key: _back_to_torch(template[key], restored[key], donate) for key in template}
    if isinstance(template, (list, tuple)):
        items = [_back_to_torch(t, r, donate) for t, r in zip(template, restored)]
        return tuple(items) if isinstance(template, tuple) else items
    if _is_torch(template):
        return template if donate else _native_to_torch(restored, _loaded_torch())
    if isinstance(template, Sharded):
        if donate:
            return template
        torch = _loaded_torch()
        return Sharded(template.dtype, template.global_shape,
                       [Shard(mine.start, _native_to_torch(new.data, torch) if _is_torch(mine.data)
                              else new.data, mine.replica_id)
                        for mine, new in zip(template.shards, restored.shards)])
    return restored


def _with_python_types(tree, tuples, tensors, path=""):
    """`tree` with the lists at `tuples` turned back into tuples and the
    leaves at `tensors` into torch tensors."""
    if isinstance(tree, dict):
        return {key: _with_python_types(child, tuples, tensors, _join(path, key))
                for key, child in tree.items()}
    if isinstance(tree, list):
        items = [_with_python_types(child, tuples, tensors, _join(path, index))
                 for index, child in enumerate(tree)]
        return tuple(items) if path in tuples else items
    if path in tensors:
        torch = _installed_torch()
        return tree if torch is None else _native_to_torch(tree, torch)
    return tree


def _flat_metrics(metrics, path=""):
    """A pytree of numbers as {"a/b": float}."""
    if isinstance(metrics, dict):
        flat = {}
        for key, value in metrics.items():
            flat.update(_flat_metrics(value, _join(path, key)))
        return flat
    try:
        return {path: float(metrics)}
    except (TypeError, ValueError):
        raise ValueError(f"metric '{path}' is not a number: {metrics!r}") from None


def _nested(leaves):
    """{"a/b": x} as {"a": {"b": x}}."""
    tree = {}
    for path, value in leaves.items():
        if path == "":
            return value
        node = tree
        *parents, last = path.split("/")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return tree


class Checkpointer:
    """Saves and restores training state in a ckptdb store at `workdir`.

    Kauldron's kd.ckpts.Checkpointer arguments, with its defaults:
      save_interval_steps: save when step % save_interval_steps == 0.
      max_to_keep: keep at most this many steps (None: all). Default 3.
      keep_time_interval: a datetime.timedelta; also keep one step per
        interval of this length. Default None.
      keep_period: also keep steps that are multiples of it. Default None.
      save_on_steps: also save at these steps. Default None.
      best_metric_path: keep the best max_to_keep steps by this metric (a
        path of the `metrics` given to save, "a/b"). Default None.
      best_mode: 'max' or 'min'. Default 'max'.
      multiprocessing_options: ckptdb.MultiprocessingOptions: one checkpoint
        written by every process of a job (torchrun's or mpirun's; see
        ckptdb.distributed). Default None: this process alone.
      fast: True: zstd level 1; False: level 3, smaller. Default True.
      create: True: a writer (creates the store); False: a reader, e.g. an
        evaluator following a trainer. Default True.
    ckptdb's own options (keywords, see include/ckptdb/options.h):
      enable_async_checkpointing (True), staging_bytes (256 MiB),
      worker_threads (0: one per core), chunk_size_bytes (4 MiB),
      max_delta_chain (0), owner_only (True), wait_for_store_seconds (0).
    """

    def __init__(self, workdir, *, save_interval_steps, max_to_keep=3,
                 keep_time_interval=None, keep_period=None, save_on_steps=None,
                 best_metric_path=None, best_mode="max", multiprocessing_options=None,
                 fast=True, create=True, **ckptdb_options):
        native_multiprocessing = {}
        if multiprocessing_options is not None:
            if not isinstance(multiprocessing_options, MultiprocessingOptions):
                raise TypeError("multiprocessing_options must be a ckptdb.MultiprocessingOptions, "
                                f"got {type(multiprocessing_options).__name__}")
            # The coordinator lives as long as the checkpointer that uses it.
            self._coordinator, native_multiprocessing = (
                multiprocessing_options._native_options())  # pylint: disable=protected-access
        if keep_time_interval is not None:
            if not isinstance(keep_time_interval, datetime.timedelta):
                raise TypeError("keep_time_interval must be a datetime.timedelta, got "
                                f"{keep_time_interval!r}")
            seconds = keep_time_interval.total_seconds()
            if seconds <= 0 or seconds != int(seconds):
                raise ValueError("keep_time_interval must be a positive whole number of "
                                 f"seconds, got {keep_time_interval}")
            keep_time_interval = int(seconds)
        if save_on_steps is not None:
            if isinstance(save_on_steps, (str, bytes)) or not hasattr(save_on_steps, "__iter__"):
                raise TypeError(f"save_on_steps must be an iterable of ints, got {save_on_steps!r}")
            save_on_steps = [_integer("save_on_steps", step, 0) for step in save_on_steps]
        if best_metric_path is not None and not isinstance(best_metric_path, str):
            raise TypeError(f"best_metric_path must be a str, got {best_metric_path!r}")
        if not isinstance(best_mode, str):
            raise TypeError(f"best_mode must be 'max' or 'min', got {best_mode!r}")
        options = dict(save_interval_steps=_integer("save_interval_steps", save_interval_steps),
                       max_to_keep=_integer("max_to_keep", max_to_keep, optional=True),
                       keep_time_interval_seconds=keep_time_interval,
                       keep_period=_integer("keep_period", keep_period, optional=True),
                       save_on_steps=save_on_steps, best_metric_path=best_metric_path,
                       best_mode=best_mode, fast=_boolean("fast", fast),
                       create=_boolean("create", create))
        for name, value in ckptdb_options.items():
            if name not in _NATIVE_OPTIONS:
                raise TypeError(f"unknown option '{name}'")
            options[name] = _NATIVE_OPTIONS[name](value)
        options.update(native_multiprocessing)
        path = _workdir(workdir)
        self.workdir = os.fsdecode(path)
        self._native = _ckptdb.Checkpointer(path, options)

    # ---- Saving ----

    def save(self, state, *, step, force=False, metrics=None):
        """Saves `state` as `step` if a save is due (or `force`); returns
        whether it saved. With asynchronous checkpointing (the default) it
        returns once the state was copied: the caller may change its arrays
        then, but no other thread may change them while save runs."""
        return self._save(state, step, force, metrics, only_if_due=False)

    def maybe_save(self, state, *, step, force=False):
        """Saves `state` when should_save(step) (or `force`): whether it did."""
        return self._save(state, step, force, None, only_if_due=not force)

    def _save(self, state, step, force, metrics, only_if_due):
        step = _integer("step", step, 0)
        force = _boolean("force", force)
        if metrics is not None and not isinstance(metrics, dict):
            raise TypeError(f"metrics must be a dict of numbers (nested dicts allowed), got "
                            f"{metrics!r}")
        flat = _flat_metrics(metrics) if metrics is not None else {}
        try:
            return self._native.save(state, step, force, flat, {}, only_if_due, converted=False)
        except _ckptdb.NeedsConversion:
            pass  # torch tensors or tuples inside (nothing was saved): converted first
        user_metadata = {}
        torch_paths, tuples = [], []
        native = _to_native(state, False, torch_paths, tuples)
        if tuples:
            user_metadata[_TUPLES_KEY] = json.dumps(tuples)
        if torch_paths:
            user_metadata[_TORCH_KEY] = json.dumps(torch_paths)
        return self._native.save(native, step, force, flat, user_metadata, only_if_due,
                                 converted=True)

    def should_save(self, step):
        """Whether a save at `step` is due (Orbax's rules)."""
        return self._native.should_save(_integer("step", step, 0))

    # ---- Restoring ----

    def restore(self, state=None, *, step=-1, noop_if_missing=False, donate=True):
        """The state of `step` (-1: the latest). With a template `state` of the
        same structure, dtypes and shapes, its arrays are filled in place when
        `donate` (else left alone, the result holding new arrays; a dict of
        the template whose every value was filled in place is returned as
        it is, not copied); without, a new tree. FileNotFoundError when the step is missing; with
        `noop_if_missing` and no step at all, `state` itself."""
        step = _integer("step", step, -1)
        donate = _boolean("donate", donate)
        if noop_if_missing and not self.all_steps:
            self.reload()  # a reader's list may predate the writer's first commit
            if not self.all_steps:
                return state
        if state is None:
            # One hold across both calls: the tree and its metadata describe
            # the same step, which retention (of this process's own saves in
            # another thread too) leaves alone until it is read.
            hold = self._hold(step)
            try:
                metadata = self._native.item_metadata(hold.step)
                tree = self._native.restore_tree(hold.step)
            finally:
                hold.release()
            recorded = metadata["user_metadata"]
            tuples = set(json.loads(recorded.get(_TUPLES_KEY, "[]")))
            tensors = set(json.loads(recorded.get(_TORCH_KEY, "[]")))
            return _with_python_types(tree, tuples, tensors) if tuples or tensors else tree
        try:
            return self._native.restore_into(state, step, donate, converted=False)
        except _ckptdb.NeedsConversion:
            pass  # torch tensors inside (nothing was read): converted first
        torch_paths = []
        native = _to_native(state, donate, torch_paths, [])
        restored = self._native.restore_into(native, step, donate, converted=True)
        return _back_to_torch(state, restored, donate) if torch_paths else restored

    def _hold(self, step):
        """A hold on `step`; for -1, on the latest step, looked up again when
        retention deletes it between the lookup and the hold."""
        for _ in range(_LATEST_STEP_ATTEMPTS):
            try:
                return self._native.hold_step(step)
            except FileNotFoundError:
                if step != -1:
                    raise
        return self._native.hold_step(step)

    def item_metadata(self, step=-1):
        """What `step` holds without reading tensor data: "tree" (nested dicts
        of each leaf's dtype and shape, or a scalar's value), "leaves" (the
        same by path), "metrics", "user_metadata", "step", "commit_time"."""
        metadata = self._native.item_metadata(_integer("step", step, -1))
        metadata["tree"] = _nested(metadata["leaves"])
        return metadata

    @property
    def latest_step(self):
        return self._native.latest_step()

    @property
    def all_steps(self):
        return list(self._native.all_steps())

    def iter_new_checkpoints(self, *, min_interval_secs=0, timeout=None, timeout_fn=None,
                             poll_interval_secs=1.0):
        """Yields each new latest step as it appears (an evaluator following
        a trainer; intermediate steps are skipped), as Orbax's
        checkpoints_iterator: waits at least `min_interval_secs` between
        yields; after `timeout` seconds without a new step, stops if
        `timeout_fn` is None or returns True, else keeps waiting. The step
        yielded is held (the trainer's retention leaves it alone) until the
        caller asks for the next one."""
        last = None
        while True:
            started = time.monotonic()
            hold = None
            while hold is None:
                self.reload()
                latest = self.latest_step
                if latest is not None and (last is None or latest > last):
                    try:
                        hold = self._native.hold_step(latest)
                        break
                    except FileNotFoundError:  # deleted since: look again
                        pass
                if timeout is not None and time.monotonic() - started >= timeout:
                    if timeout_fn is None or timeout_fn():
                        return
                    started = time.monotonic()
                time.sleep(poll_interval_secs)
            visited = time.monotonic()
            last = latest
            try:
                yield latest
            finally:
                hold.release()
            rest = min_interval_secs - (time.monotonic() - visited)
            if rest > 0:
                time.sleep(rest)

    # ---- Housekeeping ----

    def delete(self, step):
        self._native.delete(_integer("step", step, 0))

    def reload(self):
        """Sees steps another process saved (a reader) or deleted."""
        self._native.reload()

    def wait_until_finished(self):
        """Returns once the save in flight is durable (raises its error)."""
        self._native.wait_until_finished()

    def close(self):
        self._native.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
