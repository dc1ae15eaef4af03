"""Refining pseudo-labels: what the student is trained on, made from one or several supervisors.

A supervisor's pseudo-labels themselves are its predictions on the student half
(:meth:`w2sjax.experiment.SeedRun.pseudo_labels`); the functions here transform them.

Pure numpy functions of probability arrays ``[N, C]`` (and, for the neighbourhood methods, the
strong model's frozen features ``[N, D]``). Each returns new labels and/or a boolean ``keep``
mask of the examples to train on; nothing here trains a model.

* :func:`hard`, :func:`confidence`, :func:`confident_mask`: soft versus hard labels, and keeping
  only the supervisor's confident examples (Lang, Sontag & Vijayaraghavan, 2024, who show the
  student can still be right on the excluded ones: coverage expansion).
* :func:`selective`: the supervisor's label only where the strong model is unsure, the strong
  model's own label elsewhere (after Lang, Huang & Li, "Selective Weak-to-Strong Generalization").
* :func:`knn_smooth`: average each weak label with those of its nearest neighbours in the strong
  model's feature space (the graph smoothing of the same paper, in its simplest form).
* :func:`disagreement`, :func:`filter_mask`: drop the examples whose weak label disagrees most
  with their strong-feature neighbourhood.
* :func:`combine`, :func:`samme_weight`, :func:`boost_example_weights`: several supervisors,
  averaged or weighted as in AdaBoost/SAMME (the weighting EnsemW2S builds on).
* :func:`refine`: the single entry point the experiment pipeline calls, by name.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "REFINEMENTS",
    "hard",
    "confidence",
    "confident_mask",
    "selective",
    "neighbours",
    "knn_smooth",
    "disagreement",
    "filter_mask",
    "combine",
    "samme_weight",
    "boost_example_weights",
    "refine",
]

# Names accepted by :func:`refine` (and by the config's ``options.labels``).
REFINEMENTS = ("soft", "hard", "confident", "selective", "knn", "filter")


def _probs(p) -> np.ndarray:
    p = np.asarray(p, np.float32)
    if p.ndim != 2:
        raise ValueError(f"expected probabilities [N, C], got shape {p.shape}")
    return p


def hard(probs) -> np.ndarray:
    """One-hot of the argmax: the supervisor's decision without its uncertainty."""
    p = _probs(probs)
    return np.eye(p.shape[1], dtype=np.float32)[p.argmax(axis=1)]


def confidence(probs) -> np.ndarray:
    """The probability of the predicted class, ``max_c p_c`` ``[N]``."""
    return _probs(probs).max(axis=1)


def _top_fraction(scores: np.ndarray, frac: float) -> np.ndarray:
    """Mask of the ``round(frac * N)`` highest scores (ties broken by index, so it is deterministic)."""
    if not 0.0 <= frac <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {frac}")
    n = len(scores)
    k = int(round(frac * n))
    order = np.lexsort((np.arange(n), -np.asarray(scores, np.float64)))
    mask = np.zeros(n, bool)
    mask[order[:k]] = True
    return mask


def _top_fraction_per_class(scores: np.ndarray, classes: np.ndarray, frac: float) -> np.ndarray:
    """:func:`_top_fraction` within each class separately, so the kept set keeps the class mix."""
    mask = np.zeros(len(scores), bool)
    for c in np.unique(classes):
        idx = np.flatnonzero(classes == c)
        mask[idx] = _top_fraction(scores[idx], frac)
    return mask


def confident_mask(probs, keep_frac: float, *, per_class: bool = True) -> np.ndarray:
    """Keep the ``keep_frac`` of examples on which the supervisor is most confident; it abstains
    on the rest.

    ``per_class`` ranks within each predicted class: a supervisor is usually far more confident
    about one class than another (measured on fine_foods: a GloVe head's most confident half was
    99% one class), and a plain top-k would then train the student on one class only.
    """
    p = _probs(probs)
    if per_class:
        return _top_fraction_per_class(confidence(p), p.argmax(1), keep_frac)
    return _top_fraction(confidence(p), keep_frac)


def selective(weak, strong, strong_frac: float) -> tuple[np.ndarray, np.ndarray]:
    """Weak labels where the strong model is unsure, its own hard labels where it is sure.

    ``strong`` is the strong model's probabilities on the same examples; the ``strong_frac`` of
    examples where it is most confident take its own (hard) label. Returns ``(labels, own)``
    with ``own`` the mask of examples that got the strong model's label.
    """
    weak, strong = _probs(weak), _probs(strong)
    own = _top_fraction(confidence(strong), strong_frac)
    return np.where(own[:, None], hard(strong), weak).astype(np.float32), own


def neighbours(features, k: int, *, block: int = 1024) -> np.ndarray:
    """Indices ``[N, k]`` of each example's ``k`` nearest other examples by cosine similarity.

    Computed in row blocks so memory stays ``O(block * N)``.
    """
    x = np.asarray(features, np.float32).reshape(len(features), -1)
    n = len(x)
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, {n - 1}] for {n} examples, got {k}")
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    out = np.empty((n, k), np.int64)
    for start in range(0, n, block):
        sim = x[start : start + block] @ x.T
        rows = np.arange(sim.shape[0])
        sim[rows, start + rows] = -np.inf  # never one's own neighbour
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        # Order the k by similarity (then index), so results do not depend on argpartition's order.
        key = np.take_along_axis(sim, top, axis=1)
        order = np.lexsort((top, -key), axis=1)
        out[start : start + block] = np.take_along_axis(top, order, axis=1)
    return out


def knn_smooth(labels, features, k: int, *, self_weight: float | None = None) -> np.ndarray:
    """``self_weight * own label + (1 - self_weight) * mean of the k neighbours' labels``.

    Neighbours are taken in the strong model's feature space, so a weak label that disagrees with
    what similar examples (to the strong model) were labelled is pulled towards them. The default
    ``self_weight = 1 / (k + 1)`` is a plain average over the example and its neighbours.
    """
    y = _probs(labels)
    nbr = neighbours(features, k)
    self_weight = 1.0 / (k + 1) if self_weight is None else self_weight
    return (self_weight * y + (1.0 - self_weight) * y[nbr].mean(axis=1)).astype(np.float32)


def disagreement(labels, features, k: int) -> np.ndarray:
    """``||label - mean of its k neighbours' labels||^2`` ``[N]``: how much a weak label disagrees
    with its neighbourhood in the strong feature space."""
    y = _probs(labels)
    nbr = neighbours(features, k)
    return np.sum((y - y[nbr].mean(axis=1)) ** 2, axis=1)


def filter_mask(labels, features, k: int, keep_frac: float) -> np.ndarray:
    """Keep the ``keep_frac`` of examples whose weak label agrees best with its neighbourhood,
    ranked within each weak class (as :func:`confident_mask`, to keep the class mix)."""
    y = _probs(labels)
    return _top_fraction_per_class(-disagreement(y, features, k), y.argmax(1), keep_frac)


def combine(probs_list, weights=None) -> np.ndarray:
    """Weighted average of several supervisors' probabilities (uniform when ``weights`` is None).

    Weights must be non-negative with a positive sum; they are normalised here.
    """
    stack = np.stack([_probs(p) for p in probs_list])
    w = np.ones(len(stack)) if weights is None else np.asarray(weights, np.float64)
    if w.shape != (len(stack),) or np.any(w < 0) or not w.sum() > 0:
        raise ValueError(f"weights must be {len(stack)} non-negative numbers with a positive sum, got {w}")
    return np.tensordot(w / w.sum(), stack, axes=1).astype(np.float32)


def samme_weight(error: float, num_classes: int, *, eps: float = 1e-6) -> float:
    """AdaBoost's vote for a classifier with weighted error ``error`` (multi-class SAMME form):
    ``log((1 - err) / err) + log(C - 1)``; zero at chance level, negative below it."""
    error = float(np.clip(error, eps, 1.0 - eps))
    return float(np.log((1.0 - error) / error) + np.log(num_classes - 1))


def boost_example_weights(weights, correct, alpha: float) -> np.ndarray:
    """The next round's example weights: multiply the misclassified ones by ``exp(alpha)``, renormalise
    to mean one (so a weighted loss keeps its scale)."""
    w = np.asarray(weights, np.float64) * np.exp(alpha * ~np.asarray(correct, bool))
    return (w * len(w) / w.sum()).astype(np.float32)


def refine(
    name: str,
    weak,
    *,
    features=None,
    strong=None,
    keep_frac: float = 0.7,
    k: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """Apply the named refinement to weak probabilities; returns ``(labels [N, C], keep [N])``.

    * ``soft``: unchanged; ``hard``: one-hot of the weak argmax;
    * ``confident``: weak labels, keeping the ``keep_frac`` most confident examples;
    * ``selective``: the strong model's own label on its ``1 - keep_frac`` most confident
      examples, weak labels on the rest (needs ``strong``);
    * ``knn``: labels smoothed over ``k`` neighbours in ``features``;
    * ``filter``: weak labels, dropping the ``1 - keep_frac`` that disagree most with their
      neighbourhood in ``features``.
    """
    weak = _probs(weak)
    keep_all = np.ones(len(weak), bool)
    if name == "soft":
        return weak, keep_all
    if name == "hard":
        return hard(weak), keep_all
    if name == "confident":
        return weak, confident_mask(weak, keep_frac)
    if name == "selective":
        if strong is None:
            raise ValueError("refine('selective') needs the strong model's probabilities")
        return selective(weak, strong, 1.0 - keep_frac)[0], keep_all
    if name in ("knn", "filter"):
        if features is None:
            raise ValueError(f"refine({name!r}) needs the strong model's features")
        if name == "knn":
            return knn_smooth(weak, features, k), keep_all
        return weak, filter_mask(weak, features, k, keep_frac)
    raise ValueError(f"unknown label refinement {name!r}; known: {', '.join(REFINEMENTS)}")
