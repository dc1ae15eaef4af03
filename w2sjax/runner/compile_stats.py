"""How many XLA programs a run compiled, what they were, and how long that took.

On a CPU the first run of a configuration spends much of its time compiling, so every run
reports it (``results.json["compile"]`` and the line after the table). The numbers come from
JAX's own monitoring events: one ``backend_compile`` per program a jitted function needed (it
fires for persistent-cache hits too, taking ~0 s), and one cache hit per program read back from
the persistent compilation cache instead of compiled.

Each program is also recorded by the name of the function it came from and, where JAX says it,
the shapes it was compiled for (`breakdown` groups them: which functions, and how many shapes
each, cost the compile time). The shapes come from the debug line JAX's lowering writes just
before it compiles, read by a logging filter on that one logger that lets through exactly what
would have been printed without it.
"""

from __future__ import annotations

import logging
import threading

_COMPILE = "/jax/core/compile/backend_compile_duration"
_TRACE = "/jax/core/compile/jaxpr_trace_duration"
_LOWER = "/jax/core/compile/jaxpr_to_mlir_module_duration"
_CACHE_HIT = "/jax/compilation_cache/cache_hits"
_LOWERING_LOGGER = "jax._src.interpreters.pxla"
_LOWERING_LINE = "Compiling %s with global shapes and types"
_MAX_RECORDS = 20_000  # programs remembered per process (a long sweep compiles a few hundred)

_lock = threading.Lock()
_totals = {"programs": 0, "compile_s": 0.0, "ahead_s": 0.0, "trace_s": 0.0, "lower_s": 0.0, "cache_hits": 0}
AHEAD_THREAD = "w2sjax-compile"  # names the threads that compile ahead (`w2sjax.runner.precompile`)
_records: list[dict] = []  # one per program: name, seconds, cached, shapes
_dropped = 0  # records forgotten beyond _MAX_RECORDS, so indices into _records stay meaningful
_thread = threading.local()  # this thread's program being compiled: its shapes, and whether the cache had it
_installed = False


def _on_duration(name: str, seconds: float, **kwargs) -> None:
    if name == _COMPILE:
        record = {"name": _short_name(kwargs.get("fun_name", "?")), "seconds": seconds,
                  "cached": getattr(_thread, "hit", False), "shapes": getattr(_thread, "shapes", "")}
        _thread.hit, _thread.shapes = False, ""
        ahead = threading.current_thread().name.startswith(AHEAD_THREAD)
        with _lock:
            _totals["programs"] += 1
            _totals["compile_s"] += seconds
            _totals["ahead_s"] += seconds if ahead else 0.0
            _remember(record)
    elif name in (_TRACE, _LOWER):
        with _lock:
            _totals["trace_s" if name == _TRACE else "lower_s"] += seconds


def _remember(record: dict) -> None:
    global _dropped
    _records.append(record)
    if len(_records) > _MAX_RECORDS:
        del _records[: len(_records) - _MAX_RECORDS]
        _dropped = _totals["programs"] - len(_records)


def _on_event(name: str, **_) -> None:
    if name == _CACHE_HIT:
        _thread.hit = True  # the compile event that follows on this thread read its program back
        with _lock:
            _totals["cache_hits"] += 1


def _short_name(fun_name: str) -> str:
    """``jit(train_loop)`` -> ``train_loop``."""
    return fun_name[4:-1] if fun_name.startswith("jit(") and fun_name.endswith(")") else fun_name


def describe_shapes(avals) -> str:
    """A short signature of a program's arguments: how many, their total size, and the shapes
    that tell programs of one function apart (integer arrays of rank 2 or more, such as token
    ids ``[rows, length]``, and any array of rank 3 or more, such as stacked batches)."""
    total, telling = 0, []
    for aval in avals:
        shape, dtype = tuple(getattr(aval, "shape", ())), getattr(aval, "dtype", None)
        size = 1
        for d in shape:
            size *= int(d)
        total += size * getattr(dtype, "itemsize", 4)
        integer = dtype is not None and getattr(dtype, "kind", "f") in "iub"
        if (integer and len(shape) >= 2) or len(shape) >= 3:
            text = f"{dtype}[{','.join(map(str, shape))}]"
            if text not in telling:
                telling.append(text)
    return f"{len(avals)} args {total / 1e6:.1f} MB" + (" " + " ".join(telling[:3]) if telling else "")


class _ShapesOfNextCompile(logging.Filter):
    """Keeps the shapes of the program JAX is about to compile (for this thread) and passes on a
    record only if the logger would have let it through at its own level (``level``)."""

    def __init__(self, level: int):
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith(_LOWERING_LINE) and len(record.args or ()) >= 2:
            try:
                _thread.shapes = describe_shapes(record.args[1])
            except Exception:  # a changed log format costs the shapes, never the compile
                _thread.shapes = ""
        return record.levelno >= self.level


def _capture_shapes() -> None:
    logger = logging.getLogger(_LOWERING_LOGGER)
    level = logger.getEffectiveLevel()
    if level > logging.DEBUG:
        logger.addFilter(_ShapesOfNextCompile(level))
        logger.setLevel(logging.DEBUG)


def install() -> dict:
    """Start counting (once per process); returns the totals so far, to subtract later."""
    global _installed
    from jax import monitoring

    with _lock:
        if not _installed:
            monitoring.register_event_duration_secs_listener(_on_duration)
            monitoring.register_event_listener(_on_event)
            _capture_shapes()
            _installed = True
        return {**_totals, "_index": _dropped + len(_records)}


def programs(start: dict | None = None) -> list[dict]:
    """The programs recorded since ``start`` (from :func:`install`; all of them without it), each
    ``{"name", "seconds", "cached", "shapes"}``."""
    with _lock:
        first = max(0, (start or {}).get("_index", 0) - _dropped)
        return [dict(r) for r in _records[first:]]


def breakdown(records: list[dict]) -> list[dict]:
    """Programs grouped by function, most compile time first: ``{"name", "programs", "compiled",
    "compile_s", "shapes"}`` with ``shapes`` the number of distinct argument signatures."""
    groups: dict[str, dict] = {}
    for r in records:
        g = groups.setdefault(r["name"], {"name": r["name"], "programs": 0, "compiled": 0, "compile_s": 0.0,
                                          "_shapes": set()})
        g["programs"] += 1
        g["compiled"] += not r["cached"]
        g["compile_s"] += r["seconds"]
        g["_shapes"].add(r["shapes"])
    out = []
    for g in sorted(groups.values(), key=lambda g: (-g["compile_s"], g["name"])):
        shapes = g.pop("_shapes")
        out.append({**g, "compile_s": round(g["compile_s"], 2), "shapes": len(shapes)})
    return out


def since(start: dict) -> dict:
    """What was compiled since ``start`` (from :func:`install`), seconds rounded to 0.1, with the
    programs grouped by function under ``"by_function"`` (`breakdown`)."""
    with _lock:
        now = dict(_totals)
    delta = {k: now[k] - start.get(k, 0) for k in now}
    out = {k: (round(v, 1) if isinstance(v, float) else v) for k, v in delta.items()}
    out["by_function"] = breakdown(programs(start))
    return out


def describe(stats: dict, *, top: int = 3, min_s: float = 0.05) -> str:
    """One line, e.g. ``37 XLA programs: 25 compiled, 12 read from the persistent cache, 41.2 s``,
    then the compile time spent ahead on a background thread, and the ``top`` functions that took
    the most compile time (at least ``min_s`` each), when known."""
    n, hits = stats["programs"], stats.get("cache_hits", 0)
    cached = f", {hits} read from the persistent cache" if hits else ""
    line = f"{n} XLA program{'s' * (n != 1)}: {n - hits} compiled{cached}, {stats['compile_s']:.1f} s"
    if stats.get("ahead_s", 0) >= 0.05:
        line += f" ({stats['ahead_s']:.1f} s of it ahead, on a background thread)"
    worst = [g for g in stats.get("by_function", []) if g["compile_s"] >= min_s][:top]
    if worst:
        line += " (most in " + ", ".join(f"{g['name']} {g['programs']}x {g['compile_s']:.1f} s" for g in worst) + ")"
    return line


def table(stats: dict) -> str:
    """Every function's programs as a small text table (for ``python -m w2sjax.runner.compile_stats``)."""
    rows = [("function", "programs", "compiled", "shapes", "compile s")]
    rows += [(g["name"], str(g["programs"]), str(g["compiled"]), str(g["shapes"]), f"{g['compile_s']:.2f}")
             for g in stats.get("by_function", [])]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in rows)


def main(argv: list[str] | None = None) -> int:
    """``python -m w2sjax.runner.compile_stats RUN_DIR_OR_RESULTS_JSON``: a run's compiles by function."""
    import json
    import pathlib
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m w2sjax.runner.compile_stats RUN_DIR|results.json", file=sys.stderr)
        return 2
    path = pathlib.Path(args[0])
    path = path / "results.json" if path.is_dir() else path
    try:
        stats = json.loads(path.read_text())["compile"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"compile_stats: error: {path}: no compile record ({exc})", file=sys.stderr)
        return 2
    print(describe(stats, top=0))
    print(table(stats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
