"""Where a finetune step spends its time, and what the levers buy (benchmarks/RESULTS.md, "Levers").

    python -m benchmarks.profile_step [--model minilm-l6|mpnet-base] [--batch 32] [--seq 128]
                                      [--variants ...] [--repeats 3] [--trace DIR]

The backbone, its tokenizer's padding id and its FLOP count come from `benchmarks.finetune`, as in
the finetune case of `benchmarks.run` (MiniLM-L6 by default; MPNet-base adds its relative-position
attention bias to the same post-norm blocks).

Builds every variant at one shape on a data-parallel mesh over the host devices, then times
them in interleaved rounds (`benchmarks.interleave`), so the ratios between variants hold on a
shared machine. Variants:

  forward, forward_bf16   logits only (jit)
  grad                    loss + gradients (jit of value_and_grad)
  step, step_bf16         the library's train step (grad + AdamW + bookkeeping), state donated
  step_nodonate           step_bf16 without donating the state
  step_bf16_before        step_bf16 with the bf16 Linear and attention of before 2026-12-06 (float32
                          attention matmuls, backward re-converting x and w): before/after in one run
  step_sdpa               step with attention via jax.nn.dot_product_attention (MPNet's bias passed on)
  step_bf16_remat         step_bf16 with every block rematerialised (`models.remat`)
  step_bf16_remat_dots    the same, but keeping matmul outputs (policy dots_with_no_batch_dims_saveable):
                          only LayerNorm/GELU/softmax work is recomputed
  step_bf16_wgrad_t       the weight-gradient dot with its token-major operand stored transposed
                          (``[features, tokens]`` bf16, written by the forward's convert) so the dot
                          contracts the left operand's last axis, the layout YNNPACK takes
  step_bf16_unfused       step_bf16 with the decoders' gated MLP (SwiGLU/GeGLU) and q/k/v projections as
                          separate bf16 Linear layers (before `precision.gated_mlp` and
                          `precision.side_by_side`): before/after in one run
  step_bf16_unfused_qkv   step_bf16 with only the q/k/v projections as separate layers
  step_bf16_encoder_before  step_bf16 with the BERT/MPNet blocks' bf16 path of before 2026-12-06 (separate
                          q/k/v Linear layers, float32 attention matmuls, erfc GELU, bias gradients as sums)
  step_rotary_inline      step (float32) with the decoders' rotary tables inline in training too, as before
                          2026-12-07 (`layers._rotary_tables`): XLA evaluates cos and sin in every consumer
  step_gated_autodiff     step (float32) with the decoders' gated MLP left to autodiff, as before 2026-12-07
                          (`precision._gated_f32`)
  step_dense_autodiff     step (float32) with the encoders' biased projections left to autodiff, as before
                          2026-12-07 (`precision._biased_f32`)
  step_gelu_autodiff      step (float32) with the encoders' GELU derivative by autodiff of ``jax.nn.gelu``, as before
                          2026-12-07 10:00 UTC (`layers.gelu_erfc`)
  step_bf16_decoder_before  step_bf16 with the decoders' bf16 path of before 2026-12-06, 22:00 UTC (rotary and
                          attention left to autodiff, whose backward ran its matmuls in float32; `_decoder_before`)
  embed_bf16, embed_bf16_encoder_before  the row-blocked mean-pooled embedding forward (`embed.pooled_features`)
                          of ``2 * --batch`` rows, after and before that change
  embed                   the same forward with float32 matmuls (the best precision on CPUs without bf16 units)
  step_bf16_onednn        step_bf16 traced with ``W2SJAX_ONEDNN=1``: the dense layers' bf16 dots and their
                          gradients as oneDNN matmuls (`w2sjax.models.onednn`; needs the ``onednn`` extra)
  step_bf16_onednn_t2     the same with two OpenMP threads per oneDNN call (``W2SJAX_ONEDNN_THREADS=2``)
                          instead of the cores split over the host devices
  step_bf16_onednn_convert  step_bf16_onednn with every float32 operand converted to bf16 by XLA before the
                          call (``W2SJAX_ONEDNN_F32=0``), as before 2026-12-07 03:30 UTC, instead of rounded
                          in oneDNN's packing
  step_bf16_rows4         gradient accumulation over 4 row blocks inside the step (xent only:
                          exact for losses that are means over examples)
  step_bf16_split_update  step_bf16 with AdamW's moments and update split over the host devices (ZeRO stage 1,
                          opt-in: ``parallel.UPDATE_SPLIT_MIN_SIZE = 1 << 16``; `train.sharded_update`)

Prints one JSON line per variant (minimum and median of its rounds, ``ratio_to_step_bf16``).
``--trace DIR`` writes a ``jax.profiler`` trace of two calls of the first variant afterwards.
Flags are set like benchmarks.run (same --devices/--ynn).

``--processes SIDE ...`` (variants, ``torch`` for PyTorch under bf16 autocast, ``torch_f32`` for plain
float32 PyTorch) runs every side in a process of its own instead,
in rounds A B C, C B A, ... (`benchmarks.interleave.process_rounds`; ``--process-rounds``), each
timing ``--repeats`` steps after one warm-up step, for models whose JAX and PyTorch states do not
fit in one process; it prints each process's records, then one ``profile_processes`` line per side
(minimum and median over all its timed steps, against each PyTorch side's and the fastest one's,
``speed_vs_torch_best_*``). ``--xla-cache DIR`` lets a
side's later processes load its compiled step instead of compiling it again.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time

from benchmarks import finetune as ft
from benchmarks import run as bench
from benchmarks.interleave import interleave, loadavg

VARIANTS = ("forward", "forward_bf16", "grad", "step", "step_nodonate", "step_sdpa", "step_bf16", "step_bf16_before",
            "step_bf16_remat", "step_bf16_remat_dots", "step_bf16_wgrad_t", "step_bf16_rows4", "step_bf16_split_update",
            "step_bf16_onednn", "step_bf16_onednn_t2", "step_bf16_onednn_convert",
            "step_bf16_unfused", "step_bf16_unfused_qkv", "step_rotary_inline", "step_gated_autodiff", "step_dense_autodiff",
            "step_gelu_autodiff", "step_bf16_encoder_before", "step_bf16_decoder_before",
            "embed", "embed_bf16", "embed_bf16_encoder_before")


def _encoder_before(module) -> None:
    """Put every post-norm block of ``module`` on the bf16 path of before 2026-12-06 (`bert.PostNormLayer`'s
    float32-attention branch, which bf16 encoders took then and float32 ones still take)."""
    from flax import nnx

    from w2sjax.models import bert

    for _, node in nnx.iter_modules(module):
        if isinstance(node, bert.PostNormLayer):
            node.bf16 = False


def _decoder_before():
    """``{(module, name): replacement}``: the decoders' bf16 step as it was before 2026-12-06, 22:00 UTC,
    with the same forward values: rotary, `layers.attend` and the RMSNorms left to autodiff (no own
    backward; the rotary tables inline, which XLA fuses into and re-evaluates in every consumer),
    the kernels concatenated in float32 before their bf16 conversion, and SiLU's derivative by autodiff."""
    import jax
    import jax.numpy as jnp

    from w2sjax.models import layers, precision

    def attend_rotary(q, k, v, cos, sin, keep, scale, softcap=None, dtype=None, picked=None):
        del picked  # the materialised tables: unused, so XLA drops them
        q, k = (layers.apply_rotary(a.astype(jnp.float32), cos, sin) for a in (q, k))
        return layers.attend(q, k, v, keep, scale, softcap=softcap, dtype=dtype)

    return {(layers, "attend_rotary"): attend_rotary,
            (precision, "_concat_bf16"): lambda arrays, axis: jnp.concatenate(arrays, axis=axis).astype(jnp.bfloat16),
            (layers, "rms_norm"): lambda norm, x, own_backward=True: norm(x),
            (precision, "_gated_pull"): lambda act, g, u, dh: jax.vjp(lambda g, u: act(g) * u, g, u)[1](dh)}


def _embed_call(model: str, path, layers, rows: int, t: int, before: bool, dtype: str = "bfloat16"):
    """The library's embedding forward of one fixed ``[rows, t]`` batch, as the embed case of benchmarks.run."""
    import numpy as np
    from flax import nnx

    from w2sjax.models import embed

    enc = ft.jax_module(model, path, dtype, layers).encoder
    if before:
        _encoder_before(enc)
    graphdef, state = nnx.split(enc)
    put, state = embed._placement(state)
    ids = put(np.random.default_rng(0).integers(1000, enc.config.vocab_size, (rows, t)).astype(np.int32))
    mask = put(np.ones((rows, t), np.int32))
    blocks = embed.row_blocks(rows, t, embed._local_devices_for_batch())
    return lambda: embed.pooled_features(graphdef, state, ids, mask, pooling="mean", blocks=blocks).block_until_ready()


def _sdpa_attention(self, x, keep, bias=None):
    import jax

    b, t, h = x.shape
    split = lambda y: y.reshape(b, t, self.num_heads, h // self.num_heads)
    q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
    ctx = jax.nn.dot_product_attention(q, k, v, bias=bias, mask=keep, implementation="xla")
    return self.attn_out(ctx.reshape(b, t, h))


def _linear_bf16_wgrad_t():
    """`precision._linear_bf16` whose backward reads ``x`` as a stored ``[features, tokens]`` bf16 copy."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    from w2sjax.models import precision

    plain = precision._linear_bf16  # captured before the variant patches the module's name

    @jax.custom_vjp
    def linear(x, w):
        return plain(x, w)

    def fwd(x, w):
        xt = x.astype(jnp.bfloat16).reshape(-1, x.shape[-1]).T  # one transposing convert, bf16
        return plain(x, w), (xt, w, jnp.zeros((), x.dtype))  # the last: x's dtype

    def bwd(res, g):
        xt, w, x_dtype = res
        g16 = g.astype(jnp.bfloat16)
        dx = lax.dot_general(g16, w.astype(jnp.bfloat16), (((g.ndim - 1,), (1,)), ((), ())),
                             preferred_element_type=jnp.float32)
        g2 = g16.reshape(-1, g.shape[-1])
        dw = lax.dot_general(xt, g2, (((1,), (0,)), ((), ())), preferred_element_type=jnp.float32)
        return dx.astype(x_dtype.dtype), dw.astype(w.dtype)

    linear.defvjp(fwd, bwd)
    return linear


def _before_2026_12_06():
    """The bf16 Linear and the attention as they were before 2026-12-06, so one run times the
    library before and after: the Linear's backward converted x and w from float32 to bf16 again
    (they are now saved as the forward's bf16 copies), and the attention matmuls ran in float32
    (the ports' projections return float32; they now run on bf16 operands with float32 sums)."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    @jax.custom_vjp
    def linear(x, w):
        return lax.dot_general(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16), (((x.ndim - 1,), (0,)), ((), ())),
                               preferred_element_type=jnp.float32)

    def fwd(x, w):
        return linear(x, w), (x, w)

    def bwd(res, g):
        x, w = res
        g16, w16, x16 = g.astype(jnp.bfloat16), w.astype(jnp.bfloat16), x.astype(jnp.bfloat16)
        dx = lax.dot_general(g16, w16, (((g.ndim - 1,), (1,)), ((), ())), preferred_element_type=jnp.float32)
        lead = tuple(range(x.ndim - 1))
        dw = lax.dot_general(x16, g16, ((lead, lead), ((), ())), preferred_element_type=jnp.float32)
        return dx.astype(x.dtype), dw.astype(w.dtype)

    linear.defvjp(fwd, bwd)

    def attend(q, k, v, keep, scale, softcap=None, dtype=None):
        del dtype  # ignored then: the operands kept v's dtype, float32
        b, t, h, d = q.shape
        kv = k.shape[2]
        q = q.reshape(b, t, kv, h // kv, d).astype(v.dtype)
        scores = jnp.einsum("bqkgd,bskd->bkgqs", q, k.astype(v.dtype)).astype(jnp.float32) * scale
        if softcap is not None:
            scores = softcap * jnp.tanh(scores / softcap)
        scores = jnp.where(keep[:, None, None], scores, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
        return jnp.einsum("bkgqs,bskd->bqkgd", probs, v).reshape(b, t, h * d)

    return linear, attend


def _row_block_step(model, blocks: int):
    """The train step with its gradient summed over ``blocks`` interleaved row blocks (xent only)."""
    import jax
    import jax.numpy as jnp
    import optax

    from w2sjax import losses, train

    def step(state, batch, rng, settings):
        b = batch["labels"].shape[0]
        # Row r goes to block r % blocks: each device keeps its own rows (the batch is split on axis 0).
        split = lambda a: jnp.swapaxes(a.reshape(b // blocks, blocks, *a.shape[1:]), 0, 1)
        parts = jax.tree.map(split, batch)

        def block_grad(grads, part):
            def objective(params):
                logits = model.bind(params, state.frozen)(part["inputs"])
                return losses.xent(logits, part["labels"], weights=part["weights"]) / blocks

            loss, g = jax.value_and_grad(objective)(state.params)
            return jax.tree.map(jnp.add, grads, g), loss

        zeros = jax.tree.map(jnp.zeros_like, state.params)
        grads, block_losses = jax.lax.scan(block_grad, zeros, parts)
        hyper = {**state.opt_state.hyperparams, "learning_rate": train.learning_rate(state.step, settings),
                 "weight_decay": settings.weight_decay}
        updates, opt_state = train.OPTIMIZER.update(grads, state.opt_state._replace(hyperparams=hyper), state.params)
        params = optax.apply_updates(state.params, updates)
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), {"loss": block_losses.sum()}

    return step


# Op name fragments -> kind, first match wins (XLA:CPU thunk names in a jax.profiler trace).
_KINDS = (("dots (YNNPACK / XLA dot)", ("ynn_fusion", "dot", "convolution", "custom-call")),
          ("cross-device sync (all-reduce, waits)", ("all-reduce", "all-gather", "rendezvous", "wait")),
          ("reductions (LayerNorm/softmax sums)", ("reduce",)),
          ("layout and data movement (copy, transpose, broadcast, slice)",
           ("copy", "transpose", "broadcast", "concatenate", "slice", "pad", "gather", "scatter")),
          ("element-wise fusions (LayerNorm apply, GELU, softmax, AdamW, casts)", ("",)))
_CONTAINERS = ("threadpoolexecutor", "thunkexecutor", "conditional", "while", "call")


def trace_shares(trace_dir) -> dict:
    """Share of XLA compute-thread time per kind of op, from the newest trace under ``trace_dir``."""
    import collections
    import gzip
    import json
    import pathlib

    path = sorted(pathlib.Path(trace_dir).rglob("*.trace.json.gz"), key=lambda p: p.stat().st_mtime)[-1]
    events = json.load(gzip.open(path))["traceEvents"]
    names = {(e["pid"], e.get("tid")): e["args"]["name"] for e in events
             if e.get("ph") == "M" and e.get("name") == "thread_name"}
    per_kind, per_op = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("ph") != "X" or "XLAEigen" not in names.get((e["pid"], e.get("tid")), ""):
            continue
        op = e["name"].lower()
        if op.startswith(_CONTAINERS):
            continue  # its thunks are counted themselves
        kind = next(k for k, frags in _KINDS if any(f in op for f in frags))
        per_kind[kind] += e.get("dur", 0)
        per_op[e["name"].split(".")[0]] += e.get("dur", 0)
    total = sum(per_kind.values()) or 1
    return {"shares": {k: round(v / total, 3) for k, v in per_kind.most_common()},
            "top_ops": {k: round(v / total, 3) for k, v in per_op.most_common(12)}, "trace": str(path)}


def _peak_rss_mb() -> int | None:
    """The process's peak resident memory so far (VmHWM), MB: every side of the run shares it."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


def _process_main(args) -> int:
    """``--processes``: every side in fresh processes, in interleaved rounds; a summary per side."""
    from benchmarks.interleave import process_rounds

    common = ["--model", args.model, "--batch", str(args.batch), "--seq", str(args.seq), "--repeats",
              str(args.repeats), "--devices", str(args.devices), "--ynn", args.ynn, "--child"]
    common += ["--layers", str(args.layers)] if args.layers else []
    common += ["--torch-threads", *map(str, args.torch_threads)] if args.torch_threads else []
    common += ["--xla-cache", args.xla_cache] if args.xla_cache else []
    common += ["--fsdp"] if args.fsdp else []
    me = [sys.executable, "-m", "benchmarks.profile_step", *common]
    torch_sides = {"torch": ["--torch", "--variants"], "torch_f32": ["--torch", "--torch-precision", "float32",
                                                                  "--variants"]}
    commands = {side: [*me, *torch_sides[side]] if side in torch_sides else [*me, "--variants", side]
                for side in args.processes}
    before = loadavg()
    runs = process_rounds(commands, args.process_rounds,
                          lambda side, r, recs: [bench.emit({**rec, "side": side, "round": r}) for rec in recs])
    summary = {}
    for side, procs in runs.items():
        steps, minima, rss = [], [], []
        for recs in procs:
            for rec in recs:
                if rec.get("case") == "profile" and "times_s" in rec:
                    steps += rec["times_s"]
                    minima.append(rec["seconds"])
                    rss.append(rec.get("peak_rss_mb"))
        summary[side] = {"case": "profile_processes", "impl": "torch" if side.startswith("torch") else "jax",
                         "model": args.model, "side": side, "layers": args.layers, "batch": args.batch,
                         "seq": args.seq, "processes": len(procs), "seconds": min(steps),
                         "median_s": round(statistics.median(steps), 4), "process_minima_s": minima,
                         "peak_rss_mb": rss, "loadavg_before": before, "loadavg_after": loadavg()}
    torch_names = [k for k in summary if k.startswith("torch")]
    best = min(torch_names, key=lambda k: summary[k]["seconds"]) if torch_names else None
    for rec in summary.values():
        for name in torch_names:  # "torch" is PyTorch under bf16 autocast, "torch_f32" plain float32
            label = "torch_bf16" if name == "torch" else name
            rec[f"speed_vs_{label}_min"] = round(summary[name]["seconds"] / rec["seconds"], 3)
            rec[f"speed_vs_{label}_median"] = round(summary[name]["median_s"] / rec["median_s"], 3)
        if best is not None:  # PyTorch at its best on this CPU, by minimum
            rec["torch_best"] = best
            rec["speed_vs_torch_best_min"] = round(summary[best]["seconds"] / rec["seconds"], 3)
            rec["speed_vs_torch_best_median"] = round(summary[best]["median_s"] / rec["median_s"], 3)
        bench.emit(rec)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile_step")
    p.add_argument("--model", choices=ft.MODELS, default="minilm-l6")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--layers", type=int, default=None)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--devices", type=int, default=2)
    p.add_argument("--ynn", choices=("dot", "off", "all"), default="dot")
    p.add_argument("--fsdp", action="store_true",
                   help="shard parameters and optimizer state over the devices (fsdp axis) instead of replicating")
    p.add_argument("--variants", nargs="*", default=["step", "step_bf16"], choices=VARIANTS)
    p.add_argument("--trace", help="write a jax.profiler trace of the first variant here")
    p.add_argument("--torch", action="store_true",
                   help="add PyTorch + transformers under CPU bf16 autocast (torch_bf16_tN, N threads) "
                        "to the same rounds, and the same run's bf16 matmul peak for MFU")
    p.add_argument("--torch-threads", type=int, nargs="+",
                   help="with --torch: one PyTorch side per thread count (default: one thread per core)")
    p.add_argument("--torch-precision", nargs="+", choices=("bfloat16", "float32"), default=["bfloat16"],
                   help="with --torch: PyTorch under bf16 autocast (torch_bf16_tN) and/or plain float32 "
                        "(torch_f32_tN); speed_vs_torch_best_* compares every side to the fastest of them")
    p.add_argument("--processes", nargs="+", choices=(*VARIANTS, "torch", "torch_f32"),
                   help="each of these sides in fresh processes, in interleaved rounds (see above)")
    p.add_argument("--process-rounds", type=int, default=2)
    p.add_argument("--xla-cache", help="a persistent XLA compilation cache folder for the processes")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # one process of --processes
    args = p.parse_args(argv)
    if args.processes:
        return _process_main(args)
    bench.emit({"case": "setup", "impl": "setup", "xla_flags": bench._set_flags(args)})
    if args.xla_cache:
        from w2sjax.runner import xla_flags

        xla_flags.enable_compilation_cache(args.xla_cache)

    import jax
    import numpy as np
    from flax import nnx

    from w2sjax import parallel, train
    from w2sjax.models import bert, layers, onednn, precision, remat

    if any(v.startswith("step_bf16_onednn") for v in args.variants):
        if onednn.available():
            print(f"error: step_bf16_onednn: {onednn.available()}", file=sys.stderr)
            return 2
        os.environ.pop(onednn.ENV, None)  # every other variant runs XLA's dots

    path = ft.asset_path(args.model)
    shape = ft.shape_of(args.model, path, args.layers)
    b, t = args.batch, args.seq
    # Replicated params make every host device run the whole AdamW update; fsdp splits it.
    mesh = parallel.make_mesh(data=1, fsdp=-1) if args.fsdp else parallel.make_mesh()
    (ids, mask), = ft.fixed_batches(shape.vocab, ft.tokenizer_of(args.model, path).pad_id, count=1, b=b, t=t)
    host = {"inputs": {"input_ids": ids, "attention_mask": mask},
            "labels": np.eye(2, dtype=np.float32)[np.random.default_rng(1).integers(0, 2, b)],
            "weights": np.ones(b, np.float32)}
    batch = train.to_global(mesh, host)
    key = train.place(jax.random.key_data(jax.random.key(0)), parallel.replicated(mesh))
    tcfg = train.TrainConfig(batch_size=b, lr=1e-5)
    original_attention, original_linear, original_remat = (bert.PostNormLayer._attention, precision._linear_bf16,
                                                           remat._remat_call)
    original_attend, original_gated, original_sbs = layers.attend, precision.gated_mlp, precision.side_by_side
    original_tables, original_gated_f32 = layers._rotary_tables, precision._gated_f32
    original_biased_f32 = precision._biased_f32
    original_gelu = layers.gelu_erfc
    calls, flops, holders, rows = {}, {}, {}, {}

    for variant in args.variants:
        if variant.startswith("embed"):
            calls[variant] = _embed_call(args.model, path, args.layers, 2 * b, t, variant.endswith("before"),
                                         "bfloat16" if "bf16" in variant else "float32")
            flops[variant], rows[variant] = shape.forward_flops(t), 2 * b
            continue
        dtype = "bfloat16" if ("bf16" in variant or variant == "step_nodonate") else "float32"
        module = ft.jax_module(args.model, path, dtype, args.layers)
        if variant == "step_bf16_encoder_before":
            _encoder_before(module)
        if "remat" in variant:
            remat.checkpoint_blocks(module)
        model, state = train.init_state(module, "all")
        # The split update's shardings, and its trace (below), read the threshold.
        parallel.UPDATE_SPLIT_MIN_SIZE = 1 << 16 if variant == "step_bf16_split_update" else None
        shardings = train.state_shardings(mesh, state)
        state = train.place(state, shardings)
        loss_fn = train.make_loss("xent")
        settings = train.place(train.step_settings(tcfg, 1000, "xent"), parallel.replicated(mesh))
        fwd_flops = shape.forward_flops(t)
        if variant in ("forward", "forward_bf16", "grad"):
            def objective(params, frozen, batch, model=model, loss_fn=loss_fn):
                logits = model.bind(params, frozen)(batch["inputs"])
                return loss_fn(logits, batch["labels"], step_frac=0.0, weights=batch["weights"])

            fn = jax.jit(jax.value_and_grad(objective) if variant == "grad" else objective)
            calls[variant] = lambda fn=fn, state=state: jax.block_until_ready(fn(state.params, state.frozen, batch))
            flops[variant] = fwd_flops * (3 if variant == "grad" else 1)
            continue
        step = (_row_block_step(model, 4) if variant == "step_bf16_rows4"
                else functools.partial(train.train_step, model=model, mesh=mesh))
        if variant == "step_nodonate":
            fn = jax.jit(step, in_shardings=(shardings, parallel.batch_sharding(mesh),
                                             parallel.replicated(mesh), parallel.replicated(mesh)),
                         out_shardings=(shardings, parallel.replicated(mesh)))
        else:
            fn = train.jit_train_step(step, mesh, shardings)
        # Patch what this variant changes for its trace (the first call), then restore.
        if variant == "step_sdpa":
            bert.PostNormLayer._attention = _sdpa_attention
        if variant == "step_bf16_wgrad_t":
            precision._linear_bf16 = _linear_bf16_wgrad_t()
        if variant == "step_bf16_before":
            precision._linear_bf16, layers.attend = _before_2026_12_06()
        patches = _decoder_before() if variant == "step_bf16_decoder_before" else {}
        originals = {key: getattr(*key) for key in patches}
        for (mod, name), fn_ in patches.items():
            setattr(mod, name, fn_)
        if variant == "step_dense_autodiff":
            precision._biased_f32 = precision._biased_f32_primal
        if variant == "step_gelu_autodiff":
            layers.gelu_erfc = lambda x: jax.nn.gelu(x, approximate=False)
        if variant == "step_gated_autodiff":
            precision._gated_f32 = precision._gated_f32_primal
        if variant == "step_rotary_inline":
            layers._rotary_tables = lambda *a: layers._rotated_attend(*a[:-2])
        if variant == "step_bf16_unfused":
            precision.gated_mlp = lambda act, gate, up, down, x: down(act(gate(x)) * up(x))
        if variant in ("step_bf16_unfused", "step_bf16_unfused_qkv"):
            precision.side_by_side = lambda x, *layers_: tuple(layer(x) for layer in layers_)
        if variant.startswith("step_bf16_onednn"):
            os.environ[onednn.ENV] = "1"  # read while the step is traced, below
            if variant.endswith("_t2"):
                os.environ["W2SJAX_ONEDNN_THREADS"] = "2"
            if variant.endswith("_convert"):
                os.environ[onednn.F32_ENV] = "0"
        if variant == "step_bf16_remat_dots":
            remat._remat_call = nnx.remat(remat._call, policy=jax.checkpoint_policies.dots_with_no_batch_dims_saveable)
        try:
            fn = fn.lower(state, batch, key, settings).compile()
        finally:
            parallel.UPDATE_SPLIT_MIN_SIZE = None
            bert.PostNormLayer._attention = original_attention
            precision._linear_bf16 = original_linear
            remat._remat_call = original_remat
            layers.attend, precision.gated_mlp, precision.side_by_side = original_attend, original_gated, original_sbs
            layers._rotary_tables, precision._gated_f32 = original_tables, original_gated_f32
            precision._biased_f32 = original_biased_f32
            layers.gelu_erfc = original_gelu
            os.environ.pop(onednn.ENV, None)
            os.environ.pop("W2SJAX_ONEDNN_THREADS", None)
            os.environ.pop(onednn.F32_ENV, None)
            for (mod, name), fn_ in originals.items():
                setattr(mod, name, fn_)
        holder = holders[variant] = {"s": state}

        def call(fn=fn, holder=holder):
            holder["s"], m = fn(holder["s"], batch, key, settings)
            holder["m"] = jax.block_until_ready(m)

        calls[variant] = call
        flops[variant] = 3 * fwd_flops

    peak = None
    if args.torch:
        import torch

        from w2sjax.runner import utilisation

        shared = ft.TorchFinetune.shared(args.model, path, args.layers)
        for dtype in args.torch_precision:
            side = ft.TorchFinetune(shared, [(ids, mask)], dtype)
            for n in args.torch_threads or [os.cpu_count() or 1]:
                def torch_call(n=n, side=side):
                    torch.set_num_threads(n)  # one side per thread count, sharing the model and optimizer
                    side()

                name = f"torch_{'bf16' if dtype == 'bfloat16' else 'f32'}_t{n}"
                calls[name], flops[name] = torch_call, 3 * shape.forward_flops(t)
        peak = None if args.child else utilisation.measure_matmul_peak(args.torch_precision[0])
    # CPU seconds of each call (all threads of this process): on a loaded machine wall time also
    # counts waiting for a core, CPU time only the work (and any spinning) of the side itself.
    cpu = {k: [] for k in calls}

    def cpu_timed(k, fn):
        def timed():
            c0 = time.process_time()
            fn()
            cpu[k].append(time.process_time() - c0)
        return timed

    before = loadavg()
    times = interleave({k: cpu_timed(k, fn) for k, fn in calls.items()}, args.repeats)
    after = loadavg()
    base = times.get("step_bf16")
    # The fastest PyTorch side by minimum is the one every side is compared to: the bf16 autocast
    # sides for speed_vs_torch_bf16_*, any side (float32 included) for speed_vs_torch_best_*.
    torch_sides = [k for k in times if k.startswith("torch")]
    bf16_sides = [k for k in torch_sides if k.startswith("torch_bf16")]
    torch_times = min((times[k] for k in bf16_sides), key=min) if bf16_sides else None
    best_torch = min(torch_sides, key=lambda k: min(times[k])) if torch_sides else None
    for variant, ts in times.items():
        sec, med = min(ts), statistics.median(ts)
        rec = {"case": "profile", "impl": "torch" if variant.startswith("torch") else "jax", "model": args.model,
               "variant": variant, "batch": rows.get(variant, b), "seq": t, "layers": shape.layers,
               "mesh": dict(mesh.shape), "peak_rss_mb": _peak_rss_mb(),
               "seconds": round(sec, 4), "median_s": round(med, 4), "times_s": [round(x, 4) for x in ts],
               "cpu_s": [round(x, 3) for x in cpu[variant][-len(ts):]],  # the timed rounds, not the warm-up
               "examples_per_s": round(rows.get(variant, b) / sec, 2),
               "gflops": round(rows.get(variant, b) * flops[variant] / sec / 1e9, 1),
               "loadavg_before": before, "loadavg_after": after}
        if base is not None:
            rec["speed_vs_step_bf16_min"] = round(min(base) / sec, 3)
            rec["speed_vs_step_bf16_median"] = round(statistics.median(base) / med, 3)
        if torch_times is not None:
            rec["speed_vs_torch_bf16_min"] = round(min(torch_times) / sec, 3)
            rec["speed_vs_torch_bf16_median"] = round(statistics.median(torch_times) / med, 3)
        if best_torch is not None:
            rec["torch_best"] = best_torch
            rec["speed_vs_torch_best_min"] = round(min(times[best_torch]) / sec, 3)
            rec["speed_vs_torch_best_median"] = round(statistics.median(times[best_torch]) / med, 3)
        if peak:
            rec.update(peak_gflops=round(peak / 1e9, 1), mfu=round(rows.get(variant, b) * flops[variant] / sec / peak, 3))
        if variant in holders:  # every step variant ran the same steps on the same batch
            rec["loss_after_steps"] = float(holders[variant]["m"]["loss"])
            if "step_bf16" in holders:
                rec["loss_diff_vs_step_bf16"] = abs(rec["loss_after_steps"] - float(holders["step_bf16"]["m"]["loss"]))
        bench.emit(rec)
    if args.trace:
        first = args.variants[0]
        jax.profiler.start_trace(args.trace)
        for _ in range(2):
            calls[first]()
        jax.profiler.stop_trace()
        bench.emit({"case": "profile", "impl": "trace", "model": args.model, "variant": first,
                    **trace_shares(args.trace)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
