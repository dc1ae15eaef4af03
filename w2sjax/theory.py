"""Synthetic testbeds from the theory of weak-to-strong generalization.

Each testbed is a small, seeded numpy computation (seconds on a laptop) that reproduces one
published qualitative result, so the tests can check the *behaviour*, not just the code:

* :func:`random_feature_w2s`: Medvedev et al. (2025), "Weak-to-Strong Generalization Even in
  Random Feature Networks, Provably". A teacher with few random ReLU features, fitted on (nearly)
  the population, labels data for a student with many random features trained by gradient
  descent. Early-stopped, the student beats its teacher; trained to convergence it copies it.
* :func:`intrinsic_dim_w2s`: Dong et al. (2025), "Discrepancies are Virtue". Ridge regression
  on weak and strong representations of low intrinsic dimension; the w2s student inherits the
  teacher's estimation noise only along the directions the two representations share, so PGR
  falls as their overlap grows.
* :func:`prediction_gap` / :func:`prediction_gap_w2s`: Xue, Li & Mirzasoleiman (2025). The gap
  between the w2s student and the strong ceiling is ``||P_s (I - P_w) y / sqrt(n)||^2``.
* :func:`misfit_gain` / :func:`realizable_misfit_w2s`: Charikar, Pabbaraju & Shiragur (2024).
  With squared loss, a convex strong class and realizability, the student's gain over its teacher
  is at least their misfit.

Everything here is regression with squared loss; no JAX, no data files.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "sphere",
    "relu_features",
    "least_squares",
    "gd_path",
    "random_feature_w2s",
    "intrinsic_dim_w2s",
    "w2s_variance",
    "projector",
    "prediction_gap",
    "prediction_gap_w2s",
    "misfit_gain",
    "realizable_misfit_w2s",
]


# ---- shared pieces --------------------------------------------------------------------------

def sphere(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """``n`` points uniform on the sphere of radius ``sqrt(d)`` in ``R^d`` (coordinates of variance 1)."""
    x = rng.standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True) * np.sqrt(d)


def relu_features(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Random ReLU features ``relu(x W^T / sqrt(d)) / sqrt(M)``: a two-layer net's fixed bottom layer.

    The ``1/sqrt(M)`` scale keeps the kernel ``F F^T`` of order one whatever the width, so one
    learning-rate / time scale serves a narrow teacher and a wide student.
    """
    d, m = x.shape[1], w.shape[0]
    return np.maximum(x @ w.T / np.sqrt(d), 0.0) / np.sqrt(m)


def least_squares(x: np.ndarray, y: np.ndarray, ridge: float = 0.0) -> np.ndarray:
    """``argmin_t ||x t - y||^2 + ridge * n * ||t||^2`` (minimum-norm solution when ``ridge = 0``)."""
    if ridge <= 0:
        return np.linalg.lstsq(x, y, rcond=None)[0]
    n, d = x.shape
    return np.linalg.solve(x.T @ x + ridge * n * np.eye(d), x.T @ y)


def gd_path(features: np.ndarray, targets: np.ndarray, steps, *, lr: float | None = None) -> np.ndarray:
    """Coefficients after each of ``steps`` iterations of full-batch gradient descent from zero.

    The objective is ``(1/2n) ||F t - y||^2``. In the eigenbasis of ``G = F^T F / n`` every
    direction decays independently, so ``t`` steps of size ``lr`` give exactly
    ``t_k = V diag((1 - (1 - lr*lam)^k) / lam) V^T F^T y / n``: the whole training curve for the
    price of one eigendecomposition. ``lr`` defaults to ``1 / lam_max`` (stable and fast).
    Returns ``[len(steps), M]``.
    """
    n = features.shape[0]
    lam, vecs = np.linalg.eigh(features.T @ features / n)
    lam = np.clip(lam, 0.0, None)
    lr = 1.0 / lam.max() if lr is None else lr
    proj = vecs.T @ (features.T @ targets / n)
    # Directions with (numerically) zero curvature get no gradient: their coefficient stays 0.
    live = lam > 1e-12 * lam.max()
    safe = np.where(live, lam, 1.0)
    out = []
    for k in np.asarray(steps, dtype=np.float64):
        # 1 - (1 - lr lam)^k, written with log1p/expm1 so huge k stays accurate.
        shrink = -np.expm1(k * np.log1p(-np.minimum(lr * lam, 1.0 - 1e-15)))
        out.append(vecs @ (np.where(live, shrink / safe, 0.0) * proj))
    return np.stack(out)


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((np.asarray(a) - np.asarray(b)) ** 2))


# ---- Medvedev et al.: random-feature teacher and student ------------------------------------

def random_feature_w2s(
    *,
    d: int = 16,
    m_weak: int = 32,
    m_strong: int = 2048,
    n_teacher: int = 40_000,
    n_student: int = 8_000,
    n_test: int = 10_000,
    steps=None,
    seed: int = 0,
) -> dict:
    """A weak random-feature teacher supervises a wide random-feature student trained by GD.

    Inputs are uniform on the sphere and the target is linear, ``f*(x) = x_1``. The teacher
    (``m_weak`` ReLU features) is fitted by least squares on ``n_teacher`` labelled points, a
    stand-in for the population. The student (``m_strong`` features) is trained by gradient descent
    on ``n_student`` fresh points labelled by the teacher, and evaluated after every entry of
    ``steps``. Returns the teacher's test loss, the student's test loss against ``f*`` and against
    the teacher at every step, and the best (early-stopped) and final student losses.
    """
    rng = np.random.default_rng(seed)
    steps = np.unique(np.round(np.logspace(0, 8, 33))) if steps is None else np.asarray(steps, float)
    target = lambda x: x[:, 0]
    w_weak = rng.standard_normal((m_weak, d))
    w_strong = rng.standard_normal((m_strong, d))

    x_teach = sphere(rng, n_teacher, d)
    theta_weak = least_squares(relu_features(x_teach, w_weak), target(x_teach))
    teacher = lambda x: relu_features(x, w_weak) @ theta_weak

    x_student = sphere(rng, n_student, d)
    path = gd_path(relu_features(x_student, w_strong), teacher(x_student), steps)

    # The ceiling: the same student trained on the true targets, stopped at its best step.
    ceiling_path = gd_path(relu_features(x_student, w_strong), target(x_student), steps)

    x_test = sphere(rng, n_test, d)
    y_test, t_test = target(x_test), teacher(x_test)
    f_test = relu_features(x_test, w_strong)
    preds = f_test @ path.T  # [n_test, len(steps)]
    ceiling_loss = np.mean((f_test @ ceiling_path.T - y_test[:, None]) ** 2, axis=0).min()
    student_loss = np.mean((preds - y_test[:, None]) ** 2, axis=0)
    student_vs_teacher = np.mean((preds - t_test[:, None]) ** 2, axis=0)
    best = int(np.argmin(student_loss))
    return {
        "steps": steps,
        "teacher_loss": _mse(t_test, y_test),
        "student_loss": student_loss,
        "student_vs_teacher": student_vs_teacher,
        "best_step": float(steps[best]),
        "best_student_loss": float(student_loss[best]),
        "final_student_loss": float(student_loss[-1]),
        "ceiling_loss": float(ceiling_loss),
        "target_variance": float(np.mean(y_test**2)),
    }


# ---- Dong et al.: intrinsic dimensions of ridge representations ------------------------------

def _layout(d_weak: int, d_strong: int, d_shared: int) -> tuple[list[int], list[int], int]:
    """Latent coordinates seen by each representation.

    Coordinate 0 carries the target ``f* = z_0``; both representations see it, so both are
    realizable. The weak one sees ``d_weak - 1`` more coordinates, the strong one ``d_strong - 1``,
    of which ``d_shared - 1`` are also weak ones: the two subspaces intersect in ``d_shared``
    dimensions (``d_{s∧w}`` in Dong et al.).
    """
    if not 1 <= d_shared <= min(d_weak, d_strong):
        raise ValueError(f"d_shared must be in [1, min(d_weak, d_strong)], got {d_shared}")
    weak = list(range(d_weak))
    strong = list(range(d_shared)) + list(range(d_weak, d_weak + d_strong - d_shared))
    return weak, strong, d_weak + d_strong - d_shared


def w2s_variance(d_weak: int, d_strong: int, d_shared: int, n: int, big_n: int, sigma: float) -> float:
    """Dong et al.'s variance of the w2s student (their Theorem 1; the bias is zero here)."""
    return sigma**2 / (n - d_weak - 1) * (d_shared + d_strong / big_n * (d_weak - d_shared))


def intrinsic_dim_w2s(
    *,
    d_weak: int = 32,
    d_strong: int = 16,
    d_shared: int = 1,
    n: int = 64,
    big_n: int = 2000,
    sigma: float = 1.0,
    n_test: int = 4000,
    reps: int = 20,
    ridge: float = 1e-8,
    seed: int = 0,
) -> dict:
    """Weak teacher, w2s student, strong SFT and ceiling by (near-ridgeless) ridge regression.

    The teacher fits ``n`` noisy labels (noise ``sigma``) on weak features; the student fits the
    teacher's predictions on ``big_n`` unlabelled points with strong features; the strong SFT model
    fits the same ``n`` labels with strong features; the ceiling fits all ``n + big_n`` labels.
    Errors are excess risks against ``f*``, averaged over ``reps`` draws. PGR uses the ceiling.
    """
    weak_cols, strong_cols, k = _layout(d_weak, d_strong, d_shared)
    errs = []
    for rep in range(reps):
        rng = np.random.default_rng([seed, rep])
        z_lab = rng.standard_normal((n, k))
        y_lab = z_lab[:, 0] + sigma * rng.standard_normal(n)
        z_unl = rng.standard_normal((big_n, k))
        y_unl = z_unl[:, 0] + sigma * rng.standard_normal(big_n)  # only the ceiling sees these
        z_test = rng.standard_normal((n_test, k))
        f_test = z_test[:, 0]

        th_weak = least_squares(z_lab[:, weak_cols], y_lab, ridge)
        th_w2s = least_squares(z_unl[:, strong_cols], z_unl[:, weak_cols] @ th_weak, ridge)
        th_sft = least_squares(z_lab[:, strong_cols], y_lab, ridge)
        th_ceil = least_squares(np.r_[z_lab, z_unl][:, strong_cols], np.r_[y_lab, y_unl], ridge)
        errs.append([
            _mse(z_test[:, weak_cols] @ th_weak, f_test),
            _mse(z_test[:, strong_cols] @ th_w2s, f_test),
            _mse(z_test[:, strong_cols] @ th_sft, f_test),
            _mse(z_test[:, strong_cols] @ th_ceil, f_test),
        ])
    weak, w2s, sft, ceiling = np.mean(errs, axis=0)
    return {
        "weak_err": float(weak),
        "w2s_err": float(w2s),
        "strong_sft_err": float(sft),
        "ceiling_err": float(ceiling),
        "pgr": float((weak - w2s) / (weak - ceiling)),
        "w2s_err_theory": w2s_variance(d_weak, d_strong, d_shared, n, big_n, sigma),
    }


# ---- Xue et al.: the prediction gap ---------------------------------------------------------

def projector(features: np.ndarray, rank_tol: float = 1e-10) -> np.ndarray:
    """An orthonormal basis ``Q`` ``[n, r]`` of the column span of ``features`` (``P = Q Q^T``)."""
    u, s, _ = np.linalg.svd(features, full_matrices=False)
    return u[:, s > rank_tol * max(s.max(initial=0.0), 1e-300)]


def prediction_gap(strong_features: np.ndarray, weak_features: np.ndarray, y: np.ndarray) -> float:
    """``||P_s (I - P_w) y / sqrt(n)||^2``: what the strong representation can learn of the labels
    that the weak one cannot, i.e. the predicted squared gap between w2s student and ceiling."""
    qs, qw = projector(strong_features), projector(weak_features)
    residual = y - qw @ (qw.T @ y)
    g = qs.T @ residual
    return float(g @ g / len(y))


def prediction_gap_w2s(
    *,
    d_weak_only: int = 10,
    d_strong_only: int = 8,
    strong_only_signal: float = 0.7,
    noise: float = 0.3,
    n_weak: int = 5000,
    n: int = 2000,
    n_test: int = 20000,
    seed: int = 0,
) -> dict:
    """Measured ``E (f_w2s - f_ceiling)^2`` against Xue et al.'s formula on the w2s sample.

    Labels are ``z_0 + strong_only_signal * z_1 + noise``; the weak representation sees ``z_0`` and
    ``d_weak_only`` nuisance coordinates, the strong one ``z_0``, ``z_1`` and ``d_strong_only``
    others. Teacher, student and ceiling are least-squares linear heads.
    """
    rng = np.random.default_rng(seed)
    k = 2 + d_weak_only + d_strong_only
    weak_cols = [0] + list(range(2, 2 + d_weak_only))
    strong_cols = [0, 1] + list(range(2 + d_weak_only, k))

    def sample(m):
        z = rng.standard_normal((m, k))
        return z, z[:, 0] + strong_only_signal * z[:, 1] + noise * rng.standard_normal(m)

    z_w, y_w = sample(n_weak)
    th_weak = least_squares(z_w[:, weak_cols], y_w)
    z, y = sample(n)
    th_w2s = least_squares(z[:, strong_cols], z[:, weak_cols] @ th_weak)
    th_ceil = least_squares(z[:, strong_cols], y)
    z_test, _ = sample(n_test)
    measured = _mse(z_test[:, strong_cols] @ th_w2s, z_test[:, strong_cols] @ th_ceil)
    return {
        "measured_gap": measured,
        "formula_gap": prediction_gap(z[:, strong_cols], z[:, weak_cols], y),
        "population_gap": strong_only_signal**2,
    }


# ---- Charikar et al.: gain versus misfit ----------------------------------------------------

def misfit_gain(student: np.ndarray, weak: np.ndarray, target: np.ndarray) -> dict:
    """Gain and misfit of one weak→strong pair under squared loss, on the same points.

    ``gain = MSE(weak, target) - MSE(student, target)`` and ``misfit = MSE(student, weak)``.
    Arrays are ``[N]`` or ``[N, C]`` (rows are summed, as in ``metrics.misfit``).
    """
    sq = lambda a, b: float(np.mean(np.sum(np.reshape((a - b) ** 2, (len(a), -1)), axis=1)))
    weak_err, student_err = sq(weak, target), sq(student, target)
    return {"weak_err": weak_err, "student_err": student_err, "gain": weak_err - student_err,
            "misfit": sq(student, weak)}


def realizable_misfit_w2s(
    *,
    d_strong: int = 20,
    n_weak_models: int = 6,
    n_weak_train: int = 200,
    n_student: int = 100_000,
    n_test: int = 200_000,
    realizable: bool = True,
    seed: int = 0,
) -> list[dict]:
    """Several weak regressors supervise one linear strong class; gain and misfit for each.

    Strong representation ``h_s(x) = x`` in ``R^{d_strong}``; the strong class is linear maps of
    it (convex). Realizable: ``f* = <theta*, x>``. Not realizable: ``f*`` adds ``|x_1|``, which
    no linear map of ``x`` fits but the weak models' features do. Each weak model is least
    squares on its own random ``tanh`` features (one of them ``|x_1|``) from ``n_weak_train``
    noisy labels; the student is least squares onto the weak predictions of ``n_student``
    points. Gain and misfit are reported on the student's own sample (``train_*``, where the
    projection argument is exact) and on fresh test points.
    """
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal(d_strong) / np.sqrt(d_strong)
    target = (lambda x: x @ theta) if realizable else (lambda x: x @ theta + 1.5 * (np.abs(x[:, 0]) - 0.8))
    x_student = rng.standard_normal((n_student, d_strong))
    x_test = rng.standard_normal((n_test, d_strong))
    rows = []
    for k in range(n_weak_models):
        width = 2 + 3 * k  # weak models of growing capacity: a spread of errors and misfits
        proj = rng.standard_normal((d_strong, width)) / np.sqrt(d_strong)
        feats = lambda x, p=proj: np.c_[np.tanh(2.0 * x @ p), np.abs(x[:, :1]), np.ones(len(x))]
        x_lab = rng.standard_normal((n_weak_train, d_strong))
        y_lab = target(x_lab) + 0.5 * rng.standard_normal(n_weak_train)
        th_weak = least_squares(feats(x_lab), y_lab)
        weak = lambda x, t=th_weak, f=feats: f(x) @ t
        th_student = least_squares(x_student, weak(x_student))
        train = misfit_gain(x_student @ th_student, weak(x_student), target(x_student))
        test = misfit_gain(x_test @ th_student, weak(x_test), target(x_test))
        rows.append({"weak_width": width, **test, **{f"train_{k2}": v for k2, v in train.items()}})
    return rows


# ---- ``python -m w2sjax.theory``: the tables quoted in docs/methods.md ------------------------

def _tables(seeds=(0, 1, 2)) -> None:
    print("Random features (Medvedev et al.): test MSE against f*, seed by seed")
    print("| seed | teacher | early-stopped student (step) | student after 1e8 steps | ceiling | PGR early / final |")
    print("|---|---|---|---|---|---|")
    for s in seeds:
        r = random_feature_w2s(seed=s, m_strong=512, n_teacher=4000, n_student=2000, n_test=2000)
        gap = r["teacher_loss"] - r["ceiling_loss"]
        pgr_early = (r["teacher_loss"] - r["best_student_loss"]) / gap
        pgr_final = (r["teacher_loss"] - r["final_student_loss"]) / gap
        print(f"| {s} | {r['teacher_loss']:.3f} | {r['best_student_loss']:.3f} ({r['best_step']:.0f}) "
              f"| {r['final_student_loss']:.3f} | {r['ceiling_loss']:.4f} | {pgr_early:.2f} / {pgr_final:.2f} |")
    print("\nRidge on representations (Dong et al.): d_weak=32, d_strong=16, n=64, N=2000, 10 reps/seed")
    print("| shared dims | weak err | w2s err | theory w2s err | ceiling err | PGR (mean over seeds) |")
    print("|---|---|---|---|---|---|")
    for k in (1, 4, 8, 16):
        rs = [intrinsic_dim_w2s(d_shared=k, reps=10, seed=s) for s in seeds]
        m = {key: np.mean([r[key] for r in rs]) for key in rs[0]}
        print(f"| {k} | {m['weak_err']:.3f} | {m['w2s_err']:.3f} | {m['w2s_err_theory']:.3f} "
              f"| {m['ceiling_err']:.4f} | {m['pgr']:.3f} |")
    print("\nRidge, weak intrinsic dimension varied: d_strong=16, 4 shared dims, PGR per seed")
    print("| d_weak | PGR seed 0 | seed 1 | seed 2 |")
    print("|---|---|---|---|")
    for dw in (8, 16, 32, 48):
        pgrs = [intrinsic_dim_w2s(d_weak=dw, d_shared=4, reps=10, seed=s)["pgr"] for s in seeds]
        print(f"| {dw} | " + " | ".join(f"{p:.3f}" for p in pgrs) + " |")
    print("\nPrediction gap (Xue et al.): E(f_w2s - f_ceiling)^2 against ||P_s(I-P_w)y/sqrt(n)||^2")
    print("| seed | measured | formula | population |")
    print("|---|---|---|---|")
    for s in seeds:
        r = prediction_gap_w2s(seed=s)
        print(f"| {s} | {r['measured_gap']:.4f} | {r['formula_gap']:.4f} | {r['population_gap']:.4f} |")
    print("\nGain vs misfit (Charikar et al.), fresh test points, seed 0")
    print("| realizable | weak width | weak err | w2s err | gain | misfit |")
    print("|---|---|---|---|---|---|")
    for realizable in (True, False):
        for r in realizable_misfit_w2s(seed=0, realizable=realizable, n_test=20000):
            print(f"| {realizable} | {r['weak_width']} | {r['weak_err']:.4f} | {r['student_err']:.4f} "
                  f"| {r['gain']:.4f} | {r['misfit']:.4f} |")


if __name__ == "__main__":
    _tables()
