"""MPNet (all-mpnet-base-v2) in Flax NNX, loading a Hugging Face checkpoint directory.

MPNet is a post-norm BERT-style encoder (it shares `bert.PostNormLayer`, the classifier and the
loader) with two differences that matter for a faithful port:

* position ids count real tokens only, as RoBERTa's do (`bert.padded_position_ids`), so the
  position table is offset by ``pad_token_id + 1``;
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
import functools
import math
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from w2sjax.models import bert, layers
from w2sjax.models import weights as weights_lib
from w2sjax.models.embed import mean_pool
from w2sjax.models.spec import ModelSpec, text_tokenizer
from w2sjax.models.tokenizer import HFTokenizer, load_tokenizer

__all__ = [
    "MPNetConfig",
    "MPNetEncoder",
    "MPNetFeaturizer",
    "load_mpnet",
    "load_mpnet_encoder",
    "load_hf",
    "load_mpnet_tokenizer",
    "relative_position_buckets",
    "count_mpnet_params",
    "model_spec",
]

position_ids = bert.padded_position_ids
# transformers' MPNet numbers positions from padding index 1 whatever pad_token_id says.
POSITION_PAD = 1


@dataclasses.dataclass(frozen=True)
class MPNetConfig(bert.EncoderConfigFile):
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

    @property
    def max_len(self) -> int:
        """Longest sequence the position table covers (positions start at 2)."""
        return self.max_position_embeddings - POSITION_PAD - 1


def count_mpnet_params(cfg: MPNetConfig) -> int:
    """Parameters of an `MPNetEncoder` for ``cfg`` (no pooler), without building it."""
    h, i = cfg.hidden_size, cfg.intermediate_size
    embeddings = (cfg.vocab_size + cfg.max_position_embeddings) * h + 2 * h
    return (embeddings + cfg.num_hidden_layers * bert._post_norm_layer_params(h, i)
            + cfg.relative_attention_num_buckets * cfg.num_attention_heads)


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


class MPNetEmbeddings(nnx.Module):
    def __init__(self, cfg: MPNetConfig, *, param_dtype, rngs: nnx.Rngs):
        h = cfg.hidden_size
        kw = dict(param_dtype=param_dtype, rngs=rngs)
        self.pad_token_id = POSITION_PAD
        self.word = nnx.Embed(cfg.vocab_size, h, **kw)
        self.position = nnx.Embed(cfg.max_position_embeddings, h, **kw)
        # Exact variance: the fast E[x^2]-E[x]^2 form costs ~1e-6 of agreement.
        self.norm = nnx.LayerNorm(h, epsilon=cfg.layer_norm_eps, use_fast_variance=False, **kw)

    def __call__(self, input_ids):
        x = self.word(input_ids) + self.position(position_ids(input_ids, self.pad_token_id))
        return self.norm(x.astype(jnp.float32))


class MPNetEncoder(layers.Stack, nnx.Module):
    """MPNet body: ``(input_ids, attention_mask) -> last hidden state [B, T, H]`` (float32).

    Submodules: ``embeddings``, ``layers`` (an ``nnx.List``) and the shared
    ``relative_bias`` table ``[num_buckets, num_heads]``.
    """

    bottom_parts = ("embeddings",)  # the relative bias stays: every block reads it (frozen)

    def __init__(self, cfg: MPNetConfig, *, dtype=jnp.float32, param_dtype=jnp.float32,
                 rngs: nnx.Rngs):
        layers.activation(cfg.hidden_act)
        self.config = cfg
        self.embeddings = MPNetEmbeddings(cfg, param_dtype=param_dtype, rngs=rngs)
        self.relative_bias = nnx.Embed(cfg.relative_attention_num_buckets, cfg.num_attention_heads,
                                       param_dtype=param_dtype, rngs=rngs)
        self.layers = nnx.List([
            bert.PostNormLayer(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs, exact_variance=True)
            for _ in range(cfg.num_hidden_layers)
        ])

    def position_bias(self, length: int):
        """Relative-position bias ``[1, heads, length, length]`` in float32."""
        buckets = relative_position_buckets(length, self.config.relative_attention_num_buckets)
        bias = self.relative_bias(jnp.asarray(buckets, dtype=jnp.int32))  # [q, k, n]
        return jnp.transpose(bias, (2, 0, 1))[None].astype(jnp.float32)

    def embed_tokens(self, input_ids, attention_mask, token_type_ids=None):
        """``token_type_ids`` is accepted for BERT's signature and unused."""
        t = input_ids.shape[1]
        if t > self.config.max_len:
            raise ValueError(f"sequence length {t} > {self.config.max_len} positions")
        return self.embeddings(input_ids)

    def run_blocks(self, x, attention_mask, start=0, stop=None):
        keep = attention_mask[:, None, None, :].astype(bool)
        bias = self.position_bias(x.shape[1])  # depends on the length only, not on padding
        for _, layer in self.held_blocks(start, stop):
            x = layer(x, keep, bias)
        return x

    def embed(self, input_ids, attention_mask, *, normalize: bool = True):
        """Sentence embedding ``[B, H]``: masked mean of the last hidden state.

        ``normalize=True`` L2-normalises it, as the sentence-transformers
        pipeline of all-mpnet-base-v2 does (Pooling then Normalize).
        """
        return mean_pool(self(input_ids, attention_mask), attention_mask, normalize=normalize)


# ---------------------------------------------------------------- loading


_ATTENTION_NAMES = {"query": "attention.attn.q", "key": "attention.attn.k", "value": "attention.attn.v",
                    "attn_out": "attention.attn.o", "attn_norm": "attention.LayerNorm"}


def _checkpoint_names(cfg: MPNetConfig) -> weights_lib.TorchNames:
    names = bert.post_norm_names(cfg.num_hidden_layers, _ATTENTION_NAMES)
    names.tensor(("relative_bias", "embedding"), "encoder.relative_attention_bias.weight")
    return names


def load_mpnet_encoder(path: str | Path, *, num_layers: int | None = None, dtype=jnp.float32,
                       param_dtype=None, config: MPNetConfig | None = None, mesh=None) -> MPNetEncoder:
    """Just the `MPNetEncoder` of a checkpoint directory (see `load_mpnet`)."""
    path = Path(path)
    weights_lib.safetensors_files(path)  # a clear error before parsing anything
    cfg = bert.truncated(config or MPNetConfig.from_json(path / "config.json"), num_layers)
    param_dtype = dtype if param_dtype is None else param_dtype
    build = lambda c: MPNetEncoder(c, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0))
    return bert.load_encoder(path, cfg, build, _checkpoint_names(cfg), anchor="embeddings.word_embeddings.weight",
                             prefixes=("mpnet.",), param_dtype=param_dtype, mesh=mesh)


def load_hf(path: str | Path, config: dict, *, dtype=jnp.float32, param_dtype=None,
            num_layers: int | None = None, mesh=None) -> MPNetEncoder:
    """`w2sjax.models.hf.load`'s entry: an MPNet directory with its parsed config."""
    return load_mpnet_encoder(path, num_layers=num_layers, dtype=dtype, param_dtype=param_dtype,
                              config=MPNetConfig.from_dict(config), mesh=mesh)


def load_mpnet_tokenizer(path: str | Path) -> HFTokenizer:
    """The WordPiece tokenizer of an MPNet directory (``<s> ... </s>``, pad id from config)."""
    # MPNet's vocabulary also holds a "[PAD]" (id 4); the model's pad is "<pad>" (id 1),
    # and position ids are derived from it, so take it from the config.
    return load_tokenizer(path, pad_id=MPNetConfig.from_json(Path(path) / "config.json").pad_token_id)


def load_mpnet(path: str | Path, *, num_layers: int | None = None, dtype=jnp.float32
               ) -> tuple[MPNetEncoder, HFTokenizer]:
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


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, dtype_name: str):
    # Cached: the specs (one per get_model call) share one copy of the weights.
    return load_mpnet(path, dtype=jnp.dtype(dtype_name))


class MPNetFeaturizer(bert.MeanPooledFeaturizer):
    """Mean-pooled last hidden state of all-mpnet-base-v2: float32 ``[N, 768]``.

    ``normalize`` is off by default, like the MiniLM probes, so all students see raw pooled vectors.
    """

    asset = "mpnet-base-v2"

    def __init__(self, name: str = "mpnet-base", **kw):
        super().__init__(name, **kw)

    def load(self):
        return _load_cached(str(self.checkpoint()), self.dtype)


def model_spec(name: str = "mpnet-base", *, max_len: int = 128, normalize: bool = False,
               tokens_per_batch: int = 8192, dtype: str = "float32", path=None,
               progress: bool = True) -> ModelSpec:
    """``mpnet-base``: frozen mean-pooled features + linear head; finetunes as a mean-pooled
    `heads.PooledClassifier`."""
    featurizer = MPNetFeaturizer(name, path=path, max_len=max_len, normalize=normalize,
                                 tokens_per_batch=tokens_per_batch, dtype=dtype, progress=progress)

    def finetune(num_classes: int, *, rngs: nnx.Rngs, dtype=jnp.float32, mesh=None):
        # A fresh copy of the weights: training must not touch the featurizer's frozen encoder.
        # float32 master weights whatever the compute dtype: AdamW updates are lost in bf16.
        encoder = load_mpnet_encoder(featurizer.checkpoint(), dtype=dtype, param_dtype=jnp.float32, mesh=mesh)
        return bert.classifier(encoder, num_classes, normalize=normalize, rngs=rngs)

    return ModelSpec(name=name, modalities=("text",), num_params=count_mpnet_params(MPNetConfig()),
                     featurizer=featurizer, head="linear", finetune=finetune,
                     tokenize=text_tokenizer(featurizer))
