"""The synthetic testbeds reproduce the published qualitative effects, across several seeds."""

import numpy as np
import pytest

from w2sjax import theory

SEEDS = (0, 1, 2)


@pytest.fixture(autouse=True)
def one_blas_thread():
    """These are small matrices: BLAS threads only fight other processes for the cores (measured
    here: 38 s with default threads on a loaded 2-core machine, 8 s with one)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: only the speed depends on it
        yield
        return
    with threadpool_limits(limits=1):
        yield


def test_gd_path_matches_explicit_gradient_descent():
    rng = np.random.default_rng(0)
    f, y = rng.standard_normal((50, 8)), rng.standard_normal(50)
    lr = 0.1
    t = np.zeros(8)
    for _ in range(7):
        t -= lr * f.T @ (f @ t - y) / 50
    np.testing.assert_allclose(theory.gd_path(f, y, [7], lr=lr)[0], t, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_features_early_stopping_beats_teacher_and_long_training_erodes_it(seed):
    r = theory.random_feature_w2s(seed=seed, m_strong=512, n_teacher=4000, n_student=2000, n_test=2000)
    teacher, best, final = r["teacher_loss"], r["best_student_loss"], r["final_student_loss"]
    # Early-stopped student: well below its teacher (measured: about half the teacher's loss).
    assert best < 0.75 * teacher
    # Trained to convergence it fits the teacher: most of the gain is gone.
    assert final - best > 0.6 * (teacher - best)
    assert r["student_vs_teacher"][-1] < r["student_vs_teacher"][0]
    # The same student on ground truth (the ceiling) is far better than either: the gap is real.
    assert r["ceiling_loss"] < 0.5 * best


@pytest.mark.parametrize("seed", SEEDS)
def test_ridge_pgr_grows_with_discrepancy(seed):
    # Fewer shared dimensions = more discrepant representations = more of the gap recovered.
    pgrs = [theory.intrinsic_dim_w2s(d_shared=k, reps=10, seed=seed)["pgr"] for k in (1, 8, 16)]
    assert pgrs[0] > pgrs[1] + 0.05 and pgrs[1] > pgrs[2] + 0.05, pgrs


@pytest.mark.parametrize("seed", SEEDS)
def test_ridge_pgr_grows_with_weak_intrinsic_dimension(seed):
    # At a fixed overlap, a weak model with more dimensions has more of its noise in directions
    # the strong representation cannot copy (Dong et al.: PGR ~ 1 - d_shared / d_weak).
    pgrs = [theory.intrinsic_dim_w2s(d_weak=k, d_shared=4, reps=10, seed=seed)["pgr"] for k in (8, 16, 48)]
    assert pgrs[0] + 0.05 < pgrs[1] and pgrs[1] + 0.05 < pgrs[2], pgrs


def test_ridge_w2s_error_rises_with_shared_dimensions_as_dong_predict():
    # Their variance formula is asymptotic (n = 64 here), so check its ordering, not its value.
    errs = [theory.intrinsic_dim_w2s(d_shared=k, reps=10, seed=0) for k in (1, 8, 16)]
    measured = [r["w2s_err"] for r in errs]
    predicted = [r["w2s_err_theory"] for r in errs]
    assert measured == sorted(measured) and predicted == sorted(predicted)


@pytest.mark.parametrize("seed", SEEDS)
def test_prediction_gap_formula_matches_measured_gap(seed):
    r = theory.prediction_gap_w2s(seed=seed)
    assert r["formula_gap"] == pytest.approx(r["measured_gap"], rel=0.1)
    assert r["measured_gap"] == pytest.approx(r["population_gap"], rel=0.1)


def test_prediction_gap_vanishes_when_weak_span_contains_strong():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((200, 6))
    y = rng.standard_normal(200)
    assert theory.prediction_gap(z[:, :3], z, y) == pytest.approx(0.0, abs=1e-12)
    assert theory.prediction_gap(z[:, 3:], z[:, :3], y) > 0


@pytest.mark.parametrize("seed", SEEDS)
def test_gain_at_least_misfit_when_realizable(seed):
    rows = theory.realizable_misfit_w2s(seed=seed, n_test=20000)
    for r in rows:
        # On the student's own sample the student is the projection of the weak predictions onto
        # a subspace containing the target: gain == misfit up to float error (Pythagoras).
        assert r["train_gain"] >= r["train_misfit"] - 1e-9
        # On fresh points both sides are estimates: allow 10% of the misfit plus 0.005 (measured
        # gaps are below 0.004 at these sizes), the student's O(d / n) estimation error plus
        # Monte-Carlo noise of two means over 20k points.
        assert r["gain"] >= r["misfit"] - (0.1 * r["misfit"] + 0.005), r
        assert r["gain"] > 0


def test_without_realizability_gain_can_fall_below_misfit():
    rows = theory.realizable_misfit_w2s(seed=0, realizable=False, n_student=5000, n_test=10000)
    assert any(r["gain"] < r["misfit"] - 0.01 for r in rows)
