"""Run a frozen featurizer once per example and keep its features on disk.

The cache is per *example*, not per split: ``make_splits`` draws different
halves for every seed, and a sweep must still pass each example through each
backbone only once. Each example is identified by a hash of its input (the
text, or the bytes of ``x``; never the label), so identical inputs share one
row wherever they appear.

Layout: ``cache_dir/<featurizer.key>/<task_name>/chunk-<digest>.npz``, each
chunk holding ``ids`` (16-byte example hashes) and ``features``. The
featurizer key names the model, its settings and the maximum length. Chunks
are written to a temporary file and renamed into place, so a crash never
leaves a half-written chunk visible; the zip CRC of each member detects a
corrupted chunk, and NaN or infinite values are caught when a chunk is read (they
are never written, so they mean damage): such a chunk is dropped, with one warning
line, and its examples recomputed.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sys
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from w2sjax.runner import atomic

__all__ = ["cached_features", "check_chunk", "example_ids"]

log = logging.getLogger(__name__)

_INPUT_KEYS = ("text", "x")
_MAX_CHUNKS = 32  # merge chunks beyond this many, to keep loading cheap


def _inputs(split: Mapping[str, Any]) -> dict[str, np.ndarray]:
    found = {k: split[k] for k in _INPUT_KEYS if k in split}
    if not found:
        raise ValueError(f"split has none of the input fields {_INPUT_KEYS}: {sorted(split)}")
    return found


def example_ids(split: Mapping[str, Any]) -> np.ndarray:
    """One 16-byte hash per example of its inputs (``text`` and/or ``x``): ``S16 [N]``."""
    inputs = _inputs(split)
    n = len(next(iter(inputs.values())))
    hashes = [hashlib.blake2b(digest_size=16) for _ in range(n)]
    for name, values in sorted(inputs.items()):
        if name == "text":
            for h, t in zip(hashes, values):
                b = str(t).encode("utf-8")
                h.update(b"text" + len(b).to_bytes(8, "little") + b)
        else:
            a = np.ascontiguousarray(values)
            tag = f"{name}:{a.dtype.str}:{a.shape[1:]}".encode()
            for h, row in zip(hashes, a):
                h.update(tag + row.tobytes())
    return np.array([h.digest() for h in hashes], dtype="S16")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def check_chunk(z) -> None:
    """Raise ValueError unless the arrays of a cache chunk (``np.load``'s, or a dict of them;
    features' or bottoms') are consistent and finite: a chunk is only ever written finite, so NaN is damage."""
    ids = z["ids"]
    if "features" in z:
        values = z["features"]
        if ids.ndim != 1 or values.shape[0] != ids.shape[0]:
            raise ValueError(f"inconsistent shapes {ids.shape} / {values.shape}")
    else:  # a bottoms chunk: ragged bf16 rows, stored as their bits
        lengths, bits = z["lengths"], z["hidden"]
        if ids.ndim != 1 or lengths.shape != ids.shape or bits.ndim != 2 or lengths.sum() != len(bits):
            raise ValueError(f"inconsistent shapes {ids.shape} / {lengths.shape} / {bits.shape}")
        values = _bf16_bits_as_float(bits)
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise ValueError(f"{int((~np.isfinite(values)).sum())} NaN or infinite values")


def read_chunk(path: Path) -> dict[str, np.ndarray]:
    """Every array of a chunk, each member read (and its zip CRC checked) once. The file is opened
    here, so a damaged zip does not leave it open (np.load hands its file to the zip reader first)."""
    with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _bf16_bits_as_float(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) as float32, exactly: bf16 is the top half of float32."""
    return (np.asarray(bits, np.uint16).astype(np.uint32) << 16).view(np.float32)


def warn_dropped(path: Path, problem) -> None:
    print(f"w2sjax: warning: damaged cache chunk {path} ({problem}); dropped it, its examples are computed again",
          file=sys.stderr, flush=True)


class _Store:
    """The chunk files of one (featurizer, task)."""

    def __init__(self, root: Path):
        self.root = root

    def chunks(self) -> list[Path]:
        if self.root.is_dir():
            atomic.remove_stale(self.root)  # chunks of a writer killed mid-write
        return sorted(self.root.glob("chunk-*.npz"))

    def readable(self, read):
        """``read(npz)`` of every chunk, in name order; a chunk that fails to read (or whose
        ``read`` raises ValueError, or that `check_chunk` rejects) is deleted, with one warning line,
        so its examples are computed again."""
        for path in self.chunks():
            try:
                arrays = read_chunk(path)
                check_chunk(arrays)
                value = read(arrays)
            except FileNotFoundError:
                continue  # merged away by another process meanwhile
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
                warn_dropped(path, e)
                path.unlink(missing_ok=True)
                continue
            yield value

    def load(self) -> tuple[np.ndarray, np.ndarray | None]:
        ids, feats = [], []

        def read(z):
            i, f = z["ids"], z["features"]
            if feats and f.shape[1:] != feats[0].shape[1:]:
                raise ValueError(f"inconsistent shapes {i.shape} / {f.shape}")
            return i, f

        for i, f in self.readable(read):
            ids.append(i)
            feats.append(f)
        if not ids:
            return np.zeros((0,), "S16"), None
        return np.concatenate(ids), np.concatenate(feats)

    def path_for(self, ids: np.ndarray) -> Path:
        return self.root / f"chunk-{hashlib.blake2b(ids.tobytes(), digest_size=12).hexdigest()}.npz"

    def add(self, ids: np.ndarray, feats: np.ndarray) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.path_for(ids)
        with atomic.replacing(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, ids=ids, features=feats)
        return path

    def compact(self) -> None:
        old = self.chunks()
        if len(old) <= _MAX_CHUNKS:
            return
        ids, feats = self.load()
        ids, first = np.unique(ids, return_index=True)
        keep = self.add(ids, feats[first])
        for p in old:
            if p != keep:
                p.unlink(missing_ok=True)


def _check_finite(new: np.ndarray, featurizer, task_name: str, split_name: str,
                  split: Mapping[str, Any], rows: np.ndarray) -> None:
    """Non-finite features are never cached: they mean damaged weights or inputs."""
    bad = np.flatnonzero(~np.isfinite(new.reshape(len(new), -1)).all(axis=1))
    if not len(bad):
        return
    first = int(rows[bad[0]])
    shown = ""
    if "text" in split:
        text = " ".join(str(split["text"][first]).split())
        shown = f" ({text[:40]!r}{'...' if len(text) > 40 else ''})"
    raise FloatingPointError(
        f"model {featurizer.key!r} gave NaN or infinite features for {len(bad)} of {len(new)} examples, "
        f"first {task_name} {split_name} example {first}{shown}; its weights or this input are "
        "damaged (nothing was cached)")


def cached_features(featurizer, task_name: str, split_name: str, split: Mapping[str, Any], *,
                    cache_dir) -> np.ndarray:
    """Features of ``split`` from ``featurizer``, computed at most once per example.

    Args:
      featurizer: has ``key`` (names the features, e.g. model and max length)
        and ``__call__(split) -> array [n, ...]``; it receives only the
        inputs (``text``/``x``) of the examples not cached yet.
      task_name: keeps tasks apart on disk.
      split_name: for log messages only; features do not depend on it.
      split: the split dict (``label`` is ignored).
      cache_dir: root of the cache.

    Returns ``features [N, ...]`` in the order of ``split``.
    """
    inputs = _inputs(split)
    ids = example_ids(inputs)
    keys = ids.tolist()  # bytes; the same canonical form on both sides of the lookup
    store = _Store(Path(cache_dir) / _safe(featurizer.key) / _safe(task_name))
    known_ids, known = store.load()
    index = {k: i for i, k in enumerate(known_ids.tolist())}
    missing = [i for i, k in enumerate(keys) if k not in index]
    if missing:
        # First occurrence of each missing input only.
        _, first = np.unique(ids[missing], return_index=True)
        rows = np.asarray(missing)[np.sort(first)]
        log.info("features %s/%s/%s: computing %d of %d examples",
                 featurizer.key, task_name, split_name, len(rows), len(ids))
        new = np.asarray(featurizer({k: np.asarray(v)[rows] for k, v in inputs.items()}))
        if new.shape[0] != len(rows):
            raise ValueError(f"featurizer {featurizer.key!r} returned {new.shape[0]} rows "
                             f"for {len(rows)} examples")
        _check_finite(new, featurizer, task_name, split_name, split, rows)
        store.add(ids[rows], new)
        store.compact()
        base = 0 if known is None else known.shape[0]
        for j, r in enumerate(rows):
            index[keys[r]] = base + j
        known = new if known is None else np.concatenate([known, new])
    if known is None:  # empty split and empty cache
        return np.zeros((0,), np.float32)
    return known[np.array([index[k] for k in keys], dtype=np.int64)]
