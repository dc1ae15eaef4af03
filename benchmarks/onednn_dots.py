"""bf16 dots of the finetune steps' dense layers: XLA:CPU (YNNPACK), oneDNN through the FFI custom
call (`w2sjax.models.onednn`), and PyTorch's ``torch.mm`` (oneDNN inside PyTorch), in turns.

    python -m benchmarks.onednn_dots [--repeats 7] [--models minilm-l6 mpnet-base smollm2-135m]
                                     [--out FILE.jsonl]

For each dense layer ``x[T, K_in] @ w[K_in, N_out]`` of a model (T = 32 x 128 tokens) three dots
run, as in a training step: the forward ``x @ w``, the input gradient ``g @ w.T`` and the weight
gradient ``x.T @ g`` (the ``lhs_t`` layout). Each is timed on

* ``xla1`` / ``onednn1``: one XLA host device, all T tokens;
* ``xla2`` / ``onednn2``: both XLA host devices at once (``shard_map`` over the tokens, T/2 each),
  the layout the w2sjax step uses; the weight gradient is each device's partial sum;
* ``torch``: ``torch.mm`` on bf16 tensors, ``torch.set_num_threads(cores)``, all T tokens.

Sides run in a rotating order within every round; one JSON line per dot with each side's best
and median seconds and GFLOP/s, and oneDNN's largest difference from XLA relative to XLA's
largest magnitude (on one device and on two).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

# (K_in, N_out) of each dense layer, the side-by-side projections as one dot (as the models run them).
LAYERS = {
    "minilm-l6": ((384, 1152), (384, 384), (384, 1536), (1536, 384)),
    "mpnet-base": ((768, 2304), (768, 768), (768, 3072), (3072, 768)),
    "smollm2-135m": ((576, 960), (576, 576), (576, 3072), (1536, 576)),
}
TOKENS = 32 * 128


def _dots(kin: int, nout: int):
    """(name, lhs shape, rhs shape, transpose_a, transpose_b) of a layer's three dots; the token
    axis is axis 0 of both operands for the weight gradient, axis 0 of the lhs otherwise."""
    t = TOKENS
    return (("fwd", (t, kin), (kin, nout), False, False),
            ("dx", (t, nout), (kin, nout), False, True),
            ("dw", (t, kin), (t, nout), True, False))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.onednn_dots")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--models", nargs="+", default=list(LAYERS), choices=list(LAYERS))
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    from benchmarks import run as bench

    bench._set_flags(argparse.Namespace(ynn="dot", devices=2))
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    from jax.sharding import Mesh, PartitionSpec as P

    from w2sjax.models import onednn

    reason = onednn.available()
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 1
    cores = len(os.sched_getaffinity(0))
    torch.set_num_threads(cores)
    devs = jax.devices()
    mesh = Mesh(np.array(devs[:2]), ("data",))
    out = open(args.out, "a") if args.out else None

    def emit(rec):
        line = json.dumps(rec)
        print(line, flush=True)
        if out:
            out.write(line + "\n")
            out.flush()

    emit({"case": "setup", "impl": "onednn_dots", "start_utc": time.strftime("%H:%M:%S", time.gmtime()),
          "loadavg": open("/proc/loadavg").read().split()[0], "cores": cores, "onednn_threads_2dev": onednn._threads(),
          "argv": sys.argv[1:]})
    for model in args.models:
        for kin, nout in LAYERS[model]:
            for name, sa, sb, ta, tb in _dots(kin, nout):
                a = jax.random.normal(jax.random.key(0), sa, jnp.bfloat16)
                b = jax.random.normal(jax.random.key(1), sb, jnp.bfloat16)
                xla = lambda a, b, ta=ta, tb=tb: onednn._xla(a, b, ta, tb, jnp.float32)
                dnn = lambda a, b, ta=ta, tb=tb: onednn._call(a, b, ta, tb, jnp.float32)
                # Both operands hold the tokens on axis 0 for dw; only the lhs does otherwise.
                specs = (P("data"), P("data")) if name == "dw" else (P("data"), P())
                ospec = P() if name == "dw" else P("data")

                def two(f, specs=specs, ospec=ospec):
                    g = jax.shard_map(f, mesh=mesh, in_specs=specs, out_specs=ospec, check_vma=False)
                    return jax.jit(g)

                a1, b1 = jax.device_put(a, devs[0]), jax.device_put(b, devs[0])
                sh = [jax.sharding.NamedSharding(mesh, s) for s in specs]
                a2, b2 = jax.device_put(a, sh[0]), jax.device_put(b, sh[1])
                ta_t = torch.from_numpy(np.asarray(a.astype(jnp.float32))).bfloat16()
                tb_t = torch.from_numpy(np.asarray(b.astype(jnp.float32))).bfloat16()
                lt, rt = (ta_t.t() if ta else ta_t), (tb_t.t() if tb else tb_t)
                sides = {
                    "xla1": (jax.jit(xla), (a1, b1)),
                    "onednn1": (jax.jit(dnn), (a1, b1)),
                    "xla2": (two(xla), (a2, b2)),
                    "onednn2": (two(dnn), (a2, b2)),
                }
                calls = {k: (lambda f=f, x=x: f(*x).block_until_ready()) for k, (f, x) in sides.items()}
                calls["torch"] = lambda: torch.mm(lt, rt)
                err = 0.0
                for xla_side, dnn_side in (("xla1", "onednn1"), ("xla2", "onednn2")):
                    (fx, args_x), (fd, args_d) = sides[xla_side], sides[dnn_side]
                    ref = np.asarray(fx(*args_x), np.float32)
                    got = np.asarray(fd(*args_d), np.float32)
                    err = max(err, float(np.abs(got - ref).max() / np.abs(ref).max()))
                for c in calls.values():
                    c()
                times = {k: [] for k in calls}
                order = list(calls)
                for r in range(args.repeats):
                    for k in order[r % len(order):] + order[: r % len(order)]:
                        t0 = time.perf_counter()
                        calls[k]()
                        times[k].append(time.perf_counter() - t0)
                m = sa[1] if ta else sa[0]
                kk = sa[0] if ta else sa[1]
                n = sb[0] if tb else sb[1]
                gf = 2 * m * kk * n / 1e9
                rec = {"case": "dot", "model": model, "layer": [kin, nout], "dot": name, "m": m, "k": kk, "n": n,
                       "rel_err": round(err, 6)}
                for k, ts in times.items():
                    rec[k] = {"min_s": round(min(ts), 6), "median_s": round(statistics.median(ts), 6),
                              "gflops": round(gf / min(ts), 1)}
                rec["onednn2_over_xla2_by_min"] = round(min(times["xla2"]) / min(times["onednn2"]), 3)
                rec["onednn1_over_xla1_by_min"] = round(min(times["xla1"]) / min(times["onednn1"]), 3)
                emit(rec)
    emit({"case": "end", "end_utc": time.strftime("%H:%M:%S", time.gmtime()),
          "loadavg": open("/proc/loadavg").read().split()[0]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
