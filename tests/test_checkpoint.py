"""Stage checkpoints with real Orbax: round trips, 8 <-> 1 device restores in
a fresh process, retention, stage names, kill -9 mid-save, and 2 processes."""

import functools
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from _multiprocess import ckpt_worker as worker  # the state builders: both sides build the same thing
from _multiprocess.launch import process_env, result, run_processes
from w2sjax import parallel
from w2sjax.runner import checkpoint

WORKER = worker.__file__


def _run_worker(mode, ckpt_dir, out, n_devices):
    proc = subprocess.run(
        [sys.executable, WORKER, mode, str(ckpt_dir), str(out)],
        env=process_env(n_devices), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _assert_same(restored_flat, expected_flat):
    assert set(restored_flat) == set(expected_flat)
    for key, value in expected_flat.items():
        np.testing.assert_array_equal(restored_flat[key], value, err_msg=key)


def test_replicated_save_compiles_nothing(tmp_path):
    """On CPU devices a replicated array is written whole from one replica: no XLA program slices
    it for the others (one per array shape, before), and it reads back the same."""
    from jax import monitoring

    mesh = parallel.make_mesh()
    assert mesh.size > 1
    # first dimensions divisible by the replica count, which Orbax needs to split a write
    params = {"w": np.arange(16 * 5, dtype=np.float32).reshape(16, 5), "b": np.arange(mesh.size, dtype=np.float32)}
    placed = jax.tree.map(lambda a: jax.device_put(a, parallel.replicated(mesh)), params)
    compiled = []
    listener = lambda name, secs, **kw: compiled.append(kw.get("fun_name")) if "backend_compile" in name else None
    monitoring.register_event_duration_secs_listener(listener)
    try:
        checkpoint.save(tmp_path, "ceiling__m__seed0", 0, {"p": np.zeros(3, np.float32)}, final=True, model=placed)
    finally:
        monitoring.unregister_event_duration_listener(listener)
    assert compiled == []
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=parallel.replicated(mesh)), params)
    restored, _ = checkpoint.restore_model(tmp_path, "ceiling__m__seed0", abstract)
    for key, value in params.items():
        np.testing.assert_array_equal(np.asarray(restored[key]), value)


def test_arrays_are_written_uncompressed_and_compressed_ones_still_restore(tmp_path, monkeypatch):
    """The model and state items are written without zstd (zeros take their full size on disk, not a
    few bytes); a checkpoint written compressed, as before, restores to the same values."""
    zeros = {"w": np.zeros((512, 512), np.float32)}  # 1 MiB; zstd would make it a few hundred bytes
    preds = {"p": np.arange(6, dtype=np.float32)}
    checkpoint.save(tmp_path, "raw", 0, preds, final=True, checksum=True, model=zeros)
    assert checkpoint.model_bytes(tmp_path, "raw") >= zeros["w"].nbytes

    handlers = checkpoint._handlers
    monkeypatch.setattr(checkpoint, "_handlers", functools.partial(handlers, compress=True))
    checkpoint.save(tmp_path, "zstd", 0, preds, final=True, checksum=True, model=zeros)
    monkeypatch.setattr(checkpoint, "_handlers", handlers)
    assert checkpoint.model_bytes(tmp_path, "zstd") < zeros["w"].nbytes // 10
    target = {"w": jax.ShapeDtypeStruct((512, 512), np.float32)}
    for stage in ("raw", "zstd"):
        restored, _ = checkpoint.restore_model(tmp_path, stage, target)
        np.testing.assert_array_equal(np.asarray(restored["w"]), zeros["w"])
        state, _ = checkpoint.restore(tmp_path, stage, preds)
        np.testing.assert_array_equal(state["p"], preds["p"])


def test_round_trip_in_process(tmp_path):
    mesh = parallel.make_mesh(fsdp=2)
    state = worker.model_state(mesh, seed=0)
    checkpoint.save(tmp_path, "weak__glove-bow__seed0", 10, state, meta={"epoch": 3, "acc": np.float32(0.75)})

    restored, meta = checkpoint.restore(tmp_path, "weak__glove-bow__seed0", worker.abstract_state(mesh))
    assert meta == {"epoch": 3, "acc": 0.75}
    _assert_same(worker.flat(restored), worker.flat(state))
    assert type(restored["preds"]) is np.ndarray
    assert restored["position"] == 123
    assert jax.dtypes.issubdtype(restored["rng"].dtype, jax.dtypes.prng_key)
    kernel = restored["params"]["kernel"][...]
    assert kernel.sharding.spec == P(None, "fsdp") and len(kernel.sharding.device_set) == 8
    # Adam's moments come back as the same pytree types, on the target shardings.
    mu_kernel = restored["opt"][0].mu["kernel"][...]
    assert mu_kernel.sharding.spec == P(None, "fsdp")

    # A concrete state works as the target too.
    again, _ = checkpoint.restore(tmp_path, "weak__glove-bow__seed0", state)
    _assert_same(worker.flat(again), worker.flat(state))


def test_saved_on_8_devices_restores_on_1(tmp_path):
    mesh = parallel.make_mesh(fsdp=2)
    state = worker.model_state(mesh, seed=0)
    assert state["params"]["kernel"][...].sharding.spec == P(None, "fsdp")
    checkpoint.save(tmp_path, "xfer", 5, state, meta={"devices": 8}, final=True)

    out = tmp_path / "restored.npz"
    _run_worker("restore", tmp_path, out, n_devices=1)
    got = dict(np.load(out))
    assert json.loads(str(got.pop("__meta__"))) == {"devices": 8}
    assert int(got.pop("__kernel_ndev__")) == 1
    assert str(got.pop("__kernel_spec__")) == str(P())
    assert str(got.pop("__preds_type__")) == "ndarray"
    _assert_same(got, worker.flat(state))


def test_saved_on_1_device_restores_on_8(tmp_path):
    out = tmp_path / "saved.npz"
    _run_worker("save", tmp_path, out, n_devices=1)
    expected = dict(np.load(out))

    mesh = parallel.make_mesh(fsdp=2)
    assert checkpoint.is_done(tmp_path, "xfer")
    assert checkpoint.latest(tmp_path, "xfer") == (7, {"from": "worker"})
    restored, meta = checkpoint.restore(tmp_path, "xfer", worker.abstract_state(mesh))
    assert meta == {"from": "worker"}
    _assert_same(worker.flat(restored), expected)
    kernel = restored["params"]["kernel"][...]
    assert kernel.sharding.spec == P(None, "fsdp") and len(kernel.sharding.device_set) == 8


def test_done_latest_and_retention(tmp_path):
    stage = "w2s__glove-bow__minilm-l6__logconf__seed0"
    assert checkpoint.latest(tmp_path, stage) is None
    assert not checkpoint.is_done(tmp_path, stage)
    with pytest.raises(FileNotFoundError):
        checkpoint.restore(tmp_path, stage, {"w": np.zeros(3)})

    def st(v):
        return {"w": np.full(3, float(v)), "step": v}

    target = {"w": np.zeros(3), "step": 0}
    for step in (1, 2, 3):
        checkpoint.save(tmp_path, stage, step, st(step), meta={"step": step}, keep=2)
    assert checkpoint.latest(tmp_path, stage) == (3, {"step": 3})
    assert not checkpoint.is_done(tmp_path, stage)
    with pytest.raises(FileNotFoundError):
        checkpoint.restore(tmp_path, stage, target, step=1)  # beyond keep=2

    checkpoint.save(tmp_path, stage, 4, st(4), meta={"step": 4, "acc": 0.8}, final=True, keep=2)
    assert checkpoint.is_done(tmp_path, stage)
    assert checkpoint.latest(tmp_path, stage) == (4, {"step": 4, "acc": 0.8})

    # Later saves (e.g. a continued run) never evict the final step.
    for step in (5, 6, 7):
        checkpoint.save(tmp_path, stage, step, st(step), meta={"step": step}, keep=1)
    assert checkpoint.is_done(tmp_path, stage)
    assert checkpoint.latest(tmp_path, stage)[0] == 7
    state, meta = checkpoint.restore(tmp_path, stage, target, step=4)
    np.testing.assert_array_equal(state["w"], np.full(3, 4.0))
    assert state["step"] == 4 and meta["acc"] == 0.8
    for gone in (5, 6):
        with pytest.raises(FileNotFoundError):
            checkpoint.restore(tmp_path, stage, target, step=gone)

    # Saving an existing step replaces it.
    checkpoint.save(tmp_path, stage, 7, st(70), meta={"step": 7, "redo": True})
    state, meta = checkpoint.restore(tmp_path, stage, target)
    assert state["step"] == 70 and meta == {"step": 7, "redo": True}

    # Stages are independent.
    assert checkpoint.latest(tmp_path, "other") is None


def test_stage_names_are_sanitized(tmp_path):
    assert checkpoint.stage_dirname("weak__glove-bow__seed0") == "weak__glove-bow__seed0"
    odd = "../w2s/gpt 2: α=0.5"
    name = checkpoint.stage_dirname(odd)
    assert "/" not in name and ".." not in name and " " not in name and name.isascii()
    assert checkpoint.stage_dirname("a/b") != checkpoint.stage_dirname("a_b")
    assert checkpoint.stage_dirname("a/b") != checkpoint.stage_dirname("a?b")

    ckpt = tmp_path / "checkpoints"
    checkpoint.save(ckpt, odd, 0, {"x": np.ones(2)}, meta={"name": odd}, final=True)
    assert os.listdir(ckpt) == [name]  # stayed inside ckpt_dir
    assert checkpoint.is_done(ckpt, odd)
    assert checkpoint.latest(ckpt, odd) == (0, {"name": odd})
    assert not checkpoint.is_done(ckpt, "a/b")


def test_kill_9_mid_save_keeps_last_good_step(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, WORKER, "save_big", str(tmp_path), "-"],
        env=process_env(1), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "SAVING", "worker failed before the big save"
        stage_dir = tmp_path / checkpoint.stage_dirname("kill")
        deadline = time.time() + 30
        killed_mid_save = False
        while time.time() < deadline and proc.poll() is None:
            names = os.listdir(stage_dir)
            if any(n.startswith("2.") and "tmp" in n for n in names) and "2" not in names:
                proc.send_signal(signal.SIGKILL)
                killed_mid_save = True
                break
            time.sleep(0.001)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert killed_mid_save, "the 256 MB save finished before it could be interrupted"
    assert proc.returncode == -signal.SIGKILL
    assert any("tmp" in n for n in os.listdir(stage_dir))  # the half-written step

    # Readers ignore the half-written step 2.
    assert checkpoint.latest(tmp_path, "kill") == (1, {"step": 1})
    assert not checkpoint.is_done(tmp_path, "kill")
    state, meta = checkpoint.restore(tmp_path, "kill", {"w": np.zeros(4), "step": 0})
    np.testing.assert_array_equal(state["w"], np.arange(4.0))
    assert state["step"] == 1 and meta == {"step": 1}

    # The next save cleans the leftovers and succeeds.
    checkpoint.save(tmp_path, "kill", 2, {"w": np.ones(4), "step": 2}, meta={"step": 2}, final=True)
    assert not any("tmp" in n for n in os.listdir(stage_dir))
    assert checkpoint.latest(tmp_path, "kill") == (2, {"step": 2})
    assert checkpoint.is_done(tmp_path, "kill")


def test_two_process_save_and_restore(tmp_path):
    """Collective save/restore of a global array split over 2 processes."""
    outputs = run_processes([sys.executable, WORKER, "dist", str(tmp_path / "ck"), "-"], tmp_path)
    results = [result(out) for out in outputs]
    for pid, r in enumerate(results):
        assert r["process_index"] == pid
        assert r["meta"] == {"step": 1}
        assert r["x_equal"] and not r["x_fully_addressable"]
        assert r["labels"] == [0, 1, 2, 3, 4] and r["position"] == 9


def test_lost_tensorstore_reads_of_a_damaged_checkpoint_stay_off_the_log_and_other_errors_do_not():
    """A failed restore can leave TensorStore read tasks whose errors asyncio logs, with a traceback
    of asyncio's frames only, after the damage was reported in one line; other errors still show."""
    import logging
    import sys

    def record(exc):
        try:
            raise exc
        except ValueError:
            info = sys.exc_info()
        return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, "Task exception was never retrieved\n"
                                 "future: <Task finished coro=<_wrap_awaitable()>>", (), info)

    lost = ValueError('OUT_OF_RANGE: Error reading "test/.zarray" in OCDBT database [tensorstore_spec=\'{}\']')
    assert checkpoint._not_a_lost_orbax_read(record(lost)) is False
    assert checkpoint._not_a_lost_orbax_read(record(ValueError("a bug of its own"))) is True


def test_unraisable_hooks_installed_again_do_not_call_each_other_for_ever():
    """The restore hook and the SIGINT hook, each installed again after a test runner put back the
    hook it found (as pytest does around every test), hand an unrelated exception on once to the
    hook below them: no cycle, no RecursionError."""
    import types

    from w2sjax.runner import sigint

    saved, saved_previous = sys.unraisablehook, sigint._previous_hook
    seen = []
    try:
        sys.unraisablehook = seen.append  # the hook found at start
        checkpoint._ignore_late_reads()
        sigint.install()
        top = sys.unraisablehook
        sys.unraisablehook = top  # what a runner restores after a test: the hook the test left
        checkpoint._ignore_late_reads()
        sigint.install()
        unraisable = types.SimpleNamespace(exc_type=ValueError, exc_value=ValueError("x"), exc_traceback=None,
                                           err_msg=None, object=None)
        sys.unraisablehook(unraisable)
        assert seen == [unraisable]
        late_read = types.SimpleNamespace(exc_type=RuntimeError, exc_value=RuntimeError("Event loop is closed"),
                                          exc_traceback=None, err_msg=None, object=None)
        sys.unraisablehook(late_read)
        assert seen == [unraisable]  # still kept quiet
    finally:
        sys.unraisablehook, sigint._previous_hook = saved, saved_previous
