"""Where a warm sweep's training time goes: every train call of every `train.fit`, with its padded
length, step count and seconds, and the fit's seconds outside those calls.

    python -m benchmarks.fit_timeline --out benchmarks/results/DATE_fit_timeline.jsonl [--warm 1]

Runs the sweep of `benchmarks.sweep_vs_torch` (w2sjax float32, the same overrides) in this process:
once cold (programs compile), then ``--warm`` times with its programs compiled, as
`benchmarks.sweep_cold`'s child does. Library functions are wrapped to time them; the train call
waits for its result (``block_until_ready``), so its seconds are the program's own and the
host's work between calls shows as the fit's remainder. Observation only: the wrappers change no
argument or result. Each record is one fit (``case: fit``) or one sweep (``case: sweep``); the
records of the warm sweeps hold the numbers to read, the cold ones show the waits for compiles.
Alongside, the padded lengths the PyTorch side's batches take (each padded to its longest row)
for the same stage, from the same tokenizer, so both sides' token counts can be compared.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import os
import pathlib
import sys
import time

import numpy as np


class _Timed:
    """``fn`` with each call's seconds added to ``into[name]`` (and ``calls`` told of it)."""

    def __init__(self, fn, name: str, into: dict, calls: list | None = None, block: bool = False):
        self.fn, self.name, self.into, self.calls, self.block = fn, name, into, calls, block

    def __call__(self, *args, **kwargs):
        import jax

        start = time.perf_counter()
        out = self.fn(*args, **kwargs)
        if self.block:
            jax.block_until_ready(out)
        seconds = time.perf_counter() - start
        self.into[self.name] += seconds
        if self.calls is not None:
            self.calls.append((self.name, args, seconds))
        return out

    def __getattr__(self, name):  # jit's .lower and the rest
        return getattr(self.fn, name)

    def __get__(self, obj, owner=None):  # a method: bound to its instance
        return self if obj is None else functools.partial(self.__call__, obj)


@contextlib.contextmanager
def instrumented(records: list, label: str):
    """Time `train.fit` and what it calls, one record per fit appended to ``records``."""
    from w2sjax import train
    from w2sjax.data import feed
    from w2sjax.runner import pending, utilisation

    spent = collections.defaultdict(float)
    calls: list = []
    saved = {}

    def patch(owner, name, **kw):
        saved[(owner, name)] = getattr(owner, name)
        setattr(owner, name, _Timed(getattr(owner, name), name, spent, calls, **kw))

    patch(train, "train_loop", block=True)
    patch(feed.HostFeed, "_stack")
    patch(utilisation.Meter, "cost")
    patch(pending, "wait")
    patch(train, "evaluate")
    patch(train, "_log_step")
    patch(train, "check_divergence")
    patch(train, "_start_or_resume")
    patch(train, "init_state")
    patch(train, "place")
    original_fit = train.fit

    def fit(*args, **kwargs):
        spent.clear()
        calls.clear()
        start = time.perf_counter()
        out = original_fit(*args, **kwargs)
        total = time.perf_counter() - start
        steps = []
        for name, a, seconds in calls:
            if name == "train_loop":
                inputs = a[1]["inputs"]
                shape = (inputs["input_ids"] if isinstance(inputs, dict) else inputs).shape
                steps.append({"length": int(shape[2]) if len(shape) > 2 else None, "count": int(a[2]),
                              "s": round(seconds, 3)})
        inside = {k: round(v, 3) for k, v in spent.items()}
        records.append({"case": "fit", "impl": label, "stage": kwargs.get("stage"), "fit_s": round(total, 3),
                        "seconds": inside, "outside_calls_s": round(total - sum(
                            v for k, v in spent.items() if k in ("train_loop", "_stack", "cost", "wait", "evaluate",
                                                                 "_log_step", "check_divergence", "_start_or_resume",
                                                                 "init_state")), 3),
                        "calls": steps})
        return out

    train.fit = fit
    try:
        yield
    finally:
        train.fit = original_fit
        for (owner, name), value in saved.items():
            setattr(owner, name, value)


def torch_lengths(sz: dict) -> dict:
    """The PyTorch side's padded length of every step of a student stage (each batch padded to its
    longest row), and the student half's token lengths, from MiniLM's tokenizer."""
    import tokenizers

    from benchmarks import finetune as ft
    from w2sjax import data

    task = data.load_task(sz["task"])
    s = data.make_splits(task, seed=0, n_train=sz["n_train"], n_val=sz["n_val"], n_test=sz["n_test"])
    tok = tokenizers.Tokenizer.from_file(str(pathlib.Path(ft.asset_path(sz["student"])) / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(sz["max_len"])
    lengths = np.array([len(e.ids) for e in tok.encode_batch(list(s.student_half["text"]))])
    n, b = len(lengths), sz["batch"]
    per_epoch = max(1, n // b)
    steps = []
    for step in range(int(np.ceil(sz["epochs"] * per_epoch))):
        epoch, k = divmod(step, per_epoch)
        rows = np.random.default_rng([0, epoch]).permutation(n)[k * b:(k + 1) * b]
        steps.append(int(lengths[rows].max()))
    return {"case": "torch_lengths", "impl": "torch", "steps": steps, "mean": round(float(np.mean(steps)), 2),
            "student_half_median": float(np.median(lengths)), "student_half_max": int(lengths.max()),
            "hist_0_16_24_32_48_64_96_128": np.histogram(lengths, [0, 16, 24, 32, 48, 64, 96, 128])[0].tolist()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.fit_timeline", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=pathlib.Path)
    p.add_argument("--warm", type=int, default=1)
    p.add_argument("--devices", type=int, default=os.cpu_count() or 1)
    p.add_argument("--ynn", choices=("dot", "off", "all"), default="dot")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="further overrides of the sweep's config")
    args = p.parse_args(argv)
    from benchmarks import run as bench
    from benchmarks import sweep_vs_torch as svt
    from benchmarks.sweep_cold import emit, git_commit
    from w2sjax import config as config_lib

    flags = bench._set_flags(args)
    import tempfile

    from w2sjax.runner import xla_flags

    xla_flags.enable_compilation_cache(pathlib.Path(tempfile.mkdtemp(prefix="fit_timeline_xla_")))
    emit({"case": "setup", "impl": "fit_timeline", "commit": git_commit(), "utc": time.strftime("%H:%M:%S", time.gmtime()),
          "date": time.strftime("%Y-%m-%d", time.gmtime()), "xla_flags": flags, "overrides": args.overrides,
          "nice": os.nice(0), "loadavg": [round(x, 2) for x in os.getloadavg()]}, args.out)
    emit(torch_lengths(svt.FULL), args.out)
    cfg = config_lib.apply_overrides(svt.sweep_config(svt.FULL, "float32"), args.overrides)
    side = svt.JaxSweep(cfg)
    for i in range(1 + args.warm):
        label = "cold" if i == 0 else f"warm{i}"
        records: list = []
        start = time.perf_counter()
        with instrumented(records, label):
            side()
        for rec in records:
            emit(rec, args.out)
        emit({"case": "sweep", "impl": label, "sweep_s": round(time.perf_counter() - start, 3),
              "stage_seconds": side.stage_seconds, "breakdown": side.breakdown, "accuracies": side.accuracies,
              "loadavg": [round(x, 2) for x in os.getloadavg()]}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
