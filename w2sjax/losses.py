"""Losses for training a student on (weak) soft labels, and the registry that names them.

Every loss here is a pure, jit-able function of arrays:

* ``logits``: ``[B, C]`` unnormalised student scores;
* ``labels`` / ``weak_labels``: ``[B, C]`` probability vectors (one-hot ground truth is a special case);
* ``weights``: optional ``[B]`` non-negative example weights;
* ``where``: optional ``[B]`` boolean mask. Rows where it is false count for nothing, not even in
  logconf's quantile: ``loss(x, where=m)`` equals ``loss(x[m])`` bit for bit, so a batch padded
  to a fixed shape trains exactly like the unpadded one;
* ``reduction``: ``"mean"`` (the default) returns the weighted mean ``sum_i w_i l_i / sum_i w_i``
  over the rows ``where`` keeps (zero when no weight is left); ``"none"`` returns the ``[B]``
  values ``w_i l_i``, zero on masked rows.

Inputs may be any dtype (bfloat16 included); the arithmetic is float32. Schedules such as the
confidence warm-up are arguments (``step_frac``), never hidden state, so one compiled train
step serves the whole run.

**The registry.** Each loss is declared once, by :func:`register` above its function: its name,
and the hyper-parameters an experiment can set (``train.loss.<field>``, default taken from the
function's signature). ``w2sjax.config`` (``LOSS_NAMES``, ``LossConfig``), ``w2sjax.train``
(the compiled step) and ``w2sjax.runner.stage_keys`` (which settings enter a stage's fingerprint) all read
:data:`LOSSES`, so adding a loss is one decorated function here, plus its test.

This module imports jax alone, and only when a loss first runs: ``w2sjax.config`` reads the
registry to check an experiment before JAX starts, so a bad ``--set`` fails in a fraction of a
second. Downstream codebases can import it without data or checkpoint libraries.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping

if TYPE_CHECKING:
    from jax.typing import ArrayLike

__all__ = [
    "LOSSES",
    "Loss",
    "Param",
    "register",
    "hyper_parameters",
    "xent",
    "confidence_alpha",
    "hardened_target",
    "balanced_hardened_target",
    "logconf",
    "logconf_balanced",
    "product",
    "entropy_conf",
    "reverse_xent",
]

Reduction = Literal["mean", "none"]


class _ImportedOnFirstUse:
    """Stands for a module, imported the first time one of its attributes is read."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)

    def __repr__(self) -> str:
        return f"<{self._name}, imported on first use>"


jax = _ImportedOnFirstUse("jax")
jnp = _ImportedOnFirstUse("jax.numpy")


# ---- the registry ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Param:
    """A hyper-parameter of a loss that experiments set as ``train.loss.<field>``.

    ``field`` names it in ``LossConfig``; losses that take the same setting share the field (and
    its default). ``keyword`` is the loss function's argument, when it differs from ``field``.
    """

    field: str
    doc: str  # one line for docs/configuration.md
    keyword: str = ""

    @property
    def argument(self) -> str:
        return self.keyword or self.field


@dataclasses.dataclass(frozen=True)
class Loss:
    """A registered loss: its name (as ``losses=...`` takes it), function and hyper-parameters."""

    name: str
    fn: Callable[..., Any]
    params: tuple[Param, ...] = ()

    @property
    def scheduled(self) -> bool:
        """Whether the loss reads ``step_frac``, the fraction of training done."""
        return "step_frac" in inspect.signature(self.fn).parameters

    def defaults(self) -> dict[str, Any]:
        """``{field: default}``, the defaults read from the function's signature."""
        signature = inspect.signature(self.fn).parameters
        return {p.field: signature[p.argument].default for p in self.params}

    def __call__(self, logits: ArrayLike, labels: ArrayLike, *, settings: Mapping[str, Any] | None = None,
                 step_frac: ArrayLike = 0.0, weights: ArrayLike | None = None, where: ArrayLike | None = None,
                 reduction: Reduction = "mean") -> jax.Array:
        """The loss, its hyper-parameters read from ``settings`` by field (a ``LossConfig`` as a
        dict, or traced values); a field missing there takes the function's default."""
        settings = settings or {}
        kwargs = {p.argument: settings[p.field] for p in self.params if p.field in settings}
        if self.scheduled:
            kwargs["step_frac"] = step_frac
        return self.fn(logits, labels, weights=weights, where=where, reduction=reduction, **kwargs)


LOSSES: dict[str, Loss] = {}  # name -> Loss, in declaration order (the order of config.LOSS_NAMES)


def register(*params: Param, name: str | None = None) -> Callable:
    """Declare the decorated function a loss, named ``name`` (default: the function's name),
    with the hyper-parameters ``params``.

    The function takes ``(logits, labels, *, <params>, [step_frac,] weights, where, reduction)``;
    each parameter's default is the configuration's default. Mistakes fail at import.

    >>> from w2sjax import losses
    >>> [(p.field, p.argument) for p in losses.LOSSES["product"].params]
    [('product_alpha', 'alpha'), ('product_beta', 'beta')]
    >>> losses.LOSSES["logconf"].scheduled, losses.LOSSES["xent"].scheduled
    (True, False)
    """

    def declare(fn: Callable) -> Callable:
        loss = Loss(name or fn.__name__, fn, tuple(params))
        signature = inspect.signature(fn).parameters
        for argument in ("weights", "where", "reduction", *(p.argument for p in params)):
            if argument not in signature or signature[argument].default is inspect.Parameter.empty:
                raise TypeError(f"loss {loss.name}: {fn.__name__} needs a keyword argument {argument!r} with a default")
        if loss.name in LOSSES:
            raise ValueError(f"loss {loss.name} is registered twice")
        for other in LOSSES.values():
            shared = set(loss.defaults()) & set(other.defaults())
            for field in shared:
                if loss.defaults()[field] != other.defaults()[field]:
                    raise ValueError(f"loss {loss.name}: the default of train.loss.{field} differs from {other.name}'s")
        LOSSES[loss.name] = loss
        return fn

    return declare


def hyper_parameters() -> dict[str, tuple[Any, str]]:
    """``{field: (default, description)}`` over every registered loss, in declaration order:
    the fields of ``w2sjax.config.LossConfig``. A description names the losses that read it.

    >>> from w2sjax import losses
    >>> losses.hyper_parameters()["alpha_max"]
    (0.5, 'logconf / logconf_balanced / entropy_conf: final weight of the confidence term')
    """
    fields: dict[str, tuple[Any, str]] = {}
    for loss in LOSSES.values():
        for param in loss.params:
            if param.field not in fields:
                users = [other.name for other in LOSSES.values() if param.field in (p.field for p in other.params)]
                fields[param.field] = (loss.defaults()[param.field], f"{' / '.join(users)}: {param.doc}")
    return fields


# ---- shared helpers ---------------------------------------------------------------------------

def _prepare(loss: str, logits, labels, weights, where, labels_name: str = "labels"):
    """Shape checks at trace time (static shapes only; nothing runs on device), then float32
    ``logits, labels`` and the boolean ``where`` (or None).

    The common mistake is integer class ids ``[B]`` where probabilities ``[B, C]`` are expected,
    which otherwise fails deep inside jax with "Too many indices". Masked rows are zeroed, so a
    padded row holding garbage (nan, inf) can reach neither the value nor the gradient.
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
    for arg, value in (("weights", weights), ("where", where)):
        if value is not None and jnp.shape(value) != logits_shape[:1]:
            raise ValueError(f"losses.{loss}: {arg} must be [B] = {logits_shape[:1]}, got shape {jnp.shape(value)}")
    logits = jnp.asarray(logits).astype(jnp.float32)
    labels = jnp.asarray(labels).astype(jnp.float32)
    if where is not None:
        where = jnp.asarray(where, bool)
        logits = jnp.where(where[:, None], logits, 0.0)
        labels = jnp.where(where[:, None], labels, 0.0)
    return logits, labels, where


def _sum(x: jax.Array, where: jax.Array | None = None) -> jax.Array:
    """Sum of a ``[B]`` vector over the rows ``where`` keeps, the same bits as summing only those rows.

    XLA's reduction may group a vector's elements differently for different lengths, so padding
    would change the last bits. Here the kept rows move to the front (in order), the rest become
    zeros, and the sum is a fixed pairwise tree over the next power of two: trailing zeros leave
    that tree's result unchanged whatever the length.
    """
    if where is not None:
        x = jnp.where(where, x, 0.0)[jnp.argsort(~where, stable=True)]
    size = 1 << max(0, (x.shape[0] - 1).bit_length())
    x = jnp.pad(x, (0, size - x.shape[0]))
    while x.shape[0] > 1:
        half = x.shape[0] // 2
        x = x[:half] + x[half:]
    return x[0]


def _mean(x: jax.Array, where: jax.Array | None = None) -> jax.Array:
    """Mean of a ``[B]`` vector over the rows ``where`` keeps (see :func:`_sum`)."""
    count = jnp.float32(x.shape[0]) if where is None else _sum(jnp.ones_like(x), where)
    return _sum(x, where) * (1.0 / count)


def _reduce(per_example: jax.Array, weights, where, reduction: str) -> jax.Array:
    """``per_example`` weighted and masked, then reduced as ``reduction`` says."""
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    w = jnp.ones_like(per_example) if weights is None else jnp.asarray(weights).astype(per_example.dtype)
    if where is not None:
        w = jnp.where(where, w, 0.0)
        per_example = jnp.where(where, per_example, 0.0)
    weighted = w * per_example
    if reduction == "none":
        return weighted
    total = _sum(w, where)
    # No weight left means "no example counts": 0 rather than 0/0 = nan. A reciprocal, not a
    # division, so a constant total (unpadded) and a computed one (padded) round alike.
    return jnp.where(total > 0, _sum(weighted, where) * (1.0 / jnp.where(total > 0, total, 1.0)), 0.0)


def _cross_entropy(log_probs: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example ``-sum_c labels * log_probs``; a zero label contributes zero even against -inf."""
    return -jnp.sum(jnp.where(labels > 0, labels * log_probs, 0.0), axis=-1)


# ---- the losses -------------------------------------------------------------------------------

@register()
def xent(logits: ArrayLike, labels: ArrayLike, *, weights: ArrayLike | None = None, where: ArrayLike | None = None,
         reduction: Reduction = "mean") -> jax.Array:
    """Cross-entropy against soft labels: ``mean_i  -sum_c labels[i,c] * log softmax(logits)[i,c]``.

    Its gradient with respect to ``logits`` is ``(softmax(logits) - labels) / B``.

    >>> import jax.numpy as jnp
    >>> from w2sjax import losses
    >>> logits = jnp.array([[2.0, 0.0], [0.0, 0.0]])
    >>> labels = jnp.array([[1.0, 0.0], [0.5, 0.5]])
    >>> print(f"{losses.xent(logits, labels):.4f}")  # (log(1 + e^-2) + log 2) / 2
    0.4100
    >>> losses.xent(logits, labels, reduction="none").round(4)
    Array([0.1269, 0.6931], dtype=float32)
    >>> print(f"{losses.xent(logits, labels, where=jnp.array([True, False])):.4f}")
    0.1269
    """
    logits, labels, where = _prepare("xent", logits, labels, weights, where)
    per_example = _cross_entropy(jax.nn.log_softmax(logits, axis=-1), labels)
    return _reduce(per_example, weights, where, reduction)


def confidence_alpha(step_frac: ArrayLike, *, alpha_max: ArrayLike = 0.5, warmup_frac: ArrayLike = 0.2) -> jax.Array:
    """Weight of the self-confidence term: ``alpha_max * min(1, step_frac / warmup_frac)``.

    A smooth linear ramp over the first ``warmup_frac`` of training (Burns et al., 2023, §4.3.2,
    describe a warm-up; their reference code jumps in steps, which we deliberately do not copy).
    ``warmup_frac <= 0`` means no warm-up.

    >>> from w2sjax import losses
    >>> [float(losses.confidence_alpha(f)) for f in (0.0, 0.1, 0.2, 0.9)]
    [0.0, 0.25, 0.5, 0.5]
    >>> float(losses.confidence_alpha(0.0, warmup_frac=0.0))
    0.5
    """
    step_frac = jnp.asarray(step_frac, jnp.float32)
    # jnp.where, not an `if`: the settings may be traced values (one program serves every setting).
    ramps = warmup_frac > 0
    ramp = alpha_max * jnp.minimum(1.0, step_frac / jnp.where(ramps, warmup_frac, 1.0))
    return jnp.where(ramps, ramp, jnp.full_like(step_frac, alpha_max))


def _quantile(x: jax.Array, q: jax.Array, where: jax.Array | None) -> jax.Array:
    """``numpy.quantile(x[where], q)`` (linear interpolation) of a ``[B]`` vector, with the
    arithmetic of ``jnp.quantile``: masked rows sort last (as +inf) and the kept rows are counted."""
    n = jnp.float32(x.shape[0]) if where is None else _sum(jnp.ones_like(x), where)
    ordered = jnp.sort(x if where is None else jnp.where(where, x, jnp.inf))
    position = q * (n - 1)
    low, high = jnp.floor(position), jnp.ceil(position)
    high_weight = position - low
    low_weight = 1 - high_weight
    low = jnp.clip(low, 0, n - 1).astype(jnp.int32)
    high = jnp.clip(high, 0, n - 1).astype(jnp.int32)
    return ordered[low] * low_weight + ordered[high] * high_weight


def hardened_target(probs: ArrayLike, weak_labels: ArrayLike, *, where: ArrayLike | None = None) -> jax.Array:
    """The student's own predictions made hard, as used by :func:`logconf`.

    * C = 2: threshold the class-0 probability at ``t = quantile(p[:, 0], mean(weak_labels[:, 1]))``
      (linear interpolation, as ``numpy.quantile``), so the student labels the same fraction of the
      batch positive as the supervisor does; the target is ``[p0 >= t, p0 < t]``.
    * C > 2: ``one_hot(argmax p)``.

    The quantile and the mean are over the rows ``where`` keeps, of the whole (global) batch:
    under ``jit`` with a sharded batch XLA computes them across shards, so the value does not
    depend on the device count.

    >>> import jax.numpy as jnp
    >>> from w2sjax import losses
    >>> probs = jnp.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.3, 0.7]])
    >>> weak = jnp.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0], [0.5, 0.5]])  # half positive
    >>> losses.hardened_target(probs, weak)  # t = 0.45, the median of p0
    Array([[1., 0.],
           [1., 0.],
           [0., 1.],
           [0., 1.]], dtype=float32)
    """
    probs = jnp.asarray(probs)
    num_classes = probs.shape[-1]
    if num_classes == 2:
        where = None if where is None else jnp.asarray(where, bool)
        positive_rate = _mean(jnp.asarray(weak_labels)[:, 1].astype(jnp.float32), where)
        threshold = _quantile(probs[:, 0].astype(jnp.float32), positive_rate, where)
        is_class0 = probs[:, 0] >= threshold
        return jnp.stack([is_class0, ~is_class0], axis=-1).astype(jnp.float32)
    return jax.nn.one_hot(jnp.argmax(probs, axis=-1), num_classes, dtype=jnp.float32)


def _class_quotas(weak_labels: jax.Array, where: jax.Array | None) -> jax.Array:
    """``[C]`` int32 row counts, one per class, summing to the number of kept rows: the weak labels'
    class shares of the kept rows (their column sums, rescaled to that number) rounded by largest
    remainder, ties to the lower class index. Hard weak labels give their exact class counts."""
    num_rows = weak_labels.shape[0]
    n = jnp.float32(num_rows) if where is None else _sum(jnp.ones((num_rows,), jnp.float32), where)
    totals = jax.vmap(lambda column: _sum(column, where), in_axes=1)(weak_labels.astype(jnp.float32))
    grand = _sum(totals)
    shares = totals * jnp.where(grand > 0, n / jnp.where(grand > 0, grand, 1.0), 0.0)
    floors = jnp.floor(shares)
    short = (n - jnp.sum(floors)).astype(jnp.int32)  # 0 <= short < C: rows the floors leave out
    order = jnp.argsort(-(shares - floors), stable=True)
    bump = jnp.zeros(shares.shape, jnp.int32).at[order].set(
        (jnp.arange(shares.shape[0]) < short).astype(jnp.int32))
    return floors.astype(jnp.int32) + bump


def balanced_hardened_target(probs: ArrayLike, weak_labels: ArrayLike, *, where: ArrayLike | None = None) -> jax.Array:
    """The student's predictions made hard under class quotas: the hardened batch holds each class
    as often as the weak labels do.

    The quotas are the weak labels' class shares of the kept rows, as whole rows (largest
    remainder; hard weak labels give their own counts). The assignment is the greedy one: take the
    ``(row, class)`` pairs by decreasing ``probs`` (ties: row-major order) and give a row the class
    of its first pair whose class still has room. So a student that leans towards one class for
    every row gets the quota of that class (its most confident rows), and the rest go to the
    other classes by their own ranking, where ``one_hot(argmax p)`` would put the whole batch in one
    class. Rows ``where`` masks get no class (a zero row) and count in no quota.

    Computed in ``C`` vectorised rounds (each round gives every free row its best open class, up to
    the moment the first class fills), the same result as the pair-by-pair greedy pass. For C = 2
    this is the top-``k`` rows by ``p[:, 1]`` with ``k`` the class-1 quota: the rows that
    :func:`hardened_target`'s quantile rule picks whenever its count, ``ceil(q (n - 1))`` for the
    class-1 share ``q`` (linear interpolation), equals this rounding, e.g. for hard weak labels.

    >>> import jax.numpy as jnp
    >>> from w2sjax import losses
    >>> probs = jnp.array([[0.5, 0.3, 0.2], [0.6, 0.3, 0.1], [0.4, 0.4, 0.2], [0.5, 0.2, 0.3]])
    >>> weak = jnp.eye(3)[jnp.array([0, 1, 2, 0])]  # quotas 2, 1, 1
    >>> losses.balanced_hardened_target(probs, weak)  # argmax would say class 0 four times
    Array([[1., 0., 0.],
           [1., 0., 0.],
           [0., 1., 0.],
           [0., 0., 1.]], dtype=float32)
    """
    probs = jnp.asarray(probs).astype(jnp.float32)
    num_rows, num_classes = probs.shape
    keep = jnp.ones((num_rows,), bool) if where is None else jnp.asarray(where, bool)
    weak = jnp.where(keep[:, None], jnp.asarray(weak_labels).astype(jnp.float32), 0.0)
    quotas = _class_quotas(weak, None if where is None else keep)
    # Each pair's place in the greedy order, best first (masked rows last); only comparisons of
    # these ranks decide, so padding rows anywhere leaves the kept rows' classes alone.
    never = num_rows * num_classes
    order = jnp.argsort(-jnp.where(keep[:, None], probs, -jnp.inf).reshape(-1), stable=True)
    rank = jnp.zeros((never,), jnp.int32).at[order].set(jnp.arange(never, dtype=jnp.int32)).reshape(probs.shape)
    classes = jnp.arange(num_classes)

    def one_round(_, carry):
        assigned, room = carry
        free = keep & (assigned < 0)
        ranks = jnp.where(free[:, None] & (room > 0)[None, :], rank, never)
        best, first = jnp.argmin(ranks, axis=1), jnp.min(ranks, axis=1)  # each free row's best open class
        wanting = jnp.where((best[None, :] == classes[:, None]) & (first < never)[None, :], first[None, :], never)
        # the rank at which each class would take its last row; a class with more room than
        # rows wanting it does not fill this round
        full_at = jnp.take_along_axis(jnp.sort(wanting, axis=1), jnp.clip(room - 1, 0, num_rows - 1)[:, None], 1)[:, 0]
        full_at = jnp.where((room > 0) & (room <= num_rows), full_at, never)
        take = (first < never) & (first <= jnp.min(full_at))
        taken = jnp.sum((best[:, None] == classes[None, :]) & take[:, None], axis=0, dtype=jnp.int32)
        return jnp.where(take, best, assigned), room - taken

    start = (jnp.full((num_rows,), -1, jnp.int32), quotas)
    assigned, _ = jax.lax.fori_loop(0, num_classes, one_round, start)
    return jax.nn.one_hot(assigned, num_classes, dtype=jnp.float32)  # -1 (masked) gives a zero row


_CONFIDENCE = (
    Param("alpha_max", "final weight of the confidence term"),
    Param("conf_warmup_frac", "fraction of training over which alpha ramps up", keyword="warmup_frac"),
)


@register(*_CONFIDENCE)
def logconf(
    logits: ArrayLike,
    weak_labels: ArrayLike,
    *,
    step_frac: ArrayLike,
    alpha_max: ArrayLike = 0.5,
    warmup_frac: ArrayLike = 0.2,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    reduction: Reduction = "mean",
) -> jax.Array:
    """Auxiliary confidence loss of Burns et al. (2023), "Weak-to-Strong Generalization", eq. (1).

    ``L = (1 - a) * CE(f, f_w) + a * CE(f, hard(f))`` with ``a = confidence_alpha(step_frac, ...)``,
    computed as one cross-entropy against the mixed target
    ``(1 - a) * weak_labels + a * stop_gradient(hardened_target(softmax(logits), weak_labels))``.
    The hardened target carries no gradient; rows ``where`` masks leave its quantile alone.

    >>> import jax.numpy as jnp
    >>> from w2sjax import losses
    >>> logits = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    >>> weak = jnp.array([[0.5, 0.5], [0.5, 0.5]])
    >>> print(f"{losses.logconf(logits, weak, step_frac=0.0):.4f}")  # alpha 0: plain xent
    0.8133
    >>> print(f"{losses.logconf(logits, weak, step_frac=1.0):.4f}")  # alpha 0.5: half-way to hard
    0.5633
    """
    logits, weak_labels, where = _prepare("logconf", logits, weak_labels, weights, where, "weak_labels")
    return _confidence_xent(hardened_target, logits, weak_labels, step_frac, alpha_max, warmup_frac,
                            weights, where, reduction)


def _confidence_xent(harden, logits, weak_labels, step_frac, alpha_max, warmup_frac, weights, where, reduction):
    """Cross-entropy against ``(1 - a) * weak_labels + a * stop_gradient(harden(softmax(logits)))``."""
    alpha = confidence_alpha(step_frac, alpha_max=alpha_max, warmup_frac=warmup_frac)
    probs = jax.nn.softmax(logits, axis=-1)
    hard = jax.lax.stop_gradient(harden(probs, weak_labels, where=where))
    target = (1.0 - alpha) * weak_labels + alpha * hard
    return xent(logits, target, weights=weights, where=where, reduction=reduction)


@register(*_CONFIDENCE)
def logconf_balanced(
    logits: ArrayLike,
    weak_labels: ArrayLike,
    *,
    step_frac: ArrayLike,
    alpha_max: ArrayLike = 0.5,
    warmup_frac: ArrayLike = 0.2,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    reduction: Reduction = "mean",
) -> jax.Array:
    """:func:`logconf` whose hardened target keeps the weak labels' class proportions for any C.

    For C = 2 it is logconf, bit for bit (the quantile rule already keeps the proportions). For
    C > 2 the target is :func:`balanced_hardened_target` instead of ``one_hot(argmax p)``: against
    nearly flat soft labels, a student leaning towards one class hardens every row to that class
    and the confidence term then pulls it further there; the quotas stop that.

    >>> import jax.numpy as jnp
    >>> from w2sjax import losses
    >>> logits = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    >>> weak = jnp.array([[0.5, 0.5], [0.5, 0.5]])
    >>> bool(losses.logconf_balanced(logits, weak, step_frac=1.0) == losses.logconf(logits, weak, step_frac=1.0))
    True
    >>> logits = jnp.array([[2.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.5, 0.0]])  # leans to class 0
    >>> weak = jnp.full((3, 3), 1 / 3)
    >>> print(f"{losses.logconf_balanced(logits, weak, step_frac=1.0):.4f}")  # one row per class
    1.1571
    """
    logits, weak_labels, where = _prepare("logconf_balanced", logits, weak_labels, weights, where, "weak_labels")
    harden = hardened_target if logits.shape[-1] == 2 else balanced_hardened_target
    return _confidence_xent(harden, logits, weak_labels, step_frac, alpha_max, warmup_frac, weights, where, reduction)


@register(Param("product_alpha", "exponent on the weak labels", keyword="alpha"),
          Param("product_beta", "exponent on the student's probabilities", keyword="beta"))
def product(
    logits: ArrayLike,
    weak_labels: ArrayLike,
    *,
    alpha: ArrayLike = 1.0,
    beta: ArrayLike = 1.0,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    reduction: Reduction = "mean",
) -> jax.Array:
    """Product-of-experts target: ``target ∝ weak_labels**alpha * softmax(logits)**beta``.

    The target is normalised per example and stop-gradiented, then used in :func:`xent`
    (the "product" loss of EleutherAI's w2s experiments). ``alpha = 0`` ignores the supervisor;
    ``beta = 0`` is plain :func:`xent`.

    >>> import jax.numpy as jnp
    >>> from w2sjax import losses
    >>> logits = jnp.log(jnp.array([[0.5, 0.5], [0.8, 0.2]]))
    >>> weak = jnp.array([[0.8, 0.2], [0.5, 0.5]])
    >>> print(f"{losses.product(logits, weak):.4f}")  # the target is [0.8, 0.2] in both rows
    0.5968
    """
    logits, weak, where = _prepare("product", logits, weak_labels, weights, where, "weak_labels")
    log_weak = jnp.where(weak > 0, jnp.log(jnp.where(weak > 0, weak, 1.0)), -jnp.inf)
    weak_term = jnp.where(alpha == 0, 0.0, alpha * log_weak)
    student_term = beta * jax.nn.log_softmax(logits, axis=-1)
    target = jax.lax.stop_gradient(jax.nn.softmax(weak_term + student_term, axis=-1))
    return xent(logits, target, weights=weights, where=where, reduction=reduction)


@register(*_CONFIDENCE)
def entropy_conf(
    logits: ArrayLike,
    weak_labels: ArrayLike,
    *,
    step_frac: ArrayLike,
    alpha_max: ArrayLike = 0.5,
    warmup_frac: ArrayLike = 0.2,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    reduction: Reduction = "mean",
) -> jax.Array:
    """Logconf without hardening: an entropy penalty on the student.

    ``L = (1 - a) * CE(f, f_w) + a * H(softmax(f))``, with the same ``a`` schedule as :func:`logconf`.
    Unlike logconf's hardened target, the entropy term does carry gradient: it pushes the student
    towards confident predictions without fixing which class they favour.

    >>> import jax.numpy as jnp
    >>> from w2sjax import losses
    >>> logits = jnp.zeros((1, 2))
    >>> weak = jnp.array([[1.0, 0.0]])
    >>> print(f"{losses.entropy_conf(logits, weak, step_frac=1.0):.4f}")  # log 2 from both terms
    0.6931
    """
    logits, weak, where = _prepare("entropy_conf", logits, weak_labels, weights, where, "weak_labels")
    alpha = confidence_alpha(step_frac, alpha_max=alpha_max, warmup_frac=warmup_frac)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    ce_weak = _cross_entropy(log_probs, weak)  # before the entropy: the order its gradient sums in
    entropy = -jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1)
    return _reduce((1.0 - alpha) * ce_weak + alpha * entropy, weights, where, reduction)


@register()
def reverse_xent(
    logits: ArrayLike,
    weak_labels: ArrayLike,
    *,
    eps: float = 1e-4,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    reduction: Reduction = "mean",
) -> jax.Array:
    """Reverse cross-entropy ``CE(f_w, f) = -sum_c softmax(f)_c * log(weak_c)``.

    The roles of student and supervisor are swapped relative to :func:`xent`; the supervisor's
    probabilities are clipped below at ``eps`` so a zero weak probability costs ``-log(eps)``
    rather than infinity. Reported to be less sensitive to the teacher's uncertainty in
    "On the Emergence of Weak-to-Strong Generalization: A Bias-Variance Perspective" (2025).

    >>> import jax.numpy as jnp
    >>> from w2sjax import losses
    >>> logits = jnp.array([[0.0, 0.0]])
    >>> weak = jnp.array([[1.0, 0.0]])
    >>> print(f"{losses.reverse_xent(logits, weak):.4f}")  # half the mass on log(1e-4)
    4.6052
    """
    logits, weak, where = _prepare("reverse_xent", logits, weak_labels, weights, where, "weak_labels")
    probs = jax.nn.softmax(logits, axis=-1)
    log_weak = jnp.log(jnp.clip(weak, eps, 1.0))
    return _reduce(-jnp.sum(probs * log_weak, axis=-1), weights, where, reduction)
