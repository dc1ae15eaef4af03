"""Where a MiniLM finetune step spends its time, and what the cheap levers buy.

    python -m benchmarks.profile_step [--batch 32] [--seq 128] [--variants ...]

Times, at one shape, on a data-parallel mesh over the host devices:
  forward      logits only (jit)
  grad         loss + gradients (jit of value_and_grad)
  step         the library's full train step (grad + AdamW + bookkeeping), donated state
  step_nodonate  the same without donating the state
  step_sdpa    attention via jax.nn.dot_product_attention instead of the explicit einsums
  step_bf16    matmuls with bf16 operands and float32 accumulation (models/precision.py);
               parameters, optimizer and residual stream stay float32
  forward_bf16 the forward pass with those matmuls
Prints one JSON line per variant. Flags are set like benchmarks.run (same --devices/--ynn).
"""

from __future__ import annotations

import argparse
import functools
import sys

from benchmarks import run as bench

VARIANTS = ("forward", "forward_bf16", "grad", "step", "step_nodonate", "step_sdpa", "step_bf16")


def _sdpa_attention(self, x, keep, bias=None):
    import jax

    b, t, h = x.shape
    split = lambda y: y.reshape(b, t, self.num_heads, h // self.num_heads)
    q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
    ctx = jax.nn.dot_product_attention(q, k, v, mask=keep, implementation="xla")
    return self.attn_out(ctx.reshape(b, t, h))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile_step")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--layers", type=int, default=None)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--devices", type=int, default=2)
    p.add_argument("--ynn", choices=("dot", "off", "all"), default="dot")
    p.add_argument("--fsdp", action="store_true",
                   help="shard parameters and optimizer state over the devices (fsdp axis) instead of replicating")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    args = p.parse_args(argv)
    bench.emit({"case": "setup", "impl": "setup", "xla_flags": bench._set_flags(args)})

    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from w2sjax import assets, parallel, train
    from w2sjax.models import bert

    path = assets.fetch("minilm-l6-v2")
    b, t = args.batch, args.seq
    # Replicated params make every host device run the whole AdamW update; fsdp splits it.
    mesh = parallel.make_mesh(data=1, fsdp=-1) if args.fsdp else parallel.make_mesh()
    rng = np.random.default_rng(0)
    lens = rng.integers(t // 2, t + 1, size=b)
    mask = (np.arange(t)[None, :] < lens[:, None]).astype(np.int32)
    host = {"inputs": {"input_ids": rng.integers(1000, 30000, (b, t)).astype(np.int32) * mask,
                       "attention_mask": mask},
            "labels": np.eye(2, dtype=np.float32)[rng.integers(0, 2, b)],
            "weights": np.ones(b, np.float32)}
    batch = train.to_global(mesh, host)
    key = train.place(jax.random.key_data(jax.random.key(0)), parallel.replicated(mesh))
    tcfg = train.TrainConfig(batch_size=b, lr=1e-5)
    base_loss = None

    for variant in args.variants:
        dtype = jnp.bfloat16 if variant.endswith("bf16") else jnp.float32
        enc = bert.load_bert(path, num_layers=args.layers, dtype=dtype)
        cfg = enc.config
        module = bert.classifier(enc, 2, rngs=nnx.Rngs(0))
        model, state = train.init_state(module, "all")
        shardings = train.state_shardings(mesh, state)
        state = train.place(state, shardings)
        loss_fn = train.make_loss("xent")
        settings = train.place(train.step_settings(tcfg, 1000, "xent"), parallel.replicated(mesh))
        fwd_flops = bench.flops_forward(cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size, t)
        original = bert.PostNormLayer._attention
        if variant == "step_sdpa":
            bert.PostNormLayer._attention = _sdpa_attention
        try:
            if variant in ("forward", "forward_bf16", "grad"):
                def objective(params, frozen, batch):
                    logits = model.bind(params, frozen)(batch["inputs"])
                    return loss_fn(logits, batch["labels"], step_frac=0.0, weights=batch["weights"])

                fn = jax.jit(jax.value_and_grad(objective) if variant == "grad" else objective)
                call = lambda: jax.block_until_ready(fn(state.params, state.frozen, batch))
                flops = fwd_flops * (3 if variant == "grad" else 1)
            else:
                step = functools.partial(train.train_step, model=model)
                if variant == "step_nodonate":
                    fn = jax.jit(step, in_shardings=(shardings, parallel.batch_sharding(mesh),
                                                     parallel.replicated(mesh), parallel.replicated(mesh)),
                                 out_shardings=(shardings, parallel.replicated(mesh)))
                else:
                    fn = train.jit_train_step(step, mesh, shardings)
                holder = {"s": state}

                def call():
                    holder["s"], m = fn(holder["s"], batch, key, settings)
                    jax.block_until_ready(m)
                    holder["m"] = m
                flops = 3 * fwd_flops
            sec = bench.timed(call, args.repeats)
        finally:
            bert.PostNormLayer._attention = original
        rec = {"case": "profile", "impl": "jax", "variant": variant, "batch": b, "seq": t,
               "mesh": dict(mesh.shape),
               "seconds": round(sec, 4), "examples_per_s": round(b / sec, 2),
               "gflops": round(b * flops / sec / 1e9, 1)}
        if variant.startswith("step"):
            loss = float(holder["m"]["loss"])
            base_loss = loss if variant == "step" else base_loss
            rec["loss_after_steps"] = loss
            if base_loss is not None and variant != "step":
                rec["loss_diff_vs_fp32"] = abs(loss - base_loss)
        bench.emit(rec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
