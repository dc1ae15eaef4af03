"""Bounded memory across models: what a process holds for one model is let go when it moves on.

A sweep that runs one experiment per model in turn (``experiments/headline.py``'s parts, the
benchmark protocol, a notebook) would otherwise keep every model it has seen: the per-process
weight caches of the model families (kept so that the stages of one run share one copy), the
jitted functions and their compiled programs, and the device buffers those hold. Each model then
adds its weights, optimizer-sized temporaries and programs to the process, and three models of a
few hundred MB each grew one process to 20 GB (``benchmarks/RESULTS.md``, 2026-11-29).

:func:`moving_to` is called with the models of each run: when a model the process holds is not
among them, everything is released first (:func:`release`). Runs of the same models in a row keep
their caches, so a sweep over tasks or seeds pays nothing; the next model's programs come back
from the persistent compilation cache when it is on.
"""

from __future__ import annotations

import ctypes
import gc
import sys
import threading

_lock = threading.Lock()
_held: set[str] = set()  # the models whose weights and programs this process may hold


def _clear_weight_caches() -> None:
    """The model families' per-process weight caches (only those already imported)."""
    for module_name in ("w2sjax.models.bert", "w2sjax.models.mpnet", "w2sjax.models.hf", "w2sjax.models.gguf"):
        module = sys.modules.get(module_name)
        for name in ("_load_cached", "_open_cached"):  # loaded modules; parsed GGUF files
            cached = getattr(module, name, None)
            if cached is not None:
                cached.cache_clear()


def _return_freed_heap() -> None:
    """Give freed heap pages back to the OS (glibc keeps them, so resident memory stays high)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def release() -> None:
    """Drop every model's cached weights, jitted functions and compiled programs, then collect."""
    import jax

    _clear_weight_caches()
    train = sys.modules.get("w2sjax.train")
    if train is not None:
        train.clear_caches()
    precompile = sys.modules.get("w2sjax.runner.precompile")
    if precompile is not None:  # the programs it started are dropped below: it may start them again
        precompile.forget()
    jax.clear_caches()
    gc.collect()
    _return_freed_heap()


def _pretrained(name: str) -> bool:
    """Whether ``name`` brings pretrained weights worth releasing: every model but the small ones
    trained from scratch (bag of embeddings, TF-IDF, MLP, CNN), whose leaving frees little and
    whose programs a sweep's next run usually needs again."""
    from w2sjax.models import registry

    return registry.MODULES.get(name) != "shallow"


def moving_to(models) -> bool:
    """Called before a run of ``models`` (names): releases what the process holds when a pretrained
    model it holds is not among them. Returns whether it released."""
    models = {m for m in models if _pretrained(m)}
    with _lock:
        released = bool(_held - models)
        if released:
            release()
            _held.clear()
        _held.update(models)
    return released


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far (``VmHWM``), in bytes; 0 where unknown."""
    return _status_bytes("VmHWM")


def rss_bytes() -> int:
    """This process's resident memory now (``VmRSS``), in bytes; 0 where unknown."""
    return _status_bytes("VmRSS")


def _status_bytes(field: str) -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024  # the kernel reports kB
    except (OSError, ValueError, IndexError):
        pass
    return 0
