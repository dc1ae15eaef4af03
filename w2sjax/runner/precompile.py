"""Compile a probe stage's train program on a background thread while its inputs are computed.

A stage that trains a head on frozen features spends its first seconds (minutes, on a new task)
computing those features, and only then compiles its train program (`w2sjax.train.train_loop`).
That program depends on nothing the features hold: only on the head's structure, the batch
shape and the mesh, all known from one example. So the stage starts the compile here, lowered
on abstract arguments (``jit(...).lower(ShapeDtypeStruct...).compile()``, which fills the same
cache the later call reads), and waits for it just before training. An error on the thread is
raised there, in the stage, never dropped. Stages whose inputs are tokens are left alone: their
batch shapes (length buckets) are known only once the texts are tokenised.
"""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Any

import jax
import numpy as np

from w2sjax.runner import compile_stats

_lock = threading.Lock()
_pool: concurrent.futures.ThreadPoolExecutor | None = None


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:  # one thread: compiles queue up rather than compete for the cores
            _pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=compile_stats.AHEAD_THREAD)
        return _pool


def _abstract(tree) -> Any:
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype, sharding=a.sharding,
                                                       weak_type=getattr(a, "weak_type", False)), tree)


def train_program(module, example, n: int, *, cfg, loss: str, mesh, seed: int, trainable: str):
    """The compiled `train.train_loop` that `train.fit` will call for ``module`` on ``n`` examples
    like ``example`` (an ``ArrayData`` of one row), lowered on abstract arguments placed as `fit`
    places them. The compile lands in JAX's caches, so `fit`'s first call reuses it."""
    from w2sjax import parallel, train
    from w2sjax.config import StudentTrainConfig
    from w2sjax.data.feed import stacked_batch_sharding

    replicated = parallel.replicated(mesh)
    batch_size, total, _ = train._stage_length(n, cfg, mesh, validated=False)
    model, state = train.init_state(module, trainable)
    state = train.place(state, train.state_shardings(mesh, state))
    student = isinstance(cfg, StudentTrainConfig)
    settings = train.place(train.step_settings(cfg, total, loss, cfg.loss if student else None), replicated)
    rng = train.place(jax.random.key_data(jax.random.key(seed)), replicated)
    count = train.place(np.int32(0), replicated)
    chunk, rows = train._chunk_size(cfg), stacked_batch_sharding(mesh)
    batches = jax.tree.map(lambda a: jax.ShapeDtypeStruct((chunk, batch_size, *np.shape(a)[1:]), np.asarray(a).dtype,
                                                          sharding=rows), example.take(np.zeros(1, np.int64)))
    args = (_abstract(state), batches, *_abstract((count, rng, settings)))
    return train.train_loop.lower(*args, model=model, mesh=mesh, step_wrapper=None).compile()


_started: set = set()  # programs already asked for in this process


def start(build, example, n: int, *, name: str, cfg, loss: str, mesh, seed: int,
          trainable: str) -> concurrent.futures.Future | None:
    """`train_program` of ``build()`` on the background thread, or None when it does not apply
    (token inputs, several processes) or was asked for before. ``.result()`` waits, and raises
    the thread's error."""
    from w2sjax import train

    inputs = example.inputs
    if not isinstance(inputs, np.ndarray) or jax.process_count() != 1:
        return None
    batch = train.effective_batch_size(n, cfg.batch_size, mesh.size)
    key = (name, trainable, batch, inputs.shape[1:], inputs.dtype.name, train._chunk_size(cfg), mesh)
    with _lock:
        if key in _started:
            return None
        _started.add(key)
    return _executor().submit(lambda: train_program(build(), example, n, cfg=cfg, loss=loss, mesh=mesh, seed=seed,
                                                    trainable=trainable))
