"""Several weak supervisors for one student, in distribution and under a shift.

For each seed and student, with the supervisors ``weak_models`` (``"random"`` names a supervisor
that outputs random probabilities, to see whether a method notices it):

* ``single``: each supervisor alone (the standard w2s student);
* ``average``: the mean of all supervisors' probabilities (``pseudo_labels.combine``);
* ``samme``: a weighted mean with AdaBoost/SAMME votes ``log((1-e)/e) + log(C-1)`` from each
  supervisor's validation error (the weak side owns the validation labels);
* ``boost``: EnsemW2S-style: ``boost_rounds`` copies of the first supervisor trained in turn on
  the supervisor half with AdaBoost example weights (``pseudo_labels.boost_example_weights``), combined by their votes;
* ``raven``: supervisor weights learned jointly with a linear student on the strong model's
  frozen features (:func:`w2sjax.methods.raven.learned_weights`), no labels needed; its
  ``raven_uniform`` twin is the same trainer with the weights frozen uniform, the fair baseline.

With ``options.shift = "length"`` the whole sweep runs twice, in distribution and with training
on short reviews and testing on long ones; rows carry ``shift``. Combined supervisors are rows
whose ``weak_model`` joins the names with ``+`` and whose ``weak_acc`` is the combination's.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib

import numpy as np

from w2sjax import pseudo_labels
from w2sjax.methods._common import flat as _flat
from w2sjax.methods._common import Timer, figure, save
from w2sjax.runner.stage_keys import StageKey

BOOST_ROUNDS = 3
RANDOM = "random"


def _random_supervisor(sr, n_classes: int) -> "object":
    from w2sjax.experiment import StageOutput

    rng = np.random.default_rng([sr.seed, 7919])
    preds = {k: rng.dirichlet(np.full(n_classes, 0.5), size=len(idx)).astype(np.float32)
             for k, (_, idx) in sr.evals.items()}
    return StageOutput(preds, 0.0, 0)


def _combined(parts: list, weights) -> "object":
    from w2sjax.experiment import StageOutput

    preds = {k: pseudo_labels.combine([p.preds[k] for p in parts], weights) for k in parts[0].preds if k != "a"}
    return StageOutput(preds, sum(p.seconds for p in parts), 0)


def _boosted(sr, name: str, rounds: int):
    """EnsemW2S-style boosting of one supervisor family on the supervisor half; returns (combined, votes)."""
    sup_rows = sr.supervisor_half["row"]
    sup_labels = sr.supervisor_half["label"]
    evals = dict(sr.evals, a=("train", sup_rows))
    weights = np.ones(len(sup_rows), np.float32)
    members, votes = [], []
    for t in range(rounds):
        out = sr.runner.stage(
            StageKey.weak(name, sr.seed, variant=f"-boost{t}"), model=name, frozen_features=True, rows=sup_rows,
            labels=sr.gt(sr.supervisor_half),
            val_rows=sr.val["row"], val_labels=sr.gt(sr.val), evals=evals, cfg=sr.config.weak_train, loss="xent",
            seed=sr.seed, weights=weights,
        )
        correct = out.preds["a"].argmax(1) == sup_labels
        error = float(np.sum(weights * ~correct) / np.sum(weights))
        vote = pseudo_labels.samme_weight(error, sr.task.num_classes)
        members.append(out)
        votes.append(max(vote, 0.0))
        weights = pseudo_labels.boost_example_weights(weights, correct, vote)
    if not sum(votes) > 0:
        votes = [1.0] * len(votes)
    return _combined(members, votes), votes


def _raven_student(sr, feats, sups: list, *, uniform: bool):
    """A linear student trained on the strong features with learned (or frozen uniform) weights."""
    from w2sjax.experiment import StageOutput
    from w2sjax.methods import raven

    with Timer() as t:
        if uniform:
            mixed = pseudo_labels.combine([sr.pseudo_labels(s) for s in sups])
            weights, head = raven.learned_weights(feats["b"], [mixed], seed=sr.seed)
            weights = np.full(len(sups), 1.0 / len(sups))
        else:
            weights, head = raven.learned_weights(feats["b"], [sr.pseudo_labels(s) for s in sups], seed=sr.seed)
        preds = {}
        for k in ("b", "val", "test"):
            z = np.asarray(feats[k], np.float64) @ head["w"] + head["b"]
            z = np.exp(z - z.max(1, keepdims=True))
            preds[k] = (z / z.sum(1, keepdims=True)).astype(np.float32)
    return StageOutput(preds, t.seconds, 0), np.asarray(weights)


def run(config, out_dir, *, progress: bool = True) -> dict:
    from w2sjax import experiment

    out = pathlib.Path(out_dir)
    shifts = ["none"] + ([config.options.shift] if config.options.shift != "none" else [])
    real = [w for w in config.weak_models if w != RANDOM]
    if not real:
        raise experiment.ConfigError("weak_models: the supervisors method needs at least one real supervisor")
    rows, weights_log = [], []
    for shift in shifts:
        cfg = dataclasses.replace(config, options=dataclasses.replace(config.options, shift=shift))
        sub = out if len(shifts) == 1 else out / ("in_distribution" if shift == "none" else f"shift_{shift}")
        seed_rows = functools.partial(_seed_rows, real=real, shift=shift, weights_log=weights_log)
        # the sub-runs' parent is locked too: one writer
        rows += experiment.sweep(cfg, sub, seed_rows, progress=progress, models_used=real + list(config.strong_models),
                                 also_lock=[out])[1]
    out.mkdir(parents=True, exist_ok=True)
    _figure(out, rows)
    return experiment.finish(config, out, rows, raven_weights=weights_log)


def _seed_rows(sr, *, real: list[str], shift: str, weights_log: list[dict]) -> list[dict]:
    """One seed's rows: every supervisor alone and every combination of them, for each student. A
    planning runner only keys the stages; a training one also appends the RAVEN weights it learned
    to ``weights_log``."""
    task, config = sr.task, sr.config
    sups = {w: (_random_supervisor(sr, task.num_classes) if w == RANDOM else sr.weak(w)) for w in config.weak_models}
    names = list(sups)
    val_err = [1.0 - float(np.mean(sups[w].preds["val"].argmax(1) == sr.val["label"])) for w in names]
    votes = [max(pseudo_labels.samme_weight(e, task.num_classes), 0.0) for e in val_err]
    combos = {"average": (_combined(list(sups.values()), None), None)}
    if sum(votes) > 0:
        combos["samme"] = (_combined(list(sups.values()), votes), votes)
    boost, boost_votes = _boosted(sr, real[0], BOOST_ROUNDS)
    rows = []
    for s in config.strong_models:
        ceiling = sr.ceiling(s)
        loss = config.losses[0]
        extra = {"shift": shift, "supervisors": names}
        singles = [(w, sr.w2s(w, s, sups[w], loss)) for w in names]
        joined, key = "+".join(names), "-".join(names)  # the key names checkpoints: no odd characters
        combined = [(variant, sup, weights, sr.w2s(f"{variant}-{key}", s, sup, loss))
                    for variant, (sup, weights) in combos.items()]
        boosted = sr.w2s(f"boost{BOOST_ROUNDS}-{real[0]}", s, boost, loss)
        if sr.runner.planning:
            continue  # the RAVEN students below read the strong features: no stages, nothing to key
        rows += [{**sr.row(w, s, loss, sups[w], student, ceiling), "variant": "single", **extra} for w, student in singles]
        single_acc = {r["weak_model"]: r["weak_acc"] for r in rows[-len(names):]}
        for variant, sup, weights, student in combined:
            row = sr.row(joined, s, loss, sup, student, ceiling)
            rows.append({**row, "variant": variant, "supervisor_weights": _r(weights), **extra})
        rows.append({**sr.row(f"{real[0]}x{BOOST_ROUNDS}", s, loss, boost, boosted, ceiling),
                     "variant": "boost", "supervisor_weights": _r(boost_votes), **extra})
        fi = sr.runner.inputs.get(s, frozen_features=True)
        feats = {k: _flat(fi.inputs(split, idx)) for k, (split, idx) in sr.evals.items()}
        for variant, uniform in (("raven_uniform", True), ("raven", False)):
            student, weights = _raven_student(sr, feats, list(sups.values()), uniform=uniform)
            row = sr.row(joined, s, "xent", _combined(list(sups.values()), weights), student, ceiling)
            rows.append({**row, "variant": variant, "supervisor_weights": _r(weights), **extra})
            if variant == "raven":
                weights_log.append({"shift": shift, "seed": sr.seed, "strong_model": s,
                                    "weights": dict(zip(names, _r(weights))), "supervisor_test_acc": single_acc})
    return rows


def _r(weights):
    return None if weights is None else [round(float(w), 4) for w in weights]


def _figure(out: pathlib.Path, rows) -> None:
    shifts = sorted({r["shift"] for r in rows}, key=lambda s: s != "none")
    labels_ = []
    for r in rows:
        lab = r["weak_model"] if r["variant"] == "single" else r["variant"]
        if lab not in labels_:
            labels_.append(lab)
    fig, ax = figure(max(6.0, 0.9 * len(labels_) + 2), 3.8)
    width = 0.8 / max(1, len(shifts))
    for j, shift in enumerate(shifts):
        means, weak_means = [], []
        for lab in labels_:
            sel = [r for r in rows if r["shift"] == shift and (r["weak_model"] if r["variant"] == "single" else r["variant"]) == lab]
            means.append(np.mean([r["w2s_acc"] for r in sel]))
            weak_means.append(np.mean([r["weak_acc"] for r in sel]))
        x = np.arange(len(labels_)) + (j - (len(shifts) - 1) / 2) * width
        ax.bar(x, means, width * 0.9, color=f"C{j}", label=f"student ({'in distribution' if shift == 'none' else shift + ' shift'})")
        ax.scatter(x, weak_means, color="k", marker="_", s=200, zorder=3, label="its supervision" if j == 0 else None)
    ax.set_xticks(np.arange(len(labels_)), labels_, rotation=30, ha="right", fontsize=8)
    lo = min(r["w2s_acc"] for r in rows)
    ax.set_ylim(max(0.0, min(lo, min(r["weak_acc"] for r in rows)) - 0.05), 1.0)
    ax.set_ylabel("test accuracy (mean over seeds)")
    ax.legend(frameon=False, fontsize=8)
    save(fig, out / "supervisors_accuracy.png")
