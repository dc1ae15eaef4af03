"""The sweep's first run, each side in its own fresh process: what a user's first run costs.

    python -m benchmarks.sweep_cold --rounds 2 --out benchmarks/results/DATE_sweep_cold_fresh.jsonl [--quick]
    python -m benchmarks.sweep_cold --sides jax jax@main torch --tree main=/tmp/main_tree --warm 1 --rounds 1

`benchmarks.sweep_vs_torch` times "cold" as each side's first call inside one process, so the side
that runs first pays the process's imports and data loading for all the others. Here every call is
a new Python process (``--child SIDE``) that imports its libraries, loads the task, reads the model
files, compiles, and runs the sweep once with the same side objects (`sweep_vs_torch.JaxSweep`,
`sweep_vs_torch.TorchSweep`) and settings. The parent times each process from spawn to exit; the
child reports the seconds of the sweep call itself and of its whole ``main`` (imports included).

w2sjax's persistent XLA compile cache points at a new empty directory in every call, as on a
user's first run of a configuration, so every program really compiles (PyTorch has no such cache).
The other caches (the fetched model files, the prepared data sets, the GloVe features both sides
read) are the shared ones: both sides find them alike. Sides take turns A B, B A, A B, ... so load
from other jobs falls on both.

``--warm N``: each process then runs the sweep N more times, as the warm rounds of
`benchmarks.sweep_vs_torch` do (in-process compiled programs and file caches), so one process
gives a side's cold and warm seconds; its cold ``wall_s`` then ends with its first sweep, not
at its exit. ``--tree LABEL=PATH`` adds the sides ``SIDE@LABEL``: the same
child run with another source tree first on its path (an archive of main, say, holding this
harness's ``benchmarks/``), so that trees and PyTorch take turns in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

SIDES = ("jax_bf16", "jax", "torch_bf16", "torch")
ROOT = pathlib.Path(__file__).resolve().parents[1]


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.sweep_cold", description=__doc__.split("\n\n")[0])
    p.add_argument("--sides", nargs="+", default=["jax_bf16", "torch_bf16"], metavar="SIDE[@TREE]",
                   help=f"sides among {', '.join(SIDES)}; SIDE@LABEL runs a jax side from --tree LABEL")
    p.add_argument("--tree", action="append", default=[], metavar="LABEL=PATH",
                   help="another source tree whose library a SIDE@LABEL child imports")
    p.add_argument("--warm", type=int, default=0, help="sweeps each process runs after its cold one")
    p.add_argument("--rounds", type=int, default=2, help="fresh processes per side (at least 1)")
    p.add_argument("--quick", action="store_true", help="the tiny sweep (seconds): for tests, not for numbers")
    p.add_argument("--devices", type=int, default=os.cpu_count() or 1,
                   help="host devices (--xla_force_host_platform_device_count); PyTorch threads")
    p.add_argument("--ynn", choices=("dot", "off", "all"), default="dot")
    p.add_argument("--out", type=pathlib.Path, help="JSONL to append the records to")
    p.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    p.add_argument("--xla-cache", type=pathlib.Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error(f"--rounds: expected a whole number >= 1, got {args.rounds}")
    if args.warm < 0:
        p.error(f"--warm: expected a whole number >= 0, got {args.warm}")
    trees = {}
    for item in args.tree:
        label, _, path = item.partition("=")
        if not label or not path or not pathlib.Path(path).is_dir():
            p.error(f"--tree: expected LABEL=PATH of a source folder, got {item!r}")
        trees[label] = pathlib.Path(path).resolve()
    args.trees = trees
    for side in args.sides:
        base, _, label = side.partition("@")
        if base not in SIDES or (label and (label not in trees or not base.startswith("jax"))):
            p.error(f"--sides: {side!r} is not one of {', '.join(SIDES)}, or a jax side @ a --tree label")
    return args


def order(sides: list[str], rounds: int) -> list[str]:
    """Every side once per round, the order reversed in odd rounds: A B, B A, A B, ..."""
    out = []
    for r in range(rounds):
        out += sides if r % 2 == 0 else sides[::-1]
    return out


def summary(calls: list[dict], jax_side: str, torch_side: str) -> dict:
    """w2sjax / PyTorch by the minimum and by the median of the fresh processes' wall seconds
    (spawn to exit), and the same for the sweep call inside them."""
    def stat(side, key, fn):
        return fn([c[key] for c in calls if c["side"] == side])

    out = {"case": "sweep_cold_fresh", "impl": "ratio", "jax": jax_side, "torch": torch_side}
    for key in ("wall_s", "sweep_s"):
        for name, fn in (("min", min), ("median", statistics.median)):
            out[f"{key}_{name}"] = {s: round(stat(s, key, fn), 3) for s in (jax_side, torch_side)}
            out[f"jax_over_torch_{key}_{name}"] = round(stat(jax_side, key, fn) / stat(torch_side, key, fn), 3)
    warm = {s: [t for c in calls if c["side"] == s for t in c.get("warm_s", [])] for s in (jax_side, torch_side)}
    if all(warm.values()):  # the later sweeps of every process: the warm ratio
        for name, fn in (("min", min), ("median", statistics.median)):
            out[f"warm_s_{name}"] = {s: round(fn(t), 3) for s, t in warm.items()}
            out[f"jax_over_torch_warm_s_{name}"] = round(fn(warm[jax_side]) / fn(warm[torch_side]), 3)
    return out


# ---------------------------------------------------------------- child: one cold sweep


def child(args) -> dict:
    """Run the sweep once in this (fresh) process; return its timing record."""
    t_main = time.perf_counter()
    from benchmarks import run as bench
    from benchmarks import sweep_vs_torch as svt

    sz = svt.QUICK if args.quick else svt.FULL
    bench._set_flags(args)
    if args.child.startswith("jax"):
        from w2sjax.runner import xla_flags

        # What `w2sjax run` turns on, in an empty directory: programs compile and are written there.
        xla_flags.enable_compilation_cache(args.xla_cache)
        side = svt.JaxSweep(svt.sweep_config(sz, "bfloat16" if args.child == "jax_bf16" else "float32"))
    else:
        import torch

        torch.set_num_threads(args.devices)
        side = svt.TorchSweep(svt.sweep_config(sz, "bfloat16"), sz,
                              "bfloat16" if args.child == "torch_bf16" else "float32")
    t0 = time.perf_counter()
    side()
    done = time.perf_counter()
    out = {"sweep_s": round(done - t0, 3), "main_s": round(done - t_main, 3), "cold_done_unix": time.time(),
           "stage_seconds": side.stage_seconds, "stage_steps": side.stage_steps, "breakdown": side.breakdown}
    if args.warm:
        out.update(warm_s=[], warm_stage_seconds=[], warm_breakdown=[])
        for _ in range(args.warm):
            t0 = time.perf_counter()
            side()
            out["warm_s"].append(round(time.perf_counter() - t0, 3))
            out["warm_stage_seconds"].append(side.stage_seconds)
            out["warm_breakdown"].append(side.breakdown)
    accuracies = getattr(side, "accuracies", None)
    if accuracies is not None:
        out["accuracies"] = accuracies
    return {**out, "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


# ---------------------------------------------------------------- parent: spawn, time, record


def spawn(side: str, args) -> dict:
    """One fresh process of ``side``: wall seconds from spawn to exit, and the child's record."""
    base, _, label = side.partition("@")
    tree = args.trees[label] if label else ROOT
    cmd = [sys.executable, "-m", "benchmarks.sweep_cold", "--child", base, "--devices", str(args.devices),
           "--ynn", args.ynn, "--warm", str(args.warm), *(["--quick"] if args.quick else [])]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    with tempfile.TemporaryDirectory(prefix="sweep_cold_xla_") as xla:
        if side.startswith("jax"):
            cmd += ["--xla-cache", xla]
        load = round(os.getloadavg()[0], 2)
        t0, spawned = time.perf_counter(), time.time()
        proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        written = sum(1 for _ in pathlib.Path(xla).iterdir())
    if proc.returncode != 0:
        raise SystemExit(f"{side}: the child process exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    child_rec = json.loads(lines[-1])
    # With warm sweeps after it, the first run ends when its sweep does (on the wall clock both
    # processes read), not when the process exits; the process's whole life is ``process_s``.
    done = child_rec.pop("cold_done_unix", None)
    cold_wall = done - spawned if args.warm and done is not None else wall
    rec = {"wall_s": round(cold_wall, 3), "process_s": round(wall, 3), **child_rec, "loadavg_before": load,
           "loadavg_after": round(os.getloadavg()[0], 2)}
    if side.startswith("jax"):
        rec["xla_cache_entries_written"] = written
    return {**rec, **({"tree": str(tree), "tree_commit": git_commit(tree)} if label else {})}


def git_commit(tree: pathlib.Path = ROOT) -> str | None:
    proc = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return proc.stdout.strip() or None


def emit(record: dict, out: pathlib.Path | None) -> None:
    line = json.dumps(record)
    print(line, flush=True)
    if out is not None:  # appended as each call ends, so a stopped run keeps what it measured
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "a") as f:
            f.write(line + "\n")


def main(argv=None) -> int:
    args = parse(argv)
    if args.child:
        print(json.dumps(child(args)), flush=True)
        return 0
    from w2sjax.runner import utilisation

    emit({"case": "setup", "impl": "sweep_cold_fresh", "commit": git_commit(), "date": time.strftime("%Y-%m-%d", time.gmtime()),
          "utc": time.strftime("%H:%M:%S", time.gmtime()), "cpu": utilisation.cpu_model(), "cores": os.cpu_count(),
          "sides": args.sides, "rounds": args.rounds, "quick": args.quick, "devices": args.devices, "warm": args.warm,
          "trees": {k: str(v) for k, v in args.trees.items()},
          "ynn": args.ynn, "nice": os.nice(0), "loadavg": [round(x, 2) for x in os.getloadavg()]}, args.out)
    calls = []
    for i, side in enumerate(order(args.sides, args.rounds)):
        rec = {"case": "sweep_cold_fresh", "impl": "call", "side": side, "order": i,
               "round": i // len(args.sides), "utc": time.strftime("%H:%M:%S", time.gmtime()), **spawn(side, args)}
        calls.append(rec)
        emit(rec, args.out)
    for j in (s for s in args.sides if s.startswith("jax")):
        for t in (s for s in args.sides if s.startswith("torch")):
            emit(summary(calls, j, t), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
