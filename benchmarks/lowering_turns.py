"""Two train programs compiled ahead side by side, as a cold sweep's first finetuning stage compiles
them: when is each ready, with the threads tracing and lowering in turns (``turns``, as
`w2sjax.runner.precompile` does) or all at once (``free``)?

    python -m benchmarks.lowering_turns --modes free turns turns free --out benchmarks/results/DATE_lowering_turns.jsonl

One process, MiniLM-L6 bf16 ``train_loop`` programs of ``finetune trainable=all`` (batch 32) at 32 and 128
tokens, submitted to two threads at once; JAX's in-memory caches are cleared before each repetition
so every one traces, lowers and compiles both. Tracing is Python (the GIL): two threads tracing at once
both finish late while a core may idle; in turns, the first program reaches XLA (C++, GIL released)
sooner. Which wins is a question of idle cores, so only a quiet machine answers it.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import pathlib
import time

from benchmarks.sweep_cold import emit, git_commit


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.lowering_turns", description=__doc__.split("\n\n")[0])
    p.add_argument("--modes", nargs="+", default=["free", "turns", "turns", "free"], choices=("free", "turns"))
    p.add_argument("--out", type=pathlib.Path)
    args = p.parse_args(argv)
    from w2sjax.runner import xla_flags

    xla_flags.apply_defaults(ynn="individual_dot", devices=os.cpu_count() or 1)
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from w2sjax import models, parallel, train
    from w2sjax.config import StudentTrainConfig
    from w2sjax.data.feed import ArrayData
    from w2sjax.runner import precompile, utilisation

    emit({"case": "setup", "impl": "lowering_turns", "commit": git_commit(), "date": time.strftime("%Y-%m-%d", time.gmtime()),
          "utc": time.strftime("%H:%M:%S", time.gmtime()), "cpu": utilisation.cpu_model(), "cores": os.cpu_count(),
          "modes": args.modes, "nice": os.nice(0), "loadavg": [round(x, 2) for x in os.getloadavg()]}, args.out)
    module = models.get_model("minilm-l6").finetune(2, rngs=nnx.Rngs(0), dtype=jnp.bfloat16)
    mesh = parallel.make_mesh()
    n, max_len = 512, 128
    tokens = {"input_ids": np.ones((n, max_len), np.int32), "attention_mask": np.ones((n, max_len), np.int32)}
    data = ArrayData(tokens, np.full((n, 2), 0.5, np.float32))
    cfg = StudentTrainConfig(epochs=2, batch_size=32, lr=3e-5, trainable="all")
    model, abstract = precompile.abstract_state(module, "all", mesh)
    args0 = precompile._train_args(model, abstract, data.take(np.zeros(1, np.int64)), n, cfg=cfg, loss="xent",
                                   mesh=mesh, seed=0, losses=("xent", "logconf"))
    pool = concurrent.futures.ThreadPoolExecutor(2)
    for rep, mode in enumerate(args.modes):
        jax.clear_caches()
        load = round(os.getloadavg()[0], 2)
        t0, c0, ready = time.perf_counter(), time.process_time(), {}

        def job(length):
            stacked = {**args0[1], "inputs": precompile._with_length(args0[1]["inputs"], length, max_len)}
            call = (args0[0], stacked, *args0[2:])
            if mode == "turns":
                precompile._compile(train.train_loop, *call, model=model, mesh=mesh, step_wrapper=None)
            else:
                train.train_loop.lower(*call, model=model, mesh=mesh, step_wrapper=None).compile()
            ready[length] = round(time.perf_counter() - t0, 3)

        for future in [pool.submit(job, length) for length in (32, 128)]:
            future.result()
        emit({"case": "lowering_turns", "mode": mode, "rep": rep, "utc": time.strftime("%H:%M:%S", time.gmtime()),
              "ready_s": {str(k): v for k, v in sorted(ready.items())}, "both_ready_s": max(ready.values()),
              "cpu_s": round(time.process_time() - c0, 2), "loadavg_before": load,
              "loadavg_after": round(os.getloadavg()[0], 2)}, args.out)


if __name__ == "__main__":
    main()
