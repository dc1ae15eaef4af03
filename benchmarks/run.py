"""CPU throughput benchmarks for the MiniLM paths of w2sjax, with an optional PyTorch baseline.

    python -m benchmarks.run [--cases matmul embed finetune fine_foods torch] [--quick]
                             [--precision float32 bfloat16] [--ynn dot|off|all]

Each JAX case runs once per ``--precision``: ``float32``, and ``bfloat16`` matmul operands with
float32 accumulation (`w2sjax.models.precision`); records say ``impl: jax`` / ``jax_bf16``.
PyTorch runs the plain float32 way (``torch``) and, for bfloat16, under CPU autocast
(``torch_bf16``), so each precision has a same-run baseline.

Prints one JSON object per line. XLA flags must be set before JAX initialises, so this
script (an application, like the ``w2sjax`` command) sets them first and prints them.
FLOPs per example use the dense-transformer count
``forward = 2 L (4 d^2 + 2 d d_ff) T + 4 L T^2 d`` and ``train = 3 x forward``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time

ALL_CASES = ("matmul", "embed", "finetune", "fine_foods", "torch", "sweep")


def _parse(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.run")
    p.add_argument("--cases", nargs="+", default=list(ALL_CASES), choices=ALL_CASES)
    p.add_argument("--quick", action="store_true", help="tiny sizes (seconds): for tests, not for numbers")
    p.add_argument("--devices", type=int, default=os.cpu_count() or 1,
                   help="host devices (--xla_force_host_platform_device_count)")
    p.add_argument("--ynn", choices=("dot", "off", "all"), default="dot",
                   help="YNNPACK for individual dots only (default), not at all, or XLA's default fusions")
    p.add_argument("--precision", nargs="+", default=["float32", "bfloat16"], choices=("float32", "bfloat16"))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--fsdp", action="store_true",
                   help="finetune with params/optimizer sharded over the devices instead of replicated")
    return p.parse_args(argv)


def _set_flags(args) -> str:
    from w2sjax import xla_flags

    ynn = {"dot": "individual_dot", "off": "", "all": None}[args.ynn]
    return xla_flags.apply_defaults(ynn=ynn, devices=args.devices)


def _impl(base: str, dtype: str) -> str:
    return base if dtype == "float32" else f"{base}_bf16"


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def flops_forward(L: int, d: int, d_ff: int, T: int) -> float:
    return 2 * L * (4 * d * d + 2 * d * d_ff) * T + 4 * L * T * T * d


LAST_TIMES: list[float] = []


def timed(fn, repeats: int) -> float:
    """Fastest of ``repeats`` calls of ``fn()`` after one warm-up call (which also compiles).

    The minimum, not the median: on a shared machine other jobs only ever add time, so the
    fastest call is the best estimate of the uncontended speed. All times stay in LAST_TIMES.
    """
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    LAST_TIMES[:] = times
    return min(times)


def record(case, impl, *, examples, seconds, flops_per_example, peak, **extra):
    rate = examples / seconds
    gflops = rate * flops_per_example / 1e9 if flops_per_example else None
    out = {"case": case, "impl": impl, "examples_per_s": round(rate, 2), "seconds": round(seconds, 4),
           "gflops": None if gflops is None else round(gflops, 1),
           "peak_gflops": None if peak is None else round(peak, 1),
           "ratio_to_peak": None if (gflops is None or not peak) else round(gflops / peak, 3)}
    if LAST_TIMES and seconds in LAST_TIMES:
        out["median_s"] = round(statistics.median(LAST_TIMES), 4)
    out.update(extra)
    return out


# ---------------------------------------------------------------- JAX cases


def jax_matmul_peak(n: int, repeats: int, dtype: str = "float32") -> float:
    """``jit(jnp.dot)`` on n x n; for bfloat16 the operands are bf16 and the result float32."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), dtype)
    dot = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
    s = timed(lambda: dot(a, b).block_until_ready(), repeats)
    return 2 * n**3 / s / 1e9


def _sizes(quick: bool) -> dict:
    if quick:
        return dict(layers=1, matmul=256, embed_b=4, embed_t=16, ft_b=4, ft_t=16, foods=64, steps=2)
    return dict(layers=None, matmul=4096, embed_b=64, embed_t=128, ft_b=32, ft_t=128, foods=None, steps=5)


def jax_embed(path, sz, peak, repeats, dtype="float32"):
    import jax
    import numpy as np
    from flax import nnx

    from w2sjax.models import bert, embed

    enc = bert.load_bert(path, num_layers=sz["layers"], dtype=dtype)
    cfg = enc.config
    b, t = sz["embed_b"], sz["embed_t"]
    graphdef, state = nnx.split(enc)
    put, state = embed._placement(state)
    rng = np.random.default_rng(0)
    ids = put(rng.integers(1000, cfg.vocab_size, (b, t)).astype(np.int32))
    mask = put(np.ones((b, t), np.int32))
    # The library's path: row blocks of ~embed.BLOCK_TOKENS tokens (as BertFeaturizer runs it).
    blocks = embed.row_blocks(b, t, embed._local_devices_for_batch())
    run = lambda: embed.pooled_features(graphdef, state, ids, mask, pooling="mean", blocks=blocks).block_until_ready()
    s = timed(run, repeats)
    f = flops_forward(cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size, t)
    return record("embed", _impl("jax", dtype), examples=b, seconds=s, flops_per_example=f, peak=peak,
                  batch=b, seq=t, devices=jax.device_count(), row_blocks=blocks)


def jax_finetune(path, sz, peak, repeats, fsdp=False, dtype="float32"):
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from w2sjax import parallel, train
    from w2sjax.models import bert

    enc = bert.load_bert(path, num_layers=sz["layers"], dtype=dtype)
    cfg = enc.config
    module = bert.classifier(enc, 2, rngs=nnx.Rngs(0))
    b, t = sz["ft_b"], sz["ft_t"]
    tcfg = train.TrainConfig(batch_size=b, lr=1e-5)
    steps = 1000
    tx = train.make_optimizer()
    mesh = parallel.make_mesh(data=1, fsdp=-1) if fsdp else parallel.make_mesh()
    model, state = train.init_state(module, "all", tx)
    shardings = train.state_shardings(mesh, state)
    state = train.place(state, shardings)
    traces = [0]
    step_fn = train.make_train_step(model, tx)
    settings = train.place(train.step_settings(tcfg, steps, "xent"), parallel.replicated(mesh))

    def counted(*a):
        traces[0] += 1  # runs only while tracing: counts (re)compilations
        return step_fn(*a)

    jitted = train.jit_train_step(counted, mesh, shardings)
    rng = np.random.default_rng(0)
    rng_key = train.place(jax.random.key_data(jax.random.key(0)), parallel.replicated(mesh))
    # Fresh host batches each step, as in `fit`, so host->device transfer is in the timing.
    lengths = rng.integers(t // 2, t + 1, size=(8, b))
    batches = []
    for lens in lengths:
        mask = (np.arange(t)[None, :] < lens[:, None]).astype(np.int32)
        batches.append({
            "inputs": {"input_ids": rng.integers(1000, cfg.vocab_size, (b, t)).astype(np.int32) * mask,
                       "attention_mask": mask},
            "labels": np.eye(2, dtype=np.float32)[rng.integers(0, 2, b)],
            "weights": np.ones(b, np.float32),
        })
    holder = {"state": state, "i": 0}

    def one_step():
        batch = train.to_global(mesh, batches[holder["i"] % len(batches)])
        holder["i"] += 1
        holder["state"], m = jitted(holder["state"], batch, rng_key, settings)
        jax.block_until_ready(m)

    s = timed(one_step, max(repeats, sz["steps"]))
    f = 3 * flops_forward(cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size, t)
    return [
        record("finetune", _impl("jax", dtype), examples=b, seconds=s, flops_per_example=f, peak=peak,
               batch=b, seq=t, devices=jax.device_count(), mesh=dict(mesh.shape), steps=holder["i"]),
        {"case": "trace_count", "impl": _impl("jax", dtype), "fn": "train_step", "traces": traces[0],
         "steps": holder["i"], "ok": traces[0] == 1},
    ]


def fine_foods_texts(limit):
    import numpy as np

    from w2sjax.data.registry import load_task

    task = load_task("fine_foods")
    texts = np.concatenate([task.train["text"], task.test["text"]])
    return list(texts[:limit] if limit else texts)


def jax_fine_foods(path, sz, texts, peak, max_len, dtype="float32"):
    import jax

    from w2sjax.models import bert, embed

    feat = bert.BertFeaturizer("bench", path=path, num_layers=sz["layers"], max_len=max_len,
                               dtype=dtype, progress=False)
    enc, tok = feat.load()
    cfg = enc.config
    before = embed.pooled_features._cache_size()
    t0 = time.perf_counter()
    out = feat.embed_texts(texts)
    s = time.perf_counter() - t0
    compiles = embed.pooled_features._cache_size() - before
    # Useful FLOPs only: each text at its own token length, no padding.
    lengths = [len(r) for r in tok.token_ids(texts, max_len)]
    f = sum(flops_forward(cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size, n)
            for n in lengths) / len(lengths)
    rec = record("fine_foods", _impl("jax", dtype), examples=len(texts), seconds=s, flops_per_example=f, peak=peak,
                 max_len=max_len, compiles=compiles, devices=jax.device_count(),
                 tokens_per_batch=feat.tokens_per_batch, note="wall time includes tokenising and compiles")
    return rec, out


# ---------------------------------------------------------------- PyTorch baseline


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except Exception:
        return False
    return True


def torch_cases(path, sz, cases, texts, peaks, repeats, max_len, threads, precisions):
    """The same cases the plain PyTorch way; bfloat16 runs under CPU autocast (oneDNN, AMX)."""
    import numpy as np
    import torch
    import transformers

    torch.set_num_threads(threads)
    transformers.logging.set_verbosity_error()  # the unused-pooler load report is noise here
    out = []
    kw = dict(attn_implementation="sdpa")
    if sz["layers"]:
        kw["num_hidden_layers"] = sz["layers"]
    model = transformers.BertModel.from_pretrained(str(path), add_pooling_layer=False, **kw).float()
    cfg = model.config
    fwd = lambda t: flops_forward(cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size, t)
    rng = np.random.default_rng(0)

    def pool(hidden, mask):
        m = mask.unsqueeze(-1).float()
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)

    def autocast(dtype):
        if dtype == "float32":
            return contextlib.nullcontext()
        return torch.autocast("cpu", dtype=torch.bfloat16)

    for dtype in precisions:
        impl, peak = _impl("torch", dtype), peaks[dtype]
        if "matmul" in cases:
            n = sz["matmul"]
            a, b = torch.randn(n, n), torch.randn(n, n)
            if dtype != "float32":
                a, b = a.bfloat16(), b.bfloat16()
            s = timed(lambda: torch.mm(a, b), repeats)
            out.append({"case": "matmul", "impl": impl, "n": n, "gflops": round(2 * n**3 / s / 1e9, 1)})

        if "embed" in cases:
            b, t = sz["embed_b"], sz["embed_t"]
            ids = torch.from_numpy(rng.integers(1000, cfg.vocab_size, (b, t)))
            mask = torch.ones(b, t, dtype=torch.long)
            model.eval()

            def run():
                with torch.inference_mode(), autocast(dtype):
                    pool(model(input_ids=ids, attention_mask=mask).last_hidden_state, mask)

            out.append(record("embed", impl, examples=b, seconds=timed(run, repeats),
                              flops_per_example=fwd(t), peak=peak, batch=b, seq=t, threads=threads))

        if "finetune" in cases:
            b, t = sz["ft_b"], sz["ft_t"]
            model.train()
            head = torch.nn.Linear(cfg.hidden_size, 2)
            opt = torch.optim.AdamW(list(model.parameters()) + list(head.parameters()), lr=1e-5)
            lens = rng.integers(t // 2, t + 1, size=b)
            mask = torch.from_numpy((np.arange(t)[None, :] < lens[:, None]).astype(np.int64))
            ids = torch.from_numpy(rng.integers(1000, cfg.vocab_size, (b, t))) * mask
            labels = torch.from_numpy(rng.integers(0, 2, b))

            def step():
                opt.zero_grad(set_to_none=True)
                with autocast(dtype):
                    logits = head(pool(model(input_ids=ids, attention_mask=mask).last_hidden_state, mask))
                    loss = torch.nn.functional.cross_entropy(logits.float(), labels)
                loss.backward()
                opt.step()

            out.append(record("finetune", impl, examples=b, seconds=timed(step, max(repeats, sz["steps"])),
                              flops_per_example=3 * fwd(t), peak=peak, batch=b, seq=t, threads=threads))
            model.eval()

        if "fine_foods" in cases and texts is not None:
            # The plain way: tokenizer pads every batch to max_len, fixed batch of 64.
            tok = transformers.AutoTokenizer.from_pretrained(str(path))
            t0 = time.perf_counter()
            with torch.inference_mode(), autocast(dtype):
                for i in range(0, len(texts), 64):
                    enc = tok(texts[i:i + 64], padding="max_length", truncation=True, max_length=max_len,
                              return_tensors="pt")
                    pool(model(**enc).last_hidden_state, enc["attention_mask"])
            s = time.perf_counter() - t0
            out.append(record("fine_foods", impl, examples=len(texts), seconds=s,
                              flops_per_example=fwd(max_len), peak=peak, max_len=max_len, threads=threads,
                              note="padded to max_len; gflops counts padded tokens"))
    return out


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

    emit({"case": "setup", "impl": "setup", "xla_flags": flags, "jax": jax.__version__, "devices": jax.device_count(),
          "quick": args.quick, "cpu_count": os.cpu_count(), "loadavg": list(os.getloadavg())})
    sz = _sizes(args.quick)
    repeats = 1 if args.quick else args.repeats
    path = assets.fetch("minilm-l6-v2")
    max_len = sz["ft_t"] if args.quick else 128
    results: dict[tuple, dict] = {}

    def keep(rec):
        results[(rec["case"], rec["impl"])] = rec
        emit(rec)

    peaks = {}
    for dtype in args.precision:
        peaks[dtype] = jax_matmul_peak(sz["matmul"], repeats, dtype)
        keep({"case": "matmul", "impl": _impl("jax", dtype), "n": sz["matmul"], "gflops": round(peaks[dtype], 1)})
    texts = fine_foods_texts(sz["foods"]) if "fine_foods" in args.cases else None
    for dtype in args.precision:
        if "embed" in args.cases:
            keep(jax_embed(path, sz, peaks[dtype], repeats, dtype))
        if "finetune" in args.cases:
            for rec in jax_finetune(path, sz, peaks[dtype], repeats, args.fsdp, dtype):
                keep(rec)
        if texts is not None:
            keep(jax_fine_foods(path, sz, texts, peaks[dtype], max_len, dtype)[0])
    if "torch" in args.cases and torch_available():
        for rec in torch_cases(path, sz, args.cases, texts, peaks, repeats, max_len, args.devices,
                               args.precision):
            keep(rec)
        # Same precision against same precision, and every JAX figure against the plain
        # float32 PyTorch way (the baseline).
        pairs = [(_impl("jax", d), _impl("torch", d)) for d in args.precision]
        pairs += [(_impl("jax", d), "torch") for d in args.precision if d != "float32"]
        for case in ("embed", "finetune", "fine_foods"):
            for jimpl, timpl in pairs:
                j, t = results.get((case, jimpl)), results.get((case, timpl))
                if j and t:
                    speed = j["examples_per_s"] / t["examples_per_s"]
                    emit({"case": case, "impl": "ratio", "jax": jimpl, "torch": timpl,
                          "jax_over_torch_speed": round(speed, 3),
                          "jax_wall_fraction_of_torch": round(1 / speed, 3)})
    elif "torch" in args.cases:
        emit({"case": "torch", "impl": "torch", "skipped": "torch/transformers not importable"})
    if "sweep" in args.cases and not args.quick:
        keep(jax_sweep())
    return 0


if __name__ == "__main__":
    sys.exit(main())
