"""What a run will do, printed before it trains: the split sizes (with a warning when they are too
small to measure much) and the plan of stages (how many train, how many are reused, and which
settings changed since the last run in the same directory).

The plan comes from running the protocol once with a planning :class:`Runner`, which keys every
stage without training any (:func:`plan_then_train`).
"""

from __future__ import annotations

import math
import pathlib
import sys
from typing import Iterator

from w2sjax import parallel
from w2sjax.runner import checkpoint, rundir, stage_keys
from w2sjax.config import Config, to_dict
from w2sjax.runner.stage_runner import Runner

SMALL_HALF, FEW_STEPS = 200, 50  # below these, PGR and its interval mostly measure noise



def announce_data(config: Config, task, splits) -> None:
    """Print the sizes of ``splits`` (the first seed's), and one warning line each when a half is
    small or a stage trains for only a few optimizer steps."""
    sizes = {"supervisor half": len(splits.supervisor_half["label"]),
             "student half": len(splits.student_half["label"]),
             "val": len(splits.val["label"]), "test": len(splits.test["label"])}
    print(f"data: {task.name}: {', '.join(f'{part} {n}' for part, n in sizes.items())} examples", flush=True)
    if task.name.startswith(("csv:", "jsonl:")):  # what the file's labels were read as
        from w2sjax.data import user

        print(f"data: {task.num_classes} classes in the file (rows per class): {user.class_counts(task)}", flush=True)
    halves = ("supervisor half", "student half")
    small = [f"the {half} has {sizes[half]}" for half in halves if sizes[half] < SMALL_HALF]
    if small:
        _warn(f"{' and '.join(small)} examples (< {SMALL_HALF}): weak, w2s and ceiling accuracies will be noisy; "
              "use more data (data.n_train) or read PGR with its interval")
    few = []
    for what, cfg, n in (("supervisors", config.weak_train, sizes["supervisor half"]),
                         ("students", config.train, sizes["student half"])):
        steps = math.ceil(cfg.epochs * max(1, n // max(1, min(cfg.batch_size, n))))
        if steps < FEW_STEPS:
            few.append(f"{what} ~{steps} ({n} examples, batch {cfg.batch_size}, {cfg.epochs:g} epochs)")
    if few:
        _warn(f"few optimizer steps (< {FEW_STEPS}): {'; '.join(few)}; raise epochs or lower batch_size")
    warn_probed_students(config)


def warn_probed_students(config: Config) -> None:
    """One warning line per student that ``strong_mode="finetune"`` cannot finetune (it is probed)."""
    from w2sjax import models

    if config.strong_mode != "finetune":
        return
    students = dict.fromkeys(list(config.strong_models) + [m for c in config.bootstrap for m in c.split(">")[1:]])
    for name in students:
        if models.get_model(name).finetune is None:
            _warn(f"strong_mode=finetune: {name} has no finetune model; it is probed (a linear head on its "
                  "frozen features)")


def _warn(message: str) -> None:
    print(f"w2sjax: warning: {message}", file=sys.stderr, flush=True)


def plan_then_train(runner: Runner, out: pathlib.Path) -> Iterator[Runner]:
    """A planning copy of ``runner``, then ``runner``: a protocol run once with each first keys its
    stages without training any, then the plan is printed (:func:`announce_plan`), then it trains."""
    planner = Runner(runner.config, out, runner.mesh, runner.task, runner.progress, planning=True)
    yield planner
    announce_plan(planner, runner.config, out)
    yield runner


def announce_plan(planner: Runner, config: Config, out: pathlib.Path) -> None:
    """Print one line: how many stages train, how many are reused, and which settings changed
    since the results already in ``out``."""
    todo = [name for name, done in planner.planned.items() if not done]
    reused = len(planner.planned) - len(todo)
    names = ", ".join(stage_keys.StageKey.parse(n).name for n in todo[:4]) + (", ..." if len(todo) > 4 else "")
    line = f"plan: {len(todo)} of {len(planner.planned)} stages to train" + (f" ({names})" if todo else "")
    line += f", {reused} reused"
    if planner.disk:  # finished stages stay; each stage's in-stage steps go when it ends
        from w2sjax.runner import disk

        finished = sum(f for f, _ in planner.disk.values())
        in_stage = max(i for _, i in planner.disk.values())
        line += f"; checkpoints ~{disk.human(finished)} (up to {disk.human(in_stage)} more while a stage trains)"
    estimate = _earlier_seconds(planner.ckpt_dir, todo)
    if estimate is not None:
        line += f"; ~{estimate:.0f} s of training by earlier runs of these stages"
    changed = rundir.changed_settings(out, to_dict(config))
    if changed:
        line += f"; changed since the last run: {changed}"
    if parallel.is_main_process():
        print(line, flush=True)


def _earlier_seconds(ckpt_dir: pathlib.Path, todo: list[str]) -> float | None:
    """The seconds the stages in ``todo`` took when last trained under other settings, if every
    one of them was (the same stage name under another fingerprint); else None."""
    total = 0.0
    for name in todo:
        readable = stage_keys.StageKey.parse(name).name
        earlier = sorted(ckpt_dir.glob(f"{readable}--*.out"), key=lambda p: p.stat().st_mtime)
        found = checkpoint.latest(ckpt_dir, earlier[-1].name) if earlier else None
        if found is None or "seconds" not in found[1]:
            return None
        total += float(found[1]["seconds"])
    return total if todo else None
