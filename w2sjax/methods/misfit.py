"""Gain versus misfit for many weak→strong pairs (Charikar, Pabbaraju & Shiragur, 2024).

Supervisors of varying quality come from ``weak_models`` × ``options.weak_sizes`` (label budgets
on the supervisor half). For every supervisor and student:

* the standard probe student (``losses[0]``) gives accuracy gain, squared-error gain
  ``E||p_w - y||² - E||p_s - y||²`` and misfit ``E||p_s - p_w||²`` (``metrics.misfit``);
* the theorem's own setting, solved in closed form: the student is the least-squares linear head
  on the strong model's frozen features fitted to the supervisor's class-1 probability (squared
  loss, convex class). Against a *realizable* target, the ceiling head's prediction (linear in
  those features by construction), gain ≥ misfit must hold; against the real 0/1 labels it need not.
* supervisor choice by misfit: for each student, pick the supervisor minimising
  ``err_val(weak) - misfit_val`` (the theorem's upper bound on the student's error; the weak
  side owns the validation labels) and compare with the best student in hindsight.
"""

from __future__ import annotations

import numpy as np

from w2sjax import metrics
from w2sjax.methods._common import flat as _flat
from w2sjax.methods._common import figure, save


def _sq(a, b) -> float:
    return float(np.mean(np.sum((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2, axis=-1)))


def _linear_fit(x_train, y_train, x_eval):
    """Least squares with a bias column (minimum-norm ``lstsq``), predicting each of ``x_eval``.

    No ridge: the theorem needs the student to be the exact projection onto the linear class, and a
    ridge penalty would break Pythagoras on the fitting sample.
    """
    add = lambda x: np.c_[np.asarray(x, np.float64), np.ones(len(x))]
    theta = np.linalg.lstsq(add(x_train), np.asarray(y_train, np.float64), rcond=None)[0]
    return [add(x) @ theta for x in x_eval]


def _regression_check(feats: dict, weak_p1: dict, gt: dict) -> dict:
    """The theorem's setting on real features: squared loss, linear strong class."""
    student_b, student_test = _linear_fit(feats["b"], weak_p1["b"], [feats["b"], feats["test"]])
    ceil_b, ceil_test = _linear_fit(feats["b"], gt["b"], [feats["b"], feats["test"]])
    out = {}
    for name, target_b, target_test in (("realizable", ceil_b, ceil_test), ("labels", gt["b"], gt["test"])):
        for where, s, w, y in (("b", student_b, weak_p1["b"], target_b), ("test", student_test, weak_p1["test"], target_test)):
            gain = float(np.mean((w - y) ** 2) - np.mean((s - y) ** 2))
            misfit = float(np.mean((s - w) ** 2))
            out[f"ls_{name}_{where}_gain"] = round(gain, 6)
            out[f"ls_{name}_{where}_misfit"] = round(misfit, 6)
    return out


def run(config, out_dir, *, progress: bool = True) -> dict:
    from w2sjax import experiment

    loss = config.losses[0]
    out, rows = experiment.sweep(config, out_dir, lambda sr: _seed_rows(sr, config, loss), progress=progress)
    _figures(out, rows)
    return experiment.finish(config, out, rows, selection=_selection_summary(rows))


def _seed_rows(sr, config, loss: str) -> list[dict]:
    """One seed's rows: every supervisor with every student. With a planning runner, only the
    stages are keyed (no features, no rows)."""
    task, rows = sr.task, []
    y = {k: sr.student_half["label"] if k == "b" else sr.val["label"] if k == "val" else sr.test["label"]
         for k in ("b", "val", "test")}
    onehot = {k: np.eye(task.num_classes)[v] for k, v in y.items()}
    supervisors = {}
    for w in config.weak_models:
        for n in config.options.weak_sizes:
            name = w if n == 0 else f"{w}@{n}"
            sup_rows = sr.supervisor_half["row"] if n == 0 else sr.supervisor_half["row"][:n]
            supervisors[name] = sr.weak(w, rows=sup_rows, variant="" if n == 0 else f"-n{n}")
    for s in config.strong_models:
        ceiling = sr.ceiling(s)
        students = {name: sr.w2s(name.replace("@", "-n"), s, weak, loss) for name, weak in supervisors.items()}
        if sr.runner.planning:
            continue
        fi = sr.runner.inputs.get(s, frozen_features=True)  # of the strong backbone
        feats = {k: _flat(fi.inputs(split, idx)) for k, (split, idx) in sr.evals.items()}
        pair_rows = []
        for name, weak in supervisors.items():
            student = students[name]
            row = sr.row(name, s, loss, weak, student, ceiling)
            wt, st = weak.preds["test"], student.preds["test"]
            row.update({
                "gain_acc": round(row["w2s_acc"] - row["weak_acc"], 6),
                "gain_sq": round(_sq(wt, onehot["test"]) - _sq(st, onehot["test"]), 6),
                "weak_sq_err_val": round(_sq(weak.preds["val"], onehot["val"]), 6),
                "misfit_val": round(float(metrics.misfit(student.preds["val"], weak.preds["val"])), 6),
                "n_weak_labels": len(sr.supervisor_half["row"]) if "@" not in name else int(name.split("@")[1]),
            })
            p1 = {k: weak.preds[k][:, 1] for k in ("b", "test")}
            row.update(_regression_check(feats, p1, {k: y[k].astype(np.float64) for k in ("b", "test")}))
            pair_rows.append(row)
        # The bound err(student) <= err(weak) - misfit, estimated on validation, picks a supervisor.
        bound = [r["weak_sq_err_val"] - r["misfit_val"] for r in pair_rows]
        chosen = int(np.argmin(bound))
        best = max(r["w2s_acc"] for r in pair_rows)
        by_weak_acc = int(np.argmin([r["weak_sq_err_val"] for r in pair_rows]))
        for i, r in enumerate(pair_rows):
            r["selection_bound_val"] = round(bound[i], 6)
            r["selected_by_misfit"] = i == chosen
            r["selected_by_weak_error"] = i == by_weak_acc
            r["best_student_acc"] = best
        rows.extend(pair_rows)
    return rows


def _selection_summary(rows) -> list[dict]:
    groups = {}
    for r in rows:
        groups.setdefault((r["strong_model"], r["seed"]), []).append(r)
    summary = []
    for (s, seed), rs in sorted(groups.items()):
        pick = next(r for r in rs if r["selected_by_misfit"])
        by_err = next(r for r in rs if r["selected_by_weak_error"])
        summary.append({
            "strong_model": s, "seed": seed, "chosen_by_misfit": pick["weak_model"], "chosen_acc": pick["w2s_acc"],
            "chosen_by_weak_error": by_err["weak_model"], "chosen_by_weak_error_acc": by_err["w2s_acc"],
            "best_acc": max(r["w2s_acc"] for r in rs), "mean_acc": round(float(np.mean([r["w2s_acc"] for r in rs])), 6),
        })
    return summary


def _figures(out, rows) -> None:
    strong = sorted({r["strong_model"] for r in rows})
    fig, axes = figure(11.0, 3.6, ncols=3)
    for j, s in enumerate(strong):
        sel = [r for r in rows if r["strong_model"] == s]
        axes[0].scatter([r["misfit"] for r in sel], [r["gain_acc"] for r in sel], s=16, color=f"C{j}", label=s)
        axes[1].scatter([r["ls_realizable_test_misfit"] for r in sel], [r["ls_realizable_test_gain"] for r in sel],
                        s=16, color=f"C{j}", label=s)
        axes[2].scatter([r["ls_labels_test_misfit"] for r in sel], [r["ls_labels_test_gain"] for r in sel],
                        s=16, color=f"C{j}", label=s)
    axes[0].set_title("probe students (xent): accuracy gain")
    axes[0].set_xlabel("misfit E||p_s − p_w||² (test)")
    axes[0].set_ylabel("w2s acc − weak acc")
    axes[0].axhline(0, color="0.5", lw=0.8)
    for ax, title in ((axes[1], "least squares, realizable target"), (axes[2], "least squares, 0/1 labels")):
        lo = min(0.0, *(p.get_offsets()[:, 1].min() for p in ax.collections))
        hi = max(p.get_offsets().max() for p in ax.collections) * 1.05
        ax.plot([lo, hi], [lo, hi], ls="--", color="0.4", lw=1, label="gain = misfit")
        ax.set_title(title)
        ax.set_xlabel("misfit (test)")
        ax.set_ylabel("squared-error gain (test)")
    for ax in axes:
        ax.legend(frameon=False, fontsize=8)
    save(fig, out / "misfit_gain_vs_misfit.png")
