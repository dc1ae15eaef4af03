"""Peak resident memory of one process that runs several models in turn, against the largest alone.

Each scenario runs in a fresh child process (peak RSS, ``VmHWM``, only grows), which calls
``experiment.run`` once per model, as ``experiments/headline.py`` runs its parts: a finetuned
student on vader_tweets with small caps (64 training rows, 32 tokens, one epoch, one seed), a
mean-GloVe supervisor, the xent loss. The flags and the persistent compilation cache are the
``w2sjax`` command's.

  * ``sweep``: MiniLM-L6, then MPNet-base, then SmolLM2-135M, releasing each model when the next
    run starts (`w2sjax.runner.memory`, the library's behaviour);
  * ``sweep_keep``: the same with the release turned off (the behaviour before it);
  * ``alone``: SmolLM2-135M only.

    python -m benchmarks.memory_sweep --out benchmarks/results/DATE_memory_sweep.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

MODELS = ("minilm-l6", "mpnet-base", "smollm2-135m")
SCENARIOS = {"sweep": MODELS, "sweep_keep": MODELS, "alone": MODELS[-1:]}


def overrides(model: str, precision: str) -> list[str]:
    return ["data.task=vader_tweets", "data.n_train=64", "data.n_val=16", "data.n_test=32", "data.max_len=32",
            "weak_models=glove-bow", f"strong_models={model}", "losses=xent", "seeds=0", "strong_mode=finetune",
            f"precision={precision}", "train.epochs=1", "train.batch_size=16", "train.lr=3e-5", "weak_train.epochs=2"]


def child(scenario: str, precision: str, devices: int | None) -> dict:
    from w2sjax import assets
    from w2sjax.runner import xla_flags

    xla_flags.apply_defaults(devices=devices)
    xla_flags.enable_compilation_cache(assets.cache_dir() / "xla")
    from w2sjax import config as config_lib
    from w2sjax import experiment
    from w2sjax.runner import memory

    if scenario == "sweep_keep":
        memory.release = lambda: None  # what a process did before models were released
    parts = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for model in SCENARIOS[scenario]:
            cfg = config_lib.apply_overrides(config_lib.Config(name=f"memory_{model}"), overrides(model, precision))
            t0 = time.perf_counter()
            experiment.run(cfg, os.path.join(tmp, model), progress=False)
            parts.append({"model": model, "seconds": round(time.perf_counter() - t0, 1),
                          "rss_mb_after": round(memory.rss_bytes() / 2**20), "peak_rss_mb": round(memory.peak_rss_bytes() / 2**20)})
    import jax

    return {"scenario": scenario, "models": list(SCENARIOS[scenario]), "precision": precision, "parts": parts,
            "devices": jax.device_count(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "peak_rss_mb": round(memory.peak_rss_bytes() / 2**20), "seconds": round(time.perf_counter() - start, 1)}


def _cpu() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def _available_mb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return float("inf")


def _run_guarded(command: list[str], min_free_mb: float) -> tuple[str, int]:
    """Run ``command``; stop it if the machine's available memory falls under ``min_free_mb``, so
    that on a shared machine the kernel's OOM killer never has to pick someone else's process."""
    with tempfile.TemporaryFile("w+") as log:
        child_process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True)
        while child_process.poll() is None:
            if _available_mb() < min_free_mb:
                child_process.kill()
                child_process.wait()
                log.seek(0)
                return log.read() + f"\nstopped: the machine had under {min_free_mb:.0f} MB available", 1
            time.sleep(1)
        log.seek(0)
        return log.read(), child_process.returncode


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", help="append the JSON records to this file")
    parser.add_argument("--scenarios", nargs="+", default=["alone", "sweep", "sweep_keep"], choices=sorted(SCENARIOS))
    parser.add_argument("--precision", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument("--devices", type=int, help="fake CPU devices (default: the w2sjax command's, one per core); "
                        "each holds a replica of the training state, so fewer use less memory")
    parser.add_argument("--min-free-mb", type=float, default=1500,
                        help="stop a scenario when the machine has less memory available than this")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.precision, args.devices)), flush=True)
        return 0
    records = []
    for scenario in args.scenarios:
        before = os.getloadavg()
        more = [] if args.devices is None else ["--devices", str(args.devices)]
        out, returncode = _run_guarded([sys.executable, "-m", "benchmarks.memory_sweep", "--child", scenario,
                                        "--precision", args.precision, *more], args.min_free_mb)
        if returncode != 0:
            print(out[-3000:], file=sys.stderr)
            return returncode or 1
        record = json.loads(out.strip().splitlines()[-1])
        record.update(case="memory_sweep", date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), cpu=_cpu(),
                      loadavg_before=[round(x, 2) for x in before],
                      loadavg_after=[round(x, 2) for x in os.getloadavg()])
        print(json.dumps(record), flush=True)
        records.append(record)
    alone = next((r["peak_rss_mb"] for r in records if r["scenario"] == "alone"), None)
    for r in records:
        if alone and r["scenario"] != "alone":
            r["ratio_to_alone"] = round(r["peak_rss_mb"] / alone, 3)
            print(f"{r['scenario']}: peak RSS {r['peak_rss_mb']} MB = {r['ratio_to_alone']}x SmolLM2 alone ({alone} MB)")
    if args.out:
        with open(args.out, "a") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
