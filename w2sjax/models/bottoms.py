"""The frozen bottom of a ``top:K`` student, run once per example and kept on disk in bf16.

With ``train.trainable="top:K"`` a finetuned student trains only its last K blocks, final norm
and head (`w2sjax.models.topk`). Everything below block L-K is frozen, so its output, the
residual stream entering block L-K, is the same in every stage, loss and seed of a sweep. It is
computed here once per example, in the featurizers' length buckets, and the students train on it:
their steps never run the bottom.

On disk: ``<root>/<key>/<task>/chunk-<digest>.npz`` (`cache_root`: ``$W2SJAX_BOTTOM_CACHE``, else
``~/.cache/w2sjax/bottoms``), each chunk holding ``ids`` (the
feature cache's example hashes, `w2sjax.models.features.example_ids`, of the text as the student reads
it, prompt included), ``lengths`` (real tokens per example) and ``hidden`` ``[sum(lengths), D]``,
the bits of the bf16 states of the real tokens only. Chunks are written atomically
(`w2sjax.runner.atomic`); one that fails to read, or holds NaN or infinite states, is dropped and its
examples computed again.

The key is ``top<K>-`` followed by the model's feature-cache key, which names the model and its
truncation, the tokenizer's length budget, the compute precision, the computation's version and
the checkpoint's content hash (``-w<sha256[:16]>``); so a changed checkpoint, length, precision
or K never meets old states.

In memory (`Rows`), examples keep their real lengths; a batch taken from them is zero-padded to
``max_len``, and the trainer's length buckets then cut it like the token ids
(`w2sjax.data.length_buckets.trim`). Padded positions only ever meet masked attention and pooling, so
their values do not matter.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from w2sjax.models import features
from w2sjax.models import embed, topk
from w2sjax.runner import atomic

__all__ = ["Bottom", "Rows", "VERSION", "cache_root"]

VERSION = 1  # bump when the stored computation changes
_MAX_CHUNKS = 32  # merge the chunks of one (key, task) beyond this many
BF16 = jnp.bfloat16


def cache_root() -> Path:
    """Where the bottoms are kept: ``$W2SJAX_BOTTOM_CACHE`` (e.g. a big local disk), else
    ``bottoms/`` in w2sjax's cache (`w2sjax.assets.cache_dir`)."""
    from w2sjax import assets

    return Path(os.environ.get("W2SJAX_BOTTOM_CACHE") or assets.cache_dir() / "bottoms").expanduser()


class Rows:
    """Per-example states ``[length_i, D]`` (bf16); ``rows[idx]`` is ``[len(idx), max_len, D]``,
    zero-padded: what `w2sjax.train` takes batches from, as from an array."""

    def __init__(self, parts: list[np.ndarray], max_len: int, width: int):
        self.parts, self.max_len, self.width = parts, max_len, width
        self.shape = (len(parts), max_len, width)
        self.ndim, self.dtype = 3, np.dtype(BF16)

    def __len__(self) -> int:
        return len(self.parts)

    def __getitem__(self, idx) -> np.ndarray:
        idx = np.asarray(idx).reshape(-1)
        out = np.zeros((len(idx), self.max_len, self.width), self.dtype)
        for j, i in enumerate(idx):
            part = self.parts[int(i)]
            out[j, : len(part)] = part
        return out


class _Chunks(features._Store):
    """The chunk files of one (key, task): the feature cache's store, holding ragged rows."""

    def load(self) -> dict[bytes, np.ndarray]:
        def read(z):  # shapes and finiteness were checked by `features.check_chunk`
            ids, lengths, bits = z["ids"], z["lengths"], z["hidden"]
            return zip(ids.tolist(), np.split(bits.view(BF16), np.cumsum(lengths)[:-1]))

        known: dict[bytes, np.ndarray] = {}
        for rows in self.readable(read):
            known.update(rows)
        return known

    def add(self, ids: list[bytes], parts: list[np.ndarray]) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        id_array = np.array(ids, dtype="S16")
        path = self.path_for(id_array)
        with atomic.replacing(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, ids=id_array, lengths=np.array([len(p) for p in parts], np.int32),
                     hidden=np.concatenate(parts).view(np.uint16))
        return path

    def compact(self, known: dict[bytes, np.ndarray]) -> None:
        old = self.chunks()
        if len(old) <= _MAX_CHUNKS:
            return
        keep = self.add(list(known), list(known.values()))
        for path in old:
            if path != keep:
                path.unlink(missing_ok=True)


@functools.partial(jax.jit, static_argnames=("graphdef", "blocks", "row_blocks"))
def _bottom_states(graphdef, state, input_ids, attention_mask, *, blocks, row_blocks):
    """bf16 ``[B, T, D]``: the backbone's residual stream leaving block ``blocks``."""
    def run(ids, mask):
        return nnx.merge(graphdef, state).bottom(ids, mask, blocks=blocks).astype(BF16)

    return embed.map_row_blocks(run, row_blocks, input_ids, attention_mask)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


class Bottom:
    """The cached bottom of a ``top:K`` student of a text `ModelSpec` (one with ``finetune``,
    ``tokenize`` and a `embed.BucketedFeaturizer`), for one task.

    ``inputs(split) -> {"hidden": Rows, "attention_mask": [N, max_len]}``: what the classifier
    cut by `topk.cut_bottom` reads.
    """

    def __init__(self, spec, k: int, *, num_classes: int, dtype: str, task_name: str, cache_dir: str | Path,
                 progress: bool = True):
        self.spec, self.k, self.num_classes, self.dtype, self.progress = spec, k, num_classes, dtype, progress
        self.key = f"top{k}-{spec.featurizer.key}-b{VERSION}"
        self.chunks = _Chunks(Path(cache_dir) / _safe(self.key) / _safe(task_name))
        self._known: dict[bytes, np.ndarray] | None = None
        self._backbone = None

    def inputs(self, split: Mapping[str, Any]) -> dict:
        tokens = self.spec.tokenize(split)
        mask = np.asarray(tokens["attention_mask"])
        lengths = mask.sum(axis=1)
        if not (mask == (np.arange(mask.shape[1]) < lengths[:, None])).all():
            raise ValueError(f"{self.key}: the bottom cache needs right-padded tokens")
        ids = features.example_ids({"text": split["text"]}).tolist()
        if self._known is None:
            self._known = self.chunks.load()
        first_row: dict[bytes, int] = {}  # each example not cached yet, once
        for row, example in enumerate(ids):
            if example not in self._known:
                first_row.setdefault(example, row)
        missing = list(first_row.values())
        if missing:
            new = self._compute(np.asarray(tokens["input_ids"])[missing], lengths[missing])
            self.chunks.add([ids[r] for r in missing], new)
            self._known.update(zip((ids[r] for r in missing), new))
            self.chunks.compact(self._known)
        parts = [self._known[i] for i in ids]
        for part, n in zip(parts, lengths):
            if len(part) != n:
                raise ValueError(f"{self.key}: a cached example has {len(part)} tokens, the tokenizer gives {n}; "
                                 f"remove {self.chunks.root} and run again")
        return {"hidden": Rows(parts, mask.shape[1], parts[0].shape[1] if parts else 0), "attention_mask": mask}

    def _load(self):
        """(graphdef, state placed on the devices, L-K) of the frozen backbone, loaded once."""
        if self._backbone is None:
            classifier = self.spec.finetune(self.num_classes, rngs=nnx.Rngs(0), dtype=jnp.dtype(self.dtype))
            frozen = topk.check(classifier, self.k)
            graphdef, state = nnx.split(classifier.encoder)
            put, state = embed._placement(state)
            self._backbone = (graphdef, state, put, frozen)
        return self._backbone

    def _compute(self, input_ids: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
        graphdef, state, put, frozen = self._load()
        tokenizer = self.spec.featurizer.load()[1]
        rows = [input_ids[i, :n] for i, n in enumerate(lengths)]
        out: list[np.ndarray | None] = [None] * len(rows)

        def run(ids, mask, blocks):
            return _bottom_states(graphdef, state, put(ids), put(mask), blocks=frozen, row_blocks=blocks)

        def collect(batch_rows, states):
            if not np.isfinite(states.astype(np.float32)).all():
                raise FloatingPointError(f"model {self.key!r} gave NaN or infinite states below block {frozen}; "
                                         "its weights or these inputs are damaged (nothing was cached)")
            for j, r in enumerate(batch_rows):
                out[r] = np.ascontiguousarray(states[j, : lengths[r]])

        featurizer = self.spec.featurizer
        embed.embed_in_buckets(rows, tokenizer, run, width=0, max_len=input_ids.shape[1],
                               tokens_per_batch=featurizer.tokens_per_batch, desc=f"bottom of {featurizer.name}",
                               progress=self.progress, collect=collect)
        return out
