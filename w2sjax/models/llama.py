"""The Llama family in Flax NNX: Llama 2/3, SmolLM2, Mistral and Qwen2/2.5, from a Hugging Face
directory or a GGUF file; and ``smollm2-135m``, SmolLM2-135M-Instruct from its GGUF.

Architecture (Hugging Face ``LlamaModel``): token embedding, then pre-norm
blocks of RMSNorm -> grouped-query causal attention with rotary embeddings ->
residual, RMSNorm -> SwiGLU MLP -> residual, and a final RMSNorm. The family
members differ only in settings read from ``config.json``:

* Qwen2 has biases on the q/k/v projections (Llama's ``attention_bias`` puts
  them on q/k/v/o, ``mlp_bias`` on the MLP);
* Mistral attends within a sliding window of ``sliding_window`` tokens;
* Llama 3.1+ rescales the rotary frequencies (``rope_scaling.rope_type ==
  "llama3"``), older long-context models interpolate positions ("linear");
* untied models have their own output projection (``lm_head``).

GGUF specifics: weights are quantized (Q4_1 / Q8_0 for SmolLM2-135M); the ``gguf``
package dequantizes them to float32, so the port computes with exactly the
quantized model's weights. llama.cpp's converter permutes the rows of
``attn_q``/``attn_k`` inside each head from Hugging Face's rotate-half layout
(pairs ``i, i + d/2``) to the interleaved one (pairs ``2i, 2i+1``); the loader
undoes that, so both sources share one module.

Padding: position ids are ``cumsum(mask) - 1``, so a padded example sees the
same positions as the unpadded one, on either side. The classifier reads the
hidden state of the last real token.
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

from w2sjax.models import heads, layers, precision
from w2sjax.models import weights as weights_lib
from w2sjax.models.embed import last_token_index
from w2sjax.models.gguf import GGUFFeaturizer, GGUFFile, GGUFTokenizer, open_gguf
from w2sjax.models.spec import ModelSpec, text_tokenizer

__all__ = [
    "LlamaConfig",
    "LlamaModel",
    "DecoderClassifier",
    "load_gguf",
    "load_llama_gguf",
    "load_hf",
    "load_smollm2",
    "last_token_index",
    "count_llama_params",
    "DecoderFeaturizer",
    "model_spec",
]

HF_MODEL_TYPES = ("llama", "mistral", "qwen2")


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int = 49152
    hidden_size: int = 576
    num_hidden_layers: int = 30
    num_attention_heads: int = 9
    num_key_value_heads: int = 3
    intermediate_size: int = 1536
    rms_norm_eps: float = 1e-5
    rope_theta: float = 100000.0
    head_dim: int = 64
    tie_word_embeddings: bool = True
    max_position_embeddings: int = 8192
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    hidden_act: str = "silu"
    # Rotary rescaling as sorted (key, value) pairs of HF's rope_scaling, or None.
    rope_scaling: tuple | None = None
    # Layers listed as "sliding_attention" attend to the last `sliding_window` tokens only.
    sliding_window: int | None = None
    layer_types: tuple[str, ...] | None = None
    # False when the model is cut to its first blocks to probe a middle layer (transformers'
    # hidden_states[k] of a k-block cut has no final norm either).
    final_norm: bool = True

    @classmethod
    def from_gguf(cls, g: GGUFFile) -> "LlamaConfig":
        arch = g.field("general.architecture")
        if arch != "llama":
            raise ValueError(f"{g.path}: architecture {arch!r}, expected 'llama'")
        get = lambda k, d=None: g.field(f"llama.{k}", d)
        scaling = get("rope.scaling.type")
        if scaling not in (None, "none"):
            raise ValueError(f"{g.path}: rope scaling {scaling!r} is not supported")
        heads_ = int(get("attention.head_count"))
        hidden = int(get("embedding_length"))
        return cls(
            vocab_size=len(g.field("tokenizer.ggml.tokens")),
            hidden_size=hidden,
            num_hidden_layers=int(get("block_count")),
            num_attention_heads=heads_,
            num_key_value_heads=int(get("attention.head_count_kv", heads_)),
            intermediate_size=int(get("feed_forward_length")),
            rms_norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-5)),
            rope_theta=float(get("rope.freq_base", 10000.0)),
            head_dim=int(get("rope.dimension_count", hidden // heads_)),
            tie_word_embeddings=not g.has_tensor("output.weight"),
            max_position_embeddings=int(get("context_length", 2048)),
        )

    @classmethod
    def from_hf(cls, d: dict[str, Any]) -> "LlamaConfig":
        """From a Llama, Mistral or Qwen2 ``config.json`` (as a dict)."""
        kind = d.get("model_type")
        if kind not in HF_MODEL_TYPES:
            raise ValueError(f"model_type {kind!r} is not in the llama family {HF_MODEL_TYPES}")
        heads_ = int(d["num_attention_heads"])
        hidden = int(d["hidden_size"])
        n_layers = int(d["num_hidden_layers"])
        bias = bool(d.get("attention_bias", False))
        window, types = _sliding_layers(d, kind, n_layers)
        return cls(
            vocab_size=int(d["vocab_size"]),
            hidden_size=hidden,
            num_hidden_layers=n_layers,
            num_attention_heads=heads_,
            num_key_value_heads=int(d.get("num_key_value_heads") or heads_),
            intermediate_size=int(d["intermediate_size"]),
            rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
            rope_theta=float(d.get("rope_theta") or (d.get("rope_parameters") or {}).get("rope_theta", 10000.0)),
            head_dim=int(d.get("head_dim") or hidden // heads_),
            tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
            max_position_embeddings=int(d.get("max_position_embeddings", 2048)),
            qkv_bias=True if kind == "qwen2" else bias,
            o_bias=False if kind == "qwen2" else bias,
            mlp_bias=bool(d.get("mlp_bias", False)),
            hidden_act=d.get("hidden_act", "silu"),
            rope_scaling=_rope_scaling(d.get("rope_scaling") or d.get("rope_parameters")),
            sliding_window=window,
            layer_types=types,
        )

    def is_sliding(self, layer: int) -> bool:
        return self.layer_types is not None and self.layer_types[layer] == "sliding_attention"


def _rope_scaling(scaling) -> tuple | None:
    if not scaling:
        return None
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind in (None, "default"):
        return None
    if kind not in ("linear", "llama3"):
        raise ValueError(f"rope scaling {kind!r} is not supported (supported: linear, llama3)")
    return tuple(sorted((k, v) for k, v in scaling.items()
                        if k not in ("type", "rope_theta") and not isinstance(v, (list, dict))))


def _sliding_layers(d: dict, kind: str, n_layers: int):
    """(window, layer_types) from a config: Mistral slides in every layer, Qwen2 only with
    ``use_sliding_window`` from ``max_window_layers`` on, and newer files list ``layer_types``."""
    window = d.get("sliding_window")
    if kind == "qwen2" and not d.get("use_sliding_window", False):
        window = None
    if kind == "llama" or window is None:
        return None, None
    if d.get("layer_types"):
        return int(window), tuple(d["layer_types"])
    first = int(d.get("max_window_layers", 0)) if kind == "qwen2" else 0
    return int(window), tuple("sliding_attention" if i >= first else "full_attention" for i in range(n_layers))


def cut(cfg, num_layers: int | None):
    """``cfg`` keeping its first ``num_layers`` blocks, without the final norm (None: all)."""
    if num_layers is None:
        return cfg
    if not 1 <= num_layers <= cfg.num_hidden_layers:
        raise ValueError(f"layer {num_layers} outside 1..{cfg.num_hidden_layers}")
    if num_layers == cfg.num_hidden_layers:
        return cfg
    return dataclasses.replace(cfg, num_hidden_layers=num_layers, final_norm=False)


def rope_frequencies(cfg) -> jnp.ndarray:
    """Rotary inverse frequencies ``[head_dim / 2]``, with Llama 3's or linear rescaling."""
    d = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (np.arange(0, d, 2, dtype=np.float64) / d))
    scaling = dict(cfg.rope_scaling or ())
    kind = scaling.get("rope_type", "linear" if scaling else None)
    if kind == "linear":
        inv_freq = inv_freq / float(scaling["factor"])
    elif kind == "llama3":
        # Long wavelengths are slowed down by `factor`, short ones kept, the band between blended.
        factor, low, high = float(scaling["factor"]), float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
        old = float(scaling["original_max_position_embeddings"])
        wavelen = 2 * math.pi / inv_freq
        scaled = np.where(wavelen > old / low, inv_freq / factor, inv_freq)
        smooth = (old / wavelen - low) / (high - low)
        blended = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old / high) & (wavelen <= old / low)
        inv_freq = np.where(medium, blended, scaled)
    return jnp.asarray(inv_freq, jnp.float32)


def _rotary_angles(positions, inv_freq):
    """Rotate-half angles ``[..., head_dim]``: each frequency twice, as HF lays them out."""
    freqs = positions.astype(jnp.float32)[..., None] * inv_freq
    return jnp.concatenate([freqs, freqs], axis=-1)


def rotary(positions, inv_freq):
    """cos, sin ``[B, T, 1, head_dim]`` of HF's rotate-half rotary embedding (float32)."""
    emb = _rotary_angles(positions, inv_freq)[:, :, None, :]
    return jnp.cos(emb), jnp.sin(emb)


def rope_tables(positions, inv_freq):
    """`rotary`'s tables, then `rotary_picked`'s: what `layers.attend_rotary` reads. A forward
    without gradients never reads the picked pair, so jit drops it from that program."""
    return rotary(positions, inv_freq) + rotary_picked(positions, inv_freq)


ROTARY_PICK_MAX = 512  # longest sequence whose rotary rows `rotary_picked` picks by a one-hot dot


def rotary_picked(positions, inv_freq):
    """`rotary`'s tables for the training step: computed once per length, each position's row
    picked by a dot with a one-hot matrix (1 * x plus zeros is exactly x). Inline, XLA:CPU fuses
    cos and sin into every consumer and evaluates them again for every head of q and k in every
    block, forward and backward (it drops optimization barriers and inlines conditionals before
    fusing); XLA never fuses a dot. Their bits can differ from `rotary`'s by the rounding of cos
    and sin evaluated inside another fusion, so the forward without gradients keeps `rotary`'s
    (`layers.attend_rotary`). Sequences past `ROTARY_PICK_MAX` (the one-hot grows as T^2) compute
    inline."""
    t = positions.shape[-1]
    if t > ROTARY_PICK_MAX:
        return rotary(positions, inv_freq)
    emb = _rotary_angles(jnp.arange(t, dtype=jnp.float32), inv_freq)
    pick = jax.nn.one_hot(positions, t, dtype=jnp.float32)  # positions < t (`real_positions`)
    cos, sin = (jnp.einsum("btp,pd->btd", pick, f(emb), precision="highest") for f in (jnp.cos, jnp.sin))
    return cos[:, :, None, :], sin[:, :, None, :]


def count_llama_params(cfg: LlamaConfig) -> int:
    """Parameters of a `LlamaModel` for ``cfg``, without building it."""
    h, i, d = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    q, kv = cfg.num_attention_heads * d, cfg.num_key_value_heads * d
    attn = h * q * 2 + h * kv * 2
    attn += (q + 2 * kv) * cfg.qkv_bias + h * cfg.o_bias
    layer = attn + 3 * h * i + (2 * i + h) * cfg.mlp_bias + 2 * h
    head = 0 if cfg.tie_word_embeddings else cfg.vocab_size * h
    return cfg.vocab_size * h + cfg.num_hidden_layers * layer + h + head


class LlamaAttention(nnx.Module):
    """Causal grouped-query attention: query head ``h`` reads KV head ``h // group``."""

    def __init__(self, cfg: LlamaConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        h, d = cfg.hidden_size, cfg.head_dim
        lin = dict(param_dtype=param_dtype, rngs=rngs, **precision.linear_kwargs(dtype))
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, d
        self.compute_dtype = jnp.dtype(dtype)  # of the attention matmuls' operands
        self.q_proj = nnx.Linear(h, cfg.num_attention_heads * d, use_bias=cfg.qkv_bias, **lin)
        self.k_proj = nnx.Linear(h, cfg.num_key_value_heads * d, use_bias=cfg.qkv_bias, **lin)
        self.v_proj = nnx.Linear(h, cfg.num_key_value_heads * d, use_bias=cfg.qkv_bias, **lin)
        self.o_proj = nnx.Linear(cfg.num_attention_heads * d, h, use_bias=cfg.o_bias, **lin)

    def __call__(self, x, keep, rope):
        """``rope``: `rotary`'s cos and sin, then `rotary_picked`'s (the same values, for training)."""
        b, t, _ = x.shape
        kv, d = self.num_kv_heads, self.head_dim
        q, k, v = precision.side_by_side(x, self.q_proj, self.k_proj, self.v_proj)
        q, k, v = q.reshape(b, t, self.num_heads, d), k.reshape(b, t, kv, d), v.reshape(b, t, kv, d)
        return self.o_proj(layers.attend_rotary(q, k, v, *rope[:2], keep, 1.0 / math.sqrt(d), dtype=self.compute_dtype,
                                                picked=rope[2:]))


class LlamaMLP(nnx.Module):
    """SwiGLU: ``down(silu(gate(x)) * up(x))``."""

    def __init__(self, cfg: LlamaConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        h, i = cfg.hidden_size, cfg.intermediate_size
        lin = dict(use_bias=cfg.mlp_bias, param_dtype=param_dtype, rngs=rngs, **precision.linear_kwargs(dtype))
        self.act = cfg.hidden_act
        self.gate_proj = nnx.Linear(h, i, **lin)
        self.up_proj = nnx.Linear(h, i, **lin)
        self.down_proj = nnx.Linear(i, h, **lin)

    def __call__(self, x):
        return precision.gated_mlp(layers.ACTIVATIONS[self.act], self.gate_proj, self.up_proj, self.down_proj, x)


class LlamaBlock(nnx.Module):
    def __init__(self, cfg: LlamaConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        norm = dict(epsilon=cfg.rms_norm_eps, use_fast_variance=False, param_dtype=param_dtype, rngs=rngs)
        self.input_norm = nnx.RMSNorm(cfg.hidden_size, **norm)
        self.attn = LlamaAttention(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.post_attn_norm = nnx.RMSNorm(cfg.hidden_size, **norm)
        self.mlp = LlamaMLP(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x, keep, rope):
        bf16 = self.attn.compute_dtype == jnp.dtype(jnp.bfloat16)  # float32 keeps autodiff's norms
        x = x + self.attn(layers.rms_norm(self.input_norm, x, bf16), keep, rope).astype(jnp.float32)
        return x + self.mlp(layers.rms_norm(self.post_attn_norm, x, bf16)).astype(jnp.float32)


class LlamaModel(layers.Stack, nnx.Module):
    """Decoder: ``model(input_ids, attention_mask) -> hidden [B, T, D]`` (after the final norm).

    ``model.logits(input_ids, attention_mask) -> [B, T, vocab]`` adds the
    output projection (the tied embedding when the checkpoint has no
    separate one). Submodules: ``embed``, ``layers`` (an ``nnx.List``),
    ``norm`` and, when untied, ``lm_head``.
    """

    final_norm_name = "norm"
    bottom_parts = ("embed", "lm_head")  # a classifier never uses the LM head

    def __init__(self, cfg: LlamaConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        layers.activation(cfg.hidden_act)
        self.config = cfg
        self.compute_dtype = jnp.dtype(dtype)
        self.embed = nnx.Embed(cfg.vocab_size, cfg.hidden_size, param_dtype=param_dtype, rngs=rngs)
        self.layers = nnx.List([
            LlamaBlock(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs) for _ in range(cfg.num_hidden_layers)
        ])
        self.norm = nnx.RMSNorm(cfg.hidden_size, epsilon=cfg.rms_norm_eps, use_fast_variance=False,
                                param_dtype=param_dtype, rngs=rngs)
        self.lm_head = None if cfg.tie_word_embeddings else nnx.Linear(
            cfg.hidden_size, cfg.vocab_size, use_bias=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def embed_tokens(self, input_ids, attention_mask, token_type_ids=None):
        return self.embed(input_ids).astype(jnp.float32)

    def run_blocks(self, x, attention_mask, start=0, stop=None):
        cfg = self.config
        # Positions count real tokens, so left or right padding leaves them unchanged.
        positions, inv_freq = layers.real_positions(attention_mask), rope_frequencies(cfg)
        rope = rope_tables(positions, inv_freq)
        full = layers.decoder_mask(attention_mask)
        sliding = layers.decoder_mask(attention_mask, cfg.sliding_window) if cfg.layer_types else None
        for i, layer in self.held_blocks(start, stop):
            x = layer(x, sliding if cfg.is_sliding(i) else full, rope)
        return x

    def finish(self, x):
        if not self.config.final_norm:
            return x
        return layers.rms_norm(self.norm, x, self.compute_dtype == jnp.dtype(jnp.bfloat16))

    def project(self, hidden):
        """Vocabulary logits of hidden states ``[..., D] -> [..., vocab]`` (float32)."""
        if self.lm_head is not None:
            return self.lm_head(hidden).astype(jnp.float32)
        table = self.embed.embedding[...]
        return jnp.einsum("...d,vd->...v", hidden.astype(table.dtype), table).astype(jnp.float32)

    def logits(self, input_ids, attention_mask=None):
        return self.project(self(input_ids, attention_mask))


def DecoderClassifier(model, num_classes: int, *, rngs: nnx.Rngs):
    """A decoder + last-real-token readout + linear head (`heads.PooledClassifier`)."""
    return heads.PooledClassifier(model, num_classes, pooling="last", rngs=rngs)


# ---------------------------------------------------------------- loading: GGUF


def _unpermute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation: per head, interleaved pairs -> two halves."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _gguf_names(cfg: LlamaConfig) -> dict[tuple, tuple[str, str]]:
    """NNX parameter path -> (GGUF tensor name, how to convert it)."""
    names: dict[tuple, tuple[str, str]] = {("embed", "embedding"): ("token_embd.weight", "copy"),
                                           ("norm", "scale"): ("output_norm.weight", "copy")}
    if not cfg.tie_word_embeddings:
        names[("lm_head", "kernel")] = ("output.weight", "T")
    for i in range(cfg.num_hidden_layers):
        p, n = ("layers", i), f"blk.{i}"
        names[p + ("input_norm", "scale")] = (f"{n}.attn_norm.weight", "copy")
        names[p + ("post_attn_norm", "scale")] = (f"{n}.ffn_norm.weight", "copy")
        names[p + ("attn", "q_proj", "kernel")] = (f"{n}.attn_q.weight", "q")
        names[p + ("attn", "k_proj", "kernel")] = (f"{n}.attn_k.weight", "k")
        names[p + ("attn", "v_proj", "kernel")] = (f"{n}.attn_v.weight", "T")
        names[p + ("attn", "o_proj", "kernel")] = (f"{n}.attn_output.weight", "T")
        names[p + ("mlp", "gate_proj", "kernel")] = (f"{n}.ffn_gate.weight", "T")
        names[p + ("mlp", "up_proj", "kernel")] = (f"{n}.ffn_up.weight", "T")
        names[p + ("mlp", "down_proj", "kernel")] = (f"{n}.ffn_down.weight", "T")
    return names


def load_gguf(g: GGUFFile, *, dtype=jnp.float32, param_dtype=None, mesh=None) -> tuple[LlamaModel, GGUFTokenizer]:
    """A llama-architecture GGUF (an open `GGUFFile`) -> ``(model, tokenizer)``."""
    cfg = LlamaConfig.from_gguf(g)
    param_dtype = dtype if param_dtype is None else param_dtype
    abstract = nnx.eval_shape(lambda: LlamaModel(cfg, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0)))
    names = _gguf_names(cfg)

    def tensor_for(path) -> np.ndarray:
        name, how = names[path]
        w = g.tensor(name)
        if how == "q":
            return _unpermute_rows(w, cfg.num_attention_heads).T
        if how == "k":
            return _unpermute_rows(w, cfg.num_key_value_heads).T
        return w.T if how == "T" else w  # GGUF/torch [out, in] -> NNX kernel [in, out]

    return weights_lib.fill(abstract, tensor_for, param_dtype=param_dtype, mesh=mesh), g.tokenizer()


def load_llama_gguf(path: str | Path, *, dtype=jnp.float32, param_dtype=None
                    ) -> tuple[LlamaModel, GGUFTokenizer]:
    """Load any llama-architecture GGUF (a ``.gguf`` file or a directory holding one)."""
    return load_gguf(open_gguf(path), dtype=dtype, param_dtype=param_dtype)


def load_smollm2(path: str | Path, *, dtype=jnp.float32) -> tuple[LlamaModel, GGUFTokenizer]:
    """Load SmolLM2-135M-Instruct from its GGUF -> ``(model, tokenizer)``.

    Args:
      path: the ``.gguf`` file, or a directory holding exactly one (e.g.
        ``assets.fetch("smollm2-135m")``).
      dtype: parameter and matmul dtype; norms, rotary, softmax and the
        residual stream stay float32.

    ``model(input_ids, attention_mask) -> hidden [B, T, 576]``;
    ``model.logits(...) -> [B, T, 49152]``; the tokenizer's
    ``encode(texts, max_len) -> (input_ids, attention_mask)`` right-pads with
    int32 numpy arrays.
    """
    return load_llama_gguf(path, dtype=dtype)


# ---------------------------------------------------------------- loading: Hugging Face


def _hf_names(cfg: LlamaConfig) -> weights_lib.TorchNames:
    names = weights_lib.TorchNames()
    names.tensor(("embed", "embedding"), "embed_tokens.weight")
    names.norm(("norm",), "norm", bias=False)
    for i in range(cfg.num_hidden_layers):
        p, n = ("layers", i), f"layers.{i}"
        names.norm(p + ("input_norm",), f"{n}.input_layernorm", bias=False)
        names.norm(p + ("post_attn_norm",), f"{n}.post_attention_layernorm", bias=False)
        for proj in ("q_proj", "k_proj", "v_proj"):
            names.linear(p + ("attn", proj), f"{n}.self_attn.{proj}", bias=cfg.qkv_bias)
        names.linear(p + ("attn", "o_proj"), f"{n}.self_attn.o_proj", bias=cfg.o_bias)
        for proj in ("gate_proj", "up_proj", "down_proj"):
            names.linear(p + ("mlp", proj), f"{n}.mlp.{proj}", bias=cfg.mlp_bias)
    return names


def load_hf(path: str | Path, config: dict, *, dtype=jnp.float32, param_dtype=None,
            num_layers: int | None = None, mesh=None) -> LlamaModel:
    """A Llama/Mistral/Qwen2 Hugging Face directory (``config`` is its parsed config.json).

    A base-model directory (what ``AutoModel.save_pretrained`` writes) has no ``lm_head``:
    then `LlamaModel.logits` uses the embedding, which is right only for tied models.
    """
    param_dtype = dtype if param_dtype is None else param_dtype
    with weights_lib.SafetensorsDir(path) as st:
        st.find_prefix("embed_tokens.weight", ("model.",))
        cfg = LlamaConfig.from_hf(config)
        head = st.has_unprefixed("lm_head.weight")
        cfg = dataclasses.replace(cfg, tie_word_embeddings=cfg.tie_word_embeddings or not head)
        cfg = cut(cfg, num_layers)
        names = _hf_names(cfg)
        if not cfg.tie_word_embeddings:
            names.linear(("lm_head",), "lm_head", bias=False)
        abstract = nnx.eval_shape(lambda: LlamaModel(cfg, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0)))

        def read(name: str) -> np.ndarray:
            # lm_head sits beside the prefixed body ("model.layers..." and "lm_head.weight").
            return st.get(name, prefixed=name != "lm_head.weight")

        return weights_lib.fill(abstract, weights_lib.torch_reader(names, read), param_dtype=param_dtype, mesh=mesh)


# ---------------------------------------------------------------- smollm2-135m


class DecoderFeaturizer(GGUFFeaturizer):
    """Last-real-token features of SmolLM2-135M-Instruct: float32 ``[N, 576]``."""

    asset = "smollm2-135m"


def model_spec(name: str = "smollm2-135m", *, max_len: int = 128, tokens_per_batch: int = 8192,
               dtype: str = "float32", path=None, progress: bool = True) -> ModelSpec:
    """``smollm2-135m``: frozen last-token features + linear head, or (``strong_mode="finetune"``)
    the decoder itself with a linear head on its last real token, trained as ``train.trainable``
    says ("top:K" and "lora" are what a CPU affords; "all" trains all 135M weights)."""
    featurizer = DecoderFeaturizer(name, path=path, max_len=max_len,
                                   tokens_per_batch=tokens_per_batch, dtype=dtype, progress=progress)
    return ModelSpec(name=name, modalities=("text",), num_params=count_llama_params(LlamaConfig()),
                     featurizer=featurizer, head="linear", finetune=featurizer.finetune,
                     tokenize=text_tokenizer(featurizer))
