"""Each model's inputs for any rows of a task, and the trainable module a stage builds for it.

A supervisor (and a probed student) is a head on the model's frozen features, which come from
the on-disk cache of :mod:`w2sjax.models.features`; a finetuned student takes tokens (or the cached
frozen bottom of a ``top:K`` student). A stage asks only for the rows it uses.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable

import jax.numpy as jnp
import numpy as np
from flax import nnx

from w2sjax.config import Config, ConfigError

# The head_init option (part of a stage's fingerprint) of a decoder's linear readout started at its
# training labels' prior (`train.head_start=prior`); the runner sets the bias (`heads.start_at_prior`).
PRIOR_HEAD_INIT = "zeros-prior"


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
                # zero kernel; bias at the labels' prior (heads.start_at_prior) or at zero
                options["head_init"] = PRIOR_HEAD_INIT if self.config.train.head_start == "prior" else "zeros"
                if self.config.train.readout == "verbalizer":  # the head starts as the class names' LM rows
                    options["head_init"] = "verbalizer"
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
            if train_cfg.readout == "verbalizer":  # before cut_bottom drops the output projection
                from w2sjax.models import verbalizer

                try:
                    verbalizer.attach(module, spec.featurizer.load()[1], self.task.class_names)
                except verbalizer.VerbalizerError as exc:
                    raise ConfigError(f"train.readout: {spec.name}: {exc}") from None
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
        """The on-disk cache of ``spec``'s frozen bottom below its top ``k`` blocks (`w2sjax.models.bottoms`)."""
        from w2sjax.models import bottoms

        return bottoms.Bottom(spec, k, num_classes=self.task.num_classes, dtype=self.config.precision,
                              task_name=self.task.source or self.task.name, cache_dir=bottoms.cache_root(),
                              progress=self.progress)

    def _probe(self, spec, prompt: str = "") -> ModelInputs:
        from w2sjax import assets
        from w2sjax.models import features

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
