"""The ckptdb Python package through its public interface (Kauldron's)."""

import datetime
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import ckptdb

NUMPY_DTYPES = [np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
                np.uint32, np.uint64, np.float16, np.float32, np.float64]


def random_array(dtype, shape, seed):
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=int(np.prod(shape)) * np.dtype(dtype).itemsize,
                       dtype=np.uint8)
    return raw.view(dtype).reshape(shape).copy()


def make_state(seed=0):
    return {
        "params": {
            "dense": {"kernel": random_array(np.float32, (64, 32), seed),
                      "bias": random_array(np.float32, (32,), seed + 1)},
            "layers": [random_array(np.float64, (3, 5), seed + 2),
                       random_array(np.int8, (7,), seed + 3)],
        },
        "opt": (random_array(np.float32, (64, 32), seed + 4), {"count": 3}),
        "step": 10 + seed,
        "lr": 1e-3,
        "frozen": True,
        "name": "run-ü",
        "empty_dict": {},
        "empty_list": [],
        "empty_tuple": (),
        "scalar_array": np.float32(0.5),
        "zero_size": np.zeros((0, 4), np.float32),
    }


def assert_same(actual, expected, path="state"):
    # A numpy scalar comes back as a 0-d array from a restore without a
    # template (which has no way to tell them apart), as itself into one.
    assert type(actual) is type(expected) or (
        isinstance(expected, np.generic) and
        (isinstance(actual, np.generic) or getattr(actual, "ndim", None) == 0)), path
    if isinstance(expected, dict):
        assert sorted(actual) == sorted(expected), path
        for key in expected:
            assert_same(actual[key], expected[key], f"{path}/{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), path
        for index, (a, e) in enumerate(zip(actual, expected)):
            assert_same(a, e, f"{path}/{index}")
    elif isinstance(expected, (np.ndarray, np.generic)):
        assert actual.dtype == expected.dtype, path
        assert actual.shape == expected.shape, path
        assert np.asarray(actual).tobytes() == np.asarray(expected).tobytes(), path
    elif isinstance(expected, ckptdb.TensorBits):
        assert actual.dtype == expected.dtype, path
        assert actual.bits.tobytes() == expected.bits.tobytes(), path
    else:
        assert actual == expected, path


@pytest.fixture
def workdir(tmp_path):
    return str(tmp_path / "ckpt")


def test_kauldron_defaults_and_a_round_trip_of_every_kind_of_leaf(workdir):
    state = make_state()
    with ckptdb.Checkpointer(workdir, save_interval_steps=1) as ckpt:
        assert ckpt.latest_step is None and ckpt.all_steps == []
        assert ckpt.save(state, step=1) is True
        ckpt.wait_until_finished()
        assert ckpt.latest_step == 1 and ckpt.all_steps == [1]
        assert_same(ckpt.restore(), state)
        assert_same(ckpt.restore(step=1), state)


def test_every_numpy_dtype_round_trips_bit_exact(workdir):
    state = {np.dtype(d).name: random_array(d, (3, 4), i) for i, d in enumerate(NUMPY_DTYPES)}
    with ckptdb.Checkpointer(workdir, save_interval_steps=1) as ckpt:
        ckpt.save(state, step=0)
        assert_same(ckpt.restore(), state)
        metadata = ckpt.item_metadata(0)
        assert metadata["tree"]["float16"] == {"dtype": "float16", "shape": (3, 4),
                                               "logical_bytes": 24,
                                               "stored_bytes": metadata["tree"]["float16"]
                                               ["stored_bytes"]}


def test_dtypes_numpy_lacks_travel_as_their_raw_bits(workdir):
    state = {
        "bf16": ckptdb.TensorBits(random_array(np.uint16, (5, 3), 1), "bfloat16"),
        "e4m3": ckptdb.TensorBits(random_array(np.uint8, (8,), 2), "float8_e4m3fn"),
        "e5m2": ckptdb.TensorBits(random_array(np.uint8, (2, 2), 3), "float8_e5m2"),
    }
    with ckptdb.Checkpointer(workdir, save_interval_steps=1) as ckpt:
        ckpt.save(state, step=0)
        restored = ckpt.restore()
        assert_same(restored, state)
        assert ckpt.item_metadata()["leaves"]["bf16"]["dtype"] == "bfloat16"
        # In place, into a template of the same kind.
        template = {k: ckptdb.TensorBits(np.zeros_like(v.bits), v.dtype) for k, v in state.items()}
        again = ckpt.restore(template)
        assert again["bf16"] is template["bf16"]
        assert_same(again, state)
        with pytest.raises(ValueError, match="bfloat17"):
            ckpt.save({"x": ckptdb.TensorBits(np.zeros(2, np.uint16), "bfloat17")}, step=1)
        # Bits of another width would make the tensor larger than its buffer.
        with pytest.raises(ValueError, match="uint16"):
            ckpt.save({"x": ckptdb.TensorBits(np.zeros(10, np.uint8), "bfloat16")}, step=1)
        with pytest.raises(ValueError, match="must be an array of uint"):
            ckpt.restore({k: ckptdb.TensorBits(np.zeros(v.bits.size, np.int8), v.dtype)
                          for k, v in state.items()})


def test_restore_with_donate_writes_into_the_template_in_place(workdir):
    state = make_state(1)
    with ckptdb.Checkpointer(workdir, save_interval_steps=1) as ckpt:
        ckpt.save(state, step=5)
        template = make_state(2)
        kernel = template["params"]["dense"]["kernel"]
        restored = ckpt.restore(template)
        assert restored["params"]["dense"]["kernel"] is kernel
        assert isinstance(restored["opt"], tuple)
        assert_same(restored, state)
        # donate=False: the template keeps its values, the result holds new arrays.
        other = make_state(3)
        before = other["params"]["dense"]["kernel"].copy()
        fresh = ckpt.restore(other, donate=False)
        assert fresh["params"]["dense"]["kernel"] is not other["params"]["dense"]["kernel"]
        assert other["params"]["dense"]["kernel"].tobytes() == before.tobytes()
        assert_same(fresh, state)


def test_a_template_of_dicts_and_arrays_comes_back_as_it_is(workdir):
    state = {"a": {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, "b": np.ones(3, np.int64)}
    with ckptdb.Checkpointer(workdir, save_interval_steps=1) as ckpt:
        ckpt.save(state, step=0)
        template = {"a": {"w": np.zeros((2, 3), np.float32)}, "b": np.zeros(3, np.int64)}
        inner = template["a"]
        restored = ckpt.restore(template)
        assert restored is template and restored["a"] is inner
        assert_same(restored, state)
        # A scalar leaf is restored by value: its dict is a copy, the arrays
        # still the template's own.
        ckpt.save({"a": state["a"], "step": 7}, step=1)
        template = {"a": {"w": np.zeros((2, 3), np.float32)}, "step": 0}
        restored = ckpt.restore(template, step=1)
        assert restored is not template and restored["step"] == 7 and template["step"] == 0
        assert restored["a"] is template["a"]
        assert_same(restored["a"], state["a"])


def test_arrays_in_the_other_byte_order_are_saved_by_value(workdir):
    value = np.arange(12, dtype=np.float32).reshape(3, 4)
    swapped = value.astype(value.dtype.newbyteorder())
    with ckptdb.Checkpointer(workdir, save_interval_steps=1) as ckpt:
        ckpt.save({"w": swapped}, step=0)
        assert (ckpt.restore()["w"] == value).all()
        with pytest.raises(ValueError, match="byte order"):
            ckpt.restore({"w": np.zeros_like(swapped)})


def test_errors_about_a_leaf_name_its_whole_path(workdir):
    with ckptdb.Checkpointer(workdir, save_interval_steps=1) as ckpt:
        with pytest.raises(TypeError, match="'layers/1/w': a leaf must be"):
            ckpt.save({"layers": [{"w": np.zeros(1)}, {"w": object()}]}, step=0)
        with pytest.raises(TypeError, match=r"'opt/0/m': numpy dtype complex64"):
            ckpt.save({"opt": ({"m": np.zeros(2, np.complex64)},)}, step=0)
        with pytest.raises(TypeError, match=r"'w \(shard 1\)': a shard's data"):
            ckpt.save({"w": ckptdb.Sharded("float32", (4,), [
                ckptdb.Shard((0,), np.zeros(2, np.float32)), ckptdb.Shard((2,), [0.0, 1.0])])},
                step=0)
        assert ckpt.all_steps == []
        ckpt.save({"a": [{"b": np.ones(3, np.float32)}]}, step=0)
        with pytest.raises(ValueError, match="'a/0/b': a template to restore into needs writable"):
            ckpt.restore({"a": [{"b": np.zeros(6, np.float32)[::2]}]})


def test_a_mismatching_template_is_refused_and_left_untouched(workdir):
    with ckptdb.Checkpointer(workdir, save_interval_steps=1) as ckpt:
        ckpt.save({"w": np.ones((2, 3), np.float32)}, step=0)
        template = {"w": np.zeros((3, 2), np.float32)}
        with pytest.raises(ValueError, match="w"):
            ckpt.restore(template)
        assert not template["w"].any()
        with pytest.raises(ValueError, match="writable"):
            ckpt.restore({"w": np.zeros((2, 3), np.float32)[:, ::-1]})


def test_an_asynchronous_save_copies_before_returning(workdir):
    state = {"w": np.arange(1 << 20, dtype=np.float32)}
    expected = state["w"].copy()
    with ckptdb.Checkpointer(workdir, save_interval_steps=1) as ckpt:
        ckpt.save(state, step=0)
        state["w"][:] = -1  # the caller goes on training
        ckpt.wait_until_finished()
        assert ckpt.restore()["w"].tobytes() == expected.tobytes()


def test_save_decisions_follow_orbax(workdir):
    with ckptdb.Checkpointer(workdir, save_interval_steps=10, save_on_steps=[3],
                             max_to_keep=None) as ckpt:
        assert ckpt.should_save(7)  # an empty store saves its first step
        state = {"x": np.zeros(4)}
        saved = [s for s in range(25) if ckpt.maybe_save(state, step=s)]
        assert saved == [0, 3, 10, 20]
        assert [s for s in range(25, 45) if ckpt.should_save(s)] == [30, 40]
        assert ckpt.save(state, step=21) is False
        assert ckpt.save(state, step=21, force=True) is True
        with pytest.raises(FileExistsError):
            ckpt.save(state, step=21, force=True)
        assert ckpt.all_steps == [0, 3, 10, 20, 21]


def test_retention_by_count_and_by_best_metric(tmp_path):
    state = {"x": np.zeros(4)}
    with ckptdb.Checkpointer(str(tmp_path / "count"), save_interval_steps=1,
                             max_to_keep=2) as ckpt:
        for step in range(5):
            ckpt.save(state, step=step)
        ckpt.wait_until_finished()
        assert ckpt.all_steps == [3, 4]
    with ckptdb.Checkpointer(str(tmp_path / "best"), save_interval_steps=1, max_to_keep=2,
                             best_metric_path="eval/acc", best_mode="max") as ckpt:
        for step, acc in enumerate([0.5, 0.9, 0.1, 0.8, 0.2]):
            ckpt.save(state, step=step, metrics={"eval": {"acc": acc}})
        ckpt.wait_until_finished()
        assert ckpt.all_steps == [1, 3]
        assert ckpt.item_metadata(1)["metrics"] == {"eval/acc": 0.9}


def test_keep_time_interval_is_a_timedelta(workdir):
    with pytest.raises(TypeError, match="timedelta"):
        ckptdb.Checkpointer(workdir, save_interval_steps=1, keep_time_interval=60)
    with ckptdb.Checkpointer(workdir, save_interval_steps=1, max_to_keep=1,
                             keep_time_interval=datetime.timedelta(hours=1)) as ckpt:
        for step in range(3):
            ckpt.save({"x": np.zeros(1)}, step=step)
        ckpt.wait_until_finished()
        assert ckpt.all_steps == [0, 2]  # the first of the hour, and the latest


def test_errors_are_the_python_exceptions_users_expect(workdir, tmp_path):
    with pytest.raises(FileNotFoundError):
        ckptdb.Checkpointer(str(tmp_path / "none"), save_interval_steps=1, create=False)
    with pytest.raises(ValueError, match="save_interval_steps"):
        ckptdb.Checkpointer(workdir, save_interval_steps=0)
    with pytest.raises(ValueError, match="best_mode"):
        ckptdb.Checkpointer(workdir, save_interval_steps=1, best_mode="up")
    assert not os.path.exists(workdir)
    with pytest.raises(TypeError, match="MultiprocessingOptions"):
        ckptdb.Checkpointer(workdir, save_interval_steps=1, multiprocessing_options=object())
    with pytest.raises(TypeError, match="unknown option"):
        ckptdb.Checkpointer(workdir, save_interval_steps=1, no_such_option=1)
    ckpt = ckptdb.Checkpointer(workdir, save_interval_steps=1)
    with pytest.raises(BlockingIOError):
        ckptdb.Checkpointer(workdir, save_interval_steps=1)
    with pytest.raises(FileNotFoundError, match="step 7"):
        ckpt.restore(step=7)
    assert ckpt.restore({"x": 1}, noop_if_missing=True) == {"x": 1}
    with pytest.raises(TypeError, match="dict keys must be str"):
        ckpt.save({1: np.zeros(1)}, step=0)
    with pytest.raises(TypeError, match="None"):
        ckpt.save({"x": None}, step=0)
    with pytest.raises(ValueError, match="/"):
        ckpt.save({"a/b": np.zeros(1)}, step=0)
    with pytest.raises(TypeError, match="complex"):
        ckpt.save({"c": np.zeros(2, np.complex64)}, step=0)
    with pytest.raises(ValueError, match="metric"):
        ckpt.save({"x": 1}, step=0, metrics={"acc": "high"})
    assert ckpt.all_steps == []  # nothing refused was saved
    ckpt.save({"x": np.zeros(1)}, step=0)
    ckpt.delete(0)
    with pytest.raises(FileNotFoundError):
        ckpt.delete(0)
    ckpt.close()
    with pytest.raises(ValueError, match="closed"):
        ckpt.save({"x": 1}, step=1)


def test_hostile_arguments_get_precise_exceptions_and_change_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for workdir in (None, 3, ["a"]):
        with pytest.raises(TypeError, match="workdir"):
            ckptdb.Checkpointer(workdir, save_interval_steps=1)
    with pytest.raises(ValueError, match="NUL"):
        ckptdb.Checkpointer(str(tmp_path / "a\0b"), save_interval_steps=1)
    with pytest.raises(ValueError, match="empty"):
        ckptdb.Checkpointer("", save_interval_steps=1)
    assert os.listdir(tmp_path) == []  # nothing created: no ./None, no truncated path
    bad_options = [
        (TypeError, "save_interval_steps", dict(save_interval_steps="10")),
        (TypeError, "save_interval_steps", dict(save_interval_steps=2.5)),
        (TypeError, "max_to_keep", dict(save_interval_steps=1, max_to_keep="3")),
        (TypeError, "create", dict(save_interval_steps=1, create="yes")),
        (TypeError, "keep_time_interval", dict(save_interval_steps=1, keep_time_interval=60)),
        (ValueError, "keep_time_interval",
         dict(save_interval_steps=1, keep_time_interval=datetime.timedelta(milliseconds=500))),
        (ValueError, "keep_time_interval",
         dict(save_interval_steps=1, keep_time_interval=datetime.timedelta(seconds=1.5))),
        (TypeError, "save_on_steps", dict(save_interval_steps=1, save_on_steps=5)),
        (ValueError, "wait_for_store_seconds",
         dict(save_interval_steps=1, wait_for_store_seconds=float("nan"))),
        (ValueError, "worker_threads", dict(save_interval_steps=1, worker_threads=-1)),
        (TypeError, "staging_bytes", dict(save_interval_steps=1, staging_bytes=1.5)),
        (ValueError, "chunk_size_bytes", dict(save_interval_steps=1, chunk_size_bytes=1 << 40)),
    ]
    for kind, name, options in bad_options:
        with pytest.raises(kind, match=name):
            ckptdb.Checkpointer(str(tmp_path / "store"), **options)
    assert os.listdir(tmp_path) == []
    # bytes and os.PathLike paths name the same store.
    ckpt = ckptdb.Checkpointer(os.fsencode(tmp_path / "store"), save_interval_steps=1)
    with pytest.raises(TypeError, match="step"):
        ckpt.save({"x": 1}, step=3.7)
    with pytest.raises(TypeError, match="step"):
        ckpt.save({"x": 1}, step=True)
    with pytest.raises(TypeError, match="metrics"):
        ckpt.save({"x": 1}, step=3, metrics=0.5)
    with pytest.raises(TypeError, match="step"):
        ckpt.restore(step="latest")
    assert ckpt.all_steps == []
    # A second writer in this process is told so (not "another process").
    with pytest.raises(BlockingIOError, match="this process already has"):
        ckptdb.Checkpointer(tmp_path / "store", save_interval_steps=1)
    ckpt.save({"x": 1}, step=3)
    ckpt.close()
    reader = ckptdb.Checkpointer(tmp_path / "store", save_interval_steps=1, create=False)
    assert reader.all_steps == [3]
    with pytest.raises(RuntimeError, match="read-only"):
        reader.save({"x": 1}, step=4, force=True)
    reader.close()


def test_damaged_chunks_raise_corruption_error_never_wrong_data(workdir):
    with ckptdb.Checkpointer(workdir, save_interval_steps=1) as ckpt:
        ckpt.save({"w": random_array(np.float32, (1 << 18,), 5)}, step=0)
    tables = sorted((os.path.getsize(os.path.join(workdir, f)), f)
                    for f in os.listdir(workdir) if f.endswith(".sst"))
    chunk_file = os.path.join(workdir, tables[-1][1])  # the largest: the chunks
    with open(chunk_file, "r+b") as f:
        f.seek(4096)
        block = bytearray(f.read(64))
        f.seek(4096)
        f.write(bytes(b ^ 0xFF for b in block))
    with ckptdb.Checkpointer(workdir, save_interval_steps=1) as ckpt:
        with pytest.raises(ckptdb.CorruptionError, match="w"):
            ckpt.restore()
    assert issubclass(ckptdb.CorruptionError, OSError)


def test_an_evaluator_in_another_process_follows_the_trainer(workdir):
    with ckptdb.Checkpointer(workdir, save_interval_steps=1) as trainer:
        trainer.save({"w": np.full(8, 0.0)}, step=0)
        trainer.wait_until_finished()
        script = textwrap.dedent(f"""
            import sys, ckptdb
            ckpt = ckptdb.Checkpointer({workdir!r}, save_interval_steps=1, create=False)
            for step in ckpt.iter_new_checkpoints(timeout=3, poll_interval_secs=0.05):
                w = ckpt.restore(step=step)["w"]
                assert (w == float(step)).all(), (step, w)
                print(step, flush=True)
                if step == 4:
                    break
        """)
        evaluator = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                                     text=True, env=dict(os.environ))
        first = evaluator.stdout.readline()
        assert first.strip() == "0"
        for step in range(1, 5):
            trainer.save({"w": np.full(8, float(step))}, step=step)
            trainer.wait_until_finished()
        out, _ = evaluator.communicate(timeout=30)
        assert evaluator.returncode == 0
        seen = [0] + [int(line) for line in out.split()]
        assert seen == sorted(seen) and seen[-1] == 4


def test_iter_new_checkpoints_stops_at_its_timeout(workdir):
    with ckptdb.Checkpointer(workdir, save_interval_steps=1) as ckpt:
        assert list(ckpt.iter_new_checkpoints(timeout=0.2, poll_interval_secs=0.05)) == []
        ckpt.save({"x": 1}, step=3)
        ckpt.wait_until_finished()
        asked = []
        steps = ckpt.iter_new_checkpoints(timeout=0.1, poll_interval_secs=0.02,
                                          timeout_fn=lambda: asked.append(1) or len(asked) > 2)
        assert list(steps) == [3]
        assert len(asked) == 3  # kept waiting while timeout_fn said False


def test_ckpt_inspect_reads_what_python_saved(workdir):
    inspect = os.environ.get("CKPTDB_INSPECT")
    if not inspect:
        pytest.skip("CKPTDB_INSPECT names the ckpt-inspect binary (meson test sets it)")
    with ckptdb.Checkpointer(workdir, save_interval_steps=1) as ckpt:
        ckpt.save(make_state(), step=42)
    listed = subprocess.run([inspect, "list", workdir], capture_output=True, text=True,
                            check=True).stdout
    assert "42" in listed
    shown = subprocess.run([inspect, "show", workdir, "42"], capture_output=True, text=True,
                           check=True).stdout
    assert "params/dense/kernel" in shown and "float32" in shown
    verified = subprocess.run([inspect, "verify", workdir], capture_output=True, text=True)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_the_readme_example_runs(tmp_path):
    readme = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")
    with open(readme, encoding="utf-8") as f:
        code = f.read().split("```python\n", 1)[1].split("```", 1)[0]
    code = code.replace('"/runs/a/checkpoints"', repr(str(tmp_path / "ckpt")))
    scope = {"steps": 3, "loss": 0.5,
             "train_one_step": lambda s: s["params"]["encoder"]["kernel"].__iadd__(1)}
    exec(compile(code, "README.md", "exec"), scope)
    # save_interval_steps=1000: only step 0 (the first) was saved, after one step.
    assert scope["state"]["params"]["encoder"]["kernel"][0, 0] == 1
    assert isinstance(scope["whole"]["opt"], tuple)
    assert scope["whole"]["step"] == 0


def write_safetensors(path, tensors):
    """A safetensors file (8-byte header length, JSON header, bytes)."""
    names = {np.dtype(np.float32): "F32", np.dtype(np.int64): "I64", np.dtype(np.uint8): "U8"}
    header, data, offset = {}, b"", 0
    for name, array in tensors.items():
        raw = np.ascontiguousarray(array).tobytes()
        header[name] = {"dtype": names[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        data += raw
        offset += len(raw)
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text + data)


def test_checkpoints_cross_between_python_and_the_cpp_library(tmp_path):
    inspect = os.environ.get("CKPTDB_INSPECT")
    if not inspect:
        pytest.skip("CKPTDB_INSPECT names the ckpt-inspect binary (meson test sets it)")
    # C++ writes (ckpt-inspect import saves through the library), Python reads.
    tensors = {"params/kernel": random_array(np.float32, (33, 17), 8),
               "params/ids": random_array(np.int64, (5,), 9),
               "raw": random_array(np.uint8, (100,), 10)}
    write_safetensors(str(tmp_path / "in.safetensors"), tensors)
    workdir = str(tmp_path / "from_cpp")
    subprocess.run([inspect, "import", workdir, str(tmp_path / "in.safetensors"), "--step", "7"],
                   check=True, capture_output=True)
    with ckptdb.Checkpointer(workdir, save_interval_steps=1, create=False) as ckpt:
        assert ckpt.all_steps == [7]
        restored = ckpt.restore()
        assert_same(restored, {"params": {"kernel": tensors["params/kernel"],
                                          "ids": tensors["params/ids"]},
                               "raw": tensors["raw"]})
    # Python writes, C++ reads (ckpt-inspect export restores through the library).
    workdir = str(tmp_path / "from_python")
    with ckptdb.Checkpointer(workdir, save_interval_steps=1) as ckpt:
        ckpt.save({"params": {"kernel": tensors["params/kernel"]}, "n": 3}, step=9)
    out = str(tmp_path / "out.safetensors")
    subprocess.run([inspect, "export", workdir, "9", "--out", out], check=True,
                   capture_output=True)
    with open(out, "rb") as f:
        blob = f.read()
    length = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + length])
    begin, end = header["params/kernel"]["data_offsets"]
    assert header["params/kernel"]["dtype"] == "F32"
    assert blob[8 + length + begin:8 + length + end] == tensors["params/kernel"].tobytes()


def test_restore_of_the_latest_step_while_another_thread_saves_with_retention(workdir):
    import threading
    ckpt = ckptdb.Checkpointer(workdir, save_interval_steps=1, max_to_keep=1)
    ckpt.save(make_state(0), step=0)
    ckpt.wait_until_finished()
    stop = threading.Event()
    errors = []

    def train():
        step = 1
        while not stop.is_set():
            try:
                ckpt.save(make_state(step % 3), step=step)
                ckpt.wait_until_finished()
            except Exception as error:  # reported below
                errors.append(error)
                return
            step += 1

    trainer = threading.Thread(target=train)
    trainer.start()
    try:
        for _ in range(200):
            restored = ckpt.restore()
            assert_same(restored, make_state(restored["step"] - 10))
    finally:
        stop.set()
        trainer.join()
    assert not errors
    ckpt.close()


def test_noop_if_missing_of_a_reader_looks_for_steps_committed_since_it_opened(workdir):
    trainer = ckptdb.Checkpointer(workdir, save_interval_steps=1)
    reader = ckptdb.Checkpointer(workdir, save_interval_steps=1, create=False)
    template = {"x": np.zeros(4, np.float32)}
    assert reader.restore(template, noop_if_missing=True) is template
    trainer.save({"x": np.arange(4, dtype=np.float32)}, step=1)
    trainer.wait_until_finished()
    restored = reader.restore(template, noop_if_missing=True)
    assert restored["x"].tolist() == [0.0, 1.0, 2.0, 3.0]
    reader.close()
    trainer.close()


def test_the_step_an_evaluator_reads_is_held_against_retention(workdir):
    with ckptdb.Checkpointer(workdir, save_interval_steps=1, max_to_keep=1) as trainer:
        trainer.save({"w": np.full(4, 0.0)}, step=0)
        trainer.wait_until_finished()
        with ckptdb.Checkpointer(workdir, save_interval_steps=1, create=False) as reader:
            steps = reader.iter_new_checkpoints(timeout=1, poll_interval_secs=0.05)
            assert next(steps) == 0
            for step in (1, 2):
                trainer.save({"w": np.full(4, float(step))}, step=step)
                trainer.wait_until_finished()
            assert (reader.restore(step=0)["w"] == 0).all()  # held: not deleted
            assert next(steps) == 2  # releases step 0, holds step 2
            trainer.save({"w": np.full(4, 3.0)}, step=3)
            trainer.wait_until_finished()
            assert 0 not in trainer.all_steps
            assert 2 in trainer.all_steps
            steps.close()
