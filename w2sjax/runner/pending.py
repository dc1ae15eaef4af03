"""Programs compiling ahead on background threads (`w2sjax.runner.precompile`), by key, so that
the call about to run one waits for it.

A call must wait: JAX does not share a compile in flight, so calling a program that is still
compiling on another thread compiles it a second time. `w2sjax.train` asks here before each train
and predict call (a dictionary look-up when nothing compiles ahead); `precompile` files each
program it starts. This module imports neither, so both can import it.
"""

from __future__ import annotations

import concurrent.futures
import threading

import jax
import numpy as np

_lock = threading.Lock()
_futures: dict = {}  # key -> the future compiling that program


def key(kind: str, owner, args, mesh) -> tuple:
    """The key of the ``kind`` program (``"train"``: `train.train_loop` of model structure
    ``owner``, ``args`` its stacked batches and step settings; ``"predict"``: predict function
    ``owner``, ``args`` its inputs) for arguments shaped like ``args`` (concrete or abstract:
    their tree structure, shapes and dtypes) on ``mesh``."""
    leaves, treedef = jax.tree.flatten(args)
    return kind, owner, treedef, tuple((tuple(np.shape(x)), np.dtype(x.dtype).name) for x in leaves), mesh


def add(program: tuple, future: concurrent.futures.Future) -> None:
    """File ``future``, compiling the program of key ``program`` (`key`), until it has compiled
    (JAX's caches hold the program then; a failed one stays, for its caller to raise)."""
    with _lock:
        _futures[program] = future
    future.add_done_callback(lambda done: _drop(program, done))


def _drop(program: tuple, done: concurrent.futures.Future) -> None:
    if not done.cancelled() and done.exception() is None:
        with _lock:
            if _futures.get(program) is done:
                del _futures[program]


def wait(kind: str, owner, args, mesh) -> None:
    """Wait until the program `key` names has compiled, if it was started ahead; raises the
    thread's error. Returns at once for a program never started ahead, or long done."""
    with _lock:
        future = _futures.get(key(kind, owner, args, mesh))
    if future is not None:
        future.result()


def clear() -> None:
    """Forget every program filed (`w2sjax.runner.memory.release` drops the programs)."""
    with _lock:
        _futures.clear()
