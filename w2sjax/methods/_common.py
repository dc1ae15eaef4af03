"""Small helpers shared by the method modules: scores, timing and figures (rows: ``w2sjax.report.results``)."""

from __future__ import annotations

import pathlib
import time
import warnings

import numpy as np

from w2sjax.runner import atomic


def r2(mse: float, variance: float) -> float:
    """``1 - mse / variance``: the regression testbeds' higher-is-better score, stored in the
    standard ``*_acc`` fields so every results.json reads the same way (PGR is unchanged by it)."""
    return round(1.0 - float(mse) / float(variance), 6)


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
