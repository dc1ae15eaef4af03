"""Weak imitation (Burns et al. 2023, §5.1): how much does the student copy its supervisor?

For every student size in ``strong_models`` and training length in ``options.epochs_grid``
(epochs), the w2s student's agreement with the supervisor on the test split, overall and on the
supervisor's mistakes (``metrics.agreement``), next to its accuracy. Burns et al. found larger
students agree less with the supervisor's errors, and longer training makes students imitate
more; rows carry ``epochs`` and the agreement fields of the standard row.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from w2sjax.methods._common import figure, save
from w2sjax.runner.stage_keys import StageKey


def run(config, out_dir, *, progress: bool = True) -> dict:
    from w2sjax import experiment

    out, rows = experiment.sweep(config, out_dir, _seed_rows, progress=progress)
    _figure(out, rows, list(config.strong_models))
    return experiment.finish(config, out, rows)


def _seed_rows(sr) -> list[dict]:
    """One seed's rows: a student per training length of every (weak, strong, loss)."""
    rows = []
    for w, s, loss, weak, ceiling in sr.pairs():
        for epochs in sr.config.options.epochs_grid:
            cfg = dataclasses.replace(sr.config.train, epochs=epochs)
            key = StageKey.w2s(w, s, loss, sr.seed, variant=f"ep{epochs:g}")
            student = sr.supervised(key, s, weak, loss, cfg=cfg)
            row = sr.row(w, s, loss, weak, student, ceiling)
            row.update(variant=f"epochs={epochs:g}", epochs=epochs, steps=student.steps)
            rows.append(row)
    return rows


def _figure(out: pathlib.Path, rows, strong: list[str]) -> None:
    epochs = sorted({r["epochs"] for r in rows})
    losses = sorted({r["loss"] for r in rows})
    fig, axes = figure(10.0, 3.6, ncols=3)
    for li, loss in enumerate(losses):
        for ei, e in enumerate(epochs):
            sel = lambda s: [r for r in rows if r["strong_model"] == s and r["epochs"] == e and r["loss"] == loss]
            for ax, key in zip(axes, ("agreement", "agreement_on_weak_errors", "w2s_acc")):
                ys = [np.mean([r[key] for r in sel(s) if r[key] is not None]) for s in strong]
                ax.plot(range(len(strong)), ys, marker="o", color=f"C{ei}", ls=("-", "--", ":")[li % 3],
                        label=f"{e:g} ep" + (f" · {loss}" if len(losses) > 1 else ""))
    for ax, title in zip(axes, ("agreement with supervisor", "agreement on supervisor's errors", "student accuracy")):
        ax.set_xticks(range(len(strong)), strong, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(frameon=False, fontsize=7)
    save(fig, out / "imitation_agreement.png")
