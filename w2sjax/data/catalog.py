"""TFDS catalog datasets (``imdb_reviews``, ``glue/sst2``, ``tfds:NAME``) as tasks.

These download from the internet, so they only work with network access. They
are prepared as array_record and read through ``tfds.data_source``; the text
(or image) feature and the ``label`` ClassLabel are mapped onto a Task.
"""

from __future__ import annotations

import pathlib
import re

import numpy as np
import tensorflow_datasets as tfds

from w2sjax.assets import AssetError
from w2sjax.data.builders import progress_to_stderr, read_split
from w2sjax.data.task import Task, take

# task name -> (TFDS name, train split, test split). GLUE hides its test
# labels, so its validation split serves as the test set.
ALIASES: dict[str, tuple[str, str, str]] = {
    "imdb_reviews": ("imdb_reviews", "train", "test"),
    "glue/sst2": ("glue/sst2", "train", "validation"),
}

_TEXT_KEYS = ("text", "sentence", "review", "content", "document")


def load(task: str, tfds_name: str, data_dir: pathlib.Path) -> Task:
    """Prepare (downloading if needed) and read a TFDS catalog dataset."""
    builder_kwargs = {"file_format": "array_record"}
    try:
        builder = tfds.builder(tfds_name, data_dir=str(data_dir), **builder_kwargs)
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(f"task {task!r}: TFDS has no dataset {tfds_name!r}") from None
    with progress_to_stderr():
        try:
            builder.download_and_prepare()  # split names are known only once prepared
        except OSError as exc:  # requests' and urllib3's connection errors are OSErrors
            raise AssetError(_offline_message(task, tfds_name, data_dir, exc)) from None
    splits = builder.info.splits
    if task in ALIASES:
        _, train_split, test_split = ALIASES[task]
    else:
        train_split = "train"
        test_split = "test" if "test" in splits else "validation"
    if train_split not in splits or test_split not in splits:
        raise ValueError(
            f"TFDS dataset {tfds_name!r} lacks a {train_split!r} or {test_split!r} split"
        )
    features = builder.info.features
    label = features["label"] if "label" in features else None  # noqa: SIM401 (no .get)
    if not isinstance(label, tfds.features.ClassLabel):
        raise ValueError(f"TFDS dataset {tfds_name!r} has no ClassLabel 'label' feature")
    text_key = next(
        (k for k in _TEXT_KEYS if k in features and isinstance(features[k], tfds.features.Text)),
        None,
    )
    if text_key is not None:
        kind, key = "text", text_key
    elif "image" in features:
        kind, key = "image", "image"
    else:
        raise ValueError(f"TFDS dataset {tfds_name!r} has no text or image feature to classify")
    sources = tfds.data_source(
        tfds_name,
        split=[train_split, test_split],
        data_dir=str(data_dir),
        builder_kwargs=builder_kwargs,
    )
    parts = []
    for source in sources:
        split = read_split(source, kind, key)
        # Unlabelled rows (label -1) cannot be scored.
        parts.append(take(split, np.flatnonzero(split["label"] >= 0)))
    return Task(
        name=task,
        kind=kind,
        num_classes=label.num_classes,
        class_names=tuple(label.names),
        train=parts[0],
        test=parts[1],
        fingerprint=f"tfds:{tfds_name}:{builder.info.version}",
    )


def _offline_message(task: str, tfds_name: str, data_dir: pathlib.Path, exc: OSError) -> str:
    """One line: the task, what failed, and how to provide the data without network access."""
    host = re.search(r"host='([^']+)'", str(exc))
    what = f"cannot reach {host.group(1)}" if host else f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    return (
        f"data.task={task}: downloading TFDS dataset {tfds_name!r} failed ({what}). Offline: on a machine with "
        f"network run `tfds build {tfds_name} --file_format array_record --data_dir DIR` and copy DIR's contents "
        f"into {data_dir} (W2SJAX_CACHE moves it); datasets with a manual download read their files from "
        f"{data_dir / 'downloads' / 'manual'} (TFDS manual_dir)"
    )
