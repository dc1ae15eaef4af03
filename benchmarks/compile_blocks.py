"""CPU seconds to trace and compile an encoder's train and predict programs, with its blocks unrolled (as
the library runs them), as one ``lax.scan`` over their stacked parameters (``scanned``), or each as a call of
one nested ``jax.jit`` (``called``); the two variants are defined here and patched in.

    python -m benchmarks.compile_blocks --models minilm-l6 mpnet-base --out benchmarks/results/DATE_compile_blocks.jsonl
    python -m benchmarks.compile_blocks --encoder-only --out ...

Each (model, variant) compiles in its own fresh process, on 2 host devices, for the bf16 ``train_loop``
program that ``finetune trainable=all``, batch 32, 128 tokens compiles (`w2sjax.runner.precompile`), and
the ``predict_step`` program at [256, 128]. ``--encoder-only`` compiles instead, on one device, the bare
MiniLM-L6 encoder's forward and gradient (of the summed last hidden state, [32, 128] tokens) with a third
variant, ``prestacked``: the blocks' parameters arrive already stacked, so the program neither stacks
them nor slices their gradients apart. CPU seconds (``time.process_time``, all threads) are robust to
load from other jobs, wall seconds are not.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

from benchmarks.sweep_cold import emit

VARIANTS = ("unrolled", "scanned", "called")
ENCODER_VARIANTS = ("unrolled", "scanned", "prestacked")


def scan_like_blocks(blocks, x, *args):
    """``block(x, *args)`` for each block in turn, as one ``lax.scan`` over the blocks' stacked states
    (all blocks alike: same graph definition and leaf shapes)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    if len(blocks) == 1:
        return blocks[0](x, *args)
    graphdef = nnx.split(blocks[0])[0]
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *(nnx.split(b)[1] for b in blocks))
    body = lambda carry, state: (nnx.merge(graphdef, state)(carry, *args), None)
    return jax.lax.scan(body, x, stacked)[0]


def call_like_blocks(blocks, x, *args):
    """``block(x, *args)`` for each block in turn, each as a call of one nested ``jax.jit`` of the block's
    graph definition: JAX traces and lowers it once for all like blocks (XLA inlines the calls)."""
    from flax import nnx

    for block in blocks:
        graphdef, state = nnx.split(block)
        x = _block_call(graphdef, state, x, *args)
    return x


def _block_call_impl(graphdef, state, x, *args):
    from flax import nnx

    return nnx.merge(graphdef, state)(x, *args)


def _block_call(graphdef, state, x, *args):
    import jax

    global _jitted_block
    if _jitted_block is None:
        _jitted_block = jax.jit(_block_call_impl, static_argnums=0)
    return _jitted_block(graphdef, state, x, *args)


_jitted_block = None


def _patch_blocks(run):
    """Make BERT's and MPNet's ``run_blocks`` run their blocks through ``run(blocks, x, *args)``."""
    from w2sjax.models import bert, mpnet

    def bert_blocks(self, x, attention_mask, start=0, stop=None):
        keep = attention_mask[:, None, None, :].astype(bool)
        return run([b for _, b in self.held_blocks(start, stop)], x, keep)

    def mpnet_blocks(self, x, attention_mask, start=0, stop=None):
        keep = attention_mask[:, None, None, :].astype(bool)
        bias = self.position_bias(x.shape[1])
        return run([b for _, b in self.held_blocks(start, stop)], x, keep, bias)

    bert.BertEncoder.run_blocks = bert_blocks
    mpnet.MPNetEncoder.run_blocks = mpnet_blocks


def child(model_name: str, variant: str) -> dict:
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from w2sjax import models, parallel, train
    from w2sjax.config import StudentTrainConfig
    from w2sjax.data.feed import ArrayData
    from w2sjax.runner import precompile

    if variant != "unrolled":
        _patch_blocks(scan_like_blocks if variant == "scanned" else call_like_blocks)
    module = models.get_model(model_name).finetune(2, rngs=nnx.Rngs(0), dtype=jnp.bfloat16)
    mesh = parallel.make_mesh()
    n, length = 512, 128
    tokens = {"input_ids": np.ones((n, length), np.int32), "attention_mask": np.ones((n, length), np.int32)}
    data = ArrayData(tokens, np.full((n, 2), 0.5, np.float32))
    cfg = StudentTrainConfig(epochs=2, batch_size=32, lr=3e-5, trainable="all")
    rec = {"case": "compile_blocks", "model": model_name, "variant": variant}
    c0 = time.process_time()
    model, state = precompile.abstract_state(module, "all", mesh)
    args = precompile._train_args(model, state, data.take(np.zeros(1, np.int64)), n, cfg=cfg, loss="xent",
                                  mesh=mesh, seed=0)
    lowered = train.train_loop.lower(*args, model=model, mesh=mesh, step_wrapper=None)
    c1 = time.process_time()
    lowered.compile()
    c2 = time.process_time()
    rows = 256
    inputs = {k: jax.ShapeDtypeStruct((rows, length), np.int32, sharding=parallel.batch_sharding(mesh))
              for k in tokens}
    predict = train._predict_jit(train.cached_predict_step(model), False).lower(state, inputs)
    c3 = time.process_time()
    predict.compile()
    c4 = time.process_time()
    rec.update(train_ops=lowered.as_text().count(" = "), train_lower_cpu_s=round(c1 - c0, 2),
               train_compile_cpu_s=round(c2 - c1, 2), predict_ops=predict.as_text().count(" = "),
               predict_lower_cpu_s=round(c3 - c2, 2), predict_compile_cpu_s=round(c4 - c3, 2))
    return rec


def encoder_child(variant: str) -> dict:
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=1"
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from w2sjax.models import bert

    encoder = nnx.eval_shape(lambda: bert.BertEncoder(bert.MINILM_CONFIG, dtype=jnp.bfloat16, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(encoder)
    block_def = nnx.split(encoder.layers[0])[0]
    ids = jax.ShapeDtypeStruct((32, 128), jnp.int32)
    blocks = [nnx.split(b)[1] for b in encoder.layers]
    stacked = jax.tree.map(lambda *a: jax.ShapeDtypeStruct((len(blocks), *a[0].shape), a[0].dtype), *blocks)

    def forward(state, stacked, ids):
        enc = nnx.merge(graphdef, state)
        mask = jnp.ones_like(ids)
        x = enc.embed_tokens(ids, mask)
        keep = mask[:, None, None, :].astype(bool)
        if variant == "prestacked":
            x = jax.lax.scan(lambda c, p: (nnx.merge(block_def, p)(c, keep), None), x, stacked)[0]
        elif variant == "scanned":
            x = scan_like_blocks(list(enc.layers), x, keep)
        else:
            for block in enc.layers:
                x = block(x, keep)
        return x.sum()

    rec = {"case": "compile_blocks_encoder", "model": "minilm-l6", "variant": variant}
    for name, fn in (("forward", forward), ("grad", jax.grad(forward, argnums=(0, 1)))):
        c0 = time.process_time()
        lowered = jax.jit(fn).lower(state, stacked, ids)
        c1 = time.process_time()
        lowered.compile()
        rec[f"{name}_lower_cpu_s"] = round(c1 - c0, 2)
        rec[f"{name}_compile_cpu_s"] = round(time.process_time() - c1, 2)
    return rec


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.compile_blocks", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["minilm-l6"])
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--out", type=pathlib.Path)
    p.add_argument("--encoder-only", action="store_true")
    p.add_argument("--child", nargs=2, metavar=("MODEL", "VARIANT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        model, variant = args.child
        print(json.dumps(encoder_child(variant) if model == "encoder" else child(model, variant)))
        return
    models, variants = (["encoder"], ENCODER_VARIANTS) if args.encoder_only else (args.models, VARIANTS)
    for r in range(args.rounds):
        for model in models:
            for variant in variants if r % 2 == 0 else variants[::-1]:
                proc = subprocess.run([sys.executable, "-m", "benchmarks.compile_blocks", "--child", model, variant],
                                      capture_output=True, text=True, check=True)
                rec = {"date": time.strftime("%Y-%m-%d", time.gmtime()), "utc": time.strftime("%H:%M", time.gmtime()),
                       "loadavg": round(os.getloadavg()[0], 2), "round": r,
                       **json.loads(proc.stdout.strip().splitlines()[-1])}
                emit(rec, args.out)


if __name__ == "__main__":
    main()
