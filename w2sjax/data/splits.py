"""Seeded supervisor-half / student-half / validation / test splits, after Burns et al. (2023).

The train split is shuffled with the seed; the first ``n_val`` shuffled rows
are the validation set and the rest (optionally capped to ``n_train``) is cut
into two equal halves: the supervisor half (the weak supervisor trains on its ground
truth) and the student half (the weak model labels it for the student; the ceiling
trains on its ground truth). For one seed, the validation set does not depend
on ``n_train`` and smaller ``n_train`` pools are prefixes of larger ones.

A task whose rows carry a ``"group"`` (a multiple-choice question stored as
one row per choice) is shuffled by group, and every cut is moved to the next
group boundary: a question's choices always stay in one part, so the halves
may differ by less than one group.
"""

from __future__ import annotations

import hashlib

import numpy as np

from w2sjax.data.task import Splits, Task, take

__all__ = ["default_n_val", "hashed_holdout", "holdout_mask", "make_splits"]


def make_splits(
    task: Task,
    *,
    seed: int,
    n_train: int | None = None,
    n_val: int | None = None,
    n_test: int | None = None,
    balance: bool = False,
    balance_train: bool = False,
) -> Splits:
    """Split ``task`` for one weak-to-strong run.

    Args:
      task: the task to split.
      seed: seeds a numpy Generator; the same seed gives the same splits.
      n_train: size of the two halves together (each gets ``n_train // 2``); by default
        everything left after validation.
      n_val: validation size; by default :func:`default_n_val` of the train split's size.
      n_test: if given, a seeded subset of the test split of this size;
        otherwise the whole test split, in its original order.
      balance: downsample so every class has the same count in each part
        (sizes are then rounded down to multiples of the number of classes).
      balance_train: as ``balance`` for the two halves and the validation slice only; the test
        split is the unbalanced one (the same rows as with neither option, for the same seed).

    Raises:
      ValueError: a requested size does not fit the data.
    """
    labels = task.train["label"]
    n = len(labels)
    if n_val is None:
        n_val = default_n_val(n)
    train_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    if balance and balance_train:
        raise ValueError("balance and balance_train: expected one of them (balance already balances every part)")
    groups = task.train.get("group")
    if groups is not None:
        if balance or balance_train:
            option = "balance" if balance else "balance_train"
            raise ValueError(f"task {task.name!r}: {option}=True is not supported for grouped (multiple-choice) "
                             "tasks (a question's rows stay together)")
        sup_rows, stu_rows, val = _grouped_parts(groups, n_val, n_train, train_rng, task.name)
        test_idx = _grouped_test(task.test.get("group"), n_test, test_rng, task.name)
        return _splits(task, sup_rows, stu_rows, val, test_idx)
    perm = train_rng.permutation(n)
    if balance or balance_train:
        val, sup_rows, stu_rows = _balanced_parts(
            perm, labels, task.num_classes, n_val, n_train, train_rng, task.name
        )
    else:
        val, sup_rows, stu_rows = _plain_parts(perm, n_val, n_train, task.name)
    test_idx = _test_indices(
        task.test["label"], task.num_classes, n_test, balance, test_rng, task.name
    )
    return _splits(task, sup_rows, stu_rows, val, test_idx)


def _plain_parts(perm: np.ndarray, n_val: int, n_train: int | None, name: str):
    """``(val, supervisor half, student half)``: the first ``n_val`` of ``perm``, then two equal halves of the
    next ``n_train`` (by default of the rest; an odd example out is dropped)."""
    n = len(perm)
    if not 0 <= n_val <= n - 2:
        raise ValueError(
            f"task {name!r}: n_val={n_val} leaves no training data out of {n}"
        )
    val, pool = perm[:n_val], perm[n_val:]
    if n_train is not None:
        if not 2 <= n_train <= len(pool):
            raise ValueError(
                f"task {name!r}: n_train={n_train} must be in [2, {len(pool)}] "
                f"(the {n} train examples less n_val={n_val})"
            )
        pool = pool[:n_train]
    half = len(pool) // 2  # equal halves; an odd example out is dropped
    return val, pool[:half], pool[half : 2 * half]


def _splits(task: Task, sup_rows, stu_rows, val, test_idx) -> Splits:
    indices = {"supervisor_half": sup_rows, "student_half": stu_rows, "val": val, "test": test_idx}
    return Splits(
        supervisor_half=take(task.train, sup_rows),
        student_half=take(task.train, stu_rows),
        val=take(task.train, val),
        test=take(task.test, test_idx),
        indices=indices,
    )


VAL_FRACTION, VAL_FLOOR, VAL_CAP = 0.1, 50, 200


def default_n_val(n: int) -> int:
    """The validation slice for ``n`` training examples: 10%, at least 50 and at most 200, and
    never more than a fifth of the data (a 400-row file keeps most of its rows for training;
    4000 rows give 200, which is enough to pick an epoch)."""
    return int(min(VAL_CAP, max(min(VAL_FLOOR, n // 5), int(VAL_FRACTION * n))))


def _group_order(groups: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """Row indices ordered by a random order of their groups, and the group boundaries in it
    (positions where a new group starts, plus the end)."""
    ids, inverse = np.unique(groups, return_inverse=True)
    rank = rng.permutation(len(ids))[inverse]
    perm = np.argsort(rank, kind="stable")
    starts = np.flatnonzero(np.diff(rank[perm], prepend=-1))
    return perm, np.append(starts, len(perm))


def _snap(bounds: np.ndarray, k: int, lo: int = 0) -> int:
    """The first group boundary at or after ``lo + k``."""
    return int(bounds[np.searchsorted(bounds, lo + k)]) if lo + k <= bounds[-1] else int(bounds[-1])


def _grouped_parts(groups, n_val, n_train, rng, name):
    perm, bounds = _group_order(groups, rng)
    n = len(perm)
    v = _snap(bounds, n_val)
    if v > n - 2:
        raise ValueError(f"task {name!r}: n_val={n_val} leaves no training data out of {n}")
    end = n
    if n_train is not None:
        if not 2 <= n_train <= n - v:
            raise ValueError(
                f"task {name!r}: n_train={n_train} must be in [2, {n - v}] "
                f"(the {n} train examples less n_val={n_val})"
            )
        end = _snap(bounds, n_train, v)
    half = _snap(bounds, (end - v) // 2, v)
    return perm[v:half], perm[half:end], perm[:v]


def _grouped_test(groups, n_test, rng, name):
    if n_test is None:
        return np.arange(len(groups))
    if not 1 <= n_test <= len(groups):
        raise ValueError(f"task {name!r}: n_test={n_test} must be in [1, {len(groups)}]")
    perm, bounds = _group_order(groups, rng)
    return np.sort(perm[: _snap(bounds, n_test)])


def _balanced_parts(perm, labels, num_classes, n_val, n_train, rng, name):
    by_class = [perm[labels[perm] == c] for c in range(num_classes)]
    smallest = min(len(c) for c in by_class)
    v = n_val // num_classes
    room = smallest - v
    t = room if n_train is None else n_train // num_classes
    if v < 0 or room < 2 or not 2 <= t <= room:
        raise ValueError(
            f"task {name!r}: balanced split with n_val={n_val}, n_train={n_train} does not fit; "
            f"the rarest class has {smallest} train examples"
        )
    h = t // 2
    parts = [
        np.concatenate([c[lo:hi] for c in by_class])
        for lo, hi in ((0, v), (v, v + h), (v + h, v + 2 * h))
    ]
    # Concatenation groups rows by class; shuffle so slices stay mixed.
    return [p[rng.permutation(len(p))] for p in parts]


def _test_indices(labels, num_classes, n_test, balance, rng, name):
    n = len(labels)
    if balance:
        perm = rng.permutation(n)
        by_class = [perm[labels[perm] == c] for c in range(num_classes)]
        k = min(len(c) for c in by_class)
        if n_test is not None:
            if n_test // num_classes > k or n_test < num_classes:
                raise ValueError(
                    f"task {name!r}: balanced n_test={n_test} does not fit; "
                    f"the rarest test class has {k}"
                )
            k = n_test // num_classes
        return np.sort(np.concatenate([c[:k] for c in by_class]))
    if n_test is None:
        return np.arange(n)
    if not 1 <= n_test <= n:
        raise ValueError(f"task {name!r}: n_test={n_test} must be in [1, {n}]")
    return np.sort(rng.permutation(n)[:n_test])


def holdout_mask(labels: np.ndarray, *, frac: float = 0.2, salt: str) -> np.ndarray:
    """A fixed, stratified test mask for data that ships without a test split.

    Within each class, rows are ordered by a hash of ``salt`` and the row
    number and the first ``round(frac * count)`` become test rows. Hashing
    (rather than a numpy RNG) keeps the split identical across numpy versions.
    """
    labels = np.asarray(labels)
    keys = np.array(
        [
            hashlib.blake2b(f"{salt}:{i}".encode(), digest_size=8).digest()
            for i in range(len(labels))
        ],
        dtype="S8",
    )
    mask = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        order = rows[np.argsort(keys[rows], kind="stable")]
        mask[order[: round(frac * len(rows))]] = True
    return mask


def hashed_holdout(keys, *, frac: float, salt: str) -> np.ndarray:
    """A fixed test mask over rows identified by string ``keys``: the distinct keys are ordered by
    a hash of ``salt`` and the key, and the first ``round(frac * n_keys)`` become test keys.

    Rows sharing a key (a question's choices, duplicates) always fall on the same side, and the
    choice depends on the keys alone, not on row order or the numpy version.
    """
    keys = [str(k) for k in keys]
    distinct = sorted(set(keys), key=lambda k: hashlib.blake2b(f"{salt}:{k}".encode(), digest_size=8).digest())
    test_keys = set(distinct[: round(frac * len(distinct))])
    return np.array([k in test_keys for k in keys], dtype=bool)
