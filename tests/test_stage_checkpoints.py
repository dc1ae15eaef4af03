"""In-stage and finished-stage checkpoints as the runner uses them: every one verified before use,
tied to the mesh that trained it, a finished stage kept small, Ctrl-C and repeated kills.

The damage is real (bits flipped in the files Orbax wrote, runs stopped right after a real
in-stage save) and the reference is always the same experiment run uninterrupted.
"""

import dataclasses
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

from _multiprocess.launch import process_env

# A restore that fails leaves Orbax's TensorStore reads un-awaited; the command silences them
# (checkpoint._ignore_late_reads), pytest's own hook reports them as warnings.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
from w2sjax import experiment
from w2sjax.config import Config, DataConfig, StudentTrainConfig, TrainConfig
from w2sjax.runner import checkpoint

ROOT = pathlib.Path(__file__).resolve().parents[1]
W2S = "w2s__linear__mlp__xent__seed0"


def tiny(**train) -> Config:
    """digits, a linear supervisor and an MLP student: a second per stage; the student saves an
    in-stage checkpoint every 10 of its 42 steps."""
    return Config(
        data=DataConfig(task="digits", n_val=64, n_test=256), weak_models=("linear",), strong_models=("mlp",),
        losses=("xent",), seeds=(0,), weak_train=TrainConfig(epochs=3, batch_size=64, lr=1e-2),
        train=StudentTrainConfig(**{"epochs": 2, "batch_size": 32, "lr": 1e-2, "log_every": 5, "checkpoint_every": 10,
                                    **train}),
    )


def rows(results: dict) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "stage_seconds"} for r in results["runs"]]


class Killed(BaseException):
    """Stands for kill -9 right after an in-stage save: nothing of the run's own clean-up runs."""


def run_killed_after(config: Config, out: pathlib.Path, stage: str, step: int, monkeypatch) -> None:
    """Run ``config`` into ``out`` and stop it dead right after ``stage`` saved in-stage ``step``."""
    original = experiment._OrbaxStage.save

    def save(self, at, state):
        original(self, at, state)
        if self.stage.startswith(stage + "--") and at == step:
            raise Killed

    with monkeypatch.context() as m:
        m.setattr(experiment._OrbaxStage, "save", save)
        with pytest.raises(Killed):
            experiment.run(config, out, progress=False)


def stage_folder(out: pathlib.Path, stage: str) -> pathlib.Path:
    [found] = [p for p in (out / "checkpoints").glob(f"{stage}--*") if not p.name.endswith(".out")]
    return found


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    return rows(experiment.run(tiny(), out, progress=False))


@pytest.fixture(scope="module")
def killed(tmp_path_factory, reference):
    """The run stopped dead inside the student right after its in-stage step 20 (10 is kept too)."""
    out = tmp_path_factory.mktemp("killed") / "run"
    with pytest.MonkeyPatch.context() as m:
        run_killed_after(tiny(), out, W2S, 20, m)
    steps = sorted(int(p.name) for p in stage_folder(out, W2S).iterdir() if p.name.isdigit())
    assert steps == [10, 20]
    return out


def test_resume_after_a_kill_gives_the_reference(killed, reference, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(killed, out)
    assert rows(experiment.run(tiny(), out, progress=False)) == reference


def test_a_run_with_the_update_split_over_devices_resumes_to_the_reference(reference, tmp_path, monkeypatch):
    """Every array of 8 or more rows split over the devices as the optimizer's state (ZeRO stage 1,
    `parallel.update_shardings`; the real threshold leaves this MLP whole): a run killed after an
    in-stage save and resumed from those split moments ends with the numbers of the reference,
    which updated every array whole."""
    from w2sjax import parallel

    monkeypatch.setattr(parallel, "UPDATE_SPLIT_MIN_SIZE", 1)
    out = tmp_path / "run"
    run_killed_after(tiny(), out, W2S, 20, monkeypatch)
    assert rows(experiment.run(tiny(), out, progress=False)) == reference


def _flip_one_bit(step_dir: pathlib.Path, rng: np.random.Generator) -> str:
    # A bit drawn uniformly over all the step's bytes (not a file first, then a bit): how many small
    # metadata files Orbax writes varies from run to run, and must not decide where the flips land.
    files = sorted(p for p in step_dir.rglob("*") if p.is_file() and p.stat().st_size)
    sizes = np.array([p.stat().st_size for p in files], np.int64)
    at = int(rng.integers(int(sizes.sum()) * 8))
    index = int(np.searchsorted(np.cumsum(sizes) * 8, at, side="right"))
    target = files[index]
    raw = bytearray(target.read_bytes())
    bit = at - int(sizes[:index].sum()) * 8
    raw[bit // 8] ^= 1 << (bit % 8)
    target.write_bytes(bytes(raw))
    return f"{target.relative_to(step_dir)} bit {bit}"


FLIPS = 24


def test_bit_flips_in_the_newest_in_stage_checkpoint_never_change_the_numbers(killed, reference, tmp_path, capfd):
    """Each of 24 random single-bit flips anywhere in the newest in-stage step's files: the resumed
    run ends with the reference numbers (the damage caught, one warning line, or harmless), or
    stops with an error; never with other numbers."""
    from w2sjax.data import registry

    rng = np.random.default_rng(20261206)
    caught = 0
    # the damage is in the checkpoint, not the data: digits is read from disk by the first run only
    with registry.reuse_loaded_tasks():
        for i in range(FLIPS):
            out = tmp_path / f"flip{i}"
            shutil.copytree(killed, out)
            where = _flip_one_bit(stage_folder(out, W2S) / "20", rng)
            capfd.readouterr()
            got = rows(experiment.run(tiny(), out, progress=False))
            assert got == reference, where
            warnings = [line for line in capfd.readouterr().err.splitlines() if line.startswith("w2sjax: warning")]
            warnings = [w for w in warnings if "damaged" in w or "restarting" in w]
            assert len(warnings) <= 1, (where, warnings)
            caught += bool(warnings)
            shutil.rmtree(out)
    assert caught >= FLIPS // 2  # most bytes are the state's data, and each flip there is caught


def test_restore_checks_the_in_stage_checksum(tmp_path):
    state = {"w": np.arange(4, dtype=np.float32)}
    for step in (5, 10):
        checkpoint.save(tmp_path, "s", step, {"w": state["w"] + step}, meta={"step": step}, checksum=True)
    meta_file = tmp_path / "s" / "10" / "meta" / "metadata"
    record = json.loads(meta_file.read_text())
    record["w2sjax_sha256"] = "0" * 64
    meta_file.write_text(json.dumps(record))
    restored, meta = checkpoint.restore_newest_good(tmp_path, "s", state, require_checksum=True)
    assert meta["step"] == 5 and restored["w"].tolist() == [5, 6, 7, 8]
    # A step saved without a checksum is not trusted when one is required.
    checkpoint.save(tmp_path, "s", 15, state, meta={"step": 15})
    with pytest.raises(checkpoint.DamagedCheckpoint, match="no sha256"):
        checkpoint.restore(tmp_path, "s", state, require_checksum=True)


def test_nan_right_after_a_resume_points_at_the_checkpoint():
    from w2sjax import train

    state = train.TrainState(step=np.int32(11), params={}, frozen={}, opt_state=(), best_params={},
                             best_score=np.float32(0), evals_since_best=np.int32(0),
                             first_nonfinite_step=np.int32(10), first_loss=np.float32(1), blowup_step=np.int32(-1),
                             finished=np.bool_(False))
    with pytest.raises(FloatingPointError, match="first step after resuming from its in-stage checkpoint"):
        train.check_divergence(state, "s", 1e-2, resumed_from=10)
    with pytest.raises(FloatingPointError, match="lower its learning rate"):
        train.check_divergence(state, "s", 1e-2, resumed_from=5)


# ---- a finished stage ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def finished(tmp_path_factory, reference):
    out = tmp_path_factory.mktemp("finished") / "run"
    experiment.run(tiny(), out, progress=False)
    return out


def test_a_finished_stage_keeps_its_outputs_and_trained_parameters_only(finished):
    ckpts = finished / "checkpoints"
    # no in-stage steps left (they held the optimizer's moments): one .out folder per stage, one step each
    assert all(p.name.endswith(".out") for p in ckpts.iterdir()), sorted(p.name for p in ckpts.iterdir())
    for stage in ckpts.iterdir():
        assert sorted(p.name for p in stage.iterdir() if p.name.isdigit()) == ["0"]
        assert sorted(p.name for p in (stage / "0").iterdir() if p.is_dir()) == ["meta", "model", "state"]


def test_a_finished_stage_rebuilds_the_model_that_made_its_predictions(finished):
    import jax

    results = json.loads((finished / "results.json").read_text())
    stage = results["runs"][0]["stages"]["w2s"]
    runner, task, _ = experiment.prepare(tiny(), finished, progress=False)
    try:
        module = runner.trained_module(stage, "mlp", seed=0)
        sr = experiment.SeedRun(runner, task, 0)
        x = np.asarray(task.test["x"][sr.test["row"]], np.float32)
        probs = np.asarray(jax.nn.softmax(module(x), axis=-1))
        target = {k: np.zeros((len(idx), task.num_classes), np.float32) for k, (_, idx) in sr.evals.items()}
        saved, _ = checkpoint.restore(finished / "checkpoints", f"{stage}.out", target)
        np.testing.assert_allclose(probs, saved["test"], atol=1e-5)
    finally:
        experiment.rundir.release(finished)


def test_a_damaged_finished_model_is_caught_when_loaded(finished, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    stage = json.loads((out / "results.json").read_text())["runs"][0]["stages"]["w2s"]
    data = [p for p in (out / "checkpoints" / f"{stage}.out" / "0" / "model").rglob("*")
            if p.is_file() and p.parent.name == "d"]
    assert data
    for f in data:
        raw = bytearray(f.read_bytes())
        raw[len(raw) // 2] ^= 0x10
        f.write_bytes(bytes(raw))
    runner, _, _ = experiment.prepare(tiny(), out, progress=False)
    try:
        with pytest.raises(checkpoint.DamagedCheckpoint, match="model"):
            runner.trained_module(stage, "mlp", seed=0)
    finally:
        experiment.rundir.release(out)


# ---- another mesh ----------------------------------------------------------------------------

KILLER = str(ROOT / "tests" / "_multiprocess" / "kill_after_save.py")
TINY_ARGS = ["--set", "data.task=digits", "--set", "weak_models=linear", "--set", "strong_models=mlp",
             "--set", "losses=xent", "--set", "seeds=0", "--set", "data.n_val=64", "--set", "data.n_test=256",
             "--set", "weak_train.epochs=3", "--set", "weak_train.batch_size=64", "--set", "weak_train.lr=1e-2",
             "--set", "train.epochs=2", "--set", "train.batch_size=32", "--set", "train.lr=1e-2",
             "--set", "train.log_every=5", "--set", "train.checkpoint_every=10"]


def cli(out, devices: int, *, killer=()) -> subprocess.CompletedProcess:
    command = [*killer, str(out)] if killer else ["-m", "w2sjax.cli", "run", "--out", str(out), "--no-progress"]
    return subprocess.run([sys.executable, *command, *TINY_ARGS], env=process_env(devices), capture_output=True,
                          text=True, timeout=600)


def test_a_stage_checkpointed_on_2_devices_restarts_on_1(tmp_path):
    """The device count decides the batch size's rounding and the order of sharded sums, so an
    in-stage checkpoint is used only on the mesh that saved it: on another one the stage starts
    over, saying so, and ends as a fresh start of that stage on the new mesh would."""
    killed = tmp_path / "killed"
    proc = cli(killed, 2, killer=(KILLER, W2S, "20"))
    assert proc.returncode == 137, proc.stderr[-3000:]
    fresh = tmp_path / "fresh"  # the same directory with the interrupted stage's steps deleted
    shutil.copytree(killed, fresh)
    shutil.rmtree(stage_folder(fresh, W2S))

    resumed = cli(killed, 1)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    [line] = [w for w in resumed.stderr.splitlines() if "restarting the stage" in w]
    assert W2S in line and "saved on 2 devices" in line and "this run has 1 device " in line
    assert cli(fresh, 1).returncode == 0
    results = [json.loads((out / "results.json").read_text()) for out in (killed, fresh)]
    assert rows(results[0]) == rows(results[1])


# ---- metrics.jsonl after repeated kills ------------------------------------------------------

def logged_steps(out: pathlib.Path, stage: str) -> list[int]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in records if r["stage"] == stage and "loss" in r]


def test_metrics_hold_each_step_once_after_repeated_kills(killed, reference, tmp_path, monkeypatch):
    out = tmp_path / "run"
    shutil.copytree(killed, out)
    run_killed_after(tiny(), out, W2S, 30, monkeypatch)  # resumed from 20, killed again after saving 30
    shutil.rmtree(stage_folder(out, W2S) / "30")  # as if killed after logging 25 and 30 but before saving 30
    assert logged_steps(out, W2S) == [5, 10, 15, 20, 25, 30]
    assert rows(experiment.run(tiny(), out, progress=False)) == reference
    assert logged_steps(out, W2S) == [5, 10, 15, 20, 25, 30, 35, 40, 42]


# ---- disk ------------------------------------------------------------------------------------

def test_the_plan_states_the_disk_use_and_the_run_stays_under_it(tmp_path, capsys, reference):
    from w2sjax.runner import disk

    out = tmp_path / "run"
    experiment.run(tiny(), out, progress=False)
    [plan] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("plan: ")]
    assert "; checkpoints ~" in plan and "while a stage trains" in plan
    # The stated figure bounds what the finished run keeps (the estimate is an upper bound).
    stated = plan.split("; checkpoints ~")[1].split(" (")[0]
    value, unit = stated.split()
    bound = float(value) * {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9}[unit]
    assert 0 < disk.folder_bytes(out / "checkpoints") <= bound


def test_estimate_for_a_finetuned_student_counts_its_parameters():
    from w2sjax.runner import disk

    full, full_in_stage = disk.stage_bytes(22_700_000, finetune=True, trainable="all", pred_values=1000)
    lora, lora_in_stage = disk.stage_bytes(22_700_000, finetune=True, trainable="lora", pred_values=1000)
    assert 22_700_000 * 4 < full < 22_700_000 * 4 + 3 * 2**20  # float32 parameters and a head
    assert lora < 10 * 2**20 and lora_in_stage < full_in_stage
    assert full_in_stage >= 2 * 4 * 22_700_000 * 4  # two kept steps of parameters, best ones and two moments


def _cli(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "w2sjax.cli", *args], env=process_env(1), capture_output=True,
                          text=True, timeout=300, **kw)


def test_a_failed_run_leaves_no_folder_behind(tmp_path):
    out = tmp_path / "runs" / "b1"
    proc = _cli("run", "--out", str(out), "--no-progress", "--set", "data.task=csv:/nonexistent/file.csv")
    assert proc.returncode == 2 and "data.task" in proc.stderr, proc.stderr[-2000:]
    assert not out.exists() and (tmp_path / "runs").exists()  # the parent, not the run's own folder
    kept = tmp_path / "mine"  # a folder the user made is theirs to keep, even empty
    kept.mkdir()
    proc = _cli("run", "--out", str(kept), "--no-progress", "--set", "data.task=csv:/nonexistent/file.csv")
    assert proc.returncode == 2 and kept.is_dir()


def test_prune_lists_then_removes_other_settings_and_empty_run_folders(finished, tmp_path):
    from w2sjax.runner import disk

    runs = tmp_path / "runs"
    run = runs / "a"
    shutil.copytree(finished, run)
    used = set(json.loads((run / "results.json").read_text())["checkpoints"])
    assert len(used) == 3
    other = run / "checkpoints" / "w2s__linear__mlp__xent__seed0--00000000000000000000.out"
    shutil.copytree(run / "checkpoints" / f"{sorted(used)[0]}.out", other)  # as if trained under other settings
    (runs / "failed").mkdir()
    (runs / "failed" / ".lock").write_text("123\n")

    listed = _cli("prune", str(runs), stdin=subprocess.DEVNULL)  # no terminal, no --yes: only lists
    assert listed.returncode == 0, listed.stderr
    assert str(other) in listed.stdout and str(runs / "failed") in listed.stdout and "--yes" in listed.stdout
    assert other.exists() and (runs / "failed").exists()
    assert {r.path for r in disk.prune_candidates(runs)[0]} == {other, runs / "failed"}

    removed = _cli("prune", str(runs), "--yes")
    assert removed.returncode == 0 and "removed 2" in removed.stdout, removed.stdout + removed.stderr
    assert not other.exists() and not (runs / "failed").exists()
    assert {p.name.removesuffix(".out") for p in (run / "checkpoints").iterdir()} == used
    # The run still reuses everything it has.
    assert rows(experiment.run(tiny(), run, progress=False)) == rows(json.loads((finished / "results.json").read_text()))


def test_a_lora_stage_keeps_its_adapters_and_rebuilds_on_its_base(tmp_path):
    """MiniLM-L2 with LoRA adapters: the finished stage holds the adapters and the head (well under
    10 MB; the frozen base is ~60 MB of float32) and the hash of the base, from which the model that
    made its predictions comes back."""
    import dataclasses

    import jax

    from w2sjax.config import LoraConfig
    from w2sjax.runner import disk

    config = dataclasses.replace(
        tiny(), data=DataConfig(task="fine_foods", n_train=96, n_val=32, n_test=32, max_len=32),
        weak_models=("glove-bow",), strong_models=("minilm-l2",), strong_mode="finetune",
        train=StudentTrainConfig(epochs=1, batch_size=16, lr=1e-3, trainable="lora", lora=LoraConfig()))
    out = tmp_path / "lora"
    results = experiment.run(config, out, progress=False)
    stage = results["runs"][0]["stages"]["ceiling"]
    size = disk.folder_bytes(out / "checkpoints" / f"{stage}.out")
    assert size < 10 * 2**20, size
    runner, task, _ = experiment.prepare(config, out, progress=False)
    try:
        module = runner.trained_module(stage, "minilm-l2", seed=0)
        sr = experiment.SeedRun(runner, task, 0)
        inputs = runner.inputs.get("minilm-l2").inputs("test", sr.test["row"])
        probs = np.asarray(jax.nn.softmax(module(inputs), axis=-1))
        target = {k: np.zeros((len(idx), task.num_classes), np.float32) for k, (_, idx) in sr.evals.items()}
        saved, _ = checkpoint.restore(out / "checkpoints", f"{stage}.out", target)
        np.testing.assert_allclose(probs, saved["test"], atol=1e-5)
    finally:
        experiment.rundir.release(out)
