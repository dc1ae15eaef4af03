"""MPNet (all-mpnet-base-v2) in Flax NNX, loading a Hugging Face checkpoint directory.

MPNet is a post-norm BERT-style encoder with two differences that matter for
a faithful port:

* position ids count real tokens only: a token gets ``cumsum(id != pad) + pad``
  and every pad token gets ``pad`` itself (fairseq's ``make_positions``), so
  the position table is offset by ``pad_token_id + 1``;
* every attention layer adds a learned bias indexed by the bucketed relative
  distance ``key - query`` (T5-style, bidirectional, 32 buckets, max distance
  128). The table is shared by all layers and computed once per forward. The
  buckets depend only on the sequence length, not on padding.

The directory holds ``config.json``, ``model.safetensors`` and
``tokenizer.json`` (the layout of ``assets.fetch("mpnet-base-v2")``). Weights
are read with the ``safetensors`` numpy API; torch is never needed.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from w2sjax.models import precision
from w2sjax.models import weights as weights_lib

from w2sjax.models.bert import BertTokenizer, mean_pool

__all__ = [
    "MPNetConfig",
    "MPNetEncoder",
    "MPNetClassifier",
    "load_mpnet",
    "load_mpnet_tokenizer",
    "relative_position_buckets",
    "count_mpnet_params",
]


@dataclasses.dataclass(frozen=True)
class MPNetConfig:
    """The fields of an MPNet ``config.json`` that the forward pass uses."""

    vocab_size: int = 30527
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 514
    relative_attention_num_buckets: int = 32
    layer_norm_eps: float = 1e-5
    hidden_act: str = "gelu"
    pad_token_id: int = 1

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MPNetConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: d[k] for k in names if k in d})

    @classmethod
    def from_json(cls, path: str | Path) -> "MPNetConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def max_len(self) -> int:
        """Longest sequence the position table covers (positions start at pad+1)."""
        return self.max_position_embeddings - self.pad_token_id - 1


_ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}


def count_mpnet_params(cfg: MPNetConfig) -> int:
    """Parameters of an `MPNetEncoder` for ``cfg`` (no pooler), without building it."""
    h, i = cfg.hidden_size, cfg.intermediate_size
    embed = (cfg.vocab_size + cfg.max_position_embeddings) * h + 2 * h
    layer = 4 * (h * h + h) + (h * i + i) + (i * h + h) + 2 * 2 * h
    return embed + cfg.num_hidden_layers * layer + cfg.relative_attention_num_buckets * cfg.num_attention_heads


def relative_position_buckets(length: int, num_buckets: int = 32, max_distance: int = 128) -> np.ndarray:
    """Bucket index ``[length, length]`` of the relative distance ``key - query``.

    Half the buckets are for keys before the query, half for keys after; within
    a half, distances below ``num_buckets // 4`` get their own bucket and larger
    ones share log-spaced buckets up to ``max_distance``. Computed in numpy at
    trace time (the length is static) with float32 logs, as the reference does,
    so the boundaries (distance 16, 32, 64, ...) land in the same buckets.
    """
    pos = np.arange(length, dtype=np.int64)
    n = pos[:, None] - pos[None, :]  # query - key
    half = num_buckets // 2
    bucket = (n < 0).astype(np.int64) * half
    n = np.abs(n)
    exact = half // 2
    # max(n, exact) keeps log() finite; those entries take the exact branch anyway.
    far = np.maximum(n, exact).astype(np.float32) / np.float32(exact)
    scaled = np.log(far) / np.float32(math.log(max_distance / exact))
    large = np.minimum(exact + (scaled * np.float32(half - exact)).astype(np.int64), half - 1)
    return bucket + np.where(n < exact, n, large)


def position_ids(input_ids, pad_token_id: int):
    """MPNet position ids: real tokens count from ``pad+1``, pad tokens get ``pad``."""
    real = (input_ids != pad_token_id).astype(jnp.int32)
    return jnp.cumsum(real, axis=1) * real + pad_token_id


class MPNetEmbeddings(nnx.Module):
    def __init__(self, cfg: MPNetConfig, *, param_dtype, rngs: nnx.Rngs):
        h = cfg.hidden_size
        kw = dict(param_dtype=param_dtype, rngs=rngs)
        self.pad_token_id = cfg.pad_token_id
        self.word = nnx.Embed(cfg.vocab_size, h, **kw)
        self.position = nnx.Embed(cfg.max_position_embeddings, h, **kw)
        # Exact variance: the fast E[x^2]-E[x]^2 form costs ~1e-6 of agreement.
        self.norm = nnx.LayerNorm(h, epsilon=cfg.layer_norm_eps, use_fast_variance=False, **kw)

    def __call__(self, input_ids):
        x = self.word(input_ids) + self.position(position_ids(input_ids, self.pad_token_id))
        return self.norm(x.astype(jnp.float32))


class MPNetLayer(nnx.Module):
    """Post-norm block: attention (+ relative bias), add & norm, FFN, add & norm."""

    def __init__(self, cfg: MPNetConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        h, i = cfg.hidden_size, cfg.intermediate_size
        lin = dict(param_dtype=param_dtype, rngs=rngs, **precision.linear_kwargs(dtype))
        norm = dict(epsilon=cfg.layer_norm_eps, use_fast_variance=False,
                    param_dtype=param_dtype, rngs=rngs)
        self.num_heads = cfg.num_attention_heads
        self.act = cfg.hidden_act
        self.query = nnx.Linear(h, h, **lin)
        self.key = nnx.Linear(h, h, **lin)
        self.value = nnx.Linear(h, h, **lin)
        self.attn_out = nnx.Linear(h, h, **lin)
        self.attn_norm = nnx.LayerNorm(h, **norm)
        self.ffn_in = nnx.Linear(h, i, **lin)
        self.ffn_out = nnx.Linear(i, h, **lin)
        self.ffn_norm = nnx.LayerNorm(h, **norm)

    def _attention(self, x, keep, bias):
        b, t, h = x.shape
        d = h // self.num_heads
        split = lambda y: y.reshape(b, t, self.num_heads, d)
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = jnp.einsum("bqnd,bknd->bnqk", q, k).astype(jnp.float32) / math.sqrt(d)
        scores = scores + bias  # [1, n, q, k], shared by the batch
        # `where` rather than an additive mask: masked keys get exactly zero weight.
        scores = jnp.where(keep, scores, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
        return self.attn_out(jnp.einsum("bnqk,bknd->bqnd", probs, v).reshape(b, t, h))

    def __call__(self, x, keep, bias):
        x = self.attn_norm(x + self._attention(x, keep, bias).astype(jnp.float32))
        y = self.ffn_out(_ACTIVATIONS[self.act](self.ffn_in(x)))
        return self.ffn_norm(x + y.astype(jnp.float32))


class MPNetEncoder(nnx.Module):
    """MPNet body: ``(input_ids, attention_mask) -> last hidden state [B, T, H]`` (float32).

    Submodules: ``embeddings``, ``layers`` (an ``nnx.List``) and the shared
    ``relative_bias`` table ``[num_buckets, num_heads]``.
    """

    def __init__(self, cfg: MPNetConfig, *, dtype=jnp.float32, param_dtype=jnp.float32,
                 rngs: nnx.Rngs):
        if cfg.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"unsupported hidden_act {cfg.hidden_act!r}")
        self.config = cfg
        self.embeddings = MPNetEmbeddings(cfg, param_dtype=param_dtype, rngs=rngs)
        self.relative_bias = nnx.Embed(cfg.relative_attention_num_buckets, cfg.num_attention_heads,
                                       param_dtype=param_dtype, rngs=rngs)
        self.layers = nnx.List([
            MPNetLayer(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
            for _ in range(cfg.num_hidden_layers)
        ])

    def position_bias(self, length: int):
        """Relative-position bias ``[1, heads, length, length]`` in float32."""
        buckets = relative_position_buckets(length, self.config.relative_attention_num_buckets)
        bias = self.relative_bias(jnp.asarray(buckets, dtype=jnp.int32))  # [q, k, n]
        return jnp.transpose(bias, (2, 0, 1))[None].astype(jnp.float32)

    def __call__(self, input_ids, attention_mask):
        t = input_ids.shape[1]
        if t > self.config.max_len:
            raise ValueError(f"sequence length {t} > {self.config.max_len} positions")
        x = self.embeddings(input_ids)
        keep = attention_mask[:, None, None, :].astype(bool)
        bias = self.position_bias(t)
        for layer in self.layers:
            x = layer(x, keep, bias)
        return x

    def embed(self, input_ids, attention_mask, *, normalize: bool = True):
        """Sentence embedding ``[B, H]``: masked mean of the last hidden state.

        ``normalize=True`` L2-normalises it, as the sentence-transformers
        pipeline of all-mpnet-base-v2 does (Pooling then Normalize).
        """
        return mean_pool(self(input_ids, attention_mask), attention_mask, normalize=normalize)


class MPNetClassifier(nnx.Module):
    """Encoder + mean pooling + linear head: ``module(inputs) -> logits [B, C]``.

    ``inputs`` is ``{"input_ids": int [B, T], "attention_mask": int [B, T]}``.
    Submodules are ``encoder`` and ``head``, so a linear probe freezes the
    backbone with an optimizer filter on the path ``head``.
    """

    def __init__(self, encoder: MPNetEncoder, num_classes: int, *, normalize: bool = False,
                 rngs: nnx.Rngs):
        self.encoder = encoder
        self.normalize = normalize
        self.head = nnx.Linear(encoder.config.hidden_size, num_classes, rngs=rngs)

    def __call__(self, inputs):
        mask = inputs["attention_mask"]
        pooled = self.encoder.embed(inputs["input_ids"], mask, normalize=self.normalize)
        return self.head(pooled)


# ---------------------------------------------------------------- loading


def _checkpoint_names(cfg: MPNetConfig) -> weights_lib.TorchNames:
    """NNX parameter path -> (checkpoint tensor name, transpose?)."""
    names = weights_lib.TorchNames()
    e = ("embeddings",)
    names.tensor(e + ("word", "embedding"), "embeddings.word_embeddings.weight")
    names.tensor(e + ("position", "embedding"), "embeddings.position_embeddings.weight")
    names.norm(e + ("norm",), "embeddings.LayerNorm")
    names.tensor(("relative_bias", "embedding"), "encoder.relative_attention_bias.weight")
    for i in range(cfg.num_hidden_layers):
        p, n = ("layers", i), f"encoder.layer.{i}"
        names.linear(p + ("query",), f"{n}.attention.attn.q")
        names.linear(p + ("key",), f"{n}.attention.attn.k")
        names.linear(p + ("value",), f"{n}.attention.attn.v")
        names.linear(p + ("attn_out",), f"{n}.attention.attn.o")
        names.norm(p + ("attn_norm",), f"{n}.attention.LayerNorm")
        names.linear(p + ("ffn_in",), f"{n}.intermediate.dense")
        names.linear(p + ("ffn_out",), f"{n}.output.dense")
        names.norm(p + ("ffn_norm",), f"{n}.output.LayerNorm")
    return names


def load_mpnet_encoder(path: str | Path, *, num_layers: int | None = None, dtype=jnp.float32,
                       param_dtype=None) -> MPNetEncoder:
    """Just the `MPNetEncoder` of a checkpoint directory (see `load_mpnet`)."""
    from safetensors import safe_open

    path = Path(path)
    weights = path / "model.safetensors"
    if not weights.exists():
        raise FileNotFoundError(f"{weights} not found (only safetensors checkpoints load)")
    cfg = MPNetConfig.from_json(path / "config.json")
    if num_layers is not None:
        if not 1 <= num_layers <= cfg.num_hidden_layers:
            raise ValueError(f"num_layers={num_layers} outside 1..{cfg.num_hidden_layers}")
        cfg = dataclasses.replace(cfg, num_hidden_layers=num_layers)
    param_dtype = dtype if param_dtype is None else param_dtype

    # Build abstractly (no random init of 110M parameters), then fill in.
    abstract = nnx.eval_shape(lambda: MPNetEncoder(
        cfg, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0)))
    names = _checkpoint_names(cfg)
    with safe_open(str(weights), framework="np") as f:
        keys = set(f.keys())
        prefix = "mpnet." if "mpnet.embeddings.word_embeddings.weight" in keys else ""

        def read(name: str) -> np.ndarray:
            if prefix + name not in keys:
                raise KeyError(f"{weights}: no tensor {prefix + name!r}; not an MPNet checkpoint?")
            return f.get_tensor(prefix + name)

        return weights_lib.fill(abstract, weights_lib.torch_reader(names, read), param_dtype=param_dtype)


def load_mpnet_tokenizer(path: str | Path) -> BertTokenizer:
    """The WordPiece tokenizer of an MPNet directory (``<s> ... </s>``, pad id from config)."""
    path = Path(path)
    tok = BertTokenizer(path / "tokenizer.json")
    # MPNet's vocabulary also holds a "[PAD]" (id 4); the model's pad is "<pad>" (id 1),
    # and position ids are derived from it, so take it from the config.
    tok.pad_id = MPNetConfig.from_json(path / "config.json").pad_token_id
    return tok


def load_mpnet(path: str | Path, *, num_layers: int | None = None, dtype=jnp.float32
               ) -> tuple[MPNetEncoder, BertTokenizer]:
    """Load an MPNet checkpoint directory -> ``(encoder, tokenizer)``.

    Args:
      path: directory with ``config.json``, ``model.safetensors`` and
        ``tokenizer.json`` (e.g. ``assets.fetch("mpnet-base-v2")``); tensor
        names may carry an ``mpnet.`` prefix.
      num_layers: keep only the first ``num_layers`` layers (a ladder of
        strong models from one checkpoint).
      dtype: parameter and matmul dtype; layer norms, softmax and the residual
        stream stay float32.

    The tokenizer's ``encode(texts, max_len) -> (input_ids, attention_mask)``
    returns int32 numpy arrays, right-padded to ``max_len``.
    """
    return (load_mpnet_encoder(path, num_layers=num_layers, dtype=dtype),
            load_mpnet_tokenizer(path))


def model_spec(name: str, **options):
    """Registry hook for ``mpnet-base`` (see `w2sjax.models.ladder.mpnet_spec` for the options)."""
    from w2sjax.models import ladder

    return ladder.mpnet_spec(name, **options)
