"""Losses against an independent numpy implementation written here, plus gradients and sharding."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from w2sjax import losses


# ---- independent numpy reference ------------------------------------------------------------

def np_softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def np_xent(logits, target, weights=None):
    logp = np.log(np_softmax(logits.astype(np.float64)))
    per = -(target * logp).sum(-1)
    if weights is None:
        return per.mean()
    return (weights * per).sum() / weights.sum()


def np_alpha(step_frac, alpha_max=0.5, warmup_frac=0.2):
    return alpha_max * min(1.0, step_frac / warmup_frac)


def np_hard(p, weak):
    if p.shape[1] == 2:
        t = np.quantile(p[:, 0], weak[:, 1].mean())  # numpy's default is linear interpolation
        return np.stack([p[:, 0] >= t, p[:, 0] < t], -1).astype(np.float64)
    return np.eye(p.shape[1])[p.argmax(-1)]


def np_logconf_target(logits, weak, step_frac, **kw):
    a = np_alpha(step_frac, **kw)
    p = np_softmax(logits.astype(np.float64))
    return (1 - a) * weak + a * np_hard(p, weak)


def random_batch(rng, b, c, *, logit_scale=2.0):
    logits = (rng.normal(size=(b, c)) * logit_scale).astype(np.float32)
    weak = np_softmax(rng.normal(size=(b, c)) * 2.0).astype(np.float32)
    return logits, weak


# ---- values ---------------------------------------------------------------------------------

@pytest.mark.parametrize("b,c", [(1, 2), (7, 2), (64, 2), (5, 3), (32, 10)])
def test_xent_matches_numpy(b, c):
    rng = np.random.default_rng(b * 100 + c)
    logits, weak = random_batch(rng, b, c)
    np.testing.assert_allclose(losses.xent(logits, weak), np_xent(logits, weak), rtol=1e-5, atol=1e-6)
    w = rng.uniform(0.1, 2.0, size=b).astype(np.float32)
    np.testing.assert_allclose(losses.xent(logits, weak, weights=w), np_xent(logits, weak, w), rtol=1e-5, atol=1e-6)


def test_xent_one_hot_with_extreme_logits_is_finite():
    logits = np.array([[100.0, -100.0], [-100.0, 100.0]], np.float32)
    labels = np.eye(2, dtype=np.float32)
    assert float(losses.xent(logits, labels)) == pytest.approx(0.0, abs=1e-6)


def test_all_zero_weights_give_zero_not_nan():
    logits, weak = random_batch(np.random.default_rng(0), 4, 2)
    assert float(losses.xent(logits, weak, weights=np.zeros(4, np.float32))) == 0.0


@pytest.mark.parametrize("step_frac", [0.0, 0.05, 0.1, 0.2, 0.7, 1.0])
def test_confidence_alpha_is_a_linear_ramp(step_frac):
    assert float(losses.confidence_alpha(step_frac)) == pytest.approx(np_alpha(step_frac), abs=1e-7)
    assert float(losses.confidence_alpha(step_frac, alpha_max=0.75, warmup_frac=0.5)) == pytest.approx(
        np_alpha(step_frac, 0.75, 0.5), abs=1e-7
    )
    assert float(losses.confidence_alpha(step_frac, warmup_frac=0.0)) == pytest.approx(0.5)


@pytest.mark.parametrize("b,c", [(1, 2), (2, 2), (9, 2), (128, 2), (6, 4), (40, 7)])
@pytest.mark.parametrize("step_frac", [0.0, 0.1, 0.6])
def test_logconf_matches_numpy(b, c, step_frac):
    rng = np.random.default_rng(b + 13 * c)
    logits, weak = random_batch(rng, b, c)
    want = np_xent(logits, np_logconf_target(logits, weak, step_frac))
    got = losses.logconf(logits, weak, step_frac=step_frac)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    w = rng.uniform(0.0, 1.0, size=b).astype(np.float32) + 0.01
    want_w = np_xent(logits, np_logconf_target(logits, weak, step_frac), w)
    np.testing.assert_allclose(losses.logconf(logits, weak, step_frac=step_frac, weights=w), want_w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("positive", [0.0, 1.0])
def test_logconf_all_weak_labels_one_class(positive):
    rng = np.random.default_rng(3)
    logits, _ = random_batch(rng, 16, 2)
    weak = np.tile(np.array([[1 - positive, positive]], np.float32), (16, 1))
    want = np_xent(logits, np_logconf_target(logits, weak, 1.0))
    np.testing.assert_allclose(losses.logconf(logits, weak, step_frac=1.0), want, rtol=1e-5, atol=1e-6)
    hard = np.asarray(losses.hardened_target(jax.nn.softmax(logits), weak))
    if positive == 0.0:  # quantile at 0 is the minimum: every p0 >= t, so all class 0
        assert (hard[:, 0] == 1).all()


def test_logconf_ties_in_student_probabilities():
    # Many identical rows: p0 >= t puts the whole tied block on one side, exactly as numpy does.
    logits = np.array([[0.3, -0.3]] * 6 + [[1.0, 0.0]] * 3 + [[-2.0, 1.0]] * 3, np.float32)
    weak = np_softmax(np.random.default_rng(4).normal(size=(12, 2))).astype(np.float32)
    want = np_xent(logits, np_logconf_target(logits, weak, 0.5))
    np.testing.assert_allclose(losses.logconf(logits, weak, step_frac=0.5), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (0.5, 2.0), (0.0, 1.0), (1.0, 0.0)])
def test_product_matches_numpy(alpha, beta):
    rng = np.random.default_rng(5)
    logits, weak = random_batch(rng, 20, 3)
    weak[0] = [1.0, 0.0, 0.0]  # a zero weak probability must not produce nan
    t = weak.astype(np.float64) ** alpha * np_softmax(logits.astype(np.float64)) ** beta
    t /= t.sum(-1, keepdims=True)
    np.testing.assert_allclose(losses.product(logits, weak, alpha=alpha, beta=beta), np_xent(logits, t), rtol=1e-5)


def test_entropy_conf_matches_numpy():
    rng = np.random.default_rng(6)
    logits, weak = random_batch(rng, 10, 2)
    p = np_softmax(logits.astype(np.float64))
    a = np_alpha(0.3)
    want = ((1 - a) * -(weak * np.log(p)).sum(-1) + a * -(p * np.log(p)).sum(-1)).mean()
    np.testing.assert_allclose(losses.entropy_conf(logits, weak, step_frac=0.3), want, rtol=1e-5)


def test_reverse_xent_matches_numpy():
    rng = np.random.default_rng(7)
    logits, weak = random_batch(rng, 10, 4)
    weak[1] = [0, 1, 0, 0]
    p = np_softmax(logits.astype(np.float64))
    want = -(p * np.log(np.clip(weak, 1e-4, 1.0))).sum(-1).mean()
    np.testing.assert_allclose(losses.reverse_xent(logits, weak), want, rtol=1e-5)


# ---- gradients ------------------------------------------------------------------------------

@pytest.mark.parametrize("c", [2, 5])
def test_logconf_gradient_is_softmax_minus_target_over_b(c):
    rng = np.random.default_rng(8 + c)
    logits, weak = random_batch(rng, 24, c)
    grad = jax.grad(lambda z: losses.logconf(z, weak, step_frac=0.8))(jnp.asarray(logits))
    target = np_logconf_target(logits, weak, 0.8)  # the hardened part must carry no gradient
    want = (np_softmax(logits.astype(np.float64)) - target) / logits.shape[0]
    np.testing.assert_allclose(grad, want, atol=1e-6)


def test_xent_and_product_gradients_are_analytic():
    rng = np.random.default_rng(9)
    logits, weak = random_batch(rng, 16, 3)
    p = np_softmax(logits.astype(np.float64))
    np.testing.assert_allclose(jax.grad(losses.xent)(jnp.asarray(logits), weak), (p - weak) / 16, atol=1e-6)
    t = weak * p
    t /= t.sum(-1, keepdims=True)
    grad = jax.grad(lambda z: losses.product(z, weak))(jnp.asarray(logits))
    np.testing.assert_allclose(grad, (p - t) / 16, atol=1e-6)


# ---- sharding and tracing -------------------------------------------------------------------

def test_logconf_sharded_over_8_devices_equals_single_device():
    assert jax.device_count() == 8, "conftest should provide 8 fake CPU devices"
    rng = np.random.default_rng(10)
    logits, weak = random_batch(rng, 64, 2)
    w = rng.uniform(0.5, 1.5, size=64).astype(np.float32)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    shard = NamedSharding(mesh, P("data"))
    fn = jax.jit(lambda z, y, w: losses.logconf(z, y, step_frac=0.7, weights=w))
    sharded = fn(jax.device_put(logits, shard), jax.device_put(weak, shard), jax.device_put(w, shard))
    single = fn(logits, weak, w)  # uncommitted numpy inputs: runs on one device
    assert len(jax.device_put(logits, shard).sharding.device_set) == 8
    np.testing.assert_allclose(sharded, single, rtol=1e-6)
    np.testing.assert_allclose(sharded, np_xent(logits, np_logconf_target(logits, weak, 0.7), w), rtol=1e-5)


def test_train_loop_does_not_recompile_as_step_frac_changes():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(32, 6)).astype(np.float32)
    _, weak = random_batch(rng, 32, 2)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(w, step_frac):
        loss, g = jax.value_and_grad(lambda w: losses.logconf(x @ w, weak, step_frac=step_frac))(w)
        return w - 0.1 * g, loss

    w = jnp.zeros((6, 2))
    first = None
    for i in range(20):
        w, loss = step(w, jnp.float32(i / 20))
        first = loss if first is None else first
    assert float(loss) < float(first)
    chex.clear_trace_counter()


# ---- input checks at trace time --------------------------------------------------------------

@pytest.mark.parametrize("name", ["xent", "logconf", "product", "entropy_conf", "reverse_xent"])
def test_integer_labels_are_a_clear_error_at_trace_time(name):
    """The issue's case: integer labels [B] used to fail with 'Too many indices' deep in jax."""
    fn = getattr(losses, name)
    kwargs = {"step_frac": 0.5} if name in ("logconf", "entropy_conf") else {}
    ids = jnp.array([0, 1, 1, 0])
    with pytest.raises(ValueError, match=r"must be probabilities \[B, C\].*jax\.nn\.one_hot\(ids, 2\)"):
        jax.jit(lambda z, y: fn(z, y, **kwargs))(jnp.zeros((4, 2)), ids)
    with pytest.raises(ValueError, match=r"do not match logits \(4, 2\)"):
        fn(jnp.zeros((4, 2)), jnp.full((4, 3), 1 / 3), **kwargs)
    with pytest.raises(ValueError, match=r"weights must be \[B\]"):
        fn(jnp.zeros((4, 2)), jax.nn.one_hot(ids, 2), weights=jnp.ones((4, 1)), **kwargs)
    # The fix the message suggests works.
    assert jnp.isfinite(fn(jnp.zeros((4, 2)), jax.nn.one_hot(ids, 2), **kwargs))


def test_losses_module_still_imports_jax_alone():
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(losses))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= {"jax", "__future__"}, imported
