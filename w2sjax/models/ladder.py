"""Frozen text features from the larger backbones of the strong-model ladder.

``mpnet-base`` (all-mpnet-base-v2, 109M, mean-pooled) and ``smollm2-135m``
(SmolLM2-135M-Instruct, 135M, last-real-token hidden state) reuse the
batching of `w2sjax.models.embed`: texts are tokenised once, grouped into
power-of-two length buckets, and each bucket runs through one jitted program
with about ``tokens_per_batch`` padded tokens per batch. Only the backbone
and the pooling differ from `embed.BertFeaturizer`, so that class (and its
cache keys) is left untouched and its planning helpers are shared.

`mpnet.model_spec` and `llama.model_spec` (the registry's plugin hooks) build
their `ModelSpec` from the factories here. Nothing heavy happens until the
first featurizer call: weights load once per process.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from w2sjax.models import embed

__all__ = ["DecoderFeaturizer", "MPNetFeaturizer", "mpnet_spec", "smollm2_spec"]


@functools.lru_cache(maxsize=4)
def _load_mpnet(path: str, dtype_name: str):
    # Cached: the ladder's specs (one per get_model call) share one copy of the weights.
    from w2sjax.models import mpnet

    return mpnet.load_mpnet(path, dtype=jnp.dtype(dtype_name))


@functools.lru_cache(maxsize=4)
def _load_llama(path: str, dtype_name: str):
    from w2sjax.models import llama

    return llama.load_smollm2(path, dtype=jnp.dtype(dtype_name))


@functools.partial(jax.jit, static_argnames=("graphdef", "normalize", "blocks"))
def _mean_features(graphdef, state, input_ids, attention_mask, *, normalize, blocks=1):
    def pooled(ids, mask):
        return nnx.merge(graphdef, state).embed(ids, mask, normalize=normalize)

    return embed.map_row_blocks(pooled, blocks, input_ids, attention_mask)


@functools.partial(jax.jit, static_argnames=("graphdef", "blocks"))
def _last_features(graphdef, state, input_ids, attention_mask, *, blocks=1):
    from w2sjax.models import llama

    def last(ids, mask):
        hidden = nnx.merge(graphdef, state)(ids, mask)
        idx = llama.last_token_index(mask)
        return jnp.take_along_axis(hidden, idx[:, None, None], axis=1)[:, 0].astype(jnp.float32)

    return embed.map_row_blocks(last, blocks, input_ids, attention_mask)


class MPNetFeaturizer(embed.BucketedFeaturizer):
    """Mean-pooled last hidden state of all-mpnet-base-v2: float32 ``[N, 768]``.

    ``normalize`` L2-normalises, as sentence-transformers does; off by
    default, like the MiniLM probes, so all students see raw pooled vectors.
    """

    pooling = "mean"
    asset = "mpnet-base-v2"

    def __init__(self, name: str = "mpnet-base", *, normalize: bool = False, **kw):
        super().__init__(name, **kw)
        self.normalize = normalize

    def _key_parts(self):
        return super()._key_parts() + (["l2"] if self.normalize else [])

    def load(self):
        return _load_mpnet(str(self.checkpoint()), self.dtype)

    def _max_positions(self, module) -> int:
        return module.config.max_len

    def _run(self, graphdef, state, input_ids, mask, blocks=1):
        return _mean_features(graphdef, state, input_ids, mask, normalize=self.normalize, blocks=blocks)


class DecoderFeaturizer(embed.BucketedFeaturizer):
    """Final hidden state of the last real token of SmolLM2-135M: float32 ``[N, 576]``.

    In a causal model only that token has read the whole text. Right padding
    does not change it (real tokens never attend to later positions), so the
    length buckets leave the features as they are for the unpadded text.
    """

    pooling = "last"
    asset = "smollm2-135m"

    def load(self):
        return _load_llama(str(self.checkpoint()), self.dtype)

    def _max_positions(self, module) -> int:
        return module.config.max_position_embeddings

    def _run(self, graphdef, state, input_ids, mask, blocks=1):
        return _last_features(graphdef, state, input_ids, mask, blocks=blocks)


# ---------------------------------------------------------------- specs


def _tokenizer_of(featurizer):
    """``tokenize(split) -> {"input_ids", "attention_mask"}`` with the featurizer's tokenizer and length."""
    def tokenize(split) -> dict:
        ids, mask = featurizer.load()[1].encode(split["text"], featurizer.max_len)
        return {"input_ids": ids, "attention_mask": mask}

    return tokenize


def mpnet_spec(name: str = "mpnet-base", *, max_len: int = 128, normalize: bool = False,
               tokens_per_batch: int = 8192, dtype: str = "float32", path=None,
               progress: bool = True):
    """``mpnet-base``: frozen mean-pooled features + linear head; finetunes as `MPNetClassifier`."""
    from w2sjax.models import mpnet
    from w2sjax.models.registry import ModelSpec

    featurizer = MPNetFeaturizer(name, path=path, max_len=max_len, normalize=normalize,
                                 tokens_per_batch=tokens_per_batch, dtype=dtype, progress=progress)

    def finetune(num_classes: int, *, rngs: nnx.Rngs, dtype=jnp.float32):
        # A fresh copy of the weights: training must not touch the featurizer's frozen encoder.
        # float32 master weights whatever the compute dtype: AdamW updates are lost in bf16.
        encoder = mpnet.load_mpnet_encoder(featurizer.checkpoint(), dtype=dtype, param_dtype=jnp.float32)
        return mpnet.MPNetClassifier(encoder, num_classes, normalize=normalize, rngs=rngs)

    return ModelSpec(name=name, modalities=("text",),
                     num_params=mpnet.count_mpnet_params(mpnet.MPNetConfig()),
                     featurizer=featurizer, head="linear", finetune=finetune,
                     tokenize=_tokenizer_of(featurizer))


def smollm2_spec(name: str = "smollm2-135m", *, max_len: int = 128, tokens_per_batch: int = 8192,
                 dtype: str = "float32", path=None, progress: bool = True):
    """``smollm2-135m``: frozen last-token features + linear head; no finetune.

    Full finetuning of 135M parameters on a CPU is impractically slow, so
    ``finetune`` is ``None`` and ``strong_mode="finetune"`` probes it instead.
    ``tokenize`` is still given: it marks a text backbone, so the runner
    passes ``data.max_len`` through.
    """
    from w2sjax.models import llama
    from w2sjax.models.registry import ModelSpec

    featurizer = DecoderFeaturizer(name, path=path, max_len=max_len,
                                   tokens_per_batch=tokens_per_batch, dtype=dtype, progress=progress)

    return ModelSpec(name=name, modalities=("text",),
                     num_params=llama.count_llama_params(llama.LlamaConfig()),
                     featurizer=featurizer, head="linear", finetune=None,
                     tokenize=_tokenizer_of(featurizer))
