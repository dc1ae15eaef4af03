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

from w2sjax.report.results import finite, interval, number
from w2sjax.runner import atomic

# Panel order for training curves; unknown stage kinds follow in sorted order.
_STAGE_ORDER = ("weak", "ceiling", "w2s", "boot")
_STAGE_TITLES = {
    "weak": "weak supervisors (ground truth, the supervisor half)",
    "ceiling": "ceilings (ground truth, the student half)",
    "w2s": "weak-to-strong students (weak labels, the student half)",
    "boot": "bootstrap chains",
}
_DPI = 120


def figures(results: dict, summary: list[dict], directory: str | os.PathLike):
    """``(file name, figure)`` for every standard figure that has data, in order, built one at a
    time (a figure is drawn and dropped before the next is built)."""
    directory = pathlib.Path(directory)
    builders = [
        ("pgr_heatmap.png", lambda: pgr_heatmap(summary)),
        ("accuracy_bars.png", lambda: accuracy_bars(summary)),
        ("training_curves.png", lambda: training_curves(read_metrics(directory / "metrics.jsonl"))),
        ("gain_vs_misfit.png", lambda: gain_vs_misfit(results.get("runs", []))),
    ]
    for name, build in builders:
        fig = build()
        if fig is not None:
            yield name, fig


def write_all(results: dict, summary: list[dict], directory: str | os.PathLike) -> list[pathlib.Path]:
    """Write every figure that has data into ``directory``; returns the paths written, in order."""
    directory = pathlib.Path(directory)
    return [_save_atomic(fig, directory / name) for name, fig in figures(results, summary, directory)]


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


# ---- labels ---------------------------------------------------------------------------------
# A model named by its path (``hf:/a/very/long/path/to/a/model``) is drawn as its folder name
# (``model``), and the figure carries one note line giving the full path: long paths crowd axes
# and overlap their neighbours.

def short_model(name: str, depth: int = 1) -> str:
    """``hf:/path/to/model#4`` -> ``model#4`` (the last ``depth`` folders); other names unchanged."""
    if not name.startswith("hf:"):
        return name
    path, hash_, layer = name[3:].partition("#")
    folders = [f for f in path.replace("\\", "/").split("/") if f]
    return "/".join(folders[-depth:]) + hash_ + layer if folders else name


def model_labels(names) -> dict[str, str]:
    """A short, distinct label per model name: folder names, with parent folders added only where
    two paths end in the same folder. Chains (``a>b>c``) are split into their links."""
    models = _ordered(m for name in names for m in str(name).split(">"))
    depth = {m: 1 for m in models}
    while True:
        label = {m: short_model(m, depth[m]) for m in models}
        clash = {m for m in models if sum(label[m] == label[o] for o in models) > 1 and m.startswith("hf:")}
        grown = {m for m in clash if short_model(m, depth[m] + 1) != label[m]}
        if not grown:
            return label
        for m in grown:
            depth[m] += 1


def model_label(name: str, labels: dict[str, str]) -> str:
    """``name`` (a model or an ``a>b>c`` chain) as drawn, links joined by arrows."""
    return " → ".join(labels.get(m, m) for m in str(name).split(">"))


def name_note(labels: dict[str, str], shown=None) -> str:
    """One ``label = full name`` line per shortened model (those in ``shown``, if given)."""
    lines = [f"{short} = {full}" for full, short in labels.items()
             if short != full and (shown is None or full in shown)]
    return "\n".join(lines)


def seeds_text(counts) -> str:
    """``1 seed``, ``3 seeds``, ``2–3 seeds``, from the seed counts of a figure's rows."""
    counts = sorted(set(counts))
    if not counts:
        return "no seeds"
    lo, hi = counts[0], counts[-1]
    return f"{lo} seed" if lo == hi == 1 else f"{lo} seeds" if lo == hi else f"{lo}–{hi} seeds"


def text_inches(text: str, fontsize: float) -> float:
    """Rough width of ``text``'s longest line at ``fontsize`` points (DejaVu Sans averages about
    0.6 em per character), for sizing figures before they are drawn."""
    return max((len(line) for line in str(text).split("\n")), default=0) * fontsize * 0.6 / 72


def fit_label(text: str, width_in: float, fontsize: float) -> str:
    """A tick label broken after hyphens (or anywhere, if it must) so that no line is wider than
    ``width_in`` inches: long model names stack instead of running into their neighbours."""
    import textwrap

    chars = max(6, int(width_in * 72 / (fontsize * 0.6)))
    return "\n".join(out for line in str(text).split("\n")
                     for out in (textwrap.wrap(line, chars, break_on_hyphens=True) or [""]))


def wrap(text: str, width_in: float, fontsize: float) -> str:
    """``text`` broken into lines no wider than ``width_in`` inches; paths break anywhere."""
    import textwrap

    chars = max(20, int(width_in * 72 / (fontsize * 0.62)))
    return "\n".join(out for line in str(text).split("\n")
                     for out in (textwrap.wrap(line, chars, break_on_hyphens=False) or [""]))


def suptitle(fig, text: str, fontsize: float = 10) -> None:
    """A figure title wrapped to the figure's width, so it is never cut off at the sides."""
    fig.suptitle(wrap(text, fig.get_figwidth() - 0.3, fontsize), fontsize=fontsize)


def footnote(fig, labels: dict[str, str], shown=None, fontsize: float = 7) -> None:
    """The full names of shortened models, in small grey text under the figure."""
    note = name_note(labels, shown)
    if note:
        fig.supxlabel(wrap(note, fig.get_figwidth() - 0.3, fontsize), fontsize=fontsize, color="0.3",
                      ha="left", x=0.01)


def _pair_label(row: dict, labels: dict[str, str] | None = None) -> str:
    name = row["chain"] if row.get("chain") else f"{row['weak_model']}>{row['strong_model']}"
    return model_label(name, labels or {})


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

    labels = model_labels(weak + strong)
    n_panels = len(tasks) * len(losses)
    ncols = min(len(losses), 3) if len(tasks) == 1 else len(losses)
    nrows = math.ceil(n_panels / ncols)
    # Column labels wider than a cell break over lines rather than widening every cell; the row
    # labels take what their longest name needs.
    cell_w, cell_h = 1.25, 0.85
    x_ticks = [fit_label(labels[s], cell_w - 0.15, 9) for s in strong]
    tick_lines = max(t.count("\n") + 1 for t in x_ticks)
    y_labels = max(text_inches(labels[w], 9) for w in weak)
    width = max(5.5, ncols * (1.0 + y_labels + cell_w * len(strong)) + 1.2)
    note_lines = name_note(labels).count("\n") + 1 if name_note(labels) else 0
    height = max(3.0, nrows * (1.6 + 0.15 * (tick_lines - 1) + cell_h * len(weak)) + 0.6 + 0.15 * note_lines)
    fig = _figure(width, height)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False).ravel())
    image, any_ci = None, False
    for ax, (task, loss) in zip(axes, [(t, l) for t in tasks for l in losses]):
        image, ci_drawn = _heatmap_panel(ax, {(w, s): cell.get((task, loss, w, s)) for w in weak for s in strong},
                                         weak, strong, norm)
        any_ci = any_ci or ci_drawn
        ax.set_xticks(range(len(strong)), x_ticks)
        ax.set_yticks(range(len(weak)), [labels[w] for w in weak])
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
    suptitle(fig, "\n".join([title, *notes]))
    footnote(fig, labels)
    return fig


def _heatmap_panel(ax, cell: dict, weak: list, strong: list, norm):
    """One (task, loss) panel: ``cell[(weak, strong)]`` is the summary row of a pair (None if not
    run), drawn as its PGR with its interval. Returns the image and whether an interval was drawn."""
    grid = np.full((len(weak), len(strong)), np.nan)
    ci, ran, any_ci = {}, set(), False
    for i, w in enumerate(weak):
        for j, s in enumerate(strong):
            r = cell[w, s]
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
    return image, any_ci


# ---- accuracy bars --------------------------------------------------------------------------

def accuracy_bars(summary: list[dict]):
    """One panel per loss; for each weak → strong pair, bars for weak, w2s and ceiling accuracy."""
    rows = [r for r in summary if all(finite(r.get(k)) for k in ("weak_acc", "w2s_acc", "ceiling_acc"))]
    if not rows:
        return None
    tasks = _ordered(r["task"] for r in rows)
    panels = _ordered((r["task"], r["loss"]) for r in rows)
    labels = model_labels([r.get("chain") or r["weak_model"] for r in rows] + [r["strong_model"] for r in rows])
    pairs = _ordered(_pair_label(r, labels) for r in rows)
    slot = 1.1  # inches per pair; longer names are broken over lines, not allowed to widen it
    ticks = [fit_label(p.replace(" → ", "\n→ "), slot - 0.2, 8) for p in pairs]
    kinds = [("weak_acc", "weak supervisor", "#9e9e9e"), ("w2s_acc", "weak-to-strong", "#1f77b4"),
             ("ceiling_acc", "strong ceiling", "#2ca02c")]

    # Bars start near the data, not at 0: the interesting gaps are a few points wide.
    lows = [r[k] - r.get(k + "_std", 0.0) for r in rows for k, _, _ in kinds]
    highs = [r[k] + r.get(k + "_std", 0.0) for r in rows for k, _, _ in kinds]
    y_lo = max(0.0, math.floor((min(lows) - 0.05) * 20) / 20)
    y_hi = min(1.0, math.ceil((max(highs) + 0.02) * 20) / 20 + 0.02)

    ncols = 1 if len(pairs) > 4 else min(len(panels), 3)  # many pairs: stack panels, don't widen
    nrows = math.ceil(len(panels) / ncols)
    width = max(5.0, ncols * (1.2 + slot * len(pairs)) + 0.5) + 1.6  # the legend, on the right
    note = name_note(labels)
    tick_lines = max(t.count("\n") + 1 for t in ticks)
    note_h = 0.15 * (note.count("\n") + 1) if note else 0.0
    fig = _figure(width, (3.4 + 0.15 * (tick_lines - 2)) * nrows + 0.6 + note_h)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False, sharey=True).ravel())
    annotate = len(pairs) * len(kinds) <= 9
    for ax, (task, loss) in zip(axes, panels):
        by_pair = {_pair_label(r, labels): r for r in rows if r["task"] == task and r["loss"] == loss}
        _bars(ax, by_pair, pairs, kinds, y_lo, annotate=annotate)
        ax.set_xticks(range(len(pairs)), ticks, fontsize=8)
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
    spread = "1 seed, so no error bars" if n_seeds == [1] else f"mean ± std over {seeds_text(n_seeds)}"
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside right upper", frameon=False)
    suptitle(fig, f"Test accuracy ({spread})" + (f" on {tasks[0]}" if len(tasks) == 1 else ""), fontsize=11)
    footnote(fig, labels)
    return fig


def _bars(ax, by_pair: dict, pairs: list, kinds: list, y_lo: float, *, annotate: bool) -> None:
    """One panel's bars: for each pair of ``pairs`` run (``by_pair``), a bar per accuracy of
    ``kinds`` from ``y_lo`` up, with its spread over seeds (and its value when ``annotate``)."""
    bar_w = 0.8 / len(kinds)
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


def _split_stage(stage: str) -> tuple[str, tuple[str, ...], str]:
    """``w2s__glove-bow__minilm-l2__logconf__seed0`` -> ("w2s", ("glove-bow", "minilm-l2"), "logconf"):
    the stage kind, the models it involves (supervisor first) and the loss it minimises. The
    supervisors and ceilings minimise cross-entropy on ground truth; a kind this module does not
    know keeps all its parts and no loss."""
    from w2sjax.runner.stage_keys import StageKey

    key = StageKey.parse(stage)
    kind, body = key.kind, tuple(key.parts)
    if kind in ("weak", "ceiling") and len(body) == 1:
        return kind, body, "xent"
    if kind == "w2s" and len(body) >= 3:  # a fourth part names a variant (knn, ep3, ...)
        return kind, body[:2] + body[3:], body[2]
    if kind == "boot" and len(body) == 2:
        return kind, (body[0],), body[1]
    return kind, body, ""


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


def _panel_lines(panels, stages, split, line_of) -> dict:
    """panel -> {stage: label}: one colour per label (seeds of a label share it). A sweep has too
    many pairs to tell apart, and then its students share one colour, "all pairs"."""
    lines = {}
    for panel in panels:
        members = [s for s in stages if (split[s][0], split[s][2]) == panel]
        if len(_ordered(line_of[s] for s in members)) > _MAX_LABELS:
            lines[panel] = {s: "all pairs" for s in members}
        else:
            lines[panel] = {s: line_of[s] for s in members}
    return lines


def _curve_panel(column, rows, panel, lines: dict, cmap) -> bool:
    """Draw one panel (stage kind and loss) down its ``column`` of axes, one axis per row of
    ``rows`` (training loss, validation accuracy), with one legend under it. Returns whether a
    line was smoothed."""
    kind, loss_name = panel
    labels_here = _ordered(lines[s] for s in sorted(lines))
    colour = {label: cmap(j % 10) for j, label in enumerate(labels_here)}
    smoothed = False
    for r, (what, data) in enumerate(rows):
        ax = column[r]
        shown, smoothed_here = _curve_lines(ax, data, lines, colour)
        smoothed = smoothed or smoothed_here
        if not shown:
            ax.text(0.5, 0.5, "not logged", transform=ax.transAxes, ha="center", va="center", color="0.5")
            ax.set_xticks([])
            ax.set_yticks([])
        else:
            ax.grid(alpha=0.3)
            ax.margins(x=0.03, y=0.08)
        ax.set_ylabel(f"training loss ({loss_name})" if what == "training loss" and loss_name else what,
                      fontsize=9)
        if r == 0:
            title = _STAGE_TITLES.get(kind, kind)
            ax.set_title(title + (f"\nloss: {loss_name}" if kind not in ("weak", "ceiling") and loss_name else ""),
                         fontsize=9)
        if r == len(rows) - 1:  # colours are shared down the column: one legend, under it
            ax.set_xlabel("optimizer step", fontsize=9)
            handles, names = ax.get_legend_handles_labels()
            if not names and r > 0:
                handles, names = column[0].get_legend_handles_labels()
            if names:
                ax.legend(handles, names, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22),
                          frameon=False, ncols=1)
    return smoothed


def _curve_lines(ax, data: dict, lines: dict, colour: dict) -> tuple[set, bool]:
    """One line per stage of ``lines`` logged in ``data``; noisy per-batch series (many points)
    faint as logged under a bold trend. Returns the labels drawn and whether any was smoothed."""
    shown, smoothed = set(), False
    for stage in sorted(lines):
        if stage not in data:
            continue
        label = lines[stage]
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
    return shown, smoothed


def training_curves(records: list[dict]):
    """Training loss (top) and validation accuracy (below, where logged) against step.

    One panel per stage kind *and* loss: a student trained with ``logconf`` minimises another
    objective than one trained with ``xent``, so their losses never share an axis. The panels
    wrap after four columns.
    """
    loss = _series(records, "loss")
    val = _series(records, "val_accuracy")
    if not loss and not val:
        return None
    import matplotlib

    stages = sorted({*loss, *val})
    split = {s: _split_stage(s) for s in stages}
    rank = lambda k: (_STAGE_ORDER.index(k) if k in _STAGE_ORDER else len(_STAGE_ORDER), k)
    # Losses in the order they first trained (the config's order), not alphabetically.
    loss_order = _ordered(split[r["stage"]][2] for r in records if r["stage"] in split)
    panels = sorted({(kind, lo) for kind, _, lo in split.values()}, key=lambda p: (rank(p[0]), loss_order.index(p[1])))
    labels = model_labels(m for _, models, _ in split.values() for m in models)
    line_of = {s: " → ".join(model_label(m, labels) for m in models) or kind
               for s, (kind, models, _) in split.items()}
    rows = [(name, data) for name, data in (("training loss", loss), ("validation accuracy", val)) if data]

    lines = _panel_lines(panels, stages, split, line_of)
    n_labels = max(len(set(v.values())) for v in lines.values())
    ncols = min(len(panels), 4)
    nblocks = math.ceil(len(panels) / ncols)
    legend_h = 0.2 * n_labels + 0.3
    # The note names the models whose short names are drawn (not those folded into "all pairs").
    named = {link for panel in lines.values() for s, label in panel.items() if label != "all pairs"
             for m in split[s][1] for link in m.split(">")}
    note = name_note(labels, named)
    fig = _figure(max(5.0, 4.2 * ncols + 0.4),
                  nblocks * (2.8 * len(rows) + legend_h) + 0.9 + (0.15 * (note.count("\n") + 1) if note else 0))
    axes = fig.subplots(nblocks * len(rows), ncols, squeeze=False)
    cmap = matplotlib.colormaps["tab10"]
    smoothed = False
    for i, panel in enumerate(panels):
        block, c = divmod(i, ncols)
        column = [axes[block * len(rows) + r, c] for r in range(len(rows))]
        smoothed = _curve_panel(column, rows, panel, lines[panel], cmap) or smoothed
    for i in range(len(panels), nblocks * ncols):
        block, c = divmod(i, ncols)
        for r in range(len(rows)):
            axes[block * len(rows) + r, c].set_visible(False)
    note_text = "; bold = smoothed (EMA), faint = as logged" if smoothed else ""
    suptitle(fig, f"Training curves from metrics.jsonl (one line per stage and seed{note_text})", fontsize=11)
    footnote(fig, labels, named)
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
    labels = model_labels(strong)
    note = name_note(labels)
    fig = _figure(7.5 + max([0.0] + [text_inches(model_label(s, labels), 8) - 1.0 for s in strong]),
                  4.4 + (0.15 * (note.count("\n") + 1) if note else 0))
    ax = fig.subplots()
    ax.axhline(0.0, color="0.4", lw=1, ls="--", zorder=0)
    for i, loss in enumerate(losses):
        for j, s in enumerate(strong):
            sel = [r for r in points if r["loss"] == loss and (r.get("chain") or r.get("strong_model")) == s]
            if not sel:
                continue
            label = loss if len(strong) == 1 else f"{loss} · {model_label(s, labels)}"
            ax.scatter([r["misfit"] for r in sel], [r["w2s_acc"] - r["weak_acc"] for r in sel], s=36,
                       color=cmap(i % 10), marker=markers[j % len(markers)], alpha=0.85, label=label,
                       edgecolors="white", linewidths=0.5)
    ax.set_xlabel("misfit\n(mean squared difference of student and supervisor probabilities)")
    ax.margins(0.08)
    ax.set_ylabel("gain (w2s acc − weak acc)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1.0),
              title="loss" if len(strong) == 1 else "loss · student", title_fontsize=8)
    suptitle(fig, "Gain over the supervisor against misfit (one point per run)", fontsize=11)
    footnote(fig, labels)
    return fig


# ---- task spread (benchmark suite) ----------------------------------------------------------

def task_spread(rows: list[dict], medians: list[dict]):
    """Per-task PGR with its interval, one panel per student, one colour per (supervisor, loss);
    a dashed line marks each series' median across tasks (``w2sjax.report.suite``)."""
    rows = [r for r in rows if finite(r.get("pgr"))]
    if not rows:
        return None
    tasks = _ordered(r["task"] for r in rows)
    students = _ordered(r["strong_model"] for r in rows)
    series = _ordered((r["weak_model"], r["loss"]) for r in rows)
    colours = [f"C{i}" for i in range(len(series))]
    med = {(m["weak_model"], m["strong_model"], m["loss"]): m["median_pgr"] for m in medians if not m.get("min_gap")}
    labels = model_labels(students + [w for w, _ in series])
    names = [f"{model_label(w, labels)} · {loss}" for w, loss in series]
    width = 4.2 * len(students) + 0.6 + max(text_inches(t, 10) for t in tasks) + max(text_inches(n, 10) for n in names)
    note = name_note(labels)
    height = max(0.45 * len(tasks) + 1.8, 0.3 * len(series) + 1.0) + (0.15 * (note.count("\n") + 1) if note else 0)
    fig = _figure(width, height)
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
                        capsize=2, lw=1, label=f"{model_label(weak, labels)} · {loss}")
            m = med.get((weak, student, loss))
            if finite(m):
                ax.axvline(m, color=colour, ls="--", lw=1)
        ax.set_yticks(range(len(tasks)), tasks)
        ax.invert_yaxis()
        ax.set_xlabel("PGR (0 = supervisor, 1 = ceiling)")
        ax.set_title(f"student: {model_label(student, labels)}")
        ax.grid(axis="x", alpha=0.3)
        # Keep wild values (tiny weak-ceiling gaps) from squashing the rest.
        lowest, highest = min(r["pgr"] for r in rows), max(r["pgr"] for r in rows)
        ax.set_xlim(max(-2.0, min(-0.5, lowest - 0.1)), min(3.0, max(1.5, highest + 0.1)))
    handles, shown = axes[0].get_legend_handles_labels()
    fig.legend(handles, shown, loc="outside right upper", frameon=False)
    suptitle(fig, "PGR per task (95% bootstrap interval over seeds); dashed: median across tasks")
    footnote(fig, labels)
    return fig
