"""RAVEN-style learned supervisor weights (Jeon et al., "Weak-to-Strong Generalization under
Distribution Shifts").

With several weak supervisors and no ground truth, fit jointly a linear student
``q = softmax(x W + b)`` on the strong model's features and mixing logits ``a`` over the ``K``
supervisors, minimising

    L(W, b, a) = mean_i xent(q_i, sum_k softmax(a)_k p_k,i).

Why this finds the good supervisor: a supervisor whose labels the student's features cannot
explain (a random one, say) leaves irreducible cross-entropy, so the gradient on ``a`` moves mass
towards supervisors the student can agree with. It is a pure function of arrays: one jitted,
full-batch Adam loop under ``jax.lax.scan``. The ``supervisors`` method and users' own code call it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = ["learned_weights", "mixture_loss"]


def mixture_loss(params: dict, features: jax.Array, weak: jax.Array) -> jax.Array:
    """``mean_i xent(softmax(x_i W + b), sum_k softmax(a)_k weak[k, i])``; ``weak`` is ``[K, N, C]``."""
    target = jnp.tensordot(jax.nn.softmax(params["a"]), weak, axes=1)
    log_q = jax.nn.log_softmax(features @ params["w"] + params["b"])
    return -jnp.mean(jnp.sum(target * log_q, axis=-1))


def learned_weights(
    features, probs_list, *, steps: int = 500, lr: float = 0.05, weight_decay: float = 1e-4, seed: int = 0
) -> tuple[np.ndarray, dict]:
    """Mixing weights ``[K]`` (summing to one) and the student's parameters ``{"w", "b"}``.

    ``features``: ``[N, D]`` strong features; ``probs_list``: ``K`` arrays ``[N, C]`` of weak
    probabilities on the same rows. The mixture starts uniform; weight decay applies to ``W`` only
    (decaying ``a`` would pull the mixture back to uniform for no reason).
    """
    x = jnp.asarray(features, jnp.float32)
    weak = jnp.stack([jnp.asarray(p, jnp.float32) for p in probs_list])
    n_sup, _, n_classes = weak.shape
    params = {
        "w": 0.01 * jax.random.normal(jax.random.PRNGKey(seed), (x.shape[1], n_classes)),
        "b": jnp.zeros(n_classes),
        "a": jnp.zeros(n_sup),
    }
    tx = optax.adamw(lr, weight_decay=weight_decay, mask={"w": True, "b": False, "a": False})
    params = _train(params, tx.init(params), x, weak, tx=tx, steps=steps)
    return np.asarray(jax.nn.softmax(params["a"])), {"w": np.asarray(params["w"]), "b": np.asarray(params["b"])}


def _train(params, opt_state, x, weak, *, tx, steps):
    @jax.jit
    def loop(params, opt_state, x, weak):
        def step(carry, _):
            p, opt = carry
            grads = jax.grad(mixture_loss)(p, x, weak)
            updates, opt = tx.update(grads, opt, p)
            return (optax.apply_updates(p, updates), opt), None

        (params, _), _ = jax.lax.scan(step, (params, opt_state), None, length=steps)
        return params

    return loop(params, opt_state, x, weak)
