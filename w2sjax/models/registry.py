"""Model names -> the module that builds them. Nothing here imports an architecture, and no
architecture imports this module: each one owns its ``model_spec(name, **options)``.

Names:
  ``minilm-l1`` ... ``minilm-l6``  the first k layers of all-MiniLM-L6-v2 (`bert`)
  ``mpnet-base``                   all-mpnet-base-v2 (`mpnet`)
  ``smollm2-135m``                 SmolLM2-135M-Instruct, GGUF (`llama`)
  ``gemma3-270m``                  Gemma-3-270M base, Q4_K_M GGUF (`gemma3`)
  ``hf:PATH``                      any supported Hugging Face directory or GGUF file (`hf`)
  ``glove-bow``, ``tfidf``         mean GloVe 6B 50d vectors / TF-IDF + linear head (`shallow`)
  ``linear``, ``mlp``, ``cnn``     trained from scratch on raw image/tabular ``x`` (`shallow`)

``get_model(name, **options)`` passes options to the module's ``model_spec``, e.g.
``get_model("minilm-l4", max_len=128)`` or ``get_model("mlp", hidden=(512,))``.
Nothing heavy happens here: modules are imported, and weights loaded, on first use.
"""

from __future__ import annotations

import importlib
from typing import Callable

from w2sjax.models.spec import ModelSpec

__all__ = ["ModelSpec", "get_model", "known_models", "register_model", "HF_PREFIX"]

HF_PREFIX = "hf:"

# name -> module under w2sjax.models with a ``model_spec(name, **options)``.
MODULES: dict[str, str] = {
    **{f"minilm-l{k}": "bert" for k in range(1, 7)},
    "mpnet-base": "mpnet",
    "smollm2-135m": "llama",
    "gemma3-270m": "gemma3",
    "glove-bow": "shallow",
    "tfidf": "shallow",
    "linear": "shallow",
    "mlp": "shallow",
    "cnn": "shallow",
}

_FACTORIES: dict[str, Callable[..., ModelSpec]] = {}


def register_model(name: str, factory: Callable[..., ModelSpec], *,
                   overwrite: bool = False) -> None:
    """Add a model of your own: ``factory(**options) -> ModelSpec``."""
    if (name in _FACTORIES or name in MODULES) and not overwrite:
        raise ValueError(f"model {name!r} is already registered")
    _FACTORIES[name] = factory


def known_models() -> list[str]:
    """Names `get_model` accepts (besides ``hf:PATH``)."""
    return list(MODULES) + [n for n in _FACTORIES if n not in MODULES]


def get_model(name: str, **options) -> ModelSpec:
    """The `ModelSpec` of a model name; options go to its ``model_spec``."""
    if name in _FACTORIES:
        return _FACTORIES[name](**options)
    if name.startswith(HF_PREFIX):
        module = "hf"
    elif name in MODULES:
        module = MODULES[name]
    else:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(known_models())}, or hf:PATH")
    return importlib.import_module(f"w2sjax.models.{module}").model_spec(name, **options)
