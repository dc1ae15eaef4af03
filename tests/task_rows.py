"""Helpers shared by the task tests: a per-process cache of built tasks, a task's rows from both
splits, and the texts whose label is unambiguous in a raw file."""

import collections
import functools

import numpy as np
import pytest

from w2sjax import assets
from w2sjax.data import builders, load_task


def need_asset(asset):
    """The asset's directory, or a one-line skip when no registry serves it any more (bigbench)."""
    try:
        return assets.fetch(asset, quiet=True)
    except assets.AssetError as exc:
        pytest.skip(f"asset {asset!r} unavailable here (set {assets.env_var(asset)} to a copy): {str(exc)[:120]}")


@functools.cache
def task(name):
    """The built task, once per process (building reads and parses its whole asset). A task whose
    source is withdrawn is skipped when no copy is at hand; any other task must build."""
    cls = builders.BUILDERS[name]
    if not cls.OFFLINE:
        need_asset(cls.ASSET or cls.TASK)
    return load_task(name)


def both_splits(task):
    """{column: train rows then test rows}."""
    return {k: np.concatenate([task.train[k], task.test[k]]) for k in task.train}


def consistent(pairs):
    """Distinct texts whose every occurrence has one label: {text: label}."""
    seen = collections.defaultdict(set)
    for text, label in pairs:
        seen[text].add(label)
    return {t: next(iter(ls)) for t, ls in seen.items() if len(ls) == 1}
