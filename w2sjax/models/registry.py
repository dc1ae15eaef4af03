"""Model names -> `ModelSpec`: what to featurize, which head, how to finetune.

Names:
  ``minilm-l1`` ... ``minilm-l6``  the first k layers of all-MiniLM-L6-v2
                                   (frozen mean-pooled features + linear head,
                                   or finetuned end to end as a `BertClassifier`)
  ``glove-bow``                    mean GloVe 6B 50d vectors + linear head
  ``tfidf``                        TF-IDF (5000 terms) + linear head
  ``linear``, ``mlp``, ``cnn``     trained from scratch on raw image/tabular ``x``

``get_model(name, **options)`` passes options to the model's factory, e.g.
``get_model("minilm-l4", max_len=128)`` or ``get_model("mlp", hidden=(512,))``.
Nothing heavy happens here: weights load on first use.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import math
from typing import Any, Callable, Mapping

import jax.numpy as jnp
from flax import nnx

from w2sjax.models import bert, embed, heads, weak

__all__ = ["ModelSpec", "get_model", "known_models", "register_model", "MINILM_CONFIG"]

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
        output `w2sjax.features.cached_features` caches, or ``None`` when the
        head reads raw inputs.
      head: "linear" | "mlp" | "cnn", built by `make_head`.
      finetune: ``finetune(num_classes, *, rngs, dtype=jnp.float32)`` -> a
        full trainable model called on `tokenize`'s output, or ``None``.
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


# all-MiniLM-L6-v2's architecture, so num_params needs no download (a test
# checks it against the real checkpoint).
MINILM_CONFIG = bert.BertConfig(
    vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
    intermediate_size=1536, max_position_embeddings=512, type_vocab_size=2)


def _minilm(num_layers: int, *, max_len: int = 256, normalize: bool = False,
            tokens_per_batch: int = 8192, dtype: str = "float32", path=None,
            progress: bool = True) -> ModelSpec:
    name = f"minilm-l{num_layers}"
    featurizer = embed.BertFeaturizer(
        name, path=path, num_layers=num_layers, max_len=max_len, normalize=normalize,
        tokens_per_batch=tokens_per_batch, dtype=dtype, progress=progress)

    def finetune(num_classes: int, *, rngs: nnx.Rngs, dtype=jnp.float32):
        # A fresh copy of the weights: finetuning must not touch the frozen
        # encoder the featurizer shares.
        encoder = bert.load_bert(featurizer.checkpoint(), num_layers=num_layers, dtype=dtype)
        return bert.BertClassifier(encoder, num_classes, normalize=normalize, rngs=rngs)

    def tokenize(split) -> dict:
        ids, mask = featurizer.load()[1].encode(split["text"], max_len)
        return {"input_ids": ids, "attention_mask": mask}

    cfg = dataclasses.replace(MINILM_CONFIG, num_hidden_layers=num_layers)
    return ModelSpec(name=name, modalities=("text",), num_params=bert.count_bert_params(cfg),
                     featurizer=featurizer, head="linear", finetune=finetune, tokenize=tokenize)


def _glove_bow(*, path=None) -> ModelSpec:
    f = weak.GloveBowFeaturizer(path)
    return ModelSpec("glove-bow", ("text",), f.num_params, f, "linear")


def _tfidf(*, max_features: int = 5000) -> ModelSpec:
    return ModelSpec("tfidf", ("text",), 0, weak.TfidfFeaturizer(max_features), "linear")


def _raw(head: str, modalities: tuple[str, ...]):
    def factory(**head_options) -> ModelSpec:
        return ModelSpec(head, modalities, None, None, head, head_options=dict(head_options))
    return factory


_FACTORIES: dict[str, Callable[..., ModelSpec]] = {}

# Backbones ported in their own modules, imported only when asked for. To
# plug one in, define ``model_spec(name, **options) -> ModelSpec`` in its
# module (see `_minilm` for a pretrained text model); the name is listed by
# `known_models` as soon as that function exists.
_PLUGINS: dict[str, str] = {
    "mpnet-base": "w2sjax.models.mpnet",
    "smollm2-135m": "w2sjax.models.llama",
}


def register_model(name: str, factory: Callable[..., ModelSpec], *,
                   overwrite: bool = False) -> None:
    """Add a model: ``factory(**options) -> ModelSpec``."""
    if name in _FACTORIES and not overwrite:
        raise ValueError(f"model {name!r} is already registered")
    _FACTORIES[name] = factory


def _plugin(name: str):
    """The ``model_spec`` function of a plugin module, or ``None`` if it has none yet."""
    module = _PLUGINS.get(name)
    if module is None or importlib.util.find_spec(module) is None:
        return None
    return getattr(importlib.import_module(module), "model_spec", None)


def _plugin_ready(name: str) -> bool:
    try:
        return _plugin(name) is not None
    except Exception:  # a half-written plugin must not break the other models
        return False


def known_models() -> list[str]:
    """Names `get_model` accepts."""
    return list(_FACTORIES) + [n for n in _PLUGINS if n not in _FACTORIES and _plugin_ready(n)]


def get_model(name: str, **options) -> ModelSpec:
    """The `ModelSpec` of a registered model; options go to its factory."""
    if name in _FACTORIES:
        return _FACTORIES[name](**options)
    model_spec = _plugin(name) if name in _PLUGINS else None
    if model_spec is not None:
        return model_spec(name, **options)
    raise ValueError(f"unknown model {name!r}; known: {', '.join(known_models())}")


for _k in range(1, MINILM_CONFIG.num_hidden_layers + 1):
    register_model(f"minilm-l{_k}", functools.partial(_minilm, _k))
del _k
register_model("glove-bow", _glove_bow)
register_model("tfidf", _tfidf)
register_model("linear", _raw("linear", ("image", "tabular")))
register_model("mlp", _raw("mlp", ("image", "tabular")))
register_model("cnn", _raw("cnn", ("image",)))
