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
FileExistsError, ValueError (bad arguments), OSError (I/O),
ckptdb.CorruptionError (an OSError: stored bytes failed a check),
BlockingIOError (another process writes the store), NotImplementedError.
"""

import datetime
import json
import time

import numpy as np

from ckptdb._ckptdb import CorruptionError, TensorBits
from ckptdb import _ckptdb

try:
    import torch
except ImportError:  # PyTorch is optional
    torch = None

__all__ = ["Checkpointer", "CorruptionError", "TensorBits"]

# user_metadata keys under which a save records the paths of its tuples and
# of its torch tensors, so that restore() without a template gives them back.
_TUPLES_KEY = "ckptdb/python_tuples"
_TORCH_KEY = "ckptdb/python_torch"
# How often restore() looks the latest step up again when retention deletes
# it between the lookup and the hold (each time, a newer step exists).
_LATEST_STEP_ATTEMPTS = 16


def _is_torch(value):
    return torch is not None and isinstance(value, torch.Tensor)


def _torch_to_native(tensor, path, writable):
    """A CPU torch tensor as a numpy array sharing its memory (bfloat16: a
    TensorBits of its bits). A template to restore into must be contiguous
    and on the CPU; a tensor to save is copied there if it is not."""
    tensor = tensor.detach()
    if tensor.device.type != "cpu" or not tensor.is_contiguous():
        if writable:
            raise ValueError(f"'{path}': a template to restore into needs contiguous CPU "
                             "tensors")
        tensor = tensor.to("cpu").contiguous()
    if tensor.dtype == torch.bfloat16:
        return TensorBits(tensor.view(torch.int16).numpy().view(np.uint16), "bfloat16")
    return tensor.numpy()


def _native_to_torch(value):
    """A restored array (or bfloat16 bits) as a torch tensor on its memory."""
    if isinstance(value, TensorBits):
        if value.dtype != "bfloat16":
            return value  # no such torch dtype in this version
        return torch.from_numpy(value.bits.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(np.asarray(value))


def _join(path, key):
    """A child's path: keys joined with '/', as ckptdb's paths are."""
    return f"{path}/{key}" if path else str(key)


def _to_native(state, writable, torch_paths, tuple_paths, path=""):
    """`state` with its torch tensors as numpy views; the paths of its torch
    tensors and of its tuples collected on the way."""
    if isinstance(state, dict):
        return {key: _to_native(child, writable, torch_paths, tuple_paths, _join(path, key))
                for key, child in state.items()}
    if isinstance(state, (list, tuple)):
        items = [_to_native(child, writable, torch_paths, tuple_paths, _join(path, index))
                 for index, child in enumerate(state)]
        if isinstance(state, tuple):
            tuple_paths.append(path)
            return tuple(items)
        return items
    if _is_torch(state):
        torch_paths.append(path)
        return _torch_to_native(state, path, writable)
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
        return template if donate else _native_to_torch(restored)
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
    if path in tensors and torch is not None:
        return _native_to_torch(tree)
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
      multiprocessing_options: None only (one process). Default None.
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
        if multiprocessing_options is not None:
            raise NotImplementedError("multiprocessing_options: ckptdb's Python package "
                                      "writes from one process")
        if keep_time_interval is not None:
            if not isinstance(keep_time_interval, datetime.timedelta):
                raise ValueError("keep_time_interval must be a datetime.timedelta, got "
                                 f"{keep_time_interval!r}")
            keep_time_interval = int(keep_time_interval.total_seconds())
        options = dict(save_interval_steps=save_interval_steps, max_to_keep=max_to_keep,
                       keep_time_interval_seconds=keep_time_interval, keep_period=keep_period,
                       save_on_steps=list(save_on_steps) if save_on_steps is not None else None,
                       best_metric_path=best_metric_path, best_mode=best_mode, fast=fast,
                       create=create)
        options.update(ckptdb_options)
        self.workdir = str(workdir)
        self._native = _ckptdb.Checkpointer(self.workdir, options)

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
        user_metadata = {}
        torch_paths, tuples = [], []
        native = _to_native(state, False, torch_paths, tuples)
        if tuples:
            user_metadata[_TUPLES_KEY] = json.dumps(tuples)
        if torch_paths:
            user_metadata[_TORCH_KEY] = json.dumps(torch_paths)
        flat = _flat_metrics(metrics) if metrics is not None else {}
        return self._native.save(native, int(step), bool(force), flat, user_metadata,
                                 only_if_due)

    def should_save(self, step):
        """Whether a save at `step` is due (Orbax's rules)."""
        return self._native.should_save(int(step))

    # ---- Restoring ----

    def restore(self, state=None, *, step=-1, noop_if_missing=False, donate=True):
        """The state of `step` (-1: the latest). With a template `state` of the
        same structure, dtypes and shapes, its arrays are filled in place when
        `donate` (else left alone, the result holding new arrays); without,
        a new tree. FileNotFoundError when the step is missing; with
        `noop_if_missing` and no step at all, `state` itself."""
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
            return _with_python_types(tree, tuples, tensors)
        torch_paths = []
        native = _to_native(state, bool(donate), torch_paths, [])
        restored = self._native.restore_into(native, int(step), bool(donate))
        return _back_to_torch(state, restored, bool(donate)) if torch_paths else restored

    def _hold(self, step):
        """A hold on `step`; for -1, on the latest step, looked up again when
        retention deletes it between the lookup and the hold."""
        for _ in range(_LATEST_STEP_ATTEMPTS):
            try:
                return self._native.hold_step(int(step))
            except FileNotFoundError:
                if int(step) != -1:
                    raise
        return self._native.hold_step(int(step))

    def item_metadata(self, step=-1):
        """What `step` holds without reading tensor data: "tree" (nested dicts
        of each leaf's dtype and shape, or a scalar's value), "leaves" (the
        same by path), "metrics", "user_metadata", "step", "commit_time"."""
        metadata = self._native.item_metadata(int(step))
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
        self._native.delete(int(step))

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
