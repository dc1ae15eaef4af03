"""A BERT encoder in Flax NNX that loads Hugging Face checkpoint directories.

A checkpoint directory holds ``config.json``, ``model.safetensors`` and
``tokenizer.json``. Weights are read with the ``safetensors`` numpy API, so
torch is never needed. ``num_layers=k`` keeps only the first ``k`` layers,
which turns one checkpoint into a ladder of strong models (MiniLM-L1 ... L6).

Mixed precision: ``dtype`` is the compute dtype of the matmuls, while layer
norms, softmax and the residual stream stay in float32 so bf16 stays close.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from w2sjax.models import precision
from w2sjax.models import weights as weights_lib

__all__ = [
    "BertConfig",
    "BertEncoder",
    "BertClassifier",
    "BertTokenizer",
    "load_bert",
    "load_tokenizer",
    "mean_pool",
    "count_bert_params",
]


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """The architecture fields of a Hugging Face ``config.json`` that we use.

    Defaults are BERT-base's, as in Hugging Face, for fields a file omits.
    """

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    pad_token_id: int = 0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BertConfig":
        kind = d.get("position_embedding_type", "absolute")
        if kind != "absolute":
            raise ValueError(f"only absolute position embeddings are supported, got {kind!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: d[k] for k in names if k in d})

    @classmethod
    def from_json(cls, path: str | Path) -> "BertConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


_ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # BERT's erf GELU
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}


def count_bert_params(cfg: BertConfig) -> int:
    """Parameters of a `BertEncoder` for ``cfg`` (no pooler), without building it."""
    h, i = cfg.hidden_size, cfg.intermediate_size
    embed = (cfg.vocab_size + cfg.max_position_embeddings + cfg.type_vocab_size) * h + 2 * h
    layer = 4 * (h * h + h) + (h * i + i) + (i * h + h) + 2 * 2 * h
    return embed + cfg.num_hidden_layers * layer


class BertEmbeddings(nnx.Module):
    def __init__(self, cfg: BertConfig, *, param_dtype, rngs: nnx.Rngs):
        h = cfg.hidden_size
        kw = dict(param_dtype=param_dtype, rngs=rngs)
        self.word = nnx.Embed(cfg.vocab_size, h, **kw)
        self.position = nnx.Embed(cfg.max_position_embeddings, h, **kw)
        self.token_type = nnx.Embed(cfg.type_vocab_size, h, **kw)
        self.norm = nnx.LayerNorm(h, epsilon=cfg.layer_norm_eps, **kw)

    def __call__(self, input_ids, token_type_ids):
        positions = jnp.arange(input_ids.shape[1])[None, :]
        x = self.word(input_ids) + self.position(positions) + self.token_type(token_type_ids)
        return self.norm(x)


class BertLayer(nnx.Module):
    """Post-norm transformer block: attention, add & norm, FFN, add & norm."""

    def __init__(self, cfg: BertConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        h, i = cfg.hidden_size, cfg.intermediate_size
        lin = dict(param_dtype=param_dtype, rngs=rngs, **precision.linear_kwargs(dtype))
        norm = dict(epsilon=cfg.layer_norm_eps, param_dtype=param_dtype, rngs=rngs)
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

    def _attention(self, x, mask):
        b, t, h = x.shape
        split = lambda y: y.reshape(b, t, self.num_heads, h // self.num_heads)
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = jnp.einsum("bqnd,bknd->bnqk", q, k).astype(jnp.float32)
        scores = scores / math.sqrt(h // self.num_heads)
        # `where`, not an additive bias: a fully padded row then gets uniform
        # weights instead of NaN, and masked keys get exactly zero weight.
        keep = mask[:, None, None, :].astype(bool)
        scores = jnp.where(keep, scores, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
        ctx = jnp.einsum("bnqk,bknd->bqnd", probs, v).reshape(b, t, h)
        return self.attn_out(ctx)

    def __call__(self, x, mask):
        # The residual stream stays float32; only matmul outputs are `dtype`.
        x = self.attn_norm(x + self._attention(x, mask).astype(jnp.float32))
        y = self.ffn_out(_ACTIVATIONS[self.act](self.ffn_in(x)))
        return self.ffn_norm(x + y.astype(jnp.float32))


class BertEncoder(nnx.Module):
    """BERT body: ``(input_ids, attention_mask) -> last hidden state [B, T, H]``.

    Attributes are ``embeddings`` and ``layers`` (an ``nnx.List``); ``config``
    is the (static) `BertConfig`.
    """

    def __init__(self, cfg: BertConfig, *, dtype=jnp.float32, param_dtype=jnp.float32,
                 rngs: nnx.Rngs):
        if cfg.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"unsupported hidden_act {cfg.hidden_act!r}")
        self.config = cfg
        self.embeddings = BertEmbeddings(cfg, param_dtype=param_dtype, rngs=rngs)
        self.layers = nnx.List([
            BertLayer(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
            for _ in range(cfg.num_hidden_layers)
        ])

    def __call__(self, input_ids, attention_mask, token_type_ids=None):
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids).astype(jnp.float32)
        for layer in self.layers:
            x = layer(x, attention_mask)
        return x


def mean_pool(hidden, attention_mask, *, normalize: bool = True):
    """Average of the hidden states over real (mask == 1) tokens, in float32.

    With ``normalize=True`` the result is L2-normalised, as the
    sentence-transformers all-MiniLM-L6-v2 pipeline does (Pooling + Normalize).
    """
    m = attention_mask.astype(jnp.float32)
    summed = jnp.einsum("btd,bt->bd", hidden.astype(jnp.float32), m)
    pooled = summed / jnp.maximum(m.sum(axis=1, keepdims=True), 1e-9)
    if normalize:
        norm = jnp.linalg.norm(pooled, axis=-1, keepdims=True)
        pooled = pooled / jnp.maximum(norm, 1e-12)
    return pooled


class BertClassifier(nnx.Module):
    """Encoder + mean pooling + linear head: ``module(inputs) -> logits [B, C]``.

    ``inputs`` is ``{"input_ids": int [B, T], "attention_mask": int [B, T]}``.
    Submodules are ``encoder`` and ``head``, so a linear probe can freeze the
    backbone with an optimizer filter on the path ``head``.
    """

    def __init__(self, encoder: BertEncoder, num_classes: int, *, normalize: bool = False,
                 rngs: nnx.Rngs):
        self.encoder = encoder
        self.normalize = normalize
        self.head = nnx.Linear(encoder.config.hidden_size, num_classes, rngs=rngs)

    def __call__(self, inputs):
        mask = inputs["attention_mask"]
        hidden = self.encoder(inputs["input_ids"], mask, inputs.get("token_type_ids"))
        return self.head(mean_pool(hidden, mask, normalize=self.normalize))


# ---------------------------------------------------------------- loading


def _find_prefix(names: Sequence[str]) -> str:
    """The prefix ('' or e.g. 'bert.') in front of the BERT tensor names."""
    anchor = "embeddings.word_embeddings.weight"
    hits = sorted(n[: -len(anchor)] for n in names if n.endswith(anchor))
    if not hits:
        raise ValueError(f"no tensor named '*{anchor}': not a BERT checkpoint")
    return hits[0]


def _checkpoint_names(cfg: BertConfig) -> weights_lib.TorchNames:
    """Map each NNX parameter path to (checkpoint tensor name, transpose?)."""
    names = weights_lib.TorchNames()
    e = ("embeddings",)
    names.tensor(e + ("word", "embedding"), "embeddings.word_embeddings.weight")
    names.tensor(e + ("position", "embedding"), "embeddings.position_embeddings.weight")
    names.tensor(e + ("token_type", "embedding"), "embeddings.token_type_embeddings.weight")
    names.norm(e + ("norm",), "embeddings.LayerNorm")
    for i in range(cfg.num_hidden_layers):
        p, n = ("layers", i), f"encoder.layer.{i}"
        names.linear(p + ("query",), f"{n}.attention.self.query")
        names.linear(p + ("key",), f"{n}.attention.self.key")
        names.linear(p + ("value",), f"{n}.attention.self.value")
        names.linear(p + ("attn_out",), f"{n}.attention.output.dense")
        names.norm(p + ("attn_norm",), f"{n}.attention.output.LayerNorm")
        names.linear(p + ("ffn_in",), f"{n}.intermediate.dense")
        names.linear(p + ("ffn_out",), f"{n}.output.dense")
        names.norm(p + ("ffn_norm",), f"{n}.output.LayerNorm")
    return names


def _read_tensor(f, name: str) -> np.ndarray:
    # Some old BERT checkpoints call layer-norm parameters gamma/beta.
    keys = set(f.keys())
    if name not in keys:
        old = name.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
            "LayerNorm.bias", "LayerNorm.beta")
        if old not in keys:
            raise KeyError(f"checkpoint has no tensor {name!r}")
        name = old
    return f.get_tensor(name)


def load_bert(path: str | Path, *, num_layers: int | None = None, dtype=jnp.float32,
              param_dtype=jnp.float32) -> BertEncoder:
    """Load a BERT checkpoint directory into a `BertEncoder`.

    Args:
      path: a directory with ``config.json`` and ``model.safetensors``; tensor
        names may carry a prefix such as ``bert.``.
      num_layers: keep only the first ``num_layers`` transformer layers.
      dtype: compute dtype of the matmuls (``jnp.bfloat16`` on accelerators).
      param_dtype: storage dtype of the parameters.
    """
    from safetensors import safe_open

    path = Path(path)
    weights = path / "model.safetensors"
    if not weights.exists():
        raise FileNotFoundError(f"{weights} not found (only safetensors checkpoints load)")
    cfg = BertConfig.from_json(path / "config.json")
    if num_layers is not None:
        if not 1 <= num_layers <= cfg.num_hidden_layers:
            raise ValueError(f"num_layers={num_layers} outside 1..{cfg.num_hidden_layers}")
        cfg = dataclasses.replace(cfg, num_hidden_layers=num_layers)

    # Build the module abstractly (no random init), then fill in the weights.
    abstract = nnx.eval_shape(lambda: BertEncoder(
        cfg, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0)))
    names = _checkpoint_names(cfg)
    with safe_open(str(weights), framework="np") as f:
        prefix = _find_prefix(list(f.keys()))
        read = weights_lib.torch_reader(names, lambda name: _read_tensor(f, prefix + name))
        return weights_lib.fill(abstract, read, param_dtype=param_dtype)


# ---------------------------------------------------------------- tokenizer

def pad_ids(ids: Sequence[np.ndarray], length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad id arrays to ``length`` -> (input_ids, attention_mask) int32; shared by every tokenizer."""
    out = np.full((len(ids), length), pad_id, dtype=np.int32)
    mask = np.zeros((len(ids), length), dtype=np.int32)
    for r, row in enumerate(ids):
        out[r, : len(row)] = row
        mask[r, : len(row)] = 1
    return out, mask


class BertTokenizer:
    """Batch tokenisation with a ``tokenizers`` ``tokenizer.json``.

    The file's own padding/truncation settings (128 for MiniLM) are ignored:
    every call truncates to the ``max_len`` it is given (special tokens
    included) and pads with numpy.
    """

    def __init__(self, path: str | Path):
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(path))
        self._tok.no_padding()
        self._tok.no_truncation()
        pad = self._tok.token_to_id("[PAD]")
        self.pad_id = 0 if pad is None else int(pad)

    def token_ids(self, texts, max_len: int) -> list[np.ndarray]:
        """Token ids of each text, truncated to ``max_len``, unpadded."""
        self._tok.enable_truncation(max_length=max_len)
        try:
            encs = self._tok.encode_batch([str(t) for t in texts])
        finally:
            self._tok.no_truncation()
        return [np.asarray(e.ids, dtype=np.int32) for e in encs]

    def pad(self, ids: Sequence[np.ndarray], length: int) -> tuple[np.ndarray, np.ndarray]:
        """Right-pad id arrays to ``length`` -> (input_ids, attention_mask) int32."""
        return pad_ids(ids, length, self.pad_id)

    def encode(self, texts, max_len: int) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, attention_mask), int32 ``[N, max_len]``."""
        return self.pad(self.token_ids(texts, max_len), max_len)


def load_tokenizer(path: str | Path) -> BertTokenizer:
    """The `BertTokenizer` of a checkpoint directory (its ``tokenizer.json``)."""
    return BertTokenizer(Path(path) / "tokenizer.json")
