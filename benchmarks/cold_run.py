"""The first run of a configuration, before and after a change: ``w2sjax run`` on empty caches,
interleaved.

Each run is the command a user types, in a fresh process, with a scratch ``W2SJAX_CACHE`` that
shares the fetched assets and prepared data sets of the real cache (symlinks) but starts with no
features, no bottoms and no compiled programs: what a user's first run of a new task or model
costs, less the downloads. Two source trees take turns, A B B A A B ..., so load from other jobs
falls on both; on a loaded machine only the ratio within one run means anything.

    python -m benchmarks.cold_run --before /tmp/main_tree --after . --rounds 2 \
        --out benchmarks/results/DATE_cold_run.jsonl [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

_NOT_SHARED = {"features", "bottoms", "xla", "logs"}  # what a first run computes for itself


def scratch_cache(real: pathlib.Path, dest: pathlib.Path) -> pathlib.Path:
    """``dest`` holding links to everything in ``real`` but the derived caches."""
    dest.mkdir(parents=True)
    for entry in real.iterdir():
        if entry.name not in _NOT_SHARED:
            (dest / entry.name).symlink_to(entry)
    return dest


def git_commit(tree: pathlib.Path) -> str | None:
    proc = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return proc.stdout.strip() or None


def one_run(side: str, tree: pathlib.Path, real_cache: pathlib.Path, overrides: list[str]) -> dict:
    """One cold ``w2sjax run`` from ``tree``: wall seconds, its compile record and its table."""
    with tempfile.TemporaryDirectory(prefix="w2sjax_cold_") as tmp:
        cache = scratch_cache(real_cache, pathlib.Path(tmp) / "cache")
        out = pathlib.Path(tmp) / "out"
        env = {**os.environ, "W2SJAX_CACHE": str(cache), "PYTHONPATH": str(tree.resolve())}
        env.pop("JAX_COMPILATION_CACHE_DIR", None)  # the command's own cache, under the scratch W2SJAX_CACHE
        args = [sys.executable, "-m", "w2sjax.cli", "run", "--out", str(out), "--no-progress", "--no-figures"]
        args += [a for kv in overrides for a in ("--set", kv)]
        load = round(os.getloadavg()[0], 2)
        t0 = time.perf_counter()
        proc = subprocess.run(args, env=env, cwd=tree, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"{side}: w2sjax run exited {proc.returncode}:\n{proc.stderr[-2000:]}")
        results = json.loads((out / "results.json").read_text())
    compiled = results.get("compile", {})
    return {
        "side": side, "commit": git_commit(tree), "wall_s": round(wall, 1), "loadavg_before": load,
        "loadavg_after": round(os.getloadavg()[0], 2),
        **{k: compiled.get(k) for k in ("programs", "cache_hits", "compile_s", "ahead_s")},
        "by_function": [[g["name"], g["programs"], g["compile_s"]] for g in compiled.get("by_function", [])][:12],
        "accuracies": [[r["strong_model"], r["loss"], r["seed"], r["weak_acc"], r["w2s_acc"], r["ceiling_acc"]]
                       for r in results["runs"]],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, type=pathlib.Path, help="source tree of the code before")
    parser.add_argument("--after", required=True, type=pathlib.Path, help="source tree of the code after")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each side")
    parser.add_argument("--out", required=True, type=pathlib.Path, help="JSONL to append the records to")
    parser.add_argument("--first", choices=("before", "after"), default="before", help="the side that opens round 1")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    from w2sjax.runner import utilisation
    from w2sjax.runner.cache import cache_dir

    real = cache_dir()
    sides = {"before": args.before, "after": args.after}
    if args.first == "after":
        sides = {"after": args.after, "before": args.before}
    order = []
    for r in range(args.rounds):  # A B, B A, A B, ...
        order += list(sides) if r % 2 == 0 else list(sides)[::-1]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for i, side in enumerate(order):
        record = {"case": "cold_run", "date": time.strftime("%Y-%m-%d", time.gmtime()),
                  "utc": time.strftime("%H:%M", time.gmtime()), "cpu": utilisation.cpu_model(),
                  "cores": os.cpu_count(), "order": i, "overrides": args.overrides,
                  **one_run(side, sides[side], real, args.overrides)}
        with open(args.out, "a") as f:
            f.write(json.dumps(record) + "\n")
        print(f"{side}: {record['wall_s']} s wall, {record['programs']} programs, {record['compile_s']} s compiling "
              f"(load {record['loadavg_before']})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
