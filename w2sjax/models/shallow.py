"""Shallow models, the usual supervisors: TF-IDF and mean GloVe vectors (bags of words) with a
linear head, and heads trained from scratch on raw inputs (``linear``, ``mlp``, ``cnn``); their
featurizers and specs.

Every featurizer has the same small interface, which `w2sjax.models.features`
relies on:

- ``key``: a string naming exactly what the features are (for the cache);
- ``fit(split) -> featurizer``: learn from the *inputs* of a training split
  (never its labels); frozen featurizers return themselves;
- ``__call__(split) -> np.ndarray``: float32 features, one row per example.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from w2sjax.models.spec import ModelSpec

__all__ = ["words", "TfidfFeaturizer", "GloveBowFeaturizer", "RawFeaturizer", "model_spec", "NAMES"]

_WORD = re.compile(r"[^\W_]+")  # runs of letters/digits, any script


def words(text: str) -> list[str]:
    """Lower-cased word tokens: maximal runs of letters and digits."""
    return _WORD.findall(str(text).lower())


def _texts_digest(texts: Iterable[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        b = str(t).encode("utf-8")
        h.update(len(b).to_bytes(8, "little") + b)
    return h.hexdigest()


class TfidfFeaturizer:
    """TF-IDF over `words`, with a vocabulary learned from training texts.

    Definition (what the tests recompute independently):
      - vocabulary: the ``max_features`` terms with the highest document
        frequency in the fit texts, ties broken alphabetically;
      - ``idf = ln((1 + n_docs) / (1 + df)) + 1``;
      - a row is raw term counts times idf, then L2-normalised (an empty row
        stays zero). Output is dense float32 ``[N, len(vocabulary)]``.
    """

    def __init__(self, max_features: int = 5000):
        self.max_features = int(max_features)
        self.vocabulary: dict[str, int] | None = None
        self.idf: np.ndarray | None = None
        self._fit_digest = ""

    @property
    def key(self) -> str:
        if self.vocabulary is None:
            raise RuntimeError("TfidfFeaturizer has no key before fit()")
        return f"tfidf-{self.max_features}-{self._fit_digest[:16]}"

    def fit(self, split) -> "TfidfFeaturizer":
        """A fitted copy; the vocabulary and idf come from ``split["text"]`` alone."""
        texts = split["text"]
        df: Counter[str] = Counter()
        for t in texts:
            df.update(set(words(t)))
        terms = sorted(df, key=lambda w: (-df[w], w))[: self.max_features]
        fitted = TfidfFeaturizer(self.max_features)
        fitted.vocabulary = {w: i for i, w in enumerate(terms)}
        n = len(texts)
        counts = np.array([df[w] for w in terms], dtype=np.float64)
        fitted.idf = (np.log((1.0 + n) / (1.0 + counts)) + 1.0).astype(np.float32)
        fitted._fit_digest = _texts_digest(texts)
        return fitted

    def __call__(self, split) -> np.ndarray:
        if self.vocabulary is None:
            raise RuntimeError("call fit(train_split) before using a TfidfFeaturizer")
        texts = split["text"]
        out = np.zeros((len(texts), len(self.vocabulary)), dtype=np.float32)
        for r, t in enumerate(texts):
            for w, c in Counter(words(t)).items():
                j = self.vocabulary.get(w)
                if j is not None:
                    out[r, j] = c
        out *= self.idf
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


@functools.lru_cache(maxsize=2)
def _glove_table(path: str) -> tuple[dict[str, int], np.ndarray]:
    root = Path(path)
    # split("\n"), not splitlines(): a few GloVe tokens are unicode line breaks.
    vocab = (root / "vocab.txt").read_text(encoding="utf-8").split("\n")
    if vocab and vocab[-1] == "":
        vocab.pop()
    # The asset stores the matrix as embeddings.npy; the wheel calls it glove_6B_50d_emb.npy.
    names = [n for n in ("embeddings.npy", "glove_6B_50d_emb.npy") if (root / n).exists()]
    if not names:
        raise FileNotFoundError(f"{root}: no embeddings.npy (GloVe vectors)")
    table = np.load(root / names[0]).astype(np.float32, copy=False)
    if len(vocab) != table.shape[0]:
        raise ValueError(f"{root}: {len(vocab)} words but {table.shape[0]} vectors")
    index: dict[str, int] = {}
    for i, w in enumerate(vocab):
        index.setdefault(w, i)  # first row wins if a word repeats
    return index, table


class GloveBowFeaturizer:
    """Mean of GloVe 6B 50d vectors over a text's `words` (unknown words skipped).

    A text with no known word maps to the zero vector. ``path`` is a directory
    with ``embeddings.npy`` (``[400000, 50]``) and ``vocab.txt`` (row order); ``None`` fetches the
    ``glove-6b-50d`` asset on first use.
    """

    dim = 50
    num_params = 400_000 * 50  # the frozen embedding table

    def __init__(self, path: str | Path | None = None):
        self.path = path
        self._table_hash: str | None = None

    @property
    def key(self) -> str:
        """Names the features, including the vectors' content (a repaired table never meets
        features computed from a damaged one)."""
        if self._table_hash is None:
            from w2sjax import assets
            from w2sjax.runner import hashes

            self._table_hash = (assets.content_hash("glove-6b-50d") if self.path is None
                                else hashes.content_hash(self.path))
        return f"glove-6b-50d-bow-v1-w{self._table_hash[:16]}"

    def fit(self, split) -> "GloveBowFeaturizer":
        return self

    def table(self) -> tuple[dict[str, int], np.ndarray]:
        if self.path is None:
            from w2sjax import assets

            self.path = assets.fetch("glove-6b-50d")
        return _glove_table(str(self.path))

    def __call__(self, split) -> np.ndarray:
        return self.embed_texts(split["text"])

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        index, table = self.table()
        out = np.zeros((len(texts), table.shape[1]), dtype=np.float32)
        for r, t in enumerate(texts):
            rows = [index[w] for w in words(t) if w in index]
            if rows:
                out[r] = table[rows].mean(axis=0)
        return out


class RawFeaturizer:
    """Identity on ``split["x"]`` as float32 (optionally flattened to ``[N, D]``)."""

    def __init__(self, flatten: bool = False):
        self.flatten = flatten

    @property
    def key(self) -> str:
        return "raw-flat" if self.flatten else "raw"

    def fit(self, split) -> "RawFeaturizer":
        return self

    def __call__(self, split) -> np.ndarray:
        x = np.asarray(split["x"], dtype=np.float32)
        return x.reshape(len(x), -1) if self.flatten else x


# ---------------------------------------------------------------- specs

# Raw-input heads and the task kinds they read.
_RAW = {"linear": ("image", "tabular"), "mlp": ("image", "tabular"), "cnn": ("image",)}
NAMES = ("glove-bow", "tfidf", *_RAW)


def model_spec(name: str, **options) -> ModelSpec:
    """``glove-bow`` (option ``path``), ``tfidf`` (``max_features``), or a raw-input head
    ``linear`` / ``mlp`` / ``cnn`` (options go to the head class, e.g. ``hidden=(512,)``)."""
    if name == "glove-bow":
        f = GloveBowFeaturizer(options.pop("path", None), **options)
        return ModelSpec("glove-bow", ("text",), f.num_params, f, "linear")
    if name == "tfidf":
        return ModelSpec("tfidf", ("text",), 0, TfidfFeaturizer(**options), "linear")
    if name in _RAW:
        return ModelSpec(name, _RAW[name], None, None, name, head_options=dict(options))
    raise ValueError(f"{name!r} is not a model of this module; known: {', '.join(NAMES)}")
