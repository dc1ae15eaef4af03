"""The synthetic testbeds of :mod:`w2sjax.theory` as one experiment, with figures.

For each seed: the random-feature teacher/student (Medvedev et al.), ridge on representations of
varying overlap (Dong et al.), Xue et al.'s prediction gap, and gain versus misfit with and without
realizability (Charikar et al.). These are regressions: the ``*_acc`` fields hold ``1 - MSE /
Var(f*)`` (an R² score; PGR is the same whether computed from it or from the MSEs), and the raw
errors are in extra fields.
"""

from __future__ import annotations

import pathlib

import numpy as np

from w2sjax import theory
from w2sjax.methods._common import Timer, figure, r2, save
from w2sjax.report import results

D_SHARED = (1, 4, 8, 16)


def run(config, out_dir, *, progress: bool = True) -> dict:
    from w2sjax.experiment import finish

    from w2sjax.runner import rundir

    out = pathlib.Path(out_dir)
    rundir.check(out)
    rundir.lock(out)  # no other processes: the testbeds run on one host
    rows, curves, ridge, scatter = [], [], {}, {True: [], False: []}
    for seed in config.seeds:
        with Timer() as t:
            rf = theory.random_feature_w2s(seed=seed)
        curves.append(rf)
        var = rf["target_variance"]
        for variant, loss_key in (("early_stopped_oracle", "best_student_loss"), ("converged", "final_student_loss")):
            rows.append(results.row(
                "synthetic-random-features", "relu-rf-32", "relu-rf-2048", "squared", seed,
                r2(rf["teacher_loss"], var), r2(rf[loss_key], var), r2(rf["ceiling_loss"], var), None,
                {"testbed": t.seconds}, variant=variant, weak_mse=rf["teacher_loss"], w2s_mse=rf[loss_key],
                ceiling_mse=rf["ceiling_loss"], best_step=rf["best_step"],
            ))
        for k in D_SHARED:
            with Timer() as t:
                r = theory.intrinsic_dim_w2s(d_shared=k, seed=seed)
            ridge.setdefault(k, []).append(r)
            rows.append(results.row(
                "synthetic-ridge", "ridge-dw32", "ridge-ds16", "squared", seed,
                r2(r["weak_err"], 1.0), r2(r["w2s_err"], 1.0), r2(r["ceiling_err"], 1.0), None,
                {"testbed": t.seconds}, variant=f"d_shared={k}", weak_mse=r["weak_err"], w2s_mse=r["w2s_err"],
                ceiling_mse=r["ceiling_err"], strong_sft_mse=r["strong_sft_err"], w2s_mse_theory=r["w2s_err_theory"],
            ))
        with Timer() as t:
            gap = theory.prediction_gap_w2s(seed=seed)
        rows.append(results.row(
            "synthetic-prediction-gap", "ls-weak", "ls-strong", "squared", seed, 0.0, 0.0, 0.0, None,
            {"testbed": t.seconds}, variant="prediction_gap", **gap,
        ))
        for realizable in (True, False):
            with Timer() as t:
                pairs = theory.realizable_misfit_w2s(seed=seed, realizable=realizable)
            scatter[realizable].extend(pairs)
            for p in pairs:
                rows.append(results.row(
                    "synthetic-misfit" + ("" if realizable else "-nonrealizable"), f"tanh-{p['weak_width']}",
                    "linear", "squared", seed, -p["weak_err"], -p["student_err"], 0.0, p["misfit"],
                    {"testbed": t.seconds / len(pairs)}, variant="realizable" if realizable else "not_realizable",
                    gain=p["gain"], train_gain=p["train_gain"], train_misfit=p["train_misfit"],
                    gain_at_least_misfit=bool(p["gain"] >= p["misfit"]),
                ))
    _figures(out, curves, ridge, scatter)
    return finish(config, out, rows)


def _figures(out: pathlib.Path, curves, ridge, scatter) -> None:
    fig, ax = figure(6.0, 4.0)
    for i, rf in enumerate(curves):
        ax.plot(rf["steps"], rf["student_loss"], color="C0", alpha=0.8, label="student vs f*" if i == 0 else None)
        ax.plot(rf["steps"], rf["student_vs_teacher"], color="C2", alpha=0.5, ls=":",
                label="student vs teacher" if i == 0 else None)
        ax.axhline(rf["teacher_loss"], color="C3", ls="--", alpha=0.6, label="teacher vs f*" if i == 0 else None)
    ax.set_xscale("log")
    ax.set_xlabel("gradient-descent steps (lr = 1/λ_max)")
    ax.set_ylabel("test MSE")
    ax.set_title("Random features: 32-feature teacher, 2048-feature student")
    ax.legend(frameon=False)
    save(fig, out / "theory_random_features.png")

    fig, ax = figure(5.0, 3.6)
    ks = sorted(ridge)
    pgrs = np.array([[r["pgr"] for r in ridge[k]] for k in ks])
    ax.errorbar(ks, pgrs.mean(1), yerr=pgrs.std(1), marker="o", capsize=3)
    ax.set_xlabel("shared dimensions d_{s∧w} of weak (32) and strong (16) features")
    ax.set_ylabel("PGR")
    ax.set_title("Ridge W2S: discrepancy helps")
    save(fig, out / "theory_ridge_pgr.png")

    fig, axes = figure(9.0, 3.8, ncols=2)
    for ax, realizable in zip(axes, (True, False)):
        pts = scatter[realizable]
        m, g = [p["misfit"] for p in pts], [p["gain"] for p in pts]
        ax.scatter(m, g, s=18)
        lim = [min(0, min(g)), max(max(m), max(g)) * 1.05]
        ax.plot(lim, lim, color="0.4", ls="--", lw=1, label="gain = misfit")
        ax.set_xlabel("misfit  E(f_sw − f_w)²")
        ax.set_ylabel("gain  E(f_w − f*)² − E(f_sw − f*)²")
        ax.set_title("realizable" if realizable else "not realizable")
        ax.legend(frameon=False)
    save(fig, out / "theory_gain_vs_misfit.png")
