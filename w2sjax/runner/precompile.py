"""Compile a probe stage's train program on a background thread while its inputs are computed.

A stage that trains a head on frozen features spends its first seconds (minutes, on a new task)
computing those features, and only then compiles its train program (`w2sjax.train.train_loop`).
That program depends on nothing the features hold: only on the head's structure, the batch
shape and the mesh, all known from one example. So the stage starts the compile here, lowered
on abstract arguments (``jit(...).lower(ShapeDtypeStruct...).compile()``, which fills the same
cache the later call reads), and waits for it just before training. An error on the thread is
raised there, in the stage, never dropped.

A finetuning stage (token inputs) knows its batch shapes only once its texts are tokenised: one
train program per padded length its batches use (its compiled lengths, `w2sjax.data.length_buckets`),
one predict program per length its predictions use. `start_finetune` compiles all of them at once
on the background threads, train programs in the order the stage first runs them, so a cold
sweep's compiles run side by side on the cores rather than one after another. The stage does not
wait for all of them: `train.train_segments` and `train.predict` wait for the one program
they are about to call, so training starts once its first program is ready while the others
(the predict programs, mostly) compile beside it (`w2sjax.runner.pending`).
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
from typing import Any

import jax
import numpy as np

from w2sjax.runner import compile_stats, pending

_lock = threading.Lock()
_pool: concurrent.futures.ThreadPoolExecutor | None = None
# Tracing and lowering are Python, under the GIL: two threads doing them at once finish both late,
# while XLA's compile (C++, GIL released) of neither has started and a core idles. One at a time,
# the program asked for first reaches XLA first and compiles beside the next one's tracing.
_lowering = threading.Lock()


def _compile(jitted, *args, **kwargs):
    """``jitted.lower(*args, **kwargs).compile()``, lowering one program at a time (`_lowering`)."""
    with _lowering:
        lowered = jitted.lower(*args, **kwargs)
    return lowered.compile()


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:  # one thread per core (XLA compiles a program on one): more would only compete
            workers = max(1, min(4, os.cpu_count() or 1))
            _pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers,
                                                          thread_name_prefix=compile_stats.AHEAD_THREAD)
        return _pool


def _abstract(tree, shardings=None) -> Any:
    """ShapeDtypeStructs of ``tree`` on ``shardings`` (a tree like it; else each array's own), not
    weakly typed: `train.place` makes every array from a host copy."""
    if shardings is None:
        return jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype, sharding=a.sharding), tree)
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(np.shape(a), a.dtype, sharding=s), tree, shardings)


def abstract_state(module, trainable: str, mesh):
    """``(model structure, TrainState of ShapeDtypeStructs)`` as `train.fit` places them, without
    allocating the state (its optimizer moments and copy of the parameters)."""
    from w2sjax import train

    made = {}

    def init():
        made["model"], state = train.init_state(module, trainable)
        return state

    state = jax.eval_shape(init)
    return made["model"], _abstract(state, train.state_shardings(mesh, state))


def _stacked(example: dict, chunk: int, batch_size: int, mesh) -> dict:
    """``[chunk, batch_size, ...]`` ShapeDtypeStructs of batches like ``example`` (one row of `ArrayData.take`)."""
    from w2sjax.data.feed import stacked_batch_sharding

    rows = stacked_batch_sharding(mesh)
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct((chunk, batch_size, *np.shape(a)[1:]), np.asarray(a).dtype,
                                                       sharding=rows), example)


def _train_args(model, state, example: dict, n: int, *, cfg, loss: str, mesh, seed: int, losses=None) -> tuple:
    """Abstract arguments of the `train.train_loop` call `train.fit` makes."""
    from w2sjax import parallel, train
    from w2sjax.config import StudentTrainConfig

    replicated = parallel.replicated(mesh)
    batch_size, total, _ = train._stage_length(n, cfg, mesh, validated=False)
    student = isinstance(cfg, StudentTrainConfig)
    settings = train.step_settings(cfg, total, loss, cfg.loss if student else None, losses)
    rng = jax.random.key_data(jax.random.key(seed))
    placed = train.place((np.int32(0), rng, settings), replicated)  # tiny: placed for real, as fit places them
    return (state, _stacked(example, train._chunk_size(cfg), batch_size, mesh), *_abstract(placed))


def train_program(module, example, n: int, *, cfg, loss: str, mesh, seed: int, trainable: str, losses=None):
    """The compiled `train.train_loop` that `train.fit` will call for ``module`` on ``n`` examples
    like ``example`` (an ``ArrayData`` of one row), lowered on abstract arguments placed as `fit`
    places them. The compile lands in JAX's caches, so `fit`'s first call reuses it."""
    from w2sjax import train

    model, state = abstract_state(module, trainable, mesh)
    args = _train_args(model, state, example.take(np.zeros(1, np.int64)), n, cfg=cfg, loss=loss, mesh=mesh, seed=seed,
                       losses=losses)
    return _compile(train.train_loop, *args, model=model, mesh=mesh, step_wrapper=None)


_started: set = set()  # programs already asked for in this process


def _claim(key) -> bool:
    """True the first time ``key`` is asked for in this process."""
    with _lock:
        if key in _started:
            return False
        _started.add(key)
        return True


def forget() -> None:
    """Forget which programs were asked for (`w2sjax.runner.memory.release` drops the programs)."""
    with _lock:
        _started.clear()
    pending.clear()


def _submit(program: tuple, compile_it) -> concurrent.futures.Future | None:
    """``compile_it()`` on the background threads, filed under ``program`` (`pending.key`) for
    the call that will run it; None when ``program`` was asked for before."""
    if not _claim(program):
        return None
    future = _executor().submit(compile_it)
    pending.add(program, future)
    return future


def start(build, example, n: int, *, name: str, cfg, loss: str, mesh, seed: int,
          trainable: str, losses=None) -> concurrent.futures.Future | None:
    """`train_program` of ``build()`` on the background thread, or None when it does not apply
    (token inputs, several processes) or was asked for before. ``.result()`` waits, and raises
    the thread's error."""
    from w2sjax import train

    inputs = example.inputs
    if not isinstance(inputs, np.ndarray) or jax.process_count() != 1:
        return None
    batch = train.effective_batch_size(n, cfg.batch_size, mesh.size)
    if not _claim((name, trainable, batch, inputs.shape[1:], inputs.dtype.name, train._chunk_size(cfg), mesh,
                   train.compiled_losses(loss, losses))):
        return None
    return _executor().submit(lambda: train_program(build(), example, n, cfg=cfg, loss=loss, mesh=mesh, seed=seed,
                                                    trainable=trainable, losses=losses))


def start_finetune(module, data, eval_inputs: list, *, cfg, loss: str, mesh, seed: int,
                   trainable: str, predict_buckets=None, losses=None) -> list[concurrent.futures.Future]:
    """Every train program (one per padded length its batches use) and predict program (one per
    length its predictions of each of ``eval_inputs`` use) of a stage training ``module`` on
    ``data`` (an ``ArrayData``), compiling side by side on the background threads. Programs asked
    for before in this process are skipped. The stage's calls wait for each program as they
    need it; the futures are returned so that the stage can check them all once it is done.
    ``predict_buckets``: the stage's `train.predict_buckets` of ``eval_inputs`` (computed here
    when None), so that the programs compiled are those the stage predicts with; ``losses``: the
    losses the run compiles into its train programs (`train.compiled_losses`)."""
    if jax.process_count() != 1 or not len(data):
        return []
    from w2sjax import train

    if predict_buckets is None:
        predict_buckets = train.predict_buckets(eval_inputs, cfg, mesh)
    model, state = abstract_state(module, trainable, mesh)
    return (_train_programs(model, state, data, cfg=cfg, loss=loss, mesh=mesh, seed=seed, losses=losses)
            + _predict_programs(model, state, eval_inputs, cfg=cfg, mesh=mesh, buckets=predict_buckets))


def _with_length(stacked: dict, length: int | None, max_len: int) -> dict:
    """Stacked token inputs ``[K, B, max_len, ...]`` cut to ``length`` (as `length_buckets.trim` cuts a batch)."""
    if length is None:
        return stacked
    cut = lambda a: (jax.ShapeDtypeStruct((*a.shape[:2], length, *a.shape[3:]), a.dtype, sharding=a.sharding)
                     if len(a.shape) >= 3 and a.shape[2] == max_len else a)
    return {k: cut(v) for k, v in stacked.items()}


def _train_programs(model, state, data, *, cfg, loss: str, mesh, seed: int, losses) -> list[concurrent.futures.Future]:
    from w2sjax import train

    batch_size, total, _ = train._stage_length(len(data), cfg, mesh, validated=False)
    state_arg, batches, *rest = _train_args(model, state, data.take(np.zeros(1, np.int64)), len(data), cfg=cfg,
                                            loss=loss, mesh=mesh, seed=seed, losses=losses)
    feed = train.stage_feed(data, cfg, batch_size, total, seed, mesh, train._chunk_size(cfg))
    futures = []
    for length in first_use(feed, total):
        stacked = {**batches, "inputs": _with_length(batches["inputs"], length, feed.max_len)} if length else batches
        args = (state_arg, stacked, *rest)
        future = _submit(pending.key("train", model, (stacked, rest[-1]), mesh),
                         lambda args=args: _compile(train.train_loop, *args, model=model, mesh=mesh,
                                                    step_wrapper=None))
        futures += [future] if future is not None else []
    return futures


def first_use(feed, total: int) -> list:
    """The padded lengths of a stage's ``total`` steps (``feed``: its `train.stage_feed`), in the
    order its steps first use them: the program needed first compiles first."""
    if feed.order is None:
        return [None]
    seen: dict = {}
    for step in range(total):
        seen.setdefault(feed.order.batch(step)[1], None)
    return list(seen)


def _predict_programs(model, state, eval_inputs: list, *, cfg, mesh, buckets) -> list[concurrent.futures.Future]:
    from w2sjax import parallel, train

    predict_step = train.cached_predict_step(model)
    jitted = train._predict_jit(predict_step, False)
    sharding, futures = parallel.batch_sharding(mesh), []
    for inputs in eval_inputs:
        rows, _, batches = train.predict_batches(inputs, batch_size=train.predict_rows(cfg), mesh=mesh, buckets=buckets)
        for idx, length in batches:
            chunk = train.predict_chunk(inputs, idx[:1], length)  # one row: its shapes, not its values
            abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct((rows, *np.shape(a)[1:]), np.asarray(a).dtype,
                                                                   sharding=sharding), chunk)
            future = _submit(pending.key("predict", predict_step, abstract, mesh),
                             lambda a=abstract: _compile(jitted, state, a))
            futures += [future] if future is not None else []
    return futures
