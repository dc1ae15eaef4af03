"""bf16 GEMMs of the encoders' shapes, XLA:CPU (YNNPACK) against PyTorch (oneDNN).

    python -m benchmarks.dot_shapes [--repeats 20]

Each shape is ``M x K x N`` with bf16 operands and a float32 (XLA) or bf16 (PyTorch) result, on
one of the two XLA host devices (XLA picks its threads) and with ``torch.set_num_threads(1)``, so
the ratio compares layouts and shapes within a side better than the two libraries. ``lhs_t`` marks the weight-gradient layout
(the left operand contracted on its first axis, ``x.T @ g`` over the tokens). One JSON line per
shape: GFLOP/s of each side by the fastest call, and their ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

SHAPES = ((2048, 768, 768, False), (2048, 768, 3072, False), (2048, 3072, 768, False), (768, 2048, 768, True),
          (3072, 2048, 768, True), (2048, 384, 384, False), (512, 384, 1536, False), (512, 1536, 384, False))


def _best(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.dot_shapes")
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args(argv)
    from benchmarks import run as bench

    bench._set_flags(argparse.Namespace(ynn="dot", devices=2))
    import jax
    import jax.numpy as jnp
    import torch
    from jax import lax

    torch.set_num_threads(1)
    dev = jax.devices()[0]
    for m, k, n, lhs_t in SHAPES:
        a = jax.device_put(jax.random.normal(jax.random.key(0), (k, m) if lhs_t else (m, k), jnp.bfloat16), dev)
        b = jax.device_put(jax.random.normal(jax.random.key(1), (k, n), jnp.bfloat16), dev)
        dims = (((0 if lhs_t else 1,), (0,)), ((), ()))
        f = jax.jit(lambda a, b: lax.dot_general(a, b, dims, preferred_element_type=jnp.float32))
        tj = _best(lambda: f(a, b).block_until_ready(), args.repeats)
        ta = torch.randn(*((k, m) if lhs_t else (m, k))).bfloat16()
        tb = torch.randn(k, n).bfloat16()
        lhs = ta.t() if lhs_t else ta
        tt = _best(lambda: torch.mm(lhs, tb), args.repeats)
        gf = 2 * m * k * n / 1e9
        print(json.dumps({"case": "dot_shape", "m": m, "k": k, "n": n, "lhs_t": lhs_t,
                          "jax_gflops": round(gf / tj, 1), "torch_gflops": round(gf / tt, 1),
                          "jax_over_torch": round(tt / tj, 3)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
