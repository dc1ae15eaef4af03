"""Metrics for weak-to-strong experiments: pure functions of arrays (jax and numpy only).

Predictions may be logits, probabilities, or (for :func:`accuracy`) hard labels; the class is
always the argmax over the last axis. Labels are integer class ids ``[B]`` or probability
vectors ``[B, C]`` (their argmax is taken).
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

__all__ = ["accuracy", "auroc", "pgr", "misfit", "agreement", "question_accuracy"]


def _classes(x: ArrayLike) -> jax.Array:
    """Class ids from ``[B]`` ids or ``[B, C]`` scores/probabilities."""
    x = jnp.asarray(x)
    return jnp.argmax(x, axis=-1) if x.ndim == 2 else x.astype(jnp.int32)


def accuracy(logits_or_probs: ArrayLike, labels: ArrayLike) -> jax.Array:
    """Fraction of examples whose predicted class (argmax) equals the label.

    >>> import numpy as np
    >>> from w2sjax import metrics
    >>> logits = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    >>> print(f"{metrics.accuracy(logits, np.array([0, 1, 1])):.4f}")  # the last one is wrong
    0.6667
    """
    return jnp.mean((_classes(logits_or_probs) == _classes(labels)).astype(jnp.float32))


def _positive_scores(scores: ArrayLike) -> jax.Array:
    """A ``[B]`` score that orders examples by belief in class 1.

    For ``[B, 2]`` inputs the difference of the two columns is used: it is monotone in the
    class-1 probability whether the columns are logits or probabilities.
    """
    scores = jnp.asarray(scores, jnp.float32)
    if scores.ndim == 2:
        if scores.shape[-1] != 2:
            raise ValueError(f"auroc: scores must be [B] or [B, 2], got shape {scores.shape}")
        return scores[:, 1] - scores[:, 0]
    return scores


def auroc(scores: ArrayLike, labels: ArrayLike) -> jax.Array:
    """Exact binary AUROC with ties counted as one half (the Mann–Whitney U statistic).

    ``scores``: ``[B]`` class-1 scores, or ``[B, 2]`` logits/probabilities. ``labels``: ``[B]``
    in {0, 1} (or ``[B, 2]`` probabilities). Returns nan when one class is absent.
    Uses mid-ranks from two ``searchsorted`` calls, so it is O(B log B) and jit-able.

    >>> import numpy as np
    >>> from w2sjax import metrics
    >>> scores = np.array([0.1, 0.4, 0.35, 0.8])
    >>> float(metrics.auroc(scores, np.array([0, 0, 1, 1])))  # 3 of the 4 (positive, negative) pairs in order
    0.75
    """
    s = _positive_scores(scores)
    y = _classes(labels)
    sorted_s = jnp.sort(s)
    # Mid-rank (1-based) of each score: elements strictly below + half of the tied block + 1/2.
    below = jnp.searchsorted(sorted_s, s, side="left")
    at_or_below = jnp.searchsorted(sorted_s, s, side="right")
    midrank = (below + at_or_below + 1) / 2.0
    is_pos = (y == 1).astype(jnp.float32)
    n_pos = jnp.sum(is_pos)
    n_neg = s.shape[0] - n_pos
    u = jnp.sum(midrank * is_pos) - n_pos * (n_pos + 1) / 2.0
    return jnp.where((n_pos > 0) & (n_neg > 0), u / jnp.maximum(n_pos * n_neg, 1.0), jnp.nan)


def question_accuracy(scores: ArrayLike, labels: ArrayLike, groups: ArrayLike) -> jax.Array:
    """Accuracy per question of a multiple-choice task stored as one binary row per choice.

    ``scores`` ``[B]`` or ``[B, 2]`` (as for :func:`auroc`), ``labels`` ``[B]`` (1 = a correct
    choice) and ``groups`` ``[B]`` (the question of each row, any integers). Each question picks
    its highest-scoring choice; a tie between k choices counts as the expected accuracy of
    picking one of them at random. Returns the mean over questions.

    >>> import numpy as np
    >>> from w2sjax import metrics
    >>> scores = np.array([0.9, 0.1, 0.3, 0.3])  # question 0: rows 0-1; question 1: rows 2-3, tied
    >>> float(metrics.question_accuracy(scores, np.array([1, 0, 0, 1]), np.array([0, 0, 1, 1])))
    0.75
    """
    _, dense = np.unique(np.asarray(groups), return_inverse=True)
    n = int(dense.max()) + 1 if dense.size else 0
    score = _positive_scores(scores)
    labels = _classes(labels)
    best = jax.ops.segment_max(score, dense, num_segments=n)
    is_best = (score == best[dense]).astype(jnp.float32)
    hits = jax.ops.segment_sum(is_best * (labels == 1), dense, num_segments=n)
    return jnp.mean(hits / jax.ops.segment_sum(is_best, dense, num_segments=n))


def _is_concrete(*xs: ArrayLike) -> bool:
    return not any(isinstance(x, jax.core.Tracer) for x in xs)


def pgr(weak_acc: ArrayLike, w2s_acc: ArrayLike, ceiling_acc: ArrayLike) -> np.ndarray | jax.Array:
    """Performance gap recovered: ``(w2s - weak) / (ceiling - weak)`` (Burns et al., 2023).

    1 means the student trained on weak labels matches the ceiling (the strong model trained on
    ground truth); 0 means it is no better than its supervisor. PGR is undefined when the
    ceiling does not beat the weak model: the result is nan there, and for concrete inputs a
    ``UserWarning`` says so. Works elementwise on arrays (e.g. one value per seed). Concrete
    inputs give a numpy result at their own precision; traced ones a float32 jax array.

    >>> from w2sjax import metrics
    >>> print(f"{metrics.pgr(0.7, 0.8, 0.9):.3f}")  # half of the 0.2 gap recovered
    0.500
    >>> metrics.pgr([0.7, 0.7], [0.8, 0.95], [0.9, 0.9]).round(3)
    array([0.5 , 1.25])
    """
    concrete = _is_concrete(weak_acc, w2s_acc, ceiling_acc)
    if concrete:  # host numbers: numpy at their own precision (float64 for Python floats)
        xp = np
        weak, w2s, ceiling = (_host_float(v) for v in (weak_acc, w2s_acc, ceiling_acc))
    else:
        xp = jnp
        weak, w2s, ceiling = (jnp.asarray(v, jnp.float32) for v in (weak_acc, w2s_acc, ceiling_acc))
    gap = ceiling - weak
    if concrete and bool(np.any(gap <= 0)):
        warnings.warn(
            f"PGR is undefined where ceiling accuracy <= weak accuracy "
            f"(weak={np.asarray(weak).round(4).tolist()}, ceiling={np.asarray(ceiling).round(4).tolist()}); "
            "returning nan there",
            UserWarning,
            stacklevel=2,
        )
    return xp.where(gap > 0, (w2s - weak) / xp.where(gap > 0, gap, 1.0), xp.nan)


def _host_float(v: ArrayLike) -> np.ndarray:
    v = np.asarray(v)
    return v if np.issubdtype(v.dtype, np.floating) else v.astype(np.float64)


def misfit(student_probs: ArrayLike, teacher_probs: ArrayLike, *, kind: str = "squared") -> jax.Array:
    """How far the student's predictions lie from its supervisor's (Charikar, Pabbaraju & Shiragur, 2024).

    * ``kind="squared"``: ``mean_i ||s_i - t_i||^2``, the squared Euclidean distance between the
      probability vectors (for C=2 this is ``2 * mean_i (s_i1 - t_i1)^2``). Their theorem bounds the
      student's gain over the teacher below by this quantity in the regression setting.
    * ``kind="kl"``: ``mean_i KL(t_i || s_i)``, the divergence the student minimises when trained
      with cross-entropy on the teacher's soft labels.

    >>> import numpy as np
    >>> from w2sjax import metrics
    >>> student = np.array([[0.9, 0.1], [0.4, 0.6]])
    >>> teacher = np.array([[0.7, 0.3], [0.4, 0.6]])
    >>> print(f"{metrics.misfit(student, teacher):.4f}")  # (0.2**2 + 0.2**2) / 2 rows
    0.0400
    >>> print(f"{metrics.misfit(student, teacher, kind='kl'):.4f}")
    0.0768
    """
    s = jnp.asarray(student_probs, jnp.float32)
    t = jnp.asarray(teacher_probs, jnp.float32)
    if kind == "squared":
        return jnp.mean(jnp.sum((s - t) ** 2, axis=-1))
    if kind == "kl":
        tiny = jnp.finfo(jnp.float32).tiny
        log_ratio = jnp.log(jnp.maximum(t, tiny)) - jnp.log(jnp.maximum(s, tiny))
        return jnp.mean(jnp.sum(jnp.where(t > 0, t * log_ratio, 0.0), axis=-1))
    raise ValueError(f"misfit: kind must be 'squared' or 'kl', got {kind!r}")


def agreement(student: ArrayLike, teacher: ArrayLike, labels: ArrayLike) -> dict[str, jax.Array]:
    """Student–supervisor agreement, the "weak imitation" measures of Burns et al. (2023, §5.1).

    Returns:
      * ``agreement``: fraction of examples where student and teacher predict the same class;
      * ``agreement_on_teacher_errors``: the same, restricted to examples the teacher gets wrong
        (high values mean the student imitates the supervisor's mistakes);
      * ``corrected_teacher_errors``: fraction of the teacher's mistakes the student gets right
        (pseudolabel correction, Lang, Sontag & Vijayaraghavan, 2024).
    The last two are nan when the teacher makes no mistakes.

    >>> import numpy as np
    >>> from w2sjax import metrics
    >>> out = metrics.agreement(np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0]), np.array([0, 0, 1, 0]))
    >>> {k: float(v) for k, v in out.items()}  # the teacher errs on rows 1 and 2; the student copies one
    {'agreement': 0.75, 'agreement_on_teacher_errors': 0.5, 'corrected_teacher_errors': 0.5}
    """
    s, t, y = _classes(student), _classes(teacher), _classes(labels)
    agree = (s == t).astype(jnp.float32)
    teacher_wrong = (t != y).astype(jnp.float32)
    n_wrong = jnp.sum(teacher_wrong)
    safe = jnp.maximum(n_wrong, 1.0)
    on_errors = jnp.where(n_wrong > 0, jnp.sum(agree * teacher_wrong) / safe, jnp.nan)
    corrected = jnp.where(n_wrong > 0, jnp.sum((s == y) * teacher_wrong) / safe, jnp.nan)
    return {
        "agreement": jnp.mean(agree),
        "agreement_on_teacher_errors": on_errors,
        "corrected_teacher_errors": corrected,
    }
