"""results.py: the row schema, PGR through metrics.pgr, seed intervals and their formatting."""

import numpy as np
import pytest

from w2sjax.report import results


def test_row_schema_and_pgr():
    row = results.row("t", "weak", "strong", "xent", 3, 0.6, 0.7, 0.8, 0.0123456789, {"weak": 1.23456},
                      variant="soft")
    assert list(row) == ["task", "weak_model", "strong_model", "loss", "seed", "weak_acc", "w2s_acc",
                         "ceiling_acc", "pgr", "misfit", "variant", "stage_seconds"]
    assert row["pgr"] == pytest.approx((0.7 - 0.6) / (0.8 - 0.6), abs=1e-6)
    assert row["misfit"] == 0.012346 and row["stage_seconds"] == {"weak": 1.235}


def test_a_rows_accuracies_and_agreements_are_those_of_metrics_bit_for_bit():
    """The host counts of a row (no XLA programs) equal `metrics.accuracy` and `metrics.agreement`
    exactly, float32 for float32: sizes that are not powers of two, probabilities with ties, hard
    labels, a teacher without errors (nan) and empty inputs of the float32 division's corner cases."""
    from w2sjax import metrics

    rng = np.random.default_rng(7)
    for n in (1, 3, 7, 64, 100, 255, 256, 333, 1000, 4097):
        student = rng.dirichlet(np.ones(3), size=n).astype(np.float32)
        student[: n // 5] = np.float32(0.5)  # ties: the first class wins in both
        teacher = rng.dirichlet(np.ones(3), size=n).astype(np.float32)
        labels = rng.integers(0, 3, size=n)
        for s, t in ((student, teacher), (student, np.eye(3, dtype=np.float32)[labels]), (teacher, student)):
            for y in (labels, np.eye(3)[labels]):
                got = results._accuracy(s, y)
                assert got == float(metrics.accuracy(s, y))
                ours, theirs = results._agreement(s, t, y), metrics.agreement(s, t, y)
                assert set(ours) == set(theirs)
                for key in ours:
                    a, b = np.float32(ours[key]), np.asarray(theirs[key], np.float32)
                    assert a.tobytes() == b.tobytes() or (np.isnan(a) and np.isnan(b)), (n, key)
    no_errors = results._agreement(labels, labels, labels)
    assert np.isnan(no_errors["agreement_on_teacher_errors"]) and np.isnan(no_errors["corrected_teacher_errors"])


def test_undefined_pgr_is_null_in_a_row_and_nan_in_statistics():
    assert results.pgr(0.8, 0.9, 0.8) is None  # no gap to recover; and no warning escapes
    assert results.row("t", "w", "s", "xent", 0, 0.8, 0.9, 0.7, None, {})["pgr"] is None
    assert np.isnan(results.pgr_of_means([0.8, 0.7], [0.9, 0.9], [0.7, 0.8]))
    # Ratio of the means, not the mean of the ratios.
    assert results.pgr_of_means([0.5, 0.7], [0.6, 0.75], [0.7, 0.8]) == pytest.approx((0.675 - 0.6) / (0.75 - 0.6), rel=1e-6)


def test_bootstrap_pgr_matches_a_numpy_resampling():
    weak, w2s, ceiling = np.array([0.60, 0.62, 0.58, 0.61]), np.array([0.66, 0.70, 0.63, 0.69]), np.array([0.75, 0.74, 0.76, 0.73])
    lo, hi = results.bootstrap_pgr(weak, w2s, ceiling, n_boot=500, seed=4)
    idx = np.random.default_rng(4).integers(0, 4, size=(500, 4))
    ratio = (w2s[idx].mean(1) - weak[idx].mean(1)) / (ceiling[idx].mean(1) - weak[idx].mean(1))
    assert (lo, hi) == pytest.approx((np.percentile(ratio, 2.5), np.percentile(ratio, 97.5)), abs=1e-5)
    assert all(np.isnan(results.bootstrap_pgr([0.6], [0.7], [0.8])))


def test_formatting():
    assert results.mean_pm(0.81234, 0.0101, 3) == "0.812 ± 0.010"
    assert results.mean_pm(0.81234, 0.0, 1) == "0.812"  # one seed: no spread to claim
    assert results.number(-0.001) == "0.00"
    assert results.interval(-0.25, 1.5) == " [-0.25, 1.50]"
    assert results.interval(float("nan"), 1.0) == ""
    assert results.interval(0.1, 0.2, sep="\n") == "\n[0.10, 0.20]"
