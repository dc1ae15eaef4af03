"""The verbalizer readout of a decoder classifier: class ``c`` scores as the language model's logit,
at the last real token, of the first token of the class's name (" negative", " positive", ...).

A decoder that reads a prompt ending where the answer goes ("...\\nSentiment:") already puts
probability on the answer words, so the two vocabulary rows of its output projection are a head
that starts from what the model knows instead of from zero. The head is an ordinary
`heads.PooledClassifier` head (an ``nnx.Linear`` on the pooled, final-normed state) whose kernel
starts as those rows (the tied embedding's, or the untied ``lm_head``'s) and whose bias starts at
zero; its logits are then exactly the LM's logits for those tokens, and it trains like any head
(``top:K``, ``lora``, ``all``, ``head``). Because it is copied before `topk.cut_bottom` drops the
embeddings, a ``top:K`` student on cached bottoms uses it too.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np

__all__ = ["VerbalizerError", "token_ids", "output_rows", "attach"]


class VerbalizerError(ValueError):
    """The verbalizer cannot be built: an encoder, or class names whose first tokens collide."""


def token_ids(tokenizer, class_names: Sequence[str]) -> list[int]:
    """The first token of ``" " + name`` for each class (the answer follows a space after the prompt).

    Class names whose first tokens coincide ("very good", "very bad") cannot be told apart by one
    logit each: `VerbalizerError` names them."""
    # Special tokens the tokenizer adds around any text (a BOS) are what the empty text gives.
    empty = tokenizer.token_ids([""], 16)[0].tolist()
    ids = []
    for name in class_names:
        got = tokenizer.token_ids([" " + str(name)], 16)[0].tolist()
        start = next((i for i, (a, b) in enumerate(zip(got, empty)) if a != b), min(len(got), len(empty)))
        if start >= len(got):
            raise VerbalizerError(f"class name {name!r} gives no token")
        ids.append(int(got[start]))
    if len(set(ids)) != len(ids):
        names = ", ".join(f"{n!r}->{i}" for n, i in zip(class_names, ids))
        raise VerbalizerError(f"the class names' first tokens collide ({names}); one logit per class needs distinct tokens")
    return ids


def output_rows(backbone, ids: Sequence[int]) -> np.ndarray:
    """The output projection's rows for token ``ids``, as a head kernel ``[D, C]`` (float32)."""
    head = getattr(backbone, "lm_head", None)
    if head is not None:
        return np.asarray(head.kernel[...], np.float32)[:, list(ids)]
    for name in ("embed", "wte"):  # tied: the token embedding projects back to the vocabulary
        table = getattr(backbone, name, None)
        if table is not None:
            return np.asarray(table.embedding[...], np.float32)[list(ids)].T
    raise VerbalizerError(f"{type(backbone).__name__} has no language-model output (an encoder); "
                          "the verbalizer readout needs a decoder")


def attach(classifier, tokenizer, class_names: Sequence[str]) -> list[int]:
    """Make ``classifier``'s head the verbalizer of ``class_names`` (in place, before any
    `topk.cut_bottom`); returns the token ids. Needs last-token pooling (a decoder)."""
    if classifier.pooling != "last":
        raise VerbalizerError("the verbalizer readout needs a decoder (last-token pooling); "
                              f"this model pools by {classifier.pooling!r}")
    ids = token_ids(tokenizer, class_names)
    kernel = output_rows(classifier.encoder, ids)
    classifier.head.kernel[...] = jnp.asarray(kernel, classifier.head.kernel[...].dtype)
    if classifier.head.bias is not None:
        classifier.head.bias[...] = jnp.zeros_like(classifier.head.bias[...])
    return ids
