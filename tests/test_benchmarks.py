"""`python -m benchmarks.run --quick` runs end to end and prints well-formed JSON lines.

Timing is not asserted: this machine is shared, so only the schema and the trace count are.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow  # six benchmark cases end to end
def test_quick_benchmark_schema_and_trace_counts():
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--cases", "matmul", "embed", "finetune",
         "finetune_loop", "finetune_lengths", "bucketing", "fine_foods"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    by_case = {(r["case"], r["impl"]): r for r in records}

    setup = by_case[("setup", "setup")]
    assert "xla_cpu_experimental_ynn_fusion_type" in setup["xla_flags"]
    assert by_case[("matmul", "jax")]["gflops"] > 0
    for case in ("embed", "finetune", "finetune_loop", "finetune_lengths", "fine_foods"):
        r = by_case[(case, "jax")]
        for key in ("examples_per_s", "examples_per_s_median", "seconds", "median_s", "gflops", "peak_gflops",
                    "ratio_to_peak"):
            assert isinstance(r[key], (int, float)) and r[key] > 0, (case, key, r)
        assert len(r["loadavg_before"]) == 3 and len(r["loadavg_after"]) == 3
    traces = {r["for_case"]: r for r in records if r["case"] == "trace_count" and r["impl"] == "jax"}
    assert traces["finetune"]["traces"] == 1 and traces["finetune"]["ok"] and traces["finetune"]["steps"] >= 2
    # fit's form: one train_loop program runs all 8 steps of a call
    loop = traces["finetune_loop"]
    assert loop["fn"] == "train_loop" and loop["traces"] == 1 and loop["steps"] >= 16 and loop["steps"] % 8 == 0
    # Real lengths in fit's length buckets: one trace per bucket length used.
    assert traces["finetune_lengths"]["shapes"] == traces["finetune_lengths"]["traces"] >= 1
    ratio = by_case[("bucketing", "ratio")]
    assert ratio["buckets_over_padded_min"] > 0 and 0 < ratio["token_fraction"] <= 1
    assert by_case[("fine_foods", "jax")]["compiles"] >= 1


def test_finetune_loop_side_trains_as_the_step_by_step_side(monkeypatch):
    """The ``finetune_loop`` case times fit's form (K steps in one `train_loop` call): it must
    train exactly what K calls of the jitted step train, so the two timings compare like for like."""
    import jax
    import numpy as np

    from benchmarks import finetune as ft

    monkeypatch.setenv("W2SJAX_ONEDNN", "0")
    path = ft.asset_path("minilm-l6")
    batches = ft.fixed_batches(30522, 0, count=3, b=8, t=16)
    # lr 1e-2: the schedule's first steps (warm-up over 1000) then move weights by ~1e-4, far above rounding
    sides = [ft.JaxFinetune(ft.jax_module("minilm-l6", path, "float32", 1), batches, lr=1e-2, loop=loop)
             for loop in (False, True)]
    params = lambda side: np.concatenate([np.ravel(a) for a in jax.tree.leaves(side.state.params)])
    start = params(sides[0])  # a host copy, before the calls donate the state
    for side in sides:
        side()
    stepwise, looped = sides
    assert looped.traces == 1 and looped.steps == stepwise.steps == 3
    assert int(looped.state.step) == int(stepwise.state.step) == 3
    assert np.abs(params(stepwise) - params(looped)).max() < 1e-6
    assert np.abs(params(looped) - start).max() > 1e-4  # they trained: the parameters moved


def test_interleave_alternates_sides_and_reverses_odd_rounds():
    from benchmarks.interleave import interleave

    calls = []
    sides = {k: (lambda k=k: calls.append(k)) for k in "ABC"}
    times = interleave(sides, repeats=3, warmup=1)
    # One warm-up call each, then rounds ABC, CBA, ABC.
    assert "".join(calls) == "ABC" + "ABC" + "CBA" + "ABC"
    assert {k: len(v) for k, v in times.items()} == {"A": 3, "B": 3, "C": 3}


def test_process_rounds_alternate_fresh_processes_and_report_each_at_once():
    from benchmarks.interleave import process_rounds

    def command(side):
        code = f"import json, os; print('a library print'); print(json.dumps({{'side': '{side}', 'pid': os.getpid()}}))"
        return [sys.executable, "-c", code]

    seen = []
    runs = process_rounds({k: command(k) for k in "ABC"}, 2, lambda side, r, recs: seen.append((side, r, recs[0]["side"])))
    # Rounds ABC, then CBA; each process's records reported as it ends, its wall seconds last.
    assert seen == [("A", 0, "A"), ("B", 0, "B"), ("C", 0, "C"), ("C", 1, "C"), ("B", 1, "B"), ("A", 1, "A")]
    assert len({recs[0]["pid"] for procs in runs.values() for recs in procs}) == 6
    assert all(len(recs) == 2 and recs[-1]["case"] == "process" and recs[-1]["wall_s"] >= 0
               for procs in runs.values() for recs in procs)


def test_summaries_and_ratios_use_min_and_median_of_the_same_rounds():
    import numpy as np

    from benchmarks.interleave import ratio_records, summarize

    load = {"loadavg_before": [1.0, 1.0, 1.0], "loadavg_after": [2.0, 1.0, 1.0]}
    times = {"jax": [2.0, 1.0, 4.0], "jax_bf16": [1.0, 0.5, 3.0], "torch": [3.0, 2.0, 2.5],
             "torch_bf16": [0.8, 0.9, 5.0]}
    recs = {k: summarize("c", k, t, examples=10, flops_per_example=None, peak=None, load=load)
            for k, t in times.items()}
    for k, t in times.items():
        assert recs[k]["examples_per_s"] == round(10 / np.min(t), 2)
        assert recs[k]["examples_per_s_median"] == round(10 / np.median(t), 2)
        assert recs[k]["loadavg_after"] == [2.0, 1.0, 1.0]
    ratios = {(r["jax"], r["torch"], r.get("label")): r for r in ratio_records("c", recs)}
    same = ratios[("jax_bf16", "torch_bf16", None)]
    assert same["jax_over_torch_min"] == round((10 / 0.5) / (10 / 0.8), 3)
    assert same["jax_over_torch_median"] == round((10 / 1.0) / (10 / 0.9), 3)
    best = [r for k, r in ratios.items() if k[2] == "best"]
    assert len(best) == 1 and (best[0]["jax"], best[0]["torch"]) == ("jax_bf16", "torch_bf16")


def test_flop_count_of_a_bert_shape_matches_the_formula():
    from benchmarks.finetune import Shape

    L, d, f, t = 6, 384, 1536, 128
    shape = Shape(L, d, f, d, 2, 30522)
    assert shape.forward_flops(t) == 2 * L * (4 * d * d + 2 * d * f) * t + 4 * L * t * t * d
    assert shape.train_flops(t) == 3 * shape.forward_flops(t)


def test_sweep_baseline_loss_and_schedule_match_the_library():
    """The PyTorch loop of `benchmarks.sweep_vs_torch` trains with the library's logconf and schedule."""
    import numpy as np

    torch = pytest.importorskip("torch")
    import jax.numpy as jnp

    from benchmarks.sweep_vs_torch import torch_logconf, warmup_cosine
    from w2sjax import losses, train

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(32, 2)).astype(np.float32)
    weak = rng.dirichlet([1.0, 1.0], size=32).astype(np.float32)
    for frac in (0.0, 0.1, 0.7):
        ours = float(torch_logconf(torch.from_numpy(logits), torch.from_numpy(weak), frac))
        ref = float(losses.logconf(jnp.asarray(logits), jnp.asarray(weak), step_frac=frac))
        assert abs(ours - ref) < 1e-5, (frac, ours, ref)
    settings = train.step_settings(train.TrainConfig(lr=1.0), 40)
    for step in range(41):
        assert abs(warmup_cosine(step, 40) - float(train.learning_rate(step, settings))) < 1e-6, step


@pytest.mark.slow
def test_quick_sweep_against_torch_runs_the_same_stages_and_steps():
    pytest.importorskip("torch")
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--cases", "sweep_vs_torch", "torch",
         "--precision", "bfloat16"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    sides = {r["impl"]: r for r in records if r["case"] == "sweep_vs_torch" and r["impl"] != "ratio"}
    assert set(sides) == {"jax_bf16", "torch", "torch_bf16"}
    jax_steps = sorted(sides["jax_bf16"]["stage_steps"].values())
    assert len(jax_steps) == 4 and jax_steps == sorted(sides["torch"]["stage_steps"].values())
    assert set(sides["torch"]["stage_seconds"]) == {"weak", "ceiling", "w2s_xent", "w2s_logconf"}
    ratios = [r for r in records if r["case"] == "sweep_vs_torch" and r["impl"] == "ratio"]
    assert len(ratios) == 2 and all(r["jax_wall_over_torch_min"] > 0 for r in ratios)


@pytest.mark.slow
def test_profile_step_on_tiny_mpnet_counts_its_flops_and_traces(tmp_path):
    """`benchmarks.profile_step --model mpnet-base` at one layer, 4 x 16: records, FLOPs, trace shares."""
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.profile_step", "--model", "mpnet-base", "--layers", "1", "--batch", "4",
         "--seq", "16", "--variants", "step_bf16", "step_sdpa", "--repeats", "1", "--trace", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    runs = {r["variant"]: r for r in records if r["case"] == "profile" and r["impl"] == "jax"}
    assert set(runs) == {"step_bf16", "step_sdpa"} and all(r["model"] == "mpnet-base" for r in runs.values())
    # MPNet-base's widths (768, FFN 3072), one layer, 16 tokens: 3x the forward's matmul + score FLOPs.
    L, d, f, t = 1, 768, 3072, 16
    step_flops = 3 * (2 * L * (4 * d * d + 2 * d * f) * t + 4 * L * t * t * d)
    r = runs["step_bf16"]
    assert r["gflops"] * 1e9 * r["seconds"] / 4 == pytest.approx(step_flops, rel=0.05)
    # Attention through jax.nn.dot_product_attention (with MPNet's relative bias) trains the same model.
    assert runs["step_sdpa"]["loss_diff_vs_step_bf16"] < 1e-2
    trace = next(r for r in records if r["impl"] == "trace")
    assert trace["variant"] == "step_bf16" and sum(trace["shares"].values()) == pytest.approx(1.0, abs=0.01)


def test_accelerator_script_asks_benchmarks_run_for_what_it_offers():
    """benchmarks/accelerator.sh is run by hand on a GPU machine: its cases and models must be
    ones benchmarks.run accepts, and the script must be valid bash."""
    import shlex
    import subprocess

    from benchmarks import run

    script = (ROOT / "benchmarks" / "accelerator.sh").read_text()
    assert subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "accelerator.sh")]).returncode == 0
    line = " ".join(script.rsplit("python -m benchmarks.run", 1)[1].split("|", 1)[0].split("\\\n"))
    args = [a for a in shlex.split(line) if a != "$@"]
    parsed = run._parse(args)
    assert set(parsed.models) == {"minilm-l6", "mpnet-base", "smollm2-135m"} and "finetune" in parsed.cases


def test_benchmark_records_are_dated_and_parse():
    """Raw records live in benchmarks/results/DATE_WHAT.jsonl, one JSON object a line."""
    import json
    import pathlib
    import re

    bench = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"
    assert not list(bench.glob("*.jsonl")), "records belong in benchmarks/results/"
    records = sorted((bench / "results").glob("*"))
    assert records
    for path in records:
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}_[a-z0-9_]+\.jsonl", path.name), path.name
        for line in path.read_text().splitlines():
            assert isinstance(json.loads(line), dict), path.name


def test_fresh_cold_sweep_alternates_processes_and_ratios_use_min_and_median():
    """benchmarks/sweep_cold.py spawns one process per call, A B then B A; the ratios are the
    minimum and the median of each side's calls (here computed by hand)."""
    from benchmarks import sweep_cold

    args = sweep_cold.parse(["--rounds", "3"])
    assert args.sides == ["jax_bf16", "torch_bf16"] and args.child is None
    assert sweep_cold.order(args.sides, 3) == ["jax_bf16", "torch_bf16", "torch_bf16", "jax_bf16", "jax_bf16",
                                                "torch_bf16"]
    with pytest.raises(SystemExit):
        sweep_cold.parse(["--rounds", "0"])
    walls = {"jax_bf16": [30.0, 24.0, 27.0], "torch_bf16": [20.0, 22.0, 25.0]}
    calls = [{"side": s, "wall_s": w, "sweep_s": w - 2} for s, ws in walls.items() for w in ws]
    rec = sweep_cold.summary(calls, "jax_bf16", "torch_bf16")
    assert rec["jax_over_torch_wall_s_min"] == round(24 / 20, 3)
    assert rec["jax_over_torch_wall_s_median"] == round(27 / 22, 3)
    assert rec["jax_over_torch_sweep_s_median"] == round(25 / 20, 3)
    assert rec["wall_s_min"] == {"jax_bf16": 24.0, "torch_bf16": 20.0}


def test_fresh_cold_sweep_warm_rounds_and_other_trees(tmp_path):
    """``--warm`` adds each process's later sweeps to the ratios (min and median, by hand here);
    ``SIDE@LABEL`` needs a jax side and a ``--tree`` of that label, and bad ones exit."""
    from benchmarks import sweep_cold

    args = sweep_cold.parse(["--sides", "jax", "jax@main", "torch", "--tree", f"main={tmp_path}", "--warm", "2"])
    assert args.trees == {"main": tmp_path.resolve()} and args.warm == 2
    assert sweep_cold.order(args.sides, 2) == ["jax", "jax@main", "torch", "torch", "jax@main", "jax"]
    for bad in (["--sides", "jax@other", "--tree", f"main={tmp_path}"], ["--sides", "torch@main", "--tree", f"main={tmp_path}"],
                ["--tree", "main"], ["--tree", f"main={tmp_path / 'missing'}"], ["--warm", "-1"]):
        with pytest.raises(SystemExit):
            sweep_cold.parse(bad)
    calls = [{"side": "jax@main", "wall_s": 50.0, "sweep_s": 40.0, "warm_s": [30.0, 33.0]},
             {"side": "jax@main", "wall_s": 52.0, "sweep_s": 42.0, "warm_s": [31.0, 29.0]},
             {"side": "torch", "wall_s": 45.0, "sweep_s": 41.0, "warm_s": [40.0, 38.0]},
             {"side": "torch", "wall_s": 47.0, "sweep_s": 43.0, "warm_s": [39.0, 44.0]}]
    rec = sweep_cold.summary(calls, "jax@main", "torch")
    assert rec["jax_over_torch_wall_s_min"] == round(50 / 45, 3)
    assert rec["warm_s_min"] == {"jax@main": 29.0, "torch": 38.0}
    assert rec["jax_over_torch_warm_s_min"] == round(29 / 38, 3)
    assert rec["jax_over_torch_warm_s_median"] == round(30.5 / 39.5, 3)
    assert "warm_s_min" not in sweep_cold.summary([{**c, "warm_s": []} for c in calls], "jax@main", "torch")


def test_compile_blocks_variants_compute_what_the_blocks_loop_does():
    """The scanned and called variants `benchmarks.compile_blocks` times against the unrolled blocks give
    the same forward and gradients (float32 rounding apart), on a tiny random BERT."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from benchmarks.compile_blocks import call_like_blocks, scan_like_blocks
    from w2sjax.models import bert

    cfg = bert.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                          intermediate_size=32, max_position_embeddings=16)
    graphdef, state = nnx.split(bert.BertEncoder(cfg, rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(1, 50, (2, 7)), jnp.int32)
    mask = jnp.ones((2, 7), jnp.int32).at[1, 5:].set(0)
    proj = jnp.asarray(rng.standard_normal((2, 7, 16)), jnp.float32)

    def objective(state, run):
        enc = nnx.merge(graphdef, state)
        x = enc.embed_tokens(ids, mask)
        keep = mask[:, None, None, :].astype(bool)
        if run is None:
            for block in enc.layers:
                x = block(x, keep)
        else:
            x = run(list(enc.layers), x, keep)
        return jnp.sum(x * proj)

    ref_value, ref_grads = jax.jit(jax.value_and_grad(objective), static_argnums=1)(state, None)
    for run in (scan_like_blocks, call_like_blocks):
        value, grads = jax.jit(jax.value_and_grad(objective), static_argnums=1)(state, run)
        np.testing.assert_allclose(value, ref_value, rtol=1e-5)
        for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
            np.testing.assert_allclose(got, want, atol=1e-5 * float(jnp.abs(want).max()) + 1e-6)
