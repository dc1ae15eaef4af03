"""Bootstrap intervals of PGR that mean what they say.

* Each cell (task, supervisor, student, loss, ...) draws from a random stream of its own, seeded
  by a hash of its key (:func:`cell_rng`): adding, removing or reordering other cells changes none
  of its numbers, and a regeneration reproduces them bit for bit.
* :func:`pgr_draws` resamples seeds *and* test examples together from per-example correctness, so
  an interval includes the noise of the test draw (with ~1000 test rows and a gap of a few points,
  the larger part).
* :func:`median_interval` puts an interval on a median over tasks by a hierarchical bootstrap:
  tasks with replacement, then, inside each drawn task, one of its own seed-and-example draws.
  With fewer than ``min_tasks`` tasks it gives no interval: resampling three values can only
  return (nearly) their range, which is not a 95% interval of anything.

PGR is always :func:`w2sjax.metrics.pgr` (through :func:`w2sjax.report.results.pgr_values`).
"""

from __future__ import annotations

import hashlib

import numpy as np

from w2sjax.report.results import percentile_interval, pgr_values

N_BOOT = 2000
MIN_TASKS = 5  # below this, a median over tasks gets no interval


def cell_rng(*key) -> np.random.Generator:
    """A generator seeded by the sha256 of ``key``'s parts (their ``str``), joined unambiguously."""
    text = "\x1f".join(str(k) for k in key)
    return np.random.default_rng(int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little"))


def resample_counts(rng: np.random.Generator, n_boot: int, n_groups: int, n_items: int) -> np.ndarray:
    """How often each item appears in each of ``n_boot x n_groups`` resamples with replacement.

    Drawn as ``n_items`` uniform indices per resample, then counted: the multinomial counts that
    ``rng.multinomial`` would give, at a fraction of its cost over a thousand or more categories.
    """
    idx = rng.integers(0, n_items, size=(n_boot * n_groups, n_items))
    idx += np.arange(n_boot * n_groups)[:, None] * n_items  # each resample counts into its own row
    return np.bincount(idx.ravel(), minlength=n_boot * n_groups * n_items).reshape(n_boot, n_groups, n_items)


def pgr_draws(weak, w2s, ceiling, *, rng: np.random.Generator, n_boot: int = N_BOOT,
              shared_test: bool = True) -> np.ndarray:
    """``n_boot`` bootstrap values of PGR-of-seed-means (``nan`` where a draw's gap is not positive).

    ``weak``, ``w2s``, ``ceiling``: per-example correctness ``[n_seeds, n_test]`` (bool or 0/1).
    Each draw resamples the test rows (one resample shared by all seeds when they were scored on
    the same rows, ``shared_test``; else one per seed), then the seeds, with replacement.
    """
    weak, w2s, ceiling = (np.atleast_2d(np.asarray(a, np.float64)) for a in (weak, w2s, ceiling))
    n_seeds, n_test = weak.shape
    counts = np.broadcast_to(resample_counts(rng, n_boot, 1 if shared_test else n_seeds, n_test),
                             (n_boot, n_seeds, n_test))
    acc = [np.einsum("bst,st->bs", counts, a) / n_test for a in (weak, w2s, ceiling)]
    pick = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    return pgr_values(*(np.take_along_axis(a, pick, 1).mean(1) for a in acc))


def cell_interval(weak, w2s, ceiling, *, key: tuple, n_boot: int = N_BOOT, shared_test: bool = True):
    """The 95% seed-and-example interval of one cell, from the cell's own stream; also its draws."""
    draws = pgr_draws(weak, w2s, ceiling, rng=cell_rng(*key), n_boot=n_boot, shared_test=shared_test)
    return percentile_interval(draws), draws


def median_interval(draws_per_task: list[np.ndarray], *, key: tuple, n_boot: int = N_BOOT,
                    min_tasks: int = MIN_TASKS) -> tuple[float, float]:
    """95% interval of the median over tasks, resampling tasks, then seeds and test examples.

    ``draws_per_task``: each task's seed-and-example draws (:func:`pgr_draws`). A draw takes
    ``len(draws_per_task)`` tasks with replacement and, for each, one of that task's draws at
    random, and records their median (undefined draws left out). ``nan`` with fewer than
    ``min_tasks`` tasks.
    """
    n_tasks = len(draws_per_task)
    if n_tasks < max(min_tasks, 1):
        return float("nan"), float("nan")
    table = np.stack([np.asarray(d, np.float64) for d in draws_per_task])  # [n_tasks, n_draws]
    rng = cell_rng("median", *key)
    tasks = rng.integers(0, n_tasks, size=(n_boot, n_tasks))
    cols = rng.integers(0, table.shape[1], size=(n_boot, n_tasks))
    values = table[tasks, cols]
    defined = np.isfinite(values).any(1)
    medians = np.full(n_boot, np.nan)
    medians[defined] = np.nanmedian(values[defined], axis=1)
    return percentile_interval(medians)
