"""Small helpers shared by the method modules: result rows and figures."""

from __future__ import annotations

import pathlib
import time
import warnings

import numpy as np

from w2sjax import atomic


def r2(mse: float, variance: float) -> float:
    """``1 - mse / variance``: the regression testbeds' higher-is-better score, stored in the
    standard ``*_acc`` fields so every results.json reads the same way (PGR is unchanged by it)."""
    return round(1.0 - float(mse) / float(variance), 6)


def pgr(weak: float, w2s: float, ceiling: float) -> float | None:
    gap = ceiling - weak
    return None if not gap > 0 else round((w2s - weak) / gap, 6)


def base_row(task: str, weak: str, strong: str, loss: str, seed: int, weak_acc, w2s_acc, ceiling_acc,
             misfit, seconds: dict, **extra) -> dict:
    """A row of the standard ``results.json`` schema, plus method-specific ``extra`` fields."""
    row = {
        "task": task, "weak_model": weak, "strong_model": strong, "loss": loss, "seed": seed,
        "weak_acc": round(float(weak_acc), 6), "w2s_acc": round(float(w2s_acc), 6),
        "ceiling_acc": round(float(ceiling_acc), 6), "pgr": pgr(float(weak_acc), float(w2s_acc), float(ceiling_acc)),
        "misfit": None if misfit is None else round(float(misfit), 6),
        "stage_seconds": {k: round(float(v), 3) for k, v in seconds.items()},
    }
    row.update(extra)
    return row


def flat(features) -> np.ndarray:
    """Frozen inputs as ``[N, D]`` float64 (raw images arrive as ``[N, H, W, C]``)."""
    x = np.asarray(features, np.float64)
    return x.reshape(len(x), -1)


class Timer:
    """``with Timer() as t: ...; t.seconds``"""

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


def figure(width: float = 6.0, height: float = 4.0, ncols: int = 1):
    """A matplotlib figure on the Agg backend (no display needed) and its axes."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    axes = fig.subplots(1, ncols)
    return fig, axes


def save(fig, path: pathlib.Path) -> pathlib.Path:
    """Write a figure atomically (a temporary file, then rename)."""
    path = pathlib.Path(path)
    with atomic.replacing(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig.savefig(tmp)
    return path


def mean_std(values) -> str:
    v = np.asarray([x for x in values if x is not None], float)
    if not len(v):
        return "n/a"
    return f"{v.mean():.3f}" if len(v) < 2 else f"{v.mean():.3f} ± {v.std(ddof=1):.3f}"
