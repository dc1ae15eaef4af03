"""Does each finetuned MiniLM-L6 ceiling of the benchmark reach its frozen-probe ceiling?

The size ladder's rule (``experiments/benchmark_protocol.json``, ``ladder`` and
``lr_pilot.trained_long_enough``) asks that every rung is trained long enough that its ceiling is
at least its frozen-probe ceiling: a linear head on the same model's frozen features, trained on
the same student half's ground truth. The lr pilot checked it on its own tasks only; this script
checks it on every task of the benchmark, after the run.

For each task of ``docs/benchmark/tasks.json`` it builds the benchmark's own config of the
``minilm-l6`` part (``experiments/benchmark.py``: ``Plan`` / ``config_of``), keeps its data
settings and seeds, switches the student to a head on frozen features (``strong_mode="probe"``,
the library's default student recipe, which is the frozen-probe suite's and the pilot's) and
trains only the ceiling stage of each seed, into a resumable run folder. Each seed's validation
and test rows must be the benchmark run's (its ``splits/seedN.npz``); any difference stops the
script. It writes ``docs/benchmark_ladder/probe_ceilings.json``::

    python -m experiments.reports.probe_ceilings --out runs/probe_ceilings --benchmark-run runs/benchmark
    python -m experiments.reports.probe_ceilings --summary-only    # docs/results.md section only

Nothing of the benchmark is changed by it: it is a check of the ladder rule, computed after the run.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import runpy
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
STUDENT = "minilm-l6"
ARTEFACTS = ROOT / "docs" / "benchmark"
OUTPUT = ROOT / "docs" / "benchmark_ladder" / "probe_ceilings.json"
RESULTS_MD = ROOT / "docs" / "results.md"

__all__ = ["probe_config", "check_same_splits", "probe_task", "run", "finetuned_ceilings", "compare", "markdown",
           "write_section", "main"]


class SplitMismatch(ValueError):
    """The probe run's validation or test rows are not the benchmark run's."""


def _benchmark():
    return runpy.run_path(str(ROOT / "experiments" / "benchmark.py"))


def probe_config(bench: dict, plan, task_name: str, task):
    """The benchmark's config of ``task_name``'s minilm-l6 part, its student a head on frozen features."""
    from w2sjax.config import StudentTrainConfig

    part = next(p for p in plan.parts if p.task == task_name and p.students == (STUDENT,) and not p.bootstrap)
    cfg = plan.config_of(plan.base, part, task)
    # the library's default student recipe is the frozen-probe suite's (and the lr pilot's probe)
    return dataclasses.replace(cfg, name=f"probe-ceiling-{task_name}", strong_models=(STUDENT,),
                               strong_mode="probe", train=StudentTrainConfig())


def check_same_splits(probe_run: pathlib.Path, benchmark_run: pathlib.Path, seed: int) -> None:
    """Raise :class:`SplitMismatch` unless both runs' ``splits/seed{seed}.npz`` hold the same
    validation and test rows (and labels)."""
    from w2sjax.runner import saved_splits

    mine, theirs = saved_splits.load(probe_run, seed), saved_splits.load(benchmark_run, seed)
    if theirs is None:
        raise SplitMismatch(f"{saved_splits.path(benchmark_run, seed)}: no split record of the benchmark run")
    if mine is None:
        raise SplitMismatch(f"{saved_splits.path(probe_run, seed)}: no split record of the probe run")
    for key in ("val_row", "val_label", "test_row", "test_label"):
        if key not in mine or key not in theirs or not np.array_equal(mine[key], theirs[key]):
            raise SplitMismatch(f"seed {seed}: {key} of {saved_splits.path(probe_run, seed)} differs from "
                                f"{saved_splits.path(benchmark_run, seed)}")


def _accuracy(probs, split: dict) -> float:
    """Scored as the benchmark's artefacts score the task: per example, or per question."""
    from w2sjax.report.artefacts import unit_scores

    return float(np.mean(unit_scores(probs, np.asarray(split["label"]), split.get("group"))))


def probe_task(bench: dict, plan, task_name: str, out: pathlib.Path, benchmark_run: pathlib.Path):
    """Train (or reuse) the probe ceiling of every seed of ``task_name``: its accuracies, and the config."""
    from w2sjax import data, experiment
    from w2sjax.runner import rundir

    task = data.load_task(task_name)
    cfg = probe_config(bench, plan, task_name, task)
    folder = out / f"{task_name}-{STUDENT}-probe"
    runner, task, _ = experiment.prepare(cfg, folder, progress=False, models_used={STUDENT})
    seeds = {}
    try:
        for seed in cfg.seeds:
            sr = experiment.SeedRun(runner, task, seed)  # writes folder/splits/seedN.npz
            check_same_splits(folder, benchmark_run / f"{task_name}-{STUDENT}", seed)
            sr.evals = {"val": sr.evals["val"], "test": sr.evals["test"]}  # the student half is not scored
            res = sr.ceiling(STUDENT)
            seeds[str(seed)] = {"val_acc": round(_accuracy(res.preds["val"], sr.val), 6),
                                "test_acc": round(_accuracy(res.preds["test"], sr.test), 6),
                                "stage": res.key.checkpoint_name if res.key else None}
            print(f"probe ceilings: {task_name} seed {seed}: val {seeds[str(seed)]['val_acc']:.4f} "
                  f"test {seeds[str(seed)]['test_acc']:.4f} ({res.seconds:.0f} s)", file=sys.stderr, flush=True)
    finally:
        rundir.release(folder)
    return {"seeds": seeds, "n_val": int(len(sr.val["label"])), "n_test": int(len(sr.test["label"])),
            "n_train": int(len(sr.student_half["label"])),
            "scored": "per question" if "group" in sr.test else "per example"}, cfg


def _facts(cfg, protocol) -> dict:
    t = cfg.train
    return {"student": STUDENT, "strong_mode": cfg.strong_mode, "precision": cfg.precision,
            "max_len": cfg.data.max_len, "protocol_sha256": protocol.sha256,
            "head_recipe": {"epochs": t.epochs, "batch_size": t.batch_size, "lr": t.lr,
                            "weight_decay": t.weight_decay, "lr_warmup_frac": t.lr_warmup_frac,
                            "early_stopping": t.early_stopping},
            "accuracy": "as the benchmark's artefacts score the task (w2sjax.report.artefacts.unit_scores): "
                        "per example, or per question for multiple-choice tasks",
            "splits": "each seed's validation and test rows checked equal to the benchmark run's splits/seedN.npz"}


def run(out: pathlib.Path, output: pathlib.Path, tasks: list[str] | None, benchmark_run: pathlib.Path,
        artefact_dir: pathlib.Path = ARTEFACTS) -> dict:
    """Probe every task of ``artefact_dir/tasks.json`` (or ``tasks`` of them; resumable), writing
    ``output`` after each finished task."""
    import json

    from w2sjax.config import ConfigError
    from w2sjax.report import protocol as protocol_lib
    from w2sjax.runner import atomic

    bench = _benchmark()
    protocol = protocol_lib.load(bench["DEFAULT_PROTOCOL"])
    all_tasks = json.loads((artefact_dir / "tasks.json").read_text())["tasks"]
    unknown = sorted(set(tasks or ()) - set(all_tasks))
    if unknown:
        raise ConfigError(f"--tasks: not tasks of {artefact_dir / 'tasks.json'}: {', '.join(unknown)}")
    chosen = all_tasks if not tasks else [t for t in all_tasks if t in tasks]
    plan = bench["Plan"](protocol, all_tasks, (STUDENT,))
    output.parent.mkdir(parents=True, exist_ok=True)
    payload = json.loads(output.read_text()) if output.is_file() else {}
    payload.setdefault("tasks", {})
    payload["all_tasks"] = all_tasks
    for name in chosen:
        payload["tasks"][name], cfg = probe_task(bench, plan, name, out, benchmark_run)
        payload["config"] = _facts(cfg, protocol)  # the head's settings: the same on every task
        payload["not_run"] = [t for t in all_tasks if t not in payload["tasks"]]
        atomic.write_json(output, payload)
    return payload


# ---- the docs/results.md section, from the committed JSON and the benchmark's artefacts -------------

BEGIN = "<!-- benchmark-probe-ceilings:begin (generated by experiments/reports/probe_ceilings.py --summary-only) -->"
END = "<!-- benchmark-probe-ceilings:end -->"


def finetuned_ceilings(arts: dict, task: str) -> dict[int, tuple[float, float]]:
    """Per seed, the benchmark's finetuned minilm-l6 ceiling: (validation, test) accuracy, the
    means of its saved per-unit scores (rounded to 6 places, as the probe's JSON is)."""
    a = arts.get(task)
    if a is None:
        return {}
    stages = {r["seed"]: r["stages"]["ceiling"] for r in a.rows
              if r["strong_model"] == STUDENT and not r.get("chain") and not r.get("variant")}
    return {seed: (round(float(np.mean(a.score(st, "val"))), 6), round(float(np.mean(a.score(st))), 6))
            for seed, st in sorted(stages.items())}


def compare(probes: dict, arts: dict) -> dict:
    """Per task with both ceilings: seed means of each (validation and test) and their differences;
    and the tasks without one of them. Only seeds that both have are compared."""
    rows, not_run = [], []
    for task in probes["all_tasks"]:
        ft, probe = finetuned_ceilings(arts, task), (probes["tasks"].get(task) or {}).get("seeds", {})
        seeds = sorted(s for s in ft if str(s) in probe)
        if not seeds:
            not_run.append(task)
            continue
        row = {"task": task, "seeds": seeds}
        for i, split in enumerate(("val", "test")):
            row[f"finetuned_{split}"] = float(np.mean([ft[s][i] for s in seeds]))
            row[f"probe_{split}"] = float(np.mean([probe[str(s)][f"{split}_acc"] for s in seeds]))
            row[f"diff_{split}"] = row[f"finetuned_{split}"] - row[f"probe_{split}"]
            row[f"reaches_{split}"] = bool(row[f"diff_{split}"] >= -1e-9)  # ties count as reaching
        rows.append(row)
    return {"rows": rows, "not_run": not_run, "n_tasks": len(probes["all_tasks"]), "config": probes.get("config", {})}


def _signed(x: float) -> str:
    text = f"{x:+.3f}"
    return "+0.000" if text == "-0.000" else text


def markdown(c: dict) -> str:
    """The generated section: the count lines, the table, and the tasks not run."""
    rows, n = c["rows"], c["n_tasks"]
    lines = [f"The finetuned ceiling is at least the probe ceiling on {sum(r['reaches_val'] for r in rows)} of "
             f"{n} tasks (validation) / {sum(r['reaches_test'] for r in rows)} of {n} (test)."]
    for split, name in (("val", "validation"), ("test", "test")):
        below = [r["task"] for r in rows if not r[f"reaches_{split}"]]
        lines.append(f"- Below the probe on {name}: {', '.join(below) if below else 'none'}.")
    head = c["config"].get("head_recipe")
    if head:
        lines.append(f"- The probe's head: {head['epochs']:g} epochs, batch {head['batch_size']}, lr {head['lr']:g}, "
                     f"{'early-stopped on the validation slice' if head['early_stopping'] else 'no early stopping'}; "
                     f"{c['config']['precision']} features of at most {c['config']['max_len']} tokens.")
    lines += ["", "| task | seeds | finetuned val | probe val | val diff | finetuned test | probe test | test diff |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['task']} | {len(r['seeds'])} | {r['finetuned_val']:.3f} | {r['probe_val']:.3f} | "
                     f"{_signed(r['diff_val'])} | {r['finetuned_test']:.3f} | {r['probe_test']:.3f} | "
                     f"{_signed(r['diff_test'])} |")
    if c["not_run"]:
        lines += ["", f"Not run (no probe ceiling or no finetuned ceiling yet): {', '.join(c['not_run'])}."]
    return "\n".join(lines)


def write_section(output: pathlib.Path, artefact_dir: pathlib.Path, results_md: pathlib.Path) -> str:
    """Regenerate the section of ``results_md`` between its markers (refused, ValueError, when
    they are missing: the hand-written heading and intro above them place it)."""
    import json

    from w2sjax.report import artefacts
    from w2sjax.report.benchmark import replace_section
    from w2sjax.runner import atomic

    body = markdown(compare(json.loads(output.read_text()), artefacts.load(artefact_dir)))
    text = results_md.read_text()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{results_md}: expected the markers {BEGIN} and {END}")
    new = replace_section(text, body, BEGIN, END)
    if new != text:
        atomic.write_text(results_md, new)
    return body


def main(argv=None) -> int:
    from w2sjax.config import ConfigError

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="resumable run folder of the probe ceilings")
    parser.add_argument("--output", default=str(OUTPUT), help="the committed JSON")
    parser.add_argument("--tasks", default="", help="comma-separated: only these tasks")
    parser.add_argument("--benchmark-run", help="the benchmark's run folder, whose split records are compared "
                        "(read only; needed with --out)")
    parser.add_argument("--artefacts", default=str(ARTEFACTS), help="the benchmark's artefact folder")
    parser.add_argument("--results-md", default=str(RESULTS_MD), help="the file holding the generated section")
    parser.add_argument("--summary-only", action="store_true", help="only write the docs/results.md section")
    args = parser.parse_args(argv)
    try:
        if not args.summary_only:
            if not args.out:
                raise ConfigError("--out: expected the run folder of the probe ceilings")
            if not args.benchmark_run:
                raise ConfigError("--benchmark-run: expected the benchmark's run folder (its splits are compared)")
            tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
            run(pathlib.Path(args.out), pathlib.Path(args.output), tasks, pathlib.Path(args.benchmark_run),
                pathlib.Path(args.artefacts))
        print(write_section(pathlib.Path(args.output), pathlib.Path(args.artefacts), pathlib.Path(args.results_md)))
    except (ConfigError, SplitMismatch, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
