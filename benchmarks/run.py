"""CPU throughput benchmarks of w2sjax against PyTorch + transformers, with interleaved repeats.

    python -m benchmarks.run [--cases matmul embed finetune finetune_loop finetune_lengths fine_foods torch sweep topk
                                      sweep_vs_torch]
                             [--models minilm-l6 mpnet-base smollm2-135m] [--repeats N] [--quick]
                             [--precision float32 bfloat16] [--torch-precision float32 bfloat16]
                             [--matmul-n N] [--ynn dot|off|all] [--layers N] [--loop-steps K] [--grad-norm-ab]

Every case runs its sides in interleaved rounds (`benchmarks.interleave`): JAX float32 (``jax``),
JAX bfloat16 matmuls with float32 sums (``jax_bf16``), PyTorch float32 (``torch``) and PyTorch
under CPU bf16 autocast (``torch_bf16``), A B C D then D C B A, after one untimed warm-up call
each. ``finetune`` times one jitted step per call; ``finetune_loop`` times K steps per call of
`train.train_loop`, the form `fit` runs. Each side reports the minimum and the median of its timed
calls, every record carries the load average before and after its case, and the JAX/PyTorch ratios
(by minimum and by median) come from those same rounds. The PyTorch sides need the ``bench`` extra
(``pip install -e ".[bench]"``) and the ``torch`` case; without them only JAX sides run.

Prints one JSON object per line. XLA flags must be set before JAX initialises, so this
script (an application, like the ``w2sjax`` command) sets them first and prints them.
FLOPs per example use the dense-transformer count (`benchmarks.finetune.Shape`), train = 3 x
forward; for real-length batches only the real tokens count.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import os
import sys
import time

from benchmarks import finetune as ft
from benchmarks.interleave import loadavg, run_case

ALL_CASES = ("matmul", "embed", "finetune", "finetune_loop", "finetune_lengths", "bucketing", "fine_foods", "torch",
             "sweep", "topk", "sweep_vs_torch")
DEFAULT_CASES = ("matmul", "embed", "finetune", "finetune_lengths", "fine_foods", "torch")


def _parse(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.run")
    p.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES), choices=ALL_CASES)
    p.add_argument("--models", nargs="+", default=["minilm-l6"], choices=ft.MODELS,
                   help="backbones of the finetune cases")
    p.add_argument("--quick", action="store_true", help="tiny sizes (seconds): for tests, not for numbers")
    p.add_argument("--devices", type=int, default=os.cpu_count() or 1,
                   help="host devices (--xla_force_host_platform_device_count); PyTorch threads")
    p.add_argument("--ynn", choices=("dot", "off", "all"), default="dot",
                   help="YNNPACK for individual dots only (default), not at all, or XLA's default fusions")
    p.add_argument("--precision", nargs="+", default=["float32", "bfloat16"], choices=("float32", "bfloat16"))
    p.add_argument("--torch-precision", nargs="+", choices=("float32", "bfloat16"),
                   help="PyTorch's sides (default: --precision's): on CPUs without bf16 matrix instructions "
                        "PyTorch's bf16 autocast GEMMs fall back to a slow path, and only float32 can be timed")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds per case")
    p.add_argument("--matmul-n", type=int, default=None, help="the matmul case's n x n size (default 4096)")
    p.add_argument("--embed-block-tokens", type=int, nargs="+", default=None,
                   help="the embed case: one more JAX side per size, with row blocks of about this many tokens "
                        "(`embed.row_blocks`; the library's `embed.BLOCK_TOKENS` is the plain side)")
    p.add_argument("--length-task", default="fine_foods", choices=("fine_foods", "vader_tweets", "vader_movies"),
                   help="finetune_lengths and bucketing: the task whose real texts are batched")
    p.add_argument("--layers", type=int, default=None,
                   help="finetune cases: the first N blocks of each model on both sides (a full SmolLM2 beside "
                        "PyTorch's passes 13 GB)")
    p.add_argument("--loop-steps", type=int, default=8,
                   help="finetune_loop: steps per train_loop call (fit runs up to 16 with its default log_every)")
    p.add_argument("--grad-norm-ab", action="store_true",
                   help="finetune_loop: one more JAX side per precision, {impl}_norm_each_step, whose loop computes "
                        "the gradient norm on every step (as before 2026-12-08) instead of on its last only")
    p.add_argument("--length-batches", type=int, default=4,
                   help="finetune_lengths and bucketing: batches of real reviews per timed call")
    args = p.parse_args(argv)
    args.torch_precision = args.torch_precision or args.precision
    return args


def _set_flags(args) -> str:
    from w2sjax.runner import xla_flags

    ynn = {"dot": "individual_dot", "off": "", "all": None}[args.ynn]
    return xla_flags.apply_defaults(ynn=ynn, devices=args.devices)


def _impl(base: str, dtype: str) -> str:
    return base if dtype == "float32" else f"{base}_bf16"


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def flops_forward(L: int, d: int, d_ff: int, T: int) -> float:
    return 2 * L * (4 * d * d + 2 * d * d_ff) * T + 4 * L * T * T * d


def _sizes(quick: bool) -> dict:
    if quick:
        return dict(layers=1, matmul=256, embed_b=4, embed_t=16, ft_b=4, ft_t=16, foods=64, foods_rounds=1)
    return dict(layers=None, matmul=4096, embed_b=64, embed_t=128, ft_b=ft.BATCH, ft_t=ft.SEQ, foods=None,
                foods_rounds=2)


# ---------------------------------------------------------------- matmul and embedding


def matmul_sides(n: int, precisions, with_torch: bool, torch_precisions=None) -> dict:
    """``jit(jnp.dot)`` on n x n (bf16 operands, float32 result for bfloat16) and ``torch.mm``."""
    import jax
    import jax.numpy as jnp

    sides = {}
    dot = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
    for dtype in precisions:
        a = jax.random.normal(jax.random.key(0), (n, n), dtype)
        b = jax.random.normal(jax.random.key(1), (n, n), dtype)
        sides[_impl("jax", dtype)] = lambda a=a, b=b: dot(a, b).block_until_ready()
    if with_torch:
        import torch

        for dtype in torch_precisions or precisions:
            a, b = torch.randn(n, n), torch.randn(n, n)
            if dtype != "float32":
                a, b = a.bfloat16(), b.bfloat16()
            sides[_impl("torch", dtype)] = lambda a=a, b=b: torch.mm(a, b)
    return sides


def embed_sides(path, sz, precisions, with_torch: bool, torch_precisions=None, block_tokens=None):
    """MiniLM-L6 mean-pooled embedding of one fixed ``[b, t]`` batch, the library's row-blocked path
    (and, for each of ``block_tokens``, a side ``jax..._blocksN`` with blocks of about N tokens)."""
    import numpy as np
    from flax import nnx

    from w2sjax.models import bert, embed

    b, t = sz["embed_b"], sz["embed_t"]
    sides, extra = {}, {"batch": b, "seq": t}
    cfg = None
    for dtype in precisions:
        enc = bert.load_bert(path, num_layers=sz["layers"], dtype=dtype)
        cfg = enc.config
        graphdef, state = nnx.split(enc)
        put, state = embed._placement(state)
        rng = np.random.default_rng(0)
        ids = put(rng.integers(1000, cfg.vocab_size, (b, t)).astype(np.int32))
        mask = put(np.ones((b, t), np.int32))
        blocks = embed.row_blocks(b, t, embed._local_devices_for_batch())
        extra["row_blocks"] = blocks
        sides[_impl("jax", dtype)] = (lambda g=graphdef, s=state, i=ids, m=mask, k=blocks:
                                      embed.pooled_features(g, s, i, m, pooling="mean", blocks=k).block_until_ready())
        for n in block_tokens or ():
            k = embed.row_blocks(b, t, embed._local_devices_for_batch(), n)
            sides[f"{_impl('jax', dtype)}_blocks{n}"] = (
                lambda g=graphdef, s=state, i=ids, m=mask, k=k:
                embed.pooled_features(g, s, i, m, pooling="mean", blocks=k).block_until_ready())
    if with_torch:
        import torch

        net, pool = ft.torch_model("minilm-l6", path, sz["layers"])
        net.eval()
        ids = torch.from_numpy(np.random.default_rng(0).integers(1000, cfg.vocab_size, (b, t)))
        mask = torch.ones(b, t, dtype=torch.long)
        for dtype in torch_precisions or precisions:
            def run(dtype=dtype):
                with torch.inference_mode(), ft.autocast(dtype):
                    pool(net(input_ids=ids, attention_mask=mask).last_hidden_state, mask)

            sides[_impl("torch", dtype)] = run
    flops = flops_forward(cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size, t)
    return sides, flops, extra


@functools.lru_cache(maxsize=None)  # fine_foods can be both the embedding texts and --length-task's
def task_texts(name: str, limit) -> tuple[str, ...]:
    """The texts of task ``name`` (train then test split), the first ``limit`` of them."""
    import numpy as np

    from w2sjax.data.registry import load_task

    task = load_task(name)
    texts = np.concatenate([task.train["text"], task.test["text"]])
    return tuple(texts[:limit] if limit else texts)


def fine_foods_sides(path, sz, texts, precisions, max_len, with_torch: bool):
    """Embed every text: JAX in fitted length buckets (tokenising included), PyTorch padded to max_len."""
    from w2sjax.models import bert

    sides, compiles = {}, {}
    tok = None
    for dtype in precisions:
        feat = bert.BertFeaturizer("bench", path=path, num_layers=sz["layers"], max_len=max_len,
                                   dtype=dtype, progress=False)
        enc, tok = feat.load()
        cfg = enc.config
        sides[_impl("jax", dtype)] = functools.partial(_count_compiles, compiles, _impl("jax", dtype),
                                                       lambda feat=feat: feat.embed_texts(texts))
    if with_torch:
        import torch
        import transformers

        net, pool = ft.torch_model("minilm-l6", path, sz["layers"])
        net.eval()
        hf_tok = transformers.AutoTokenizer.from_pretrained(str(path))
        for dtype in precisions:
            def run(dtype=dtype):
                with torch.inference_mode(), ft.autocast(dtype):
                    for i in range(0, len(texts), 64):
                        enc = hf_tok(texts[i:i + 64], padding="max_length", truncation=True, max_length=max_len,
                                     return_tensors="pt")
                        pool(net(**enc).last_hidden_state, enc["attention_mask"])

            sides[_impl("torch", dtype)] = run
    # Useful FLOPs only: each text at its own token length, no padding.
    lengths = [len(r) for r in tok.token_ids(texts, max_len)]
    flops = sum(flops_forward(cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size, n)
                for n in lengths) / len(lengths)
    return sides, flops, compiles


def _count_compiles(counts: dict, key: str, fn):
    from w2sjax.models import embed

    before = embed.pooled_features._cache_size()
    fn()
    counts[key] = counts.get(key, 0) + embed.pooled_features._cache_size() - before


# ---------------------------------------------------------------- finetune


def finetune_cases(model, args, sz, peaks, texts, with_torch: bool):
    """The ``finetune`` (fixed shape) and ``finetune_lengths`` (real reviews) cases of one backbone,
    yielding each case's records as soon as it is done.

    Both reuse one set of sides' models: loading (above all the decoder's GGUF into transformers)
    costs more than a timed round.
    """
    path = ft.asset_path(model)
    layers = args.layers or (sz["layers"] if model != "smollm2-135m" else None)
    shape = ft.shape_of(model, path, layers)
    tok = ft.tokenizer_of(model, path)
    b, t = sz["ft_b"], sz["ft_t"]
    modules = {_impl("jax", d): ft.jax_module(model, path, d, layers) for d in args.precision}
    shared = ft.TorchFinetune.shared(model, path, layers) if with_torch else None
    extra = {"model": model, "batch": b}

    def run(case, jax_batches, torch_batches, examples, flops, loop=False, **more):
        sides = {impl: ft.JaxFinetune(m, jax_batches, loop=loop) for impl, m in modules.items()}
        ab = {}  # the sides of the gradient-norm A/B: now -> as before
        if loop and args.grad_norm_ab:  # a second state of the same module: both train from its weights
            for d in args.precision:
                ab[_impl("jax", d)] = _impl("jax_norm_each_step", d)
                sides[ab[_impl("jax", d)]] = ft.JaxFinetune(modules[_impl("jax", d)], jax_batches, loop=True,
                                                            grad_norm_each_step=True)
        if shared is not None:
            sides.update({_impl("torch", d): ft.TorchFinetune(shared, torch_batches, d) for d in args.torch_precision})
        recs = run_case(case, sides, args.repeats, examples=examples, flops_per_example=flops, peaks=peaks,
                        extra={**extra, **more})
        by_impl = {r["impl"]: r for r in recs if r["impl"] in sides}
        recs += [{"case": case, "impl": "ratio", "label": "grad_norm_last_step_only", "model": model, "now": now,
                  "before": before,
                  "now_over_before_min": round(by_impl[now]["examples_per_s"] / by_impl[before]["examples_per_s"], 3),
                  "now_over_before_median": round(by_impl[now]["examples_per_s_median"]
                                                  / by_impl[before]["examples_per_s_median"], 3)}
                 for now, before in ab.items()]
        shapes = len({ids.shape for ids, _ in jax_batches})
        for impl, side in sides.items():
            if impl.startswith("jax"):
                recs.append({"case": "trace_count", "impl": impl, "for_case": case, "model": model,
                             "fn": "train_loop" if loop else "train_step", "traces": side.traces, "steps": side.steps,
                             "shapes": shapes, "ok": side.traces == shapes})
        return recs

    if "finetune" in args.cases:
        batches = ft.fixed_batches(shape.vocab, tok.pad_id, count=1, b=b, t=t)
        yield from run("finetune", batches, batches, b, shape.train_flops(t), seq=t)
    if "finetune_loop" in args.cases:  # the steps as `fit` runs them: K per call of train_loop
        batches = ft.fixed_batches(shape.vocab, tok.pad_id, count=args.loop_steps, b=b, t=t)
        yield from run("finetune_loop", batches, batches, b * len(batches), shape.train_flops(t), loop=True,
                       seq=t, steps_per_call=len(batches))
    if "finetune_lengths" in args.cases and texts is not None:
        ids = ft.real_token_ids(tok, texts, args.length_batches, b=b, max_len=t)
        jax_batches = ft.bucketed(tok, ids, t, b=b)
        torch_batches = ft.padded_to_longest(tok, ids, b=b)
        useful = sum(shape.train_flops(len(r)) for r in ids) / len(ids)
        yield from run("finetune_lengths", jax_batches, torch_batches, len(ids), useful, max_len=t,
                   task=args.length_task, real_tokens=int(sum(len(r) for r in ids)),
                   padded_tokens_jax=ft.padded_tokens(jax_batches),
                   padded_tokens_torch=ft.padded_tokens(torch_batches),
                   note="gflops count real tokens only")
    del modules, shared
    gc.collect()


def bucketing_case(args, sz, texts):
    """`train.fit` on real texts of ``--length-task``, one epoch, with and without length buckets, interleaved.

    MiniLM-L6 in the last ``--precision``; ``--length-batches`` steps of 32 per fit. Both sides
    train on the same examples; only the batching differs (`TrainConfig.length_buckets`).
    """
    import dataclasses

    import numpy as np

    from w2sjax import parallel, train
    from w2sjax.data import feed, length_buckets

    dtype, b, t = args.precision[-1], sz["ft_b"], sz["ft_t"]
    path = ft.asset_path("minilm-l6")
    tok = ft.tokenizer_of("minilm-l6", path)
    ids = ft.real_token_ids(tok, texts, args.length_batches, b=b, max_len=t)
    input_ids, mask = tok.pad(ids, t)
    labels = np.eye(2, dtype=np.float32)[np.random.default_rng(1).integers(0, 2, len(ids))]
    data = train.ArrayData({"input_ids": input_ids, "attention_mask": mask}, labels)
    module = ft.jax_module("minilm-l6", path, dtype, sz["layers"])
    mesh = parallel.make_mesh()
    base = train.TrainConfig(epochs=1, batch_size=b, lr=1e-5, log_every=args.length_batches)

    def fit(buckets: bool):
        cfg = dataclasses.replace(base, length_buckets=buckets)
        return lambda: train.fit(module, data, cfg=cfg, loss="xent", mesh=mesh, seed=0, progress=False)

    sides = {_impl("jax", dtype) + "_padded": fit(False), _impl("jax", dtype) + "_buckets": fit(True)}
    # Padded tokens per epoch under each batching (the same plan fit follows for seed 0, epoch 0).
    order = length_buckets.BucketedOrder(length_buckets.token_lengths(data.inputs), b, 0, t,
                                         lambda e: feed._epoch_permutation(len(ids), 0, e))
    steps = len(ids) // b
    bucketed_tokens = sum(order.batch(s)[1] * b for s in range(steps))
    shape = ft.shape_of("minilm-l6", path, sz["layers"])
    useful = sum(shape.train_flops(len(r)) for r in ids) / len(ids)
    recs = run_case("bucketing", sides, args.repeats, examples=steps * b, flops_per_example=useful,
                    extra={"model": "minilm-l6", "task": args.length_task, "batch": b, "max_len": t, "steps": steps,
                           "real_tokens": int(sum(len(r) for r in ids)), "padded_tokens_padded": steps * b * t,
                           "padded_tokens_buckets": int(bucketed_tokens),
                           "note": "each call is a whole fit (setup included); gflops count real tokens"})
    pad, buck = recs[0], recs[1]
    recs.append({"case": "bucketing", "impl": "ratio", "buckets_over_padded_min":
                 round(buck["examples_per_s"] / pad["examples_per_s"], 3),
                 "buckets_over_padded_median": round(buck["examples_per_s_median"] / pad["examples_per_s_median"], 3),
                 "token_fraction": round(bucketed_tokens / (steps * b * t), 3)})
    return recs


# ---------------------------------------------------------------- linear-probe sweep


def jax_sweep(argv_extra=()):
    """Time ``w2sjax run`` (default config) in-process and split each stage's fit into compile vs rest.

    Compile time comes from JAX's own monitoring events (trace + lowering + XLA compile); stage
    boundaries from wrapping ``train.fit``, which every stage calls.
    """
    import tempfile

    import jax

    from w2sjax import cli, train

    events = ("/jax/core/compile/jaxpr_trace_duration",
              "/jax/core/compile/jaxpr_to_mlir_module_duration",
              "/jax/core/compile/backend_compile_duration")
    current = {"stage": "outside fit"}
    compile_s: dict[str, float] = {}
    compiles: dict[str, int] = {}

    def listen(event, duration, **_):
        if event in events:
            k = current["stage"]
            compile_s[k] = compile_s.get(k, 0.0) + duration
            if event.endswith("backend_compile_duration"):
                compiles[k] = compiles.get(k, 0) + 1

    jax.monitoring.register_event_duration_secs_listener(listen)
    stages = []
    real_fit = train.fit

    def fit(*a, stage="train", **kw):
        current["stage"] = stage
        t0 = time.perf_counter()
        try:
            res = real_fit(*a, stage=stage, **kw)
        finally:
            current["stage"] = "outside fit"
        stages.append({"stage": stage, "fit_s": time.perf_counter() - t0, "steps": res.steps})
        return res

    train.fit = fit
    try:
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(sys.stderr):  # keep stdout JSON lines only
                rc = cli.main(["run", "--out", out, "--no-progress", *argv_extra])
            wall = time.perf_counter() - t0
    finally:
        train.fit = real_fit
    for st in stages:
        st["compile_s"] = round(compile_s.get(st["stage"], 0.0), 3)
        st["compiles"] = compiles.get(st["stage"], 0)
        st["steps_and_rest_s"] = round(st["fit_s"] - st["compile_s"], 3)
        st["fit_s"] = round(st["fit_s"], 3)
    fit_total = sum(st["fit_s"] for st in stages)
    comp_total = sum(st["compile_s"] for st in stages)
    return {"case": "sweep", "impl": "jax", "rc": rc, "wall_s": round(wall, 2), "stages": len(stages),
            "fit_s": round(fit_total, 2), "fit_compile_s": round(comp_total, 2),
            "compile_outside_fit_s": round(compile_s.get("outside fit", 0.0), 2),
            "compiles_in_fit": sum(st["compiles"] for st in stages),
            "compiles_outside_fit": compiles.get("outside fit", 0),
            "total_steps": sum(st["steps"] for st in stages), "per_stage": stages}


# ---------------------------------------------------------------- main


def main(argv=None) -> int:
    args = _parse(argv)
    flags = _set_flags(args)
    import jax

    from w2sjax import assets
    from w2sjax.runner import utilisation

    with_torch = "torch" in args.cases and torch_available()
    if args.quick:
        args.repeats = 1
    emit({"case": "setup", "impl": "setup", "xla_flags": flags, "jax": jax.__version__, "devices": jax.device_count(),
          "quick": args.quick, "cpu_count": os.cpu_count(), "cpu": utilisation.cpu_model(), "loadavg": loadavg(),
          "torch": _torch_version() if with_torch else None, "repeats": args.repeats,
          "precision": args.precision, "torch_precision": args.torch_precision,
          # W2SJAX_ONEDNN=1 puts the bf16 dense layers' dots on oneDNN (w2sjax.models.onednn)
          "onednn_dots": os.environ.get("W2SJAX_ONEDNN", "") not in ("", "0")})
    if "torch" in args.cases and not with_torch:
        emit({"case": "torch", "impl": "torch", "skipped": "torch/transformers not importable"})
    if with_torch:
        import torch

        torch.set_num_threads(args.devices)
    sz = _sizes(args.quick)
    path = assets.fetch("minilm-l6-v2")
    max_len = sz["ft_t"]
    peaks: dict[str, float] = {}
    t0 = time.perf_counter()

    if "matmul" in args.cases:
        n = args.matmul_n or sz["matmul"]
        recs = run_case("matmul", matmul_sides(n, args.precision, with_torch, args.torch_precision), args.repeats,
                        examples=1, flops_per_example=2 * n**3, extra={"n": n})
        for rec in recs:
            if rec["impl"].startswith("jax"):
                peaks["bfloat16" if rec["impl"].endswith("_bf16") else "float32"] = rec["gflops"]
        for rec in recs:
            if rec["impl"] != "ratio":
                rec["peak_gflops"] = rec["ratio_to_peak"] = None  # the peak is what this case measures
            emit(rec)
    if "embed" in args.cases:
        sides, flops, extra = embed_sides(path, sz, args.precision, with_torch, args.torch_precision,
                                          args.embed_block_tokens)
        for rec in run_case("embed", sides, args.repeats, examples=sz["embed_b"], flops_per_example=flops,
                            peaks=peaks, extra=extra):
            emit(rec)
        del sides
        gc.collect()
    # The fine_foods case always embeds reviews; the length cases read --length-task's texts.
    texts = task_texts("fine_foods", sz["foods"]) if "fine_foods" in args.cases else None
    length_texts = (task_texts(args.length_task, sz["foods"]) if {"finetune_lengths", "bucketing"} & set(args.cases)
                    else None)
    for model in args.models:
        if {"finetune", "finetune_loop", "finetune_lengths"} & set(args.cases):
            for rec in finetune_cases(model, args, sz, peaks, length_texts, with_torch):
                emit(rec)
            from w2sjax.runner import memory

            memory.release()  # the next model starts from a process that holds none of this one's programs
    if "bucketing" in args.cases:
        for rec in bucketing_case(args, sz, length_texts):
            emit(rec)
        gc.collect()
    if "fine_foods" in args.cases:
        sides, flops, compiles = fine_foods_sides(path, sz, texts, args.precision, max_len, with_torch)
        # No warm-up: the first round is cold (compiles, tokenising), later ones warm; times_s keeps all.
        for rec in run_case("fine_foods", sides, sz["foods_rounds"], examples=len(texts), flops_per_example=flops,
                            peaks=peaks, warmup=0, extra={"max_len": max_len, "texts": len(texts)}):
            if rec["impl"] in compiles:
                rec["compiles"] = compiles[rec["impl"]]
            emit(rec)
        del sides
        gc.collect()
    if "sweep_vs_torch" in args.cases:  # the W2S finetune sweep against a plain PyTorch loop
        from benchmarks import sweep_vs_torch as svt

        for rec in svt.sweep_case(svt.QUICK if args.quick else svt.FULL, args.precision, args.repeats, with_torch):
            emit(rec)
    if "sweep" in args.cases and not args.quick:
        emit(jax_sweep())
    if "topk" in args.cases:  # benchmarks/topk.py: a top:K sweep with cached bottoms vs full finetuning
        from benchmarks.topk import topk_records

        for rec in topk_records(args.models[0], repeats=args.repeats, quick=args.quick):
            emit(rec)
    emit({"case": "done", "impl": "setup", "wall_s": round(time.perf_counter() - t0, 1), "loadavg": loadavg()})
    return 0


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except Exception:
        return False
    return True


def _torch_version() -> str:
    import torch
    import transformers

    return f"torch {torch.__version__}, transformers {transformers.__version__}"


if __name__ == "__main__":
    sys.exit(main())
