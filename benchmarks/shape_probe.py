"""Seconds of one MiniLM-L6 bf16 finetune step at ``[32, T]`` for T = 128, 64, 32, interleaved.

    python -m benchmarks.shape_probe [REPEATS]

Says what a length bucket can save: if a step at half the length does not take about half the
time, cutting padding cannot pay. Prints one JSON line per length.
"""

import json
import sys


def main(argv=None) -> int:
    from benchmarks import run

    run._set_flags(run._parse(["--cases", "finetune"]))
    from benchmarks import finetune as ft
    from benchmarks.interleave import run_case

    repeats = int((argv or sys.argv[1:] or ["3"])[0])
    path = ft.asset_path("minilm-l6")
    tok, shape = ft.tokenizer_of("minilm-l6", path), ft.shape_of("minilm-l6", path)
    module = ft.jax_module("minilm-l6", path, "bfloat16")
    sides = {f"jax_bf16_T{t}": ft.JaxFinetune(module, ft.fixed_batches(shape.vocab, tok.pad_id, count=1, t=t))
             for t in (128, 64, 32)}
    for rec in run_case("shape_probe", sides, repeats, examples=ft.BATCH):
        keys = ("impl", "examples_per_s", "examples_per_s_median", "times_s", "loadavg_before", "loadavg_after")
        print(json.dumps({k: rec.get(k) for k in keys}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
