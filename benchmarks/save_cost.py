"""What a finished stage's save costs, with Orbax's zstd compression of its arrays and without.

    python -m benchmarks.save_cost [--model minilm-l6] [--rounds 3] [--out FILE.jsonl]

One process: the model's pretrained parameters (as `train.fit` holds them, replicated over the
host devices) and a sweep stage's predictions are saved as `stage_runner` saves a finished stage
(`checkpoint.save(..., final=True, checksum=True, model=params)`), alternately compressed (Orbax's
default, what w2sjax wrote before 2026-12-07) and not, into one scratch folder. Each record gives the
seconds of each save, the folder's size, and whether both read back bit for bit.
"""

from __future__ import annotations

import argparse
import functools
import os
import pathlib
import shutil
import tempfile
import time

from benchmarks.sweep_cold import emit


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.save_cost", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="minilm-l6")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out")
    args = p.parse_args(argv)
    from w2sjax.runner import xla_flags

    xla_flags.apply_defaults()
    import jax
    import numpy as np
    from flax import nnx

    from w2sjax import models, parallel, train
    from w2sjax.runner import checkpoint, utilisation

    mesh = parallel.make_mesh()
    _, state = train.init_state(models.get_model(args.model).finetune(2, rngs=nnx.Rngs(0)), "all")
    params = train.place(state.params, train.state_shardings(mesh, state).params)
    rng = np.random.default_rng(0)
    preds = {k: rng.dirichlet(np.ones(2), size=n).astype(np.float32) for k, n in (("b", 256), ("val", 64), ("test", 256))}
    handlers = checkpoint._handlers
    compressed = functools.partial(handlers, compress=True)

    root = pathlib.Path(tempfile.mkdtemp(prefix="w2sjax_save_cost_"))
    times = {"zstd": [], "raw": []}
    try:
        for r in range(args.rounds):
            for kind in (["zstd", "raw"] if r % 2 == 0 else ["raw", "zstd"]):
                checkpoint._handlers = compressed if kind == "zstd" else handlers
                start = time.perf_counter()
                checkpoint.save(root, f"{kind}{r}", 0, preds, meta={"round": r}, final=True, checksum=True, model=params)
                times[kind].append(round(time.perf_counter() - start, 3))
        checkpoint._handlers = handlers
        abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), params)
        same = {}
        for kind in times:
            restored, _ = checkpoint.restore_model(root, f"{kind}0", abstract)
            same[kind] = all(np.array_equal(np.asarray(a), np.asarray(b))
                             for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(params)))
        size = {kind: checkpoint.model_bytes(root, f"{kind}0") for kind in times}
    finally:
        checkpoint._handlers = handlers
        shutil.rmtree(root, ignore_errors=True)
    rec = {"case": "save_cost", "model": args.model, "cpu": utilisation.cpu_model(), "cores": os.cpu_count(),
           "loadavg": [round(x, 2) for x in os.getloadavg()], "params": int(sum(np.size(x) for x in jax.tree.leaves(params))),
           **{f"{k}_s": v for k, v in times.items()}, "model_mb": {k: round(v / 2**20, 1) for k, v in size.items()},
           "restored_bit_for_bit": same}
    emit(rec, pathlib.Path(args.out) if args.out else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
