"""``train.trainable="top:K"``: train a text classifier's last K blocks, its final norm (decoders)
and its head; everything below stays frozen.

Two ways to run the same student (`heads.PooledClassifier` over any `layers.Stack` backbone):

* **recompute**: the whole model, with `trainable_filter` choosing the top parameters. Each step
  runs the frozen bottom forward again (no backward through it: nothing below is trained).
* **cached**: `cut_bottom` drops the embeddings and the first L-K blocks from the module, which
  then reads ``{"hidden", "attention_mask"}``: the residual stream entering block L-K, computed
  once per example and kept on disk (`w2sjax.models.bottoms`). The bottom never runs while training.

Both train the same parameters from the same start; the cached one sees the bottom's output
rounded to bf16 (`tests/test_topk.py` compares them).
"""

from __future__ import annotations

import re

from flax import nnx

__all__ = ["TopKError", "parse", "blocks_of", "check", "trainable_filter", "cut_bottom"]

_TOP = re.compile(r"top:(\d+)")


class TopKError(ValueError):
    """A K that does not fit the model (``K >= L``)."""


def parse(trainable: str) -> int | None:
    """K of ``"top:K"``, or None for any other mode. ValueError for a malformed ``top:`` value."""
    if not trainable.startswith("top:"):
        return None
    found = _TOP.fullmatch(trainable)
    if not found or int(found.group(1)) < 1:
        raise ValueError(f"expected 'top:K' with K a positive integer, got {trainable!r}")
    return int(found.group(1))


def blocks_of(classifier) -> int:
    """L: the blocks of the whole backbone (those cut off below included)."""
    encoder = classifier.encoder
    return encoder.first_block + len(encoder.layers)


def check(classifier, k: int) -> int:
    """The number of frozen blocks L-K; ValueError unless ``1 <= K < L``."""
    total = blocks_of(classifier)
    if not 1 <= k < total:
        raise TopKError(f"top:{k} needs K below the model's {total} blocks (at least one block "
                         f"stays frozen; 'all' trains every one)")
    return total - k


def trainable_filter(classifier, k: int):
    """The parameters ``top:K`` trains: the head, the last K held blocks and the final norm."""
    encoder = classifier.encoder
    first = len(encoder.layers) - k  # 0 once the bottom was cut off
    if first < 0:
        raise ValueError(f"top:{k}: the model holds only {len(encoder.layers)} blocks")
    norm = encoder.final_norm_name

    def top(path, _value) -> bool:
        if path[0] == "head":
            return True
        if path[0] != "encoder" or len(path) < 2:
            return False
        if path[1] == "layers":
            return int(path[2]) >= first
        return norm is not None and path[1] == norm

    return nnx.All(nnx.Param, top)


def cut_bottom(classifier, k: int) -> int:
    """Drop, in place, what lies below the top K blocks (embeddings, first L-K blocks, LM head):
    the classifier then reads ``{"hidden": [B, T, D], "attention_mask": [B, T]}``. Returns L-K."""
    frozen = check(classifier, k)
    encoder = classifier.encoder
    encoder.layers = nnx.List(list(encoder.layers)[frozen - encoder.first_block:])
    encoder.first_block = frozen
    for name in encoder.bottom_parts:
        if getattr(encoder, name, None) is not None:
            setattr(encoder, name, None)
    return frozen
