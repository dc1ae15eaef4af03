"""Burns et al.-style views of a ladder of strong models: accuracy and PGR against student size.

`w2sjax report DIR` already draws the weak × strong PGR heatmap. This module adds what a
*ladder* needs on top of it, from the same ``results.json``:

* ``ladder_accuracy.png``: left, test accuracy against the student, one colour per supervisor
  (its own accuracy dashed, the weak-to-strong student solid) and the ceiling in black; right,
  PGR against the student with its 95% seed-bootstrap interval. This is the shape of Burns et
  al. (2023), Fig. 3, with backbone parameters in place of compute.
* ``ladder.md``: the same numbers as Markdown tables (PGR matrix with intervals, accuracies by
  student), ready to paste into ``docs/ladder.md``.

Run it as ``python -m experiments.reports.ladder DIR``.

Intervals. The standard report's PGR interval resamples *seeds*. Every seed is scored on the
same test split, so that interval leaves out the noise of the test draw itself, which with 1000
examples and a weak–ceiling gap of a few points is the larger part.
`seed_and_example_bootstrap_pgr` reads each stage's saved test predictions from
``DIR/checkpoints`` and each seed's test rows and labels from ``DIR/splits`` (saved by the run;
the task is not loaded), and resamples seeds and test examples together; the tables report both
intervals.

Ordering. Supervisors and students are placed by their position on the ladder, which is the
order the config lists them (weakest first), not by parameter count: GloVe's 20M parameters are
a lookup table, not 20M parameters of computation, and would otherwise sit above MiniLM-L2.
A pair is *upward* when the student stands higher on the ladder than its supervisor. Burns et
al. plot only upward pairs; the tables show every pair that ran and mark the others.
"""

from __future__ import annotations

import os
import pathlib
import sys
from collections import defaultdict

import numpy as np

from w2sjax.report import plots, tables
from w2sjax.report.results import finite, interval, mean_pm, number
from w2sjax.runner import atomic
from w2sjax.runner.stage_keys import StageKey

__all__ = ["ladder_order", "model_sizes", "seed_and_example_bootstrap_pgr", "pgr_matrix_md", "accuracy_md",
           "accuracy_vs_size", "write_ladder", "main"]


def ladder_order(results: dict) -> list[str]:
    """Models from weakest to strongest: the config's lists (weak, then strong), first seen wins."""
    cfg = results.get("config", {})
    listed = list(cfg.get("weak_models", ())) + list(cfg.get("strong_models", ()))
    seen = [r[k] for r in results["runs"] for k in ("weak_model", "strong_model")]
    return plots._ordered(listed + seen)


def model_sizes(names) -> dict[str, int | None]:
    """Backbone parameters from the registry; ``None`` where it has no count (or no such model)."""
    from w2sjax.models import get_model

    sizes = {}
    for name in names:
        try:
            sizes[name] = get_model(name).num_params
        except ValueError:
            sizes[name] = None
    return sizes


def _plain(runs: list[dict]) -> list[dict]:
    # Bootstrap chains and label-method variants have other stage names and no single
    # supervisor → student cell; they belong to the standard report.
    return [r for r in runs if not r.get("chain") and not r.get("variant")]


def _correct(directory: pathlib.Path, results: dict) -> dict[tuple, dict[int, tuple]]:
    """Per (task, weak, strong, loss) and seed: boolean ``[n_test]`` correctness of weak, w2s,
    ceiling on the test split, and the test rows. Read from what the run saved, never rebuilt: each
    seed's test rows and labels (``splits/seed{N}.npz``, :mod:`w2sjax.runner.saved_splits`) and the
    stages' test predictions (``checkpoints/``). Groups whose files cannot be read (other stage
    names, a run from before the split records) are left out."""
    from w2sjax.runner import saved_splits
    from w2sjax.runner import checkpoint

    # A record from other data settings than these results' gives predictions of another shape,
    # which Orbax reports as a damaged read: that group is left out too.
    unreadable = (FileNotFoundError, ValueError, KeyError, checkpoint.DamagedCheckpoint)
    ckpt = directory / "checkpoints"
    records, out, expected = {}, defaultdict(dict), defaultdict(set)
    for run in _plain(results["runs"]):
        t, w, s, loss, seed = (run[k] for k in ("task", "weak_model", "strong_model", "loss", "seed"))
        expected[(t, w, s, loss)].add(seed)
        if seed not in records:
            records[seed] = saved_splits.load(directory, seed)
        rec = records[seed]
        if rec is None:
            continue
        try:
            got = [_test_correct(ckpt, run["stages"][role], rec) for role in ("weak", "w2s", "ceiling")]
        except unreadable:
            continue
        # Predictions that do not reproduce the recorded accuracies are not the ones scored.
        if any(abs(c.mean() - run[k]) > 1e-5 for c, k in zip(got, ("weak_acc", "w2s_acc", "ceiling_acc"))):
            continue
        out[(t, w, s, loss)][seed] = (*got, rec["test_row"])
    # A group missing a seed would report an interval about a different mean: drop it.
    return {k: v for k, v in out.items() if set(v) == expected[k]}


def _test_correct(ckpt: pathlib.Path, stage: str, rec: dict) -> np.ndarray:
    """Whether the finished stage ``stage`` (as a results row names it) got each test row right."""
    from w2sjax.runner import saved_splits
    from w2sjax.runner import checkpoint

    preds, _ = checkpoint.restore(ckpt, StageKey.parse(stage).outputs_name, saved_splits.prediction_target(rec))
    return np.argmax(np.asarray(preds["test"]), -1) == rec["test_label"]


def seed_and_example_bootstrap_pgr(directory: str | os.PathLike, results: dict | None = None, *,
                       n_boot: int = 2000, seed: int = 0) -> dict[tuple, tuple[float, float]]:
    """95% interval of PGR-of-means resampling seeds *and* test examples, per (task, weak,
    strong, loss), from the saved test predictions (:func:`w2sjax.report.intervals.cell_interval`).

    Each cell draws from a stream seeded by its own key (and ``seed``), so adding a cell changes
    no other cell's interval. When every seed was scored on the same test rows, one resample of
    the test rows is shared by all seeds in a draw (they share one test draw in reality too);
    otherwise each seed's test rows are resampled on their own.
    """
    from w2sjax.report import intervals

    directory = pathlib.Path(directory)
    results = tables.load_results(directory) if results is None else results
    out = {}
    for key, by_seed in _correct(directory, results).items():
        seeds = sorted(by_seed)
        weak, w2s, ceil = (np.stack([by_seed[s][i] for s in seeds]) for i in range(3))
        shared = all(np.array_equal(by_seed[s][3], by_seed[seeds[0]][3]) for s in seeds)
        out[key], _ = intervals.cell_interval(weak, w2s, ceil, key=(*key, seed), n_boot=n_boot, shared_test=shared)
    return out


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    if n == 0:
        return "0"
    return f"{n / 1e6:.0f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"


def _rows(summary: list[dict]) -> list[dict]:
    # Bootstrap chains have no single supervisor: they belong to the standard report only.
    return [r for r in summary if not r.get("chain")]


def _key(r: dict) -> tuple:
    return (r["task"], r["weak_model"], r["strong_model"], r["loss"])


def _interval(r: dict, test_ci: dict | None) -> tuple[float, float]:
    """The seed-and-test interval where the checkpoints gave one, else the seed-only one."""
    if test_ci and _key(r) in test_ci:
        return test_ci[_key(r)]
    return tuple(r["pgr_ci95"])


def _cell(r: dict, ci=None) -> str:
    if not finite(r["pgr"]):
        return "undef."
    return number(r["pgr"]) + interval(*(r["pgr_ci95"] if ci is None else ci))


def pgr_matrix_md(summary: list[dict], order: list[str], sizes: dict,
                  test_ci: dict | None = None) -> str:
    """Markdown PGR matrix per (task, loss): supervisors as rows, students as columns.

    Cells read ``PGR [95% CI]``, the interval over seeds and test examples where ``test_ci``
    (from `seed_and_example_bootstrap_pgr`) has the pair, else over seeds; pairs that are not
    upward are in parentheses; ``—`` did not run.
    """
    rows = _rows(summary)
    out = []
    for task, loss in plots._ordered((r["task"], r["loss"]) for r in rows):
        cell = {(r["weak_model"], r["strong_model"]): r for r in rows
                if r["task"] == task and r["loss"] == loss}
        weak = [m for m in order if any(w == m for w, _ in cell)]
        strong = [m for m in order if any(s == m for _, s in cell)]
        seeds = sorted({r["seeds"] for r in cell.values()})
        both = bool(test_ci) and all((task, w, s, loss) in test_ci for w, s in cell)
        over = "seeds and test examples" if both else "seeds"
        out.append(f"PGR on {task}, loss `{loss}`, {_seeds(seeds)} "
                   f"(PGR of the seed means [95% bootstrap over {over}]; "
                   "(parentheses): student not above its supervisor on the ladder)\n")
        out.append("| supervisor ↓ / student → | " + " | ".join(
            f"{s} ({_size(sizes.get(s))})" for s in strong) + " |")
        out.append("|---" * (len(strong) + 1) + "|")
        for w in weak:
            cells = []
            for s in strong:
                r = cell.get((w, s))
                if r is None:
                    cells.append("—")
                elif order.index(s) > order.index(w):
                    cells.append(_cell(r, _interval(r, test_ci)))
                else:
                    cells.append(f"({_cell(r, _interval(r, test_ci))})")
            out.append(f"| {w} ({_size(sizes.get(w))}) | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def _seeds(seeds: list[int]) -> str:
    return plots.seeds_text(seeds)


def _pm(r: dict, key: str) -> str:
    return mean_pm(r[key], r[key + "_ci95"], r["seeds"])


def accuracy_md(summary: list[dict], order: list[str], sizes: dict,
                test_ci: dict | None = None) -> str:
    """Markdown accuracies per (task, loss): one row per pair, students ordered by the ladder.

    Accuracies are seed means ± the half-width of their 95% t-interval; PGR comes with its
    seed-bootstrap interval and, where ``test_ci`` has the pair, the seed-and-test one.
    """
    rows = _rows(summary)
    out = []
    for task, loss in plots._ordered((r["task"], r["loss"]) for r in rows):
        sel = [r for r in rows if r["task"] == task and r["loss"] == loss]
        sel.sort(key=lambda r: (order.index(r["strong_model"]), order.index(r["weak_model"])))
        out.append(f"Accuracy on {task}, loss `{loss}` (seed mean ± 95% t-interval)\n")
        out.append("| student | params | supervisor | seeds | weak acc | w2s acc | ceiling acc "
                   "| PGR [seeds] | [seeds + test] |")
        out.append("|---" * 9 + "|")
        for r in sel:
            up = order.index(r["strong_model"]) > order.index(r["weak_model"])
            pgr = _cell(r) if up else f"({_cell(r)})"
            both = test_ci.get(_key(r)) if test_ci else None
            wide = (interval(*both, sep="") if both and finite(r["pgr"]) else "") or "—"
            out.append(f"| {r['strong_model']} | {_size(sizes.get(r['strong_model']))} | "
                       f"{r['weak_model']} | {r['seeds']} | {_pm(r, 'weak_acc')} | "
                       f"{_pm(r, 'w2s_acc')} | {_pm(r, 'ceiling_acc')} | {pgr} | {wide} |")
        out.append("")
    return "\n".join(out)


def accuracy_vs_size(summary: list[dict], order: list[str], sizes: dict, test_ci: dict | None = None):
    """Burns et al. Fig. 3: accuracy and PGR against the student, one line per supervisor.

    One row of two panels per (task, loss). Returns ``None`` when no pair is upward.
    """
    rows = [r for r in _rows(summary)
            if all(finite(r.get(k)) for k in ("weak_acc", "w2s_acc", "ceiling_acc"))]
    panels = plots._ordered((r["task"], r["loss"]) for r in rows)
    if not any(order.index(r["strong_model"]) > order.index(r["weak_model"]) for r in rows):
        return None
    import matplotlib

    students = [m for m in order if any(r["strong_model"] == m for r in rows)]
    supervisors = [m for m in order if any(r["weak_model"] == m for r in rows)]
    x_of = {m: i for i, m in enumerate(students)}
    colours = matplotlib.colormaps["viridis"](np.linspace(0.1, 0.85, max(len(supervisors), 2)))
    labels = plots.model_labels(students + supervisors)
    name = lambda m: plots.model_label(m, labels)
    note = plots.name_note(labels)
    slot = max(plots.text_inches(name(s), 8) for s in students) + 0.15
    fig = plots._figure(max(11.0, 2 * slot * len(students) + 3.0),
                        4.0 * len(panels) + 0.8 + (0.15 * (note.count("\n") + 1) if note else 0))
    axes = fig.subplots(len(panels), 2, squeeze=False)
    for (ax_acc, ax_pgr), (task, loss) in zip(axes, panels):
        sel = [r for r in rows if r["task"] == task and r["loss"] == loss]
        ceiling = _ceilings(sel, students)
        xs = [x_of[s] for s in ceiling]
        ax_acc.errorbar(xs, [v[0] for v in ceiling.values()], yerr=[v[1] for v in ceiling.values()],
                        color="black", marker="s", lw=2, capsize=3, label="ceiling (ground truth)")
        for colour, w in zip(colours, supervisors):
            up = sorted((r for r in sel if r["weak_model"] == w
                         and order.index(r["strong_model"]) > order.index(w)),
                        key=lambda r: x_of[r["strong_model"]])
            if not up:
                continue
            # Spread the supervisors a little sideways so their intervals do not overlap.
            shift = (supervisors.index(w) - (len(supervisors) - 1) / 2) * 0.08
            px = np.array([x_of[r["strong_model"]] for r in up]) + shift
            _supervisor_lines(ax_acc, ax_pgr, up, px, colour, name(w), test_ci)
        ticks = [f"{name(s)}\n{_size(sizes.get(s))}" for s in students]
        for ax in (ax_acc, ax_pgr):
            ax.set_xticks(range(len(students)), ticks, fontsize=8)
            ax.set_xlim(-0.5, len(students) - 0.5)
            ax.set_xlabel("student (strong model), weakest first")
            ax.grid(alpha=0.3)
        ax_pgr.axhline(0, color="0.3", lw=0.8)
        ax_pgr.axhline(1, color="0.3", lw=0.8, ls=":")
        ax_acc.set_ylabel("test accuracy")
        ax_pgr.set_ylabel("PGR of seed means (× at 0: undefined)")
        title = f"{task} · loss: {loss}" if len(panels) > 1 else f"loss: {loss}"
        ax_acc.set_title(f"accuracy · {title}", fontsize=10)
        over = "seeds + test" if test_ci else "seeds"
        ax_pgr.set_title(f"PGR [95% bootstrap over {over}] · {title}", fontsize=10)
        ax_acc.legend(fontsize=7, loc="lower right")
        ax_pgr.legend(fontsize=7, loc="best")
    n_seeds = sorted({r["seeds"] for r in rows})
    plots.suptitle(fig, "Weak-to-strong along a ladder of students (only students above their "
                        f"supervisor; {_seeds(n_seeds)}; accuracy bars: 95% t-interval)")
    plots.footnote(fig, labels)
    return fig


def _ceilings(sel: list[dict], students: list[str]) -> dict:
    """student -> (mean ceiling accuracy, mean interval half-width) over ``sel``. The ceiling
    depends on the student and the seeds only, so supervisors share it."""
    ceiling = {}
    for s in students:
        vals = [r for r in sel if r["strong_model"] == s]
        if vals:
            ceiling[s] = (np.mean([r["ceiling_acc"] for r in vals]),
                          np.mean([r["ceiling_acc_ci95"] for r in vals]))
    return ceiling


def _supervisor_lines(ax_acc, ax_pgr, up: list[dict], px: np.ndarray, colour, name: str,
                      test_ci: dict | None) -> None:
    """One supervisor's students ``up`` (at ``px``): its own accuracy dashed and theirs with
    intervals on ``ax_acc``; their PGR with intervals on ``ax_pgr``, an undefined one marked x."""
    weak_acc = np.mean([r["weak_acc"] for r in up])
    ax_acc.axhline(weak_acc, color=colour, ls="--", lw=1)
    ax_acc.errorbar(px, [r["w2s_acc"] for r in up], yerr=[r["w2s_acc_ci95"] for r in up],
                    color=colour, marker="o", capsize=3,
                    label=f"{name} supervises (dashed: {name} itself)")
    pgr = np.array([r["pgr"] if finite(r["pgr"]) else np.nan for r in up])
    ivs = [_interval(r, test_ci) for r in up]
    lo = np.array([a if finite(a) else np.nan for a, _ in ivs])
    hi = np.array([b if finite(b) else np.nan for _, b in ivs])
    err = np.vstack([np.where(np.isfinite(lo), pgr - lo, 0), np.where(np.isfinite(hi), hi - pgr, 0)])
    ax_pgr.errorbar(px, pgr, yerr=np.maximum(err, 0), color=colour,
                    marker="o", capsize=3, label=f"supervisor {name}")
    # An undefined PGR (ceiling not above the supervisor) is a result too: mark it.
    for x in px[~np.isfinite(pgr)]:
        ax_pgr.plot([x], [0], marker="x", color=colour, ms=8, ls="none")


def write_ladder(directory: str | os.PathLike) -> list[pathlib.Path]:
    """Write ``ladder_accuracy.png`` and ``ladder.md`` next to ``DIR/results.json``."""
    directory = pathlib.Path(directory)
    results = tables.load_results(directory)
    results = {**results, "runs": _plain(results["runs"])}
    summary = tables.summarize(results)
    order = ladder_order(results)
    sizes = model_sizes(order)
    test_ci = seed_and_example_bootstrap_pgr(directory, results)
    written = []
    fig = accuracy_vs_size(summary, order, sizes, test_ci)
    if fig is not None:
        written.append(plots._save_atomic(fig, directory / "ladder_accuracy.png"))
    text = (pgr_matrix_md(summary, order, sizes, test_ci) + "\n"
            + accuracy_md(summary, order, sizes, test_ci))
    path = directory / "ladder.md"
    atomic.write_text(path, text)
    written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m experiments.reports.ladder DIR", file=sys.stderr)
        return 2
    try:
        paths = write_ladder(argv[0])
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 1
    print((pathlib.Path(argv[0]) / "ladder.md").read_text())
    for p in paths:
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
