"""A timeline of one cold ``w2sjax run``: when each stage loads, builds, starts its compiles, waits for
a program, trains, predicts and saves, and every XLA program compiled on the main thread (with the
library frames that asked for it), so the first run's critical path can be read off.

    python -m benchmarks.cold_timeline --out benchmarks/results/DATE_cold_timeline.jsonl [--set key=value ...]

Runs in this process (its imports are timed too) on a scratch cache as `benchmarks.cold_run` makes
one, with the sweep's overrides (`benchmarks.sweep_vs_torch.sweep_overrides`) unless ``--set`` is
given. Library functions are wrapped to log their entry and exit, JAX's monitoring events give each
trace, lowering and compile; each line is ``{"t": seconds since start, "thread", "event"}``.
Observation only: the wrappers change no argument or result.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import threading
import time
import traceback

T0 = time.perf_counter()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cold_timeline", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=pathlib.Path)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    from benchmarks.cold_run import git_commit, scratch_cache
    from benchmarks.sweep_cold import emit
    from benchmarks.sweep_vs_torch import FULL, sweep_overrides
    from w2sjax.runner.cache import cache_dir

    root = pathlib.Path(__file__).resolve().parents[1]
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="w2sjax_timeline_"))
    import os

    os.environ["W2SJAX_CACHE"] = str(scratch_cache(cache_dir(), tmp / "cache"))
    os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)
    overrides = args.overrides or sweep_overrides(FULL, "bfloat16")
    emit({"case": "setup", "impl": "cold_timeline", "commit": git_commit(root), "date": time.strftime("%Y-%m-%d", time.gmtime()),
          "utc": time.strftime("%H:%M:%S", time.gmtime()), "overrides": overrides,
          "loadavg": [round(x, 2) for x in os.getloadavg()]}, args.out)
    log = lambda event: emit({"t": round(time.perf_counter() - T0, 3), "thread": threading.current_thread().name,
                              "event": event}, args.out)
    from w2sjax import cli  # cli.main imports the rest (jax, flax) itself: those seconds fall before "prepare"
    _instrument(log)
    rc = cli.main(["run", "--out", str(tmp / "out"), "--no-progress", "--no-figures"]
                  + [a for kv in overrides for a in ("--set", kv)])
    log(f"exit {rc}")
    return rc


def _wrap(log, owner, name, label=None):
    original = getattr(owner, name)

    def wrapped(*a, **k):
        log(f"> {label or name}")
        out = original(*a, **k)
        log(f"< {label or name}")
        return out

    setattr(owner, name, wrapped)


def _instrument(log) -> None:
    from jax import monitoring

    from w2sjax import experiment, train
    from w2sjax.runner import checkpoint, pending, precompile, stage_runner

    for owner, name in ((experiment, "prepare"), (experiment, "finish"), (experiment.SeedRun, "row"),
                        (stage_runner.Runner, "stage"), (train, "fit"), (train, "predict"),
                        (checkpoint, "save"), (precompile, "start_finetune")):
        _wrap(log, owner, name)
    get = stage_runner.Inputs.get

    def get_logged(self, name, **kw):
        mi = get(self, name, **kw)
        if not getattr(mi, "_logged", False):
            build, inputs = mi.build, mi.inputs
            mi.build = lambda seed: _logged(log, f"build {name}", build, seed)
            mi.inputs = lambda split, rows: _logged(log, f"inputs {name} {split} {len(rows)}", inputs, split, rows)
            mi._logged = True
        return mi

    stage_runner.Inputs.get = get_logged
    submit, wait = precompile._submit, pending.wait

    def submit_logged(program, compile_it):
        shapes = [s for s in program[3] if len(s[0]) >= 2 and s[1] == "int32"][:1]
        return submit(program, lambda: _logged(log, f"ahead {program[0]} {shapes}", compile_it))

    def wait_logged(kind, owner, args, mesh):
        started = time.perf_counter()
        wait(kind, owner, args, mesh)
        if time.perf_counter() - started > 0.01:
            log(f"waited {time.perf_counter() - started:.2f} s for a {kind} program")

    precompile._submit, pending.wait = submit_logged, wait_logged

    def on_duration(event, seconds, **kw):
        short = event.rsplit("/", 1)[-1]
        if "backend_compile" in event and threading.current_thread().name == "MainThread":
            frames = [f for f in traceback.extract_stack() if "/w2sjax/" in f.filename]
            where = " <- ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}:{f.name}" for f in frames[::-1][:3])
            log(f"main-thread compile {kw.get('fun_name')} {seconds:.3f} s at {where}")
        elif seconds > 0.02 and short in ("jaxpr_trace_duration", "jaxpr_to_mlir_module_duration",
                                          "backend_compile_duration"):
            log(f"{short} {kw.get('fun_name')} {seconds:.3f} s")

    monitoring.register_event_duration_secs_listener(on_duration)


def _logged(log, label, fn, *args):
    log(f"> {label}")
    out = fn(*args)
    log(f"< {label}")
    return out


if __name__ == "__main__":
    sys.exit(main())
