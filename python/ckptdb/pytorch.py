"""PyTorch helpers: a model's and an optimizer's state in one call each.

    import ckptdb, ckptdb.pytorch
    with ckptdb.Checkpointer(workdir, save_interval_steps=100) as ckpt:
        first = 0
        if ckpt.latest_step is not None:
            last, _ = ckptdb.pytorch.restore(ckpt, model=model, optimizer=optimizer)
            first = last + 1
        for step in range(first, steps):
            ...
            ckptdb.pytorch.save(ckpt, step=step, model=model, optimizer=optimizer)

The model's state_dict is stored under "model", the optimizer's under
"optimizer": its per-parameter state (tensors) as such (entries that are
None by name), its param_groups (hyperparameters: numbers, booleans, None,
tuples) as a JSON string, where tuples come back as lists, which torch's
optimizers accept.
"""

import json


def _optimizer_tree(optimizer):
    state_dict = optimizer.state_dict()
    # Entries that are None (SGD's momentum_buffer without momentum) are no
    # leaves ckptdb stores: their names go along as JSON.
    return {
        "state": {str(index): {name: value for name, value in values.items() if value is not None}
                  for index, values in state_dict["state"].items()},
        "none_entries": json.dumps({str(index): [name for name, value in values.items()
                                                 if value is None]
                                    for index, values in state_dict["state"].items()}),
        "param_groups": json.dumps(state_dict["param_groups"]),
    }


def _optimizer_state_dict(tree):
    state = {int(index): dict(values) for index, values in tree["state"].items()}
    for index, names in json.loads(tree["none_entries"]).items():
        state.setdefault(int(index), {}).update({name: None for name in names})
    return {"state": state, "param_groups": json.loads(tree["param_groups"])}


def save(ckpt, *, step, model=None, optimizer=None, force=False, metrics=None, extra=None):
    """Saves the model's and the optimizer's state_dict (and `extra`, a
    pytree of anything else to keep, such as the data position) as `step`
    when due (or `force`); whether it saved."""
    state = {}
    if model is not None:
        state["model"] = dict(model.state_dict())
    if optimizer is not None:
        state["optimizer"] = _optimizer_tree(optimizer)
    if extra is not None:
        state["extra"] = extra
    return ckpt.save(state, step=step, force=force, metrics=metrics)


def restore(ckpt, *, model=None, optimizer=None, step=-1):
    """Loads `step` (-1: the latest) into the model and the optimizer; returns
    the step restored and the `extra` saved with it (None if none was)."""
    # Held while read: the step stays, whatever this process's own saves in
    # another thread prune meanwhile.
    hold = ckpt._hold(step)  # pylint: disable=protected-access
    try:
        tree = ckpt.restore(step=hold.step)
    finally:
        hold.release()
    if model is not None:
        model.load_state_dict(tree["model"])
    if optimizer is not None:
        optimizer.load_state_dict(_optimizer_state_dict(tree["optimizer"]))
    return hold.step, tree.get("extra")


__all__ = ["save", "restore"]
