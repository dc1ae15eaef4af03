"""What scoring a seed's stages needs, saved by the run: ``OUT/splits/seed{N}.npz``.

A stage saves its predictions on the validation slice and the test split, but not which rows
those were or their labels. Reports that score the predictions again (per-example correctness,
the seed-and-test bootstrap of :mod:`experiments.reports.ladder`) read them from here rather than
loading the task and drawing the splits again, which would need the data set and the exact
splitting code of the run.

One file per seed holds, for ``val`` and ``test``: the row indices (``val_row`` into the task's
train split, ``test_row`` into its test split, after any task shift), the labels and, for
multiple-choice tasks, the question of each row (``*_group``); besides, ``num_classes`` and
``student_half_size``, which give the shape of a stage's saved predictions.

Process 0 writes it once, atomically. A resumed run finds the same content and writes nothing.
A run under other data settings in the same folder keeps the old file as
``seed{N}.<time>.npz`` before replacing it, as :func:`w2sjax.runner.rundir.keep_previous_results`
keeps an old ``results.json``.
"""

from __future__ import annotations

import os
import pathlib
import time
import zipfile

import numpy as np

from w2sjax.runner import atomic

__all__ = ["DIRNAME", "path", "record", "save", "load", "prediction_target"]

DIRNAME = "splits"
_PARTS = ("val", "test")
_FIELDS = ("label", "group")


def path(out: str | os.PathLike, seed: int) -> pathlib.Path:
    """Where the run in ``out`` keeps seed ``seed``'s record."""
    return pathlib.Path(out) / DIRNAME / f"seed{int(seed)}.npz"


def record(splits, num_classes: int) -> dict[str, np.ndarray]:
    """The arrays saved for one seed, from its :class:`w2sjax.data.Splits`."""
    rec = {"num_classes": np.asarray(num_classes, np.int64),
           "student_half_size": np.asarray(len(splits.student_half["label"]), np.int64)}
    for part in _PARTS:
        rec[f"{part}_row"] = np.asarray(splits.indices[part], np.int64)
        split = getattr(splits, part)
        for field in _FIELDS:
            if field in split:
                rec[f"{part}_{field}"] = np.asarray(split[field])
    return rec


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a)


def save(out: str | os.PathLike, seed: int, splits, num_classes: int) -> pathlib.Path | None:
    """Write seed ``seed``'s record into the run folder ``out`` (process 0 only). Returns the path
    an older, different record was kept under, else None."""
    import jax

    if jax.process_index() != 0:
        return None
    target, rec = path(out, seed), record(splits, num_classes)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic.remove_stale(target.parent)  # left by a run killed while writing one
    old = load(out, seed)
    if old is not None and _same(old, rec):
        return None  # a resumed run: the file is already this one
    kept = None
    if target.is_file():
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(target.stat().st_mtime))
        kept, n = target.with_name(f"{target.stem}.{stamp}.npz"), 1
        while kept.exists():
            n += 1
            kept = target.with_name(f"{target.stem}.{stamp}-{n}.npz")
        os.replace(target, kept)
    with atomic.replacing(target) as tmp:
        np.savez(tmp, **rec)
    return kept


def load(out: str | os.PathLike, seed: int) -> dict[str, np.ndarray] | None:
    """Seed ``seed``'s record in the run folder ``out``; None when there is none or it does not read."""
    try:
        with np.load(path(out, seed), allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile):
        return None


def prediction_target(rec: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The shapes a stage's saved predictions have (``b``, ``val``, ``test``), for
    :func:`w2sjax.runner.checkpoint.restore`."""
    n = int(rec["num_classes"])
    sizes = {"b": int(rec["student_half_size"]), "val": len(rec["val_label"]), "test": len(rec["test_label"])}
    return {k: np.zeros((size, n), np.float32) for k, size in sizes.items()}
