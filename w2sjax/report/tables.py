"""Result tables and plots from an experiment directory.

The table aggregates over seeds: mean ± std and a 95% t-interval of each accuracy, and PGR
computed from the seed means (the ratio of means is steadier than the mean of per-seed ratios
when the weak–ceiling gap is small), with a bootstrap interval over seeds.
"""

from __future__ import annotations

import json
import pathlib
from collections import defaultdict

import numpy as np

from w2sjax.report.results import bootstrap_pgr, interval, mean_pm, number, pgr_of_means, t_interval

GROUP_KEYS = ("task", "weak_model", "strong_model", "loss")


def load_results(directory: str | pathlib.Path) -> dict:
    """Read ``DIR/results.json``; a missing or malformed file raises ``ValueError`` (one line)."""
    path = pathlib.Path(directory) / "results.json"
    if not path.is_file():
        raise ValueError(f"report: no results.json in {str(directory)!r} (run `w2sjax run --out DIR` first)")
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"report: {path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"report: cannot read {path} ({type(exc).__name__}: {exc})") from None
    if not isinstance(results, dict) or not isinstance(results.get("runs"), list):
        raise ValueError(f"report: {path} has no 'runs' list")
    for i, run in enumerate(results["runs"]):
        problem = _run_problem(run)
        if problem:
            raise ValueError(f"report: {path}: runs[{i}] {problem}")
    return results


_NAME_KEYS = ("task", "weak_model", "strong_model", "loss")
_ACC_KEYS = ("weak_acc", "w2s_acc", "ceiling_acc")


def _run_problem(run) -> str | None:
    """What is wrong with one entry of ``runs`` (so the table code can trust it), or None."""
    if not isinstance(run, dict):
        return f"is a {type(run).__name__}, expected an object"
    missing = [k for k in _NAME_KEYS + _ACC_KEYS if k not in run]
    if missing:
        return f"lacks {', '.join(missing)}"
    for k in _ACC_KEYS:
        if isinstance(run[k], bool) or not isinstance(run[k], (int, float)):
            return f"has non-numeric {k}={run[k]!r}"
    return None


def summarize(results: dict) -> list[dict]:
    """One row per (task, weak, strong, loss[, chain][, variant]) with seed statistics.

    ``variant`` tells apart runs of the same pair that differ in method (a label refinement, a
    way of combining supervisors), so they are never averaged together.
    """
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for run in results["runs"]:
        key = tuple(run.get(k) for k in GROUP_KEYS) + (run.get("chain"), run.get("variant"))
        groups[key].append(run)
    summary = []
    for key, runs in groups.items():
        cols = {k: np.array([r[k] for r in runs], float) for k in ("weak_acc", "w2s_acc", "ceiling_acc")}
        row = dict(zip(GROUP_KEYS + ("chain", "variant"), key))
        row["seeds"] = len(runs)
        for k, v in cols.items():
            row[k] = float(v.mean())
            row[k + "_std"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
            row[k + "_ci95"] = t_interval(v)
        row["pgr"] = pgr_of_means(cols["weak_acc"], cols["w2s_acc"], cols["ceiling_acc"])
        row["pgr_ci95"] = bootstrap_pgr(cols["weak_acc"], cols["w2s_acc"], cols["ceiling_acc"])
        misfits = [r["misfit"] for r in runs if r.get("misfit") is not None]
        row["misfit"] = float(np.mean(misfits)) if misfits else float("nan")
        majority = [r["majority_acc"] for r in runs if isinstance(r.get("majority_acc"), (int, float))]
        row["majority_acc"] = float(np.mean(majority)) if len(majority) == len(runs) else None
        row["below_majority_seeds"] = [(r.get("seed"), r["w2s_acc"], r["majority_acc"], r["ceiling_acc"])
                                       for r in runs if _student_below_majority(r)]
        summary.append(row)
    return summary


def table(results: dict) -> tuple[list[str], list[list[str]]]:
    """The results table as ``(header, rows of cells)``: accuracies as mean ± std over seeds,
    PGR of the means with its interval. The text table and the HTML page both print it."""
    rows = summarize(results)
    header = ["task", "weak", "strong", "loss", "seeds", "weak acc", "w2s acc", "ceiling acc", "PGR [95% CI]"]
    with_variant = any(r.get("variant") for r in rows)
    if with_variant:
        header.insert(4, "variant")
    lines = []
    for r in rows:
        pgr = "undefined" if not np.isfinite(r["pgr"]) else number(r["pgr"]) + interval(*r["pgr_ci95"])
        strong = r["strong_model"] if not r.get("chain") else r["chain"]
        lines.append([
            r["task"], r["weak_model"], strong, r["loss"], str(r["seeds"]),
            mean_pm(r["weak_acc"], r["weak_acc_std"], r["seeds"]), mean_pm(r["w2s_acc"], r["w2s_acc_std"], r["seeds"]),
            mean_pm(r["ceiling_acc"], r["ceiling_acc_std"], r["seeds"]), pgr,
        ])
        if with_variant:
            lines[-1].insert(4, r.get("variant") or "-")
    return header, lines


def format_table(results: dict) -> str:
    """A plain-text table: accuracies as mean ± std over seeds, PGR of the means with its interval."""
    header, lines = table(results)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]
    fmt = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
    summary = summarize(results)
    warnings = [*ceiling_warnings(summary), *below_majority(summary)]
    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *map(fmt, lines), *warnings])


CEILING_MARGIN = 0.10  # a ceiling this far below its supervisor did not learn the task


def ceiling_warnings(rows: list[dict]) -> list[str]:
    """One line per (task, weak, strong) whose ceiling (the strong model on ground truth) ends
    below its supervisor by more than `CEILING_MARGIN`, or at or below the test split's majority
    rate: PGR is then meaningless, and the usual cause is the students' training settings."""
    out, seen = [], set()
    for r in rows:
        pair = (r["task"], r["weak_model"], r["strong_model"], r.get("chain"))
        if pair in seen:
            continue  # every loss and variant shares the pair's ceiling
        ceiling, weak, majority = r["ceiling_acc"], r["weak_acc"], r.get("majority_acc")
        what = []
        if weak - ceiling > CEILING_MARGIN:
            what.append(f"below its supervisor's {weak:.3f}")
        if majority is not None and ceiling <= majority:
            what.append(f"not above the majority rate {majority:.3f}")
        if what:
            seen.add(pair)
            strong = r.get("chain") or r["strong_model"]
            out.append(f"warning: {r['task']} {strong}: ceiling {ceiling:.3f} is {' and '.join(what)}; the strong "
                       "model did not learn the task (check train.lr and train.epochs)")
    return out


def _student_below_majority(run: dict) -> bool:
    """One seed's student stage ends below its test split's majority rate, which its ceiling reaches."""
    majority = run.get("majority_acc")
    return isinstance(majority, (int, float)) and run["w2s_acc"] < majority <= run["ceiling_acc"]


def below_majority(rows: list[dict]) -> list[str]:
    """One warning line per `summarize` row whose student ends below the test split's majority rate
    while its ceiling does not, over the seed means or at any one seed (the seeds are then named):
    the same model learned the task from true labels, so a student below
    always-the-majority-class points to its training (steps, learning rate, labels), not to the data."""
    out = []
    for r in rows:
        majority = r.get("majority_acc")
        strong = r.get("chain") or r["strong_model"]
        cell = f"{r['task']} {r['weak_model']} -> {strong} ({r['loss']}{', ' + r['variant'] if r.get('variant') else ''})"
        if _student_below_majority(r):
            out.append(f"warning: {cell}: w2s acc {r['w2s_acc']:.3f} "
                       f"is below the majority rate {majority:.3f} that its ceiling ({r['ceiling_acc']:.3f}) beats")
        elif r.get("below_majority_seeds"):
            seeds = "; ".join(f"seed {seed}: w2s acc {w2s:.3f} < majority {m:.3f} <= ceiling {c:.3f}"
                              for seed, w2s, m, c in r["below_majority_seeds"])
            out.append(f"warning: {cell}: a student stage ends below the majority rate its ceiling reaches ({seeds})")
    return out


def write_plots(results: dict, directory: str | pathlib.Path) -> list[pathlib.Path]:
    """Write the standard figures next to ``results.json``; returns their paths."""
    from w2sjax.report import plots

    return plots.write_all(results, summarize(results), pathlib.Path(directory))


def write_html(results: dict, directory: str | pathlib.Path) -> pathlib.Path:
    """Write ``DIR/report.html``: one self-contained page of the table, figures, config and notes."""
    from w2sjax.report import html

    return html.write(results, pathlib.Path(directory))
