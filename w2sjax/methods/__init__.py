"""Methods and diagnostics from the weak-to-strong literature, one small module each.

A config picks one with ``method = "NAME"``; :func:`w2sjax.experiment.run` then calls
``w2sjax.methods.NAME.run(config, out_dir, *, progress) -> results dict``, which writes the
standard ``results.json`` (plus its own figures) into ``out_dir``. ``"w2s"`` is the standard
protocol itself, which lives in :mod:`w2sjax.experiment`. docs/methods.md describes each method,
its paper, and what it measured here.

This module only names the methods: importing it must stay cheap (configs import it to validate).
"""

from __future__ import annotations

import importlib
import os

# name -> one line; the module w2sjax.methods.<name> defines run(config, out_dir, *, progress).
METHODS = {
    "w2s": "the standard protocol (w2sjax.experiment); options.labels sweeps weak-label refinements",
    "theory": "synthetic testbeds: random features, ridge intrinsic dimension, prediction gap, gain vs misfit",
    "misfit": "gain versus misfit per weak→strong pair; choosing a supervisor by misfit (Charikar et al.)",
    "supervisors": "several supervisors: average, RAVEN-style learned weights, boosting; OOD shift",
    "early_stopping": "stopping on weak validation labels vs training to the end vs an oracle",
    "imitation": "student–supervisor agreement across student sizes and training lengths",
    "saliency": "lp/ft on weak/gt labels: does finetuning on weak labels make the concept linear?",
}


def run(config, out_dir: str | os.PathLike, *, progress: bool = True) -> dict:
    """Run the method ``config.method`` (anything but ``"w2s"``)."""
    module = importlib.import_module(f"w2sjax.methods.{config.method}")
    return module.run(config, out_dir, progress=progress)
