"""A Llama-architecture decoder (SmolLM2-135M) in Flax NNX, loaded from a GGUF file.

Architecture (Hugging Face ``LlamaModel``): token embedding, then pre-norm
blocks of RMSNorm -> grouped-query causal attention with rotary embeddings ->
residual, RMSNorm -> SwiGLU MLP -> residual, and a final RMSNorm. SmolLM2 ties
the output projection to the token embedding.

GGUF specifics handled by the loader:

* weights are quantized (Q4_1 / Q8_0 for SmolLM2-135M); the ``gguf`` package
  dequantizes them to float32, so the port computes with exactly the
  quantized model's weights;
* llama.cpp's converter permutes the rows of ``attn_q``/``attn_k`` inside each
  head from Hugging Face's rotate-half layout (pairs ``i, i + d/2``) to the
  interleaved one (pairs ``2i, 2i+1``). We undo that on load, so the module
  uses HF's layout and rotate-half rotary embeddings, and an HF checkpoint's
  weights would drop in unchanged.

Padding: position ids are ``cumsum(mask) - 1``, so a padded example sees the
same positions as the unpadded one, on either side. `DecoderClassifier` reads
the hidden state of the last real token.
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

from w2sjax.models import precision
from w2sjax.models import weights as weights_lib

from w2sjax.models.gguf_tokenizer import GGUFFile, GGUFTokenizer

__all__ = [
    "LlamaConfig",
    "LlamaModel",
    "DecoderClassifier",
    "load_llama_gguf",
    "load_smollm2",
    "last_token_index",
    "count_llama_params",
]


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

    @classmethod
    def from_gguf(cls, g: GGUFFile) -> "LlamaConfig":
        arch = g.field("general.architecture")
        if arch != "llama":
            raise ValueError(f"{g.path}: architecture {arch!r}, expected 'llama'")
        get = lambda k, d=None: g.field(f"llama.{k}", d)
        scaling = get("rope.scaling.type")
        if scaling not in (None, "none"):
            raise ValueError(f"{g.path}: rope scaling {scaling!r} is not supported")
        heads = int(get("attention.head_count"))
        hidden = int(get("embedding_length"))
        return cls(
            vocab_size=len(g.field("tokenizer.ggml.tokens")),
            hidden_size=hidden,
            num_hidden_layers=int(get("block_count")),
            num_attention_heads=heads,
            num_key_value_heads=int(get("attention.head_count_kv", heads)),
            intermediate_size=int(get("feed_forward_length")),
            rms_norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-5)),
            rope_theta=float(get("rope.freq_base", 10000.0)),
            head_dim=int(get("rope.dimension_count", hidden // heads)),
            tie_word_embeddings=not g.has_tensor("output.weight"),
            max_position_embeddings=int(get("context_length", 2048)),
        )


def count_llama_params(cfg: LlamaConfig) -> int:
    """Parameters of a `LlamaModel` for ``cfg``, without building it."""
    h, i, d = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    attn = h * cfg.num_attention_heads * d * 2 + h * cfg.num_key_value_heads * d * 2
    layer = attn + 3 * h * i + 2 * h
    head = 0 if cfg.tie_word_embeddings else cfg.vocab_size * h
    return cfg.vocab_size * h + cfg.num_hidden_layers * layer + h + head


def rotary(positions, head_dim: int, theta: float):
    """cos, sin ``[B, T, 1, head_dim]`` of HF's rotate-half rotary embedding (float32)."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    freqs = positions.astype(jnp.float32)[..., None] * inv_freq
    emb = jnp.concatenate([freqs, freqs], axis=-1)[:, :, None, :]
    return jnp.cos(emb), jnp.sin(emb)


def _apply_rotary(x, cos, sin):
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


class LlamaAttention(nnx.Module):
    """Causal grouped-query attention: query head ``h`` reads KV head ``h // group``."""

    def __init__(self, cfg: LlamaConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        h, d = cfg.hidden_size, cfg.head_dim
        lin = dict(use_bias=False, param_dtype=param_dtype, rngs=rngs, **precision.linear_kwargs(dtype))
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, d
        self.q_proj = nnx.Linear(h, cfg.num_attention_heads * d, **lin)
        self.k_proj = nnx.Linear(h, cfg.num_key_value_heads * d, **lin)
        self.v_proj = nnx.Linear(h, cfg.num_key_value_heads * d, **lin)
        self.o_proj = nnx.Linear(cfg.num_attention_heads * d, h, **lin)

    def __call__(self, x, keep, cos, sin):
        b, t, _ = x.shape
        kv, d = self.num_kv_heads, self.head_dim
        group = self.num_heads // kv
        q = _apply_rotary(self.q_proj(x).reshape(b, t, self.num_heads, d).astype(jnp.float32), cos, sin)
        k = _apply_rotary(self.k_proj(x).reshape(b, t, kv, d).astype(jnp.float32), cos, sin)
        v = self.v_proj(x).reshape(b, t, kv, d)
        q = q.reshape(b, t, kv, group, d).astype(v.dtype)
        scores = jnp.einsum("bqkgd,bskd->bkgqs", q, k.astype(v.dtype)).astype(jnp.float32) / math.sqrt(d)
        scores = jnp.where(keep[:, None, None], scores, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
        ctx = jnp.einsum("bkgqs,bskd->bqkgd", probs, v).reshape(b, t, self.num_heads * d)
        return self.o_proj(ctx)


class LlamaMLP(nnx.Module):
    """SwiGLU: ``down(silu(gate(x)) * up(x))``."""

    def __init__(self, cfg: LlamaConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        h, i = cfg.hidden_size, cfg.intermediate_size
        lin = dict(use_bias=False, param_dtype=param_dtype, rngs=rngs, **precision.linear_kwargs(dtype))
        self.gate_proj = nnx.Linear(h, i, **lin)
        self.up_proj = nnx.Linear(h, i, **lin)
        self.down_proj = nnx.Linear(i, h, **lin)

    def __call__(self, x):
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaBlock(nnx.Module):
    def __init__(self, cfg: LlamaConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        norm = dict(epsilon=cfg.rms_norm_eps, use_fast_variance=False, param_dtype=param_dtype, rngs=rngs)
        self.input_norm = nnx.RMSNorm(cfg.hidden_size, **norm)
        self.attn = LlamaAttention(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.post_attn_norm = nnx.RMSNorm(cfg.hidden_size, **norm)
        self.mlp = LlamaMLP(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x, keep, cos, sin):
        x = x + self.attn(self.input_norm(x), keep, cos, sin).astype(jnp.float32)
        return x + self.mlp(self.post_attn_norm(x)).astype(jnp.float32)


class LlamaModel(nnx.Module):
    """Decoder: ``model(input_ids, attention_mask) -> hidden [B, T, D]`` (after the final norm).

    ``model.logits(input_ids, attention_mask) -> [B, T, vocab]`` adds the
    output projection (the tied embedding when the checkpoint has no
    ``output.weight``). Submodules: ``embed``, ``layers`` (an ``nnx.List``),
    ``norm`` and, when untied, ``lm_head``.
    """

    def __init__(self, cfg: LlamaConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.config = cfg
        self.embed = nnx.Embed(cfg.vocab_size, cfg.hidden_size, param_dtype=param_dtype, rngs=rngs)
        self.layers = nnx.List([
            LlamaBlock(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs) for _ in range(cfg.num_hidden_layers)
        ])
        self.norm = nnx.RMSNorm(cfg.hidden_size, epsilon=cfg.rms_norm_eps, use_fast_variance=False,
                                param_dtype=param_dtype, rngs=rngs)
        self.lm_head = None if cfg.tie_word_embeddings else nnx.Linear(
            cfg.hidden_size, cfg.vocab_size, use_bias=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, input_ids, attention_mask=None):
        b, t = input_ids.shape
        if attention_mask is None:
            attention_mask = jnp.ones((b, t), jnp.int32)
        mask = attention_mask.astype(bool)
        # Positions count real tokens, so left or right padding leaves them unchanged.
        positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
        cos, sin = rotary(positions, self.config.head_dim, self.config.rope_theta)
        causal = jnp.tril(jnp.ones((t, t), bool))
        keep = causal[None] & mask[:, None, :]  # [B, q, k]
        x = self.embed(input_ids).astype(jnp.float32)
        for layer in self.layers:
            x = layer(x, keep, cos, sin)
        return self.norm(x)

    def project(self, hidden):
        """Vocabulary logits of hidden states ``[..., D] -> [..., vocab]`` (float32)."""
        if self.lm_head is not None:
            return self.lm_head(hidden).astype(jnp.float32)
        table = self.embed.embedding[...]
        return jnp.einsum("...d,vd->...v", hidden.astype(table.dtype), table).astype(jnp.float32)

    def logits(self, input_ids, attention_mask=None):
        return self.project(self(input_ids, attention_mask))


def last_token_index(attention_mask):
    """Index of each row's last real (mask == 1) token, ``[B]`` int32.

    For right padding this is ``sum(mask) - 1``; taking the last 1 instead of
    the count also works for left padding. A row with no real token gives 0.
    """
    m = attention_mask.astype(bool)
    t = m.shape[1]
    last = t - 1 - jnp.argmax(m[:, ::-1], axis=1)
    return jnp.where(m.any(axis=1), last, 0).astype(jnp.int32)


class DecoderClassifier(nnx.Module):
    """Decoder + last-real-token readout + linear head: ``module(inputs) -> logits [B, C]``.

    ``inputs`` is ``{"input_ids": int [B, T], "attention_mask": int [B, T]}``.
    In a causal model only the last real token has seen the whole text, so its
    final hidden state is the sequence feature; ``features(inputs) -> [B, D]``
    returns it (for frozen-feature caching). Submodules: ``model``, ``head``.
    """

    def __init__(self, model: LlamaModel, num_classes: int, *, rngs: nnx.Rngs):
        self.model = model
        self.head = nnx.Linear(model.config.hidden_size, num_classes, rngs=rngs)

    def features(self, inputs):
        mask = inputs["attention_mask"]
        hidden = self.model(inputs["input_ids"], mask)
        idx = last_token_index(mask)
        return jnp.take_along_axis(hidden, idx[:, None, None], axis=1)[:, 0].astype(jnp.float32)

    def __call__(self, inputs):
        return self.head(self.features(inputs))


# ---------------------------------------------------------------- loading


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


def _find_gguf(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob("*.gguf"))
        if len(found) != 1:
            raise FileNotFoundError(f"{path}: expected exactly one .gguf file, found {len(found)}")
        return found[0]
    if not path.exists():
        raise FileNotFoundError(path)
    return path


def load_llama_gguf(path: str | Path, *, dtype=jnp.float32, param_dtype=None
                    ) -> tuple[LlamaModel, GGUFTokenizer]:
    """Load any llama-architecture GGUF (a ``.gguf`` file or a directory holding one)."""
    g = GGUFFile(_find_gguf(path))
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

    return weights_lib.fill(abstract, tensor_for, param_dtype=param_dtype), GGUFTokenizer(g)


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


def model_spec(name: str, **options):
    """Registry hook for ``smollm2-135m`` (see `w2sjax.models.ladder.smollm2_spec` for the options)."""
    from w2sjax.models import ladder

    return ladder.smollm2_spec(name, **options)
