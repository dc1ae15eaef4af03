"""Distribution shifts between a task's training and test splits (``options.shift``)."""

from __future__ import annotations

import dataclasses

import numpy as np

from w2sjax.config import ConfigError
from w2sjax.data.task import take


def shift_task(task, shift: str):
    """A copy of ``task`` under a distribution shift between training and test.

    ``"length"``: the training split keeps the texts of at most the median training length (in
    words), the test split keeps those longer than it: supervisors and student learn on short
    reviews and are judged on long ones. ``"domain:NAME"`` (tasks whose rows carry a ``domain``,
    such as multiemo): train on every other domain, test on NAME.
    """
    if shift.startswith("domain:"):
        return _domain_shift(task, shift[len("domain:"):])
    if shift != "length":
        raise ConfigError(f"options.shift: unknown shift {shift!r}")
    if task.kind != "text":
        raise ConfigError(f"options.shift=length needs a text task; {task.name!r} is {task.kind}")
    length = lambda split: np.array([len(str(t).split()) for t in split["text"]])
    cut = np.median(length(task.train))
    train = take(task.train, np.flatnonzero(length(task.train) <= cut))
    test = take(task.test, np.flatnonzero(length(task.test) > cut))
    return dataclasses.replace(task, train=train, test=test)


def _domain_shift(task, domain: str):
    from w2sjax.data import builders

    names = builders.BUILDERS[task.name].DOMAINS if task.name in builders.BUILDERS else ()
    if "domain" not in task.train or domain not in names:
        known = f"one of {', '.join(names)}" if names else f"a task with domains; {task.name!r} has none"
        raise ConfigError(f"options.shift=domain:{domain}: expected {known}")
    d = names.index(domain)
    train = take(task.train, np.flatnonzero(task.train["domain"] != d))
    test = take(task.test, np.flatnonzero(task.test["domain"] == d))
    return dataclasses.replace(task, train=train, test=test)
