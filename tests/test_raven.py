"""RAVEN-style learned supervisor weights: the loss against numpy, and the weights it learns."""

import numpy as np
import pytest

from w2sjax.methods import raven


def clustered(seed, n=600, d=16):
    """Two Gaussian classes in strong-feature space; supervisors of accuracy 0.9, 0.7, and random."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = (rng.standard_normal((2, d)) * 1.5)[y] + rng.standard_normal((n, d))

    def supervisor(acc):
        label = np.where(rng.random(n) < acc, y, 1 - y)
        p = np.full((n, 2), 0.2)
        p[np.arange(n), label] = 0.8
        return p

    random = np.eye(2)[rng.integers(0, 2, n)] * 0.8 + 0.1  # confident and uninformative
    return x, y, {"good": supervisor(0.9), "noisy": supervisor(0.7), "random": random}


def test_mixture_loss_matches_numpy():
    rng = np.random.default_rng(0)
    x, w, b, a = rng.standard_normal((5, 3)), rng.standard_normal((3, 2)), rng.standard_normal(2), rng.standard_normal(3)
    weak = rng.dirichlet([1, 1], (3, 5))
    mix = np.exp(a) / np.exp(a).sum()
    target = np.einsum("k,knc->nc", mix, weak)
    z = x @ w + b
    log_q = z - np.log(np.exp(z).sum(1, keepdims=True))
    expected = -np.mean(np.sum(target * log_q, 1))
    got = raven.mixture_loss({"w": w, "b": b, "a": a}, x.astype(np.float32), weak.astype(np.float32))
    assert float(got) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_learned_weights_favour_the_accurate_supervisor_when_one_is_random(seed):
    x, y, sups = clustered(seed)
    order = list(np.random.default_rng(seed).permutation(list(sups)))  # no position bias
    weights, head = raven.learned_weights(x, [sups[k] for k in order], seed=seed)
    w = dict(zip(order, weights))
    assert w["good"] > 0.8, w
    assert w["random"] < 0.1, w
    assert np.isclose(weights.sum(), 1.0, atol=1e-5)
    # The jointly trained student recovers the true classes better than the best supervisor.
    assert np.mean(np.argmax(x @ head["w"] + head["b"], 1) == y) > 0.9


def test_identical_supervisors_keep_uniform_weights():
    x, _, sups = clustered(0)
    weights, _ = raven.learned_weights(x, [sups["good"]] * 3, steps=100)
    np.testing.assert_allclose(weights, 1 / 3, atol=1e-5)
