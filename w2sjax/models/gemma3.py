"""Gemma 3 (text) in Flax NNX, from a Hugging Face directory or a GGUF file.

What sets it apart from Llama (read from transformers' ``Gemma3TextModel``):

* the token embedding is multiplied by ``sqrt(hidden_size)``;
* every RMSNorm scales by ``1 + weight`` (weights are stored centred on 0), and there are four
  per block: before and after attention, before and after the MLP, each output normed before
  it joins the residual;
* queries and keys get their own RMSNorm over the head dimension before the rotary embedding;
* scores are scaled by ``query_pre_attn_scalar ** -0.5``, not ``head_dim ** -0.5``;
* most layers ("sliding_attention") see only the last ``sliding_window`` tokens and use the
  local rotary base (``rope_local_base_freq``, 10 000); the others attend globally with
  ``rope_theta`` (1 000 000) and optional linear rope scaling;
* the MLP is GeGLU with the tanh GELU.

GGUF: llama.cpp stores the norm weights plus one (it multiplies by the weight alone), so the
GGUF loader subtracts it again; q/k rows are not permuted for Gemma.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from w2sjax.models import layers, precision
from w2sjax.models import weights as weights_lib
from w2sjax.models.gguf import GGUFFeaturizer, GGUFFile, GGUFTokenizer, open_gguf
from w2sjax.models.llama import rope_tables
from w2sjax.models.spec import ModelSpec, text_tokenizer

__all__ = ["Gemma3Config", "Gemma3Model", "load_hf", "load_gguf", "load_gemma3_270m", "count_gemma3_params",
           "model_spec"]


@dataclasses.dataclass(frozen=True)
class Gemma3Config:
    vocab_size: int = 262144
    hidden_size: int = 640
    num_hidden_layers: int = 18
    num_attention_heads: int = 4
    num_key_value_heads: int = 1
    head_dim: int = 256
    intermediate_size: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    rope_local_base_freq: float = 10_000.0
    rope_scaling_factor: float = 1.0  # linear scaling of the global layers' positions
    query_pre_attn_scalar: float = 256.0
    sliding_window: int = 512
    layer_types: tuple[str, ...] = ()
    hidden_act: str = "gelu_pytorch_tanh"
    attn_logit_softcapping: float | None = None
    qkv_bias: bool = False
    max_position_embeddings: int = 32768
    final_norm: bool = True  # False when cut to probe a middle block

    @classmethod
    def from_hf(cls, d: dict[str, Any]) -> "Gemma3Config":
        if d.get("model_type") == "gemma3":  # the multimodal wrapper: use its text half
            d = d["text_config"]
        if d.get("use_bidirectional_attention"):
            raise ValueError("Gemma 3 with bidirectional attention (an embedding variant) is not supported")
        n = int(d["num_hidden_layers"])
        types = d.get("layer_types")
        if not types:
            pattern = int(d.get("sliding_window_pattern", 6))
            types = ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(n)]
        theta, local, factor = _rope(d)
        heads = int(d["num_attention_heads"])
        return cls(
            vocab_size=int(d["vocab_size"]), hidden_size=int(d["hidden_size"]), num_hidden_layers=n,
            num_attention_heads=heads, num_key_value_heads=int(d.get("num_key_value_heads") or heads),
            head_dim=int(d.get("head_dim") or int(d["hidden_size"]) // heads),
            intermediate_size=int(d["intermediate_size"]), rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
            rope_theta=theta, rope_local_base_freq=local, rope_scaling_factor=factor,
            query_pre_attn_scalar=float(d.get("query_pre_attn_scalar", 256)),
            sliding_window=int(d.get("sliding_window") or 4096), layer_types=tuple(types),
            hidden_act=d.get("hidden_activation") or d.get("hidden_act") or "gelu_pytorch_tanh",
            attn_logit_softcapping=d.get("attn_logit_softcapping"),
            qkv_bias=bool(d.get("attention_bias", False)),
            max_position_embeddings=int(d.get("max_position_embeddings", 32768)),
        )

    @classmethod
    def from_gguf(cls, g) -> "Gemma3Config":
        get = lambda k, default=None: g.field(f"gemma3.{k}", default)
        n = int(get("block_count"))
        pattern = 6  # llama.cpp's Gemma 3: every sixth layer is global
        heads = int(get("attention.head_count"))
        key_len = int(get("attention.key_length", int(get("embedding_length")) // heads))
        scaling = get("rope.scaling.type")
        factor = float(get("rope.scaling.factor", 1.0)) if scaling == "linear" else 1.0
        if scaling not in (None, "none", "linear"):
            raise ValueError(f"{g.path}: rope scaling {scaling!r} is not supported")
        return cls(
            vocab_size=len(g.field("tokenizer.ggml.tokens")), hidden_size=int(get("embedding_length")),
            num_hidden_layers=n, num_attention_heads=heads,
            num_key_value_heads=int(get("attention.head_count_kv", heads)), head_dim=key_len,
            intermediate_size=int(get("feed_forward_length")),
            rms_norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-6)),
            rope_theta=float(get("rope.freq_base", 1_000_000.0)), rope_local_base_freq=10_000.0,
            rope_scaling_factor=factor, query_pre_attn_scalar=float(key_len),
            sliding_window=int(get("attention.sliding_window", 512)),
            layer_types=tuple("full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(n)),
            max_position_embeddings=int(get("context_length", 32768)),
        )


def _rope(d: dict) -> tuple[float, float, float]:
    """(global theta, local theta, global linear scaling factor) from either config format."""
    params = d.get("rope_parameters")
    if isinstance(params, dict) and "full_attention" in params:
        full, sliding = params["full_attention"], params.get("sliding_attention") or {}
        kind = full.get("rope_type", "default")
        if kind not in ("default", "linear"):
            raise ValueError(f"rope scaling {kind!r} is not supported for Gemma 3 (supported: linear)")
        factor = float(full.get("factor", 1.0)) if kind == "linear" else 1.0
        return float(full["rope_theta"]), float(sliding.get("rope_theta", 10_000.0)), factor
    scaling = d.get("rope_scaling") or {}
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind not in ("default", "linear"):
        raise ValueError(f"rope scaling {kind!r} is not supported for Gemma 3 (supported: linear)")
    factor = float(scaling.get("factor", 1.0)) if kind == "linear" else 1.0
    return float(d.get("rope_theta", 1_000_000.0)), float(d.get("rope_local_base_freq", 10_000.0)), factor


def count_gemma3_params(cfg: Gemma3Config) -> int:
    h, i, d = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    q, kv = cfg.num_attention_heads * d, cfg.num_key_value_heads * d
    attn = 2 * h * q + 2 * h * kv + 2 * d + (q + 2 * kv + h) * cfg.qkv_bias
    layer = attn + 3 * h * i + 4 * h
    return cfg.vocab_size * h + cfg.num_hidden_layers * layer + h


class OffsetRMSNorm(nnx.Module):
    """RMSNorm scaling by ``1 + weight``, in float32 (Gemma's)."""

    def __init__(self, dim: int, eps: float, *, param_dtype, rngs: nnx.Rngs):
        self.eps = eps
        self.weight = nnx.Param(jnp.zeros((dim,), param_dtype))

    def __call__(self, x):
        x = x.astype(jnp.float32)
        normed = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.eps)
        return normed * (1.0 + self.weight[...].astype(jnp.float32))


class Gemma3Attention(nnx.Module):
    def __init__(self, cfg: Gemma3Config, *, dtype, param_dtype, rngs: nnx.Rngs):
        h, d = cfg.hidden_size, cfg.head_dim
        lin = dict(use_bias=cfg.qkv_bias, param_dtype=param_dtype, rngs=rngs, **precision.linear_kwargs(dtype))
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, d
        self.scale = cfg.query_pre_attn_scalar ** -0.5
        self.softcap = cfg.attn_logit_softcapping
        self.compute_dtype = jnp.dtype(dtype)  # of the attention matmuls' operands
        self.q_proj = nnx.Linear(h, cfg.num_attention_heads * d, **lin)
        self.k_proj = nnx.Linear(h, cfg.num_key_value_heads * d, **lin)
        self.v_proj = nnx.Linear(h, cfg.num_key_value_heads * d, **lin)
        self.o_proj = nnx.Linear(cfg.num_attention_heads * d, h, **lin)
        self.q_norm = OffsetRMSNorm(d, cfg.rms_norm_eps, param_dtype=param_dtype, rngs=rngs)
        self.k_norm = OffsetRMSNorm(d, cfg.rms_norm_eps, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x, keep, rope):
        """``rope``: `llama.rotary`'s cos and sin, then `llama.rotary_picked`'s."""
        b, t, _ = x.shape
        kv, d = self.num_kv_heads, self.head_dim
        q = self.q_norm(self.q_proj(x).reshape(b, t, self.num_heads, d))
        k = self.k_norm(self.k_proj(x).reshape(b, t, kv, d))
        v = self.v_proj(x).reshape(b, t, kv, d)
        return self.o_proj(layers.attend_rotary(q, k, v, *rope[:2], keep, self.scale, softcap=self.softcap,
                                                dtype=self.compute_dtype, picked=rope[2:]))


class Gemma3Block(nnx.Module):
    def __init__(self, cfg: Gemma3Config, *, dtype, param_dtype, rngs: nnx.Rngs):
        h, i = cfg.hidden_size, cfg.intermediate_size
        norm = lambda: OffsetRMSNorm(h, cfg.rms_norm_eps, param_dtype=param_dtype, rngs=rngs)
        lin = dict(use_bias=False, param_dtype=param_dtype, rngs=rngs, **precision.linear_kwargs(dtype))
        self.act = cfg.hidden_act
        self.input_norm, self.post_attn_norm = norm(), norm()
        self.pre_ffn_norm, self.post_ffn_norm = norm(), norm()
        self.attn = Gemma3Attention(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.gate_proj = nnx.Linear(h, i, **lin)
        self.up_proj = nnx.Linear(h, i, **lin)
        self.down_proj = nnx.Linear(i, h, **lin)

    def __call__(self, x, keep, rope):
        x = x + self.post_attn_norm(self.attn(self.input_norm(x), keep, rope))
        y = self.pre_ffn_norm(x)
        y = precision.gated_mlp(layers.ACTIVATIONS[self.act], self.gate_proj, self.up_proj, self.down_proj, y)
        return x + self.post_ffn_norm(y)


class Gemma3Model(layers.Stack, nnx.Module):
    """``model(input_ids, attention_mask) -> hidden [B, T, D]`` after the final norm;
    ``model.logits(...)`` projects with the tied embedding."""

    final_norm_name = "norm"
    bottom_parts = ("embed",)

    def __init__(self, cfg: Gemma3Config, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        layers.activation(cfg.hidden_act)
        self.config = cfg
        self.embed = nnx.Embed(cfg.vocab_size, cfg.hidden_size, param_dtype=param_dtype, rngs=rngs)
        self.layers = nnx.List([Gemma3Block(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
                                for _ in range(cfg.num_hidden_layers)])
        self.norm = OffsetRMSNorm(cfg.hidden_size, cfg.rms_norm_eps, param_dtype=param_dtype, rngs=rngs)

    def _frequencies(self, theta: float, scale: float = 1.0):
        d = self.config.head_dim
        inv = 1.0 / (theta ** (np.arange(0, d, 2, dtype=np.float64) / d)) / scale
        return jnp.asarray(inv, jnp.float32)

    def embed_tokens(self, input_ids, attention_mask, token_type_ids=None):
        table = self.embed.embedding[...]
        scale = jnp.asarray(math.sqrt(self.config.hidden_size), table.dtype).astype(jnp.float32)
        return self.embed(input_ids).astype(jnp.float32) * scale

    def run_blocks(self, x, attention_mask, start=0, stop=None):
        cfg = self.config
        positions = layers.real_positions(attention_mask)
        freqs = {"full_attention": self._frequencies(cfg.rope_theta, cfg.rope_scaling_factor),
                 "sliding_attention": self._frequencies(cfg.rope_local_base_freq)}
        rope = {kind: rope_tables(positions, f) for kind, f in freqs.items()}
        masks = {"full_attention": layers.decoder_mask(attention_mask),
                 "sliding_attention": layers.decoder_mask(attention_mask, cfg.sliding_window)}
        for i, layer in self.held_blocks(start, stop):
            kind = cfg.layer_types[i]
            x = layer(x, masks[kind], rope[kind])
        return x

    def finish(self, x):
        return self.norm(x) if self.config.final_norm else x

    def logits(self, input_ids, attention_mask=None):
        hidden = self(input_ids, attention_mask)
        table = self.embed.embedding[...]
        return jnp.einsum("...d,vd->...v", hidden.astype(table.dtype), table).astype(jnp.float32)


def _cut(cfg: Gemma3Config, num_layers: int | None) -> Gemma3Config:
    if num_layers is None or num_layers == cfg.num_hidden_layers:
        return cfg
    if not 1 <= num_layers <= cfg.num_hidden_layers:
        raise ValueError(f"layer {num_layers} outside 1..{cfg.num_hidden_layers}")
    return dataclasses.replace(cfg, num_hidden_layers=num_layers, layer_types=cfg.layer_types[:num_layers],
                               final_norm=False)


def _names(cfg: Gemma3Config, *, gguf: bool) -> dict[tuple, str]:
    """NNX path -> tensor name, in Hugging Face's or llama.cpp's spelling."""
    if gguf:
        top = {("embed", "embedding"): "token_embd.weight", ("norm", "weight"): "output_norm.weight"}
        block = {"input_norm": "attn_norm", "post_attn_norm": "post_attention_norm", "pre_ffn_norm": "ffn_norm",
                 "post_ffn_norm": "post_ffw_norm", "q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v",
                 "o_proj": "attn_output", "q_norm": "attn_q_norm", "k_norm": "attn_k_norm",
                 "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}
        layer = "blk.{i}.{name}.{leaf}"
    else:
        top = {("embed", "embedding"): "embed_tokens.weight", ("norm", "weight"): "norm.weight"}
        block = {"input_norm": "input_layernorm", "post_attn_norm": "post_attention_layernorm",
                 "pre_ffn_norm": "pre_feedforward_layernorm", "post_ffn_norm": "post_feedforward_layernorm",
                 **{p: f"self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj", "o_proj", "q_norm", "k_norm")},
                 **{p: f"mlp.{p}" for p in ("gate_proj", "up_proj", "down_proj")}}
        layer = "layers.{i}.{name}.{leaf}"
    names = dict(top)
    leaf_name = {"kernel": "weight", "weight": "weight", "bias": "bias"}
    for i in range(cfg.num_hidden_layers):
        for part, name in block.items():
            for leaf in ("kernel", "weight", "bias"):
                path = ("layers", i, "attn", part, leaf) if part in ("q_proj", "k_proj", "v_proj", "o_proj",
                                                                    "q_norm", "k_norm") else ("layers", i, part, leaf)
                names[path] = layer.format(i=i, name=name, leaf=leaf_name[leaf])
    return names


def _convert(path: tuple, w: np.ndarray, *, gguf: bool) -> np.ndarray:
    if path[-1] == "kernel":
        return w.T  # torch/GGUF [out, in] -> NNX [in, out]
    if gguf and path[-1] == "weight":
        return w - 1.0  # llama.cpp stored 1 + weight
    return w


def load_hf(path: str | Path, config: dict, *, dtype=jnp.float32, param_dtype=None,
            num_layers: int | None = None, mesh=None) -> Gemma3Model:
    """A Gemma 3 Hugging Face directory (text model, or the text half of the multimodal one)."""
    param_dtype = dtype if param_dtype is None else param_dtype
    cfg = _cut(Gemma3Config.from_hf(config), num_layers)
    abstract = nnx.eval_shape(lambda: Gemma3Model(cfg, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0)))
    names = _names(cfg, gguf=False)
    with weights_lib.SafetensorsDir(path) as st:
        st.find_prefix("embed_tokens.weight", ("model.", "model.language_model.", "language_model.model."))
        tensor_for = lambda p: _convert(p, st.get(names[p]), gguf=False)
        return weights_lib.fill(abstract, tensor_for, param_dtype=param_dtype, mesh=mesh)


def load_gguf(g, *, dtype=jnp.float32, param_dtype=None, mesh=None):
    """A Gemma 3 GGUF (an open `gguf.GGUFFile`) -> ``(model, tokenizer)``."""
    param_dtype = dtype if param_dtype is None else param_dtype
    cfg = Gemma3Config.from_gguf(g)
    abstract = nnx.eval_shape(lambda: Gemma3Model(cfg, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0)))
    names = _names(cfg, gguf=True)
    model = weights_lib.fill(abstract, lambda p: _convert(p, g.tensor(names[p]), gguf=True), param_dtype=param_dtype,
                             mesh=mesh)
    return model, g.tokenizer()


def load_gemma3_270m(path: str | Path, *, dtype=jnp.float32) -> tuple[Gemma3Model, GGUFTokenizer]:
    """Gemma-3-270M (base, Q4_K_M GGUF: the file or a directory holding it, e.g.
    ``assets.fetch("gemma3-270m")``) -> ``(model, tokenizer)``."""
    return load_gguf(open_gguf(path), dtype=dtype)


def model_spec(name: str = "gemma3-270m", *, max_len: int = 128, tokens_per_batch: int = 8192,
               dtype: str = "float32", path=None, progress: bool = True) -> ModelSpec:
    """``gemma3-270m``: frozen last-token features + linear head, or (``strong_mode="finetune"``)
    the decoder itself with a linear head on its last real token, as ``smollm2-135m``."""
    featurizer = GGUFFeaturizer(name, asset="gemma3-270m", path=path, max_len=max_len,
                                tokens_per_batch=tokens_per_batch, dtype=dtype, progress=progress)
    return ModelSpec(name=name, modalities=("text",), num_params=count_gemma3_params(Gemma3Config()),
                     featurizer=featurizer, head="linear", finetune=featurizer.finetune,
                     tokenize=text_tokenizer(featurizer))
