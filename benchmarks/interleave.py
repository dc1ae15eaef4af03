"""Interleaved timing: every side of a comparison takes turns, so load from other jobs is shared.

On a shared machine a burst of load from another process lasts seconds to minutes. Timing all
JAX repeats first and then all PyTorch repeats lets such a burst fall on one side only (a rerun
under load once turned a 1.00x ratio into 0.49x). Here the sides of one case run in rounds,
A B C D, then D C B A, ..., so a burst of any length hits every side about equally, and the
ratios come from the same rounds. Each side reports its minimum (the best estimate of its
uncontended speed: other jobs only ever add time) and its median (what a user would see).
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Callable


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def interleave(sides: dict[str, Callable[[], None]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of each call of each side: ``warmup`` untimed calls each, then ``repeats`` timed rounds.

    Round ``r`` runs the sides in order when ``r`` is even and in reverse when odd, so neither
    side always follows the other (caches, turbo, thermal state).
    """
    for fn in sides.values():
        for _ in range(warmup):
            fn()
    names = list(sides)
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(repeats):
        for k in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            sides[k]()
            times[k].append(time.perf_counter() - t0)
    return times


def summarize(case: str, impl: str, times: list[float], *, examples: float, flops_per_example: float | None,
              peak: float | None, load: dict, **extra) -> dict:
    """One side's record: examples/s and GFLOP/s from both its fastest and its median call."""
    best, med = min(times), statistics.median(times)
    gflops = examples / best * flops_per_example / 1e9 if flops_per_example else None
    out = {
        "case": case, "impl": impl,
        "examples_per_s": round(examples / best, 2), "examples_per_s_median": round(examples / med, 2),
        "seconds": round(best, 4), "median_s": round(med, 4), "times_s": [round(t, 4) for t in times],
        "gflops": None if gflops is None else round(gflops, 1),
        "peak_gflops": None if peak is None else round(peak, 1),
        "ratio_to_peak": None if (gflops is None or not peak) else round(gflops / peak, 3),
        **load,
    }
    out.update(extra)
    return out


def ratio_records(case: str, recs: dict[str, dict], **extra) -> list[dict]:
    """Speed ratios between the JAX and PyTorch sides of one case, by minimum and by median.

    Same precision against same precision, JAX bfloat16 against plain float32 PyTorch, and the
    fastest JAX side against the fastest PyTorch side (what each library does at its best).
    """
    pairs = [("jax", "torch"), ("jax_bf16", "torch_bf16"), ("jax_bf16", "torch")]
    jax_sides = [k for k in recs if k.startswith("jax")]
    torch_sides = [k for k in recs if k.startswith("torch")]
    out = []

    def ratio(j: str, t: str, label: str | None = None) -> dict:
        rj, rt = recs[j], recs[t]
        return {"case": case, "impl": "ratio", "jax": j, "torch": t, **({"label": label} if label else {}),
                "jax_over_torch_min": round(rj["examples_per_s"] / rt["examples_per_s"], 3),
                "jax_over_torch_median": round(rj["examples_per_s_median"] / rt["examples_per_s_median"], 3),
                **extra}

    for j, t in pairs:
        if j in recs and t in recs:
            out.append(ratio(j, t))
    if jax_sides and torch_sides:
        bj = max(jax_sides, key=lambda k: recs[k]["examples_per_s"])
        bt = max(torch_sides, key=lambda k: recs[k]["examples_per_s"])
        out.append(ratio(bj, bt, "best"))
    return out


def run_case(case: str, sides: dict[str, Callable[[], None]], repeats: int, *, examples: float,
             flops_per_example: float | None = None, peaks: dict | None = None, warmup: int = 1,
             extra: dict | None = None) -> list[dict]:
    """Interleave ``sides`` and return one record per side plus the ratio records of the case.

    ``peaks`` maps ``"float32"``/``"bfloat16"`` to the same run's JAX matmul GFLOP/s; a side
    whose name ends in ``_bf16`` is compared to the bfloat16 one.
    """
    before = loadavg()
    times = interleave(sides, repeats, warmup)
    load = {"loadavg_before": before, "loadavg_after": loadavg(), "repeats": repeats}
    peaks = peaks or {}
    recs = {impl: summarize(case, impl, t, examples=examples, flops_per_example=flops_per_example,
                            peak=peaks.get("bfloat16" if impl.endswith("_bf16") else "float32"),
                            load=load, **(extra or {}))
            for impl, t in times.items()}
    return list(recs.values()) + ratio_records(case, recs, **{k: v for k, v in (extra or {}).items()
                                                                  if k == "model"})


def process_rounds(commands: dict[str, list[str]], rounds: int, report: Callable[[str, int, list[dict]], None] | None = None
                   ) -> dict[str, list[list[dict]]]:
    """Each side's command in a fresh process, in rounds A B C, then C B A, ...: the JSON lines that
    each process printed, per side and process, in the order they ran (each process's list ends
    with its wall seconds). ``report(side, round, records)`` sees each process's records as soon
    as it ends, so a run cut short keeps what it measured.

    For sides that cannot share a process (JAX and PyTorch training states of one model together
    passed the memory of the machine): the rounds still spread bursts of load over every side, but
    each process also pays its own start-up, so only the timed calls inside each are compared.
    """
    import json
    import subprocess

    names = list(commands)
    out: dict[str, list[list[dict]]] = {k: [] for k in names}
    for r in range(rounds):
        for k in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            run = subprocess.run(commands[k], stdout=subprocess.PIPE, text=True)
            wall = time.perf_counter() - t0
            if run.returncode:
                raise RuntimeError(f"side {k} (round {r}) exited with {run.returncode}: {' '.join(commands[k])}")
            recs = []
            for line in run.stdout.splitlines():
                try:
                    recs.append(json.loads(line))
                except ValueError:
                    continue  # not a record (a library's print)
            recs.append({"case": "process", "impl": k, "round": r, "wall_s": round(wall, 1), "loadavg_after": loadavg()})
            out[k].append(recs)
            if report is not None:
                report(k, r, recs)
    return out
