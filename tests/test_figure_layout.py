"""Every figure that `w2sjax run`, `w2sjax report`, the headline, the ladder and the suite write,
built from small results with long ``hf:`` model names and a single seed, is checked with
matplotlib's own geometry: every text (titles, labels, tick labels, legends, notes) lies inside
the figure, every data point inside its axes, no two tick labels of one axis overlap, and long
paths appear only as their folder name, with the full path once in a note."""

import json
import pathlib

import numpy as np
import pytest

from experiments.reports import headline as headline_report, ladder as ladder_report
from w2sjax.report import plots, suite, tables
from w2sjax.runner.stage_keys import StageKey

STRONG = "hf:/a/very/long/path/to/a/model"
WEAK = "hf:/a/very/long/path/to/a/weak-model"
SMALL = "glove-bow"
TASK = "fine_foods"
# (weak, w2s, ceiling) for one seed; logconf beats xent by two points.
ACCS = {(SMALL, STRONG): (0.70, 0.76, 0.81), (WEAK, STRONG): (0.74, 0.78, 0.81),
        (SMALL, "minilm-l6"): (0.70, 0.74, 0.79), (WEAK, "minilm-l6"): (0.74, 0.75, 0.79)}


def _runs(seeds=(0,)) -> list[dict]:
    runs = []
    for (weak, strong), (w, s, c) in ACCS.items():
        for loss, bump in (("xent", 0.0), ("logconf", 0.02)):
            for seed in seeds:
                runs.append({"task": TASK, "weak_model": weak, "strong_model": strong, "loss": loss, "seed": seed,
                             "weak_acc": w, "w2s_acc": s + bump, "ceiling_acc": c, "pgr": None,
                             "misfit": 0.05 + 0.01 * seed + bump, "stage_seconds": {"weak": 1.0}})
    runs.append({**runs[0], "chain": f"{SMALL}>{WEAK}>{STRONG}", "w2s_acc": 0.77})
    return runs


def _results() -> dict:
    return {"config": {"weak_models": [SMALL, WEAK], "strong_models": ["minilm-l6", STRONG]}, "runs": _runs()}


def _metrics(directory: pathlib.Path) -> None:
    keys = [StageKey.weak(SMALL, 0), StageKey.weak(WEAK, 0), StageKey.ceiling(STRONG, 0),
            StageKey.w2s(WEAK, STRONG, "xent", 0), StageKey.w2s(WEAK, STRONG, "logconf", 0),
            StageKey.boot((SMALL, WEAK, STRONG), "xent", 0)]
    lines = []
    for i, key in enumerate(keys):
        for step in range(10, 410, 10):  # enough points to be smoothed
            lines.append({"stage": key.name, "step": step, "loss": (0.3 + 0.1 * i) / (1 + step / 100)})
            if step % 100 == 0:
                lines.append({"stage": key.name, "step": step, "val_accuracy": 0.6 + step / 2000})
    (directory / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")


def _headline_summary(tmp_path) -> dict:
    part = type("Part", (), {"trainable": "lora"})
    runs = [r for r in _runs() if r["weak_model"] == SMALL]
    summary = headline_report.summary(tmp_path, {"p": part}, {"p": [{"config": {}, "runs": runs}]}, _curve())
    for r in summary["rows"]:
        r["params"] = r["params"] or 1_300_000_000  # the registry cannot size an hf: path that is not there
    return summary


def _curve() -> dict:
    return {"task": TASK, "supervisor": SMALL, "student": STRONG, "loss": "xent", "seed": 0, "epochs": 3.0,
            "steps_per_epoch": 31, "steps": list(range(8, 96, 8)), "test_acc": list(np.linspace(0.7, 0.8, 11)),
            "weak_val_acc": list(np.linspace(0.72, 0.78, 11)), "weak_test_acc": 0.71}


def _figures(tmp_path) -> dict:
    """name -> figure, for every figure builder the commands and experiments call."""
    results = _results()
    _metrics(tmp_path)
    # What `w2sjax run` and `w2sjax report` write (tables.write_plots -> plots.write_all).
    figs = {name.removesuffix(".png"): fig
            for name, fig in plots.figures(results, tables.summarize(results), tmp_path)}
    ladder = {**results, "runs": [r for r in results["runs"] if not r.get("chain")]}
    order = ladder_report.ladder_order(ladder)
    sizes = {SMALL: 20_000_000, WEAK: 110_000_000, "minilm-l6": 22_713_216, STRONG: 1_300_000_000}
    figs["ladder_accuracy"] = ladder_report.accuracy_vs_size(tables.summarize(ladder), order, sizes)
    for name, fig in headline_report.figures(_headline_summary(tmp_path / "headline")).items():
        figs[f"headline_{name}"] = fig
    rows = [{**r, "pgr_ci95": list(r["pgr_ci95"])} for r in tables.summarize(ladder)]
    for i, r in enumerate(rows):
        r["pgr_ci95"] = [r["pgr"] - 0.1, r["pgr"] + 0.1]
        r["task"] = ["fine_foods", "vader_tweets_with_a_long_task_name"][i % 2]
    figs["task_spread"] = plots.task_spread(rows, suite.medians(rows))
    return figs


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("figs")
    (tmp / "headline").mkdir()
    return _figures(tmp)


# ---- geometry ----------------------------------------------------------------------------------

def _inside(inner, outer, tol=1.0) -> bool:
    return (inner.x0 >= outer.x0 - tol and inner.y0 >= outer.y0 - tol
            and inner.x1 <= outer.x1 + tol and inner.y1 <= outer.y1 + tol)


def _drawn_ticklabels(axis) -> list:
    """The tick labels matplotlib draws: visible, non-empty, at a tick inside the view."""
    lo, hi = sorted(axis.get_view_interval())
    span = (hi - lo) * 1e-9
    ticks = axis.get_major_ticks()
    out = []
    for tick, loc in zip(ticks, axis.get_majorticklocs()):
        if not lo - span <= loc <= hi + span:
            continue
        for label in (tick.label1, tick.label2):
            if label.get_visible() and label.get_text():
                out.append(label)
    return out


def _texts(fig) -> list:
    """Every text artist drawn: figure texts, titles, axis labels, drawn tick labels, legends."""
    out = list(fig.texts)
    for holder in (fig._suptitle, fig._supxlabel, fig._supylabel):
        if holder is not None:
            out.append(holder)
    legends = list(fig.legends)
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        out += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
        out += _drawn_ticklabels(ax.xaxis) + _drawn_ticklabels(ax.yaxis)
        if ax.get_legend() is not None:
            legends.append(ax.get_legend())
    for legend in legends:
        out += [legend.get_title(), *legend.get_texts()]
    return [t for t in out if t.get_visible() and t.get_text().strip()]


def _points(ax) -> list[tuple[np.ndarray, float]]:
    """Display coordinates of the data points drawn in ``ax``, each with its marker's radius in
    pixels: markers of lines (error bars and their caps included) and scatter points."""
    from matplotlib.collections import PathCollection

    out = []
    dpi = ax.figure.dpi
    for line in ax.get_lines():
        if not line.get_visible():
            continue
        xy = np.asarray(line.get_transform().transform(line.get_xydata()), float)
        xy = xy[np.isfinite(xy).all(1)]
        radius = line.get_markersize() * dpi / 144 if line.get_marker() not in (None, "None", "", " ") else 0.0
        out += [(p, radius) for p in xy]
    for coll in ax.collections:
        if isinstance(coll, PathCollection) and coll.get_visible() and len(coll.get_offsets()):
            xy = coll.get_offset_transform().transform(np.asarray(coll.get_offsets(), float))
            radius = float(np.sqrt(np.max(coll.get_sizes()))) * dpi / 144 if len(coll.get_sizes()) else 0.0
            out += [(p, radius) for p in xy[np.isfinite(xy).all(1)]]
    return out


def _problems(fig) -> list[str]:
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    problems = []
    for text in _texts(fig):
        ext = text.get_window_extent(renderer)
        if not _inside(ext, box):
            problems.append(f"text {text.get_text()!r} at {ext.bounds} outside the figure {box.bounds}")
    # Figure-level texts (title, note, figure legends) overlap neither each other nor any axes.
    blocks = [(f"figure text {x.get_text()[:30]!r}", x.get_window_extent(renderer))
              for x in (fig._suptitle, fig._supxlabel) if x is not None and x.get_text()]
    blocks += [("figure legend", leg.get_window_extent(renderer)) for leg in fig.legends]
    panels = [(f"axes {ax.get_title()[:30]!r}", ax.get_tightbbox(renderer)) for ax in fig.axes if ax.get_visible()]
    for i, (what, box_a) in enumerate(blocks):
        for other, box_b in blocks[i + 1:] + panels:
            if box_a.shrunk(0.99, 0.99).overlaps(box_b.shrunk(0.99, 0.99)):
                problems.append(f"{what} overlaps {other}")
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        for p, radius in _points(ax):
            x, y = p
            b = ax.bbox
            if not (b.x0 - 1 <= x - radius and x + radius <= b.x1 + 1 and b.y0 - 1 <= y - radius
                    and y + radius <= b.y1 + 1):
                problems.append(f"point {p.round(1).tolist()} (radius {radius:.1f}) outside its axes {b.bounds}")
        for axis in (ax.xaxis, ax.yaxis):
            boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in _drawn_ticklabels(axis)]
            for i, (a, ba) in enumerate(boxes):
                for b_text, bb in boxes[i + 1:]:
                    if ba.shrunk(0.98, 0.98).overlaps(bb.shrunk(0.98, 0.98)):
                        problems.append(f"tick labels {a!r} and {b_text!r} overlap")
    return problems


NAMES = ["pgr_heatmap", "accuracy_bars", "training_curves", "gain_vs_misfit", "ladder_accuracy",
         "headline_size", "headline_pgr", "headline_curve", "task_spread"]


@pytest.mark.parametrize("name", NAMES)
def test_figure_fits_its_canvas(figures, name):
    fig = figures[name]
    assert fig is not None, f"{name}: nothing drawn"
    assert _problems(fig) == []


@pytest.mark.parametrize("name", NAMES)
def test_long_model_paths_are_shortened_and_named_once(figures, name):
    fig = figures[name]
    fig.canvas.draw()
    texts = [t.get_text() for t in _texts(fig)]
    assert not [t for t in texts if "/a/very/long/path" in t and "model:" not in t and "=" not in t], texts
    joined = "\n".join(texts)
    if "model" in joined:  # the short name is drawn somewhere: its full path is given once
        assert STRONG in joined.replace("\n", ""), joined


def test_one_seed_is_singular(figures):
    texts = [t.get_text() for name in NAMES for t in _texts(figures[name])]
    assert not [t for t in texts if "1 seeds" in t]
    assert any("1 seed" in t for t in texts)


def test_training_curves_put_one_objective_on_each_axis(figures):
    """Students trained with xent and with logconf minimise different losses: never one axis."""
    fig = figures["training_curves"]
    for ax in fig.axes:
        if ax.get_visible() and "loss" in ax.get_ylabel():
            title = ax.get_title()
            labels = [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")]
            losses = {loss for loss in ("xent", "logconf") if any(loss in x for x in labels + [title])}
            assert len(losses) <= 1, (title, labels)


def test_short_labels():
    assert plots.short_model("hf:/a/very/long/path/to/a/model") == "model"
    assert plots.short_model("hf:/models/llama/#4") == "llama#4"
    assert plots.short_model("minilm-l6") == "minilm-l6"
    labels = plots.model_labels(["hf:/x/one/model", "hf:/y/two/model", "glove-bow"])
    assert labels == {"hf:/x/one/model": "one/model", "hf:/y/two/model": "two/model", "glove-bow": "glove-bow"}
    assert plots.seeds_text([1]) == "1 seed" and plots.seeds_text([3]) == "3 seeds"
    assert plots.seeds_text([1, 3]) == "1–3 seeds"


def test_headline_summary_has_no_planning_text(tmp_path):
    text = headline_report.markdown(_headline_summary(tmp_path))
    assert "issue" not in text.lower()
