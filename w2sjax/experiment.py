"""The weak-to-strong protocol as resumable stages.

For every seed:

1. **weak**: each weak model trains on half A's ground truth and predicts half B (its soft
   pseudo-labels, :meth:`SeedRun.pseudo_labels`), the validation slice and the test split;
2. **ceiling**: each strong model trains on half B's ground truth;
3. **w2s**: each (weak, strong, loss) triple trains the strong model on half B's weak labels;
4. **bootstrap** chains (``a>b>c``): each model supervises the next on half B.

``options.labels`` adds, per w2s triple, students trained on refined weak labels
(:func:`w2sjax.labels.refine`). Other protocols (``config.method``) live in
:mod:`w2sjax.methods` and are built from the same pieces: :func:`prepare`, :func:`plan_then_train`,
:class:`SeedRun`, :func:`finish`.

Weak and ceiling stages are trained once and shared by every pair that needs them. Each stage
is keyed by a :class:`w2sjax.stages.StageKey` whose fingerprint covers every setting that
determines its outputs, and ends with an Orbax checkpoint of its model and of its predictions
under that key. A rerun on the same output directory reuses exactly the stages whose fingerprint
matches, retrains the others, and resumes unfinished ones from their last in-stage checkpoint, so
an interrupted run ends with the same ``results.json`` as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
import pathlib
import sys
import time
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from w2sjax import (
    atomic, checkpoint, compile_stats, metrics, parallel, preemption, results, rundir, signals, stages,
    tensorboard_log, train,
)
from w2sjax.config import Config, ConfigError, to_dict


# ---- small I/O helpers ----------------------------------------------------------------------

class MetricsLog:
    """Appends one JSON object per line to ``metrics.jsonl`` (process 0 only), and the same numbers
    to TensorBoard event files beside it when tensorboardX is installed (`w2sjax.tensorboard_log`)."""

    def __init__(self, path: pathlib.Path | None):
        self.path = path if parallel.is_main_process() else None
        self.tensorboard = tensorboard_log.TensorBoardLog(None if self.path is None else self.path.parent)

    def __call__(self, record: dict) -> None:
        if self.path is not None:
            record = {"time": round(time.time(), 3), **record}
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
            self.tensorboard(record)

    def rewind(self, checkpoint_name: str, step: int) -> None:
        """Drop the lines of stage ``checkpoint_name`` (these settings only) after ``step``: a stage
        that resumes from ``step`` (or starts over, from 0) logs its later steps again, and each step
        must appear once."""
        if self.path is None or not self.path.exists():
            return
        lines = self.path.read_text().splitlines(keepends=True)
        kept = [line if line.endswith("\n") else line + "\n" for line in lines
                if not _logged_after(line, checkpoint_name, step)]
        if len(kept) != len(lines):
            atomic.write_text(self.path, "".join(kept))

    def of_stage(self, checkpoint_name: str) -> "_StageLog":
        return _StageLog(self, checkpoint_name)


class _StageLog:
    """One stage's lines of ``metrics.jsonl``, each tagged with the stage's checkpoint name, so that
    a resume drops exactly the lines it will write again (``train.fit`` calls ``rewind``)."""

    def __init__(self, log: MetricsLog, checkpoint_name: str):
        self.log, self.checkpoint_name = log, checkpoint_name

    def __call__(self, record: dict) -> None:
        self.log({"checkpoint": self.checkpoint_name, **record})

    def rewind(self, stage: str, step: int) -> None:
        del stage  # the readable name; the checkpoint name also says which settings
        self.log.rewind(self.checkpoint_name, step)


def _logged_after(line: str, checkpoint_name: str, step: int) -> bool:
    if f'"checkpoint": {json.dumps(checkpoint_name)}' not in line:  # cheap test first: most lines are others'
        return False
    try:
        record = json.loads(line)
    except ValueError:
        return True  # a line cut short by a kill: the resumed stage writes it again
    return (record.get("checkpoint") == checkpoint_name and isinstance(record.get("step"), int)
            and record["step"] > step)


# Rows per prediction batch. Token inputs run shortest first and each batch is cut to the bucket
# length of its longest row, so smaller batches pad less: on the sweep benchmark's tweets a batch of
# 64 predicted a test split in half the time of 256 (benchmarks/RESULTS.md, the quiet runs of 2026-11-29), and a
# 64-row validation slice is no longer padded to 256.
PREDICT_ROWS = 64


def mesh_identity(mesh) -> dict:
    """What an in-stage checkpoint records of the mesh that trained it. The batch size (a multiple
    of the device count) and the order of sharded sums depend on it, so a stage resumed on another
    mesh would end with numbers that neither mesh gives uninterrupted: it starts over instead."""
    return {"devices": int(mesh.size), "axes": {str(k): int(v) for k, v in mesh.shape.items()},
            "processes": jax.process_count()}


def _describe_mesh(identity: dict) -> str:
    n = identity.get("devices")
    axes = ", ".join(f"{k}={v}" for k, v in (identity.get("axes") or {}).items())
    return f"{n} device{'' if n == 1 else 's'}" + (f" ({axes})" if axes else "")


class _OrbaxStage(train.StageCheckpoint):
    """In-stage checkpoints of one stage's ``TrainState`` through ``checkpoint.py``: each step with
    the sha256 of its state and the mesh it was trained on, both checked before it is used."""

    def __init__(self, ckpt_dir: pathlib.Path, stage: str, mesh=None):
        self.ckpt_dir, self.stage = ckpt_dir, stage
        self.mesh = None if mesh is None else mesh_identity(mesh)

    def latest_step(self):
        found = checkpoint.latest(self.ckpt_dir, self.stage)
        return None if found is None else found[0]

    def restore(self, abstract_state):
        # A damaged newest step (unreadable, or not the bytes saved) falls back to an older one,
        # then to the stage's start (None).
        found = checkpoint.restore_newest_good(self.ckpt_dir, self.stage, abstract_state, require_checksum=True)
        if found is None:
            return None
        state, meta = found
        saved_on = meta.get("mesh")
        if self.mesh is not None and saved_on is not None and saved_on != self.mesh:
            if parallel.is_main_process():
                name = stages.StageKey.parse(self.stage).name
                print(f"w2sjax: warning: stage {name!r}: its in-stage checkpoint (step "
                      f"{meta.get('step')}) was saved on {_describe_mesh(saved_on)} and this run has "
                      f"{_describe_mesh(self.mesh)}; restarting the stage", file=sys.stderr, flush=True)
            checkpoint.remove(self.ckpt_dir, self.stage)
            return None
        return state

    def save(self, step, state):
        meta = {"step": step} if self.mesh is None else {"step": step, "mesh": self.mesh}
        checkpoint.save(self.ckpt_dir, self.stage, step, state, meta=meta, checksum=True)


# ---- model inputs ---------------------------------------------------------------------------

@dataclasses.dataclass
class ModelInputs:
    """How to get a model's inputs for any rows of the task, and how to build its trainable module."""

    inputs: Callable[[str, np.ndarray], Any]  # (split name "train"/"test", rows) -> array or dict of arrays
    build: Callable[[int], nnx.Module]  # seed -> fresh trainable module
    trainable: str  # "all", "head", "lora" or "top:K"


class Inputs:
    """Each model's inputs, computed only for the rows a stage uses; frozen features come from the
    on-disk cache, so every example passes through every backbone at most once across a sweep."""

    def __init__(self, task, config: Config, progress: bool, mesh=None):
        self.task, self.config, self.progress, self.mesh = task, config, progress, mesh
        self._cache: dict[tuple[str, str], ModelInputs] = {}

    def get(self, name: str, *, frozen_features: bool = False) -> ModelInputs:
        """``frozen_features=True``: a head on the model's frozen features (or raw inputs), as every
        supervisor is; else the config's ``strong_mode`` (a student may be finetuned instead)."""
        from w2sjax import models

        mode = "probe" if frozen_features else self.config.strong_mode
        key = (name, mode)
        if key not in self._cache:
            spec = models.get_model(name)
            if spec.tokenize is not None:  # a text backbone: honour the config's token budget
                spec = models.get_model(name, max_len=self.config.data.max_len, dtype=self.config.precision,
                                        progress=self.progress)
            prompt = self.config.data.prompt if spec.tokenize is not None else ""
            if mode == "finetune" and spec.finetune is not None:
                self._cache[key] = self._finetune(spec, prompt)
            else:
                self._cache[key] = self._probe(spec, prompt)
        return self._cache[key]

    def options(self, name: str, *, frozen_features: bool = False) -> dict:
        """The model and every option of it that changes its outputs (part of a stage's fingerprint)."""
        from w2sjax import models

        spec = models.get_model(name)
        mode = "probe" if frozen_features or spec.finetune is None else self.config.strong_mode
        options = {"name": name, "mode": mode}
        if mode == "finetune":
            options["trainable"] = self.config.train.trainable
            if self.config.train.trainable == "lora":
                options["lora"] = dataclasses.asdict(self.config.train.lora)
            if self.config.train.trainable.startswith("top:"):  # the cached bottom is rounded to bf16
                options["bottom"] = "cached-bf16" if self.config.train.cache_bottom else "recomputed"
            if getattr(spec.featurizer, "pooling", None) == "last":  # decoders: heads.PooledClassifier
                options["head_init"] = "zeros"
        if spec.tokenize is not None:  # a text backbone: its token budget, matmul precision and prompt
            options.update(max_len=self.config.data.max_len, precision=self.config.precision)
            if self.config.data.prompt:
                options["prompt"] = self.config.data.prompt
        if name.startswith(models.registry.HF_PREFIX):  # a checkpoint of the user's: by content, not path
            from w2sjax.models import hf

            options["checkpoint_sha256"] = hf.checkpoint_hash(hf.parse_name(name)[0])
        if mode == "probe" and spec.featurizer is not None:
            options["standardize"] = self.config.standardize_features
        return options

    def _split(self, split_name: str, rows: np.ndarray, prompt: str = "") -> dict:
        """The inputs of ``rows``; with a ``prompt`` template each text becomes ``prompt`` with
        ``{text}`` replaced by it (pretrained text backbones only, e.g. to ask a decoder)."""
        split = self.task.train if split_name == "train" else self.task.test
        out = {k: v[rows] for k, v in split.items() if k in ("text", "x")}
        if prompt and "text" in out:
            out["text"] = np.array([prompt.replace("{text}", str(t)) for t in out["text"]], dtype=object)
        return out

    def _finetune(self, spec, prompt: str = "") -> ModelInputs:
        from w2sjax.models import topk

        n_classes = self.task.num_classes
        train_cfg = self.config.train
        top = topk.parse(train_cfg.trainable)  # K of top:K, else None
        bottom = self._cached_bottom(spec, top) if top and train_cfg.cache_bottom else None

        # a loader that takes the mesh reads each weight straight into its fsdp shard
        placed = {"mesh": self.mesh} if self.mesh is not None and "mesh" in inspect.signature(spec.finetune).parameters else {}

        def build(seed):
            module = spec.finetune(n_classes, rngs=nnx.Rngs(seed), dtype=jnp.dtype(self.config.precision), **placed)
            if top:
                try:  # the cached student holds only the top blocks; the recomputing one all of them
                    topk.cut_bottom(module, top) if bottom else topk.check(module, top)
                except topk.TopKError as exc:
                    raise ConfigError(f"train.trainable: {spec.name}: {exc}") from None
            if train_cfg.trainable == "lora":
                from w2sjax.models import lora

                lora.add_adapters(module, rank=train_cfg.lora.rank, alpha=train_cfg.lora.alpha,
                                  targets=train_cfg.lora.targets, rngs=nnx.Rngs(seed + 1))
            if train_cfg.remat:
                from w2sjax.models import remat

                remat.checkpoint_blocks(module)
            return module

        def inputs(split, rows):
            text = self._split(split, rows, prompt)
            if bottom is None:
                return spec.tokenize(text)
            try:
                return bottom.inputs(text)
            except topk.TopKError as exc:
                raise ConfigError(f"train.trainable: {spec.name}: {exc}") from None

        return ModelInputs(inputs=inputs, build=build, trainable=train_cfg.trainable)

    def _cached_bottom(self, spec, k: int):
        """The on-disk cache of ``spec``'s frozen bottom below its top ``k`` blocks (`w2sjax.bottoms`)."""
        from w2sjax import bottoms

        return bottoms.Bottom(spec, k, num_classes=self.task.num_classes, dtype=self.config.precision,
                              task_name=self.task.source or self.task.name, cache_dir=bottoms.cache_root(),
                              progress=self.progress)

    def _probe(self, spec, prompt: str = "") -> ModelInputs:
        from w2sjax import assets, features

        task, n_classes = self.task, self.task.num_classes
        if spec.featurizer is None:  # raw inputs (pixels, tabular features)
            inputs = lambda split, rows: np.asarray(self._split(split, rows)["x"], np.float32)
            in_shape = tuple(task.train["x"].shape[1:])
        else:
            # Fitting is label-free (e.g. a TF-IDF vocabulary from all the training text).
            featurizer = spec.featurizer.fit(task.train)
            root = assets.cache_dir() / "features"

            def raw(split, rows):
                # Example ids hash the (prompted) text, so each prompt has its own cache entries.
                feats = features.cached_features(featurizer, task.source or task.name, split,
                                                 self._split(split, rows, prompt), cache_dir=root)
                return np.asarray(feats, np.float32)

            inputs = raw
            if self.config.standardize_features:
                # Statistics of the whole training split, not of the rows a stage asks for, so
                # every seed, stage and resumed run sees the same transform.
                train = raw("train", np.arange(len(task.train["label"])))
                mean, std = train.mean(0), train.std(0)
                scale = np.where(std > 0, 1.0 / np.maximum(std, 1e-12), 1.0).astype(np.float32)
                inputs = lambda split, rows: (raw(split, rows) - mean) * scale

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
    key: stages.StageKey | None = None  # the bound key; None for outputs made outside a stage (combinations)

    def source(self, split: str) -> str | None:
        """How a student names labels taken from these predictions: by the stage's fingerprint, or
        (None: by their content) for outputs made outside a stage."""
        return f"{self.key.fingerprint}/{split}" if self.key else None


class Runner:
    """Runs stages, reusing those whose checkpoint has the same fingerprint.

    With ``planning=True`` nothing trains: each stage is only keyed and looked up (and answers
    uniform predictions), which is how a run prints its plan before any model loads.
    """

    def __init__(self, config: Config, out_dir: pathlib.Path, mesh, task, progress: bool, *, planning: bool = False):
        self.config, self.mesh, self.task, self.progress = config, mesh, task, progress
        self.planning = planning
        self.ckpt_dir = out_dir / "checkpoints"
        self.log = MetricsLog(out_dir / "metrics.jsonl")
        self.inputs = Inputs(task, config, progress, mesh)
        self._outputs_this_process: dict[str, StageOutput] = {}  # checkpoint name -> outputs, trained or read
        self.planned: dict[str, bool] = {}  # checkpoint name -> already done (planning runs)
        self.disk: dict[str, tuple[int, int]] = {}  # checkpoint name -> (finished, in-stage) bytes, of stages to train
        if not planning:  # `finish` lists every stage this run used in results.json (what `w2sjax prune` keeps)
            _USED[str(out_dir.absolute())] = self._outputs_this_process

    def settings(self, *, model, frozen_features, rows, labels, val_rows, val_labels, evals, cfg, loss, seed, weights,
                 sources) -> dict:
        """Everything that determines a stage's outputs (see :mod:`w2sjax.stages`).

        ``sources`` names label arrays that come from another stage (``StageOutput.source``), so a
        student's fingerprint holds its supervisor's and is known before the supervisor has run;
        every array not named there is hashed by content.
        """
        sources = dict(sources or {})
        named = lambda key, array: sources.get(key) or (None if array is None else stages.digest(array))
        early = bool(cfg.early_stopping and len(val_rows))
        return {
            "task": {"name": self.task.name, "data": self.task.fingerprint, "shift": self.config.options.shift},
            "seed": seed,
            "model": self.inputs.options(model, frozen_features=frozen_features),
            "train": stages.train_settings(cfg, loss),
            "loss": loss,
            "rows": named("rows", rows),
            "labels": named("labels", labels),
            "weights": named("weights", weights),
            "val": [stages.digest(val_rows), named("val_labels", val_labels)] if early else None,
            "evals": {k: [split, stages.digest(idx)] for k, (split, idx) in sorted(evals.items())},
        }

    def stage(
        self,
        key: stages.StageKey,
        *,
        model: str,
        frozen_features: bool,
        rows: np.ndarray,
        labels: np.ndarray,
        val_rows: np.ndarray,
        val_labels: np.ndarray,
        evals: dict[str, tuple[str, np.ndarray]],
        cfg: train.TrainConfig,
        loss: str,
        seed: int,
        weights: np.ndarray | None = None,
        sources: dict[str, str | None] | None = None,
    ) -> StageOutput:
        """Train ``model`` on task-train ``rows`` with soft ``labels``; predict every eval set.

        ``key`` names the stage (unbound: this binds it to the settings). ``frozen_features``: see
        :meth:`Inputs.get`. ``evals`` maps an output name to (``"train"`` or ``"test"``, row
        indices); ``weights`` are optional per-example loss weights (``[len(rows)]``); ``sources``
        see :meth:`settings`.
        """
        settings = self.settings(model=model, frozen_features=frozen_features, rows=rows, labels=labels,
                                 val_rows=val_rows, val_labels=val_labels, evals=evals, cfg=cfg, loss=loss, seed=seed,
                                 weights=weights, sources=sources)
        key = key.bind(settings)
        if key.checkpoint_name in self._outputs_this_process:
            return self._outputs_this_process[key.checkpoint_name]
        signals.check()
        n_classes = self.task.num_classes
        target = {k: np.zeros((len(idx), n_classes), np.float32) for k, (_, idx) in evals.items()}
        if self.planning:
            try:
                self.planned[key.checkpoint_name] = checkpoint.is_done(self.ckpt_dir, key.outputs_name)
            except checkpoint.DamagedCheckpoint:
                self.planned[key.checkpoint_name] = False  # will be set aside and trained again
            if not self.planned[key.checkpoint_name]:
                self.disk[key.checkpoint_name] = _disk_estimate(settings["model"], target)
            uniform = {k: np.full_like(v, 1.0 / n_classes) for k, v in target.items()}
            result = StageOutput(uniform, 0.0, 0, key)
            self._outputs_this_process[key.checkpoint_name] = result
            return result
        result = self._finished(key, target)
        if result is not None:
            self._outputs_this_process[key.checkpoint_name] = result
            return result

        if preemption.requested():  # a SIGTERM between stages: stop before loading anything
            raise preemption.Preempted(key.name, 0, saved=False)
        started = time.perf_counter()
        mi = self.inputs.get(model, frozen_features=frozen_features)
        data = train.ArrayData(
            mi.inputs("train", rows), labels.astype(np.float32), None if weights is None else np.asarray(weights, np.float32)
        )
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
            trainable=mi.trainable,
            val=val,
            stage=key.name,
            ckpt=_OrbaxStage(self.ckpt_dir, key.checkpoint_name, self.mesh),
            log=self.log.of_stage(key.checkpoint_name),
            progress=self.progress,
        )
        preds = {}
        for name, (split, idx) in evals.items():
            preds[name] = train.predict(
                fitted.predict_step, fitted.state, mi.inputs(split, idx), mesh=self.mesh, batch_size=max(cfg.batch_size, PREDICT_ROWS),
                buckets=cfg.length_buckets,
            )
        # A collapsed model is a failed stage: raised before it is saved as finished.
        if "val" in evals:
            split, idx = evals["val"]
            truth = (self.task.train if split == "train" else self.task.test)["label"][idx]
            train.check_not_collapsed(preds["val"], truth, key.name, fitted.steps)
        seconds = round(time.perf_counter() - started, 3)
        # One final step holds what a finished stage needs: its predictions (the pseudo-labels of its
        # students among them) and its trained parameters (the best on validation with early
        # stopping), each checksummed. Optimizer moments and a frozen base stay out: the settings
        # and the base's hash say how to rebuild the rest (`trained_module`).
        meta = {"seconds": seconds, "steps": fitted.steps, "fingerprint": key.fingerprint, "settings": settings,
                "trainable": mi.trainable, "frozen_sha256": checkpoint.state_sha256(fitted.state.frozen)}
        checkpoint.save(self.ckpt_dir, key.outputs_name, 0, preds, meta=meta, final=True, checksum=True,
                        model=fitted.state.params)
        checkpoint.remove(self.ckpt_dir, key.checkpoint_name)  # the in-stage steps are not needed any more
        result = StageOutput(preds, seconds, fitted.steps, key)
        self._outputs_this_process[key.checkpoint_name] = result
        return result

    def _finished(self, key: stages.StageKey, target: dict) -> StageOutput | None:
        """The saved outputs of stage ``key``; None when it has not finished, or when they fail their
        check (the stage is then set aside, to be trained again)."""
        try:
            if not checkpoint.is_done(self.ckpt_dir, key.outputs_name):
                return None
            preds, meta = checkpoint.restore(self.ckpt_dir, key.outputs_name, target)
        except checkpoint.DamagedCheckpoint as exc:
            self._set_aside(key, exc)
            return None
        if meta.get("fingerprint") != key.fingerprint:
            raise RuntimeError(
                f"{self.ckpt_dir / key.outputs_name}: saved under fingerprint {meta.get('fingerprint')!r}, "
                f"expected {key.fingerprint!r}; move the folder away and run again"
            )
        if "frozen_sha256" in meta and checkpoint.exists(self.ckpt_dir, key.checkpoint_name):
            # in-stage steps left by a kill between the outputs' save and their removal
            checkpoint.remove(self.ckpt_dir, key.checkpoint_name)
        return StageOutput({k: np.asarray(v) for k, v in preds.items()}, meta["seconds"], meta["steps"], key)

    def trained_module(self, checkpoint_name: str, model: str, *, seed: int,
                       frozen_features: bool = False) -> nnx.Module:
        """The module of the finished stage ``checkpoint_name`` (as ``results.json`` rows name them in
        ``stages``), trained on ``model`` with ``seed``: rebuilt as the stage built it, then given
        its saved parameters. Both halves are checked: the parameters against the sha256 saved with
        them, the rebuilt frozen part (a LoRA or ``top:K`` stage's base) against the hash of the one
        it was trained on. Raises ``checkpoint.DamagedCheckpoint`` when either differs."""
        mi = self.inputs.get(model, frozen_features=frozen_features)
        structure, fresh = train.init_state(mi.build(seed), mi.trainable)
        outputs = stages.StageKey.parse(checkpoint_name).outputs_name
        found = checkpoint.latest(self.ckpt_dir, outputs)
        if found is None or not checkpoint.is_done(self.ckpt_dir, outputs):
            raise FileNotFoundError(f"stage {checkpoint_name!r} has not finished in {self.ckpt_dir}")
        if "frozen_sha256" not in found[1]:
            raise FileNotFoundError(f"stage {checkpoint_name!r} was saved by an older w2sjax, without its model; "
                                    f"move {self.ckpt_dir / outputs} away and run again to retrain it")
        # placed as a stage places them (replicated, or fsdp-sharded), so the module runs on the mesh
        shardings = train.state_shardings(self.mesh, fresh)
        abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(np.shape(x), jnp.asarray(x).dtype, sharding=s),
                                fresh.params, shardings.params)
        params, meta = checkpoint.restore_model(self.ckpt_dir, outputs, abstract)
        if meta.get("frozen_sha256") != checkpoint.state_sha256(fresh.frozen):
            raise checkpoint.DamagedCheckpoint(outputs, 0, "the frozen part rebuilt from the model's settings differs "
                                                          "from the one the stage was trained on")
        return structure.bind(params, train.place(fresh.frozen, shardings.frozen))

    def _set_aside(self, key: stages.StageKey, exc: Exception) -> None:
        """A finished stage whose outputs fail their check: move it (model and outputs) aside and
        say so once; the caller then trains it again."""
        names = (key.outputs_name, key.checkpoint_name)
        moved = [p for p in (checkpoint.move_aside(self.ckpt_dir, n) for n in names) if p]
        if parallel.is_main_process():
            print(f"w2sjax: warning: finished stage {key.name!r} has damaged outputs ({exc}); moved to "
                  f"{pathlib.Path(moved[0]).parent if moved else self.ckpt_dir}; training it again",
                  file=sys.stderr, flush=True)


_USED: dict[str, dict] = {}  # run directory -> the stages its (training) runner used, by checkpoint name


def _disk_estimate(model_options: dict, target: dict) -> tuple[int, int]:
    """``(finished, in_stage)`` bytes of a stage to train (:func:`w2sjax.disk.stage_bytes`)."""
    from w2sjax import disk, models

    spec = models.get_model(model_options["name"])
    return disk.stage_bytes(spec.num_params, finetune=model_options["mode"] == "finetune",
                            trainable=model_options.get("trainable", "all"),
                            pred_values=sum(int(np.size(v)) for v in target.values()))


def _one_hot(labels: np.ndarray, n: int) -> np.ndarray:
    return np.eye(n, dtype=np.float32)[labels]


def _acc(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(metrics.accuracy(probs, labels))


# ---- validation -----------------------------------------------------------------------------

def validate(config: Config, names=None) -> None:
    """Check every model name in the config (or ``names``) before any work or any write.
    Raises ConfigError."""
    from w2sjax import models

    if names is None:
        names = set(config.weak_models) | set(config.strong_models)
        for chain in config.bootstrap:
            names |= set(chain.split(">"))
    names = set(names)
    for name in sorted(names):
        try:
            models.get_model(name)
        except ValueError as exc:
            raise ConfigError(f"model: {exc}") from None


def _load_task(config: Config):
    from w2sjax import data

    try:
        return data.load_task(config.data.task, text_field=config.data.text_field,
                              label_field=config.data.label_field, label_map=config.data.label_map)
    except (ValueError, FileNotFoundError) as exc:
        raise ConfigError(f"data.task: {exc}") from None


# ---- the protocol ---------------------------------------------------------------------------

# Compile counters at the start of each run (by output directory), so `finish` reports the run's own.
_COMPILES_AT_START: dict[str, dict] = {}


def prepare(config: Config, out_dir: str | os.PathLike, *, progress: bool = True, models_used=None):
    """Everything before the first stage, shared by the standard protocol and ``w2sjax.methods``:
    join other processes, check names, build the mesh, load (and maybe shift) the task, create
    ``out_dir``. Returns ``(runner, task, out)``. Raises :class:`ConfigError` on bad input.
    """
    # First, before anything touches a JAX backend: join the other processes, if any are configured
    # (JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, or cluster auto-detection).
    parallel.maybe_initialize_distributed(auto=config.parallel.distributed)
    _COMPILES_AT_START[str(out_dir)] = compile_stats.install()
    validate(config, models_used)
    try:
        mesh = parallel.make_mesh(config.parallel.data, config.parallel.fsdp)
    except ValueError as exc:
        raise ConfigError(f"parallel: {exc}") from None
    out = pathlib.Path(out_dir)
    rundir.check(out)
    rundir.lock(out, process=jax.process_index())  # one run per directory, before anything is written
    if parallel.is_main_process():
        atomic.remove_stale(out)  # left by a run killed while writing results.json
    task = _load_task(config)
    names = set(config.weak_models) | set(config.strong_models) if models_used is None else set(models_used)
    for model_name in sorted(names):
        _check_modality(model_name, task)
    if config.options.shift != "none":
        task = shift_task(task, config.options.shift)

    runner = Runner(config, out, mesh, task, progress)
    task.train["row"] = np.arange(len(task.train["label"]))
    task.test["row"] = np.arange(len(task.test["label"]))
    if parallel.is_main_process():
        announce_data(config, task)
    return runner, task, out


SMALL_HALF, FEW_STEPS = 200, 50  # below these, PGR and its interval mostly measure noise


def announce_data(config: Config, task) -> None:
    """Print the split sizes, and one warning line each when a half is small or a stage trains for
    only a few optimizer steps."""
    splits = SeedRun.splits_of(config, task, config.seeds[0])
    sizes = {"A": len(splits.weak["label"]), "B": len(splits.strong["label"]), "val": len(splits.val["label"]),
             "test": len(splits.test["label"])}
    print(f"data: {task.name}: A {sizes['A']}, B {sizes['B']}, val {sizes['val']}, test {sizes['test']} examples",
          flush=True)
    if task.name.startswith(("csv:", "jsonl:")):  # what the file's labels were read as
        from w2sjax.data import user

        print(f"data: {task.num_classes} classes in the file (rows per class): {user.class_counts(task)}", flush=True)
    small = [f"{half} has {sizes[half]}" for half in ("A", "B") if sizes[half] < SMALL_HALF]
    if small:
        _warn(f"{' and '.join(small)} examples (< {SMALL_HALF}): weak, w2s and ceiling accuracies will be noisy; "
              "use more data (data.n_train) or read PGR with its interval")
    few = []
    for what, cfg, n in (("supervisors", config.weak_train, sizes["A"]), ("students", config.train, sizes["B"])):
        steps = math.ceil(cfg.epochs * max(1, n // max(1, min(cfg.batch_size, n))))
        if steps < FEW_STEPS:
            few.append(f"{what} ~{steps} ({n} examples, batch {cfg.batch_size}, {cfg.epochs:g} epochs)")
    if few:
        _warn(f"few optimizer steps (< {FEW_STEPS}): {'; '.join(few)}; raise epochs or lower batch_size")
    warn_probed_students(config)


def warn_probed_students(config: Config) -> None:
    """One warning line per student that ``strong_mode="finetune"`` cannot finetune (it is probed)."""
    from w2sjax import models

    if config.strong_mode != "finetune":
        return
    students = dict.fromkeys(list(config.strong_models) + [m for c in config.bootstrap for m in c.split(">")[1:]])
    for name in students:
        if models.get_model(name).finetune is None:
            _warn(f"strong_mode=finetune: {name} has no finetune model; it is probed (a linear head on its "
                  "frozen features)")


def _warn(message: str) -> None:
    print(f"w2sjax: warning: {message}", file=sys.stderr, flush=True)


def shift_task(task, shift: str):
    """A copy of ``task`` under a distribution shift between training and test.

    ``"length"``: the training split keeps the texts of at most the median training length (in
    words), the test split keeps those longer than it: supervisors and student learn on short
    reviews and are judged on long ones. ``"domain:NAME"`` (tasks whose rows carry a ``domain``,
    such as multiemo): train on every other domain, test on NAME.
    """
    if shift.startswith("domain:"):
        return _domain_shift(task, shift[len("domain:"):])
    if shift != "length":
        raise ConfigError(f"options.shift: unknown shift {shift!r}")
    if task.kind != "text":
        raise ConfigError(f"options.shift=length needs a text task; {task.name!r} is {task.kind}")
    from w2sjax.data.task import take

    length = lambda split: np.array([len(str(t).split()) for t in split["text"]])
    cut = np.median(length(task.train))
    train = take(task.train, np.flatnonzero(length(task.train) <= cut))
    test = take(task.test, np.flatnonzero(length(task.test) > cut))
    return dataclasses.replace(task, train=train, test=test)


def _domain_shift(task, domain: str):
    from w2sjax.data import builders
    from w2sjax.data.task import take

    names = builders.BUILDERS[task.name].DOMAINS if task.name in builders.BUILDERS else ()
    if "domain" not in task.train or domain not in names:
        known = f"one of {', '.join(names)}" if names else f"a task with domains; {task.name!r} has none"
        raise ConfigError(f"options.shift=domain:{domain}: expected {known}")
    d = names.index(domain)
    train = take(task.train, np.flatnonzero(task.train["domain"] != d))
    test = take(task.test, np.flatnonzero(task.test["domain"] == d))
    return dataclasses.replace(task, train=train, test=test)


class SeedRun:
    """One seed's splits and the stages every protocol builds from them.

    Stages are named by :class:`w2sjax.stages.StageKey`: the same key and settings mean the same
    model, trained once and shared by every pair (and every method) that needs it.
    """

    def __init__(self, runner: Runner, task, seed: int):
        config = runner.config
        self.runner, self.task, self.seed, self.config = runner, task, seed, config
        splits = self.splits_of(config, task, seed)
        # Half A trains the supervisors; half B is what they pseudo-label, and trains the students
        # (and the ceiling, on its ground truth).
        self.supervisor_half, self.student_half = splits.weak, splits.strong
        self.val, self.test = splits.val, splits.test
        # Every stage predicts these sets when it ends; "b" (half B) of a supervisor's predictions
        # holds the pseudo-labels (:meth:`pseudo_labels`). The names are stored in checkpoints.
        self.evals = {"b": ("train", self.student_half["row"]), "val": ("train", self.val["row"]),
                      "test": ("test", self.test["row"])}

    @staticmethod
    def splits_of(config: Config, task, seed: int):
        """The seed's A / B / val / test splits under ``config.data``."""
        from w2sjax import data

        try:
            return data.make_splits(
                task, seed=seed, n_train=config.data.n_train, n_val=config.data.n_val,
                n_test=config.data.n_test, balance=config.data.balance,
            )
        except ValueError as exc:
            raise ConfigError(f"data: {exc}") from None

    def gt(self, split: dict) -> np.ndarray:
        return _one_hot(split["label"], self.task.num_classes)

    def weak(self, name: str, *, rows=None, weights=None, variant: str = "") -> StageOutput:
        """Supervisor ``name`` trained on half A's ground truth (or on ``rows`` of it, as ``variant``)."""
        rows = self.supervisor_half["row"] if rows is None else rows
        labels = _one_hot(self.task.train["label"][rows], self.task.num_classes)
        return self.runner.stage(
            stages.StageKey.weak(name, self.seed, variant=variant), model=name, frozen_features=True, rows=rows,
            labels=labels,
            val_rows=self.val["row"], val_labels=self.gt(self.val), evals=self.evals,
            cfg=self.config.weak_train, loss="xent", seed=self.seed, weights=weights,
        )

    def strong(self, key: stages.StageKey, name: str, labels, val_labels, loss: str, *, rows=None, cfg=None,
               frozen_features: bool = False, sources=None) -> StageOutput:
        """Student ``name`` trained on half B (or ``rows``) with ``labels``; ``key`` names it and
        ``sources`` says which stage the labels came from (:meth:`Runner.settings`)."""
        return self.runner.stage(
            key, model=name, frozen_features=frozen_features, rows=self.student_half["row"] if rows is None else rows,
            labels=labels,
            val_rows=self.val["row"], val_labels=val_labels, evals=self.evals,
            cfg=self.config.train if cfg is None else cfg, loss=loss, seed=self.seed, sources=sources,
        )

    def ceiling(self, name: str) -> StageOutput:
        return self.strong(stages.StageKey.ceiling(name, self.seed), name, self.gt(self.student_half),
                           self.gt(self.val), "xent")

    @staticmethod
    def pseudo_labels(supervisor: StageOutput) -> np.ndarray:
        """The pseudo-labels: ``supervisor``'s soft predictions ``[N_B, C]`` on half B, which it
        never saw. Its stage made them when it ended (:meth:`Runner.stage` predicts every set of
        ``evals``); its students train on them."""
        return supervisor.preds["b"]

    def supervised(self, key: stages.StageKey, strong_name: str, sup: StageOutput, loss: str, *, cfg=None,
                   val_labels=None, part: np.ndarray | None = None) -> StageOutput:
        """Student ``strong_name`` on half B with the pseudo-labels of ``sup``; its validation labels
        are the supervisor's predictions too (all a real user has) unless ``val_labels`` are given.
        ``part``: positions in half B to train on instead of all of it (a bootstrap rung's share)."""
        labels, rows, named = self.pseudo_labels(sup), self.student_half["row"], sup.source("b")
        if part is not None:
            labels, rows = labels[part], rows[part]
            named = None if named is None else f"{named}[{stages.digest(part)}]"
        sources = {"labels": named, "val_labels": sup.source("val") if val_labels is None else None}
        return self.runner.stage(
            key, model=strong_name, frozen_features=False, rows=rows,
            labels=labels, val_rows=self.val["row"],
            val_labels=sup.preds["val"] if val_labels is None else val_labels, evals=self.evals,
            cfg=self.config.train if cfg is None else cfg, loss=loss, seed=self.seed, sources=sources,
        )

    def w2s(self, weak_name: str, strong_name: str, weak: StageOutput, loss: str) -> StageOutput:
        """The standard student of ``weak_name``'s supervision (the stage :func:`run` trains)."""
        return self.supervised(stages.StageKey.w2s(weak_name, strong_name, loss, self.seed), strong_name, weak, loss)

    def pairs(self) -> Iterator[tuple[str, str, str, StageOutput, StageOutput]]:
        """``(weak_name, strong_name, loss, weak, ceiling)`` for every strong model, supervisor and
        loss of the config, in that nesting; each ceiling and supervisor stage runs once."""
        for s in self.config.strong_models:
            ceiling = self.ceiling(s)
            for w in self.config.weak_models:
                weak = self.weak(w)
                for loss in self.config.losses:
                    yield w, s, loss, weak, ceiling

    def row(self, weak_name, strong_name, loss, weak, w2s, ceiling) -> dict:
        if self.runner.planning:
            return {}
        return _row(self.task, self.config, self.seed, weak_name, strong_name, loss, weak, w2s, ceiling,
                    self.test["label"], self.student_half["label"], self.test.get("group"))


def run(config: Config, out_dir: str | os.PathLike, *, progress: bool = True) -> dict:
    """Run (or resume) the experiment ``config`` into ``out_dir`` and return the results dict.

    Writes ``results.json``, ``metrics.jsonl`` and ``checkpoints/`` under ``out_dir``. A config
    whose ``method`` is not ``"w2s"`` runs that method of :mod:`w2sjax.methods` instead. First
    prints the plan: which stages train and how many are reused from earlier runs.
    """
    if config.method != "w2s":
        from w2sjax import methods

        return methods.run(config, out_dir, progress=progress)
    runner, task, out = prepare(config, out_dir, progress=progress)
    for current in plan_then_train(runner, out):  # the protocol twice: its stages keyed only, then trained
        rows = []
        for seed in config.seeds:
            sr = SeedRun(current, task, seed)
            ceilings = {s: sr.ceiling(s) for s in config.strong_models}
            for w in config.weak_models:
                weak = sr.weak(w)
                for s in config.strong_models:
                    for loss in config.losses:
                        w2s = sr.supervised(stages.StageKey.w2s(w, s, loss, seed), s, weak, loss)
                        rows += [sr.row(w, s, loss, weak, w2s, ceilings[s]) if refinement == "soft"
                                 else _refined_row(sr, w, s, loss, weak, w2s, ceilings[s], refinement)
                                 for refinement in config.options.labels]
            rows += _bootstrap_rows(sr, ceilings)
    return finish(config, out, rows)


def _bootstrap_rows(sr: SeedRun, ceilings: dict[str, StageOutput], recipes: dict | None = None) -> list[dict]:
    """The bootstrap chains (``a>b>c``) of one seed, as Burns et al. run them: half B is cut into
    one disjoint part per rung (:func:`chain_parts`), and each rung trains on its part with labels
    that the model before it predicted for rows *it* never trained on (the supervisor never saw
    half B at all). A rung that labelled its own training rows would mostly hand its supervisor's
    labels on. Each chain row also carries a direct student (``a`` straight to the last model) on
    the last rung's part: the same rows and as many of them, so the comparison is on equal data.
    ``recipes`` maps a model to the training config of its rungs (default: the config's)."""
    recipes = recipes or {}
    rows = []
    for chain in sr.config.bootstrap:
        models_in_chain = tuple(chain.split(">"))
        first, last = sr.weak(models_in_chain[0]), models_in_chain[-1]
        parts = chain_parts(sr.student_half, len(models_in_chain) - 1, sr.seed)
        for loss in sr.config.losses:
            current = first
            for depth, student in enumerate(models_in_chain[1:], start=1):
                key = stages.StageKey.boot(models_in_chain[: depth + 1], loss, sr.seed)
                current = sr.supervised(key, student, current, loss, part=parts[depth - 1], cfg=recipes.get(student))
            direct_key = stages.StageKey.w2s(models_in_chain[0], last, loss, sr.seed,
                                             variant=f"part{len(parts)}of{len(parts)}")
            direct = sr.supervised(direct_key, last, first, loss, part=parts[-1], cfg=recipes.get(last))
            ceiling = ceilings.get(last) or sr.ceiling(last)
            row = sr.row(models_in_chain[0], last, loss, first, current, ceiling)
            if sr.runner.planning:
                continue
            direct_row = sr.row(models_in_chain[0], last, loss, first, direct, ceiling)
            row.update(chain=chain, n_trained=int(len(parts[-1])), direct_w2s_acc=direct_row["w2s_acc"],
                       direct_pgr=direct_row["pgr"], direct_stage=direct.key.checkpoint_name if direct.key else None)
            rows.append(row)
    return rows


def chain_parts(half: dict, n: int, seed: int) -> list[np.ndarray]:
    """``n`` disjoint parts of half B, as sorted positions into it, of (nearly) equal size, drawn
    by a stream of their own (``seed``); a multiple-choice question's rows stay in one part."""
    groups = half.get("group")
    ids = np.arange(len(half["label"])) if groups is None else np.asarray(groups)
    unique = np.unique(ids)
    order = np.random.default_rng([seed, 0xB0075]).permutation(unique)
    if len(order) < n:
        raise ConfigError(f"bootstrap: half B has {len(order)} examples, fewer than the chain's {n} rungs")
    return [np.flatnonzero(np.isin(ids, share)) for share in np.array_split(order, n)]


def plan_then_train(runner: Runner, out: pathlib.Path) -> Iterator[Runner]:
    """A planning copy of ``runner``, then ``runner``: a protocol run once with each first keys its
    stages without training any, then the plan is printed (:func:`announce_plan`), then it trains."""
    planner = Runner(runner.config, out, runner.mesh, runner.task, runner.progress, planning=True)
    yield planner
    announce_plan(planner, runner.config, out)
    yield runner


def announce_plan(planner: Runner, config: Config, out: pathlib.Path) -> None:
    """Print one line: how many stages train, how many are reused, and which settings changed
    since the results already in ``out``."""
    todo = [name for name, done in planner.planned.items() if not done]
    reused = len(planner.planned) - len(todo)
    names = ", ".join(stages.StageKey.parse(n).name for n in todo[:4]) + (", ..." if len(todo) > 4 else "")
    line = f"plan: {len(todo)} of {len(planner.planned)} stages to train" + (f" ({names})" if todo else "")
    line += f", {reused} reused"
    if planner.disk:  # finished stages stay; each stage's in-stage steps go when it ends
        from w2sjax import disk

        finished = sum(f for f, _ in planner.disk.values())
        in_stage = max(i for _, i in planner.disk.values())
        line += f"; checkpoints ~{disk.human(finished)} (up to {disk.human(in_stage)} more while a stage trains)"
    estimate = _earlier_seconds(planner.ckpt_dir, todo)
    if estimate is not None:
        line += f"; ~{estimate:.0f} s of training by earlier runs of these stages"
    changed = rundir.changed_settings(out, to_dict(config))
    if changed:
        line += f"; changed since the last run: {changed}"
    if parallel.is_main_process():
        print(line, flush=True)


def _earlier_seconds(ckpt_dir: pathlib.Path, todo: list[str]) -> float | None:
    """The seconds the stages in ``todo`` took when last trained under other settings, if every
    one of them was (the same stage name under another fingerprint); else None."""
    total = 0.0
    for name in todo:
        readable = stages.StageKey.parse(name).name
        earlier = sorted(ckpt_dir.glob(f"{readable}--*.out"), key=lambda p: p.stat().st_mtime)
        found = checkpoint.latest(ckpt_dir, earlier[-1].name) if earlier else None
        if found is None or "seconds" not in found[1]:
            return None
        total += float(found[1]["seconds"])
    return total if todo else None


def finish(config: Config, out: pathlib.Path, rows: list[dict], **extra) -> dict:
    """Write ``results.json`` (process 0) and return it; ``extra`` adds top-level keys. Results
    of other settings already there are kept beside it under a printed name."""
    extra.setdefault("compile", compile_stats.since(_COMPILES_AT_START.get(str(out), {})))
    payload = {"config": to_dict(config), "runs": rows, **extra}
    used = _USED.pop(str(out.absolute()), None)
    if used is not None:
        payload.setdefault("checkpoints", sorted(used))
    signals.check()  # an interrupted run never writes results, even if it got this far
    if parallel.is_main_process():
        kept = rundir.write_results(out, payload)
        if kept is not None:
            print(f"kept the previous results (other settings) as {kept}", flush=True)
        tensorboard_log.flush_all()
    rundir.release(out)
    return payload


def _refined_row(sr: SeedRun, w, s, loss, weak, plain, ceiling, refinement: str) -> dict:
    """Train the student on refined weak labels (``labels.refine``) and describe what it did.

    ``plain`` is the student on the raw soft labels: ``selective`` takes its confident predictions
    as "the strong model's own labels". ``knn``/``filter`` work in the strong backbone's frozen
    feature space, whatever the student's mode.
    """
    from w2sjax import labels as labels_lib

    opts = sr.config.options
    b_rows = sr.student_half["row"]
    feats = None
    if sr.runner.planning:  # only the student's key matters, which does not depend on the labels
        lab, keep = sr.pseudo_labels(weak), np.ones(len(b_rows), bool)
    elif refinement in ("knn", "filter"):
        feats = sr.runner.inputs.get(s, frozen_features=True).inputs("train", b_rows)
    if not sr.runner.planning:
        lab, keep = labels_lib.refine(
            refinement, sr.pseudo_labels(weak), features=feats, strong=plain.preds["b"], keep_frac=opts.keep_frac,
            k=opts.knn_k,
        )
    key = stages.StageKey.w2s(w, s, loss, sr.seed, variant=refinement)
    # Named by what made them, so the key is known before the supervisor and the plain student ran.
    sources = {"val_labels": weak.source("val")}
    if weak.key and plain.key:
        made_by = f"{refinement}:{weak.source('b')}:{plain.source('b')}:{opts.keep_frac}:{opts.knn_k}"
        sources.update(labels=f"labels/{made_by}", rows=f"rows/{made_by}")
    student = sr.strong(key, s, lab[keep], weak.preds["val"], loss, rows=b_rows[keep], sources=sources)
    if sr.runner.planning:
        return {}
    row = sr.row(w, s, loss, weak, student, ceiling)
    b_labels = sr.student_half["label"]
    row.update({
        "variant": refinement,
        "n_trained": int(keep.sum()),
        # How clean the labels the student saw were, against the (hidden) ground truth.
        "train_label_acc": round(_acc(lab[keep], b_labels[keep]), 6),
        "weak_label_acc": round(_acc(sr.pseudo_labels(weak), b_labels), 6),
    })
    if not keep.all():
        # Coverage expansion: examples the supervisor abstained on were never trained on.
        row["excluded_w2s_acc"] = round(_acc(student.preds["b"][~keep], b_labels[~keep]), 6)
        row["excluded_weak_acc"] = round(_acc(sr.pseudo_labels(weak)[~keep], b_labels[~keep]), 6)
    return row


def _check_modality(name: str, task) -> None:
    from w2sjax import models

    spec = models.get_model(name)
    if task.kind not in spec.modalities:
        raise ConfigError(
            f"model: {name!r} takes {'/'.join(spec.modalities)} inputs but task {task.name!r} is {task.kind}"
        )


def _row(task, config, seed, weak_name, strong_name, loss, weak, w2s, ceiling, test_labels, b_labels,
         test_groups=None) -> dict:
    agree = metrics.agreement(w2s.preds["test"], weak.preds["test"], test_labels)
    agree_b = metrics.agreement(w2s.preds["b"], SeedRun.pseudo_labels(weak), b_labels)
    return results.row(
        task.name, weak_name, strong_name, loss, seed,
        _acc(weak.preds["test"], test_labels), _acc(w2s.preds["test"], test_labels),
        _acc(ceiling.preds["test"], test_labels), metrics.misfit(w2s.preds["test"], weak.preds["test"]),
        {"weak": weak.seconds, "w2s": w2s.seconds, "ceiling": ceiling.seconds},
        misfit_kl=round(float(metrics.misfit(w2s.preds["test"], weak.preds["test"], kind="kl")), 6),
        agreement=round(float(agree["agreement"]), 6),
        agreement_on_weak_errors=_maybe(agree["agreement_on_teacher_errors"]),
        corrected_weak_errors_train=_maybe(agree_b["corrected_teacher_errors"]),
        strong_mode=config.strong_mode,
        n_test=int(len(test_labels)),
        # always answering the test split's most common class: the floor a trained student must beat
        majority_acc=round(float(np.bincount(np.asarray(test_labels, int)).max() / max(1, len(test_labels))), 6),
        # Each stage's checkpoint name: its readable name and the fingerprint of its settings.
        stages={role: out.key.checkpoint_name for role, out in (("weak", weak), ("w2s", w2s), ("ceiling", ceiling))
                if out.key is not None},
        **(_question_scores(weak, w2s, ceiling, test_labels, test_groups) if test_groups is not None else {}),
    )


def _question_scores(weak, w2s, ceiling, test_labels, test_groups) -> dict:
    """Multiple-choice tasks (one row per choice): accuracy per question beside the per-pair
    accuracy, and the PGR computed from it."""
    acc = {
        name: float(metrics.question_accuracy(stage.preds["test"], test_labels, test_groups))
        for name, stage in (("weak", weak), ("w2s", w2s), ("ceiling", ceiling))
    }
    return {
        **{f"{name}_acc_question": round(value, 6) for name, value in acc.items()},
        "pgr_question": results.pgr(acc["weak"], acc["w2s"], acc["ceiling"]),
        "n_test_questions": int(len(np.unique(test_groups))),
    }


def _maybe(x) -> float | None:
    x = float(x)
    return None if np.isnan(x) else round(x, 6)
