"""The host feed: a stage's examples, read on the host, batched and placed on the mesh.

Every batch is a pure function of ``(seed, step)`` (:func:`batch_indices`), so a resumed stage
sees exactly the batches an uninterrupted one would. :class:`HostFeed` stacks the batches of one
call of ``train.train_loop`` (``[chunk, B, ...]``), in length-bucketed order for token inputs,
and each process supplies its rows of the global arrays.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Iterator

import jax
import numpy as np
from jax.sharding import Mesh

from w2sjax import parallel
from w2sjax.data import length_buckets

PyTree = Any


@dataclasses.dataclass
class ArrayData:
    """A dataset held in host memory: ``inputs`` (array or dict of arrays), ``labels`` [N, C], ``weights`` [N]."""

    inputs: PyTree
    labels: np.ndarray
    weights: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, idx: np.ndarray) -> dict:
        w = np.ones(len(idx), np.float32) if self.weights is None else self.weights[idx]
        return {
            "inputs": jax.tree.map(lambda a: a[idx], self.inputs),
            "labels": self.labels[idx].astype(np.float32),
            "weights": w.astype(np.float32),
        }


def steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, n // batch_size)


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Example indices of global step ``step``: a fresh seeded permutation each epoch, last partial batch dropped.

    A pure function of ``(seed, step)``, so a resumed run continues with exactly the batches an
    uninterrupted run would have seen: the data position is just the step.
    """
    per_epoch = steps_per_epoch(n, batch_size)
    epoch, k = divmod(step, per_epoch)
    return _epoch_permutation(n, seed, epoch)[k * batch_size : (k + 1) * batch_size].copy()


@functools.lru_cache(maxsize=8)
def _epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    # Drawn once per epoch, not once per step: the loop asks for every step's rows.
    return np.random.default_rng([seed, epoch]).permutation(n)


def effective_batch_size(n: int, batch_size: int, num_shards: int) -> int:
    """The batch size used for ``n`` examples: at most ``n``, and a multiple of the device count."""
    b = min(batch_size, n)
    b -= b % num_shards
    if b <= 0:
        raise ValueError(f"only {n} examples to split over {num_shards} devices")
    return b


def to_global(mesh: Mesh, host_batch: PyTree) -> PyTree:
    """A host batch (the same on every process) as global arrays, each process supplying its rows."""
    n = int(jax.tree.leaves(host_batch)[0].shape[0])
    rows = parallel.process_slice(n, mesh)
    return parallel.global_batch_array(mesh, jax.tree.map(lambda a: a[rows], host_batch))


def stacked_batch_sharding(mesh: Mesh):
    """Where a stack of batches ``[K, B, ...]`` lives: the step axis whole, the batch axis split."""
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, *parallel.batch_sharding(mesh).spec))


def to_global_stacked(mesh: Mesh, host_batches: PyTree) -> PyTree:
    """Stacked host batches ``[K, B, ...]`` (the same on every process) as global arrays split on ``B``."""
    b = int(jax.tree.leaves(host_batches)[0].shape[1])
    rows = parallel.process_slice(b, mesh)
    sharding = stacked_batch_sharding(mesh)
    return jax.tree.map(
        lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)[:, rows], np.shape(a)), host_batches
    )


class HostFeed:
    """The stage's batches, read on the host and stacked ``[chunk, B, ...]`` for one loop call.

    With ``buckets`` and token inputs (a dict with a 2-D ``attention_mask``), batches come in the
    length-bucketed order of `w2sjax.data.length_buckets` (same examples per epoch, each batch cut to
    the shortest of a few fixed lengths); otherwise every batch is padded as the data is. With a
    ``compile_cost`` and the stage's ``total`` steps, batches run at the stage's compiled lengths
    (`length_buckets.choose_lengths`), fewer programs for a little more padding.
    """

    def __init__(self, data: ArrayData, batch_size: int, seed: int, mesh: Mesh, chunk: int, *,
                 buckets: bool = False, total: int | None = None, compile_cost: float = 0.0):
        self.data, self.batch_size, self.seed, self.mesh, self.chunk = data, batch_size, seed, mesh, chunk
        lengths = length_buckets.token_lengths(data.inputs) if buckets else None
        self.order = None
        if lengths is not None:
            self.max_len = int(np.shape(data.inputs["attention_mask"])[1])
            self.order = length_buckets.BucketedOrder(
                lengths, batch_size, seed, self.max_len, lambda epoch: _epoch_permutation(len(data), seed, epoch),
                total=total, compile_cost=compile_cost)

    def segments(self, start: int, stop: int) -> Iterator[tuple[int, PyTree]]:
        """Steps ``start .. stop-1`` as ``(count, stacked batches)``: one run per padded length."""
        if self.order is None:
            idx = [batch_indices(len(self.data), self.batch_size, self.seed, s) for s in range(start, stop)]
            yield stop - start, self._stack(idx)
            return
        step = start
        while step < stop:
            idx, length = self.order.batch(step)
            run = [idx]
            while step + len(run) < stop:
                nxt, nxt_length = self.order.batch(step + len(run))
                if nxt_length != length:
                    break
                run.append(nxt)
            yield len(run), self._stack(run, length)
            step += len(run)

    def lengths(self, start: int, stop: int) -> set:
        """The padded lengths of steps ``start .. stop-1`` (``{None}`` without buckets: the data's own)."""
        if self.order is None:
            return {None}
        return {self.order.batch(step)[1] for step in range(start, stop)}

    def _stack(self, idx: list[np.ndarray], length: int | None = None) -> PyTree:
        """Host rows of ``idx`` stacked and padded to ``chunk`` with repeats of the last batch (unused)."""
        idx = np.stack(idx)
        idx = np.concatenate([idx, np.repeat(idx[-1:], self.chunk - len(idx), 0)])
        host = self.data.take(idx.reshape(-1))
        if length is not None:
            host["inputs"] = length_buckets.trim(host["inputs"], length, self.max_len)
        host = jax.tree.map(lambda a: a.reshape(idx.shape + a.shape[1:]), host)
        return to_global_stacked(self.mesh, host)
