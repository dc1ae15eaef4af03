"""Result tables and plots from an experiment directory.

The table aggregates over seeds: mean ± std and a 95% t-interval of each accuracy, and PGR
computed from the seed means (the ratio of means is steadier than the mean of per-seed ratios
when the weak–ceiling gap is small), with a bootstrap interval over seeds.
"""

from __future__ import annotations

import json
import math
import pathlib
from collections import defaultdict

import numpy as np

# Two-sided 95% Student-t critical values t_{0.975, df} for df = 1..30 (standard table values).
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042]

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


def t_interval(values) -> float:
    """Half-width of the 95% t-interval of the mean (0 for a single value)."""
    values = np.asarray(values, float)
    n = len(values)
    if n < 2:
        return 0.0
    df = n - 1
    # Beyond the table, the first-order Cornish-Fisher expansion z + (z^3 + z) / (4 df) is within
    # 0.003 of the exact value (2.039 vs 2.042 at df = 30).
    t = _T975[df - 1] if df <= len(_T975) else 1.959964 + 2.3722 / df
    return float(t * values.std(ddof=1) / math.sqrt(n))


def pgr_of_means(weak, w2s, ceiling) -> float:
    gap = np.mean(ceiling) - np.mean(weak)
    return float((np.mean(w2s) - np.mean(weak)) / gap) if gap > 0 else float("nan")


def bootstrap_pgr(weak, w2s, ceiling, *, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of PGR-of-means, resampling seeds with replacement."""
    weak, w2s, ceiling = (np.asarray(v, float) for v in (weak, w2s, ceiling))
    n = len(weak)
    if n < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    gap = ceiling[idx].mean(1) - weak[idx].mean(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        values = np.where(gap > 0, (w2s[idx].mean(1) - weak[idx].mean(1)) / gap, np.nan)
    values = values[np.isfinite(values)]
    if not len(values):
        return float("nan"), float("nan")
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


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
        summary.append(row)
    return summary


def _pm(mean: float, std: float, seeds: int) -> str:
    # One seed has no spread to report; "± 0.000" would claim a certainty the run does not have.
    return f"{mean:.3f}" if seeds < 2 else f"{mean:.3f} ± {std:.3f}"


def format_table(results: dict) -> str:
    """A plain-text table: accuracies as mean ± std over seeds, PGR of the means with its interval."""
    rows = summarize(results)
    header = ["task", "weak", "strong", "loss", "seeds", "weak acc", "w2s acc", "ceiling acc", "PGR [95% CI]"]
    with_variant = any(r.get("variant") for r in rows)
    if with_variant:
        header.insert(4, "variant")
    lines = []
    for r in rows:
        lo, hi = r["pgr_ci95"]
        interval = f" [{lo:.2f}, {hi:.2f}]" if np.isfinite(lo) else ""
        pgr = "undefined" if not np.isfinite(r["pgr"]) else f"{r['pgr']:.2f}{interval}"
        strong = r["strong_model"] if not r.get("chain") else r["chain"]
        lines.append([
            r["task"], r["weak_model"], strong, r["loss"], str(r["seeds"]),
            _pm(r["weak_acc"], r["weak_acc_std"], r["seeds"]), _pm(r["w2s_acc"], r["w2s_acc_std"], r["seeds"]),
            _pm(r["ceiling_acc"], r["ceiling_acc_std"], r["seeds"]), pgr,
        ])
        if with_variant:
            lines[-1].insert(4, r.get("variant") or "-")
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]
    fmt = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *map(fmt, lines)])


def write_plots(results: dict, directory: str | pathlib.Path) -> list[pathlib.Path]:
    """Write the standard figures next to ``results.json``; returns their paths."""
    from w2sjax import plots

    return plots.write_all(results, summarize(results), pathlib.Path(directory))
