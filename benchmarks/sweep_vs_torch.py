"""The whole weak-to-strong finetune sweep of one student on one task: w2sjax against a plain PyTorch loop.

    python -m benchmarks.run --cases sweep_vs_torch torch [--repeats N] [--precision bfloat16]

Both sides do the same work, stage by stage, on the same examples (the rows of
`w2sjax.data.make_splits` for the seed):

1. **weak**: a linear head on mean GloVe vectors (the cached ``glove-bow`` features) trained on
   the supervisor half's ground truth;
2. **ceiling**: MiniLM-L6 finetuned (every weight) on the student half's ground truth;
3. **w2s xent** and 4. **w2s logconf**: MiniLM-L6 finetuned on the student half's weak soft labels.

Every stage trains with AdamW (linear warm-up, cosine decay), the same epochs, batch size and
learning rate, then predicts the student half, the validation slice and the test split, and saves its
weights and predictions.

* **w2sjax** runs `w2sjax.experiment.run` on `sweep_config` (what ``w2sjax run --set ...`` with
  the overrides in the record runs) into a fresh output directory per call.
* **PyTorch** is the loop openai/weak-to-strong's ``train_simple.py`` runs for each stage, written
  here from its description: load the pretrained model, tokenise the texts, batch them in a
  seeded random order padded to each batch's longest row, train (dropout off), predict in batches
  padded the same way, save. It runs in float32 and under CPU bf16 autocast; the w2sjax side in
  each ``--precision`` (bfloat16 operands with float32 sums for ``bfloat16``).

The first round is cold (each side's first call: XLA compiles, the file cache); later rounds are
warm: the GloVe feature cache and, for w2sjax, the in-process compiled programs (what the
persistent compilation cache gives a later ``w2sjax run``). Records give both.
"""

from __future__ import annotations

import contextlib
import json
import math
import pathlib
import shutil
import sys
import tempfile
import time

import numpy as np

from benchmarks import finetune as ft
from benchmarks.interleave import interleave, loadavg, summarize

STUDENT_LOSSES = ("xent", "logconf")

# vader_tweets: 3432 tweets rated by 20 people, median 22 MiniLM tokens (RESULTS.md).
FULL = dict(task="vader_tweets", student="minilm-l6", layers=None, n_train=512, n_val=64, n_test=256, max_len=128,
            epochs=2, batch=32, lr=3e-5, weak_epochs=20)
QUICK = dict(task="vader_tweets", student="minilm-l1", layers=1, n_train=64, n_val=16, n_test=32, max_len=32,
             epochs=1, batch=16, lr=3e-5, weak_epochs=2)


def sweep_overrides(sz: dict, precision: str) -> list[str]:
    """The ``--set`` overrides of the w2sjax side (printed in the record, so the run can be repeated)."""
    return [f"data.task={sz['task']}", f"data.n_train={sz['n_train']}", f"data.n_val={sz['n_val']}",
            f"data.n_test={sz['n_test']}", f"data.max_len={sz['max_len']}", "weak_models=glove-bow",
            f"strong_models={sz['student']}", f"losses={','.join(STUDENT_LOSSES)}", "seeds=0",
            "strong_mode=finetune", f"precision={precision}", f"train.epochs={sz['epochs']}",
            f"train.batch_size={sz['batch']}", f"train.lr={sz['lr']}", f"weak_train.epochs={sz['weak_epochs']}"]


def sweep_config(sz: dict, precision: str):
    from w2sjax import config as config_lib

    return config_lib.apply_overrides(config_lib.Config(name="sweep_vs_torch"), sweep_overrides(sz, precision))


# ---------------------------------------------------------------- w2sjax side


@contextlib.contextmanager
def timing(owner, names: tuple[str, ...], into: dict):
    """Add the seconds spent in each ``owner.<name>`` (a module's function) to ``into[name]``."""
    saved = {name: getattr(owner, name) for name in names}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                into[name] = into.get(name, 0.0) + time.perf_counter() - t0
        return wrapper

    for name, fn in saved.items():
        setattr(owner, name, timed(name, fn))
    try:
        yield into
    finally:
        for name, fn in saved.items():
            setattr(owner, name, fn)


@contextlib.contextmanager
def _predictions(buckets: bool):
    """`train.predict` as it is (``buckets``), or every batch padded to max_len (the lever's baseline)."""
    from w2sjax import train

    original = train.predict
    if not buckets:
        train.predict = lambda *a, **kw: original(*a, **{**kw, "buckets": False})
    try:
        yield
    finally:
        train.predict = original


class JaxSweep:
    """One call = one ``w2sjax run`` of the sweep (in-process) into a fresh directory, removed after.

    ``breakdown``: seconds of the last call inside `train.fit`, `train.predict` and `checkpoint.save`.
    """

    def __init__(self, config, *, predict_buckets: bool = True):
        self.config, self.predict_buckets = config, predict_buckets
        self.stage_seconds = self.stage_steps = self.breakdown = self.accuracies = None

    def __call__(self):
        from w2sjax import experiment, train
        from w2sjax.runner import checkpoint

        out = pathlib.Path(tempfile.mkdtemp(prefix="w2sjax-sweep-"))
        breakdown = {}
        try:
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(sys.stderr), _predictions(self.predict_buckets), \
                    timing(train, ("fit", "predict"), breakdown), \
                    timing(checkpoint, ("save",), breakdown):  # stdout: JSON lines only
                results = experiment.run(self.config, out / "run", progress=False)
            breakdown["total"] = time.perf_counter() - t0
            steps = {}
            for line in (out / "run" / "metrics.jsonl").read_text().splitlines():
                rec = json.loads(line)
                if "loss" in rec:
                    steps[rec["stage"]] = max(steps.get(rec["stage"], 0), rec["step"])
        finally:
            shutil.rmtree(out, ignore_errors=True)
        rows = results["runs"]
        self.accuracies = [[row["loss"], row["weak_acc"], row["w2s_acc"], row["ceiling_acc"]] for row in rows]
        self.stage_seconds = {"weak": rows[0]["stage_seconds"]["weak"], "ceiling": rows[0]["stage_seconds"]["ceiling"],
                              **{f"w2s_{row['loss']}": row["stage_seconds"]["w2s"] for row in rows}}
        self.stage_steps = steps
        self.breakdown = {k: round(v, 3) for k, v in breakdown.items()}


# ---------------------------------------------------------------- PyTorch side


def warmup_cosine(step: int, total: int, warmup_frac: float = 0.05) -> float:
    """Learning-rate factor at ``step``: linear warm-up, then cosine decay to 0 at ``total``
    (the schedule of `w2sjax.train.learning_rate`, written for ``torch.optim.lr_scheduler.LambdaLR``)."""
    warmup = max(1, int(warmup_frac * total)) if warmup_frac > 0 else 0
    if step < warmup:
        return step / warmup
    decay = max(total, warmup + 1) - warmup
    return 0.5 * (1 + math.cos(math.pi * min(step - warmup, decay) / decay))


def torch_logconf(logits, weak, step_frac: float, alpha_max: float = 0.5, warmup_frac: float = 0.2):
    """Burns et al.'s auxiliary confidence loss for two classes, as `w2sjax.losses.logconf` defines it:
    cross-entropy against ``(1 - a) weak + a hard``, where ``hard`` thresholds the student's class-0
    probability at the batch quantile that labels the supervisor's positive fraction positive."""
    import torch

    alpha = alpha_max * min(1.0, step_frac / warmup_frac) if warmup_frac > 0 else alpha_max
    logits = logits.float()
    with torch.no_grad():
        p0 = torch.softmax(logits, -1)[:, 0]
        threshold = torch.quantile(p0, weak[:, 1].float().mean(), interpolation="linear")
        is0 = (p0 >= threshold).float()
        target = (1 - alpha) * weak.float() + alpha * torch.stack([is0, 1 - is0], -1)
    return torch_xent(logits, target)


def torch_xent(logits, target):
    import torch

    logp = torch.log_softmax(logits.float(), -1)
    return -torch.where(target > 0, target * logp, torch.zeros_like(logp)).sum(-1).mean()


class TorchSweep:
    """One call = the four stages in plain PyTorch (see the module docstring), writing to a temp dir."""

    def __init__(self, config, sz: dict, dtype: str):
        self.config, self.sz, self.dtype = config, sz, dtype
        self.stage_seconds = self.stage_steps = self.breakdown = None

    def __call__(self):
        import torch

        from w2sjax import data

        out = pathlib.Path(tempfile.mkdtemp(prefix="torch-sweep-"))
        self.breakdown = {}
        t_start = time.perf_counter()
        try:
            task = data.load_task(self.config.data.task)
            seed = self.config.seeds[0]
            d = self.config.data
            s = data.make_splits(task, seed=seed, n_train=d.n_train, n_val=d.n_val, n_test=d.n_test)
            evals = {"b": s.student_half, "val": s.val, "test": s.test}
            seconds, self.stage_steps = {}, {}
            t0 = time.perf_counter()
            weak = self.weak_stage(task, s.supervisor_half, evals, out / "weak", seed)
            seconds["weak"] = time.perf_counter() - t0
            torch.manual_seed(seed)
            two = lambda labels: np.eye(2, dtype=np.float32)[labels]
            for name, labels, loss in (("ceiling", two(s.student_half["label"]), "xent"),
                                       *((f"w2s_{loss}", weak["b"], loss) for loss in STUDENT_LOSSES)):
                t0 = time.perf_counter()
                self.stage_steps[name] = self.student_stage(s.student_half["text"], labels, loss, evals, out / name,
                                                            seed)
                seconds[name] = time.perf_counter() - t0
            self.stage_seconds = {k: round(v, 3) for k, v in seconds.items()}
            self.breakdown["total"] = time.perf_counter() - t_start
            self.breakdown = {k: round(v, 3) for k, v in self.breakdown.items()}
        finally:
            shutil.rmtree(out, ignore_errors=True)

    def weak_stage(self, task, half_a, evals, out, seed) -> dict:
        """Linear head on the cached mean-GloVe features of each split (the features w2sjax reads)."""
        import torch

        from w2sjax import assets, models
        from w2sjax.models import features

        featurizer = models.get_model("glove-bow").featurizer.fit(task.train)
        feats = lambda split, part: torch.from_numpy(np.asarray(features.cached_features(
            featurizer, task.source or task.name, split, {"text": part["text"]},
            cache_dir=assets.cache_dir() / "features"), np.float32))
        x = feats("train", half_a)
        y = torch.from_numpy(np.eye(2, dtype=np.float32)[half_a["label"]])
        torch.manual_seed(seed)
        head = torch.nn.Linear(x.shape[1], 2)
        cfg = self.config.weak_train
        self.stage_steps["weak"] = self.train_loop(lambda idx: head(x[idx]), list(head.parameters()), y, len(x), cfg,
                                                   "xent", seed)
        with torch.no_grad():
            preds = {k: torch.softmax(head(feats("test" if k == "test" else "train", part)), -1).numpy()
                     for k, part in evals.items()}
        self.save(out, head.state_dict(), preds)
        return preds

    def student_stage(self, texts, labels, loss, evals, out, seed):
        import torch
        import transformers

        clock = self._clock()
        path = ft.asset_path("minilm-l6")
        tok = transformers.AutoTokenizer.from_pretrained(str(path))
        net, pool = ft.torch_model("minilm-l6", path, self.sz["layers"])
        net.eval()  # dropout off while training, as train_simple does (w2sjax's models have none)
        head = torch.nn.Linear(net.config.hidden_size, 2)
        max_len = self.config.data.max_len
        ids = tok(list(texts), truncation=True, max_length=max_len)["input_ids"]
        y = torch.from_numpy(labels)
        clock("load")

        def forward(rows):
            batch = tok.pad({"input_ids": [ids[i] for i in rows]}, return_tensors="pt")
            with ft.autocast(self.dtype):
                hidden = net(**batch).last_hidden_state
                return head(pool(hidden, batch["attention_mask"]))

        steps = self.train_loop(forward, list(net.parameters()) + list(head.parameters()), y, len(ids),
                                self.config.train, loss, seed)
        clock("fit")
        preds = {}
        with torch.inference_mode():
            for name, part in evals.items():
                eval_ids = tok(list(part["text"]), truncation=True, max_length=max_len)["input_ids"]
                chunks = []
                for start in range(0, len(eval_ids), 256):
                    batch = tok.pad({"input_ids": eval_ids[start:start + 256]}, return_tensors="pt")
                    with ft.autocast(self.dtype):
                        logits = head(pool(net(**batch).last_hidden_state, batch["attention_mask"]))
                    chunks.append(torch.softmax(logits.float(), -1).numpy())
                preds[name] = np.concatenate(chunks)
        clock("predict")
        self.save(out, {**net.state_dict(), **{f"head.{k}": v for k, v in head.state_dict().items()}}, preds)
        clock("save")
        return steps

    def _clock(self):
        """``clock(name)`` adds the seconds since the previous call (or this one) to ``breakdown[name]``."""
        last = [time.perf_counter()]

        def clock(name):
            now = time.perf_counter()
            self.breakdown[name] = self.breakdown.get(name, 0.0) + now - last[0]
            last[0] = now
        return clock

    @staticmethod
    def train_loop(forward, params, y, n: int, cfg, loss: str, seed: int) -> int:
        """AdamW over ``params``: ``epochs`` passes of full batches in a fresh seeded order each epoch.
        Returns the number of steps."""
        import torch

        batch = min(cfg.batch_size, n)
        per_epoch = max(1, n // batch)
        total = max(1, math.ceil(cfg.epochs * per_epoch))
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: warmup_cosine(step, total, cfg.lr_warmup_frac))
        for step in range(total):
            epoch, k = divmod(step, per_epoch)
            rows = np.random.default_rng([seed, epoch]).permutation(n)[k * batch:(k + 1) * batch]
            logits = forward(rows)
            target = y[rows]
            value = torch_xent(logits, target) if loss == "xent" else torch_logconf(logits, target, step / total)
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            sched.step()
        return total

    @staticmethod
    def save(out: pathlib.Path, state: dict, preds: dict):
        import torch

        out.mkdir(parents=True)
        torch.save(state, out / "model.pt")
        np.savez(out / "preds.npz", **preds)


# ---------------------------------------------------------------- the case


def sweep_case(sz: dict, precisions, repeats: int, with_torch: bool) -> list[dict]:
    """Interleaved calls of every side; the first round cold, ``repeats`` warm rounds after it.

    Records: one per side (warm min/median, ``cold_s``, per-stage seconds of its last call), then
    the wall-time ratios w2sjax / PyTorch (the target is <= 0.5) by warm min, warm median
    and cold.
    """
    cfgs = {p: sweep_config(sz, p) for p in precisions}
    sides = {("jax" if p == "float32" else "jax_bf16"): JaxSweep(cfg) for p, cfg in cfgs.items()}
    if with_torch:
        cfg = cfgs[precisions[-1]]
        sides.update({("torch" if d == "float32" else "torch_bf16"): TorchSweep(cfg, sz, d)
                      for d in ("float32", "bfloat16")})
    before = loadavg()
    times = interleave(sides, repeats + 1, warmup=0)
    load = {"loadavg_before": before, "loadavg_after": loadavg(), "repeats": repeats}
    extra = {"task": sz["task"], "student": sz["student"],
             "stages": ["weak", "ceiling", *(f"w2s_{loss}" for loss in STUDENT_LOSSES)],
             "overrides": sweep_overrides(sz, precisions[-1])}
    recs = {}
    for impl, t in times.items():
        rec = summarize("sweep_vs_torch", impl, t[1:], examples=1, flops_per_example=None, peak=None, load=load,
                        **extra)
        side = sides[impl]
        rec.update(cold_s=round(t[0], 3), stage_seconds=side.stage_seconds, stage_steps=side.stage_steps,
                   breakdown=side.breakdown)
        for k in ("examples_per_s", "examples_per_s_median", "gflops", "peak_gflops", "ratio_to_peak"):
            rec.pop(k)  # one sweep per call: seconds are the figure
        recs[impl] = rec
    out = list(recs.values())
    for j in (k for k in recs if k.startswith("jax")):
        for t in (k for k in recs if k.startswith("torch")):
            out.append({"case": "sweep_vs_torch", "impl": "ratio", "jax": j, "torch": t,
                        "jax_wall_over_torch_min": round(recs[j]["seconds"] / recs[t]["seconds"], 3),
                        "jax_wall_over_torch_median": round(recs[j]["median_s"] / recs[t]["median_s"], 3),
                        "jax_wall_over_torch_cold": round(recs[j]["cold_s"] / recs[t]["cold_s"], 3)})
    return out


def main(argv=None) -> int:
    """The predictions lever alone: the w2sjax side with length-bucketed against padded predictions."""
    import argparse

    from benchmarks import run as bench

    p = argparse.ArgumentParser(prog="python -m benchmarks.sweep_vs_torch")
    p.add_argument("--repeats", type=int, default=2, help="warm rounds after the cold one")
    p.add_argument("--precision", default="bfloat16", choices=("float32", "bfloat16"))
    p.add_argument("--quick", action="store_true")
    p.add_argument("--devices", type=int, default=2)
    p.add_argument("--ynn", choices=("dot", "off", "all"), default="dot")
    args = p.parse_args(argv)
    bench.emit({"case": "setup", "impl": "setup", "xla_flags": bench._set_flags(args), "loadavg": loadavg()})
    sz = QUICK if args.quick else FULL
    cfg = sweep_config(sz, args.precision)
    sides = {"predict_padded": JaxSweep(cfg, predict_buckets=False), "predict_buckets": JaxSweep(cfg)}
    before = loadavg()
    times = interleave(sides, args.repeats + 1, warmup=0)
    load = {"loadavg_before": before, "loadavg_after": loadavg(), "repeats": args.repeats}
    recs = {}
    for impl, t in times.items():
        recs[impl] = summarize("sweep_predict_lever", impl, t[1:], examples=1, flops_per_example=None, peak=None,
                               load=load, cold_s=round(t[0], 3), breakdown=sides[impl].breakdown,
                               stage_seconds=sides[impl].stage_seconds)
        bench.emit(recs[impl])
    bench.emit({"case": "sweep_predict_lever", "impl": "ratio",
                "buckets_wall_over_padded_min": round(recs["predict_buckets"]["seconds"]
                                                      / recs["predict_padded"]["seconds"], 3),
                "buckets_wall_over_padded_median": round(recs["predict_buckets"]["median_s"]
                                                         / recs["predict_padded"]["median_s"], 3)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
