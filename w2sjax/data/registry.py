"""The task registry: one name in, one :class:`~w2sjax.data.task.Task` out.

Names are a packaged task (built once into TFDS array_record files), a TFDS
catalog dataset (``imdb_reviews``, ``glue/sst2`` or any ``tfds:NAME``; needs
network access on first use), or a user's file (``csv:PATH`` / ``jsonl:PATH``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import shutil
import tempfile
import time
from collections.abc import Iterator

import numpy as np

from w2sjax import assets
from w2sjax.data import builders, catalog, user
from w2sjax.data.task import Task

_PATTERNS = ("csv:PATH", "jsonl:PATH", "tfds:NAME")


def known_tasks() -> list[str]:
    """Registered task names (user files and ``tfds:NAME`` are accepted too)."""
    return sorted(builders.BUILDERS) + sorted(catalog.ALIASES)


def offline_tasks() -> list[str]:
    """The packaged tasks whose sources the package registries serve today: the offline suite,
    which ``w2sjax tasks --check`` builds from nothing."""
    return sorted(name for name, cls in builders.BUILDERS.items() if cls.OFFLINE)


def offline_text_tasks() -> list[str]:
    """The text tasks of :func:`offline_tasks` (the benchmark suite)."""
    return [name for name in offline_tasks() if builders.BUILDERS[name].KIND == "text"]


def default_data_dir() -> pathlib.Path:
    """Where TFDS datasets are built: ``cache_dir()/tfds``."""
    return assets.cache_dir() / "tfds"


_loaded: dict | None = None  # set inside `reuse_loaded_tasks`: each task read once


@contextlib.contextmanager
def reuse_loaded_tasks() -> Iterator[None]:
    """Inside the block, :func:`load_task` reads each task from disk once and returns the same
    ``Task`` after. For code that only reads tasks and asks for each many times: planning a
    benchmark of many parts builds every part's config from its task (seven reads of each task,
    most of ``--list``'s time). Outside it, every call checks the prepared data again (a packaged
    task's unchanged content is not decoded again: ``builders._read_checked``)."""
    global _loaded
    outer = _loaded
    _loaded = {} if outer is None else outer
    try:
        yield
    finally:
        _loaded = outer


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
    key = (name, None if data_dir is None else str(data_dir), text_field, label_field, tuple(label_map))
    if _loaded is not None and key in _loaded:
        return _loaded[key]
    task = _load_task(name, data_dir=data_dir, text_field=text_field, label_field=label_field, label_map=label_map)
    if _loaded is not None:
        _loaded[key] = task
    return task


def _load_task(name, *, data_dir, text_field, label_field, label_map) -> Task:
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


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """One line of ``w2sjax tasks --check``."""

    task: str
    ok: bool
    detail: str  # sizes when it built, the one-line reason when it did not
    seconds: float


def check(names: list[str] | None = None, *, scratch: str | os.PathLike | None = None,
          on_result=None) -> list[CheckResult]:
    """Build each task from nothing, as a fresh machine would: in an empty scratch cache, with
    every ``W2SJAX_ASSET_<NAME>`` override ignored, so only today's registries can answer.

    Args:
      names: tasks to check; defaults to :func:`offline_tasks`.
      scratch: the scratch cache (emptied and kept if given; a temporary folder, removed after,
        if not).
      on_result: called with each :class:`CheckResult` as soon as it is known.
    """
    names = list(names or offline_tasks())
    owned = scratch is None
    root = pathlib.Path(tempfile.mkdtemp(prefix="w2sjax-check-") if owned else scratch)
    saved = {k: v for k, v in os.environ.items() if k == "W2SJAX_CACHE" or k.startswith("W2SJAX_ASSET_")}
    results = []
    try:
        for key in saved:
            del os.environ[key]
        os.environ["W2SJAX_CACHE"] = str(root)
        for name in names:
            start = time.perf_counter()
            try:
                task = load_task(name)
            except Exception as exc:  # noqa: BLE001 - any failure is this task's line, not the end
                detail, ok = " ".join(f"{exc}".split()) or type(exc).__name__, False
            else:
                detail, ok = f"train {len(task.train['label'])}, test {len(task.test['label'])}", True
            result = CheckResult(name, ok, detail, time.perf_counter() - start)
            results.append(result)
            if on_result is not None:
                on_result(result)
    finally:
        os.environ.pop("W2SJAX_CACHE", None)
        os.environ.update(saved)
        if owned:
            shutil.rmtree(root, ignore_errors=True)
    return results
