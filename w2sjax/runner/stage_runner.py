"""Running a stage, and reusing it: the :class:`Runner` every protocol trains through.

A stage is named by a :class:`w2sjax.runner.stage_keys.StageKey` bound to every setting that determines its
outputs. The runner trains it (``train.fit``, resumable from in-stage Orbax checkpoints), predicts
every eval set, and saves the predictions and the trained parameters under that key; a later call
with the same key and settings (in this run or a rerun) reads them back instead of training.
Its lines in ``metrics.jsonl`` are tagged with the key, so a resumed stage logs each step once.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from w2sjax import parallel, train
from w2sjax.runner import atomic, checkpoint, precompile, preemption, saved_splits, sigint, stage_keys, tensorboard_log
from w2sjax.config import Config
from w2sjax.inputs import PRIOR_HEAD_INIT, Inputs
from w2sjax.models import heads


# ---- metrics.jsonl --------------------------------------------------------------------------

class MetricsLog:
    """Appends one JSON object per line to ``metrics.jsonl`` (process 0 only), and the same numbers
    to TensorBoard event files beside it when tensorboardX is installed (`w2sjax.runner.tensorboard_log`)."""

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


PREDICT_ROWS = train.PREDICT_ROWS  # rows per prediction batch; kept here for its importers


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
                name = stage_keys.StageKey.parse(self.stage).name
                print(f"w2sjax: warning: stage {name!r}: its in-stage checkpoint (step "
                      f"{meta.get('step')}) was saved on {_describe_mesh(saved_on)} and this run has "
                      f"{_describe_mesh(self.mesh)}; restarting the stage", file=sys.stderr, flush=True)
            checkpoint.remove(self.ckpt_dir, self.stage)
            return None
        return state

    def save(self, step, state):
        meta = {"step": step} if self.mesh is None else {"step": step, "mesh": self.mesh}
        checkpoint.save(self.ckpt_dir, self.stage, step, state, meta=meta, checksum=True)


# ---- stages ---------------------------------------------------------------------------------

@dataclasses.dataclass
class StageOutput:
    preds: dict[str, np.ndarray]  # eval-set name -> probabilities [N, C]
    seconds: float
    steps: int
    key: stage_keys.StageKey | None = None  # the bound key; None for outputs made outside a stage (combinations)

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
        # The losses this run's stages train with (weak and ceiling stages: xent), compiled into one
        # train program per shape (`train.compiled_losses`): fewer than every registered loss.
        self.losses = ("xent", *config.losses)
        self.planning = planning
        self.ckpt_dir = out_dir / "checkpoints"
        self.log = MetricsLog(out_dir / "metrics.jsonl")
        self.inputs = Inputs(task, config, progress, mesh)
        self._outputs_this_process: dict[str, StageOutput] = {}  # checkpoint name -> outputs, trained or read
        self.planned: dict[str, bool] = {}  # checkpoint name -> already done (planning runs)
        self.disk: dict[str, tuple[int, int]] = {}  # checkpoint name -> (finished, in-stage) bytes, of stages to train
        if not planning:  # `finish` lists every stage this run used in results.json (what `w2sjax prune` keeps)
            USED[str(out_dir.absolute())] = self._outputs_this_process

    def record_splits(self, seed: int, splits) -> None:
        """Save what reports need to score seed ``seed``'s stages again (its val and test rows and
        labels, :mod:`w2sjax.runner.saved_splits`); a planning runner writes nothing."""
        if not self.planning:
            saved_splits.save(self.ckpt_dir.parent, seed, splits, self.task.num_classes)

    def settings(self, *, model, frozen_features, rows, labels, val_rows, val_labels, evals, cfg, loss, seed, weights,
                 sources) -> dict:
        """Everything that determines a stage's outputs (see :mod:`w2sjax.runner.stage_keys`).

        ``sources`` names label arrays that come from another stage (``StageOutput.source``), so a
        student's fingerprint holds its supervisor's and is known before the supervisor has run;
        every array not named there is hashed by content.
        """
        sources = dict(sources or {})
        named = lambda key, array: sources.get(key) or (None if array is None else stage_keys.digest(array))
        early = bool(cfg.early_stopping and len(val_rows))
        options = self.inputs.options(model, frozen_features=frozen_features)
        tokens = options["mode"] != "probe" and "max_len" in options  # a finetuned text backbone
        return {
            "task": {"name": self.task.name, "data": self.task.fingerprint, "shift": self.config.options.shift},
            "seed": seed,
            "model": options,
            "train": stage_keys.train_settings(cfg, loss, tokens=tokens),
            "loss": loss,
            "rows": named("rows", rows),
            "labels": named("labels", labels),
            "weights": named("weights", weights),
            "val": [stage_keys.digest(val_rows), named("val_labels", val_labels)] if early else None,
            "evals": {k: [split, stage_keys.digest(idx)] for k, (split, idx) in sorted(evals.items())},
        }

    def stage(
        self,
        key: stage_keys.StageKey,
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
        cfg = train.stage_compile_cost(cfg, self.config.precision)  # a recipe built apart from the run's config too
        settings = self.settings(model=model, frozen_features=frozen_features, rows=rows, labels=labels,
                                 val_rows=val_rows, val_labels=val_labels, evals=evals, cfg=cfg, loss=loss, seed=seed,
                                 weights=weights, sources=sources)
        key = key.bind(settings)
        if key.checkpoint_name in self._outputs_this_process:
            return self._outputs_this_process[key.checkpoint_name]
        sigint.check()
        target = {k: np.zeros((len(idx), self.task.num_classes), np.float32) for k, (_, idx) in evals.items()}
        result = self._planned(key, settings, target) if self.planning else self._finished(key, target)
        if result is None:
            if preemption.requested():  # a SIGTERM between stages: stop before loading anything
                raise preemption.Preempted(key.name, 0, saved=False)
            started = time.perf_counter()
            mi = self.inputs.get(model, frozen_features=frozen_features)
            ahead = self._compile_ahead(mi, settings, model, rows, labels, cfg, loss, seed)
            data = _array_data(mi, rows, labels, weights)
            val = _array_data(mi, val_rows, val_labels) if cfg.early_stopping and len(val_rows) else None
            module = mi.build(seed)
            if settings["model"].get("head_init") == PRIOR_HEAD_INIT:
                heads.start_at_prior(module, labels, weights)
            eval_inputs = {name: mi.inputs(split, idx) for name, (split, idx) in evals.items()}
            predicted = [*eval_inputs.values(), *([val.inputs] if val else [])]
            buckets = train.predict_buckets(predicted, cfg, self.mesh)  # the lengths its predictions run at
            ahead = self._finetune_ahead(ahead, settings, mi, module, data, predicted, cfg, loss, seed, buckets)
            fitted = train.fit(
                module, data, cfg=cfg, loss=loss, mesh=self.mesh, seed=seed, trainable=mi.trainable, val=val,
                stage=key.name, ckpt=_OrbaxStage(self.ckpt_dir, key.checkpoint_name, self.mesh),
                log=self.log.of_stage(key.checkpoint_name), progress=self.progress, predict_buckets=buckets,
                losses=self.losses,
            )
            result = self._save_outputs(key, settings, mi, fitted, evals, eval_inputs, cfg, started, buckets)
            for future in ahead:
                future.result()  # all used by now; raises an error of a program compiled ahead and not called
        self._outputs_this_process[key.checkpoint_name] = result
        return result

    def _finetune_ahead(self, ahead: list, settings: dict, mi, module, data, predicted: list, cfg, loss: str, seed: int,
                        buckets) -> list:
        """Wait for a probe's program (``ahead``, compiled while the inputs were computed; raises its
        error); start every program of a finetuning stage (token inputs) side by side and return
        their futures: the stage's calls wait for each as they need it (`precompile.wait`), so
        training starts with its first program while the others compile."""
        for future in ahead:
            future.result()
        if settings["model"]["mode"] == "probe":
            return []
        return precompile.start_finetune(module, data, predicted, cfg=cfg, loss=loss, mesh=self.mesh, seed=seed,
                                         trainable=mi.trainable, predict_buckets=buckets, losses=self.losses)

    def _compile_ahead(self, mi, settings: dict, model: str, rows, labels, cfg, loss: str, seed: int):
        """A probe stage's train program, compiling on a background thread (`precompile`): a list of
        at most one future."""
        if settings["model"]["mode"] != "probe" or not len(rows):
            return []
        example = _array_data(mi, np.arange(1), labels[:1])  # the row Inputs read for the head's shape
        future = precompile.start(lambda: mi.build(seed), example, len(rows), name=model, cfg=cfg, loss=loss,
                                  mesh=self.mesh, seed=seed, trainable=mi.trainable, losses=self.losses)
        return [] if future is None else [future]

    def _planned(self, key: stage_keys.StageKey, settings: dict, target: dict) -> StageOutput:
        """A planning run's answer for stage ``key``: uniform predictions, having noted whether the
        stage is already done (and, if not, the disk its checkpoints will take)."""
        try:
            self.planned[key.checkpoint_name] = checkpoint.is_done(self.ckpt_dir, key.outputs_name)
        except checkpoint.DamagedCheckpoint:
            self.planned[key.checkpoint_name] = False  # will be set aside and trained again
        if not self.planned[key.checkpoint_name]:
            self.disk[key.checkpoint_name] = _disk_estimate(settings["model"], target)
        n_classes = self.task.num_classes
        return StageOutput({k: np.full_like(v, 1.0 / n_classes) for k, v in target.items()}, 0.0, 0, key)

    def _save_outputs(self, key: stage_keys.StageKey, settings: dict, mi, fitted: train.FitResult,
                      evals: dict[str, tuple[str, np.ndarray]], eval_inputs: dict, cfg: train.TrainConfig,
                      started: float, buckets) -> StageOutput:
        """Predict every eval set (``eval_inputs``, by name) with the trained stage (in ``buckets``:
        `train.predict_buckets`), check it has not collapsed, and save it as finished; its in-stage
        steps are then removed."""
        preds = {}
        for name, inputs in eval_inputs.items():
            preds[name] = train.predict(
                fitted.predict_step, fitted.state, inputs, mesh=self.mesh, batch_size=train.predict_rows(cfg),
                buckets=buckets,
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
        return StageOutput(preds, seconds, fitted.steps, key)

    def _finished(self, key: stage_keys.StageKey, target: dict) -> StageOutput | None:
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
        it was trained on. Raises ``checkpoint.DamagedCheckpoint`` when either differs, and
        ``checkpoint.ModelDropped`` when the parameters were dropped to save disk (``w2sjax prune --params``)."""
        mi = self.inputs.get(model, frozen_features=frozen_features)
        structure, fresh = train.init_state(mi.build(seed), mi.trainable)
        outputs = stage_keys.StageKey.parse(checkpoint_name).outputs_name
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

    def _set_aside(self, key: stage_keys.StageKey, exc: Exception) -> None:
        """A finished stage whose outputs fail their check: move it (model and outputs) aside and
        say so once; the caller then trains it again."""
        names = (key.outputs_name, key.checkpoint_name)
        moved = [p for p in (checkpoint.move_aside(self.ckpt_dir, n) for n in names) if p]
        if parallel.is_main_process():
            print(f"w2sjax: warning: finished stage {key.name!r} has damaged outputs ({exc}); moved to "
                  f"{pathlib.Path(moved[0]).parent if moved else self.ckpt_dir}; training it again",
                  file=sys.stderr, flush=True)



USED: dict[str, dict] = {}  # run directory -> the stages its (training) runner used, by checkpoint name


def _array_data(mi, rows: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> train.ArrayData:
    """The model inputs of task-train ``rows`` with their soft ``labels`` (and loss ``weights``)."""
    return train.ArrayData(mi.inputs("train", rows), labels.astype(np.float32),
                           None if weights is None else np.asarray(weights, np.float32))


def _disk_estimate(model_options: dict, target: dict) -> tuple[int, int]:
    """``(finished, in_stage)`` bytes of a stage to train (:func:`w2sjax.runner.disk.stage_bytes`)."""
    from w2sjax import models
    from w2sjax.runner import disk

    spec = models.get_model(model_options["name"])
    return disk.stage_bytes(spec.num_params, finetune=model_options["mode"] == "finetune",
                            trainable=model_options.get("trainable", "all"),
                            pred_values=sum(int(np.size(v)) for v in target.values()))
