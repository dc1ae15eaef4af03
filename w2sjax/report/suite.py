"""A benchmark suite: the same protocol on many tasks, summarised the way Burns et al. report it.

Per task and (supervisor, student, loss): PGR of the seed means with a bootstrap interval over
seeds (:func:`w2sjax.report.results.bootstrap_pgr`). Multiple-choice tasks (stored one row per choice)
are scored per question (``*_acc_question``): per-pair accuracy there mostly measures the
share of wrong choices. Across tasks: the median of the per-task PGRs, with a 95% percentile
interval from resampling the tasks; tasks whose ceiling does not beat the supervisor have no
PGR and are left out of the median (and counted).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import numpy as np

from w2sjax.report.results import bootstrap_pgr, pgr_of_means

PAIR_KEYS = ("weak_model", "strong_model", "loss")


def task_config(base, task):
    """``base`` (a :class:`w2sjax.config.Config`) for ``task``, its caps clipped to the task's size."""
    n_train_rows, n_test_rows = len(task.train["label"]), len(task.test["label"])
    # Grouped tasks move the validation cut to the next question boundary; leave room for it.
    room = n_train_rows - base.data.n_val - (8 if "group" in task.train else 0)
    n_train = room if base.data.n_train is None else min(base.data.n_train, room)
    n_test = None if base.data.n_test is None or base.data.n_test >= n_test_rows else base.data.n_test
    data = dataclasses.replace(base.data, task=task.name, n_train=n_train, n_test=n_test)
    return dataclasses.replace(base, name=f"{base.name}-{task.name}", data=data)


def task_rows(results_by_task: dict[str, dict]) -> list[dict]:
    """One row per (task, supervisor, student, loss) from each task's ``results.json`` dict."""
    rows = []
    for task, results in results_by_task.items():
        groups: dict[tuple, list[dict]] = defaultdict(list)
        for run in results["runs"]:
            if run.get("chain") or run.get("variant"):
                continue  # the suite compares plain weak -> strong pairs
            groups[tuple(run[k] for k in PAIR_KEYS)].append(run)
        for key, runs in groups.items():
            per_question = all("weak_acc_question" in r for r in runs)
            suffix = "_question" if per_question else ""
            acc = {k: np.array([r[f"{k}_acc{suffix}"] for r in runs], float) for k in ("weak", "w2s", "ceiling")}
            lo, hi = bootstrap_pgr(acc["weak"], acc["w2s"], acc["ceiling"])
            rows.append({
                "task": task, **dict(zip(PAIR_KEYS, key)),
                "seeds": len(runs),
                "scored": "per question" if per_question else "per example",
                **{f"{k}_acc": float(v.mean()) for k, v in acc.items()},
                "pgr": pgr_of_means(acc["weak"], acc["w2s"], acc["ceiling"]),
                "pgr_ci95": (lo, hi),
                "n_test": int(runs[0].get("n_test_questions" if per_question else "n_test", 0)),
            })
    return rows


def medians(rows: list[dict], *, min_gap: float = 0.0, draws: dict | None = None, n_boot: int = 2000) -> list[dict]:
    """The median PGR across tasks per (supervisor, student, loss).

    ``min_gap`` > 0 keeps only tasks whose ceiling beats the supervisor by at least that much:
    PGR divides by the gap, so a gap of a point or two turns test noise into PGRs of +-5.
    The filter looks at weak and ceiling accuracy only, never at the student.

    The interval resamples tasks, then seeds and test examples inside each task
    (:func:`w2sjax.report.intervals.median_interval`), from ``draws``: each row's seed-and-example
    bootstrap draws, keyed by (task, supervisor, student, loss). Without draws for every task kept,
    or with fewer than ``intervals.MIN_TASKS`` tasks, there is no interval (``nan``): resampling a
    handful of per-task values only returns their range.
    """
    from w2sjax.report import intervals

    by_pair: dict[tuple, list[dict]] = defaultdict(list)
    counts: dict[tuple, int] = defaultdict(int)
    for r in rows:
        key = tuple(r[k] for k in PAIR_KEYS)
        counts[key] += 1
        if np.isfinite(r["pgr"]) and r["ceiling_acc"] - r["weak_acc"] >= min_gap:
            by_pair[key].append(r)
    out = []
    for key, n_tasks in counts.items():
        kept = by_pair.get(key, [])
        values = np.array([r["pgr"] for r in kept], float)
        med = float(np.median(values)) if len(values) else float("nan")
        ci = (float("nan"), float("nan"))
        task_draws = [(draws or {}).get((r["task"], *key)) for r in kept]
        if kept and all(d is not None for d in task_draws):
            ci = intervals.median_interval(task_draws, key=(*key, min_gap), n_boot=n_boot)
        out.append({**dict(zip(PAIR_KEYS, key)), "median_pgr": med, "median_ci95": ci,
                    "tasks_with_pgr": len(values), "tasks": n_tasks, "min_gap": min_gap})
    return out


def gaps(rows: list[dict]) -> list[dict]:
    """Per task, each supervisor's and each student's ceiling accuracy (means over seeds and
    over the rows that share them): the weak-ceiling gaps PGR divides by."""
    out: dict[str, dict] = {}
    for r in rows:
        entry = out.setdefault(r["task"], {"task": r["task"], "scored": r["scored"], "weak": {}, "ceiling": {}})
        entry["weak"].setdefault(r["weak_model"], r["weak_acc"])
        entry["ceiling"].setdefault(r["strong_model"], r["ceiling_acc"])
    return list(out.values())


def _fmt(x: float) -> str:
    return f"{x:.2f}" if np.isfinite(x) else "undefined"


def format_markdown(rows: list[dict], meds: list[dict]) -> str:
    """The gap table, the per-task table and the median table(s), as Markdown (``meds`` may hold
    medians for several ``min_gap`` values)."""
    table = gaps(rows)
    weak = list(dict.fromkeys(w for g in table for w in g["weak"]))
    strong = list(dict.fromkeys(s for g in table for s in g["ceiling"]))
    lines = ["| task | scored | " + " | ".join(weak + [f"{s} probe (ceiling)" for s in strong]) + " |",
             "|---|---|" + "---|" * (len(weak) + len(strong))]
    for g in table:
        cells = [g["weak"].get(w) for w in weak] + [g["ceiling"].get(s) for s in strong]
        lines.append(f"| {g['task']} | {g['scored']} | "
                     + " | ".join("-" if c is None else f"{c:.3f}" for c in cells) + " |")
    lines += ["", "| task | supervisor | student | loss | scored | weak | w2s | ceiling | PGR [95% CI] |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lo, hi = r["pgr_ci95"]
        ci = f" [{_fmt(lo)}, {_fmt(hi)}]" if np.isfinite(lo) and np.isfinite(r["pgr"]) else ""
        lines.append(f"| {r['task']} | {r['weak_model']} | {r['strong_model']} | {r['loss']} | {r['scored']} | "
                     f"{r['weak_acc']:.3f} | {r['w2s_acc']:.3f} | {r['ceiling_acc']:.3f} | {_fmt(r['pgr'])}{ci} |")
    lines += ["", "| supervisor | student | loss | tasks | median PGR [95% CI over tasks] | tasks with a PGR |",
              "|---|---|---|---|---|---|"]
    for m in meds:
        which = "all" if not m.get("min_gap") else f"gap >= {m['min_gap']:.2f}"
        lo, hi = m["median_ci95"]
        ci = f" [{_fmt(lo)}, {_fmt(hi)}]" if np.isfinite(lo) else ""
        lines.append(f"| {m['weak_model']} | {m['strong_model']} | {m['loss']} | {which} | {_fmt(m['median_pgr'])}{ci} | "
                     f"{m['tasks_with_pgr']} of {m['tasks']} |")
    return "\n".join(lines)
