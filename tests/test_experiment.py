"""End to end: the smoke experiment on real data and a real pretrained model, through the real CLI.

Covers the results schema, resuming after ``kill -9`` at several points, agreement between 1 and 8
devices and between 1 and 2 processes, and clean one-line errors for bad input.
"""

import json
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from _multiprocess.launch import process_env, run_processes

ROOT = pathlib.Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "experiments" / "smoke.py")
ACC_KEYS = ("weak_acc", "w2s_acc", "ceiling_acc", "pgr", "misfit")


def run_cli(args, *, devices=8, check=True, **env):
    proc = subprocess.run(
        [sys.executable, "-m", "w2sjax.cli", *args], env=process_env(devices, **env), capture_output=True, text=True,
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"w2sjax {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def load_runs(out: pathlib.Path) -> list[dict]:
    return json.loads((out / "results.json").read_text())["runs"]


def key_of(run):
    return (run["weak_model"], run["strong_model"], run["loss"], run["seed"])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted smoke run on 8 devices, shared by the comparisons below."""
    out = tmp_path_factory.mktemp("reference")
    run_cli(["run", "--config", SMOKE, "--out", str(out), "--no-progress"])
    return out


def test_smoke_results_schema_and_values(reference):
    results = json.loads((reference / "results.json").read_text())
    assert results["config"]["name"] == "smoke"
    runs = results["runs"]
    assert {r["loss"] for r in runs} == {"xent", "logconf"}
    for r in runs:
        for k in ("task", "weak_model", "strong_model", "loss", "seed", *ACC_KEYS, "stage_seconds"):
            assert k in r, k
        assert r["task"] == "fine_foods" and r["n_test"] == 256
        for k in ("weak_acc", "w2s_acc", "ceiling_acc"):
            assert 0.5 < r[k] <= 1.0, (k, r[k])  # real models on real reviews beat chance
        want = (r["w2s_acc"] - r["weak_acc"]) / (r["ceiling_acc"] - r["weak_acc"])
        if r["ceiling_acc"] > r["weak_acc"]:
            assert r["pgr"] == pytest.approx(want, abs=1e-4)
        assert set(r["stage_seconds"]) == {"weak", "w2s", "ceiling"}
    lines = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    assert {ln["stage"].split("__")[0] for ln in lines} == {"weak", "ceiling", "w2s"}
    assert all(np.isfinite(ln["loss"]) for ln in lines if "loss" in ln)
    done = sorted(p.name for p in (reference / "checkpoints").iterdir())
    for r in runs:  # every row names its stages' checkpoints: the readable name, then the fingerprint
        assert {f"{name}.out" for name in r["stages"].values()} <= set(done)
    assert r["stages"]["weak"].startswith("weak__glove-bow__seed0--")
    assert r["stages"]["ceiling"].startswith("ceiling__minilm-l2__seed0--")
    # What the run compiled, by function: four stages on two head structures (the GloVe supervisor's,
    # MiniLM's) compile the train program twice, once each, whatever their loss, seed and length.
    compiled = results["compile"]
    assert compiled["compile_s"] >= compiled["ahead_s"] >= 0 and compiled["programs"] >= 2
    by_name = {g["name"]: g for g in compiled["by_function"]}
    assert by_name["train_loop"]["programs"] == 2
    assert sum(g["programs"] for g in compiled["by_function"]) == compiled["programs"]
    # smoke leaves the compile cost unset: the results name the one its stages ran with, float32's on a CPU
    assert results["config"]["precision"] == "float32" and results["config"]["train"]["compile_cost_steps"] == 0.5


def test_w2s_accuracy_recomputed_from_checkpointed_predictions(reference):
    """The accuracies in results.json are those of the predictions saved in the checkpoints."""
    import jax

    from w2sjax import data
    from w2sjax.runner import checkpoint

    task = data.load_task("fine_foods")
    splits = data.make_splits(task, seed=0, n_train=480, n_val=64, n_test=256)
    run = next(r for r in load_runs(reference) if r["loss"] == "xent")
    target = {k: np.zeros((n, 2), np.float32) for k, n in (("b", len(splits.student_half["label"])),
                                                          ("val", 64), ("test", 256))}
    preds, _ = checkpoint.restore(reference / "checkpoints", run["stages"]["w2s"] + ".out", target)
    acc = float((np.asarray(preds["test"]).argmax(-1) == splits.test["label"]).mean())
    assert acc == pytest.approx(run["w2s_acc"], abs=1e-6)
    del jax


def _wait_for(predicate, proc, timeout=300):
    start = time.time()
    while not predicate():
        if proc.poll() is not None:
            return False
        if time.time() - start > timeout:
            raise TimeoutError("condition not reached")
        time.sleep(0.05)
    return True


def test_resume_after_kill_9_matches_uninterrupted_run(reference, tmp_path):
    out = tmp_path / "killed"
    ckpts = out / "checkpoints"
    args = [sys.executable, "-m", "w2sjax.cli", "run", "--config", SMOKE, "--out", str(out), "--no-progress"]
    kill_points = [
        # right after the first stage finished
        lambda: any(p.name.endswith(".out") for p in ckpts.glob("*")) if ckpts.exists() else False,
        # inside the w2s stage, right after an in-stage checkpoint (smoke saves every 20 steps)
        lambda: any(ckpts.glob("w2s__glove-bow__minilm-l2__xent__seed0--*/20")),
        # inside the second w2s stage
        lambda: any(ckpts.glob("w2s__glove-bow__minilm-l2__logconf__seed0--*/40")),
    ]
    killed = 0
    for point in kill_points:
        proc = subprocess.Popen(args, env=process_env(8), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        reached = _wait_for(point, proc)
        if reached and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait()
    assert killed >= 2, "the run finished before the kill points; they must be reached to test anything"
    assert not (out / "results.json").exists() or killed < len(kill_points)
    run_cli(["run", "--config", SMOKE, "--out", str(out), "--no-progress"])
    got = {key_of(r): r for r in load_runs(out)}
    want = {key_of(r): r for r in load_runs(reference)}
    assert got.keys() == want.keys()
    for k in want:
        for field in ACC_KEYS:
            assert got[k][field] == want[k][field], (k, field)


def test_rerun_of_finished_experiment_trains_nothing(reference, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(reference, copy)
    before = (copy / "metrics.jsonl").read_text()
    run_cli(["run", "--config", SMOKE, "--out", str(copy), "--no-progress"])
    assert (copy / "metrics.jsonl").read_text() == before  # no training step was logged
    assert load_runs(copy) == load_runs(reference)


def test_one_device_agrees_with_eight(reference, tmp_path):
    out = tmp_path / "one"
    run_cli(["run", "--config", SMOKE, "--out", str(out), "--no-progress"], devices=1)
    want = {key_of(r): r for r in load_runs(reference)}
    for r in load_runs(out):
        for field in ("weak_acc", "w2s_acc", "ceiling_acc"):
            # Summation order differs across device counts; allow a couple of borderline flips of 256.
            assert r[field] == pytest.approx(want[key_of(r)][field], abs=3 / 256), field


def test_two_processes_agree_with_one(reference, tmp_path):
    out = tmp_path / "two"
    run_processes([sys.executable, "-m", "w2sjax.cli", "run", "--config", SMOKE, "--out", str(out), "--no-progress"],
                  tmp_path, devices=4, timeout=600)
    want = {key_of(r): r for r in load_runs(reference)}
    for r in load_runs(out):
        for field in ("weak_acc", "w2s_acc", "ceiling_acc"):
            assert r[field] == pytest.approx(want[key_of(r)][field], abs=3 / 256), field


@pytest.mark.parametrize(
    "args,message",
    [
        (["--set", "data.task=no_such_task"], "data.task: unknown task 'no_such_task'"),
        (["--set", "strong_models=gpt-17"], "model: unknown model 'gpt-17'"),
        (["--set", "train.lr=fast"], "train.lr: expected float, got 'fast'"),
        (["--set", "train.lrr=1"], "unknown key 'lrr'"),
        (["--config", "/no/such/config.py"], "--config: no such file"),
        (["--set", "weak_models=cnn"], "'cnn' takes image inputs but task 'fine_foods' is text"),
        (["--set", "data.task=csv:/no/such/file.csv"], "data.task:"),
    ],
)
def test_bad_input_is_one_clean_line_and_leaves_results_alone(tmp_path, args, message):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text('{"sentinel": true}')
    proc = run_cli(["run", "--config", SMOKE, "--out", str(out), *args] if "--config" not in args
                   else ["run", "--out", str(out), *args], check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("w2sjax: error:"), proc.stderr
    assert message in lines[0]
    assert "Traceback" not in proc.stderr
    assert (out / "results.json").read_text() == '{"sentinel": true}'
    assert not (out / "checkpoints").exists()


def test_report_on_smoke_run(reference):
    proc = run_cli(["report", str(reference)])
    assert "glove-bow" in proc.stdout and "minilm-l2" in proc.stdout
