"""The benchmark's learning-rate pilot: each student's lr, chosen on validation accuracy alone.

For every student of the protocol (its ``trainable``), the *ceiling* (the student finetuned on
the student half's ground truth, early-stopped on the ground-truth validation slice) is trained at each lr
of ``LRS`` on seed 0 of the tasks the project was already tuned on, at the protocol's caps,
epochs and batch size, and scored on the **validation slice only**. The chosen lr is the one with
the best mean validation accuracy over the pilot tasks (ties: the smaller lr). The pilot also
trains each student's frozen-probe ceiling (a linear head on its frozen features, the recipe of
``experiments/suite.py``) on the same slices, so the rule "a finetuned ceiling is at least its
frozen-probe ceiling" can be checked before the run.

The test split is never read: every stage here predicts only the validation slice (its
``evals`` hold nothing else), so no test prediction exists to be looked at. Writes
``experiments/benchmark_pilot.json`` (``--json``); the protocol names that file's sha256::

    python experiments/benchmark_pilot.py --out /work/runs/benchmark-pilot
    python experiments/benchmark_pilot.py --out DIR --students minilm-l6 --tasks vader_tweets

It is resumable: a stage whose checkpoint is in ``--out`` is reused.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
DEFAULT_JSON = HERE / "benchmark_pilot.json"
LRS = (1e-4, 3e-4, 1e-3)
PILOT_TASKS = ("vader_tweets", "fine_foods")  # both already in the protocol's tuned_on group
SEED = 0


def _bench():
    sys.path.insert(0, str(HERE))
    try:
        import benchmark
    finally:
        sys.path.remove(str(HERE))
    return benchmark


def get_config():
    """As a config file (``w2sjax run --config experiments/benchmark_pilot.py``): the benchmark's
    own configuration, whose recipe every pilot stage starts from."""
    return _bench().get_config()


def _val_accuracy(out, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(out.preds["val"], -1) == labels))


def pilot_student(protocol, student: dict, task_name: str, out: pathlib.Path, lrs=LRS, probe: bool = True,
                  ceilings: bool = True) -> dict:
    """One student on one task: the validation accuracy of its ceiling at each lr, and of its
    frozen-probe ceiling; with each stage's own training seconds (kept in its checkpoint)."""
    from w2sjax import data, experiment
    from w2sjax.report import suite
    from w2sjax.runner import rundir
    from w2sjax.config import Config, StudentTrainConfig
    from w2sjax.runner.stage_keys import StageKey

    bench = _bench()
    base = bench.base_config(protocol)
    task = data.load_task(task_name)
    name = student["name"]
    cfg = dataclasses.replace(base, strong_models=(name,), seeds=(SEED,),
                              train=dataclasses.replace(base.train, trainable=student["trainable"]))
    cfg = suite.task_config(cfg, task)
    record = {"task": task_name, "lr": {}, "seconds": {}}
    folder = out / f"{name}-{task_name}"
    if ceilings:
        runner, task, _ = experiment.prepare(cfg, folder, progress=False)
        try:
            sr = experiment.SeedRun(runner, task, SEED)
            sr.evals = {"val": sr.evals["val"]}  # never predict the test split (nor the student half)
            labels = sr.val["label"]
            record["n_train"], record["n_val"] = int(len(sr.student_half["label"])), int(len(labels))
            for lr in lrs:
                res = sr.strong(StageKey.ceiling(name, SEED), name, sr.gt(sr.student_half), sr.gt(sr.val), "xent",
                                cfg=dataclasses.replace(cfg.train, lr=lr))
                record["lr"][f"{lr:g}"] = _val_accuracy(res, labels)
                # the stage's own seconds as it trained (kept in its checkpoint, so a resumed pilot
                # records them too); the first stage of a task includes computing its cached bottoms
                record["seconds"][f"ceiling lr {lr:g}"] = round(res.seconds, 1)
                print(f"pilot: {name} {task_name} lr {lr:g}: ceiling val acc {record['lr'][f'{lr:g}']:.4f} "
                      f"({res.seconds:.0f} s, {res.steps} steps)", file=sys.stderr, flush=True)
        finally:
            rundir.release(folder)
    if probe:
        # The frozen-probe ceiling, with the frozen-probe suite's recipe (experiments/suite.py:
        # the default student training config, a head on frozen features).
        pcfg = suite.task_config(Config(name="benchmark-pilot-probe", data=base.data, weak_models=base.weak_models,
                                        strong_models=(name,), seeds=(SEED,), precision=base.precision,
                                        strong_mode="probe", train=StudentTrainConfig()), task)
        pfolder = out / f"{name}-{task_name}-probe"
        runner, task, _ = experiment.prepare(pcfg, pfolder, progress=False)
        try:
            sr = experiment.SeedRun(runner, task, SEED)
            sr.evals = {"val": sr.evals["val"]}
            res = sr.ceiling(name)
            record["frozen_probe"] = _val_accuracy(res, sr.val["label"])
            record["seconds"]["frozen probe"] = round(res.seconds, 1)  # its features included
            print(f"pilot: {name} {task_name}: frozen-probe ceiling val acc {record['frozen_probe']:.4f} "
                  f"({record['seconds']['frozen probe']:.0f} s)", file=sys.stderr, flush=True)
        finally:
            rundir.release(pfolder)
    return record


def choose(per_task: list[dict]) -> dict:
    """The lr with the best mean validation accuracy over the tasks (ties: the smaller lr), and
    whether its ceiling reaches the frozen probe's on every task."""
    lrs = sorted(per_task[0]["lr"], key=float)
    means = {lr: float(np.mean([t["lr"][lr] for t in per_task])) for lr in lrs}
    best = max(lrs, key=lambda lr: (round(means[lr], 10), -float(lr)))
    probes = [t.get("frozen_probe") for t in per_task]
    reaches = None if any(p is None for p in probes) else all(t["lr"][best] >= t["frozen_probe"] for t in per_task)
    return {"mean_val_acc": means, "chosen_lr": float(best), "ceiling_reaches_frozen_probe": reaches}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder of the pilot's checkpoints (resumable)")
    parser.add_argument("--protocol", default=str(HERE / "benchmark_protocol.json"))
    parser.add_argument("--students", default="", help="comma-separated: only these students")
    parser.add_argument("--tasks", default=",".join(PILOT_TASKS), help="pilot tasks (default: %(default)s)")
    parser.add_argument("--decoder-tasks", default=PILOT_TASKS[0],
                        help="pilot tasks of the decoder students (default: %(default)s; their stages cost more)")
    parser.add_argument("--json", default=str(DEFAULT_JSON), help="where the record goes (default: %(default)s)")
    parser.add_argument("--part", choices=("both", "ceilings", "probe"), default="both",
                        help="train only the lr ceilings or only the frozen probe (two processes at once)")
    args = parser.parse_args(argv)

    from w2sjax import assets
    from w2sjax.report import protocol as protocol_lib
    from w2sjax.runner import atomic, xla_flags
    from w2sjax.config import ConfigError

    try:
        protocol = protocol_lib.load(args.protocol)
    except ConfigError as exc:
        print(f"benchmark_pilot: error: {exc}", file=sys.stderr)
        return 2
    xla_flags.apply_defaults()
    xla_flags.enable_compilation_cache(assets.cache_dir() / "xla")
    only = [s for s in args.students.split(",") if s]
    path = pathlib.Path(args.json)
    record = json.loads(path.read_text()) if path.is_file() else {}
    record.update({
        "what": "validation accuracy (ground-truth validation slice, seed 0) of each student's ceiling at each lr, "
                "and of its frozen-probe ceiling; the test split was never predicted",
        "lrs": [float(lr) for lr in LRS], "seed": SEED,
        "recipe": {k: v for k, v in protocol["recipe"].items() if k != "student"} | {
            "student": {k: v for k, v in protocol["recipe"]["student"].items() if k != "lr"}},
        "rule": "per student, the lr with the best mean validation accuracy over its pilot tasks (ties: the smaller)",
    })
    students = record.setdefault("students", {})
    for st in protocol["students"]:
        if only and st["name"] not in only:
            continue
        decoder = st.get("kind") == "decoder"
        tasks = [t for t in (args.decoder_tasks if decoder else args.tasks).split(",") if t]
        per_task = [pilot_student(protocol, st, t, pathlib.Path(args.out), probe=args.part != "ceilings",
                                  ceilings=args.part != "probe") for t in tasks]
        if args.part != "both":  # a partial pilot writes no record; a later full one reuses its stages
            continue
        students[st["name"]] = {"trainable": st["trainable"], "tasks": per_task, **choose(per_task)}
        atomic.write_json(path, record)  # after each student: a pilot cut short keeps what it measured
        print(f"pilot: {st['name']}: chosen lr {students[st['name']]['chosen_lr']:g}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
