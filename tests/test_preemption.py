"""Preemption: SIGTERM mid-stage saves an in-stage checkpoint and exits non-zero; running the same
command again resumes and ends with the results of an uninterrupted run. In-stage checkpoints are
also written on a time basis."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from _multiprocess.launch import job_envs, process_env
from w2sjax import experiment
from w2sjax.config import Config, DataConfig, StudentTrainConfig, TrainConfig
from w2sjax.runner import preemption

ARGS = ["--no-progress", "--set", "data.task=spambase", "--set", "weak_models=linear", "--set", "strong_models=mlp",
        "--set", "seeds=0", "--set", "losses=xent", "--set", "train.log_every=20"]
CEILING = "ceiling__mlp__seed0"


def cli(out, env=None, epochs: int = 15, **popen):
    """`w2sjax run` into `out` in a fresh process (8 devices unless `env` says otherwise). At 15
    epochs the students run ~800 MLP steps, long enough that a signal lands inside the ceiling."""
    env = process_env(8) if env is None else env
    args = [*ARGS, "--set", f"train.epochs={epochs}"]
    return subprocess.Popen([sys.executable, "-m", "w2sjax.cli", "run", "--out", str(out), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def metrics(out: pathlib.Path, stage: str) -> list[int]:
    path = out / "metrics.jsonl"
    if not path.exists():
        return []
    steps = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line being written
        if record.get("stage") == stage and "loss" in record:
            steps.append(record["step"])
    return steps


def comparable(out: pathlib.Path) -> list[dict]:
    runs = json.loads((out / "results.json").read_text())["runs"]
    return [{k: v for k, v in r.items() if k != "stage_seconds"} for r in runs]


@pytest.mark.slow  # two full runs; SIGINT mid-stage and SIGTERM between stages stay in the default set
def test_sigterm_mid_stage_then_resume_equals_uninterrupted_run(tmp_path):
    reference = cli(tmp_path / "reference")
    _, err = reference.communicate(timeout=600)
    assert reference.returncode == 0, err[-3000:]

    out = tmp_path / "preempted"
    proc = cli(out)
    start = time.time()
    while len(metrics(out, CEILING)) < 2:  # inside the ceiling stage, well before its end
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() - start < 300
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == preemption.EXIT_PREEMPTED, err[-3000:]
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"w2sjax: error: stage {CEILING} stopped by SIGTERM at step ")
    assert last.endswith(f"run the same command again to resume from {out}")
    step = int(last.split(" at step ")[1].split(",")[0])
    assert 0 < step < 810
    saved = [p for p in (out / "checkpoints").glob(f"{CEILING}--*") if p.is_dir() and not p.name.endswith(".out")]
    assert len(saved) == 1 and (saved[0] / str(step)).is_dir()
    assert not (out / "results.json").exists()
    logged = metrics(out, CEILING)

    again = cli(out)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-3000:]
    assert comparable(out) == comparable(tmp_path / "reference")
    # The ceiling resumed from its checkpoint: no step up to it was trained (logged) twice.
    resumed = metrics(out, CEILING)[len(logged):]
    assert resumed and min(resumed) > step


def tiny(checkpoint_minutes: float) -> Config:
    return Config(
        data=DataConfig(task="digits", n_val=64, n_test=256), weak_models=("linear",), strong_models=("mlp",),
        losses=("xent",), seeds=(0,), weak_train=TrainConfig(epochs=3, batch_size=64, lr=1e-2),
        train=StudentTrainConfig(epochs=4, batch_size=64, lr=1e-2, log_every=10, checkpoint_minutes=checkpoint_minutes),
    )


def test_time_based_in_stage_checkpoints_change_no_result(tmp_path, monkeypatch):
    saves = []
    original = experiment._OrbaxStage.save
    monkeypatch.setattr(experiment._OrbaxStage, "save",
                        lambda self, step, state: (saves.append((self.stage, step)), original(self, step, state)))
    # 0.0001 minutes: a checkpoint at (nearly) every host stop of the students.
    timed = experiment.run(tiny(0.0001), tmp_path / "timed", progress=False)
    assert len({stage for stage, _ in saves}) == 2 and len(saves) >= 4  # ceiling and student, several steps
    saves.clear()
    plain = experiment.run(tiny(0.0), tmp_path / "plain", progress=False)
    assert saves == []
    strip = lambda r: [{k: v for k, v in row.items() if k != "stage_seconds"} for row in r["runs"]]
    assert strip(timed) == strip(plain)
    # checkpoint_minutes does not change what a stage computes: it is not part of the fingerprint
    assert timed["runs"][0]["stages"] == plain["runs"][0]["stages"]


def test_sigterm_between_stages_stops_before_the_next_one(tmp_path):
    previous = signal.getsignal(signal.SIGTERM)
    preemption.install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)  # a real signal, handled by the installed handler
        with pytest.raises(preemption.Preempted, match="stopped by SIGTERM before it started"):
            experiment.run(tiny(0.0), tmp_path, progress=False)
    finally:
        signal.signal(signal.SIGTERM, previous)
        preemption.clear()
    assert not (tmp_path / "checkpoints").exists()


def _job(out):
    """The run as a 2-process localhost job (4 CPU devices each)."""
    return [cli(out, env) for env in job_envs(processes=2, devices=4)]


@pytest.mark.slow  # three 2-process jobs
def test_two_process_job_agrees_on_the_preemption_step_and_resumes(tmp_path):
    """SIGTERM reaches one process of the job; both save the same step (JAX's preemption sync
    point) and exit; the resumed job ends with the uninterrupted job's results."""
    reference = _job(tmp_path / "reference")
    for p in reference:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]

    out = tmp_path / "preempted"
    job = _job(out)
    start = time.time()
    while len(metrics(out, CEILING)) < 1:
        assert all(p.poll() is None for p in job), job[0].communicate()[1][-3000:]
        assert time.time() - start < 300
        time.sleep(0.02)
    job[1].send_signal(signal.SIGTERM)  # one host gets the notice
    lasts = []
    for p in job:
        _, err = p.communicate(timeout=300)
        assert p.returncode == preemption.EXIT_PREEMPTED, err[-3000:]
        lasts.append(err.strip().splitlines()[-1])
    assert lasts[0] == lasts[1] and f"stage {CEILING} stopped by SIGTERM at step " in lasts[0]

    for p in _job(out):
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    assert comparable(out) == comparable(tmp_path / "reference")


def test_sigint_mid_stage_saves_an_in_stage_checkpoint_and_resume_logs_each_step_once(tmp_path):
    out = tmp_path / "interrupted"
    # 6 epochs (~320 steps, 16 host stops in the ceiling): the SIGINT after its second record still
    # lands mid-stage, and the resumed run has less to train to the end
    proc = cli(out, epochs=6)
    start = time.time()
    while len(metrics(out, CEILING)) < 2:  # inside the ceiling stage
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() - start < 300
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"w2sjax: error: interrupted in stage {CEILING} at step ")
    assert "after saving an in-stage checkpoint" in last and last.endswith(f"resume from {out}")
    step = int(last.split(" at step ")[1].split(",")[0])
    [saved] = [p for p in (out / "checkpoints").glob(f"{CEILING}--*") if not p.name.endswith(".out")]
    assert (saved / str(step)).is_dir()
    logged = metrics(out, CEILING)

    again = cli(out, epochs=6)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-3000:]
    steps = metrics(out, CEILING)
    assert steps == sorted(set(steps))  # every logged step once, in order
    assert steps[:len([s for s in logged if s <= step])] == [s for s in logged if s <= step]
    assert min(steps[len([s for s in logged if s <= step]):]) > step  # the rest trained after the resume
