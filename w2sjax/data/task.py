"""The two containers every data path produces: :class:`Task` and :class:`Splits`.

A *split* is a plain dict of numpy arrays of equal length: ``"label"`` int32
``[N]`` plus either ``"text"`` (object array of str) for text tasks or ``"x"``
float32 (``[N, H, W, C]`` images, ``[N, D]`` tabular).
"""

from __future__ import annotations

import dataclasses

import numpy as np

KINDS = ("text", "image", "tabular")

Split = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True, eq=False)
class Task:
    """A labelled classification task with its official train and test splits.

    ``fingerprint`` identifies the exact data (builder name and version, or a
    hash of a user's file), so caches keyed on a task can notice edits.
    ``source`` names the underlying data, so re-splits of it share feature caches.
    """

    name: str
    kind: str
    num_classes: int
    class_names: tuple[str, ...]
    train: Split
    test: Split
    fingerprint: str = ""
    # Where the inputs come from: tasks built from the same data (fine_foods and
    # fine_foods_pooled) share cached features. "" = the task's own name.
    source: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"task {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"task {self.name!r}: {len(self.class_names)} class names "
                f"for {self.num_classes} classes"
            )
        for part, split in (("train", self.train), ("test", self.test)):
            check_split(split, self.kind, self.num_classes, f"task {self.name!r} {part}")


@dataclasses.dataclass(frozen=True, eq=False)
class Splits:
    """The four disjoint parts of a weak-to-strong experiment.

    ``supervisor_half`` trains the weak supervisors on ground truth; ``student_half`` is
    pseudo-labelled by them and trains the students (and the ceiling, on its ground truth);
    ``val`` is for early stopping, ``test`` for every reported number. ``indices[part]`` gives
    the rows each part took from ``task.train`` (or ``task.test`` for ``"test"``), so features
    computed once per task split can be reused.
    """

    supervisor_half: Split
    student_half: Split
    val: Split
    test: Split
    indices: dict[str, np.ndarray]

    # The halves' old names, kept for one release.
    @property
    def weak(self) -> Split:
        return _renamed(self.supervisor_half, "weak", "supervisor_half")

    @property
    def strong(self) -> Split:
        return _renamed(self.student_half, "strong", "student_half")


def _renamed(value, old: str, new: str):
    import warnings

    warnings.warn(f"Splits.{old} is deprecated and will be removed in the next release; use Splits.{new}",
                  DeprecationWarning, stacklevel=3)
    return value


def take(split: Split, idx: np.ndarray) -> Split:
    """The rows ``idx`` of every array in ``split`` (a new dict)."""
    idx = np.asarray(idx)
    return {k: v[idx] for k, v in split.items()}


def num_examples(split: Split) -> int:
    return len(split["label"])


def check_split(split: Split, kind: str, num_classes: int, where: str) -> None:
    """Raise ValueError unless ``split`` follows the split-dict convention."""
    labels = split.get("label")
    if labels is None or labels.dtype != np.int32 or labels.ndim != 1:
        raise ValueError(f"{where}: 'label' must be an int32 vector")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{where}: labels outside [0, {num_classes})")
    key = "text" if kind == "text" else "x"
    if key not in split:
        raise ValueError(f"{where}: a {kind} split needs {key!r}")
    if kind != "text" and split["x"].dtype != np.float32:
        raise ValueError(f"{where}: 'x' must be float32")
    lengths = {k: len(v) for k, v in split.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{where}: arrays of different lengths {lengths}")
