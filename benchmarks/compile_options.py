"""Per-program XLA options: what each costs to compile and what it does to the program's run time.

    python -m benchmarks.compile_options --variants default O1 O0 cheap --rounds 2 \
        --out benchmarks/results/DATE_compile_options.jsonl

Each variant runs in its own fresh process with the sweep's XLA flags (``individual_dot``, one host
device per core) and compiles, through ``jax.jit(...).lower(...).compile(compiler_options=...)``, the
programs the cold sweep (`benchmarks.sweep_cold`) compiles for MiniLM-L6 in bf16: the ``train_loop``
of ``finetune trainable=all`` (batch 32) at 32 and 128 tokens, and ``predict_step`` (64 rows) at 32,
64 and 128 tokens. Per program it records the compile CPU seconds (``time.process_time``, all
threads: robust to load) and wall seconds, then runs the program on random tokens: the seconds per
train step (a call of 4 steps, best of 3 after a first call) and per predict call (best of 5), and
the values (last loss, a probability sum) that tell whether the variant changes the numbers.
Variants alternate order by round (A B C, C B A) so load falls on all. ``--losses xent,logconf``
compiles only those losses into the train programs (`train.compiled_losses`; every registered
loss by default), as `w2sjax run` does for a run of those losses.

``--optimizer adamw flatten flatcarry sgd`` compiles the train programs with each layout of the
optimizer update in `benchmarks.flat_optimizer` (a fresh process per variant and layout), and records
per program its StableHLO op count, trace + lower CPU seconds, fusions, and a sha256 prefix of the
parameters after its steps (equal prefixes: the layout trains bit for bit alike). ``--train-only``
skips the predict programs.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

from benchmarks.flat_optimizer import OPTIMIZERS
from benchmarks.sweep_cold import emit

VARIANTS = {
    "default": {},
    "O2": {"xla_backend_optimization_level": 2},
    "O1": {"xla_backend_optimization_level": 1},
    "O0": {"xla_backend_optimization_level": 0},
    "cheap": {"xla_llvm_disable_expensive_passes": True},
    "O1cheap": {"xla_backend_optimization_level": 1, "xla_llvm_disable_expensive_passes": True},
    "O0cheap": {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True},
    "nounroll": {"xla_cpu_disable_loop_unrolling": True},
    "noslp": {"xla_cpu_disable_slp_vectorizer": True},
    "noemitters": {"xla_cpu_use_fusion_emitters": False},
}
TRAIN_LENGTHS = (32, 128)
PREDICT_LENGTHS = (32, 64, 128)


def _timed(fn):
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, round(time.process_time() - c0, 3), round(time.perf_counter() - w0, 3)


def child(variant: str, steps: int, losses: tuple[str, ...] | None, optimizer: str = "adamw",
          train_only: bool = False) -> dict:
    from w2sjax.runner import xla_flags

    xla_flags.apply_defaults(ynn="individual_dot", devices=os.cpu_count() or 1)
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from w2sjax import models, parallel, train
    from w2sjax.config import StudentTrainConfig
    from w2sjax.data.feed import ArrayData, stacked_batch_sharding
    from benchmarks import flat_optimizer
    from w2sjax.runner import checkpoint, precompile

    opts = VARIANTS[variant] or None
    loop, state_fn, static = flat_optimizer.patch(optimizer)
    module = models.get_model("minilm-l6").finetune(2, rngs=nnx.Rngs(0), dtype=jnp.bfloat16)
    mesh = parallel.make_mesh()
    n, max_len, rng = 512, 128, np.random.default_rng(0)
    ids = rng.integers(1000, 20000, size=(n, max_len)).astype(np.int32)
    data = ArrayData({"input_ids": ids, "attention_mask": np.ones((n, max_len), np.int32)},
                     np.full((n, 2), 0.5, np.float32))
    cfg = StudentTrainConfig(epochs=2, batch_size=32, lr=3e-5, trainable="all")
    rec = {"case": "compile_options", "variant": variant, "options": VARIANTS[variant], "programs": [],
           "losses": list(train.compiled_losses("xent", losses)), "optimizer": optimizer}
    model, abstract = precompile.abstract_state(module, "all", mesh)
    abstract = jax.eval_shape(state_fn, abstract)
    abstract = precompile._abstract(abstract, train.state_shardings(mesh, abstract))
    args = precompile._train_args(model, abstract, data.take(np.zeros(1, np.int64)), n, cfg=cfg, loss="xent",
                                  mesh=mesh, seed=0, losses=losses)
    _, state = train.init_state(module, "all")
    state = jax.tree.map(np.asarray, state_fn(state))  # host copies: each program gets fresh, donatable arrays
    shardings = train.state_shardings(mesh, state)
    for length in TRAIN_LENGTHS:
        stacked = {**args[1], "inputs": precompile._with_length(args[1]["inputs"], length, max_len)}
        lowered, lower_cpu, _ = _timed(lambda: loop.lower(args[0], stacked, *args[2:], model=model, mesh=mesh,
                                                          **static))
        ops = lowered.as_text().count(" = ")
        compiled, cpu, wall = _timed(lambda: lowered.compile(compiler_options=opts))
        k, b = stacked["labels"].shape[:2]
        host = {"inputs": {"input_ids": ids[: k * b, :length].reshape(k, b, length),
                           "attention_mask": np.ones((k, b, length), np.int32)},
                "labels": np.tile(np.array([0.2, 0.8], np.float32), (k, b, 1)), "weights": np.ones((k, b), np.float32)}
        batches = jax.tree.map(lambda a: jax.device_put(a, stacked_batch_sharding(mesh)), host)
        settings = train.place(train.step_settings(cfg, 16, "xent", losses=losses), parallel.replicated(mesh))
        key = train.place(jax.random.key_data(jax.random.key(0)), parallel.replicated(mesh))
        count = train.place(np.int32(steps), parallel.replicated(mesh))
        st = train.place(state, shardings)
        runs = []
        for _ in range(4):
            t0 = time.perf_counter()
            st, metrics = compiled(st, batches, count, key, settings)
            jax.block_until_ready(metrics)
            runs.append(time.perf_counter() - t0)
        rec["programs"].append({"name": "train_loop", "length": length, "stablehlo_ops": ops,
                                "trace_lower_cpu_s": lower_cpu, "compile_cpu_s": cpu, "compile_wall_s": wall,
                                "fusions": compiled.as_text().count(" fusion("),
                                "run_s_per_step": round(min(runs[1:]) / steps, 4),
                                "first_call_s": round(runs[0], 3), "loss": float(metrics["loss"]),
                                "params_sha256": checkpoint.state_sha256(st.params)[:16]})
        params = st
    if train_only:
        return rec
    predict = train._predict_jit(train.cached_predict_step(model), False)
    for length in PREDICT_LENGTHS:
        rows = 64
        spec = {k: jax.ShapeDtypeStruct((rows, length), np.int32, sharding=parallel.batch_sharding(mesh))
                for k in ("input_ids", "attention_mask")}
        lowered = predict.lower(abstract, spec)
        compiled, cpu, wall = _timed(lambda: lowered.compile(compiler_options=opts))
        x = {"input_ids": jax.device_put(ids[:rows, :length], parallel.batch_sharding(mesh)),
             "attention_mask": jax.device_put(np.ones((rows, length), np.int32), parallel.batch_sharding(mesh))}
        runs = []
        for _ in range(6):
            t0 = time.perf_counter()
            probs = jax.block_until_ready(compiled(params, x))
            runs.append(time.perf_counter() - t0)
        rec["programs"].append({"name": "predict_step", "length": length, "compile_cpu_s": cpu, "compile_wall_s": wall,
                                "run_s": round(min(runs[1:]), 4),
                                "p0_sum": float(np.asarray(probs, np.float64)[:, 0].sum())})
    return rec


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.compile_options", description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", nargs="+", default=["default", "O0"], choices=sorted(VARIANTS))
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--steps", type=int, default=4, help="train steps per timed call")
    p.add_argument("--losses", help="comma-separated losses compiled into the train programs (default: all)")
    p.add_argument("--optimizer", nargs="+", default=["adamw"], choices=OPTIMIZERS,
                   help="the train programs' optimizer layouts to compare (benchmarks.flat_optimizer)")
    p.add_argument("--train-only", action="store_true", help="compile and run the train programs only")
    p.add_argument("--out", type=pathlib.Path)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.steps, tuple(args.losses.split(",")) if args.losses else None,
                               args.optimizer[0], args.train_only)))
        return
    from benchmarks.sweep_cold import git_commit
    from w2sjax.runner import utilisation

    emit({"case": "setup", "impl": "compile_options", "commit": git_commit(), "date": time.strftime("%Y-%m-%d", time.gmtime()),
          "utc": time.strftime("%H:%M:%S", time.gmtime()), "cpu": utilisation.cpu_model(), "cores": os.cpu_count(),
          "variants": args.variants, "optimizers": args.optimizer, "rounds": args.rounds, "losses": args.losses,
          "nice": os.nice(0), "loadavg": [round(x, 2) for x in os.getloadavg()]}, args.out)
    cases = [(v, o) for v in args.variants for o in args.optimizer]
    for r in range(args.rounds):
        for variant, optimizer in cases if r % 2 == 0 else cases[::-1]:
            load = round(os.getloadavg()[0], 2)
            extra = (["--losses", args.losses] if args.losses else []) + (["--train-only"] if args.train_only else [])
            proc = subprocess.run([sys.executable, "-m", "benchmarks.compile_options", "--child", variant,
                                   "--optimizer", optimizer, "--steps", str(args.steps), *extra],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"{variant}: exited {proc.returncode}:\n{proc.stderr[-3000:]}")
            rec = {"date": time.strftime("%Y-%m-%d", time.gmtime()), "utc": time.strftime("%H:%M:%S", time.gmtime()),
                   "loadavg_before": load, "loadavg_after": round(os.getloadavg()[0], 2), "round": r,
                   **json.loads(proc.stdout.strip().splitlines()[-1])}
            emit(rec, args.out)


if __name__ == "__main__":
    main()
