"""Seconds to load a GGUF decoder, the first time in a process and again, as each finetuned stage does.

    python -m benchmarks.gguf_load [--models gemma3-270m smollm2-135m] [--loads 3]

Every finetuned stage of a sweep builds its student afresh (`gguf.load`, bf16 compute on float32
weights). The first load parses the file's metadata and builds its tokenizer; `gguf.open_gguf`
keeps both for the later loads, which only dequantize the tensors and build the module. One JSON
line per load, then one per model with the first and the best later load, and the parse and
tokenizer build timed apart on a fresh `GGUFFile`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gguf_load")
    p.add_argument("--models", nargs="+", default=["gemma3-270m", "smollm2-135m"])
    p.add_argument("--loads", type=int, default=3)
    args = p.parse_args(argv)
    import jax.numpy as jnp

    from w2sjax import assets
    from w2sjax.models import gguf

    for model in args.models:
        path = gguf.find_gguf(assets.fetch(model))
        times = []
        for i in range(args.loads):
            t0 = time.perf_counter()
            module, _ = gguf.load(path, dtype=jnp.bfloat16, param_dtype=jnp.float32)
            times.append(time.perf_counter() - t0)
            del module
            print(json.dumps({"case": "gguf_load", "model": model, "load": i, "seconds": round(times[-1], 3)}), flush=True)
        t0 = time.perf_counter()
        fresh = gguf.GGUFFile(path)
        parse = time.perf_counter() - t0
        gguf.GGUFTokenizer(fresh)
        tokenizer = time.perf_counter() - t0 - parse
        print(json.dumps({"case": "gguf_load_summary", "model": model, "first_s": round(times[0], 3),
                          "later_best_s": round(min(times[1:]), 3) if len(times) > 1 else None,
                          "parse_s": round(parse, 3), "tokenizer_s": round(tokenizer, 3)}), flush=True)
        gguf._open_cached.cache_clear()
    return 0


if __name__ == "__main__":
    sys.exit(main())
