"""XLA:CPU flag sets compared on the MiniLM-L6 finetune step, interleaved across warm processes.

XLA reads its flags once, when the backend starts, so each flag set runs in its own child
process. Every child loads the model, compiles the step and waits; the parent then asks them for
one timed call each in turn, in the order of `benchmarks.interleave` (A B C, then C B A, ...),
so load from other jobs falls on every side alike. One call is ``--steps`` train steps of the
library's step (`benchmarks.finetune.JaxFinetune`: bf16 matmuls, batch 32 x 128, AdamW).

With ``--verbose`` each flag set also runs one call in a child of its own under
``ONEDNN_VERBOSE=1``, and the record counts the oneDNN matmuls it executed, by operand type,
to tell whether the dots reached oneDNN at all.

    python -m benchmarks.flag_ab --repeats 5 --verbose --out benchmarks/results/DATE_onednn.jsonl
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import statistics
import subprocess
import sys
import time

BASE = "--xla_force_host_platform_device_count=2"
VARIANTS = {
    "ynn_dot": "--xla_cpu_experimental_ynn_fusion_type=individual_dot",  # the application default
    "ynn_off": "--xla_cpu_experimental_ynn_fusion_type=",
    "ynn_dot+use_onednn": "--xla_cpu_experimental_ynn_fusion_type=individual_dot --xla_cpu_use_onednn=true",
    "ynn_dot+onednn_custom_call": "--xla_cpu_experimental_ynn_fusion_type=individual_dot "
                                  "--xla_cpu_experimental_onednn_custom_call=true",
    "onednn_dot": "--xla_cpu_experimental_ynn_fusion_type= --xla_cpu_use_onednn=true "
                  "--xla_cpu_experimental_onednn_fusion_type=dot",
}


def child(model: str, dtype: str, steps: int) -> None:
    from benchmarks import finetune as ft

    path = ft.asset_path(model)
    shape = ft.shape_of(model, path)
    t0 = time.perf_counter()
    pad_id = ft.tokenizer_of(model, path).pad_id
    side = ft.JaxFinetune(ft.jax_module(model, path, dtype), ft.fixed_batches(shape.vocab, pad_id, count=steps))
    side()  # compile and one warm-up call
    print(json.dumps({"ready": round(time.perf_counter() - t0, 2)}), flush=True)
    for _ in sys.stdin:
        start = time.perf_counter()
        side()
        print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)


_MATMUL = re.compile(r"onednn_verbose,[^,]*,primitive,exec,cpu,matmul,([^,]*),[^,]*,src:(\w+)")


def verbose_counts(variant: str, args) -> dict:
    env = {**os.environ, "XLA_FLAGS": f"{VARIANTS[variant]} {BASE}", "ONEDNN_VERBOSE": "1"}
    done = subprocess.run([sys.executable, "-m", "benchmarks.flag_ab", "--child", "--model", args.model,
                           "--dtype", args.dtype, "--steps", "1"], input="\n", env=env,
                          capture_output=True, text=True, timeout=900)
    text = done.stdout + done.stderr
    kinds = collections.Counter(f"{impl} {src}" for impl, src in _MATMUL.findall(text))
    return {"onednn_matmul_execs": dict(kinds), "onednn_graph_execs": text.count(",graph,exec,"),
            "ok": done.returncode == 0}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", nargs="+", default=["ynn_dot", "onednn_dot"], choices=list(VARIANTS))
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument("--steps", type=int, default=2, help="train steps per timed call")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--verbose", action="store_true", help="count oneDNN matmuls per flag set")
    parser.add_argument("--out")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.model, args.dtype, args.steps)
        return 0
    routes = {v: verbose_counts(v, args) for v in args.variants} if args.verbose else {}
    procs, ready = {}, {}
    for v in args.variants:
        env = {**os.environ, "XLA_FLAGS": f"{VARIANTS[v]} {BASE}"}
        env.pop("ONEDNN_VERBOSE", None)
        procs[v] = subprocess.Popen([sys.executable, "-m", "benchmarks.flag_ab", "--child", "--model", args.model,
                                     "--dtype", args.dtype, "--steps", str(args.steps)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        ready[v] = json.loads(procs[v].stdout.readline())["ready"]  # one at a time: compiles do not overlap
    load_before = os.getloadavg()
    times = {v: [] for v in args.variants}
    try:
        for r in range(args.repeats):
            for v in (args.variants if r % 2 == 0 else args.variants[::-1]):
                procs[v].stdin.write("\n")
                procs[v].stdin.flush()
                times[v].append(json.loads(procs[v].stdout.readline())["seconds"])
    finally:
        for p in procs.values():
            p.stdin.close()
            p.wait(timeout=60)
    base = args.variants[0]
    records = []
    for v in args.variants:
        rec = {"case": "xla_flags_finetune", "variant": v, "xla_flags": f"{VARIANTS[v]} {BASE}", "model": args.model,
               "dtype": args.dtype, "batch": 32, "seq": 128, "steps_per_call": args.steps,
               "seconds": [round(t, 4) for t in times[v]], "min_s_per_step": min(times[v]) / args.steps,
               "median_s_per_step": statistics.median(times[v]) / args.steps, "setup_s": ready[v],
               "speedup_vs_" + base + "_min": min(times[base]) / min(times[v]),
               "speedup_vs_" + base + "_median": statistics.median(times[base]) / statistics.median(times[v]),
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "loadavg_before": [round(x, 2) for x in load_before],
               "loadavg_after": [round(x, 2) for x in os.getloadavg()], **routes.get(v, {})}
        records.append(rec)
        print(json.dumps(rec), flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
