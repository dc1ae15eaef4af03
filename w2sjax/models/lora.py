"""Low-rank adapters (LoRA) on the linear layers of any backbone here.

``add_adapters(module, rank=8, alpha=16, targets=...)`` replaces each ``nnx.Linear`` whose
attribute name is in ``targets`` by a `LoRALinear`: the original layer (left frozen by the
optimizer filter) plus ``x @ A @ B * alpha / rank``. ``B`` starts at zero, so an adapted model
computes exactly what the original does until it trains. Only parameters on a path through
``lora_a`` / ``lora_b`` (and the classifier ``head``) are trainable with ``trainable="lora"``
(`TRAINABLE`), so the optimizer state holds the adapters and the head alone.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["LoRALinear", "add_adapters", "DEFAULT_TARGETS", "TRAINABLE"]

# The attention query and value projections of every family here (BERT/MPNet/GPT-2 call them
# query/value, Llama/Qwen2/Mistral/Gemma 3 q_proj/v_proj), as EleutherAI/w2s and the LoRA paper do.
DEFAULT_TARGETS = ("query", "value", "q_proj", "v_proj")

# The parameters `train` optimizes for trainable="lora".
TRAINABLE = nnx.All(nnx.Param, nnx.Any(nnx.PathContains("lora_a"), nnx.PathContains("lora_b"),
                                       nnx.PathContains("head")))


class LoRALinear(nnx.Module):
    """``base(x) + (x @ lora_a @ lora_b) * alpha / rank``; float32 adapters whatever ``base`` computes in."""

    def __init__(self, base: nnx.Linear, *, rank: int, alpha: float, rngs: nnx.Rngs):
        self.base = base
        self.scale = alpha / rank
        # A ~ Kaiming-uniform as in the LoRA paper's reference code; B = 0.
        bound = 1.0 / jnp.sqrt(base.in_features)
        self.lora_a = nnx.Param(jax.random.uniform(rngs.params(), (base.in_features, rank), jnp.float32, -bound, bound))
        self.lora_b = nnx.Param(jnp.zeros((rank, base.out_features), jnp.float32))

    def __call__(self, x):
        y = self.base(x)
        delta = (x.astype(jnp.float32) @ self.lora_a[...]) @ self.lora_b[...]
        return y + (delta * self.scale).astype(y.dtype)


def add_adapters(module: nnx.Module, *, rank: int = 8, alpha: float = 16.0, targets=DEFAULT_TARGETS,
                 rngs: nnx.Rngs) -> int:
    """Wrap, in place, every ``nnx.Linear`` of ``module`` named in ``targets``; returns how many.

    Raises ValueError when none matches (a typo in ``targets`` would otherwise train the head only).
    """
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    parents = [m for _, m in nnx.iter_modules(module)]
    count = 0
    for parent in parents:
        for name in targets:
            layer = getattr(parent, name, None)
            if isinstance(layer, nnx.Linear):
                setattr(parent, name, LoRALinear(layer, rank=rank, alpha=alpha, rngs=rngs))
                count += 1
    if count == 0:
        raise ValueError(f"no linear layer named {', '.join(targets)} to put LoRA adapters on")
    return count
