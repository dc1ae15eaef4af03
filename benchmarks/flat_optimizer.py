"""AdamW over one flat buffer instead of one update per parameter tensor: variants of the train
program for `benchmarks.compile_options --optimizer NAME` (defined here, patched in; not library code).

MiniLM-L6 has 103 parameter tensors, all float32, and the library's AdamW (`train.OPTIMIZER`) updates
each on its own: about 4,900 of the bf16 train program's ~11,900 StableHLO ops and ~200 of its ~1,400
fusions. The variants ask whether fewer, larger updates compile cheaper:

- ``adamw``: the library's program, as `w2sjax run` compiles it.
- ``flatten``: ``optax.flatten(adamw)``: gradients and parameters concatenated into one vector each
  step, the moments kept flat, the update split back into tensors.
- ``flatcarry``: the moments flat in the state, and the parameters flat inside the loop (raveled once
  on entry, split once on exit); each step slices its tensors out of the flat vector and concatenates
  the gradients into one.
- ``sgd``: plain SGD, no moments: a lower bound on what any AdamW layout can save.
"""

from __future__ import annotations

OPTIMIZERS = ("adamw", "flatten", "flatcarry", "sgd")


def _ravel(tree):
    import jax
    import jax.numpy as jnp

    return jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(tree)])


def _unravel(flat, like):
    import jax
    import jax.numpy as jnp
    import numpy as np

    leaves, treedef = jax.tree.flatten(like)
    parts = jnp.split(flat, np.cumsum([int(np.size(x)) for x in leaves])[:-1])
    return treedef.unflatten([p.reshape(np.shape(x)) for p, x in zip(parts, leaves)])


def flat_moments(state):
    """``state`` (a `train.TrainState`) with AdamW's moments raveled into one vector each."""
    opt = state.opt_state
    adam = opt.inner_state[0]
    inner = (adam._replace(mu=_ravel(adam.mu), nu=_ravel(adam.nu)), *opt.inner_state[1:])
    return state.replace(opt_state=opt._replace(inner_state=inner))


def _flat_step(state, flat_params, batch, rng, settings, *, model, like):
    """`train.train_step` with the parameters as one vector (``like``: their tree, for shapes)."""
    import jax
    import jax.numpy as jnp
    import optax

    from w2sjax import metrics, train

    del rng
    step_frac = state.step.astype(jnp.float32) / settings.total_steps.astype(jnp.float32)

    def objective(params):
        logits = model.bind(params, state.frozen)(batch["inputs"])
        loss = train.stage_loss(logits, batch["labels"], step_frac=step_frac, weights=batch["weights"],
                                settings=settings)
        return loss, logits

    (loss, logits), grads = jax.value_and_grad(objective, has_aux=True)(_unravel(flat_params, like))
    hyper = {**state.opt_state.hyperparams, "learning_rate": train.learning_rate(state.step, settings),
             "weight_decay": settings.weight_decay}
    updates, opt_state = train.OPTIMIZER.update(_ravel(grads), state.opt_state._replace(hyperparams=hyper),
                                                flat_params)
    finite = jnp.isfinite(loss)  # the divergence bookkeeping of train.train_step, unchanged
    first_bad = jnp.where((state.first_nonfinite_step < 0) & ~finite, state.step, state.first_nonfinite_step)
    first_loss = jnp.where(state.step == 0, loss.astype(jnp.float32), state.first_loss)
    blowup = (state.blowup_step < 0) & (loss > train.DIVERGENCE_FACTOR * first_loss)
    step_metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads),
                    "label_agreement": metrics.accuracy(logits, batch["labels"])}
    state = state.replace(step=state.step + 1, opt_state=opt_state, first_nonfinite_step=first_bad,
                          first_loss=first_loss, blowup_step=jnp.where(blowup, state.step, state.blowup_step))
    return state, optax.apply_updates(flat_params, updates), step_metrics


def _flatcarry_loop(state, batches, count, rng, settings, *, model, mesh):
    import jax
    import jax.numpy as jnp

    from w2sjax import parallel

    rows = parallel.batch_sharding(mesh)
    like = state.params

    def batch_at(i):
        batch = jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, i, 0, keepdims=False), batches)
        return jax.lax.with_sharding_constraint(batch, rows)

    step = lambda s, p, b: _flat_step(s, p, b, rng, settings, model=model, like=like)
    rest, flat = state.replace(params=None), _ravel(state.params)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(step, rest, flat, batch_at(0))[2])
    rest, flat, step_metrics = jax.lax.fori_loop(0, count, lambda i, c: step(c[0], c[1], batch_at(i)),
                                                 (rest, flat, zeros))
    state = rest.replace(params=_unravel(flat, like))
    return (jax.lax.with_sharding_constraint(state, parallel.param_shardings(mesh, state)),
            jax.lax.with_sharding_constraint(step_metrics, parallel.replicated(mesh)))


def patch(name: str):
    """Make ``name`` the optimizer of the train program; returns ``(train_loop, state_fn, static)``: the
    jitted loop to lower and call (the arguments of `train.train_loop`), what turns an initial
    `train.TrainState` into the one it takes, and its static keyword arguments besides model and mesh."""
    import jax
    import optax

    from w2sjax import train

    if name not in OPTIMIZERS:
        raise ValueError(f"--optimizer: expected one of {', '.join(OPTIMIZERS)}, got {name!r}")
    if name == "adamw":
        return train.train_loop, lambda s: s, {"step_wrapper": None}
    if name == "sgd":
        def sgd(learning_rate, weight_decay):
            del weight_decay
            return optax.sgd(learning_rate)

        train.OPTIMIZER = optax.inject_hyperparams(sgd)(learning_rate=0.0, weight_decay=0.0)
        return train.train_loop, lambda s: s, {"step_wrapper": None}
    if name == "flatten":
        def flat_adamw(learning_rate, weight_decay):
            return optax.flatten(optax.adamw(learning_rate, weight_decay=weight_decay))

        train.OPTIMIZER = optax.inject_hyperparams(flat_adamw)(learning_rate=0.0, weight_decay=0.0)
        return train.train_loop, lambda s: s, {"step_wrapper": None}
    return jax.jit(_flatcarry_loop, static_argnames=("model", "mesh"), donate_argnums=(0,)), flat_moments, {}
