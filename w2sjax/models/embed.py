"""Frozen, pooled features of texts from any backbone, computed in length buckets.

Texts are tokenised once, sorted into a few padded lengths ("buckets": 16, 32,
64, ..., max_len, as in training) and run through one jitted function. Each batch
holds about ``tokens_per_batch`` tokens: short buckets get more rows, long ones
fewer, and a bucket's last batch is cut to a half, quarter or eighth of that. The
shapes depend only on the bucket length, never on the texts, so every call (each
seed's new rows, another task, a later run through the persistent compile cache)
reuses the same few programs: at most four per bucket length.

The poolings live here too: the masked mean (encoders) and the last real
token (decoders). Architecture modules subclass `BucketedFeaturizer`; this
module imports none of them.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from w2sjax.data.length_buckets import bucket_lengths  # re-exported: the featurizers' default set
from w2sjax.runner import sigint
from w2sjax.runner.progress import bar as progress_bar

__all__ = ["BucketedFeaturizer", "bucket_lengths", "fit_buckets", "mean_pool", "last_token_index",
           "last_token", "pooled_features"]

_FEATURE_VERSION = 1  # bump when the computation changes, to invalidate caches
# Decoders (last-token pooling) in bfloat16: their attention matmuls moved to bf16 operands with
# float32 sums (2026-12-06), which changed their bf16 states (and the top:K bottoms keyed by them).
# Their float32 states did not change, so those keys stay at version 1.
_DECODER_BF16_VERSION = 2
# Encoders (mean pooling) in bfloat16: the same move of their attention matmuls to bf16 operands,
# and GELU through erf instead of erfc (2026-12-06), changed their bf16 states within bf16 rounding.
# Their float32 states did not change.
_ENCODER_BF16_VERSION = 2


# Tokens per forward block, over all devices. A batch runs as a loop over row blocks this size
# so that a block's activations stay in the cores' caches: on 2 AMX cores MiniLM-L6 embeds
# 64 x 128 tokens 1.8x faster in blocks of 1024 tokens (bf16; 1.25x in float32) than in one
# piece (benchmarks/RESULTS.md). Results are identical: rows never interact.
BLOCK_TOKENS = 1024


def row_blocks(rows: int, length: int, ndev: int = 1, block_tokens: int | None = None) -> int:
    """The number of row blocks for a ``[rows, length]`` batch: about ``block_tokens`` tokens each
    (default `BLOCK_TOKENS`), and each block's rows divisible over ``ndev`` devices (1 when none fits)."""
    target = max(1, rows * length // (block_tokens or BLOCK_TOKENS))
    return max(n for n in range(1, target + 1) if rows % (n * ndev) == 0 or n == 1)


def map_row_blocks(fn, blocks: int, *arrays):
    """``fn(*arrays)`` computed over ``blocks`` interleaved row blocks (block b holds rows b,
    b+blocks, ...; so with rows sharded contiguously over devices, every device keeps its own
    rows) and reassembled in row order. ``fn`` must treat rows independently."""
    if blocks == 1:
        return fn(*arrays)
    rows = arrays[0].shape[0]
    split = lambda a: a.reshape(rows // blocks, blocks, *a.shape[1:]).swapaxes(0, 1)
    out = jax.lax.map(lambda xs: fn(*xs), tuple(split(a) for a in arrays))
    return out.swapaxes(0, 1).reshape(rows, *out.shape[2:])


def mean_pool(hidden, attention_mask, *, normalize: bool = True):
    """Average of the hidden states over real (mask == 1) tokens, in float32.

    With ``normalize=True`` the result is L2-normalised, as the sentence-transformers
    pipelines (Pooling + Normalize) do.
    """
    m = attention_mask.astype(jnp.float32)
    summed = jnp.einsum("btd,bt->bd", hidden.astype(jnp.float32), m)
    pooled = summed / jnp.maximum(m.sum(axis=1, keepdims=True), 1e-9)
    if normalize:
        norm = jnp.linalg.norm(pooled, axis=-1, keepdims=True)
        pooled = pooled / jnp.maximum(norm, 1e-12)
    return pooled


def last_token_index(attention_mask):
    """Index of each row's last real (mask == 1) token, ``[B]`` int32.

    For right padding this is ``sum(mask) - 1``; taking the last 1 instead of
    the count also works for left padding. A row with no real token gives 0.
    """
    m = attention_mask.astype(bool)
    t = m.shape[1]
    last = t - 1 - jnp.argmax(m[:, ::-1], axis=1)
    return jnp.where(m.any(axis=1), last, 0).astype(jnp.int32)


def last_token(hidden, attention_mask):
    """The hidden state of each row's last real token, float32 ``[B, D]``: in a causal model
    only that token has read the whole text."""
    idx = last_token_index(attention_mask)
    return jnp.take_along_axis(hidden, idx[:, None, None], axis=1)[:, 0].astype(jnp.float32)


def pool(hidden, attention_mask, pooling: str, *, normalize: bool = False):
    """``"mean"`` (`mean_pool`) or ``"last"`` (`last_token`) features ``[B, D]``."""
    if pooling == "mean":
        return mean_pool(hidden, attention_mask, normalize=normalize)
    if pooling == "last":
        return last_token(hidden, attention_mask)
    raise ValueError(f"unknown pooling {pooling!r}; known: mean, last")


@functools.partial(jax.jit, static_argnames=("graphdef", "pooling", "normalize", "blocks"))
def pooled_features(graphdef, state, input_ids, attention_mask, *, pooling, normalize=False, blocks=1):
    """Pooled features of one padded batch: ``module(ids, mask)`` then `pool`, in row blocks.
    One jitted function for every backbone, so compiles are counted in one place."""
    def pooled(ids, mask):
        hidden = nnx.merge(graphdef, state)(ids, mask)
        return pool(hidden, mask, pooling, normalize=normalize)

    return map_row_blocks(pooled, blocks, input_ids, attention_mask)


def fit_buckets(lengths: np.ndarray, max_len: int, k: int, step: int = 16) -> list[int]:
    """At most ``k`` padded lengths, multiples of ``step`` (or ``max_len``), fitted to ``lengths``.

    (The featurizers pad to the fixed `bucket_lengths` instead, so their programs serve any texts.)
    Chooses the buckets that minimise the total padded tokens of these texts (dynamic
    programming over the candidate lengths). Same number of shapes as `bucket_lengths`, but
    for review-like length distributions (fine_foods, median 68 of 128) it pads about 11%
    fewer FLOPs than powers of two.
    """
    lengths = np.minimum(np.asarray(lengths, np.int64), max_len)
    if len(lengths) == 0:
        return bucket_lengths(max_len)
    cands = sorted({c for c in range(step, max_len, step)} | {max_len})
    top = next(c for c in cands if c >= lengths.max())
    cands = [c for c in cands if c <= top]
    # count[i]: texts whose smallest fitting candidate is cands[i]
    count = np.bincount(np.searchsorted(cands, lengths), minlength=len(cands))
    cum = np.concatenate([[0], np.cumsum(count)])
    n, inf = len(cands), float("inf")
    # best[j][i]: least padded tokens covering cands[:i+1] with j+1 buckets, the last at cands[i]
    best = [[inf] * n for _ in range(k)]
    back = [[-1] * n for _ in range(k)]
    for i in range(n):
        best[0][i] = cum[i + 1] * cands[i]
    for j in range(1, k):
        for i in range(n):
            for p in range(i):
                c = best[j - 1][p] + (cum[i + 1] - cum[p + 1]) * cands[i]
                if c < best[j][i]:
                    best[j][i], back[j][i] = c, p
    j = min(range(k), key=lambda jj: best[jj][n - 1])
    out, i = [], n - 1
    while i >= 0 and j >= 0:
        out.append(cands[i])
        i, j = back[j][i], j - 1
    return sorted(out)



class BucketedFeaturizer:
    """A frozen text backbone as a featurizer: float32 ``[N, hidden]`` per split, in input order.

    Tokenises once and runs `embed_in_buckets`. ``key`` (the feature-cache key) is
    ``name-pooling-len<max_len>[-extras][-dtype]-v<version>-w<weights sha256 prefix>``. Subclasses
    set ``pooling`` and ``asset`` (fetched when ``path`` is None) and implement `load` -> (module,
    tokenizer) and `_max_positions(module)`; `_key_parts` adds settings that change the features.
    The module is called as ``module(input_ids, attention_mask) -> hidden [B, T, D]`` and pooled by
    `pool`.
    """

    pooling = ""
    asset = ""
    normalize = False

    def __init__(self, name: str, *, path: str | Path | None = None, max_len: int = 128,
                 tokens_per_batch: int = 8192, dtype: str = "float32", progress: bool = True):
        self.name = name
        self.path = path
        self.max_len = int(max_len)
        self.tokens_per_batch = int(tokens_per_batch)
        self.dtype = jnp.dtype(dtype).name
        self.progress = progress

    def _key_parts(self) -> list[str]:
        return [self.name, self.pooling, f"len{self.max_len}"] + (["l2"] if self.normalize else [])

    @property
    def key(self) -> str:
        """Cache key: changes whenever the features would change (not with batch size), including
        the weights' content, so a repaired or replaced checkpoint never meets stale features."""
        parts = self._key_parts()
        if self.dtype != "float32":
            parts.append(self.dtype)
        return "-".join(parts + [f"v{self.version()}", f"w{self.weights_hash()[:16]}"])

    def version(self) -> int:
        """The computation's version in the key: `_DECODER_BF16_VERSION` or `_ENCODER_BF16_VERSION` in bf16."""
        if self.dtype != "bfloat16":
            return _FEATURE_VERSION
        return _DECODER_BF16_VERSION if self.pooling == "last" else _ENCODER_BF16_VERSION

    def weights_hash(self) -> str:
        """sha256 of the checkpoint's files (`w2sjax.runner.hashes.content_hash`; a packaged asset's comes
        from its pins), computed once per object."""
        if getattr(self, "_weights_hash", None) is None:
            from w2sjax import assets
            from w2sjax.runner import hashes

            self._weights_hash = (assets.content_hash(self.asset) if self.path is None
                                  else hashes.content_hash(self.path))
        return self._weights_hash

    def fit(self, split):
        """Frozen: nothing to fit."""
        return self

    def checkpoint(self) -> Path:
        from w2sjax import assets

        return Path(self.path) if self.path is not None else assets.fetch(self.asset)

    def __call__(self, split) -> np.ndarray:
        return self.embed_texts(split["text"])

    def _run(self, graphdef, state, input_ids, mask, blocks=1):
        return pooled_features(graphdef, state, input_ids, mask, pooling=self.pooling,
                               normalize=self.normalize, blocks=blocks)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        module, tokenizer = self.load()
        if self.max_len > self._max_positions(module):
            raise ValueError(f"max_len={self.max_len} exceeds {self.name}'s "
                             f"{self._max_positions(module)} positions")
        graphdef, state = nnx.split(module)
        put, state = _placement(state)

        def run(input_ids, mask, blocks):
            return self._run(graphdef, state, put(input_ids), put(mask), blocks)

        return embed_in_buckets(tokenizer.token_ids(texts, self.max_len), tokenizer, run,
                                width=module.config.hidden_size, max_len=self.max_len,
                                tokens_per_batch=self.tokens_per_batch, desc=f"embed {self.name}",
                                progress=self.progress)



def embed_in_buckets(ids: Sequence[Sequence[int]], tokenizer, run, *, width: int, max_len: int,
                     tokens_per_batch: int, desc: str = "embed", progress: bool = True,
                     collect=None) -> np.ndarray | None:
    """Features of token lists ``ids`` as float32 ``[N, width]``, in input order.

    Texts are grouped into the length buckets `bucket_lengths(max_len)`, each batch padded
    to one of `batch_rows` sizes (filler rows are dropped), and every batch is passed
    to ``run(input_ids, mask, blocks)`` with its `row_blocks` count. ``tokenizer`` supplies
    ``pad(ids, length)`` and ``pad_id``. Every featurizer of a text backbone uses this loop.
    With ``collect``, each batch's output goes to ``collect(rows, outputs)`` instead (any shape,
    e.g. per-token states), and None is returned.
    """
    out = np.zeros((len(ids), width), np.float32) if collect is None else None
    lengths = np.array([len(r) for r in ids], dtype=np.int64)
    buckets = bucket_lengths(max_len)  # fixed, not fitted to these texts: see `_plan`
    ndev = _local_devices_for_batch()
    with progress_bar(len(ids), desc, enabled=progress, unit="ex") as bar:
        for rows, length, batch_rows in _plan(lengths, buckets, tokens_per_batch):
            input_ids, mask = tokenizer.pad([ids[r] for r in rows], length)
            input_ids = _pad_rows(input_ids, batch_rows, tokenizer.pad_id)
            mask = _pad_rows(mask, batch_rows, 0)
            feats = np.asarray(run(input_ids, mask, row_blocks(batch_rows, length, ndev)))[: len(rows)]
            if collect is None:
                out[rows] = feats
            else:
                collect(rows, feats)
            sigint.check()
            bar.update(len(rows))
    return out


# A bucket's last batch takes the smallest of these fractions of a full batch that holds its rows.
# Measured on the default run's feature calls (fine_foods, MiniLM, 5 seeds' new rows each;
# 2026-12-06): lengths fitted to each call's texts with 8 row counts compiled 24 programs per
# model for 463k padded tokens; these fixed shapes compile 11 for 499k (+8 %), and a compile
# (~0.5 s quiet) costs more than embedding 5k tokens with MiniLM-L6 (~11k tokens/s in float32).
TAIL_FRACTIONS = (1, 2, 4, 8)


def batch_rows(length: int, tokens_per_batch: int, ndev: int = 1) -> list[int]:
    """The rows a batch of padded ``length`` may have, smallest first: a full batch of about
    ``tokens_per_batch`` tokens and its `TAIL_FRACTIONS`, each divisible over ``ndev`` devices.
    They depend on nothing else, so the programs compiled for them serve any texts."""
    most = max(1, tokens_per_batch // length)
    most = max(ndev, most - most % ndev)
    return sorted({max(ndev, -(-most // f // ndev) * ndev) for f in TAIL_FRACTIONS})


def _plan(lengths: np.ndarray, buckets: list[int], tokens_per_batch: int):
    """Batches as (row indices, padded length, rows per batch), shortest first: full batches,
    then one of `batch_rows`'s smaller sizes for the rest of each bucket."""
    ndev = _local_devices_for_batch()
    order = np.argsort(lengths, kind="stable")
    which = np.searchsorted(np.asarray(buckets), lengths[order])  # first bucket >= length
    plan = []
    for b, length in enumerate(buckets):
        rows = order[which == b]
        sizes = batch_rows(length, tokens_per_batch, ndev)
        start = 0
        while start < len(rows):
            left = len(rows) - start
            per = next((s for s in sizes if s >= left), sizes[-1])
            plan.append((rows[start:start + per], length, per))
            start += per
    return plan


def _pad_rows(a: np.ndarray, rows: int, value: int) -> np.ndarray:
    if a.shape[0] == rows:
        return a
    pad = np.full((rows - a.shape[0],) + a.shape[1:], value, a.dtype)
    return np.concatenate([a, pad])


def _local_devices_for_batch() -> int:
    # Shard over this process's devices only when running single-process;
    # multi-host placement belongs to w2sjax.parallel.
    return jax.local_device_count() if jax.process_count() == 1 else 1


def _placement(state):
    """A function placing a batch on the devices, and the state placed to match."""
    if _local_devices_for_batch() == 1:
        return jnp.asarray, state
    mesh = jax.sharding.Mesh(np.array(jax.local_devices()), ("data",))
    rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return (lambda a: jax.device_put(a, rows)), jax.device_put(state, replicated)
