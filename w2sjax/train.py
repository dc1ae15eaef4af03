"""Pure, sharded train/eval steps and the loop that drives them.

One compiled step serves every stage of an experiment (weak, w2s, ceiling, bootstrap): the loss is
a parameter. State is a plain pytree (``TrainState``) of pure-dict parameters and optimizer state,
so it jits, shards and checkpoints without any framework object inside. The NNX module's
structure (its ``GraphDef``) stays outside as static data, following Flax's advice to use
``nnx.split``/``nnx.merge`` around ``jax.jit`` in hot loops.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
from typing import Any, Callable, Iterator

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from w2sjax import losses, metrics, parallel, signals

PyTree = Any


# ---- configuration --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How one stage trains. Every field is a plain value so configs stay printable and typed."""

    epochs: float = 10.0  # passes over the stage's training data (fractions allowed)
    batch_size: int = 32  # global batch, rounded down to a multiple of the device count
    lr: float = 1e-3  # peak AdamW learning rate
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    lr_warmup_frac: float = 0.05  # fraction of steps with a linear learning-rate warm-up; cosine decay after
    trainable: str = "all"  # finetune mode only: "all" trains every weight, "head" is a linear probe on the frozen backbone
    early_stopping: bool = False  # keep the parameters with the best validation accuracy (weak labels for w2s)
    eval_every: int = 0  # steps between validation evals; 0 = once per epoch
    patience: int = 0  # evals without improvement before stopping; 0 = never stop, just keep the best
    checkpoint_every: int = 0  # steps between in-stage checkpoints; 0 = only at the end
    log_every: int = 10  # steps between metrics.jsonl lines (and NaN checks)
    alpha_max: float = 0.5  # logconf / entropy_conf: final weight of the confidence term
    conf_warmup_frac: float = 0.2  # logconf / entropy_conf: fraction of training over which alpha ramps up
    product_alpha: float = 1.0  # product loss: exponent on the weak labels
    product_beta: float = 1.0  # product loss: exponent on the student's probabilities

    def __post_init__(self):
        if self.trainable not in ("all", "head"):
            raise ValueError(f"train.trainable: expected 'all' or 'head', got {self.trainable!r}")
        if self.batch_size <= 0:
            raise ValueError(f"train.batch_size: expected a positive integer, got {self.batch_size}")
        if not self.epochs > 0:
            raise ValueError(f"train.epochs: expected a positive number, got {self.epochs}")


LossFn = Callable[..., jax.Array]  # (logits, labels, *, step_frac, weights) -> scalar

LOSS_NAMES = ("xent", "logconf", "product", "entropy_conf", "reverse_xent")


def make_loss(name: str, cfg: TrainConfig) -> LossFn:
    """The named loss with the config's hyper-parameters bound, in one uniform signature."""
    if name == "xent":
        return lambda z, y, *, step_frac, weights: losses.xent(z, y, weights=weights)
    if name == "logconf":
        return functools.partial(losses.logconf, alpha_max=cfg.alpha_max, warmup_frac=cfg.conf_warmup_frac)
    if name == "entropy_conf":
        return functools.partial(losses.entropy_conf, alpha_max=cfg.alpha_max, warmup_frac=cfg.conf_warmup_frac)
    if name == "product":
        return lambda z, y, *, step_frac, weights: losses.product(
            z, y, alpha=cfg.product_alpha, beta=cfg.product_beta, weights=weights
        )
    if name == "reverse_xent":
        return lambda z, y, *, step_frac, weights: losses.reverse_xent(z, y, weights=weights)
    raise ValueError(f"unknown loss {name!r}; known: {', '.join(LOSS_NAMES)}")


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


@dataclasses.dataclass(frozen=True)
class Model:
    """The static half of a split NNX module: its structure and abstract parameter layout."""

    graphdef: Any
    params_template: Any  # abstract nnx.State of the trainable params
    frozen_template: Any  # abstract nnx.State of everything else

    def bind(self, params: PyTree, frozen: PyTree) -> nnx.Module:
        """Rebuild the module from pure-dict parameters (traceable under jit)."""
        trainable = jax.tree.map(lambda x: x, self.params_template)
        nnx.replace_by_pure_dict(trainable, params)
        rest = jax.tree.map(lambda x: x, self.frozen_template)
        nnx.replace_by_pure_dict(rest, frozen)
        return nnx.merge(self.graphdef, trainable, rest)


def trainable_filter(trainable: str):
    """Linear probe versus full finetune is only this filter: which parameters the optimizer sees."""
    if trainable == "head":
        return nnx.All(nnx.Param, nnx.PathContains("head"))
    return nnx.Param


def make_optimizer(cfg: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    """AdamW with linear warm-up and cosine decay to zero."""
    warmup = max(1, int(cfg.lr_warmup_frac * total_steps)) if cfg.lr_warmup_frac > 0 else 0
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0 if warmup else cfg.lr,
        peak_value=cfg.lr,
        warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1),
        end_value=0.0,
    )
    return optax.adamw(schedule, weight_decay=cfg.weight_decay)


def init_state(module: nnx.Module, cfg: TrainConfig, tx: optax.GradientTransformation) -> tuple[Model, TrainState]:
    """Split a freshly built module into its static ``Model`` and an initial ``TrainState``."""
    graphdef, trainable, rest = nnx.split(module, trainable_filter(cfg.trainable), ...)
    if not jax.tree.leaves(trainable):
        raise ValueError(f"train.trainable={cfg.trainable!r} leaves no trainable parameter in the model")
    model = Model(graphdef, jax.eval_shape(lambda: trainable), jax.eval_shape(lambda: rest))
    params = nnx.to_pure_dict(trainable)
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        frozen=nnx.to_pure_dict(rest),
        opt_state=tx.init(params),
        # A distinct copy: the step donates its input state, and XLA refuses one buffer donated twice.
        best_params=jax.tree.map(lambda a: jnp.array(a, copy=True), params),
        best_score=jnp.full((), -jnp.inf, jnp.float32),
        evals_since_best=jnp.zeros((), jnp.int32),
        first_nonfinite_step=jnp.full((), -1, jnp.int32),
        first_loss=jnp.full((), jnp.nan, jnp.float32),
        blowup_step=jnp.full((), -1, jnp.int32),
        finished=jnp.zeros((), jnp.bool_),
    )
    return model, state


# ---- pure steps -----------------------------------------------------------------------------

def make_train_step(model: Model, tx: optax.GradientTransformation, loss_fn: LossFn, total_steps: int):
    """``train_step(state, batch, rng) -> (state, metrics)``, pure and not yet jitted.

    ``batch = {"inputs": pytree [B, ...], "labels": [B, C] probabilities, "weights": [B]}``.
    ``rng`` is the stage's base key; the step folds in its own step number, so every step draws
    fresh randomness reproducibly without the host doing anything per step.
    """

    def train_step(state: TrainState, batch: dict, rng: jax.Array):
        step_frac = state.step.astype(jnp.float32) / total_steps
        rng = jax.random.fold_in(rng, state.step)
        del rng  # no stochastic layers in the built-in models; kept for dropout or augmentation

        def objective(params):
            logits = model.bind(params, state.frozen)(batch["inputs"])
            loss = loss_fn(logits, batch["labels"], step_frac=step_frac, weights=batch["weights"])
            return loss, logits

        (loss, logits), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        finite = jnp.isfinite(loss)
        first_bad = jnp.where(
            (state.first_nonfinite_step < 0) & ~finite, state.step, state.first_nonfinite_step
        )
        first_loss = jnp.where(state.step == 0, loss.astype(jnp.float32), state.first_loss)
        blowup = (state.blowup_step < 0) & (loss > DIVERGENCE_FACTOR * first_loss)
        step_metrics = {
            "loss": loss,
            "grad_norm": optax.tree.norm(grads),
            "label_agreement": metrics.accuracy(logits, batch["labels"]),
        }
        new_state = state.replace(
            step=state.step + 1, params=params, opt_state=opt_state, first_nonfinite_step=first_bad,
            first_loss=first_loss, blowup_step=jnp.where(blowup, state.step, state.blowup_step),
        )
        return new_state, step_metrics

    return train_step


def make_predict_step(model: Model):
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
    """Parameters replicated (or fsdp-sharded when the mesh has an fsdp axis); scalars replicated."""
    return parallel.param_shardings(mesh, jax.eval_shape(lambda: state))


def jit_train_step(train_step, mesh: Mesh, state_sharding):
    return jax.jit(
        train_step,
        in_shardings=(state_sharding, parallel.batch_sharding(mesh), parallel.replicated(mesh)),
        out_shardings=(state_sharding, parallel.replicated(mesh)),
        donate_argnums=(0,),
    )


def stacked_batch_sharding(mesh: Mesh):
    """Where a stack of batches ``[K, B, ...]`` lives: the step axis whole, the batch axis split."""
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, *parallel.batch_sharding(mesh).spec))


def make_train_loop(train_step, mesh: Mesh, *, shape_step=None):
    """``loop(state, batches, count, rng) -> (state, metrics)``: ``count`` train steps in one call.

    ``batches`` stacks up to ``K`` batches on a leading axis (``[K, B, ...]``); the first ``count``
    of them are used, in order, so one compiled program serves every chunk length up to ``K``.
    Running many steps per call keeps the host out of the inner loop: for a linear probe the
    per-call dispatch and transfer cost far more than the step itself. The returned metrics are
    those of the last step run. ``shape_step`` (default ``train_step``) is traced once abstractly
    for the metrics' shapes; pass the unwrapped step when ``train_step`` counts its traces.
    """
    shape_step = train_step if shape_step is None else shape_step
    rows = parallel.batch_sharding(mesh)

    def loop(state: TrainState, batches: dict, count: jax.Array, rng: jax.Array):
        def batch_at(i):
            batch = jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, i, 0, keepdims=False), batches)
            return jax.lax.with_sharding_constraint(batch, rows)

        out_shapes = jax.eval_shape(shape_step, state, batch_at(0), rng)[1]
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), out_shapes)

        def body(i, carry):
            return train_step(carry[0], batch_at(i), rng)

        return jax.lax.fori_loop(0, count, body, (state, zeros))

    return loop


def jit_train_loop(train_loop, mesh: Mesh, state_sharding):
    """The loop of `make_train_loop` jitted with the state donated (updated in place)."""
    replicated = parallel.replicated(mesh)
    return jax.jit(
        train_loop,
        in_shardings=(state_sharding, stacked_batch_sharding(mesh), replicated, replicated),
        out_shardings=(state_sharding, replicated),
        donate_argnums=(0,),
    )


# A sweep runs the same kind of stage many times (seeds, ceilings and w2s students sharing a
# loss). Handing jax.jit the same function object for the same model, optimizer and loss lets
# its cache reuse the compiled program instead of compiling once per stage.
_COMPILED: "collections.OrderedDict[tuple, Any]" = collections.OrderedDict()
_COMPILED_MAX = 64


def _memo(key: tuple, build: Callable[[], Any]) -> Any:
    try:
        value = _COMPILED.pop(key)
    except KeyError:
        value = build()
    _COMPILED[key] = value
    while len(_COMPILED) > _COMPILED_MAX:
        _COMPILED.popitem(last=False)
    return value


def _abstract_key(tree: PyTree) -> tuple:
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple((tuple(x.shape), jnp.dtype(x.dtype).name) for x in leaves)


def _model_key(model: Model) -> tuple:
    """Equal for two models of the same structure, whatever their parameter values."""
    return model.graphdef, _abstract_key(model.params_template), _abstract_key(model.frozen_template)


def cached_predict_step(model: Model):
    """`make_predict_step`, one function object per model structure (so `predict` compiles once)."""
    return _memo(("predict", _model_key(model)), lambda: make_predict_step(model))


# ---- batching -------------------------------------------------------------------------------

@dataclasses.dataclass
class ArrayData:
    """A dataset held in host memory: ``inputs`` (array or dict of arrays), ``labels`` [N, C], ``weights`` [N]."""

    inputs: PyTree
    labels: np.ndarray
    weights: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, idx: np.ndarray) -> dict:
        w = np.ones(len(idx), np.float32) if self.weights is None else self.weights[idx]
        return {
            "inputs": jax.tree.map(lambda a: a[idx], self.inputs),
            "labels": self.labels[idx].astype(np.float32),
            "weights": w.astype(np.float32),
        }


def steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, n // batch_size)


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Example indices of global step ``step``: a fresh seeded permutation each epoch, last partial batch dropped.

    A pure function of ``(seed, step)``, so a resumed run continues with exactly the batches an
    uninterrupted run would have seen: the data position is just the step.
    """
    per_epoch = steps_per_epoch(n, batch_size)
    epoch, k = divmod(step, per_epoch)
    return _epoch_permutation(n, seed, epoch)[k * batch_size : (k + 1) * batch_size].copy()


@functools.lru_cache(maxsize=8)
def _epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    # Drawn once per epoch, not once per step: the loop asks for every step's rows.
    return np.random.default_rng([seed, epoch]).permutation(n)


def effective_batch_size(n: int, batch_size: int, num_shards: int) -> int:
    """The batch size used for ``n`` examples: at most ``n``, and a multiple of the device count."""
    b = min(batch_size, n)
    b -= b % num_shards
    if b <= 0:
        raise ValueError(f"only {n} examples to split over {num_shards} devices")
    return b


def to_global(mesh: Mesh, host_batch: PyTree) -> PyTree:
    """A host batch (the same on every process) as global arrays, each process supplying its rows."""
    n = int(jax.tree.leaves(host_batch)[0].shape[0])
    rows = parallel.process_slice(n, mesh)
    return parallel.global_batch_array(mesh, jax.tree.map(lambda a: a[rows], host_batch))


# ---- prediction over a dataset --------------------------------------------------------------

def predict(predict_step, state: TrainState, inputs: PyTree, *, mesh: Mesh, batch_size: int, use_best=False) -> np.ndarray:
    """Probabilities for every example, in fixed-size batches (the last one padded), so one shape compiles."""
    n = int(jax.tree.leaves(inputs)[0].shape[0])
    b = max(mesh.size, batch_size - batch_size % mesh.size)
    out = []
    for start in range(0, n, b):
        idx = np.arange(start, min(start + b, n))
        chunk = jax.tree.map(lambda a: a[idx], inputs)
        pad = b - len(idx)
        if pad:  # repeat the last row; the padded outputs are dropped below
            chunk = jax.tree.map(lambda a: np.concatenate([a, np.repeat(a[-1:], pad, 0)]), chunk)
        global_chunk = to_global(mesh, chunk)
        probs = _predict_jit(predict_step, use_best)(state, global_chunk)
        out.append(parallel.host_gather(probs)[: len(idx)])
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


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
    model: Model
    state: TrainState
    predict_step: Callable
    steps: int
    stopped_early: bool
    resumed_from: int | None


def fit(
    module: nnx.Module,
    data: ArrayData,
    *,
    cfg: TrainConfig,
    loss: str,
    mesh: Mesh,
    seed: int,
    val: ArrayData | None = None,
    stage: str = "train",
    ckpt: StageCheckpoint | None = None,
    log: Callable[[dict], None] | None = None,
    progress: bool = True,
    step_wrapper: Callable | None = None,
) -> FitResult:
    """Train ``module`` on ``data`` and return the final (or best-on-validation) state.

    Resumes from ``ckpt`` when it holds a step of this stage; the batches after a resume are the
    ones an uninterrupted run would have used (see :func:`batch_indices`). ``step_wrapper``
    wraps the pure step before jitting (tests pass ``chex.assert_max_traces``).
    """
    from tqdm.auto import tqdm
    batch_size = effective_batch_size(len(data), cfg.batch_size, mesh.size)
    per_epoch = steps_per_epoch(len(data), batch_size)
    total = max(1, math.ceil(cfg.epochs * per_epoch))
    eval_every = cfg.eval_every or per_epoch

    tx = make_optimizer(cfg, total)
    model, state = init_state(module, cfg, tx)
    shardings = state_shardings(mesh, state)
    resumed_from = ckpt.latest_step() if ckpt is not None else None
    restored = None
    if resumed_from is not None:
        abstract = jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(np.shape(x), jnp.asarray(x).dtype, sharding=s), state, shardings
        )
        restored = ckpt.restore(abstract)  # None: no step could be restored, start over
    state = place(state, shardings) if restored is None else restored

    chunk = _chunk_size(cfg, total)
    if step_wrapper is None:
        key = ("train_loop", _model_key(model), cfg, loss, total, chunk, _sharding_key(shardings))
        train_loop = _memo(key, lambda: _build_train_loop(model, tx, cfg, loss, total, mesh, shardings))
    else:  # a wrapped step (e.g. a trace counter) gets its own, uncached program
        raw = make_train_step(model, tx, make_loss(loss, cfg), total)
        loop = make_train_loop(step_wrapper(raw), mesh, shape_step=raw)
        train_loop = jit_train_loop(loop, mesh, shardings)
    predict_step = cached_predict_step(model)
    remember = _memo(("record_eval", _sharding_key(shardings)),
                     lambda: jax.jit(record_eval, donate_argnums=(0,), out_shardings=shardings))
    base_rng = place(jax.random.key_data(jax.random.key(seed)), parallel.replicated(mesh))

    start = total if bool(state.finished) else int(state.step)
    stopped_early = False
    bar = tqdm(total=total, initial=start, desc=stage, leave=False, disable=not (progress and parallel.is_main_process()))
    step = start
    while step < total:
        # Run up to the next step where the host has something to do (log, eval, checkpoint).
        done = _next_stop(step, total, (cfg.log_every, _MAX_CHUNK, eval_every if val is not None else 0, cfg.checkpoint_every))
        idx = np.stack([batch_indices(len(data), batch_size, seed, s) for s in range(step, done)])
        idx = np.concatenate([idx, np.repeat(idx[-1:], chunk - len(idx), 0)])  # unused padding rows
        host = jax.tree.map(lambda a: a.reshape(idx.shape + a.shape[1:]), data.take(idx.reshape(-1)))
        batches = to_global_stacked(mesh, host)
        count = place(np.int32(done - step), parallel.replicated(mesh))
        state, step_metrics = train_loop(state, batches, count, base_rng)
        signals.check()  # a Ctrl-C that a callback swallowed stops the run here
        bar.update(done - step)
        step = done
        if done % cfg.log_every == 0 or done == total:
            check_divergence(state, stage, cfg.lr)
            if log is not None:
                log({"stage": stage, "step": done, **{k: float(v) for k, v in step_metrics.items()}})
        if val is not None and (done % eval_every == 0 or done == total):
            probs = predict(predict_step, state, val.inputs, mesh=mesh, batch_size=cfg.batch_size)
            score = float(metrics.accuracy(probs, val.labels))
            state = remember(state, place(np.float32(score), parallel.replicated(mesh)))
            if log is not None:
                log({"stage": stage, "step": done, "val_accuracy": score})
            if cfg.early_stopping and cfg.patience and int(state.evals_since_best) >= cfg.patience:
                stopped_early = True
        if ckpt is not None and cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < total:
            ckpt.save(done, state)
        if stopped_early:
            break
    bar.close()
    check_divergence(state, stage, cfg.lr)
    if cfg.early_stopping and val is not None:
        state = state.replace(params=state.best_params)
    state = state.replace(finished=place(np.ones((), np.bool_), parallel.replicated(mesh)))
    return FitResult(model, state, predict_step, int(state.step), stopped_early, resumed_from)


_MAX_CHUNK = 32  # steps per call at most: bounds the stacked batches held on the host


def _chunk_size(cfg: TrainConfig, total: int) -> int:
    """Batches stacked per call (at least the longest run between stops): a power of two, so
    stages with similar settings share one compile."""
    longest = max(1, min(cfg.log_every, total, _MAX_CHUNK))
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


def _build_train_loop(model: Model, tx, cfg: TrainConfig, loss: str, total: int, mesh: Mesh, shardings):
    step = make_train_step(model, tx, make_loss(loss, cfg), total)
    return jit_train_loop(make_train_loop(step, mesh), mesh, shardings)


def to_global_stacked(mesh: Mesh, host_batches: PyTree) -> PyTree:
    """Stacked host batches ``[K, B, ...]`` (the same on every process) as global arrays split on ``B``."""
    b = int(jax.tree.leaves(host_batches)[0].shape[1])
    rows = parallel.process_slice(b, mesh)
    sharding = stacked_batch_sharding(mesh)
    return jax.tree.map(
        lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)[:, rows], np.shape(a)), host_batches
    )


def place(tree: PyTree, shardings) -> PyTree:
    """Put host values (identical on every process) onto ``shardings``, which may span processes.

    ``jax.device_put`` only reaches this process's devices; building each array from a callback
    works for any sharding, on one host or many.
    """
    def one(leaf, sharding):
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    if not isinstance(shardings, jax.sharding.Sharding):
        return jax.tree.map(one, tree, shardings)
    return jax.tree.map(lambda leaf: one(leaf, shardings), tree)


# ---- divergence -----------------------------------------------------------------------------

DIVERGENCE_FACTOR = 100.0  # a loss this many times its step-0 value means the stage diverged


def check_divergence(state: TrainState, stage: str, lr: float) -> None:
    """FloatingPointError naming the stage and step if its loss went non-finite or blew up.

    A non-finite loss at step 0 comes before any update, so it points at the inputs (damaged
    weights or data), not at the learning rate.
    """
    bad, blowup = int(state.first_nonfinite_step), int(state.blowup_step)
    if bad == 0:
        raise FloatingPointError(f"stage {stage}: the loss is NaN or infinite at step 0, before any update: "
                                 "a damaged input (model weights or data) is likely")
    if bad > 0:
        raise FloatingPointError(f"stage {stage}: the loss became NaN or infinite at step {bad}; "
                                 f"lower its learning rate (lr={lr:g})")
    if blowup >= 0:
        raise FloatingPointError(
            f"stage {stage}: the loss diverged at step {blowup} (over {DIVERGENCE_FACTOR:g}x its starting "
            f"value {float(state.first_loss):.4g}); lower its learning rate (lr={lr:g})")


def check_not_collapsed(probs: np.ndarray, labels: np.ndarray, stage: str, step: int) -> None:
    """FloatingPointError if the model predicts one class on all of a class-balanced slice of the
    validation rows (as many of each class as the rarest has): it learned nothing but a constant.

    Skipped when some class is missing from ``labels``.
    """
    classes = probs.shape[1]
    counts = np.bincount(labels, minlength=classes)
    if classes < 2 or counts.min() == 0:
        return
    slice_rows = np.concatenate([np.flatnonzero(labels == c)[: counts.min()] for c in range(classes)])
    predicted = np.unique(np.argmax(probs[slice_rows], axis=1))
    if len(predicted) == 1:
        raise FloatingPointError(
            f"stage {stage}: after step {step} the model predicts class {int(predicted[0])} for all "
            f"{len(slice_rows)} examples of a balanced validation slice; the stage diverged or learned "
            "nothing (lower train.lr?)")
