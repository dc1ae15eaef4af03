"""The weak-to-strong protocol as resumable stages.

For every seed:

1. **weak**: each weak model trains on half A's ground truth and predicts half B (its soft
   pseudo-labels), the validation slice and the test split;
2. **ceiling**: each strong model trains on half B's ground truth;
3. **w2s**: each (weak, strong, loss) triple trains the strong model on half B's weak labels;
4. **bootstrap** chains (``a>b>c``): each model supervises the next on half B.

Weak and ceiling stages are trained once and shared by every pair that needs them. Each stage
ends with an Orbax checkpoint of its model and of its predictions; a rerun on the same output
directory skips finished stages and resumes unfinished ones from their last in-stage checkpoint,
so an interrupted run ends with the same ``results.json`` as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import time
import warnings
from typing import Any, Callable

import jax
import numpy as np
from flax import nnx

from w2sjax import checkpoint, metrics, parallel, train
from w2sjax.config import Config, ConfigError, to_dict


# ---- small I/O helpers ----------------------------------------------------------------------

def write_json_atomic(path: pathlib.Path, obj: Any) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


class MetricsLog:
    """Appends one JSON object per line to ``metrics.jsonl`` (process 0 only)."""

    def __init__(self, path: pathlib.Path | None):
        self.path = path if parallel.is_main_process() else None

    def __call__(self, record: dict) -> None:
        if self.path is not None:
            with self.path.open("a") as f:
                f.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")


class _OrbaxStage(train.StageCheckpoint):
    """In-stage checkpoints of one stage's ``TrainState`` through ``checkpoint.py``."""

    def __init__(self, ckpt_dir: pathlib.Path, stage: str):
        self.ckpt_dir, self.stage = ckpt_dir, stage

    def latest_step(self):
        found = checkpoint.latest(self.ckpt_dir, self.stage)
        return None if found is None else found[0]

    def restore(self, abstract_state):
        return checkpoint.restore(self.ckpt_dir, self.stage, abstract_state)[0]

    def save(self, step, state):
        checkpoint.save(self.ckpt_dir, self.stage, step, state, meta={"step": step})


# ---- model inputs ---------------------------------------------------------------------------

@dataclasses.dataclass
class ModelInputs:
    """How to get a model's inputs for any rows of the task, and how to build its trainable module."""

    inputs: Callable[[str, np.ndarray], Any]  # (split name "train"/"test", rows) -> array or dict of arrays
    build: Callable[[int], nnx.Module]  # seed -> fresh trainable module
    trainable: str  # "all" or "head"


class Inputs:
    """Each model's inputs, computed only for the rows a stage uses; frozen features come from the
    on-disk cache, so every example passes through every backbone at most once across a sweep."""

    def __init__(self, task, config: Config, progress: bool):
        self.task, self.config, self.progress = task, config, progress
        self._cache: dict[tuple[str, str], ModelInputs] = {}

    def get(self, name: str, role: str) -> ModelInputs:
        """``role`` is "weak" or "strong": strong models may be finetuned instead of probed."""
        from w2sjax import models

        mode = self.config.strong_mode if role == "strong" else "probe"
        key = (name, mode)
        if key not in self._cache:
            spec = models.get_model(name)
            if spec.tokenize is not None:  # a text backbone: honour the config's token budget
                spec = models.get_model(name, max_len=self.config.data.max_len, progress=self.progress)
            if mode == "finetune" and spec.finetune is not None:
                self._cache[key] = self._finetune(spec)
            else:
                self._cache[key] = self._probe(spec)
        return self._cache[key]

    def _split(self, split_name: str, rows: np.ndarray) -> dict:
        split = self.task.train if split_name == "train" else self.task.test
        return {k: v[rows] for k, v in split.items() if k in ("text", "x")}

    def _finetune(self, spec) -> ModelInputs:
        n_classes = self.task.num_classes
        return ModelInputs(
            inputs=lambda split, rows: spec.tokenize(self._split(split, rows)),
            build=lambda seed: spec.finetune(n_classes, rngs=nnx.Rngs(seed)),
            trainable=self.config.train.trainable,
        )

    def _probe(self, spec) -> ModelInputs:
        from w2sjax import assets, features

        task, n_classes = self.task, self.task.num_classes
        if spec.featurizer is None:  # raw inputs (pixels, tabular features)
            inputs = lambda split, rows: np.asarray(self._split(split, rows)["x"], np.float32)
            in_shape = tuple(task.train["x"].shape[1:])
        else:
            # Fitting is label-free (e.g. a TF-IDF vocabulary from all the training text).
            featurizer = spec.featurizer.fit(task.train)
            root = assets.cache_dir() / "features"

            def inputs(split, rows):
                feats = features.cached_features(featurizer, task.name, split, self._split(split, rows), cache_dir=root)
                return np.asarray(feats, np.float32)

            in_shape = tuple(inputs("train", np.arange(1)).shape[1:])
        return ModelInputs(
            inputs=inputs,
            build=lambda seed: spec.make_head(in_shape, n_classes, rngs=nnx.Rngs(seed)),
            trainable="all",
        )


# ---- stages ---------------------------------------------------------------------------------

@dataclasses.dataclass
class StageOutput:
    preds: dict[str, np.ndarray]  # eval-set name -> probabilities [N, C]
    seconds: float
    steps: int


class Runner:
    """Runs named stages, skipping those a checkpoint marks finished."""

    def __init__(self, config: Config, out_dir: pathlib.Path, mesh, task, progress: bool):
        self.config, self.mesh, self.task, self.progress = config, mesh, task, progress
        self.ckpt_dir = out_dir / "checkpoints"
        self.log = MetricsLog(out_dir / "metrics.jsonl")
        self.inputs = Inputs(task, config, progress)
        self._memo: dict[str, StageOutput] = {}

    def stage(
        self,
        name: str,
        *,
        model: str,
        role: str,
        rows: np.ndarray,
        labels: np.ndarray,
        val_rows: np.ndarray,
        val_labels: np.ndarray,
        evals: dict[str, tuple[str, np.ndarray]],
        cfg: train.TrainConfig,
        loss: str,
        seed: int,
    ) -> StageOutput:
        """Train ``model`` on task-train ``rows`` with soft ``labels``; predict every eval set.

        ``evals`` maps an output name to (``"train"`` or ``"test"``, row indices).
        """
        if name in self._memo:
            return self._memo[name]
        out_stage = f"{name}.out"
        n_classes = self.task.num_classes
        target = {k: np.zeros((len(idx), n_classes), np.float32) for k, (_, idx) in evals.items()}
        if checkpoint.is_done(self.ckpt_dir, out_stage):
            preds, meta = checkpoint.restore(self.ckpt_dir, out_stage, target)
            result = StageOutput({k: np.asarray(v) for k, v in preds.items()}, meta["seconds"], meta["steps"])
            self._memo[name] = result
            return result

        started = time.perf_counter()
        mi = self.inputs.get(model, role)
        cfg = dataclasses.replace(cfg, trainable=mi.trainable)
        data = train.ArrayData(mi.inputs("train", rows), labels.astype(np.float32))
        val = None
        if cfg.early_stopping and len(val_rows):
            val = train.ArrayData(mi.inputs("train", val_rows), val_labels.astype(np.float32))
        fitted = train.fit(
            mi.build(seed),
            data,
            cfg=cfg,
            loss=loss,
            mesh=self.mesh,
            seed=seed,
            val=val,
            stage=name,
            ckpt=_OrbaxStage(self.ckpt_dir, name),
            log=self.log,
            progress=self.progress,
        )
        checkpoint.save(self.ckpt_dir, name, fitted.steps, fitted.state, meta={"steps": fitted.steps}, final=True)
        preds = {}
        for key, (split, idx) in evals.items():
            preds[key] = train.predict(
                fitted.predict_step, fitted.state, mi.inputs(split, idx), mesh=self.mesh, batch_size=max(cfg.batch_size, 256)
            )
        seconds = round(time.perf_counter() - started, 3)
        checkpoint.save(
            self.ckpt_dir, out_stage, 0, preds, meta={"seconds": seconds, "steps": fitted.steps}, final=True
        )
        result = StageOutput(preds, seconds, fitted.steps)
        self._memo[name] = result
        return result


def _one_hot(labels: np.ndarray, n: int) -> np.ndarray:
    return np.eye(n, dtype=np.float32)[labels]


def _acc(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(metrics.accuracy(probs, labels))


def _pgr(weak: float, w2s: float, ceiling: float) -> float | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undefined PGR is recorded as null, and the report says so
        value = float(metrics.pgr(weak, w2s, ceiling))
    return None if np.isnan(value) else round(value, 6)


# ---- validation -----------------------------------------------------------------------------

def validate(config: Config) -> None:
    """Check every name in the config before any work or any write. Raises ConfigError."""
    from w2sjax import models

    names = set(config.weak_models) | set(config.strong_models)
    for chain in config.bootstrap:
        names |= set(chain.split(">"))
    for name in sorted(names):
        try:
            models.get_model(name)
        except ValueError as exc:
            raise ConfigError(f"model: {exc}") from None


def _load_task(config: Config):
    from w2sjax import data

    try:
        return data.load_task(config.data.task)
    except (ValueError, FileNotFoundError) as exc:
        raise ConfigError(f"data.task: {exc}") from None


# ---- the protocol ---------------------------------------------------------------------------

def run(config: Config, out_dir: str | os.PathLike, *, progress: bool = True) -> dict:
    """Run (or resume) the experiment ``config`` into ``out_dir`` and return the results dict.

    Writes ``results.json``, ``metrics.jsonl`` and ``checkpoints/`` under ``out_dir``.
    """
    from w2sjax import data

    # First, before anything touches a JAX backend: join the other processes, if any are configured
    # (JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, or cluster auto-detection).
    parallel.maybe_initialize_distributed(auto=config.parallel.distributed)
    validate(config)
    try:
        mesh = parallel.make_mesh(config.parallel.data, config.parallel.fsdp)
    except ValueError as exc:
        raise ConfigError(f"parallel: {exc}") from None
    task = _load_task(config)
    for model_name in set(config.weak_models) | set(config.strong_models):
        _check_modality(model_name, task)

    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runner = Runner(config, out, mesh, task, progress)
    n_classes = task.num_classes
    task.train["row"] = np.arange(len(task.train["label"]))
    task.test["row"] = np.arange(len(task.test["label"]))

    rows_out = []
    for seed in config.seeds:
        try:
            splits = data.make_splits(
                task,
                seed=seed,
                n_train=config.data.n_train,
                n_val=config.data.n_val,
                n_test=config.data.n_test,
                balance=config.data.balance,
            )
        except ValueError as exc:
            raise ConfigError(f"data: {exc}") from None
        a, b, val, test = splits.weak, splits.strong, splits.val, splits.test
        evals_weak = {"b": ("train", b["row"]), "val": ("train", val["row"]), "test": ("test", test["row"])}
        gt = lambda split: _one_hot(split["label"], n_classes)

        def weak_stage(name):
            return runner.stage(
                f"weak__{name}__seed{seed}", model=name, role="weak", rows=a["row"], labels=gt(a),
                val_rows=val["row"], val_labels=gt(val), evals=evals_weak, cfg=config.weak_train,
                loss="xent", seed=seed,
            )

        def strong_stage(stage_name, name, labels, val_labels, loss, role="strong"):
            return runner.stage(
                stage_name, model=name, role=role, rows=b["row"], labels=labels, val_rows=val["row"],
                val_labels=val_labels, evals=evals_weak, cfg=config.train, loss=loss, seed=seed,
            )

        ceilings = {
            s: strong_stage(f"ceiling__{s}__seed{seed}", s, gt(b), gt(val), "xent") for s in config.strong_models
        }
        for w in config.weak_models:
            weak = weak_stage(w)
            weak_acc = _acc(weak.preds["test"], test["label"])
            for s in config.strong_models:
                for loss in config.losses:
                    # The student's validation labels are the supervisor's: all a real user has.
                    w2s = strong_stage(f"w2s__{w}__{s}__{loss}__seed{seed}", s, weak.preds["b"], weak.preds["val"], loss)
                    rows_out.append(
                        _row(task, config, seed, w, s, loss, weak, w2s, ceilings[s], test["label"], b["label"])
                    )
        for chain in config.bootstrap:
            models_in_chain = chain.split(">")
            supervisor = weak_stage(models_in_chain[0])
            first = supervisor
            for loss in config.losses:
                current = first
                for depth, student in enumerate(models_in_chain[1:], start=1):
                    prefix = ">".join(models_in_chain[: depth + 1])
                    current = strong_stage(
                        f"boot__{prefix}__{loss}__seed{seed}", student, current.preds["b"], current.preds["val"], loss
                    )
                last = models_in_chain[-1]
                ceiling = ceilings.get(last) or strong_stage(f"ceiling__{last}__seed{seed}", last, gt(b), gt(val), "xent")
                row = _row(task, config, seed, models_in_chain[0], last, loss, first, current, ceiling, test["label"], b["label"])
                row["chain"] = chain
                rows_out.append(row)

    results = {"config": to_dict(config), "runs": rows_out}
    if parallel.is_main_process():
        write_json_atomic(out / "results.json", results)
    return results


def _check_modality(name: str, task) -> None:
    from w2sjax import models

    spec = models.get_model(name)
    if task.kind not in spec.modalities:
        raise ConfigError(
            f"model: {name!r} takes {'/'.join(spec.modalities)} inputs but task {task.name!r} is {task.kind}"
        )


def _row(task, config, seed, weak_name, strong_name, loss, weak, w2s, ceiling, test_labels, b_labels) -> dict:
    weak_acc = _acc(weak.preds["test"], test_labels)
    w2s_acc = _acc(w2s.preds["test"], test_labels)
    ceiling_acc = _acc(ceiling.preds["test"], test_labels)
    agree = metrics.agreement(w2s.preds["test"], weak.preds["test"], test_labels)
    agree_b = metrics.agreement(w2s.preds["b"], weak.preds["b"], b_labels)
    return {
        "task": task.name,
        "weak_model": weak_name,
        "strong_model": strong_name,
        "loss": loss,
        "seed": seed,
        "weak_acc": round(weak_acc, 6),
        "w2s_acc": round(w2s_acc, 6),
        "ceiling_acc": round(ceiling_acc, 6),
        "pgr": _pgr(weak_acc, w2s_acc, ceiling_acc),
        "misfit": round(float(metrics.misfit(w2s.preds["test"], weak.preds["test"])), 6),
        "misfit_kl": round(float(metrics.misfit(w2s.preds["test"], weak.preds["test"], kind="kl")), 6),
        "agreement": round(float(agree["agreement"]), 6),
        "agreement_on_weak_errors": _maybe(agree["agreement_on_teacher_errors"]),
        "corrected_weak_errors_train": _maybe(agree_b["corrected_teacher_errors"]),
        "strong_mode": config.strong_mode,
        "n_test": int(len(test_labels)),
        "stage_seconds": {"weak": weak.seconds, "w2s": w2s.seconds, "ceiling": ceiling.seconds},
    }


def _maybe(x) -> float | None:
    x = float(x)
    return None if np.isnan(x) else round(x, 6)
