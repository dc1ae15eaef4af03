"""Early stopping without ground truth.

Every (weak, strong, loss) student is trained for ``train.epochs`` three ways:

* ``end``: to the end, no stopping (what the standard protocol does);
* ``weak_val``: keep the parameters with the best validation accuracy *against the supervisor's
  labels* and stop after ``patience`` evaluations without improvement: all a real user can do;
* ``oracle``: the same, but validated on ground truth: the best stopping any rule could reach.

The ceiling is the standard one. Rows carry ``variant`` and the steps each student trained.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from w2sjax.methods._common import figure, save
from w2sjax.runner.stage_keys import StageKey

PATIENCE = 4  # evaluations (epochs) without improvement before stopping


def run(config, out_dir, *, progress: bool = True) -> dict:
    from w2sjax import experiment

    out, rows = experiment.sweep(config, out_dir, _seed_rows, progress=progress)
    _figure(out, rows)
    return experiment.finish(config, out, rows)


def _seed_rows(sr) -> list[dict]:
    """One seed's rows: the three students of every (weak, strong, loss)."""
    stop_cfg = dataclasses.replace(sr.config.train, early_stopping=True, patience=PATIENCE)
    rows = []
    for w, s, loss, weak, ceiling in sr.pairs():
        key = lambda variant: StageKey.w2s(w, s, loss, sr.seed, variant=variant)
        variants = {
            "end": sr.w2s(w, s, weak, loss),
            "weak_val": sr.supervised(key("stop-weak"), s, weak, loss, cfg=stop_cfg),
            "oracle": sr.supervised(key("stop-oracle"), s, weak, loss, cfg=stop_cfg, val_labels=sr.gt(sr.val)),
        }
        for variant, student in variants.items():
            row = sr.row(w, s, loss, weak, student, ceiling)
            row.update(variant=variant, steps=student.steps)
            rows.append(row)
    return rows


def _figure(out: pathlib.Path, rows) -> None:
    pairs = sorted({(r["weak_model"], r["strong_model"], r["loss"]) for r in rows})
    variants = ("end", "weak_val", "oracle")
    fig, ax = figure(max(5.0, 1.6 * len(pairs) + 2), 3.6)
    width = 0.8 / len(variants)
    for j, v in enumerate(variants):
        vals = [np.mean([r["pgr"] for r in rows if (r["weak_model"], r["strong_model"], r["loss"]) == p
                         and r["variant"] == v and r["pgr"] is not None] or [np.nan]) for p in pairs]
        ax.bar(np.arange(len(pairs)) + (j - 1) * width, vals, width * 0.9, label=v, color=f"C{j}")
    ax.set_xticks(np.arange(len(pairs)), ["\n".join(p) for p in pairs], fontsize=7)
    ax.axhline(0, color="0.4", lw=0.8)
    ax.set_ylabel("PGR (mean over seeds)")
    ax.legend(frameon=False, fontsize=8, title="stopping", title_fontsize=8)
    save(fig, out / "early_stopping_pgr.png")
