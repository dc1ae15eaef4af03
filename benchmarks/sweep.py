"""The linear-probe sweep case: one whole experiment on cached features, and where its time goes.

    python -m benchmarks.sweep [--config experiments/NAME.py] [--set key=value ...]

Runs ``w2sjax.experiment.run`` (the default experiment unless told otherwise) into a fresh
temporary directory and prints one JSON line: wall seconds, stages, seconds per stage kind, XLA
compiles (total, their seconds, and per jitted function), and how many examples a backbone had
to featurize (0 when the feature cache is warm: each backbone sees each example at most once).
Like ``benchmarks.run`` it is an application, so it sets the ``w2sjax`` command's XLA flags
before JAX starts and prints them. ``run_sweep`` returns the same record for other drivers.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import re
import sys
import tempfile
import time


def _set_flags() -> str:
    from w2sjax import cli

    cli._default_xla_flags()  # the same flags `w2sjax run` uses, unless the user set their own
    return os.environ.get("XLA_FLAGS", "")


class _Counter(logging.Handler):
    """Counts XLA compiles per jitted function and featurized examples from JAX/w2sjax log lines."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.compiles: collections.Counter = collections.Counter()
        self.featurized = 0

    def emit(self, record):
        msg = record.getMessage()
        m = re.match(r"Finished XLA compilation of (\S+)", msg)
        if m:
            self.compiles[m.group(1)] += 1
        m = re.search(r"computing (\d+) of (\d+) examples", msg)
        if m:
            self.featurized += int(m.group(1))


def run_sweep(config=None, overrides=(), *, out_dir=None) -> dict:
    """Run one experiment and return the benchmark record (see the module docstring)."""
    import jax
    from jax import monitoring

    from w2sjax import config as config_lib
    from w2sjax import experiment

    cfg = config if config is not None else config_lib.Config()
    cfg = config_lib.apply_overrides(cfg, list(overrides))
    secs = collections.Counter()
    counts = collections.Counter()

    def listen(event, duration, **_):
        if event == "/jax/core/compile/backend_compile_duration":
            counts["compiles"] += 1
            secs["compile"] += duration

    monitoring.register_event_duration_secs_listener(listen)
    counter = _Counter()
    loggers = [logging.getLogger("jax"), logging.getLogger("w2sjax.models.features")]
    saved = [(lg, lg.level, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.addHandler(counter)
    logging.getLogger("w2sjax.models.features").setLevel(logging.INFO)
    logging.getLogger("w2sjax.models.features").propagate = False
    log_compiles = jax.config.jax_log_compiles
    jax.config.update("jax_log_compiles", True)
    logging.getLogger("jax").propagate = False  # counted, not printed
    try:
        with tempfile.TemporaryDirectory() as tmp:
            load_before = os.getloadavg()
            t0 = time.perf_counter()
            results = experiment.run(cfg, out_dir or tmp, progress=False)
            wall = time.perf_counter() - t0
    finally:
        jax.config.update("jax_log_compiles", log_compiles)
        for lg, level, propagate in saved:
            lg.removeHandler(counter)
            lg.setLevel(level)
            lg.propagate = propagate
        monitoring.unregister_event_duration_listener(listen)
    per_kind = collections.defaultdict(list)
    for row in results["runs"]:
        for kind, s in row["stage_seconds"].items():
            per_kind[kind].append(s)
    train_compiles = counter.compiles.get("jit(loop)", 0) + counter.compiles.get("jit(train_step)", 0)
    return {
        "case": "sweep", "impl": "jax",
        "wall_s": round(wall, 2),
        "stages": _count_stages(cfg),
        "runs": len(results["runs"]),
        "stage_seconds_mean": {k: round(sum(v) / len(v), 3) for k, v in per_kind.items()},
        "compiles": counts["compiles"],
        "compile_s": round(secs["compile"], 2),
        "train_program_compiles": train_compiles,
        "compiles_by_function": dict(counter.compiles.most_common(12)),
        "examples_featurized": counter.featurized,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "devices": jax.device_count(),
    }


def _count_stages(cfg) -> int:
    # weak per (seed, weak model), ceiling per (seed, strong model), w2s per (seed, weak, strong, loss)
    n_seeds = len(cfg.seeds)
    per_seed = len(cfg.weak_models) + len(cfg.strong_models) + (
        len(cfg.weak_models) * len(cfg.strong_models) * len(cfg.losses))
    return n_seeds * per_seed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.sweep")
    p.add_argument("--config", help="experiments/NAME.py; default: the embedded default experiment")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    flags = _set_flags()
    from w2sjax import config as config_lib

    cfg = config_lib.load_config_file(args.config) if args.config else None
    record = run_sweep(cfg, args.overrides)
    record["xla_flags"] = flags
    print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
