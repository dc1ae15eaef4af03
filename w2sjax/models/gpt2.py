"""GPT-2 in Flax NNX, from a Hugging Face directory.

Pre-norm blocks (LayerNorm -> causal multi-head attention -> residual, LayerNorm -> MLP ->
residual) over learned token and position embeddings, then a final LayerNorm. Checkpoints store
the projections as ``Conv1D`` weights, already ``[in, out]`` like NNX kernels, and q, k, v as
one ``c_attn`` matrix, split here on load. Position ids count real tokens, so left padding
gives the unpadded result.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from w2sjax.models import layers, precision
from w2sjax.models import weights as weights_lib

__all__ = ["GPT2Config", "GPT2Model", "load_hf"]


@dataclasses.dataclass(frozen=True)
class GPT2Config:
    vocab_size: int = 50257
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 1024
    layer_norm_eps: float = 1e-5
    hidden_act: str = "gelu_new"
    scale_attn_weights: bool = True
    scale_attn_by_inverse_layer_idx: bool = False
    final_norm: bool = True  # False when cut to probe a middle block

    @classmethod
    def from_hf(cls, d: dict[str, Any]) -> "GPT2Config":
        h = int(d["n_embd"])
        return cls(
            vocab_size=int(d["vocab_size"]), hidden_size=h, num_hidden_layers=int(d["n_layer"]),
            num_attention_heads=int(d["n_head"]), intermediate_size=int(d.get("n_inner") or 4 * h),
            max_position_embeddings=int(d.get("n_positions", 1024)),
            layer_norm_eps=float(d.get("layer_norm_epsilon", 1e-5)),
            hidden_act=d.get("activation_function", "gelu_new"),
            scale_attn_weights=bool(d.get("scale_attn_weights", True)),
            scale_attn_by_inverse_layer_idx=bool(d.get("scale_attn_by_inverse_layer_idx", False)),
        )


class GPT2Block(nnx.Module):
    def __init__(self, cfg: GPT2Config, index: int, *, dtype, param_dtype, rngs: nnx.Rngs):
        h, i = cfg.hidden_size, cfg.intermediate_size
        lin = dict(param_dtype=param_dtype, rngs=rngs, **precision.linear_kwargs(dtype))
        norm = dict(epsilon=cfg.layer_norm_eps, use_fast_variance=False, param_dtype=param_dtype, rngs=rngs)
        self.num_heads = cfg.num_attention_heads
        self.act = cfg.hidden_act
        d = h // cfg.num_attention_heads
        scale = 1.0 / math.sqrt(d) if cfg.scale_attn_weights else 1.0
        self.scale = scale / (index + 1) if cfg.scale_attn_by_inverse_layer_idx else scale
        self.ln_1 = nnx.LayerNorm(h, **norm)
        self.query = nnx.Linear(h, h, **lin)
        self.key = nnx.Linear(h, h, **lin)
        self.value = nnx.Linear(h, h, **lin)
        self.attn_out = nnx.Linear(h, h, **lin)
        self.ln_2 = nnx.LayerNorm(h, **norm)
        self.fc_in = nnx.Linear(h, i, **lin)
        self.fc_out = nnx.Linear(i, h, **lin)

    def __call__(self, x, keep):
        b, t, h = x.shape
        y = self.ln_1(x)
        split = lambda z: z.reshape(b, t, self.num_heads, h // self.num_heads)
        ctx = layers.attend(split(self.query(y)), split(self.key(y)), split(self.value(y)), keep, self.scale)
        x = x + self.attn_out(ctx).astype(jnp.float32)
        y = self.fc_out(layers.ACTIVATIONS[self.act](self.fc_in(self.ln_2(x))))
        return x + y.astype(jnp.float32)


class GPT2Model(layers.Stack, nnx.Module):
    """``model(input_ids, attention_mask) -> hidden [B, T, D]`` after the final LayerNorm."""

    final_norm_name = "ln_f"
    bottom_parts = ("wte", "wpe")

    def __init__(self, cfg: GPT2Config, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        layers.activation(cfg.hidden_act)
        self.config = cfg
        kw = dict(param_dtype=param_dtype, rngs=rngs)
        self.wte = nnx.Embed(cfg.vocab_size, cfg.hidden_size, **kw)
        self.wpe = nnx.Embed(cfg.max_position_embeddings, cfg.hidden_size, **kw)
        self.layers = nnx.List([GPT2Block(cfg, i, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
                                for i in range(cfg.num_hidden_layers)])
        self.ln_f = nnx.LayerNorm(cfg.hidden_size, epsilon=cfg.layer_norm_eps, use_fast_variance=False, **kw)

    def embed_tokens(self, input_ids, attention_mask, token_type_ids=None):
        return (self.wte(input_ids) + self.wpe(layers.real_positions(attention_mask))).astype(jnp.float32)

    def run_blocks(self, x, attention_mask, start=0, stop=None):
        keep = layers.decoder_mask(attention_mask)
        for _, layer in self.held_blocks(start, stop):
            x = layer(x, keep)
        return x

    def finish(self, x):
        return self.ln_f(x) if self.config.final_norm else x


def load_hf(path: str | Path, config: dict, *, dtype=jnp.float32, param_dtype=None,
            num_layers: int | None = None, mesh=None) -> GPT2Model:
    """A GPT-2 Hugging Face directory (``config`` is its parsed config.json)."""
    param_dtype = dtype if param_dtype is None else param_dtype
    cfg = GPT2Config.from_hf(config)
    if num_layers is not None and num_layers != cfg.num_hidden_layers:
        if not 1 <= num_layers <= cfg.num_hidden_layers:
            raise ValueError(f"layer {num_layers} outside 1..{cfg.num_hidden_layers}")
        cfg = dataclasses.replace(cfg, num_hidden_layers=num_layers, final_norm=False)
    h = cfg.hidden_size
    abstract = nnx.eval_shape(lambda: GPT2Model(cfg, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0)))
    with weights_lib.SafetensorsDir(path) as st:
        st.find_prefix("wte.weight", ("transformer.",))

        def tensor_for(p) -> np.ndarray:
            if p[0] in ("wte", "wpe"):
                return st.get(f"{p[0]}.weight")
            if p[0] == "ln_f":
                return st.get("ln_f." + ("weight" if p[1] == "scale" else "bias"))
            i, part, leaf = p[1], p[2], p[3]
            n = f"h.{i}"
            suffix = {"scale": "weight", "kernel": "weight", "bias": "bias"}[leaf]
            if part in ("query", "key", "value"):  # c_attn holds q|k|v along its output axis
                j = ("query", "key", "value").index(part)
                w = st.get(f"{n}.attn.c_attn.{suffix}")
                return w[..., j * h:(j + 1) * h]
            name = {"ln_1": "ln_1", "ln_2": "ln_2", "attn_out": "attn.c_proj", "fc_in": "mlp.c_fc",
                    "fc_out": "mlp.c_proj"}[part]
            return st.get(f"{n}.{name}.{suffix}")  # Conv1D: already [in, out]

        return weights_lib.fill(abstract, tensor_for, param_dtype=param_dtype, mesh=mesh)
