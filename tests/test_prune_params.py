"""Dropping the trained parameters of a finished run's stages (``w2sjax prune --params``,
``disk.drop_params``): every stage stays finished and is reused from its predictions, a rerun
writes the same results and trains nothing, and damage to what is left is still caught.

The run is real and tiny: digits, a linear supervisor, an MLP student and a chain
``linear>linear>mlp`` (whose stage names hold ``>``, so their folders carry another name).
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from w2sjax import experiment
from w2sjax.config import Config, DataConfig, StudentTrainConfig, TrainConfig
from w2sjax.runner import checkpoint, disk

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
ROOT = pathlib.Path(__file__).resolve().parents[1]


def tiny() -> Config:
    return Config(
        data=DataConfig(task="digits", n_val=64, n_test=256), weak_models=("linear",), strong_models=("mlp",),
        losses=("xent",), seeds=(0,), bootstrap=("linear>linear>mlp",),
        weak_train=TrainConfig(epochs=3, batch_size=64, lr=1e-2),
        train=StudentTrainConfig(epochs=2, batch_size=32, lr=1e-2, log_every=5, checkpoint_every=10),
    )


def model_folders(out: pathlib.Path) -> dict[str, int]:
    """Each finished stage's ``model`` item folder and its bytes, read from the files."""
    return {str(p.relative_to(out)): sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
            for p in (out / "checkpoints").glob("*/[0-9]*/model")}


def state_files(stage: pathlib.Path) -> list[pathlib.Path]:
    files = [p for p in (stage / "0" / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    assert files
    return files


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("params") / "reference"
    results = experiment.run(tiny(), out, progress=False)
    return out, results


@pytest.fixture(scope="module")
def dropped(reference, tmp_path_factory):
    """A copy of the reference run with its parameters dropped, and what was dropped."""
    out = tmp_path_factory.mktemp("params") / "dropped"
    shutil.copytree(reference[0], out)
    before = model_folders(out)
    removals = disk.drop_params(out)
    return out, before, removals


def test_every_used_stage_loses_its_parameters_and_the_bytes_are_counted(reference, dropped):
    out, before, removals = dropped
    used = json.loads((out / "results.json").read_text())["checkpoints"]
    assert any(">" in name for name in used)  # the chain's stages are among them
    assert len(before) == len(used) > 0 and not model_folders(out)
    assert {r.stage for r in removals} == {f"{name}.out" for name in used}
    assert sum(r.bytes for r in removals) == sum(before.values())
    # the plain prune of the untouched run finds nothing: the chain's folders count as used
    assert disk.prune_candidates(reference[0]) == ([], [])
    # nothing left to drop
    assert disk.drop_params(out) == [] and disk.prune_candidates(out, params=True) == ([], [])


def test_a_rerun_reuses_every_stage_and_writes_the_same_results(reference, dropped, capsys):
    out, _, _ = dropped
    logged = (out / "metrics.jsonl").read_text()
    results = experiment.run(tiny(), out, progress=False)
    printed = capsys.readouterr().out
    assert "plan: 0 of" in printed and "stages to train" in printed, printed
    assert results["runs"] == reference[1]["runs"]  # stage seconds included: read from the saved meta
    assert results["checkpoints"] == reference[1]["checkpoints"]
    assert not model_folders(out) and (out / "metrics.jsonl").read_text() == logged  # nothing trained again


def test_loading_a_dropped_model_says_so_and_is_not_damage(dropped):
    out, _, _ = dropped
    stage = json.loads((out / "results.json").read_text())["runs"][0]["stages"]["w2s"]
    runner, _, _ = experiment.prepare(tiny(), out, progress=False)
    try:
        with pytest.raises(checkpoint.ModelDropped, match="dropped to save disk") as info:
            runner.trained_module(stage, "mlp", seed=0)
        assert not isinstance(info.value, checkpoint.DamagedCheckpoint)
    finally:
        experiment.rundir.release(out)


def test_damaged_predictions_of_a_dropped_stage_are_still_caught(reference, dropped, tmp_path, capfd):
    """Bits of a dropped stage's predictions overwritten: the rerun says so in one warning line,
    sets the stage aside, trains it again and ends with the reference rows."""
    out = tmp_path / "copy"
    shutil.copytree(dropped[0], out)
    [weak] = (out / "checkpoints").glob("weak__linear__seed0--*.out")
    rng = np.random.default_rng(0)
    for f in state_files(weak):
        f.write_bytes(rng.integers(0, 256, f.stat().st_size, dtype=np.uint8).tobytes())
    capfd.readouterr()
    results = experiment.run(tiny(), out, progress=False)
    err = capfd.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("w2sjax: warning:") and "damaged" in line]
    assert len(warnings) == 1 and "weak__linear__seed0" in warnings[0], err[-3000:]
    assert rows(results) == rows(reference[1])
    assert [p.parent.parent.name for p in (out / "checkpoints").glob("*/[0-9]*/model")] == [weak.name]  # retrained


def rows(results: dict) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "stage_seconds"} for r in results["runs"]]


def test_a_kill_between_marking_and_deleting_leaves_a_finished_stage(reference, tmp_path, monkeypatch):
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    [weak] = (out / "checkpoints").glob("weak__linear__seed0--*.out")
    size = checkpoint.model_bytes(out / "checkpoints", weak.name)
    assert size > 0

    class Killed(BaseException):
        pass

    def killed(*args, **kwargs):
        raise Killed

    with monkeypatch.context() as m:
        m.setattr(checkpoint.shutil, "rmtree", killed)
        with pytest.raises(Killed):
            checkpoint.drop_model(out / "checkpoints", weak.name)
    assert checkpoint.is_done(out / "checkpoints", weak.name)
    preds, _ = checkpoint.restore(out / "checkpoints", weak.name, _target(out), require_checksum=True)
    with pytest.raises(checkpoint.ModelDropped):
        checkpoint.restore_model(out / "checkpoints", weak.name, {})
    assert checkpoint.drop_model(out / "checkpoints", weak.name) == size  # the leftover goes now
    assert checkpoint.model_bytes(out / "checkpoints", weak.name) == 0
    again, _ = checkpoint.restore(out / "checkpoints", weak.name, _target(out), require_checksum=True)
    for k in preds:
        np.testing.assert_array_equal(again[k], preds[k])


def _target(out: pathlib.Path) -> dict:
    from w2sjax.runner import saved_splits

    return saved_splits.prediction_target(saved_splits.load(out, 0))


def test_the_command_lists_then_drops(reference, tmp_path):
    out = tmp_path / "runs" / "a"
    shutil.copytree(reference[0], out)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    cli = lambda *a: subprocess.run([sys.executable, "-m", "w2sjax.cli", "prune", *a], env=env, capture_output=True,
                                    text=True, timeout=300, stdin=subprocess.DEVNULL)
    plain = cli(str(tmp_path / "runs"))
    assert plain.returncode == 0 and "nothing to prune" in plain.stdout, plain.stdout + plain.stderr
    listed = cli(str(tmp_path / "runs"), "--params")
    assert listed.returncode == 0 and "trained parameters" in listed.stdout and "--yes" in listed.stdout
    assert model_folders(out)
    removed = cli(str(tmp_path / "runs"), "--params", "--yes")
    assert removed.returncode == 0 and "removed" in removed.stdout, removed.stdout + removed.stderr
    assert not model_folders(out) and len(list((out / "checkpoints").iterdir())) == len(
        json.loads((out / "results.json").read_text())["checkpoints"])
