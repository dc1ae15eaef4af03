"""Pure, sharded train/eval steps and the loop that drives them.

One compiled program serves every stage of one model structure and batch shape (weak, w2s,
ceiling, bootstrap; every loss, length and loss setting): the stage's settings (its loss, step
count, learning rate, loss hyper-parameters) are a pytree of traced scalars, ``StepSettings``,
not constants baked into the program. State is a plain pytree (``TrainState``) of pure-dict
parameters and optimizer state, so it jits, shards and checkpoints without any framework object
inside. The NNX module's structure (its ``GraphDef``) stays outside as static data, following
Flax's advice to use ``nnx.split``/``nnx.merge`` around ``jax.jit`` in hot loops.

``fit`` reads top to bottom as its jobs: compile (:func:`train_loop`, jitted, calling
:func:`train_step`, whose ``loss = ...`` line is the loss), feed
(:class:`w2sjax.data.feed.HostFeed`), evaluate (:func:`evaluate`), checkpoint, and stop (:func:`itstime` decides
when each periodic job runs).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import signal
import time
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from w2sjax import losses, metrics, parallel
from w2sjax.config import LOSS_NAMES, LossConfig, StudentTrainConfig, TrainConfig
from w2sjax.data import length_buckets
from w2sjax.data.feed import (  # re-exported: the host feed lived here
    ArrayData, HostFeed, batch_indices, effective_batch_size, stacked_batch_sharding, steps_per_epoch,
    to_global, to_global_stacked,
)
from w2sjax.runner import pending, preemption, sigint, utilisation

PyTree = Any

__all__ = [  # re-exported: configs live in config.py, the host feed in data/feed.py
    "LOSS_NAMES", "LossConfig", "StudentTrainConfig", "TrainConfig", "ArrayData", "HostFeed", "batch_indices",
    "effective_batch_size", "stacked_batch_sharding", "steps_per_epoch", "to_global", "to_global_stacked",
]


# ---- a stage's settings, as traced values ----------------------------------------------------

class StepSettings(flax.struct.PyTreeNode):
    """What differs between stages of one model, as scalars the compiled step takes as inputs.

    Passing these as arguments (not closing over Python numbers) is what lets one compiled
    program train stages of any length, learning rate, loss or ``alpha``. ``losses`` (static: part
    of the program) names the losses the program compiles in, all registered ones unless a run
    says which it uses (`compiled_losses`).
    """

    total_steps: jax.Array  # int32: the stage's length, for the schedules
    warmup_steps: jax.Array  # int32: linear learning-rate warm-up, then cosine decay to zero
    lr: jax.Array
    weight_decay: jax.Array
    loss_index: jax.Array  # int32: position of the loss in ``losses``
    loss_params: dict[str, jax.Array]  # float32 per LossConfig field: every loss's hyper-parameters
    losses: tuple[str, ...] = flax.struct.field(pytree_node=False, default=LOSS_NAMES)


def compiled_losses(loss: str, losses=None) -> tuple[str, ...]:
    """The losses a train program compiles in for a stage of ``loss``: ``losses`` (every registered
    loss when None) and ``loss``, in the registry's order, so that every stage of a run that names
    the losses it uses shares one program per shape. Fewer losses compile faster (MiniLM-L6's bf16
    train program: 5.4 against 5.9 CPU-s with two of the seven, benchmarks/RESULTS.md)."""
    unknown = sorted({loss, *(losses or ())} - set(LOSS_NAMES))
    if unknown:
        raise ValueError(f"unknown loss {unknown[0]!r}; known: {', '.join(LOSS_NAMES)}")
    if losses is None:
        return LOSS_NAMES
    wanted = {loss, *losses}
    return tuple(name for name in LOSS_NAMES if name in wanted)


def step_settings(cfg: TrainConfig, total_steps: int, loss: str = "xent", loss_cfg: LossConfig | None = None,
                  losses=None) -> StepSettings:
    """The host-side values of a stage's :class:`StepSettings`; ``losses``: see `compiled_losses`."""
    names = compiled_losses(loss, losses)
    loss_cfg = LossConfig() if loss_cfg is None else loss_cfg
    warmup = max(1, int(cfg.lr_warmup_frac * total_steps)) if cfg.lr_warmup_frac > 0 else 0
    f32 = np.float32
    return StepSettings(
        total_steps=np.int32(total_steps), warmup_steps=np.int32(warmup), lr=f32(cfg.lr),
        weight_decay=f32(cfg.weight_decay), loss_index=np.int32(names.index(loss)),
        loss_params={field: f32(value) for field, value in dataclasses.asdict(loss_cfg).items()}, losses=names,
    )


def learning_rate(step: jax.Array, s: StepSettings) -> jax.Array:
    """Linear warm-up from 0 to ``lr`` over ``warmup_steps``, then cosine decay to 0 at ``total_steps``.

    The same arithmetic as ``optax.warmup_cosine_decay_schedule`` (which needs Python integers for
    its step counts), written on traced values; a test compares the two.
    """
    warmup = s.warmup_steps
    ramp = -s.lr * (1 - jnp.clip(step, 0, warmup) / jnp.maximum(warmup, 1)) + s.lr
    decay_steps = jnp.maximum(s.total_steps, warmup + 1) - warmup
    count = jnp.minimum((step - warmup).astype(jnp.float32), decay_steps.astype(jnp.float32))
    cosine = s.lr * (0.5 * (1 + jnp.cos(jnp.pi * count / decay_steps.astype(jnp.float32))))
    return jnp.where(step < warmup, ramp, cosine)


LossFn = Callable[..., jax.Array]  # (logits, labels, *, step_frac, weights) -> scalar


def make_loss(name: str, loss_cfg: LossConfig | None = None) -> LossFn:
    """The named loss with ``loss_cfg``'s settings bound, as ``loss(logits, labels, *, step_frac, weights)``."""
    if name not in losses.LOSSES:
        raise ValueError(f"unknown loss {name!r}; known: {', '.join(LOSS_NAMES)}")
    settings = dataclasses.asdict(LossConfig() if loss_cfg is None else loss_cfg)
    return functools.partial(losses.LOSSES[name], settings=settings)


def stage_loss(logits, labels, *, step_frac, weights, settings: StepSettings) -> jax.Array:
    """The loss ``settings.loss_index`` names, picked at run time (``lax.switch``): every loss of
    ``settings.losses`` is compiled into the one program, and only the chosen one runs."""
    def branch(loss: losses.Loss) -> Callable:
        return lambda z, y, frac, w: loss(z, y, settings=settings.loss_params, step_frac=frac, weights=w)

    branches = [branch(losses.LOSSES[name]) for name in settings.losses]
    # One loss stays a conditional (of two like branches): XLA fuses a loss inside a conditional
    # apart from the model, so its results are those of a program holding every loss, bit for bit.
    branches = branches * 2 if len(branches) == 1 else branches
    return jax.lax.switch(settings.loss_index, branches, logits, labels, step_frac, weights)


# ---- state ----------------------------------------------------------------------------------

class TrainState(flax.struct.PyTreeNode):
    """Everything a stage needs to continue, as arrays: checkpointable and shardable."""

    step: jax.Array
    params: PyTree  # trainable parameters, pure nested dict
    frozen: PyTree  # the rest of the model (e.g. a frozen backbone), pure nested dict
    opt_state: PyTree
    best_params: PyTree  # parameters at the best validation score so far
    best_score: jax.Array
    evals_since_best: jax.Array
    first_nonfinite_step: jax.Array  # -1 while every loss so far was finite
    first_loss: jax.Array  # the loss of step 0 (NaN before it ran)
    blowup_step: jax.Array  # first step whose loss exceeded DIVERGENCE_FACTOR x first_loss; -1 if none
    finished: jax.Array  # True once the stage ran to its end or stopped early; a resume then trains no more


@dataclasses.dataclass(frozen=True, eq=False)
class ModelStructure:
    """The static half of a split NNX module: its structure and abstract parameter layout.

    Two models of the same structure are equal whatever their parameter values, so the jitted
    :func:`train_loop`, which takes the model as a static argument, compiles once per structure.
    """

    graphdef: Any
    params_template: Any  # abstract nnx.State of the trainable params
    frozen_template: Any  # abstract nnx.State of everything else

    def __post_init__(self):
        # Computed once: jit hashes its static arguments on every call.
        key = (self.graphdef, _abstract_key(self.params_template), _abstract_key(self.frozen_template))
        object.__setattr__(self, "_key", key)
        object.__setattr__(self, "_hash", hash(key))

    def __eq__(self, other) -> bool:
        return other is self or (isinstance(other, ModelStructure) and self._hash == other._hash and self._key == other._key)

    def __hash__(self) -> int:
        return self._hash

    def bind(self, params: PyTree, frozen: PyTree) -> nnx.Module:
        """Rebuild the module from pure-dict parameters (traceable under jit)."""
        trainable = jax.tree.map(lambda x: x, self.params_template)
        nnx.replace_by_pure_dict(trainable, params)
        rest = jax.tree.map(lambda x: x, self.frozen_template)
        nnx.replace_by_pure_dict(rest, frozen)
        return nnx.merge(self.graphdef, trainable, rest)


Model = ModelStructure  # the old name (it is not a model, only a model's structure), kept for one release


def trainable_filter(trainable: str, module: nnx.Module | None = None):
    """Linear probe versus full finetune is only this filter: which parameters the optimizer sees.
    ``top:K`` needs the ``module`` (its blocks)."""
    if trainable.startswith("top:"):
        from w2sjax.models import topk

        return topk.trainable_filter(module, topk.parse(trainable))
    if trainable == "head":
        return nnx.All(nnx.Param, nnx.PathContains("head"))
    if trainable == "lora":
        from w2sjax.models import lora

        return lora.TRAINABLE
    return nnx.Param


# AdamW whose learning rate and weight decay each step sets from its StepSettings
# (``inject_hyperparams`` keeps them in the optimizer state, as arrays, not in the program).
OPTIMIZER = optax.inject_hyperparams(optax.adamw)(learning_rate=0.0, weight_decay=0.0)


def init_state(module: nnx.Module, trainable: str) -> tuple[ModelStructure, TrainState]:
    """Split a freshly built module into its static ``ModelStructure`` and an initial ``TrainState``.
    ``trainable`` is "all", "head", "lora" or "top:K" (see :func:`trainable_filter`)."""
    graphdef, params_state, rest = nnx.split(module, trainable_filter(trainable, module), ...)
    if not jax.tree.leaves(params_state):
        raise ValueError(f"train.trainable={trainable!r} leaves no trainable parameter in the model")
    model = ModelStructure(graphdef, jax.eval_shape(lambda: params_state), jax.eval_shape(lambda: rest))
    params = nnx.to_pure_dict(params_state)
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        frozen=nnx.to_pure_dict(rest),
        opt_state=_initial_opt_state(params, OPTIMIZER),
        # A distinct copy: the step donates its input state, and XLA refuses one buffer donated twice.
        best_params=_copy(params),
        best_score=jnp.full((), -jnp.inf, jnp.float32),
        evals_since_best=jnp.zeros((), jnp.int32),
        first_nonfinite_step=jnp.full((), -1, jnp.int32),
        first_loss=jnp.full((), jnp.nan, jnp.float32),
        blowup_step=jnp.full((), -1, jnp.int32),
        finished=jnp.zeros((), jnp.bool_),
    )
    return model, state


# One program each for the whole tree: applied leaf by leaf, eagerly, they compiled one program per
# parameter shape (about 20 for MiniLM-L6, on the main thread while its train programs trace, 2026-12-07).
_copy = jax.jit(lambda tree: jax.tree.map(jnp.copy, tree))
_initial_opt_state = jax.jit(lambda params, optimizer: optimizer.init(params), static_argnums=1)


# ---- pure steps -----------------------------------------------------------------------------

def train_step(state: TrainState, batch: dict, rng: jax.Array, settings: StepSettings, measure: bool | jax.Array = True,
               *, model: ModelStructure, mesh: Mesh | None = None):
    """One optimizer step, pure and not jitted: ``(state, metrics)``.

    ``batch = {"inputs": pytree [B, ...], "labels": [B, C] probabilities, "weights": [B]}``.
    ``rng`` is the stage's base key; the step folds in its own step number, so every step draws
    fresh randomness reproducibly without the host doing anything per step. ``settings``
    (:class:`StepSettings`) picks the loss and sets the schedules. With a ``mesh`` the optimizer
    update runs split over its data axis (:func:`sharded_update`). ``measure`` (a bool, or a traced
    bool) says whether the ``grad_norm`` metric is computed; when it is not, it reads 0.
    """
    step_frac = state.step.astype(jnp.float32) / settings.total_steps.astype(jnp.float32)
    rng = jax.random.fold_in(rng, state.step)
    del rng  # no stochastic layers in the built-in models; kept for dropout or augmentation

    def objective(params):
        logits = model.bind(params, state.frozen)(batch["inputs"])
        loss = stage_loss(logits, batch["labels"], step_frac=step_frac, weights=batch["weights"], settings=settings)
        return loss, logits

    (loss, logits), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    hyper = {**state.opt_state.hyperparams, "learning_rate": learning_rate(state.step, settings),
             "weight_decay": settings.weight_decay}
    params, opt_state = sharded_update(grads, state.opt_state._replace(hyperparams=hyper), state.params, mesh)
    finite = jnp.isfinite(loss)
    first_bad = jnp.where((state.first_nonfinite_step < 0) & ~finite, state.step, state.first_nonfinite_step)
    first_loss = jnp.where(state.step == 0, loss.astype(jnp.float32), state.first_loss)
    blowup = (state.blowup_step < 0) & (loss > DIVERGENCE_FACTOR * first_loss)
    step_metrics = {
        "loss": loss,
        "grad_norm": _grad_norm(grads, measure),
        "label_agreement": metrics.accuracy(logits, batch["labels"]),
    }
    new_state = state.replace(
        step=state.step + 1, params=params, opt_state=opt_state, first_nonfinite_step=first_bad,
        first_loss=first_loss, blowup_step=jnp.where(blowup, state.step, state.blowup_step),
    )
    return new_state, step_metrics


def _grad_norm(grads: PyTree, measure: bool | jax.Array) -> jax.Array:
    """The gradients' global L2 norm, float32, or 0 where ``measure`` is false. It reads every gradient
    once more, and XLA:CPU squares them into a fresh array before summing it in ``reduce-window``
    trees: about 0.1 s of a 2.7 s six-layer MPNet-base step per device, the word-embedding table's
    40 ms of it (benchmarks/RESULTS.md, 2026-12-08). So `train_loop` asks for it only on the step
    whose metrics it returns."""
    norm = lambda g: optax.tree.norm(g).astype(jnp.float32)
    zero = lambda g: jnp.zeros((), jnp.float32)
    if isinstance(measure, bool):
        return norm(grads) if measure else zero(grads)
    return jax.lax.cond(measure, norm, zero, grads)


def sharded_update(grads: PyTree, opt_state: PyTree, params: PyTree, mesh: Mesh | None) -> tuple[PyTree, PyTree]:
    """AdamW's ``(new params, new optimizer state)``; with a ``mesh``, split as ZeRO stage 1 does
    (where `parallel.update_shardings` splits anything: opt-in, ``parallel.UPDATE_SPLIT_MIN_SIZE``).

    The gradients are constrained to `parallel.update_shardings` (XLA:CPU all-reduces them, then
    slices), each device updates its part of the parameters and moments, and the new
    parameters are gathered back to their `parallel.param_shardings`. Each element's arithmetic
    is the same either way, so the parameters come out bit for bit alike; every host device just
    does its share of the update instead of all of it."""
    if mesh is None or parallel.UPDATE_SPLIT_MIN_SIZE is None:  # off: the program of a plain update
        updates, opt_state = OPTIMIZER.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state
    split = lambda tree: jax.lax.with_sharding_constraint(tree, parallel.update_shardings(mesh, tree))
    # Whole first: otherwise XLA splits the embedding tables' scatter-add over the vocabulary and
    # sums their gradients in another order (equal only to rounding).
    grads = jax.lax.with_sharding_constraint(grads, parallel.param_shardings(mesh, grads))
    grads, parts = split(grads), split(params)
    updates, opt_state = OPTIMIZER.update(grads, opt_state, parts)
    new_params = optax.apply_updates(parts, updates)
    return jax.lax.with_sharding_constraint(new_params, parallel.param_shardings(mesh, new_params)), split(opt_state)


@functools.partial(jax.jit, static_argnames=("model", "mesh", "step_wrapper"), donate_argnums=(0,))
def train_loop(state: TrainState, batches: dict, count: jax.Array, rng: jax.Array, settings: StepSettings, *,
               model: ModelStructure, mesh: Mesh, step_wrapper: Callable | None = None):
    """``count`` calls of :func:`train_step` in one compiled program: ``(state, metrics)``.

    ``batches`` stacks up to ``K`` batches on a leading axis (``[K, B, ...]``); the first ``count``
    of them are used, in order, so one compiled program serves every chunk length up to ``K``.
    Running many steps per call keeps the host out of the inner loop: for a linear probe the
    per-call dispatch and transfer cost far more than the step itself. The returned metrics are
    those of the last step run. ``model``, ``mesh`` and ``step_wrapper`` are static: one compile
    per model structure and mesh (equal :class:`ModelStructure` s share it), whatever the stage's settings.
    ``step_wrapper`` wraps the step before tracing (tests pass a trace counter); each wrapper
    object gets its own program. The state is donated (updated in place) and keeps its layout.
    """
    def step(state, batch, rng, settings, measure=True):
        return train_step(state, batch, rng, settings, measure, model=model, mesh=mesh)

    run_step = step if step_wrapper is None else step_wrapper(step)
    rows = parallel.batch_sharding(mesh)

    def batch_at(i):
        batch = jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, i, 0, keepdims=False), batches)
        return jax.lax.with_sharding_constraint(batch, rows)

    out_shapes = jax.eval_shape(step, state, batch_at(0), rng, settings)[1]
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), out_shapes)
    state, step_metrics = jax.lax.fori_loop(
        0, count, lambda i, carry: run_step(carry[0], batch_at(i), rng, settings, i == count - 1), (state, zeros))
    # Parameters stay replicated (or fsdp-sharded, as they came in), the optimizer state split as
    # `state_shardings` places it; the metrics are replicated.
    return (jax.lax.with_sharding_constraint(state, _shardings_of(mesh, state)),
            jax.lax.with_sharding_constraint(step_metrics, parallel.replicated(mesh)))


def make_predict_step(model: ModelStructure):
    """``predict_step(state, inputs) -> probabilities [B, C]`` using the current parameters."""

    def predict_step(state: TrainState, inputs, use_best: bool = False):
        params = state.best_params if use_best else state.params
        return jax.nn.softmax(model.bind(params, state.frozen)(inputs).astype(jnp.float32), axis=-1)

    return predict_step


def record_eval(state: TrainState, score: jax.Array) -> TrainState:
    """Keep the parameters with the best validation score (early stopping bookkeeping)."""
    better = score > state.best_score
    pick = lambda new, old: jax.tree.map(lambda a, b: jnp.where(better, a, b), new, old)
    return state.replace(
        best_params=pick(state.params, state.best_params),
        best_score=jnp.where(better, score, state.best_score),
        evals_since_best=jnp.where(better, 0, state.evals_since_best + 1),
    )


# ---- sharding -------------------------------------------------------------------------------

def state_shardings(mesh: Mesh, state: TrainState):
    """Parameters replicated (or fsdp-sharded when the mesh has an fsdp axis), the optimizer's
    moments as `parallel.update_shardings` says (split over the data axis when opted in, else as
    the parameters); scalars replicated."""
    return _shardings_of(mesh, jax.eval_shape(lambda: state))


def _shardings_of(mesh: Mesh, state: TrainState):
    return parallel.param_shardings(mesh, state).replace(opt_state=parallel.update_shardings(mesh, state.opt_state))


def jit_train_step(step, mesh: Mesh, state_sharding):
    """One step (e.g. ``functools.partial(train_step, model=model)``) jitted on its own, state donated:
    for benchmarks that time single steps; stages run :func:`train_loop`."""
    replicated = parallel.replicated(mesh)
    return jax.jit(
        step,
        in_shardings=(state_sharding, parallel.batch_sharding(mesh), replicated, replicated),
        out_shardings=(state_sharding, parallel.replicated(mesh)),
        donate_argnums=(0,),
    )


# A sweep runs the same kind of stage many times (seeds, losses, lengths, ceilings and w2s
# students). Handing jax.jit the same function object for the same model structure lets its
# cache reuse the compiled program (prediction, evaluation) instead of compiling once per stage.
_COMPILED: "collections.OrderedDict[tuple, Any]" = collections.OrderedDict()
_COMPILED_MAX = 64


def _jitted_function_for(key: tuple, build: Callable[[], Any]) -> Any:
    """The function built for ``key`` before, else ``build()``; the 64 most recent are kept."""
    try:
        value = _COMPILED.pop(key)
    except KeyError:
        value = build()
    _COMPILED[key] = value
    while len(_COMPILED) > _COMPILED_MAX:
        _COMPILED.popitem(last=False)
    return value


def clear_caches() -> None:
    """Forget the jitted functions kept for earlier models (`w2sjax.runner.memory.release`)."""
    _COMPILED.clear()
    _predict_jit.cache_clear()
    from w2sjax.data import feed

    feed._epoch_permutation.cache_clear()


def _abstract_key(tree: PyTree) -> tuple:
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple((tuple(x.shape), jnp.dtype(x.dtype).name) for x in leaves)


def cached_predict_step(model: ModelStructure):
    """`make_predict_step`, one function object per model structure (so `predict` compiles once)."""
    return _jitted_function_for(("predict", model), lambda: make_predict_step(model))


# ---- batching -------------------------------------------------------------------------------

# ---- prediction over a dataset --------------------------------------------------------------

# Rows per prediction batch. Token inputs run shortest first and each batch is cut to the bucket
# length of its longest row, so smaller batches pad less: on the sweep benchmark's tweets a batch of
# 64 predicted a test split in half the time of 256 (benchmarks/RESULTS.md, the quiet runs of 2026-11-29), and a
# 64-row validation slice is no longer padded to 256.
PREDICT_ROWS = 64


def predict_rows(cfg: TrainConfig) -> int:
    """The batch of every prediction a stage makes: its in-stage evaluations and its final
    predictions alike, so both run one compiled program per input shape instead of two."""
    return max(cfg.batch_size, PREDICT_ROWS)


# A predict program costs ~1 s to compile (MiniLM-L6 on 2 CPUs, 2026-12-06), about one and a
# half batches of PREDICT_ROWS rows at max_len, and a sweep's stages share it: measured cold
# sweeps (benchmarks/RESULTS.md) favoured 0.12 of the train compile cost over 0.3.
PREDICT_COMPILE_SHARE = 0.12


def machine_compile_cost(precision: str) -> float:
    """`length_buckets.default_compile_cost` for ``precision`` on this process's backend and CPU."""
    return length_buckets.default_compile_cost(precision, jax.default_backend(), utilisation.cpu_flags())


def compile_cost(cfg: TrainConfig) -> float:
    """``cfg.compile_cost_steps``; where it is unset, this machine's float32 default (a run's stages
    get it set for the run's precision first, `stage_compile_cost`)."""
    return machine_compile_cost("float32") if cfg.compile_cost_steps is None else cfg.compile_cost_steps


def stage_compile_cost(cfg: TrainConfig, precision: str) -> TrainConfig:
    """``cfg``, with an unset ``compile_cost_steps`` set for ``precision`` on this machine, so that a
    stage's fingerprint names the number its batches pad by."""
    if cfg.compile_cost_steps is not None:
        return cfg
    return dataclasses.replace(cfg, compile_cost_steps=machine_compile_cost(precision))


def with_compile_cost(config):
    """A run's ``config`` (`w2sjax.config.Config`) with `stage_compile_cost` applied to its ``train``
    and ``weak_train``: what its stages run with, and what its plan and results.json name."""
    return dataclasses.replace(config, train=stage_compile_cost(config.train, config.precision),
                               weak_train=stage_compile_cost(config.weak_train, config.precision))


def predict_buckets(inputs_list: list, cfg: TrainConfig, mesh: Mesh) -> bool | tuple[int, ...]:
    """The ``buckets`` argument of every prediction of a stage that predicts ``inputs_list``:
    ``cfg.length_buckets``, or with a compile cost the lengths its batches run at, chosen over all
    of them at once (`length_buckets.choose_lengths`), a pure function of the inputs and ``cfg``."""
    if not cfg.length_buckets or compile_cost(cfg) <= 0:
        return cfg.length_buckets
    tokens = [x for x in inputs_list if length_buckets.token_lengths(x) is not None]
    lengths = [n for x in tokens
               for _, n in predict_batches(x, batch_size=predict_rows(cfg), mesh=mesh, step=length_buckets.FINE_STEP)[2]]
    if not lengths:
        return True
    max_len = int(np.shape(tokens[0]["attention_mask"])[1])
    return length_buckets.choose_lengths(lengths, max_len, compile_cost(cfg) * PREDICT_COMPILE_SHARE)


def predict_batches(inputs: PyTree, *, batch_size: int, mesh: Mesh, buckets: bool | tuple[int, ...] = True,
                    step: int = 0) -> tuple[int, np.ndarray, list[tuple[np.ndarray, int | None]]]:
    """How `predict` batches ``inputs``: ``(rows per batch, order, [(indices, padded length)])``.

    With ``buckets`` and token inputs (`length_buckets.token_lengths`), rows run shortest first
    (``order``) and each batch is cut to the shortest bucket length (`length_buckets.bucket_lengths`
    with ``step``: powers of two by default) that holds its longest row, or with ``buckets`` a
    tuple of lengths (`predict_buckets`), to the shortest of those that holds that row; otherwise
    the length is None (the inputs' own).
    """
    n = int(jax.tree.leaves(inputs)[0].shape[0])
    b = max(mesh.size, batch_size - batch_size % mesh.size)
    lengths = length_buckets.token_lengths(inputs) if buckets else None
    order = np.arange(n) if lengths is None else np.argsort(lengths, kind="stable")
    out = []
    for start in range(0, n, b):
        idx, length = order[start:start + b], None
        if lengths is not None:
            max_len = int(np.shape(inputs["attention_mask"])[1])
            longest = int(min(lengths[idx].max(), max_len))
            # the chosen lengths are bucket lengths: the shortest holding the row holds its bucket too
            length = length_buckets.compiled_length(longest, buckets if isinstance(buckets, tuple) else None)
            if not isinstance(buckets, tuple) or length not in buckets:
                cut = length_buckets.bucket_lengths(max_len, step=step)
                length = cut[int(np.searchsorted(cut, longest))]
        out.append((idx, length))
    return b, order, out


def predict_chunk(inputs: PyTree, idx: np.ndarray, length: int | None) -> PyTree:
    """Rows ``idx`` of ``inputs``, cut to ``length`` (token inputs) when it is not None."""
    chunk = jax.tree.map(lambda a: a[idx], inputs)
    if length is None:
        return chunk
    return length_buckets.trim(chunk, length, int(np.shape(inputs["attention_mask"])[1]))


def predict(predict_step, state: TrainState, inputs: PyTree, *, mesh: Mesh, batch_size: int, use_best=False,
            buckets: bool | tuple[int, ...] = True) -> np.ndarray:
    """Probabilities for every example, in fixed-size batches (the last one padded), so one shape compiles.

    With ``buckets`` and token inputs, batches are cut to bucket lengths (`predict_batches`: one
    compile per length, as in training); the probabilities come back in the input order.
    """
    b, order, batches = predict_batches(inputs, batch_size=batch_size, mesh=mesh, buckets=buckets)
    out = []
    for idx, length in batches:
        chunk = predict_chunk(inputs, idx, length)
        pad = b - len(idx)
        if pad:  # repeat the last row; the padded outputs are dropped below
            chunk = jax.tree.map(lambda a: np.concatenate([a, np.repeat(a[-1:], pad, 0)]), chunk)
        global_chunk = to_global(mesh, chunk)
        if not use_best:  # the program `precompile` compiles ahead; wait if it still is
            pending.wait("predict", predict_step, global_chunk, mesh)
        probs = _predict_jit(predict_step, use_best)(state, global_chunk)
        out.append(parallel.host_gather(probs)[: len(idx)])
    if not out:
        return np.zeros((0, 0), np.float32)
    probs = np.concatenate(out)
    probs[order] = probs.copy()  # back to the input order
    return probs


@functools.lru_cache(maxsize=64)
def _predict_jit(predict_step, use_best: bool):
    return jax.jit(functools.partial(predict_step, use_best=use_best))


# ---- the loop -------------------------------------------------------------------------------

class StageCheckpoint:
    """What ``fit`` needs from a checkpoint store; ``experiment`` provides one over ``checkpoint.py``."""

    def latest_step(self) -> int | None:  # pragma: no cover - interface
        raise NotImplementedError

    def restore(self, abstract_state: TrainState) -> TrainState | None:  # pragma: no cover - interface
        """The newest restorable state, or None when no saved step can be restored."""
        raise NotImplementedError

    def save(self, step: int, state: TrainState) -> None:  # pragma: no cover - interface
        raise NotImplementedError


@dataclasses.dataclass
class FitResult:
    model: ModelStructure
    state: TrainState
    predict_step: Callable
    steps: int
    stopped_early: bool
    resumed_from: int | None


def itstime(step: int, every: int, total: int, *, last: bool = True) -> bool:
    """Whether a periodic job (log, eval, checkpoint) runs after ``step`` of ``total``: every
    ``every`` steps and at the final step, or, with ``last=False``, never at the final step.
    ``every=0`` means never."""
    if not every:
        return False
    if step == total:
        return last
    return step % every == 0


def fit(module: nnx.Module, data: ArrayData, *, cfg: TrainConfig, loss: str, mesh: Mesh, seed: int,
        trainable: str | None = None, val: ArrayData | None = None, stage: str = "train",
        ckpt: StageCheckpoint | None = None, log: Callable[[dict], None] | None = None, progress: bool = True,
        step_wrapper: Callable | None = None, predict_buckets: bool | tuple = True, losses=None) -> FitResult:
    """Train ``module`` on ``data`` and return the final (or best-on-validation) state.

    A :class:`StudentTrainConfig` brings its loss settings and ``trainable`` ("all", "head", "lora"
    or "top:K"; the ``trainable`` argument overrides it); any other stage trains every parameter. Resumes from
    ``ckpt`` when it holds a step of this stage; the batches after a resume are the ones an uninterrupted run
    would have used (:func:`batch_indices`). ``step_wrapper`` wraps the pure step before jitting (tests pass a
    trace counter), one program per wrapper. Evaluations predict with ``predict_buckets``; ``losses``: `compiled_losses`.
    """
    from w2sjax.runner import progress as progress_lib

    student = isinstance(cfg, StudentTrainConfig)
    trainable = trainable or (cfg.trainable if student else "all")
    batch_size, total, eval_every = _stage_length(len(data), cfg, mesh, validated=val is not None)
    replicated = parallel.replicated(mesh)

    # compile: train_loop compiles once per model structure, whatever the loss, length or settings
    model, state = init_state(module, trainable)
    shardings = state_shardings(mesh, state)
    chunk = _chunk_size(cfg)
    settings = place(step_settings(cfg, total, loss, cfg.loss if student else None, losses), replicated)
    predict_step = cached_predict_step(model)
    rng = place(jax.random.key_data(jax.random.key(seed)), replicated)

    state, resumed_from = _start_or_resume(state, shardings, ckpt)
    feed = stage_feed(data, cfg, batch_size, total, seed, mesh, chunk)
    start = total if bool(state.finished) else int(state.step)
    if getattr(log, "rewind", None) is not None:  # a killed run's lines after the restored step: logged again below
        log.rewind(stage, int(state.step))
    bar = progress_lib.bar(total, stage, initial=start, unit="steps", enabled=progress and parallel.is_main_process())
    step, stopped_early, last_save = start, False, time.monotonic()
    meter = utilisation.Meter(mesh) if log is not None else None  # FLOPs per step, FLOP/s and MFU in the log
    with sigint.safe_points():  # a first Ctrl-C stops the loop at its next stop, after a checkpoint
        while step < total:
            # Run up to the next step where the host has something to do (log, eval, checkpoint).
            done = _next_stop(step, total, (cfg.log_every, _MAX_CHUNK, eval_every, cfg.checkpoint_every))
            state, step_metrics = train_segments(state, feed.segments(step, done), (rng, settings), replicated, meter,
                                               model=model, mesh=mesh, step_wrapper=step_wrapper)
            bar.update(done - step)
            step = done
            if itstime(step, cfg.log_every, total):
                check_divergence(state, stage, cfg.lr, resumed_from)
                _log_step(log, {"stage": stage, "step": step}, step_metrics, meter)
            if itstime(step, eval_every, total):
                state = evaluate(state, val, predict_step, shardings, mesh=mesh, batch_size=predict_rows(cfg), stage=stage,
                                 step=step, log=log, buckets=cfg.length_buckets and predict_buckets)
                stopped_early = _patience_ran_out(state, cfg)
            if step >= total or stopped_early:
                break  # the final state is saved by the caller, with the stage's outputs; a Ctrl-C stops after that
            if ckpt is not None:
                last_save = _checkpoint_or_stop(ckpt, state, step, total, cfg, stage, bar, last_save)
            # a Ctrl-C (even one whose first raise a callback swallowed) ends the run here
            sigint.check()
    bar.close()
    _log_step(log, {"stage": stage, "step": step, "utilisation": "stage"}, None, meter)
    state = _final_state(state, cfg, stage, resumed_from, replicated, validated=val is not None)
    return FitResult(model, state, predict_step, int(state.step), stopped_early, resumed_from)


def stage_feed(data: ArrayData, cfg: TrainConfig, batch_size: int, total: int, seed: int, mesh: Mesh,
               chunk: int) -> HostFeed:
    """The batches of a stage of ``total`` steps, bucketed and padded to its compiled lengths as
    ``cfg`` says (`w2sjax.data.length_buckets`); `precompile` compiles the programs of the same feed."""
    return HostFeed(data, batch_size, seed, mesh, chunk, buckets=cfg.length_buckets, total=total,
                    compile_cost=compile_cost(cfg))


def _log_step(log, line: dict, step_metrics: dict | None, meter) -> None:
    """One line of ``metrics.jsonl``: the step's metrics and the FLOP/s since the last line, or,
    with ``step_metrics=None``, the stage's utilisation summary (when ``meter`` measured one)."""
    if log is None:
        return
    if step_metrics is not None:
        log({**line, **{k: float(v) for k, v in step_metrics.items()}, **(meter.interval() if meter is not None else {})})
    elif meter is not None and (summary := meter.summary()):
        log({**line, **summary})


def train_segments(state: TrainState, segments, step_inputs: tuple, replicated, meter, **loop_kwargs):
    """Run ``train_loop`` over ``segments`` (``(count, stacked batches)``, one per run of equal
    padded length) and return ``(state, last metrics)``; ``meter`` (or None) counts their FLOPs
    and times them."""
    started = time.perf_counter()
    for count, batches in segments:
        pending.wait("train", loop_kwargs["model"], (batches, step_inputs[-1]), loop_kwargs["mesh"])
        args = (state, batches, place(np.int32(count), replicated), *step_inputs)
        if meter is not None:  # before the call, which donates the state
            meter.add(meter.cost(_abstract_key(batches), train_loop, *args, **loop_kwargs), count)
        state, step_metrics = train_loop(*args, **loop_kwargs)
    if meter is not None:  # the loop's own stops sync anyway (log, eval, checkpoint): every 10 steps by default
        jax.block_until_ready(step_metrics)
        meter.time(time.perf_counter() - started)
    return state, step_metrics


def _final_state(state: TrainState, cfg: TrainConfig, stage: str, resumed_from: int | None, replicated, *,
                 validated: bool) -> TrainState:
    """The state a stage ends with: checked for divergence, with the best parameters on validation
    under early stopping, and marked finished."""
    check_divergence(state, stage, cfg.lr, resumed_from)
    if cfg.early_stopping and validated:
        state = state.replace(params=state.best_params)
    return state.replace(finished=place(np.ones((), np.bool_), replicated))


def _stage_length(n: int, cfg: TrainConfig, mesh: Mesh, *, validated: bool) -> tuple[int, int, int]:
    """``(batch_size, total_steps, eval_every)`` of a stage on ``n`` examples; ``eval_every`` is 0
    without a validation set and defaults to once an epoch."""
    batch_size = effective_batch_size(n, cfg.batch_size, mesh.size)
    per_epoch = steps_per_epoch(n, batch_size)
    total = max(1, math.ceil(cfg.epochs * per_epoch))
    return batch_size, total, (cfg.eval_every or per_epoch) if validated else 0


def _checkpoint_or_stop(ckpt: StageCheckpoint, state: TrainState, step: int, total: int, cfg: TrainConfig,
                        stage: str, bar, last_save: float) -> float:
    """At a host stop: save an in-stage checkpoint when one is due (by steps or by minutes), or
    when the run is preempted (SIGTERM) or interrupted (Ctrl-C), then raise for those two. Every
    process decides alike. Returns the time of the last save."""
    interrupted = sigint.pending()
    due = itstime(step, cfg.checkpoint_every, total, last=False)
    due = preemption.agree(due or time.monotonic() - last_save >= 60 * cfg.checkpoint_minutes > 0)
    preempted = preemption.reached_sync_point()  # the same answer, at the same step, on every process
    stopping = preemption.agree(interrupted is not None)  # process 0's Ctrl-C stops every process
    if due or preempted or stopping:
        ckpt.save(step, state)
        last_save = time.monotonic()
    if preempted:
        bar.close()
        raise preemption.Preempted(stage, step)
    if stopping:
        bar.close()
        raise sigint.Interrupted(interrupted or signal.SIGINT, stage=stage, step=step)
    return last_save


def _start_or_resume(state: TrainState, shardings, ckpt: StageCheckpoint | None) -> tuple[TrainState, int | None]:
    """The initial state placed on the mesh, or the checkpointed one when ``ckpt`` holds a step."""
    if ckpt is None or ckpt.latest_step() is None:
        return place(state, shardings), None
    abstract = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(np.shape(x), jnp.asarray(x).dtype, sharding=s), state, shardings
    )
    restored = ckpt.restore(abstract)  # None: no saved step could be restored, so start over
    if restored is None:
        return place(state, shardings), None
    # the step actually restored: after a damaged newest step it is an older one, not latest_step()
    return restored, int(restored.step)


def evaluate(state: TrainState, val: ArrayData, predict_step, shardings, *, mesh: Mesh, batch_size: int, stage: str,
             step: int, log: Callable[[dict], None] | None = None, buckets: bool | tuple = True) -> TrainState:
    """Score the current parameters on ``val`` and keep them if they are the best so far."""
    remember = _jitted_function_for(("record_eval", _sharding_key(shardings)),
                                    lambda: jax.jit(record_eval, donate_argnums=(0,), out_shardings=shardings))
    probs = predict(predict_step, state, val.inputs, mesh=mesh, batch_size=batch_size, buckets=buckets)
    score = float(metrics.accuracy(probs, val.labels))
    if log is not None:
        log({"stage": stage, "step": step, "val_accuracy": score})
    return remember(state, place(np.float32(score), parallel.replicated(mesh)))


def _patience_ran_out(state: TrainState, cfg: TrainConfig) -> bool:
    """Early stopping: ``patience`` evals in a row without a better validation score."""
    return bool(cfg.early_stopping and cfg.patience and int(state.evals_since_best) >= cfg.patience)


_MAX_CHUNK = 32  # steps per call at most: bounds the stacked batches held on the host


def _chunk_size(cfg: TrainConfig) -> int:
    """Batches stacked per call (at least the longest run between stops): a power of two that
    does not depend on the stage's length, so stages of any length share one compile."""
    longest = max(1, min(cfg.log_every or _MAX_CHUNK, _MAX_CHUNK))
    return 1 << (longest - 1).bit_length()


def _next_stop(step: int, total: int, intervals: tuple[int, ...]) -> int:
    """The first step after ``step`` at which the loop must return to the host.

    Stops sit at absolute step numbers (multiples of the log, chunk, eval and checkpoint
    intervals; 0 means none), so a resumed run splits its remaining steps as an uninterrupted one.
    """
    stop = total
    for every in intervals:
        if every > 0:
            stop = min(stop, (step // every + 1) * every)
    return stop


def _sharding_key(shardings: PyTree) -> tuple:
    leaves, treedef = jax.tree.flatten(shardings)
    return treedef, tuple(leaves)


def place(tree: PyTree, shardings) -> PyTree:
    """Put host values (identical on every process) onto ``shardings``, which may span processes.

    ``jax.device_put`` only reaches this process's devices; building each array from a callback
    works for any sharding, on one host or many.
    """
    def one(leaf, sharding):
        if isinstance(leaf, jax.Array) and leaf.sharding == sharding:
            return leaf  # already there (weights loaded straight into their shards): no trip through the host
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    if not isinstance(shardings, jax.sharding.Sharding):
        return jax.tree.map(one, tree, shardings)
    return jax.tree.map(lambda leaf: one(leaf, shardings), tree)


# ---- divergence -----------------------------------------------------------------------------

DIVERGENCE_FACTOR = 100.0  # a loss this many times its step-0 value means the stage diverged


def check_divergence(state: TrainState, stage: str, lr: float, resumed_from: int | None = None) -> None:
    """FloatingPointError naming the stage and step if its loss went non-finite or blew up.

    A non-finite loss at step 0 comes before any update, so it points at the inputs (damaged
    weights or data), not at the learning rate; one at the first step after a resume points at the
    checkpoint it resumed from.
    """
    bad, blowup = int(state.first_nonfinite_step), int(state.blowup_step)
    if bad == 0:
        raise FloatingPointError(f"stage {stage}: the loss is NaN or infinite at step 0, before any update: "
                                 "a damaged input (model weights or data) is likely")
    if resumed_from and bad == resumed_from:
        raise FloatingPointError(
            f"stage {stage}: the loss is NaN or infinite at step {bad}, the first step after resuming from its "
            "in-stage checkpoint: that checkpoint is likely damaged; move the stage's folder out of checkpoints/ "
            "to train it from the start")
    if bad > 0:
        raise FloatingPointError(f"stage {stage}: the loss became NaN or infinite at step {bad}; "
                                 f"lower its learning rate (lr={lr:g})")
    if blowup >= 0:
        raise FloatingPointError(
            f"stage {stage}: the loss diverged at step {blowup} (over {DIVERGENCE_FACTOR:g}x its starting "
            f"value {float(state.first_loss):.4g}); lower its learning rate (lr={lr:g})")


COLLAPSE_CONFIDENCE = 0.99  # mean top probability of a model that has collapsed onto one class


def check_not_collapsed(probs: np.ndarray, labels: np.ndarray, stage: str, step: int) -> None:
    """FloatingPointError if the model predicts one class, with near certainty, on all of a
    class-balanced slice of the validation rows (as many of each class as the rarest has).

    That is what a diverged model looks like (saturated logits, one answer for every input). A
    model that merely learned little, e.g. a few steps on a small or hard task, also predicts the
    majority class everywhere, but unsure of it: that is a weak result, not a failure, so the
    mean top probability must reach ``COLLAPSE_CONFIDENCE`` too. Skipped when some class is
    missing from ``labels``.
    """
    classes = probs.shape[1]
    counts = np.bincount(labels, minlength=classes)
    if classes < 2 or counts.min() == 0:
        return
    slice_rows = np.concatenate([np.flatnonzero(labels == c)[: counts.min()] for c in range(classes)])
    predicted = np.unique(np.argmax(probs[slice_rows], axis=1))
    confidence = float(np.max(probs[slice_rows], axis=1).mean())
    if len(predicted) == 1 and confidence >= COLLAPSE_CONFIDENCE:
        raise FloatingPointError(
            f"stage {stage}: after step {step} the model predicts class {int(predicted[0])} for all "
            f"{len(slice_rows)} examples of a balanced validation slice (mean probability {confidence:.3f}): "
            "it diverged; lower its learning rate")
