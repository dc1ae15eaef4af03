"""The ``top:K`` case: one W2S sweep of a finetuned student, three ways, timed in interleaved rounds.

    python -m benchmarks.topk [--model minilm-l6] [--k 2] [--repeats 2] [--n-train 200] [--quick]
    python -m benchmarks.run --cases topk

Each side runs the same whole experiment (`w2sjax.experiment.run` into a fresh directory): a
TF-IDF supervisor, the student finetuned on fine_foods, 2 losses x 3 seeds, so 3 ceilings and 6
w2s students, each saving its final checkpoint as every run does:

* ``full``: ``train.trainable=all``, every weight trains;
* ``top_recompute``: ``top:K`` with ``train.cache_bottom=false``: the frozen bottom runs forward at
  every step;
* ``top_cached``: ``top:K`` with a cold bottom cache (a fresh ``W2SJAX_BOTTOM_CACHE`` per call),
  so each sweep pays for running its bottom once per example;
* ``top_cached_warm``: the same with the cache left from earlier sweeps (a second sweep over other
  losses or seeds of the same data).

Sides take turns (`benchmarks.interleave`) after one untimed one-seed warm-up sweep each (which
compiles every program and warms the feature cache of the supervisor, so the rounds time
steady-state sweeps). Prints one JSON line per side and one with the ratios of the others over
``top_cached``, by minimum and median.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import shutil
import sys
import tempfile

from benchmarks.interleave import loadavg, run_case


def sweep_config(model: str, k: int, *, n_train: int, quick: bool, seeds=(0, 1, 2)):
    from w2sjax.config import Config, DataConfig, StudentTrainConfig, TrainConfig

    return Config(
        name="topk-bench",
        data=DataConfig(task="fine_foods", n_train=n_train, n_val=64, n_test=128 if not quick else 32, max_len=64),
        weak_models=("tfidf",), strong_models=(model,), strong_mode="finetune",
        losses=("xent", "logconf"), seeds=seeds if not quick else (0,),
        weak_train=TrainConfig(epochs=5, batch_size=64),
        train=StudentTrainConfig(epochs=2 if not quick else 1, batch_size=32, lr=5e-4, trainable=f"top:{k}",
                                 log_every=8),
    )


def sides(config, k: int, scratch: str, warm_cache: str) -> dict:
    """The sweeps to time, each running in a fresh output directory (removed after the call);
    ``top_cached_warm`` keeps its bottoms in ``warm_cache``."""
    from w2sjax import experiment

    def train_as(**fields):
        return dataclasses.replace(config, train=dataclasses.replace(config.train, **fields))

    def sweep(cfg, bottom_cache=None):
        def run():
            out = tempfile.mkdtemp(prefix="run-", dir=scratch)
            cache = bottom_cache or tempfile.mkdtemp(prefix="bottoms-cold-", dir=scratch)
            old = os.environ.get("W2SJAX_BOTTOM_CACHE")
            os.environ["W2SJAX_BOTTOM_CACHE"] = cache
            try:
                with contextlib.redirect_stdout(io.StringIO()):  # the run's plan and data lines
                    experiment.run(cfg, out, progress=False)
            finally:
                if old is None:
                    del os.environ["W2SJAX_BOTTOM_CACHE"]
                else:
                    os.environ["W2SJAX_BOTTOM_CACHE"] = old
                shutil.rmtree(out, ignore_errors=True)
                if bottom_cache is None:
                    shutil.rmtree(cache, ignore_errors=True)

        return run

    return {
        "full": sweep(train_as(trainable="all")),
        "top_recompute": sweep(train_as(cache_bottom=False)),
        "top_cached": sweep(config),
        "top_cached_warm": sweep(config, warm_cache),
    }


def topk_records(model: str = "minilm-l6", k: int = 2, repeats: int = 2, n_train: int = 200,
                 quick: bool = False) -> list[dict]:
    """Run the case; one record per side and one of ratios."""
    config = sweep_config(model, k, n_train=n_train, quick=quick)
    warmup = sweep_config(model, k, n_train=n_train, quick=quick, seeds=(0,))
    stages = len(config.seeds) * (1 + len(config.losses))  # student stages: ceilings and w2s
    extra = {"model": model, "k": k, "n_train": n_train, "losses": len(config.losses), "seeds": len(config.seeds),
             "student_stages": stages, "epochs": config.train.epochs}
    with tempfile.TemporaryDirectory(prefix="w2sjax-topk-") as scratch:
        # a "sweep" is the example here: examples_per_s is sweeps per second
        warm_cache = tempfile.mkdtemp(prefix="bottoms-warm-", dir=scratch)
        timed = sides(config, k, scratch, warm_cache)
        for name, warm_up in sides(warmup, k, scratch, warm_cache).items():
            # the warm side's warm-up is the whole sweep: it leaves every example's bottom cached
            (timed[name] if name == "top_cached_warm" else warm_up)()
        recs = [r for r in run_case("topk", timed, repeats, examples=1, warmup=0, extra=extra)
                if r["impl"] != "ratio"]
    by = {r["impl"]: r for r in recs}
    for r in recs:
        r["sweep_s"], r["sweep_s_median"] = r["seconds"], r["median_s"]
    base = by["top_cached"]
    ratio = {"case": "topk", "impl": "ratio", **extra, "loadavg_before": base["loadavg_before"],
             "loadavg_after": base["loadavg_after"]}
    for side in ("full", "top_recompute", "top_cached_warm"):
        ratio[f"{side}_over_top_cached_min"] = round(by[side]["seconds"] / base["seconds"], 3)
        ratio[f"{side}_over_top_cached_median"] = round(by[side]["median_s"] / base["median_s"], 3)
    return recs + [ratio]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.topk")
    p.add_argument("--model", default="minilm-l6", choices=("minilm-l6", "mpnet-base"))
    p.add_argument("--k", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--n-train", type=int, default=200)
    p.add_argument("--quick", action="store_true", help="one seed, tiny splits: for tests, not for numbers")
    args = p.parse_args(argv)
    from w2sjax import cli

    cli._default_xla_flags()  # the flags `w2sjax run` uses
    print(json.dumps({"case": "setup", "impl": "setup", "xla_flags": os.environ.get("XLA_FLAGS", ""),
                      "loadavg": loadavg(), "cpu_count": os.cpu_count()}), flush=True)
    for rec in topk_records(args.model, args.k, args.repeats, args.n_train, args.quick):
        print(json.dumps(rec), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
