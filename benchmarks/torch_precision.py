"""PyTorch's MiniLM-L6 train step in float32 and under CPU bf16 autocast, alternating: which is
PyTorch at its best on this CPU (a CPU without bf16 instructions runs autocast's bf16 slowly).

    python -m benchmarks.torch_precision [--rounds 4] [--tokens 32] [--out FILE.jsonl]

One process, 2 threads (or ``--threads``), the model of `benchmarks.sweep_vs_torch`'s PyTorch side
(``AutoModelForSequenceClassification`` from the fetched ``minilm-l6`` files, train mode), AdamW;
one step per call on a random 32-row batch; the two precisions take turns A B, B A, ...
"""

from __future__ import annotations

import argparse
import os
import pathlib
import time

from benchmarks.sweep_cold import emit


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.torch_precision", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out")
    args = p.parse_args(argv)
    import torch
    import transformers

    from benchmarks.finetune import asset_path
    from w2sjax.runner import utilisation

    torch.set_num_threads(args.threads)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(asset_path("minilm-l6")), num_labels=2)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-5)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 2000, (32, args.tokens), generator=gen)
    labels = torch.randint(0, 2, (32,), generator=gen)

    def step(bf16: bool) -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        torch.nn.functional.cross_entropy(logits.float(), labels).backward()
        opt.step()
        opt.zero_grad()
        return round(time.perf_counter() - start, 3)

    times = {"float32": [], "bf16_autocast": []}
    for r in range(args.rounds):
        for name in (list(times) if r % 2 == 0 else list(times)[::-1]):
            times[name].append(step(name == "bf16_autocast"))
    rec = {"case": "torch_precision", "cpu": utilisation.cpu_model(), "cores": os.cpu_count(), "threads": args.threads,
           "tokens": args.tokens, "torch": torch.__version__, "loadavg": [round(x, 2) for x in os.getloadavg()],
           **{f"{k}_s": v for k, v in times.items()},
           "bf16_autocast_over_float32_min": round(min(times["bf16_autocast"]) / min(times["float32"]), 2)}
    emit(rec, pathlib.Path(args.out) if args.out else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
