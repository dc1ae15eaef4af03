"""Losses for training a student on (weak) soft labels.

Every loss here is a pure, jit-able function of arrays that returns the mean over the batch:

* ``logits``: ``[B, C]`` unnormalised student scores;
* ``labels`` / ``weak_labels``: ``[B, C]`` probability vectors (one-hot ground truth is a special case);
* ``weights``: optional ``[B]`` non-negative example weights. With weights the result is the weighted
  mean ``sum_i w_i l_i / sum_i w_i`` (zero when every weight is zero).

Schedules such as the confidence warm-up are arguments (``step_frac``), never hidden state, so one
compiled train step serves the whole run. This module imports jax alone: downstream codebases can
import it without pulling in data or checkpoint libraries.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = [
    "xent",
    "confidence_alpha",
    "hardened_target",
    "logconf",
    "product",
    "entropy_conf",
    "reverse_xent",
]


def _check_inputs(loss: str, logits, labels, weights=None, labels_name: str = "labels") -> None:
    """Shape checks at trace time (static shapes only; nothing runs on device).

    The common mistake is integer class ids ``[B]`` where probabilities ``[B, C]`` are expected,
    which otherwise fails deep inside jax with "Too many indices".
    """
    logits_shape, labels_shape = jnp.shape(logits), jnp.shape(labels)
    classes = logits_shape[-1] if logits_shape else "C"
    hint = (f"{labels_name} must be probabilities [B, C] (C = {classes} classes); "
            f"from integer class ids [B] use jax.nn.one_hot(ids, {classes})")
    if len(logits_shape) != 2:
        raise ValueError(f"losses.{loss}: logits must be [B, C], got shape {logits_shape}")
    if len(labels_shape) != 2:
        raise ValueError(f"losses.{loss}: {labels_name} of shape {labels_shape}: {hint}")
    if labels_shape != logits_shape:
        raise ValueError(f"losses.{loss}: {labels_name} {labels_shape} do not match logits {logits_shape}: {hint}")
    if weights is not None and jnp.shape(weights) != logits_shape[:1]:
        raise ValueError(f"losses.{loss}: weights must be [B] = {logits_shape[:1]}, got shape {jnp.shape(weights)}")


def _reduce(per_example: jax.Array, weights: jax.Array | None) -> jax.Array:
    """Mean over the batch, or the weighted mean when ``weights`` is given."""
    if weights is None:
        return jnp.mean(per_example)
    weights = jnp.asarray(weights, per_example.dtype)
    total = jnp.sum(weights)
    # An all-zero weight vector means "no example counts": return 0 rather than 0/0 = nan.
    return jnp.where(total > 0, jnp.sum(weights * per_example) / jnp.where(total > 0, total, 1.0), 0.0)


def xent(logits: jax.Array, labels: jax.Array, *, weights: jax.Array | None = None) -> jax.Array:
    """Cross-entropy against soft labels: ``mean_i  -sum_c labels[i,c] * log softmax(logits)[i,c]``.

    Its gradient with respect to ``logits`` is ``(softmax(logits) - labels) / B``.
    """
    _check_inputs("xent", logits, labels, weights)
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    labels = labels.astype(jnp.float32)
    # Where a label is exactly zero the term is zero, even if log_probs is -inf.
    per_example = -jnp.sum(jnp.where(labels > 0, labels * log_probs, 0.0), axis=-1)
    return _reduce(per_example, weights)


def confidence_alpha(step_frac, *, alpha_max: float = 0.5, warmup_frac: float = 0.2) -> jax.Array:
    """Weight of the self-confidence term: ``alpha_max * min(1, step_frac / warmup_frac)``.

    A smooth linear ramp over the first ``warmup_frac`` of training (Burns et al., 2023, §4.3.2,
    describe a warm-up; their reference code jumps in steps, which we deliberately do not copy).
    ``warmup_frac <= 0`` means no warm-up.
    """
    step_frac = jnp.asarray(step_frac, jnp.float32)
    # jnp.where, not an `if`: the settings may be traced values (one program serves every setting).
    ramps = warmup_frac > 0
    ramp = alpha_max * jnp.minimum(1.0, step_frac / jnp.where(ramps, warmup_frac, 1.0))
    return jnp.where(ramps, ramp, jnp.full_like(step_frac, alpha_max))


def hardened_target(probs: jax.Array, weak_labels: jax.Array) -> jax.Array:
    """The student's own predictions made hard, as used by :func:`logconf`.

    * C = 2: threshold the class-0 probability at ``t = quantile(p[:, 0], mean(weak_labels[:, 1]))``
      (linear interpolation, as ``numpy.quantile``), so the student labels the same fraction of the
      batch positive as the supervisor does; the target is ``[p0 >= t, p0 < t]``.
    * C > 2: ``one_hot(argmax p)``.

    The quantile is over the whole (global) batch: under ``jit`` with a sharded batch XLA computes
    it across shards, so the value does not depend on the device count.
    """
    num_classes = probs.shape[-1]
    if num_classes == 2:
        positive_rate = jnp.mean(weak_labels[:, 1].astype(jnp.float32))
        threshold = jnp.quantile(probs[:, 0], positive_rate, method="linear")
        is_class0 = probs[:, 0] >= threshold
        return jnp.stack([is_class0, ~is_class0], axis=-1).astype(jnp.float32)
    return jax.nn.one_hot(jnp.argmax(probs, axis=-1), num_classes, dtype=jnp.float32)


def logconf(
    logits: jax.Array,
    weak_labels: jax.Array,
    *,
    step_frac,
    alpha_max: float = 0.5,
    warmup_frac: float = 0.2,
    weights: jax.Array | None = None,
) -> jax.Array:
    """Auxiliary confidence loss of Burns et al. (2023), "Weak-to-Strong Generalization", eq. (1).

    ``L = (1 - a) * CE(f, f_w) + a * CE(f, hard(f))`` with ``a = confidence_alpha(step_frac, ...)``,
    computed as one cross-entropy against the mixed target
    ``(1 - a) * weak_labels + a * stop_gradient(hardened_target(softmax(logits), weak_labels))``.
    The hardened target carries no gradient.
    """
    _check_inputs("logconf", logits, weak_labels, weights, "weak_labels")
    alpha = confidence_alpha(step_frac, alpha_max=alpha_max, warmup_frac=warmup_frac)
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    hard = jax.lax.stop_gradient(hardened_target(probs, weak_labels))
    target = (1.0 - alpha) * weak_labels.astype(jnp.float32) + alpha * hard
    return xent(logits, target, weights=weights)


def product(
    logits: jax.Array,
    weak_labels: jax.Array,
    *,
    alpha: float = 1.0,
    beta: float = 1.0,
    weights: jax.Array | None = None,
) -> jax.Array:
    """Product-of-experts target: ``target ∝ weak_labels**alpha * softmax(logits)**beta``.

    The target is normalised per example and stop-gradiented, then used in :func:`xent`
    (the "product" loss of EleutherAI's w2s experiments). ``alpha = 0`` ignores the supervisor;
    ``beta = 0`` is plain :func:`xent`.
    """
    _check_inputs("product", logits, weak_labels, weights, "weak_labels")
    weak = weak_labels.astype(jnp.float32)
    log_weak = jnp.where(weak > 0, jnp.log(jnp.where(weak > 0, weak, 1.0)), -jnp.inf)
    weak_term = jnp.where(alpha == 0, 0.0, alpha * log_weak)
    student_term = beta * jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    target = jax.lax.stop_gradient(jax.nn.softmax(weak_term + student_term, axis=-1))
    return xent(logits, target, weights=weights)


def entropy_conf(
    logits: jax.Array,
    weak_labels: jax.Array,
    *,
    step_frac,
    alpha_max: float = 0.5,
    warmup_frac: float = 0.2,
    weights: jax.Array | None = None,
) -> jax.Array:
    """Logconf without hardening: an entropy penalty on the student.

    ``L = (1 - a) * CE(f, f_w) + a * H(softmax(f))``, with the same ``a`` schedule as :func:`logconf`.
    Unlike logconf's hardened target, the entropy term does carry gradient: it pushes the student
    towards confident predictions without fixing which class they favour.
    """
    _check_inputs("entropy_conf", logits, weak_labels, weights, "weak_labels")
    alpha = confidence_alpha(step_frac, alpha_max=alpha_max, warmup_frac=warmup_frac)
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    weak = weak_labels.astype(jnp.float32)
    ce_weak = -jnp.sum(jnp.where(weak > 0, weak * log_probs, 0.0), axis=-1)
    entropy = -jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1)
    return _reduce((1.0 - alpha) * ce_weak + alpha * entropy, weights)


def reverse_xent(
    logits: jax.Array,
    weak_labels: jax.Array,
    *,
    eps: float = 1e-4,
    weights: jax.Array | None = None,
) -> jax.Array:
    """Reverse cross-entropy ``CE(f_w, f) = -sum_c softmax(f)_c * log(weak_c)``.

    The roles of student and supervisor are swapped relative to :func:`xent`; the supervisor's
    probabilities are clipped below at ``eps`` so a zero weak probability costs ``-log(eps)``
    rather than infinity. Reported to be less sensitive to the teacher's uncertainty in
    "On the Emergence of Weak-to-Strong Generalization: A Bias-Variance Perspective" (2025).
    """
    _check_inputs("reverse_xent", logits, weak_labels, weights, "weak_labels")
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    log_weak = jnp.log(jnp.clip(weak_labels.astype(jnp.float32), eps, 1.0))
    return _reduce(-jnp.sum(probs * log_weak, axis=-1), weights)
