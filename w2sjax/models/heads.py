"""Trainable heads: small NNX models called as ``module(x) -> logits [B, C]``.

They sit on top of frozen features (a linear probe), are weak models
trained from scratch on raw image/tabular inputs, or (`PooledClassifier`)
sit on a whole text backbone that is finetuned with them.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from w2sjax.models import embed

__all__ = ["Linear", "MLP", "CNN", "PooledClassifier", "count_params", "start_at_prior"]


def _flat(x):
    return x.reshape(x.shape[0], -1)


class Linear(nnx.Module):
    """Logistic regression: flatten, then one dense layer."""

    def __init__(self, in_features: int, num_classes: int, *, rngs: nnx.Rngs):
        self.dense = nnx.Linear(in_features, num_classes, rngs=rngs)

    def __call__(self, x):
        return self.dense(_flat(x))


class MLP(nnx.Module):
    """Flatten, then dense + ReLU layers of sizes ``hidden``, then a dense output."""

    def __init__(self, in_features: int, num_classes: int, *,
                 hidden: Sequence[int] = (256,), rngs: nnx.Rngs):
        sizes = [in_features, *hidden]
        self.hidden = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes, sizes[1:])])
        self.out = nnx.Linear(sizes[-1], num_classes, rngs=rngs)

    def __call__(self, x):
        x = _flat(x)
        for layer in self.hidden:
            x = jax.nn.relu(layer(x))
        return self.out(x)


class CNN(nnx.Module):
    """A small conv net for small images (28x28, 8x8, ...), NHWC input.

    Each block is a 3x3 convolution, ReLU and 2x2 average pooling; then a
    dense hidden layer and the output layer. ``in_shape`` is ``(H, W)`` or
    ``(H, W, C)``; inputs may come flattened, they are reshaped to it.
    """

    def __init__(self, in_shape: Sequence[int], num_classes: int, *,
                 channels: Sequence[int] = (32, 64), hidden: int = 128, rngs: nnx.Rngs):
        shape = tuple(in_shape) if len(in_shape) == 3 else (*in_shape, 1)
        if len(shape) != 3:
            raise ValueError(f"CNN needs an image shape (H, W[, C]), got {tuple(in_shape)}")
        self.in_shape = shape
        h, w, c = shape
        convs = []
        for out in channels:
            convs.append(nnx.Conv(c, out, (3, 3), padding="SAME", rngs=rngs))
            c = out
            h, w = max(1, h // 2), max(1, w // 2)
        self.convs = nnx.List(convs)
        self.dense = nnx.Linear(h * w * c, hidden, rngs=rngs)
        self.out = nnx.Linear(hidden, num_classes, rngs=rngs)

    def __call__(self, x):
        x = x.reshape((x.shape[0], *self.in_shape))
        for conv in self.convs:
            x = jax.nn.relu(conv(x))
            if x.shape[1] >= 2 and x.shape[2] >= 2:
                x = nnx.avg_pool(x, (2, 2), strides=(2, 2))
        return self.out(jax.nn.relu(self.dense(_flat(x))))


class PooledClassifier(nnx.Module):
    """Text backbone + pooling + linear head: ``module(inputs) -> logits [B, C]``.

    ``inputs`` is ``{"input_ids": int [B, T], "attention_mask": int [B, T]}`` (and optionally
    ``token_type_ids``), or ``{"hidden": [B, T, D], "attention_mask"}`` for a backbone whose
    bottom blocks were cut off (`topk.cut_bottom`). ``pooling`` is "mean" (encoders: BERT, RoBERTa, MPNet) or "last"
    (decoders: in a causal model only the last real token has seen the whole text).
    ``features(inputs) -> [B, D]`` is the pooled vector the probe of the same backbone sees.
    Submodules are ``encoder`` (the backbone, whatever its architecture) and ``head``, so a
    linear probe freezes the backbone with an optimizer filter on the path ``head``.
    """

    def __init__(self, backbone: nnx.Module, num_classes: int, *, pooling: str = "mean",
                 normalize: bool = False, rngs: nnx.Rngs):
        self.encoder = backbone
        self.pooling = pooling
        self.normalize = normalize
        # A decoder's last-token state is large (norm ~50 for SmolLM2-135M, ~100 for Gemma-3-270M,
        # a few dimensions above 10), so a randomly initialised head starts with logits of std 2-4:
        # confidently wrong (loss 0.9-4.6 against ln 2) and slow to unlearn. Starting at zero, as
        # openai/weak-to-strong's classification head does, predicts uniform probabilities instead.
        init = {"kernel_init": nnx.initializers.zeros_init()} if pooling == "last" else {}
        self.head = nnx.Linear(backbone.config.hidden_size, num_classes, rngs=rngs, **init)

    def features(self, inputs):
        mask = inputs["attention_mask"]
        if "hidden" in inputs:  # a top:K student on its frozen bottom's cached output (models/topk.py)
            hidden = self.encoder.top(inputs["hidden"], mask)
        else:
            extra = (inputs["token_type_ids"],) if inputs.get("token_type_ids") is not None else ()
            hidden = self.encoder(inputs["input_ids"], mask, *extra)
        return embed.pool(hidden, mask, self.pooling, normalize=self.normalize)

    def __call__(self, inputs):
        return self.head(self.features(inputs))


def start_at_prior(classifier: PooledClassifier, labels, weights=None) -> None:
    """Set the bias of ``classifier``'s zero-kernel head to the log of the training labels' class
    shares (weighted by ``weights``), so the untrained model predicts their prior, not 1/C. Far
    from 1/C (multiple choice as one row per option: 0.2 positive for five options), the first
    steps would otherwise pull every logit to the prior, and Adam does that by moving the kernel
    along the sign of the mean last-token state, a direction no label chose, which then ranks the
    rows (docs/benchmark.md, "Below chance on multiple choice")."""
    labels = np.asarray(labels, np.float64)
    w = np.ones(len(labels)) if weights is None else np.asarray(weights, np.float64)
    share = np.clip((w[:, None] * labels).sum(0) / max(w.sum(), 1e-12), 1e-6, None)
    log = np.log(share / share.sum())
    bias = classifier.head.bias
    bias[...] = jnp.asarray(log - log.mean(), bias[...].dtype)


def count_params(module: nnx.Module) -> int:
    """Number of trainable parameters of a module."""
    return sum(math.prod(p.shape) for p in jax.tree.leaves(nnx.state(module, nnx.Param)))
