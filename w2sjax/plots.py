"""Standard figures for an experiment directory, written as PNGs next to ``results.json``.

* ``pgr_heatmap.png``: PGR of the seed means over weak × strong models, one panel per loss;
* ``accuracy_bars.png``: weak / w2s / ceiling test accuracy per pair, one panel per loss;
* ``training_curves.png``: training loss (and validation accuracy, when logged) against step,
  one panel per stage kind, read from ``metrics.jsonl``;
* ``gain_vs_misfit.png``: each run's accuracy gain over its supervisor against the
  student–supervisor misfit.

A figure whose data is absent is skipped, so no empty or broken file is ever written.
Matplotlib is imported inside the functions (``import w2sjax`` stays cheap), and figures are
built on ``matplotlib.figure.Figure`` with the Agg canvas rather than through ``pyplot``: no
global backend is switched, so calling this from a notebook leaves its inline plotting alone.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
from collections import defaultdict

import numpy as np

from w2sjax import atomic
from w2sjax.results import finite, interval, number

# Panel order for training curves; unknown stage kinds follow in sorted order.
_STAGE_ORDER = ("weak", "ceiling", "w2s", "boot")
_STAGE_TITLES = {
    "weak": "weak supervisors (ground truth, half A)",
    "ceiling": "ceilings (ground truth, half B)",
    "w2s": "weak-to-strong students (weak labels, half B)",
    "boot": "bootstrap chains",
}
_DPI = 120


def write_all(results: dict, summary: list[dict], directory: str | os.PathLike) -> list[pathlib.Path]:
    """Write every figure that has data into ``directory``; returns the paths written, in order."""
    directory = pathlib.Path(directory)
    figures = [
        ("pgr_heatmap.png", lambda: pgr_heatmap(summary)),
        ("accuracy_bars.png", lambda: accuracy_bars(summary)),
        ("training_curves.png", lambda: training_curves(read_metrics(directory / "metrics.jsonl"))),
        ("gain_vs_misfit.png", lambda: gain_vs_misfit(results.get("runs", []))),
    ]
    written = []
    for name, build in figures:
        fig = build()
        if fig is not None:
            written.append(_save_atomic(fig, directory / name))
    return written


# ---- helpers --------------------------------------------------------------------------------

def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save_atomic(fig, path: pathlib.Path) -> pathlib.Path:
    """Render to a temporary file in the same folder, then rename: readers never see half a PNG."""
    with atomic.replacing(path) as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI)
    return path


def _ordered(values) -> list:
    """Unique values in first-seen order (configs list models weakest first, so keep that)."""
    return list(dict.fromkeys(values))


def _pair_label(row: dict) -> str:
    return row["chain"].replace(">", " → ") if row.get("chain") else f"{row['weak_model']} → {row['strong_model']}"


# ---- PGR heatmap ----------------------------------------------------------------------------

def pgr_heatmap(summary: list[dict]):
    """Panels per (task, loss): rows are weak models, columns strong models, cells PGR of means."""
    rows = [r for r in summary if not r.get("chain")]  # chains have no single weak × strong cell
    if not rows:
        return None
    from matplotlib.colors import TwoSlopeNorm

    tasks, losses = _ordered(r["task"] for r in rows), _ordered(r["loss"] for r in rows)
    weak, strong = _ordered(r["weak_model"] for r in rows), _ordered(r["strong_model"] for r in rows)
    cell = {(r["task"], r["loss"], r["weak_model"], r["strong_model"]): r for r in rows}
    values = [r["pgr"] for r in rows if finite(r["pgr"])]
    # Centre the colours at 0 (no gain). Cap the scale at 2 so one wild value (a near-zero
    # weak–ceiling gap) cannot wash out the rest; the printed numbers stay exact.
    limit = min(max([1.0] + [abs(v) for v in values]), 2.0)
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-limit, vmax=limit)
    clipped = any(abs(v) > limit for v in values)

    n_panels = len(tasks) * len(losses)
    ncols = min(len(losses), 3) if len(tasks) == 1 else len(losses)
    nrows = math.ceil(n_panels / ncols)
    cell_w, cell_h = 1.25, 0.85
    width = max(5.5, ncols * (1.6 + cell_w * len(strong)) + 1.2)
    height = max(3.0, nrows * (1.4 + cell_h * len(weak)) + 0.3)
    fig = _figure(width, height)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False).ravel())
    image, any_ci = None, False
    for ax, (task, loss) in zip(axes, [(t, l) for t in tasks for l in losses]):
        grid = np.full((len(weak), len(strong)), np.nan)
        ci, ran = {}, set()
        for i, w in enumerate(weak):
            for j, s in enumerate(strong):
                r = cell.get((task, loss, w, s))
                if r is not None:
                    ran.add((i, j))
                if r is not None and finite(r["pgr"]):
                    grid[i, j] = r["pgr"]
                    ci[i, j] = r.get("pgr_ci95")
        ax.set_facecolor("0.85")  # missing / undefined cells show grey
        image = ax.imshow(np.ma.masked_invalid(grid), cmap="RdBu", norm=norm, aspect="auto")
        for i in range(len(weak)):
            for j in range(len(strong)):
                v = grid[i, j]
                if not np.isfinite(v):
                    # Undefined: the ceiling did not beat the weak model, so there is no gap to recover.
                    text = "undefined\n(ceiling ≤ weak)" if (i, j) in ran else "not run"
                    ax.text(j, i, text, ha="center", va="center", fontsize=8, color="0.3")
                    continue
                text = number(v)
                lo_hi = ci.get((i, j))
                if lo_hi and all(finite(x) for x in lo_hi):
                    text += interval(*lo_hi, sep="\n")
                    any_ci = True
                dark = abs(norm(v) - 0.5) > 0.3  # white text on saturated cells
                ax.text(j, i, text, ha="center", va="center", fontsize=9, color="white" if dark else "black")
        ax.set_xticks(range(len(strong)), strong, rotation=20 if len(strong) > 3 else 0)
        ax.set_yticks(range(len(weak)), weak)
        ax.set_xlabel("strong model (student)")
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel("weak model (supervisor)")
        ax.set_title(f"{task} · loss: {loss}" if len(tasks) > 1 else f"loss: {loss}")
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    bar = fig.colorbar(image, ax=axes[:n_panels].tolist(), extend="both" if clipped else "neither", shrink=0.9)
    bar.set_label("PGR")
    title = "Performance gap recovered" + (f" on {tasks[0]}" if len(tasks) == 1 else "")
    notes = ["PGR of the seed means: 0 = weak model, 1 = ceiling"]
    if any_ci:
        notes.append("[95% bootstrap interval over seeds]")
    fig.suptitle("\n".join([title, *notes]), fontsize=10)
    return fig


# ---- accuracy bars --------------------------------------------------------------------------

def accuracy_bars(summary: list[dict]):
    """One panel per loss; for each weak → strong pair, bars for weak, w2s and ceiling accuracy."""
    rows = [r for r in summary if all(finite(r.get(k)) for k in ("weak_acc", "w2s_acc", "ceiling_acc"))]
    if not rows:
        return None
    tasks = _ordered(r["task"] for r in rows)
    panels = _ordered((r["task"], r["loss"]) for r in rows)
    pairs = _ordered(_pair_label(r) for r in rows)
    kinds = [("weak_acc", "weak supervisor", "#9e9e9e"), ("w2s_acc", "weak-to-strong", "#1f77b4"),
             ("ceiling_acc", "strong ceiling", "#2ca02c")]

    # Bars start near the data, not at 0: the interesting gaps are a few points wide.
    lows = [r[k] - r.get(k + "_std", 0.0) for r in rows for k, _, _ in kinds]
    highs = [r[k] + r.get(k + "_std", 0.0) for r in rows for k, _, _ in kinds]
    y_lo = max(0.0, math.floor((min(lows) - 0.05) * 20) / 20)
    y_hi = min(1.0, math.ceil((max(highs) + 0.02) * 20) / 20 + 0.02)

    ncols = 1 if len(pairs) > 4 else min(len(panels), 3)  # many pairs: stack panels, don't widen
    nrows = math.ceil(len(panels) / ncols)
    width = max(5.0, ncols * (1.2 + 1.1 * len(pairs)) + 0.5)
    fig = _figure(width, 3.4 * nrows + 0.6)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False, sharey=True).ravel())
    bar_w = 0.8 / len(kinds)
    annotate = len(pairs) * len(kinds) <= 9
    for ax, (task, loss) in zip(axes, panels):
        by_pair = {_pair_label(r): r for r in rows if r["task"] == task and r["loss"] == loss}
        for k, (key, label, colour) in enumerate(kinds):
            xs, means, stds = [], [], []
            for p, pair in enumerate(pairs):
                if pair in by_pair:
                    xs.append(p + (k - 1) * bar_w)
                    means.append(by_pair[pair][key])
                    stds.append(by_pair[pair].get(key + "_std", 0.0))
            bars = ax.bar(xs, np.array(means) - y_lo, bar_w, bottom=y_lo, yerr=stds, capsize=3,
                          color=colour, label=label, error_kw={"elinewidth": 1, "ecolor": "0.2"})
            if annotate:
                for rect, m, s in zip(bars, means, stds):
                    ax.text(rect.get_x() + rect.get_width() / 2, m + s + 0.006, f"{m:.3f}", ha="center",
                            va="bottom", fontsize=7, rotation=90)
        for p, pair in enumerate(pairs):
            if pair not in by_pair:
                ax.text(p, y_lo + 0.01, "not run", ha="center", va="bottom", fontsize=8, color="0.4")
        ax.set_xticks(range(len(pairs)), [p.replace(" → ", "\n→ ") for p in pairs], fontsize=8)
        ax.set_xlim(-0.5, len(pairs) - 0.5)  # the same slots in every panel, even where a pair is missing
        ax.set_ylim(y_lo, y_hi + (0.04 if annotate else 0))
        ax.set_title(f"{task} · loss: {loss}" if len(tasks) > 1 else f"loss: {loss}")
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    for ax in axes[: len(panels)]:
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel("test accuracy")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    n_seeds = sorted({r["seeds"] for r in rows})
    if n_seeds == [1]:
        spread = "1 seed, so no error bars"
    elif len(n_seeds) == 1:
        spread = f"mean ± std over {n_seeds[0]} seeds"
    else:
        spread = f"mean ± std over {n_seeds[0]}–{n_seeds[-1]} seeds"
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=3, frameon=False)
    fig.suptitle(f"Test accuracy ({spread})" + (f" on {tasks[0]}" if len(tasks) == 1 else ""), fontsize=11)
    return fig


# ---- training curves ------------------------------------------------------------------------

def read_metrics(path: pathlib.Path) -> list[dict]:
    """Records of ``metrics.jsonl``; a missing file gives ``[]`` and unreadable lines are skipped
    (a run killed mid-write can leave a torn last line)."""
    try:
        text = pathlib.Path(path).read_text()
    except (FileNotFoundError, NotADirectoryError):
        return []
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("stage"), str) and finite(record.get("step")):
            records.append(record)
    return records


def _split_stage(stage: str) -> tuple[str, str, str]:
    """``w2s__glove-bow__minilm-l2__logconf__seed0`` -> ("w2s", "glove-bow → minilm-l2 · logconf", "logconf")."""
    from w2sjax.stages import StageKey

    key = StageKey.parse(stage)
    kind, body = key.kind, list(key.parts)
    loss = ""
    if kind == "w2s" and len(body) == 3:
        label, loss = f"{body[0]} → {body[1]} · {body[2]}", body[2]
    elif kind == "boot" and len(body) == 2:
        label, loss = f"{body[0].replace('>', ' → ')} · {body[1]}", body[1]
    else:
        label = " · ".join(body) or kind
    return kind, label, loss


def _series(records: list[dict], field: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """stage -> (steps, values) for one field. A resumed stage logs some steps twice: keep the last."""
    points: dict[str, dict[float, float]] = defaultdict(dict)
    for r in records:
        if finite(r.get(field)):
            points[r["stage"]][r["step"]] = r[field]
    out = {}
    for stage, by_step in points.items():
        steps = np.array(sorted(by_step))
        out[stage] = (steps, np.array([by_step[s] for s in steps]))
    return out


_MAX_LABELS = 6  # more distinct lines than this in one panel are unreadable
_SMOOTH_MIN_POINTS = 20


def _ema(values: np.ndarray, decay: float = 0.85) -> np.ndarray:
    """Exponential moving average, bias-corrected so the first points are not pulled towards 0."""
    out = np.empty(len(values))
    acc = 0.0
    for i, v in enumerate(values):
        acc = decay * acc + (1 - decay) * v
        out[i] = acc / (1 - decay ** (i + 1))
    return out


def training_curves(records: list[dict]):
    """Loss against step (top row) and validation accuracy (bottom row, if any), per stage kind."""
    loss = _series(records, "loss")
    val = _series(records, "val_accuracy")
    if not loss and not val:
        return None
    stages = sorted({*loss, *val})
    kinds = sorted({_split_stage(s)[0] for s in stages},
                   key=lambda k: (_STAGE_ORDER.index(k) if k in _STAGE_ORDER else len(_STAGE_ORDER), k))
    rows = [(name, data) for name, data in (("training loss", loss), ("validation accuracy", val)) if data]
    fig = _figure(max(5.0, 4.6 * len(kinds)), 3.3 * len(rows) + 1.0)
    axes = fig.subplots(len(rows), len(kinds), squeeze=False)
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    smoothed = False
    for c, kind in enumerate(kinds):
        # One colour per line label (model, or pair and loss); seeds of a label share its colour.
        # A sweep has too many pairs to tell apart, so then students are coloured by loss alone.
        split = {s: _split_stage(s) for s in stages if _split_stage(s)[0] == kind}
        line_label = {s: label for s, (_, label, _) in split.items()}
        if len(set(line_label.values())) > _MAX_LABELS and all(loss_name for _, _, loss_name in split.values()):
            line_label = {s: f"all pairs · {loss_name}" for s, (_, _, loss_name) in split.items()}
        labels = _ordered(line_label[s] for s in sorted(split))
        colour = {label: cmap(i % 10) for i, label in enumerate(labels)}
        legend_drawn = False
        for r, (ylabel, data) in enumerate(rows):
            ax = axes[r, c]
            shown = set()
            for stage in sorted(split):
                if stage not in data:
                    continue
                label = line_label[stage]
                steps, values = data[stage]
                name = None if label in shown else label
                if len(steps) >= _SMOOTH_MIN_POINTS:  # per-batch losses are noisy: faint raw, bold trend
                    ax.plot(steps, values, color=colour[label], lw=0.8, alpha=0.25)
                    ax.plot(steps, _ema(values), color=colour[label], lw=1.6, alpha=0.9, label=name)
                    smoothed = True
                else:
                    ax.plot(steps, values, color=colour[label], lw=1.3, alpha=0.8,
                            marker="o" if len(steps) < 3 else None, ms=3, label=name)
                shown.add(label)
            if not shown:
                ax.text(0.5, 0.5, "not logged", transform=ax.transAxes, ha="center", va="center", color="0.5")
                ax.set_xticks([])
                ax.set_yticks([])
            else:
                ax.grid(alpha=0.3)
                ax.set_xlabel("optimizer step")
                if not legend_drawn:  # colours are shared down the column: one legend is enough
                    if len(labels) <= 3:
                        ax.legend(fontsize=7, loc="best", frameon=False)
                    else:  # a long legend would hide the curves
                        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False,
                                  ncols=2 if len(labels) > 3 else 1)
                    legend_drawn = True
            if c == 0:
                ax.set_ylabel(ylabel)
            if r == 0:
                ax.set_title(_STAGE_TITLES.get(kind, kind), fontsize=10)
    note = "; bold = smoothed (EMA), faint = as logged" if smoothed else ""
    fig.suptitle(f"Training curves (metrics.jsonl; one line per stage and seed{note})", fontsize=11)
    return fig


# ---- gain versus misfit ---------------------------------------------------------------------

def gain_vs_misfit(runs: list[dict]):
    """Scatter of w2s − weak accuracy against misfit, one point per run, coloured by loss."""
    points = [r for r in runs if all(finite(r.get(k)) for k in ("misfit", "w2s_acc", "weak_acc"))]
    if not points:
        return None
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    markers = "osD^vP*X"
    losses = _ordered(r["loss"] for r in points)
    strong = _ordered(r.get("chain") or r.get("strong_model") for r in points)
    fig = _figure(7.5, 4.4)
    ax = fig.subplots()
    ax.axhline(0.0, color="0.4", lw=1, ls="--", zorder=0)
    for i, loss in enumerate(losses):
        for j, s in enumerate(strong):
            sel = [r for r in points if r["loss"] == loss and (r.get("chain") or r.get("strong_model")) == s]
            if not sel:
                continue
            label = loss if len(strong) == 1 else f"{loss} · {s}"
            ax.scatter([r["misfit"] for r in sel], [r["w2s_acc"] - r["weak_acc"] for r in sel], s=36,
                       color=cmap(i % 10), marker=markers[j % len(markers)], alpha=0.85, label=label,
                       edgecolors="white", linewidths=0.5)
    ax.set_xlabel("misfit (mean squared distance of student and supervisor probabilities)")
    ax.set_ylabel("gain (w2s acc − weak acc)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1.0),
              title="loss" if len(strong) == 1 else "loss · student", title_fontsize=8)
    fig.suptitle("Gain over the supervisor against misfit (one point per run)", fontsize=11)
    return fig


# ---- task spread (benchmark suite) ----------------------------------------------------------

def task_spread(rows: list[dict], medians: list[dict]):
    """Per-task PGR with its interval, one panel per student, one colour per (supervisor, loss);
    a dashed line marks each series' median across tasks (``w2sjax.suite``)."""
    rows = [r for r in rows if finite(r.get("pgr"))]
    if not rows:
        return None
    tasks = _ordered(r["task"] for r in rows)
    students = _ordered(r["strong_model"] for r in rows)
    series = _ordered((r["weak_model"], r["loss"]) for r in rows)
    colours = [f"C{i}" for i in range(len(series))]
    med = {(m["weak_model"], m["strong_model"], m["loss"]): m["median_pgr"] for m in medians if not m.get("min_gap")}
    fig = _figure(4.2 * len(students) + 0.6, 0.45 * len(tasks) + 1.8)
    axes = np.atleast_1d(fig.subplots(1, len(students), squeeze=False, sharey=True).ravel())
    offsets = (np.arange(len(series)) - (len(series) - 1) / 2) * (0.7 / max(len(series), 1))
    for ax, student in zip(axes, students):
        ax.axvline(0.0, color="0.5", lw=0.8)
        ax.axvline(1.0, color="0.5", lw=0.8, ls=":")
        for (weak, loss), off, colour in zip(series, offsets, colours):
            pts = [r for r in rows if (r["strong_model"], r["weak_model"], r["loss"]) == (student, weak, loss)]
            ys = [tasks.index(r["task"]) + off for r in pts]
            xs = [r["pgr"] for r in pts]
            lo = [r["pgr"] - r["pgr_ci95"][0] if finite(r["pgr_ci95"][0]) else 0.0 for r in pts]
            hi = [r["pgr_ci95"][1] - r["pgr"] if finite(r["pgr_ci95"][1]) else 0.0 for r in pts]
            ax.errorbar(xs, ys, xerr=[np.maximum(lo, 0), np.maximum(hi, 0)], fmt="o", ms=4, color=colour,
                        capsize=2, lw=1, label=f"{weak} · {loss}")
            m = med.get((weak, student, loss))
            if finite(m):
                ax.axvline(m, color=colour, ls="--", lw=1)
        ax.set_yticks(range(len(tasks)), tasks)
        ax.invert_yaxis()
        ax.set_xlabel("PGR (0 = supervisor, 1 = ceiling)")
        ax.set_title(f"student: {student}")
        ax.grid(axis="x", alpha=0.3)
        # Keep wild values (tiny weak-ceiling gaps) from squashing the rest.
        lowest, highest = min(r["pgr"] for r in rows), max(r["pgr"] for r in rows)
        ax.set_xlim(max(-2.0, min(-0.5, lowest - 0.1)), min(3.0, max(1.5, highest + 0.1)))
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(series), 4), frameon=False)
    fig.suptitle("PGR per task (95% bootstrap interval over seeds); dashed: median across tasks", fontsize=10)
    return fig
