"""What a ``results.json`` row holds, and the statistics and text made from rows.

* :func:`row`: the one row schema, written by the standard protocol and by every method;
  :func:`stage_row` fills it from a student's weak, w2s and ceiling stages;
* :func:`pgr` (one row), :func:`pgr_of_means` and :func:`pgr_values` (arrays): PGR, always through
  :func:`w2sjax.metrics.pgr`, with "undefined" (the ceiling does not beat the weak model) as
  ``None`` in a row and ``nan`` in statistics;
* :func:`t_interval`, :func:`bootstrap_pgr`, :func:`percentile_interval`: intervals over seeds;
* :func:`number`, :func:`interval`, :func:`mean_pm`: how tables and figures print them.
"""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np

from w2sjax import metrics

# Two-sided 95% Student-t critical values t_{0.975, df} for df = 1..30 (standard table values).
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042]


# ---- PGR ------------------------------------------------------------------------------------

def pgr_values(weak, w2s, ceiling) -> np.ndarray:
    """PGR elementwise (e.g. one value per bootstrap draw), ``nan`` where it is undefined."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undefined PGR is nan here; callers report it as such
        return np.asarray(metrics.pgr(weak, w2s, ceiling), np.float64)


def pgr(weak_acc: float, w2s_acc: float, ceiling_acc: float) -> float | None:
    """One row's PGR, rounded as stored in ``results.json``; ``None`` (null) when undefined.

    Computed from the accuracies in float32, as every ``results.json`` so far was, so that a
    rerun reproduces stored rows digit for digit.
    """
    value = float(pgr_values(*(np.float32(v) for v in (weak_acc, w2s_acc, ceiling_acc))))
    return None if math.isnan(value) else round(value, 6)


def pgr_of_means(weak, w2s, ceiling) -> float:
    """PGR of the seed means (steadier than the mean of per-seed PGRs when the gap is small)."""
    return float(pgr_values(np.mean(weak), np.mean(w2s), np.mean(ceiling)))


# ---- the row schema -------------------------------------------------------------------------

def row(task: str, weak: str, strong: str, loss: str, seed: int, weak_acc, w2s_acc, ceiling_acc, misfit,
        stage_seconds: dict, **extra) -> dict:
    """A ``results.json`` row: the fields every report reads, then ``extra`` (method-specific),
    then the seconds each stage took."""
    weak_acc, w2s_acc, ceiling_acc = float(weak_acc), float(w2s_acc), float(ceiling_acc)
    return {
        "task": task, "weak_model": weak, "strong_model": strong, "loss": loss, "seed": seed,
        "weak_acc": round(weak_acc, 6), "w2s_acc": round(w2s_acc, 6), "ceiling_acc": round(ceiling_acc, 6),
        "pgr": pgr(weak_acc, w2s_acc, ceiling_acc),
        "misfit": None if misfit is None else round(float(misfit), 6),
        **extra,
        "stage_seconds": {k: round(float(v), 3) for k, v in stage_seconds.items()},
    }


def stage_row(task, config, seed, weak_name, strong_name, loss, weak, w2s, ceiling, test_labels, b_labels,
              test_groups=None) -> dict:
    """The row of one student from its three stages' outputs (``experiment.StageOutput``: ``weak``
    predicts half B as ``"b"``, its pseudo-labels; every stage predicts ``"test"``), as the standard
    protocol and the methods built on it write it. ``test_groups``: the question of each test row
    (multiple-choice tasks)."""
    agree = _agreement(w2s.preds["test"], weak.preds["test"], test_labels)
    agree_b = _agreement(w2s.preds["b"], weak.preds["b"], b_labels)
    return row(
        task.name, weak_name, strong_name, loss, seed,
        _accuracy(weak.preds["test"], test_labels), _accuracy(w2s.preds["test"], test_labels),
        _accuracy(ceiling.preds["test"], test_labels), metrics.misfit(w2s.preds["test"], weak.preds["test"]),
        {"weak": weak.seconds, "w2s": w2s.seconds, "ceiling": ceiling.seconds},
        misfit_kl=round(float(metrics.misfit(w2s.preds["test"], weak.preds["test"], kind="kl")), 6),
        agreement=round(float(agree["agreement"]), 6),
        agreement_on_weak_errors=_maybe(agree["agreement_on_teacher_errors"]),
        corrected_weak_errors_train=_maybe(agree_b["corrected_teacher_errors"]),
        strong_mode=config.strong_mode,
        n_test=int(len(test_labels)),
        # always answering the test split's most common class: the floor a trained student must beat
        majority_acc=round(float(np.bincount(np.asarray(test_labels, int)).max() / max(1, len(test_labels))), 6),
        # Each stage's checkpoint name: its readable name and the fingerprint of its settings.
        stages={role: out.key.checkpoint_name for role, out in (("weak", weak), ("w2s", w2s), ("ceiling", ceiling))
                if out.key is not None},
        **(_question_scores(weak, w2s, ceiling, test_labels, test_groups) if test_groups is not None else {}),
    )


def _question_scores(weak, w2s, ceiling, test_labels, test_groups) -> dict:
    """Multiple-choice tasks (one row per choice): accuracy per question beside the per-pair
    accuracy, and the PGR computed from it."""
    acc = {
        name: float(metrics.question_accuracy(stage.preds["test"], test_labels, test_groups))
        for name, stage in (("weak", weak), ("w2s", w2s), ("ceiling", ceiling))
    }
    return {
        **{f"{name}_acc_question": round(value, 6) for name, value in acc.items()},
        "pgr_question": pgr(acc["weak"], acc["w2s"], acc["ceiling"]),
        "n_test_questions": int(len(np.unique(test_groups))),
    }


def _maybe(x) -> float | None:
    x = float(x)
    return None if np.isnan(x) else round(x, 6)


# A row's counts on the host, in float32 as `metrics.accuracy` and `metrics.agreement` compute them,
# so the values are theirs bit for bit, without the 12 small XLA programs their first call
# compiles on a run's main thread. A sum of 0/1 floats is exact; XLA computes a mean over n rows as
# the sum times the float32 reciprocal of n (a division by a constant), and divides by a count
# (a value) exactly.

def _classes(x) -> np.ndarray:
    x = np.asarray(x)
    return np.argmax(x, axis=-1) if x.ndim == 2 else x.astype(np.int32)


def _mean_of_hits(hits: np.ndarray) -> np.float32:
    return np.float32(np.count_nonzero(hits)) * (np.float32(1) / np.float32(hits.size))


def _accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """``metrics.accuracy``, computed with numpy."""
    return float(_mean_of_hits(_classes(probs) == _classes(labels)))


def _agreement(student, teacher, labels) -> dict[str, np.float32]:
    """``metrics.agreement``, computed with numpy."""
    s, t, y = _classes(student), _classes(teacher), _classes(labels)
    wrong = t != y
    n_wrong = np.float32(np.count_nonzero(wrong))
    per_error = lambda hits: np.float32(np.count_nonzero(hits & wrong)) / n_wrong if n_wrong else np.float32(np.nan)
    return {"agreement": _mean_of_hits(s == t), "agreement_on_teacher_errors": per_error(s == t),
            "corrected_teacher_errors": per_error(s == y)}


# ---- intervals over seeds -------------------------------------------------------------------

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


def percentile_interval(values) -> tuple[float, float]:
    """The 95% percentile interval of the finite ``values`` (bootstrap draws); nan if there are none."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if not len(values):
        return float("nan"), float("nan")
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def bootstrap_pgr(weak, w2s, ceiling, *, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of PGR-of-means, resampling seeds with replacement."""
    weak, w2s, ceiling = (np.asarray(v, float) for v in (weak, w2s, ceiling))
    n = len(weak)
    if n < 2:
        return float("nan"), float("nan")
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    return percentile_interval(pgr_values(weak[idx].mean(1), w2s[idx].mean(1), ceiling[idx].mean(1)))


def nan_to_null(x):
    """``x`` with every NaN float replaced by None, through dicts, lists and tuples: undefined PGRs
    are NaN in memory and null in JSON (NaN is not valid JSON)."""
    if isinstance(x, dict):
        return {k: nan_to_null(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [nan_to_null(v) for v in x]
    return None if isinstance(x, float) and x != x else x


# ---- text -----------------------------------------------------------------------------------

def finite(x) -> bool:
    """A usable number: not None, not a bool, not nan or inf (results.json stores undefined as null)."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def number(v: float) -> str:
    """A PGR or interval end with two decimals (never "-0.00")."""
    text = f"{v:.2f}"
    return "0.00" if text == "-0.00" else text


def interval(lo: float, hi: float, sep: str = " ") -> str:
    """``" [lo, hi]"`` for a finite interval, else nothing; ``sep`` goes before the bracket."""
    return f"{sep}[{number(lo)}, {number(hi)}]" if finite(lo) and finite(hi) else ""


def mean_pm(mean: float, spread: float, seeds: int) -> str:
    """``"0.812 ± 0.010"``; one seed has no spread, and "± 0.000" would claim a certainty the run
    does not have, so then just the mean."""
    return f"{mean:.3f}" if seeds < 2 else f"{mean:.3f} ± {spread:.3f}"
