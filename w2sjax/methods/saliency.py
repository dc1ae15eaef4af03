"""Saliency probes (Burns et al. 2023, §5.3, their Figure 11): is the true concept more linearly
represented after finetuning on weak labels?

On the same splits, for each supervisor and text backbone:

* ``lp_weak``: linear probe on the frozen backbone, trained on weak labels;
* ``lp_gt``: linear probe on the frozen backbone, trained on ground truth;
* ``ft_weak``: the whole backbone finetuned on weak labels;
* ``ft_weak_lp_gt``: a fresh linear probe on ground truth, on the features of the backbone that
  was finetuned on weak labels;
* ``ft_gt``: the whole backbone finetuned on ground truth (the ceiling of every row).

The config must say ``strong_mode="finetune"``; ``train`` is the finetuning recipe and the probes
use :data:`PROBE`. The ft_weak model is trained directly with ``train.fit`` (not a resumable
stage) because its features are needed afterwards; a rerun retrains it.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time

import jax
import numpy as np
from flax import nnx

from w2sjax import train
from w2sjax.methods._common import figure, save
from w2sjax.runner.stage_keys import StageKey

PROBE = train.TrainConfig(epochs=10, batch_size=32, lr=1e-2, log_every=50)
VARIANTS = ("lp_weak", "lp_gt", "ft_weak", "ft_weak_lp_gt", "ft_gt")


def _finetune_then_embed(sr, s: str, labels: np.ndarray, stage: str):
    """Finetune ``s`` on the student half with ``labels``; return its test probabilities and the pooled
    features of the finetuned encoder on the student half and on the test split."""
    from w2sjax.models.bert import mean_pool

    runner, cfg = sr.runner, sr.config
    mi = runner.inputs.get(s)
    fit_cfg = dataclasses.replace(cfg.train, trainable=mi.trainable)
    inputs_b, inputs_test = mi.inputs("train", sr.student_half["row"]), mi.inputs("test", sr.test["row"])
    fitted = train.fit(mi.build(sr.seed), train.ArrayData(inputs_b, labels.astype(np.float32)), cfg=fit_cfg,
                       loss="xent", mesh=runner.mesh, seed=sr.seed, stage=stage, log=runner.log,
                       progress=runner.progress)
    state, model = fitted.state, fitted.model

    @jax.jit
    def embed(params, frozen, batch):
        module = model.bind(params, frozen)
        mask = batch["attention_mask"]
        return mean_pool(module.encoder(batch["input_ids"], mask, None), mask, normalize=module.normalize)

    def features(inputs):
        n, out = len(inputs["input_ids"]), []
        for start in range(0, n, 64):
            batch = {k: np.asarray(v[start : start + 64]) for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
            out.append(np.asarray(embed(state.params, state.frozen, batch)))
        return np.concatenate(out)

    probs = train.predict(fitted.predict_step, state, inputs_test, mesh=runner.mesh, batch_size=64)
    return probs, features(inputs_b), features(inputs_test), fitted.steps


def _probe(sr, feats_b, labels_b, feats_test, stage: str) -> np.ndarray:
    from w2sjax import models

    head = models.get_model("minilm-l1").make_head(feats_b.shape[1:], sr.task.num_classes, rngs=nnx.Rngs(sr.seed))
    fitted = train.fit(head, train.ArrayData(feats_b.astype(np.float32), labels_b.astype(np.float32)), cfg=PROBE,
                       loss="xent", mesh=sr.runner.mesh, seed=sr.seed, stage=stage, progress=False)
    return train.predict(fitted.predict_step, fitted.state, feats_test.astype(np.float32), mesh=sr.runner.mesh,
                         batch_size=256)


def run(config, out_dir, *, progress: bool = True) -> dict:
    from w2sjax import experiment
    from w2sjax.config import ConfigError

    if config.strong_mode != "finetune":
        raise ConfigError("strong_mode: the saliency method finetunes its students; set strong_mode=finetune")
    out, rows = experiment.sweep(config, out_dir, _seed_rows, progress=progress)
    _figure(out, rows)
    return experiment.finish(config, out, rows)


def _seed_rows(sr) -> list[dict]:
    """One seed's rows: every variant of every (supervisor, backbone) pair. A planning runner only
    keys the stages: the weakly finetuned backbone trains outside them."""
    rows, seed = [], sr.seed
    for s in sr.config.strong_models:
        ft_gt = sr.ceiling(s)  # finetuned on ground truth (strong_mode=finetune)
        lp_gt = sr.strong(StageKey("lp-ceiling", (s,), seed), s, sr.gt(sr.student_half), sr.gt(sr.val), "xent",
                          cfg=PROBE, frozen_features=True)
        for w in sr.config.weak_models:
            weak = sr.weak(w)
            lp_weak = sr.strong(StageKey("lp-w2s", (w, s), seed), s, sr.pseudo_labels(weak), weak.preds["val"],
                                "xent", cfg=PROBE, frozen_features=True, sources={"labels": weak.source("b"),
                                                                 "val_labels": weak.source("val")})
            if sr.runner.planning:
                continue
            outputs = {"lp_weak": lp_weak, "lp_gt": lp_gt, **_finetuned_on_weak(sr, w, s, weak), "ft_gt": ft_gt}
            for variant, student in outputs.items():
                row = sr.row(w, s, "xent", weak, student, ft_gt)
                row["variant"] = variant
                if variant.startswith("ft_weak"):  # not measured on half B for these two
                    row.pop("corrected_weak_errors_train", None)
                rows.append(row)
    return rows


def _finetuned_on_weak(sr, w: str, s: str, weak) -> dict:
    """``ft_weak``, backbone ``s`` finetuned on ``w``'s pseudo-labels, and ``ft_weak_lp_gt``, a probe
    on ground truth over its features, as stage outputs (with no half B predictions)."""
    from w2sjax.experiment import StageOutput

    started = time.perf_counter()
    ft_probs, f_b, f_test, steps = _finetune_then_embed(sr, s, sr.pseudo_labels(weak),
                                                        StageKey("ft-w2s", (w, s), sr.seed).name)
    ft_seconds = time.perf_counter() - started
    started = time.perf_counter()
    relp = _probe(sr, f_b, sr.gt(sr.student_half), f_test, StageKey("ft-w2s-lp-gt", (w, s), sr.seed).name)
    return {
        "ft_weak": StageOutput({"test": ft_probs, "b": np.zeros_like(weak.preds["b"])}, ft_seconds, steps),
        "ft_weak_lp_gt": StageOutput({"test": relp, "b": np.zeros_like(weak.preds["b"])},
                                     ft_seconds + time.perf_counter() - started, steps),
    }


def _figure(out: pathlib.Path, rows) -> None:
    fig, ax = figure(6.0, 3.6)
    means = [np.mean([r["w2s_acc"] for r in rows if r["variant"] == v]) for v in VARIANTS]
    stds = [np.std([r["w2s_acc"] for r in rows if r["variant"] == v]) for v in VARIANTS]
    ax.bar(range(len(VARIANTS)), means, yerr=stds, capsize=3, color=["C0", "C0", "C1", "C2", "C1"])
    ax.axhline(np.mean([r["weak_acc"] for r in rows]), color="k", ls="--", lw=1, label="supervisor")
    ax.set_xticks(range(len(VARIANTS)), ["lp(weak)", "lp(gt)", "ft(weak)", "ft(weak)+lp(gt)", "ft(gt)"], fontsize=8)
    lo = min(min(means), np.mean([r["weak_acc"] for r in rows]))
    ax.set_ylim(max(0.0, lo - 0.08), min(1.0, max(means) + 0.05))
    ax.set_ylabel("test accuracy")
    ax.legend(frameon=False, fontsize=8)
    save(fig, out / "saliency.png")
