"""`python -m benchmarks.run --quick` runs end to end and prints well-formed JSON lines.

Timing is not asserted: this machine is shared, so only the schema and the trace count are.
"""

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_quick_benchmark_schema_and_single_trace():
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--cases", "matmul", "embed", "finetune",
         "fine_foods"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    by_case = {(r["case"], r["impl"]): r for r in records}

    setup = by_case[("setup", "setup")]
    assert "xla_cpu_experimental_ynn_fusion_type" in setup["xla_flags"]
    assert by_case[("matmul", "jax")]["gflops"] > 0
    for case in ("embed", "finetune", "fine_foods"):
        r = by_case[(case, "jax")]
        for key in ("examples_per_s", "seconds", "gflops", "peak_gflops", "ratio_to_peak"):
            assert isinstance(r[key], (int, float)) and r[key] > 0, (case, key, r)
    trace = by_case[("trace_count", "jax")]
    assert trace["traces"] == 1 and trace["ok"] and trace["steps"] >= 2
    assert by_case[("fine_foods", "jax")]["compiles"] >= 1
