"""PyTorch tensors as leaves, the state_dict helper, and the example that
resumes bit-exact after a kill."""

import os
import subprocess
import sys

import numpy as np
import pytest

import ckptdb

torch = pytest.importorskip("torch")
import ckptdb.pytorch  # noqa: E402  (needs torch)

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "torch_train.py")


def test_torch_tensors_round_trip_as_torch_tensors(tmp_path):
    state = {
        "w": torch.randn(5, 7),
        "bf16": torch.randn(3, 4).to(torch.bfloat16),
        "half": torch.randn(6).to(torch.float16),
        "ids": torch.arange(10, dtype=torch.int64),
        "mask": torch.rand(4) > 0.5,
        "pair": (torch.ones(2), np.zeros(3, np.float32)),
        "grad": torch.randn(3, requires_grad=True),
        "strided": torch.randn(4, 6)[:, ::2],
    }
    with ckptdb.Checkpointer(str(tmp_path / "ckpt"), save_interval_steps=1) as ckpt:
        ckpt.save(state, step=0)
        restored = ckpt.restore()
        for key in ["w", "bf16", "half", "ids", "mask", "grad", "strided"]:
            assert isinstance(restored[key], torch.Tensor), key
            assert restored[key].dtype == state[key].dtype, key
            assert torch.equal(restored[key], state[key].detach()), key
        assert isinstance(restored["pair"], tuple)
        assert isinstance(restored["pair"][0], torch.Tensor)
        assert isinstance(restored["pair"][1], np.ndarray)
        # Into a template of torch tensors: in place with donate.
        template = {k: torch.zeros_like(v.detach()) if isinstance(v, torch.Tensor)
                    else v for k, v in state.items()}
        template["strided"] = torch.zeros(4, 3)
        template["pair"] = (torch.zeros(2), np.ones(3, np.float32))
        w = template["w"]
        again = ckpt.restore(template)
        assert again["w"] is w and torch.equal(w, state["w"])
        assert torch.equal(again["bf16"], state["bf16"])
        # donate=False: new tensors, the template untouched.
        fresh_template = {k: (torch.zeros_like(v) if isinstance(v, torch.Tensor) else v)
                          for k, v in template.items()}
        fresh = ckpt.restore(fresh_template, donate=False)
        assert fresh["w"] is not fresh_template["w"] and not fresh_template["w"].any()
        assert torch.equal(fresh["w"], state["w"])
        with pytest.raises(ValueError, match="contiguous"):
            ckpt.restore(dict(template, w=torch.zeros(7, 5).t()))


def test_the_state_dict_helper_restores_model_and_optimizer(tmp_path):
    torch.manual_seed(1)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1, betas=(0.8, 0.9))
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    with ckptdb.Checkpointer(str(tmp_path / "ckpt"), save_interval_steps=1) as ckpt:
        assert ckptdb.pytorch.save(ckpt, step=3, model=model, optimizer=optimizer,
                                   extra={"epoch": 2})
        other = torch.nn.Linear(4, 3)
        other_optimizer = torch.optim.Adam(other.parameters(), lr=0.5)
        step, extra = ckptdb.pytorch.restore(ckpt, model=other, optimizer=other_optimizer)
    assert step == 3 and extra == {"epoch": 2}
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)
    saved, loaded = optimizer.state_dict(), other_optimizer.state_dict()
    assert loaded["param_groups"][0]["lr"] == 0.1
    assert list(loaded["param_groups"][0]["betas"]) == [0.8, 0.9]
    for index, values in saved["state"].items():
        for name, value in values.items():
            assert torch.equal(loaded["state"][index][name], value), (index, name)


def run_example(workdir, *extra):
    env = dict(os.environ)
    return subprocess.run([sys.executable, EXAMPLE, "--workdir", workdir, *extra],
                          capture_output=True, text=True, env=env, timeout=120)


def test_the_example_killed_mid_run_resumes_bit_exact(tmp_path):
    whole = run_example(str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr
    killed = run_example(str(tmp_path / "killed"), "--kill-after", "17")
    assert killed.returncode == -9, killed.stderr
    resumed = run_example(str(tmp_path / "killed"))
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from step" in resumed.stdout
    final = [line for line in whole.stdout.splitlines() if line.startswith("final ")]
    assert final and final == [l for l in resumed.stdout.splitlines() if l.startswith("final ")]


def test_optimizer_state_entries_that_are_none_survive(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)  # no momentum: buffers are None
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    assert any(v is None for values in optimizer.state_dict()["state"].values()
               for v in values.values())
    with ckptdb.Checkpointer(str(tmp_path / "ckpt"), save_interval_steps=1) as ckpt:
        ckptdb.pytorch.save(ckpt, step=0, model=model, optimizer=optimizer)
        other = torch.optim.SGD(torch.nn.Linear(3, 2).parameters(), lr=0.5)
        ckptdb.pytorch.restore(ckpt, optimizer=other)
    assert other.state_dict()["state"] == optimizer.state_dict()["state"]
    assert other.state_dict()["param_groups"][0]["lr"] == 0.1


def test_ckptdb_imports_torch_only_to_restore_tensors_saved_as_torch(tmp_path):
    # A program that never imports torch does not pay for it (about 200 MB
    # and a second), yet a step saved with torch tensors restores as torch
    # tensors there too.
    workdir = str(tmp_path / "ckpt")
    with ckptdb.Checkpointer(workdir, save_interval_steps=1) as ckpt:
        ckpt.save({"w": torch.arange(6, dtype=torch.float32), "n": np.ones(2)}, step=0)
    script = f"""
import sys
import numpy as np
import ckptdb
assert "torch" not in sys.modules, "import ckptdb imported torch"
with ckptdb.Checkpointer({workdir!r}, save_interval_steps=1) as ckpt:
    ckpt.save({{"x": np.zeros(3)}}, step=1)
    ckpt.restore({{"w": np.zeros(6, np.float32), "n": np.zeros(2)}}, step=0)
    assert "torch" not in sys.modules, "a save or a restore into arrays imported torch"
    restored = ckpt.restore(step=0)
import torch
assert isinstance(restored["w"], torch.Tensor) and restored["w"].tolist() == list(range(6))
assert isinstance(restored["n"], np.ndarray)
"""
    subprocess.run([sys.executable, "-c", script], check=True, env=os.environ.copy())
