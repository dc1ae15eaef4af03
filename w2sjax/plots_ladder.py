"""Burns et al.-style views of a ladder of strong models: accuracy and PGR against student size.

`w2sjax report DIR` already draws the weak × strong PGR heatmap. This module adds what a
*ladder* needs on top of it, from the same ``results.json``:

* ``ladder_accuracy.png``: left, test accuracy against the student, one colour per supervisor
  (its own accuracy dashed, the weak-to-strong student solid) and the ceiling in black; right,
  PGR against the student with its 95% seed-bootstrap interval. This is the shape of Burns et
  al. (2023), Fig. 3, with backbone parameters in place of compute.
* ``ladder.md``: the same numbers as Markdown tables (PGR matrix with intervals, accuracies by
  student), ready to paste into ``docs/ladder.md``.

Run it as ``python -m w2sjax.plots_ladder DIR``.

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

import numpy as np

from w2sjax import plots, report

__all__ = ["ladder_order", "model_sizes", "pgr_matrix_md", "accuracy_md", "accuracy_vs_size",
           "write_ladder", "main"]


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


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    if n == 0:
        return "0"
    return f"{n / 1e6:.0f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"


def _rows(summary: list[dict]) -> list[dict]:
    # Bootstrap chains have no single supervisor: they belong to the standard report only.
    return [r for r in summary if not r.get("chain")]


def _cell(r: dict) -> str:
    if not plots._finite(r["pgr"]):
        return "undef."
    lo, hi = r["pgr_ci95"]
    ci = f" [{plots._num(lo)}, {plots._num(hi)}]" if plots._finite(lo) else ""
    return f"{plots._num(r['pgr'])}{ci}"


def pgr_matrix_md(summary: list[dict], order: list[str], sizes: dict) -> str:
    """Markdown PGR matrix per (task, loss): supervisors as rows, students as columns.

    Cells read ``PGR [95% CI]``; pairs that are not upward are in parentheses; ``—`` did not run.
    """
    rows = _rows(summary)
    out = []
    for task, loss in plots._ordered((r["task"], r["loss"]) for r in rows):
        cell = {(r["weak_model"], r["strong_model"]): r for r in rows
                if r["task"] == task and r["loss"] == loss}
        weak = [m for m in order if any(w == m for w, _ in cell)]
        strong = [m for m in order if any(s == m for _, s in cell)]
        seeds = sorted({r["seeds"] for r in cell.values()})
        out.append(f"PGR on {task}, loss `{loss}`, {_seeds(seeds)} "
                   "(PGR of the seed means [95% bootstrap over seeds]; "
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
                    cells.append(_cell(r))
                else:
                    cells.append(f"({_cell(r)})")
            out.append(f"| {w} ({_size(sizes.get(w))}) | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def _seeds(seeds: list[int]) -> str:
    return f"{seeds[0]} seeds" if len(seeds) == 1 else f"{seeds[0]}–{seeds[-1]} seeds"


def _pm(r: dict, key: str) -> str:
    return f"{r[key]:.3f} ± {r[key + '_ci95']:.3f}"


def accuracy_md(summary: list[dict], order: list[str], sizes: dict) -> str:
    """Markdown accuracies per (task, loss): one row per pair, students ordered by the ladder.

    Accuracies are seed means ± the half-width of their 95% t-interval.
    """
    rows = _rows(summary)
    out = []
    for task, loss in plots._ordered((r["task"], r["loss"]) for r in rows):
        sel = [r for r in rows if r["task"] == task and r["loss"] == loss]
        sel.sort(key=lambda r: (order.index(r["strong_model"]), order.index(r["weak_model"])))
        out.append(f"Accuracy on {task}, loss `{loss}` (seed mean ± 95% t-interval)\n")
        out.append("| student | params | supervisor | seeds | weak acc | w2s acc | ceiling acc | PGR |")
        out.append("|---|---|---|---|---|---|---|---|")
        for r in sel:
            up = order.index(r["strong_model"]) > order.index(r["weak_model"])
            pgr = _cell(r) if up else f"({_cell(r)})"
            out.append(f"| {r['strong_model']} | {_size(sizes.get(r['strong_model']))} | "
                       f"{r['weak_model']} | {r['seeds']} | {_pm(r, 'weak_acc')} | "
                       f"{_pm(r, 'w2s_acc')} | {_pm(r, 'ceiling_acc')} | {pgr} |")
        out.append("")
    return "\n".join(out)


def accuracy_vs_size(summary: list[dict], order: list[str], sizes: dict):
    """Burns et al. Fig. 3: accuracy and PGR against the student, one line per supervisor.

    One row of two panels per (task, loss). Returns ``None`` when no pair is upward.
    """
    rows = [r for r in _rows(summary)
            if all(plots._finite(r.get(k)) for k in ("weak_acc", "w2s_acc", "ceiling_acc"))]
    panels = plots._ordered((r["task"], r["loss"]) for r in rows)
    if not any(order.index(r["strong_model"]) > order.index(r["weak_model"]) for r in rows):
        return None
    import matplotlib

    students = [m for m in order if any(r["strong_model"] == m for r in rows)]
    supervisors = [m for m in order if any(r["weak_model"] == m for r in rows)]
    x_of = {m: i for i, m in enumerate(students)}
    colours = matplotlib.colormaps["viridis"](np.linspace(0.1, 0.85, max(len(supervisors), 2)))
    fig = plots._figure(11.0, 4.0 * len(panels) + 0.8)
    axes = fig.subplots(len(panels), 2, squeeze=False)
    for (ax_acc, ax_pgr), (task, loss) in zip(axes, panels):
        sel = [r for r in rows if r["task"] == task and r["loss"] == loss]
        # The ceiling depends on the student and the seeds only, so supervisors share it.
        ceiling = {}
        for s in students:
            vals = [r for r in sel if r["strong_model"] == s]
            if vals:
                ceiling[s] = (np.mean([r["ceiling_acc"] for r in vals]),
                              np.mean([r["ceiling_acc_ci95"] for r in vals]))
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
            weak_acc = np.mean([r["weak_acc"] for r in up])
            ax_acc.axhline(weak_acc, color=colour, ls="--", lw=1)
            ax_acc.errorbar(px, [r["w2s_acc"] for r in up], yerr=[r["w2s_acc_ci95"] for r in up],
                            color=colour, marker="o", capsize=3,
                            label=f"{w} supervises (dashed: {w} itself)")
            pgr = np.array([r["pgr"] if plots._finite(r["pgr"]) else np.nan for r in up])
            lo = np.array([r["pgr_ci95"][0] if plots._finite(r["pgr_ci95"][0]) else np.nan for r in up])
            hi = np.array([r["pgr_ci95"][1] if plots._finite(r["pgr_ci95"][1]) else np.nan for r in up])
            err = np.vstack([np.where(np.isfinite(lo), pgr - lo, 0), np.where(np.isfinite(hi), hi - pgr, 0)])
            ax_pgr.errorbar(px, pgr, yerr=np.maximum(err, 0), color=colour,
                            marker="o", capsize=3, label=f"supervisor {w}")
        ticks = [f"{s}\n{_size(sizes.get(s))}" for s in students]
        for ax in (ax_acc, ax_pgr):
            ax.set_xticks(range(len(students)), ticks, fontsize=8)
            ax.set_xlim(-0.5, len(students) - 0.5)
            ax.set_xlabel("student (strong model), weakest first")
            ax.grid(alpha=0.3)
        ax_pgr.axhline(0, color="0.3", lw=0.8)
        ax_pgr.axhline(1, color="0.3", lw=0.8, ls=":")
        ax_acc.set_ylabel("test accuracy")
        ax_pgr.set_ylabel("PGR of seed means")
        title = f"{task} · loss: {loss}" if len(panels) > 1 else f"loss: {loss}"
        ax_acc.set_title(f"accuracy · {title}", fontsize=10)
        ax_pgr.set_title(f"PGR [95% bootstrap over seeds] · {title}", fontsize=10)
        ax_acc.legend(fontsize=7, loc="lower right")
        ax_pgr.legend(fontsize=7, loc="best")
    n_seeds = sorted({r["seeds"] for r in rows})
    fig.suptitle("Weak-to-strong along a ladder of students (only students above their "
                 f"supervisor; {_seeds(n_seeds)}; accuracy bars: 95% t-interval)", fontsize=10)
    return fig


def write_ladder(directory: str | os.PathLike) -> list[pathlib.Path]:
    """Write ``ladder_accuracy.png`` and ``ladder.md`` next to ``DIR/results.json``."""
    directory = pathlib.Path(directory)
    results = report.load_results(directory)
    summary = report.summarize(results)
    order = ladder_order(results)
    sizes = model_sizes(order)
    written = []
    fig = accuracy_vs_size(summary, order, sizes)
    if fig is not None:
        written.append(plots._save_atomic(fig, directory / "ladder_accuracy.png"))
    text = pgr_matrix_md(summary, order, sizes) + "\n" + accuracy_md(summary, order, sizes)
    path = directory / "ladder.md"
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m w2sjax.plots_ladder DIR", file=sys.stderr)
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
