"""`ModelSpec`: what the pipeline needs to know about one model.

Each architecture module builds its own specs (``model_spec(name, **options)``); the registry
only maps names to those modules. This module imports no architecture.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

from flax import nnx

from w2sjax.models import heads

__all__ = ["ModelSpec", "HEADS", "text_tokenizer"]

HEADS = ("linear", "mlp", "cnn")


@dataclasses.dataclass(frozen=True, eq=False)
class ModelSpec:
    """Everything the pipeline needs to know about one model.

    Attributes:
      name: the registered name.
      modalities: task kinds it applies to ("text", "image", "tabular").
      num_params: parameters of the frozen backbone behind the features
        (pretrained models), 0 for TF-IDF, ``None`` where the count depends
        on the input (raw-input models: use `count_params`).
      featurizer: frozen featurizer (``key``, ``fit``, ``__call__``) whose
        output `w2sjax.models.features.cached_features` caches, or ``None`` when the
        head reads raw inputs.
      head: "linear" | "mlp" | "cnn", built by `make_head`.
      finetune: ``finetune(num_classes, *, rngs, dtype=jnp.float32[, mesh])`` -> a
        full trainable model called on `tokenize`'s output, or ``None``. One that takes
        ``mesh`` loads its weights straight into their shardings on it.
      tokenize: ``tokenize(split) -> {"input_ids", "attention_mask"}`` (int32
        ``[N, max_len]``) for `finetune` models, else ``None``.
      head_options: keyword arguments of the head class (e.g. MLP ``hidden``).
    """

    name: str
    modalities: tuple[str, ...]
    num_params: int | None
    featurizer: Any | None
    head: str
    finetune: Callable[..., nnx.Module] | None = None
    tokenize: Callable[[Mapping[str, Any]], dict] | None = None
    head_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def make_head(self, in_shape, num_classes: int, *, rngs: nnx.Rngs) -> nnx.Module:
        """A fresh head for inputs of per-example shape ``in_shape``."""
        in_shape = tuple(int(d) for d in in_shape)
        if self.head == "linear":
            return heads.Linear(math.prod(in_shape), num_classes, rngs=rngs)
        if self.head == "mlp":
            return heads.MLP(math.prod(in_shape), num_classes, rngs=rngs, **self.head_options)
        if self.head == "cnn":
            return heads.CNN(in_shape, num_classes, rngs=rngs, **self.head_options)
        raise ValueError(f"unknown head {self.head!r}; known: {', '.join(HEADS)}")

    def count_params(self, in_shape, num_classes: int) -> int:
        """Trainable parameters of `make_head` for this input (nothing allocated)."""
        head = nnx.eval_shape(lambda: self.make_head(in_shape, num_classes, rngs=nnx.Rngs(0)))
        return heads.count_params(head)


def text_tokenizer(featurizer) -> Callable[[Mapping[str, Any]], dict]:
    """``tokenize(split) -> {"input_ids", "attention_mask"}`` with a text featurizer's tokenizer
    and length: what a finetuned copy of the same backbone reads."""
    def tokenize(split) -> dict:
        ids, mask = featurizer.load()[1].encode(split["text"], featurizer.max_len)
        return {"input_ids": ids, "attention_mask": mask}

    return tokenize
