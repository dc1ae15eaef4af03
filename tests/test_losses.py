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
    """Integer labels [B] used to fail with 'Too many indices' deep in jax."""
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


def test_losses_module_imports_jax_alone_and_only_when_a_loss_runs():
    """Third-party: jax only. And not at import: w2sjax.config reads the registry before JAX starts."""
    import ast
    import inspect
    import subprocess
    import sys

    tree = ast.parse(inspect.getsource(losses))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported - set(sys.stdlib_module_names) <= {"jax"}, imported
    code = (
        "import sys, numpy as np, w2sjax.losses, w2sjax.config, w2sjax.runner.stage_keys\n"
        "assert 'jax' not in sys.modules, 'imported jax before any loss ran'\n"
        "print(float(w2sjax.losses.xent(np.zeros((1, 2)), np.eye(2)[:1])))\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('flax', 'optax', 'orbax', 'tensorflow_datasets')]\n"
        "assert 'jax' in sys.modules and not heavy, heavy\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert float(out.stdout) == pytest.approx(np.log(2.0))


# ---- where=, reduction=, padding ------------------------------------------------------------

SCHEDULED = {"logconf": {"step_frac": 0.7}, "entropy_conf": {"step_frac": 0.4}}
NAMES = ["xent", "logconf", "product", "entropy_conf", "reverse_xent"]


def call(name, logits, labels, **kwargs):
    return getattr(losses, name)(logits, labels, **SCHEDULED.get(name, {}), **kwargs)


def padded(logits, weak, pad, rng, *, garbage=False, shuffle=True):
    """``pad`` extra rows (random, or nan/inf when ``garbage``), then a shuffle; and the mask of real rows.
    The real rows keep their order among themselves: ``where`` promises the bits of ``loss(x[where])``,
    and a sum over the same rows in another order may round differently."""
    b, c = logits.shape
    extra_z, extra_y = random_batch(rng, pad, c)
    if garbage:
        extra_z[:] = np.nan
        extra_z[::2] = np.inf
        extra_y[:] = np.nan
    order = np.sort(rng.permutation(b + pad)[:b]) if shuffle else np.arange(b)
    order = np.concatenate([order, np.setdiff1d(np.arange(b + pad), order)])
    order = np.argsort(order, kind="stable")
    mask = (np.arange(b + pad) < b)[order]
    return np.concatenate([logits, extra_z])[order], np.concatenate([weak, extra_y])[order], mask


@pytest.mark.parametrize("b,pad", [(1, 3), (12, 4), (31, 1), (32, 32), (100, 28), (129, 127)])
@pytest.mark.parametrize("shuffle", [False, True])
def test_logconf_with_where_equals_logconf_on_the_unpadded_rows_bit_for_bit(b, pad, shuffle):
    """Padded rows leave everything alone, the quantile and the mean of the weak labels included:
    the same bits, eagerly and under jit, at the end of the batch or anywhere in it."""
    rng = np.random.default_rng(b * 1000 + pad)
    logits, weak = random_batch(rng, b, 2)
    logits_p, weak_p, mask = padded(logits, weak, pad, rng, shuffle=shuffle)
    np.testing.assert_array_equal(logits_p[mask], logits)
    want = np.asarray(losses.logconf(logits, weak, step_frac=0.7))
    got = np.asarray(losses.logconf(logits_p, weak_p, step_frac=0.7, where=mask))
    assert got.tobytes() == want.tobytes(), (got, want)
    jitted = jax.jit(lambda z, y, m: losses.logconf(z, y, step_frac=0.7, where=m))
    plain = jax.jit(lambda z, y: losses.logconf(z, y, step_frac=0.7))
    assert np.asarray(jitted(logits_p, weak_p, mask)).tobytes() == np.asarray(plain(logits, weak)).tobytes()
    hard = np.asarray(losses.hardened_target(jax.nn.softmax(logits_p), weak_p, where=mask))
    np.testing.assert_array_equal(hard[mask], np_hard(np_softmax(logits_p[mask].astype(np.float64)), weak_p[mask]))
    # The padding changes the unmasked loss (so the test above can tell).
    assert np.asarray(losses.logconf(logits_p, weak_p, step_frac=0.7)).tobytes() != want.tobytes()


@pytest.mark.parametrize("name", NAMES)
def test_where_equals_dropping_the_rows_for_every_loss_value_and_gradient(name):
    rng = np.random.default_rng(NAMES.index(name))
    logits, weak = random_batch(rng, 20, 2)
    w = rng.uniform(0.1, 2.0, size=20).astype(np.float32)
    logits_p, weak_p, mask = padded(logits, weak, 12, rng, garbage=True)
    w_p = np.ones(len(mask), np.float32)
    w_p[mask] = w
    value, grad = jax.value_and_grad(lambda z: call(name, z, weak_p, weights=w_p, where=mask))(jnp.asarray(logits_p))
    want_value, want_grad = jax.value_and_grad(lambda z: call(name, z, weak, weights=w))(jnp.asarray(logits))
    assert np.asarray(value).tobytes() == np.asarray(want_value).tobytes()
    # Garbage (nan, inf) in padded rows reaches neither the value nor the gradient.
    assert np.all(np.asarray(grad)[~mask] == 0.0)
    np.testing.assert_array_equal(np.asarray(grad)[mask], want_grad)


@pytest.mark.parametrize("name", NAMES)
def test_reduction_none_gives_the_weighted_per_example_values(name):
    rng = np.random.default_rng(40 + NAMES.index(name))
    logits, weak = random_batch(rng, 9, 2)
    w = rng.uniform(0.1, 2.0, size=9).astype(np.float32)
    mask = rng.uniform(size=9) > 0.3
    per = np.asarray(call(name, logits, weak, reduction="none"))
    assert per.shape == (9,)
    if name == "xent":  # against numpy, row by row
        np.testing.assert_allclose(per, -(weak * np.log(np_softmax(logits.astype(np.float64)))).sum(-1), rtol=1e-5)
    if name == "logconf":
        target = np_logconf_target(logits, weak, 0.7)
        np.testing.assert_allclose(per, -(target * np.log(np_softmax(logits.astype(np.float64)))).sum(-1), rtol=1e-5)
    np.testing.assert_allclose(float(call(name, logits, weak)), per.mean(), rtol=1e-6)
    # With weights and a mask: w_i l_i, zero where masked; the mean is their sum over the kept weight.
    kept = np.asarray(call(name, logits[mask], weak[mask], weights=w[mask], reduction="none"))
    masked = np.asarray(call(name, logits, weak, weights=w, where=mask, reduction="none"))
    np.testing.assert_array_equal(masked[~mask], 0.0)
    np.testing.assert_allclose(masked[mask], kept, rtol=1e-6)
    np.testing.assert_allclose(float(call(name, logits, weak, weights=w, where=mask)), kept.sum() / w[mask].sum(),
                               rtol=1e-5)
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'none'"):
        call(name, logits, weak, reduction="sum")


@pytest.mark.parametrize("name", NAMES)
def test_a_mask_that_keeps_nothing_gives_zero(name):
    logits, weak = random_batch(np.random.default_rng(50), 6, 2)
    assert float(call(name, logits, weak, where=np.zeros(6, bool))) == 0.0
    with pytest.raises(ValueError, match=r"where must be \[B\]"):
        call(name, logits, weak, where=np.ones((6, 1), bool))


# ---- gradients by finite differences ----------------------------------------------------------

@pytest.mark.parametrize("name", ["xent", "logconf", "entropy_conf", "reverse_xent"])
def test_gradients_match_finite_differences(name):
    """``check_grads``: forward and reverse mode against finite differences, with weights and a mask.
    logconf's rows are spread apart so no step of the check moves one across its quantile (its
    hardened target is piecewise constant). ``product`` is left out on purpose: its target depends
    on the logits but is stop-gradiented, which finite differences cannot see; its gradient is
    checked against the closed form above."""
    from jax.test_util import check_grads

    rng = np.random.default_rng(60)
    b = 8
    logits = np.stack([np.linspace(-2.0, 2.0, b), np.zeros(b)], -1).astype(np.float32)[rng.permutation(b)]
    weak = np_softmax(rng.normal(size=(b, 2))).astype(np.float32)
    w = rng.uniform(0.5, 1.5, size=b).astype(np.float32)
    mask = np.arange(b) != 3
    f = lambda z: call(name, z, weak, weights=w, where=mask)
    check_grads(f, (jnp.asarray(logits),), order=1, modes=("fwd", "rev"), atol=2e-2, rtol=2e-2, eps=1e-2)
    if name == "xent":  # smooth in logits and labels: second order as well
        check_grads(lambda z, y: losses.xent(z, y, weights=w), (jnp.asarray(logits), jnp.asarray(weak)), order=2,
                    modes=("rev",), atol=2e-2, rtol=2e-2, eps=1e-2)


# ---- bfloat16 ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_bfloat16_inputs_give_float32_losses_close_to_float32(name):
    """bf16 logits and labels (8 bits of mantissa: ~0.4% rounding) give a finite float32 loss
    within 2% of the float32 one, and a finite bf16 gradient."""
    rng = np.random.default_rng(70 + NAMES.index(name))
    logits = np.stack([np.linspace(-3.0, 3.0, 32), np.zeros(32)], -1).astype(np.float32)[rng.permutation(32)]
    weak = np_softmax(rng.normal(size=(32, 2)) * 2.0).astype(np.float32)
    full = float(call(name, logits, weak))
    low = call(name, jnp.asarray(logits, jnp.bfloat16), jnp.asarray(weak, jnp.bfloat16))
    assert low.dtype == jnp.float32 and np.isfinite(float(low))
    assert float(low) == pytest.approx(full, rel=2e-2, abs=1e-3)
    grad = jax.grad(lambda z: call(name, z, jnp.asarray(weak, jnp.bfloat16)))(jnp.asarray(logits, jnp.bfloat16))
    assert grad.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(grad, np.float32)))


# ---- docstring examples -----------------------------------------------------------------------

def run_docstring_examples(mod, at_least: int) -> None:
    """Every public function of ``mod`` shows an example, and every example holds."""
    import doctest
    import inspect

    for name in mod.__all__:
        obj = getattr(mod, name)
        if inspect.isfunction(obj) and obj.__module__ == mod.__name__:
            assert ">>>" in (obj.__doc__ or ""), f"{mod.__name__}.{name} has no example"
    result = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted >= at_least, result


def test_docstring_examples_run():
    run_docstring_examples(losses, 35)
