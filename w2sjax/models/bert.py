"""BERT and RoBERTa encoders in Flax NNX, the post-norm block and classifier MPNet shares,
and the MiniLM ladder (``minilm-l1`` ... ``minilm-l6``).

A checkpoint directory holds ``config.json``, safetensors weights and ``tokenizer.json``.
Weights are read with the ``safetensors`` numpy API, so torch is never needed.
``num_layers=k`` keeps only the first ``k`` layers, which turns one checkpoint into a ladder of
strong models (MiniLM-L1 ... L6).

RoBERTa is BERT with position ids that count real tokens from ``pad_token_id + 1`` (pads get
``pad_token_id``), as fairseq's ``make_positions`` does; ``BertConfig.position_style`` says
which.

Mixed precision: ``dtype`` is the compute dtype of the matmuls, while layer norms, softmax and
the residual stream stay in float32 so bf16 stays close.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from w2sjax.models import embed, heads, layers, precision
from w2sjax.models import weights as weights_lib
from w2sjax.models.embed import mean_pool
from w2sjax.models.spec import ModelSpec, text_tokenizer
from w2sjax.models.tokenizer import HFTokenizer, load_tokenizer

__all__ = [
    "BertConfig",
    "BertEncoder",
    "PostNormLayer",
    "classifier",
    "HFTokenizer",
    "load_bert",
    "load_hf",
    "load_encoder",
    "load_tokenizer",
    "mean_pool",
    "padded_position_ids",
    "count_bert_params",
    "MINILM_CONFIG",
    "BertFeaturizer",
    "EncoderConfigFile",
    "MeanPooledFeaturizer",
    "post_norm_names",
    "model_spec",
]


class EncoderConfigFile:
    """What BERT's and MPNet's config dataclasses share: reading ``config.json`` (each keeps the
    fields it uses, in ``from_dict``) and the attention head width."""

    @classmethod
    def from_json(cls, path: str | Path):
        return cls.from_dict(json.loads(Path(path).read_text()))

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


@dataclasses.dataclass(frozen=True)
class BertConfig(EncoderConfigFile):
    """The architecture fields of a Hugging Face ``config.json`` that we use.

    Defaults are BERT-base's, as in Hugging Face, for fields a file omits. ``position_style``
    is "absolute" (BERT: position = index) or "padded" (RoBERTa: position counts real tokens
    from ``pad_token_id + 1``).
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
    position_style: str = "absolute"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BertConfig":
        kind = d.get("position_embedding_type", "absolute")
        if kind != "absolute":
            raise ValueError(f"only absolute position embeddings are supported, got {kind!r}")
        names = {f.name for f in dataclasses.fields(cls)} - {"position_style"}
        style = "padded" if d.get("model_type") in ("roberta", "xlm-roberta", "camembert") else "absolute"
        return cls(position_style=style, **{k: d[k] for k in names if k in d})

    @property
    def max_len(self) -> int:
        """Longest sequence the position table covers."""
        if self.position_style == "padded":
            return self.max_position_embeddings - self.pad_token_id - 1
        return self.max_position_embeddings


def count_bert_params(cfg: BertConfig) -> int:
    """Parameters of a `BertEncoder` for ``cfg`` (no pooler), without building it."""
    h, i = cfg.hidden_size, cfg.intermediate_size
    embed_params = (cfg.vocab_size + cfg.max_position_embeddings + cfg.type_vocab_size) * h + 2 * h
    return embed_params + cfg.num_hidden_layers * _post_norm_layer_params(h, i)


def _post_norm_layer_params(h: int, i: int) -> int:
    return 4 * (h * h + h) + (h * i + i) + (i * h + h) + 2 * 2 * h


def padded_position_ids(input_ids, pad_token_id: int):
    """RoBERTa/MPNet position ids: real tokens count from ``pad+1``, pad tokens get ``pad``."""
    real = (input_ids != pad_token_id).astype(jnp.int32)
    return jnp.cumsum(real, axis=1) * real + pad_token_id


class BertEmbeddings(nnx.Module):
    def __init__(self, cfg: BertConfig, *, param_dtype, rngs: nnx.Rngs):
        h = cfg.hidden_size
        kw = dict(param_dtype=param_dtype, rngs=rngs)
        self.padded_positions = cfg.position_style == "padded"
        self.pad_token_id = cfg.pad_token_id
        self.word = nnx.Embed(cfg.vocab_size, h, **kw)
        self.position = nnx.Embed(cfg.max_position_embeddings, h, **kw)
        self.token_type = nnx.Embed(cfg.type_vocab_size, h, **kw)
        self.norm = nnx.LayerNorm(h, epsilon=cfg.layer_norm_eps, **kw)

    def __call__(self, input_ids, token_type_ids):
        if self.padded_positions:
            positions = padded_position_ids(input_ids, self.pad_token_id)
        else:
            positions = jnp.arange(input_ids.shape[1])[None, :]
        x = self.word(input_ids) + self.position(positions) + self.token_type(token_type_ids)
        return self.norm(x)


class PostNormLayer(nnx.Module):
    """Post-norm transformer block of BERT, RoBERTa and MPNet: attention (plus an optional
    additive bias, MPNet's relative positions), add & norm, FFN, add & norm.

    ``exact_variance`` computes the layer-norm variance as E[(x-mean)^2] (MPNet's port needs it
    to agree to 1e-7); BERT keeps flax's faster default.
    """

    def __init__(self, cfg, *, dtype, param_dtype, rngs: nnx.Rngs, exact_variance: bool = False):
        h, i = cfg.hidden_size, cfg.intermediate_size
        lin = dict(param_dtype=param_dtype, rngs=rngs, **precision.linear_kwargs(dtype))
        norm = dict(epsilon=cfg.layer_norm_eps, param_dtype=param_dtype, rngs=rngs)
        if exact_variance:
            norm["use_fast_variance"] = False
        self.num_heads = cfg.num_attention_heads
        self.act = cfg.hidden_act
        # bf16 compute takes the CPU-friendlier path (q/k/v as one dot, bias gradients as dots, key-major
        # bf16 attention, GELU through erf: benchmarks/RESULTS.md); float32 keeps its forward values
        # exactly, and only its backward goes through `precision.dense` (2026-12-07).
        self.bf16 = jnp.dtype(dtype) == jnp.dtype(jnp.bfloat16)
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
        if self.bf16:
            q, k, v = map(split, precision.dense(x, self.query, self.key, self.value))
            ctx = layers.attend_keys_major(q, k, v, keep, 1 / math.sqrt(d), bias)
            return precision.dense(ctx, self.attn_out)[0]
        # float32: the layers' own forward values; training through `precision.dense`'s backward
        q, k, v = map(split, precision.dense(x, self.query, self.key, self.value))
        scores = jnp.einsum("bqnd,bknd->bnqk", q, k).astype(jnp.float32) / math.sqrt(d)
        if bias is not None:
            scores = scores + bias  # [1, n, q, k], shared by the batch
        # `where`, not an additive mask: a fully padded row then gets uniform
        # weights instead of NaN, and masked keys get exactly zero weight.
        scores = jnp.where(keep, scores, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
        return precision.dense(jnp.einsum("bnqk,bknd->bqnd", probs, v).reshape(b, t, h), self.attn_out)[0]

    def __call__(self, x, keep, bias=None):
        """``x`` float32 ``[B, T, H]``; ``keep`` bool ``[B, 1, 1, T]`` (real keys)."""
        # The residual stream stays float32; only matmul outputs are `dtype`.
        x = self.attn_norm(x + self._attention(x, keep, bias).astype(jnp.float32))
        # float32's GELU has jax.nn.gelu's values; its derivative comes from its own backward (`layers.gelu_erfc`)
        gelu = layers.gelu_erf if self.bf16 else layers.gelu_erfc
        act = gelu if self.act == "gelu" else layers.ACTIVATIONS[self.act]
        y = precision.dense(act(precision.dense(x, self.ffn_in)[0]), self.ffn_out)[0]
        return self.ffn_norm(x + y.astype(jnp.float32))


class BertEncoder(layers.Stack, nnx.Module):
    """BERT/RoBERTa body: ``(input_ids, attention_mask) -> last hidden state [B, T, H]``.

    Attributes are ``embeddings`` and ``layers`` (an ``nnx.List``); ``config``
    is the (static) `BertConfig`.
    """

    bottom_parts = ("embeddings",)

    def __init__(self, cfg: BertConfig, *, dtype=jnp.float32, param_dtype=jnp.float32,
                 rngs: nnx.Rngs):
        layers.activation(cfg.hidden_act)
        self.config = cfg
        self.embeddings = BertEmbeddings(cfg, param_dtype=param_dtype, rngs=rngs)
        self.layers = nnx.List([
            PostNormLayer(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
            for _ in range(cfg.num_hidden_layers)
        ])

    def embed_tokens(self, input_ids, attention_mask, token_type_ids=None):
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        return self.embeddings(input_ids, token_type_ids).astype(jnp.float32)

    def run_blocks(self, x, attention_mask, start=0, stop=None):
        keep = attention_mask[:, None, None, :].astype(bool)
        for _, layer in self.held_blocks(start, stop):
            x = layer(x, keep)
        return x


def classifier(encoder, num_classes: int, *, normalize: bool = False, rngs: nnx.Rngs):
    """BERT, RoBERTa or MPNet + mean pooling + linear head (`heads.PooledClassifier`)."""
    return heads.PooledClassifier(encoder, num_classes, pooling="mean", normalize=normalize, rngs=rngs)


# ---------------------------------------------------------------- loading


def truncated(cfg, num_layers: int | None):
    """``cfg`` keeping only its first ``num_layers`` layers (all when None)."""
    if num_layers is None:
        return cfg
    if not 1 <= num_layers <= cfg.num_hidden_layers:
        raise ValueError(f"num_layers={num_layers} outside 1..{cfg.num_hidden_layers}")
    return dataclasses.replace(cfg, num_hidden_layers=num_layers)


def load_encoder(path: str | Path, cfg, build, names: weights_lib.TorchNames, *, anchor: str,
                 prefixes=(), param_dtype, rename=None, mesh=None):
    """Build ``build(cfg)`` abstractly (no random init), then fill it from the directory's
    safetensors: the loader BERT, RoBERTa and MPNet share.

    ``anchor`` is a tensor name every such checkpoint has, used to find the prefix a task head
    adds (``bert.``, ``roberta.``, ``mpnet.`` ...); ``rename(name, has)`` maps a name the file
    lacks to an older spelling.
    """
    abstract = nnx.eval_shape(lambda: build(cfg))
    with weights_lib.SafetensorsDir(path) as st:
        st.find_prefix(anchor, prefixes)
        read = st.get if rename is None else (lambda n: st.get(rename(n, st.has)))
        return weights_lib.fill(abstract, weights_lib.torch_reader(names, read), param_dtype=param_dtype,
                                mesh=mesh)


def post_norm_names(num_layers: int, attention: dict[str, str]) -> weights_lib.TorchNames:
    """Map each NNX parameter path of a post-norm encoder to (checkpoint tensor name, transpose?).

    BERT's and MPNet's checkpoints name the embeddings and the feed-forward half of each
    `PostNormLayer` alike; ``attention`` gives the rest of a layer: ``query``, ``key``, ``value``,
    ``attn_out`` (linear) and ``attn_norm`` (LayerNorm) -> the name under ``encoder.layer.<i>.``.
    """
    names = weights_lib.TorchNames()
    e = ("embeddings",)
    names.tensor(e + ("word", "embedding"), "embeddings.word_embeddings.weight")
    names.tensor(e + ("position", "embedding"), "embeddings.position_embeddings.weight")
    names.norm(e + ("norm",), "embeddings.LayerNorm")
    for i in range(num_layers):
        p, n = ("layers", i), f"encoder.layer.{i}"
        for part in ("query", "key", "value", "attn_out"):
            names.linear(p + (part,), f"{n}.{attention[part]}")
        names.norm(p + ("attn_norm",), f"{n}.{attention['attn_norm']}")
        names.linear(p + ("ffn_in",), f"{n}.intermediate.dense")
        names.linear(p + ("ffn_out",), f"{n}.output.dense")
        names.norm(p + ("ffn_norm",), f"{n}.output.LayerNorm")
    return names


_ATTENTION_NAMES = {"query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
                    "attn_out": "attention.output.dense", "attn_norm": "attention.output.LayerNorm"}


def _checkpoint_names(cfg: BertConfig) -> weights_lib.TorchNames:
    names = post_norm_names(cfg.num_hidden_layers, _ATTENTION_NAMES)
    names.tensor(("embeddings", "token_type", "embedding"), "embeddings.token_type_embeddings.weight")
    return names


def _old_layer_norm_names(name: str, has) -> str:
    # Some old BERT checkpoints call layer-norm parameters gamma/beta.
    if has(name):
        return name
    return name.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")


def load_bert(path: str | Path, *, num_layers: int | None = None, dtype=jnp.float32,
              param_dtype=jnp.float32, config: BertConfig | None = None, mesh=None) -> BertEncoder:
    """Load a BERT or RoBERTa checkpoint directory into a `BertEncoder`.

    Args:
      path: a directory with ``config.json`` and safetensors weights; tensor names may carry a
        prefix such as ``bert.`` or ``roberta.``.
      num_layers: keep only the first ``num_layers`` transformer layers.
      dtype: compute dtype of the matmuls (``jnp.bfloat16`` on accelerators).
      param_dtype: storage dtype of the parameters.
      config: the parsed config, when the caller already has it.
      mesh: place the parameters straight onto this mesh (see `weights.fill`).
    """
    path = Path(path)
    weights_lib.safetensors_files(path)  # a clear error before parsing anything
    cfg = truncated(config or BertConfig.from_json(path / "config.json"), num_layers)
    build = lambda c: BertEncoder(c, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0))
    return load_encoder(path, cfg, build, _checkpoint_names(cfg), anchor="embeddings.word_embeddings.weight",
                        param_dtype=param_dtype, rename=_old_layer_norm_names, mesh=mesh)


def load_hf(path: str | Path, config: dict, *, dtype=jnp.float32, param_dtype=None,
            num_layers: int | None = None, mesh=None) -> BertEncoder:
    """`w2sjax.models.hf.load`'s entry: a BERT or RoBERTa directory with its parsed config."""
    return load_bert(path, num_layers=num_layers, dtype=dtype, param_dtype=param_dtype or dtype,
                     config=BertConfig.from_dict(config), mesh=mesh)


# ---------------------------------------------------------------- the MiniLM ladder

# all-MiniLM-L6-v2's architecture, so num_params needs no download (a test
# checks it against the real checkpoint).
MINILM_CONFIG = BertConfig(
    vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
    intermediate_size=1536, max_position_embeddings=512, type_vocab_size=2)


@functools.lru_cache(maxsize=8)
def _load_cached(path: str, num_layers: int | None, dtype_name: str):
    # Cached so that many ModelSpecs of one sweep share one copy of the weights.
    enc = load_bert(path, num_layers=num_layers, dtype=jnp.dtype(dtype_name))
    return enc, load_tokenizer(path)


class MeanPooledFeaturizer(embed.BucketedFeaturizer):
    """A frozen post-norm encoder's mean-pooled last hidden state (BERT's and MPNet's featurizers);
    ``normalize`` L2-normalises it, as sentence-transformers does."""

    pooling = "mean"

    def __init__(self, name: str, *, normalize: bool = False, **kw):
        super().__init__(name, **kw)
        self.normalize = normalize

    def _max_positions(self, module) -> int:
        return module.config.max_len


class BertFeaturizer(MeanPooledFeaturizer):
    """Mean-pooled embeddings of ``split["text"]`` from a frozen BERT.

    Args:
      name: a short model name, used in `key` (e.g. ``"minilm-l4"``).
      path: checkpoint directory; ``None`` fetches the MiniLM asset on first use.
      num_layers: keep only the first ``num_layers`` layers.
      max_len: truncation length in tokens (special tokens included).
      normalize: L2-normalise the pooled vectors.
      tokens_per_batch: padded tokens per batch (rows = this / bucket length).
      dtype: compute dtype (``"bfloat16"`` on accelerators).
      progress: show a tqdm progress bar.

    Calling it on a split returns float32 ``[N, hidden]`` in input order.
    """

    asset = "minilm-l6-v2"

    def __init__(self, name: str, *, num_layers: int | None = None, max_len: int = 256,
                 normalize: bool = False, **kw):
        super().__init__(name, max_len=max_len, normalize=normalize, **kw)
        self.num_layers = num_layers

    def load(self):
        """(encoder, tokenizer), loaded once per process."""
        return _load_cached(str(self.checkpoint()), self.num_layers, self.dtype)


def model_spec(name: str, *, max_len: int = 256, normalize: bool = False, tokens_per_batch: int = 8192,
               dtype: str = "float32", path=None, progress: bool = True) -> ModelSpec:
    """``minilm-l<k>``: the first k layers of all-MiniLM-L6-v2, as frozen mean-pooled features
    with a linear head, or finetuned end to end as a mean-pooled `heads.PooledClassifier`."""
    num_layers = int(name.rsplit("-l", 1)[1])
    featurizer = BertFeaturizer(
        name, path=path, num_layers=num_layers, max_len=max_len, normalize=normalize,
        tokens_per_batch=tokens_per_batch, dtype=dtype, progress=progress)

    def finetune(num_classes: int, *, rngs: nnx.Rngs, dtype=jnp.float32, mesh=None):
        # A fresh copy of the weights: finetuning must not touch the frozen
        # encoder the featurizer shares. With a mesh, loaded straight into the fsdp shards.
        encoder = load_bert(featurizer.checkpoint(), num_layers=num_layers, dtype=dtype, mesh=mesh)
        return classifier(encoder, num_classes, normalize=normalize, rngs=rngs)

    cfg = dataclasses.replace(MINILM_CONFIG, num_hidden_layers=num_layers)
    return ModelSpec(name=name, modalities=("text",), num_params=count_bert_params(cfg),
                     featurizer=featurizer, head="linear", finetune=finetune,
                     tokenize=text_tokenizer(featurizer))
