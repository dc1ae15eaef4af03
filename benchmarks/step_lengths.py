"""MiniLM-L6's train step at the short lengths a sweep's batches take: w2sjax's `train.train_loop`
(the program `train.fit` runs, several steps a call) against a plain PyTorch float32 step, in turns.

    python -m benchmarks.step_lengths --lengths 16 24 32 40 80 128 --rounds 2 --out FILE.jsonl

Batch 32, float32, AdamW, cross-entropy; random token ids, every position real (padding costs the
same as real tokens on both sides). Each round times ``--steps`` steps of each side at each length;
one record per (side, length) with the seconds per step of every round, then the ratio by minimum.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

import numpy as np


def jax_side(lengths, batch: int, steps: int):
    import jax

    from benchmarks import finetune as ft
    from w2sjax import parallel, train

    path = ft.asset_path("minilm-l6")
    module = ft.jax_module("minilm-l6", path, "float32")
    mesh = parallel.make_mesh()
    model, state = train.init_state(module, "all")
    shardings = train.state_shardings(mesh, state)
    holder = {"state": train.place(state, shardings)}
    replicated = parallel.replicated(mesh)
    cfg = train.TrainConfig(batch_size=batch, lr=1e-5)
    settings = train.place(train.step_settings(cfg, 1000, "xent", losses=("xent", "logconf")), replicated)
    rng = train.place(jax.random.key_data(jax.random.key(0)), replicated)
    count = train.place(np.int32(steps), replicated)
    chunk = 1 << (steps - 1).bit_length()
    calls = {}
    for t in lengths:
        ids = np.random.default_rng(t).integers(1000, 20000, (chunk, batch, t)).astype(np.int32)
        host = {"inputs": {"input_ids": ids, "attention_mask": np.ones_like(ids)},
                "labels": np.eye(2, dtype=np.float32)[np.random.default_rng(1).integers(0, 2, (chunk, batch))],
                "weights": np.ones((chunk, batch), np.float32)}
        batches = train.to_global_stacked(mesh, host)

        def call(batches=batches):
            holder["state"], m = train.train_loop(holder["state"], batches, count, rng, settings, model=model,
                                                  mesh=mesh)
            jax.block_until_ready(m)
        calls[t] = call
    return calls


def torch_side(lengths, batch: int, steps: int, threads: int):
    import torch

    from benchmarks import finetune as ft

    torch.set_num_threads(threads)
    net, pool = ft.torch_model("minilm-l6", ft.asset_path("minilm-l6"))
    net.eval()
    head = torch.nn.Linear(net.config.hidden_size, 2)
    params = list(net.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=1e-5)
    y = torch.from_numpy(np.eye(2, dtype=np.float32)[np.random.default_rng(1).integers(0, 2, batch)])
    calls = {}
    for t in lengths:
        ids = torch.from_numpy(np.random.default_rng(t).integers(1000, 20000, (batch, t)).astype(np.int64))
        mask = torch.ones_like(ids)

        def call(ids=ids, mask=mask):
            for _ in range(steps):
                logits = head(pool(net(input_ids=ids, attention_mask=mask).last_hidden_state, mask))
                loss = -(y * torch.log_softmax(logits, -1)).sum(-1).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        calls[t] = call
    return calls


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.step_lengths", description=__doc__.split("\n\n")[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[16, 24, 32, 40, 80, 128])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=4, help="steps per timed call")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--devices", type=int, default=os.cpu_count() or 1)
    p.add_argument("--ynn", choices=("dot", "off", "all"), default="dot")
    p.add_argument("--out", type=pathlib.Path)
    args = p.parse_args(argv)
    from benchmarks import run as bench
    from benchmarks.sweep_cold import emit, git_commit

    flags = bench._set_flags(args)
    emit({"case": "setup", "impl": "step_lengths", "commit": git_commit(), "utc": time.strftime("%H:%M:%S", time.gmtime()),
          "date": time.strftime("%Y-%m-%d", time.gmtime()), "xla_flags": flags, "nice": os.nice(0),
          "batch": args.batch, "steps": args.steps, "loadavg": [round(x, 2) for x in os.getloadavg()]}, args.out)
    sides = {"jax": jax_side(args.lengths, args.batch, args.steps),
             "torch": torch_side(args.lengths, args.batch, args.steps, args.devices)}
    first = {}
    for name, side in sides.items():  # compile and warm up, outside the timed rounds
        for t, call in side.items():
            start = time.perf_counter()
            call()
            first[(name, t)] = round(time.perf_counter() - start, 3)
    times = {(s, t): [] for s in sides for t in args.lengths}
    for r in range(args.rounds):
        for t in args.lengths:
            for s in (sides if r % 2 == 0 else dict(reversed(list(sides.items())))):
                start = time.perf_counter()
                sides[s][t]()
                times[(s, t)].append(round((time.perf_counter() - start) / args.steps, 4))
    for (s, t), v in times.items():
        emit({"case": "step_lengths", "impl": s, "seq": t, "batch": args.batch, "s_per_step": v,
              "first_call_s": first[(s, t)]}, args.out)  # jax: its compile and the first call's steps
    for t in args.lengths:
        emit({"case": "step_lengths", "impl": "ratio", "seq": t,
              "jax_over_torch_min": round(min(times[("jax", t)]) / min(times[("torch", t)]), 3),
              "loadavg": [round(x, 2) for x in os.getloadavg()]}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
