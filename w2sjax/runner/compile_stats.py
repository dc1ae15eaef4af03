"""How many XLA programs a run compiled, and how long that took.

On a CPU the first run of a configuration spends much of its time compiling, so every run
reports it (``results.json["compile"]`` and the line after the table). The numbers come from
JAX's own monitoring events: one ``backend_compile`` per program a jitted function needed (it
fires for persistent-cache hits too, taking ~0 s), and one cache hit per program read back from
the persistent compilation cache instead of compiled.
"""

from __future__ import annotations

import threading

_COMPILE = "/jax/core/compile/backend_compile_duration"
_TRACE = "/jax/core/compile/jaxpr_trace_duration"
_LOWER = "/jax/core/compile/jaxpr_to_mlir_module_duration"
_CACHE_HIT = "/jax/compilation_cache/cache_hits"

_lock = threading.Lock()
_totals = {"programs": 0, "compile_s": 0.0, "trace_s": 0.0, "lower_s": 0.0, "cache_hits": 0}
_installed = False


def _on_duration(name: str, seconds: float, **_) -> None:
    with _lock:
        if name == _COMPILE:
            _totals["programs"] += 1
            _totals["compile_s"] += seconds
        elif name == _TRACE:
            _totals["trace_s"] += seconds
        elif name == _LOWER:
            _totals["lower_s"] += seconds


def _on_event(name: str, **_) -> None:
    if name == _CACHE_HIT:
        with _lock:
            _totals["cache_hits"] += 1


def install() -> dict:
    """Start counting (once per process); returns the totals so far, to subtract later."""
    global _installed
    from jax import monitoring

    with _lock:
        if not _installed:
            monitoring.register_event_duration_secs_listener(_on_duration)
            monitoring.register_event_listener(_on_event)
            _installed = True
        return dict(_totals)


def since(start: dict) -> dict:
    """What was compiled since ``start`` (from :func:`install`), seconds rounded to 0.1."""
    with _lock:
        now = dict(_totals)
    delta = {k: now[k] - start.get(k, 0) for k in now}
    return {k: (round(v, 1) if isinstance(v, float) else v) for k, v in delta.items()}


def describe(stats: dict) -> str:
    """One line, e.g. ``37 XLA programs: 25 compiled, 12 read from the persistent cache, 41.2 s``."""
    n, hits = stats["programs"], stats.get("cache_hits", 0)
    cached = f", {hits} read from the persistent cache" if hits else ""
    return f"{n} XLA program{'s' * (n != 1)}: {n - hits} compiled{cached}, {stats['compile_s']:.1f} s"
