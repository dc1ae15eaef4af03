"""Class-balanced hardening (``balanced_hardened_target``, the ``logconf_balanced`` loss) against an
independent numpy reference written here: quotas by largest remainder, then the pair-by-pair greedy
pass. Plus: agreement with logconf's quantile rule for C = 2, masks, jit, gradients, sharding."""

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


def np_quotas(weak):
    """Whole-row class counts for the rows of ``weak``: shares rounded by largest remainder."""
    n = len(weak)
    totals = weak.astype(np.float64).sum(0)
    shares = totals / totals.sum() * n if totals.sum() > 0 else np.zeros_like(totals)
    counts = np.floor(shares).astype(int)
    for c in np.argsort(-(shares - counts), kind="stable")[: n - counts.sum()]:
        counts[c] += 1
    return counts


def np_balanced(p, weak, where=None):
    """Greedy: (row, class) pairs by decreasing p (ties row-major), a row takes the class of its
    first pair whose class has room. Masked rows get a zero row."""
    keep = np.ones(len(p), bool) if where is None else np.asarray(where, bool)
    room = np_quotas(weak[keep])
    out = np.zeros(p.shape)
    done = ~keep
    flat = np.where(keep[:, None], p, -np.inf).ravel()
    for k in np.argsort(-flat, kind="stable"):
        i, c = divmod(int(k), p.shape[1])
        if not done[i] and room[c] > 0:
            out[i, c], done[i] = 1.0, True
            room[c] -= 1
    return out


def np_quantile_hard(p, weak):
    t = np.quantile(p[:, 0], weak[:, 1].mean())
    return np.stack([p[:, 0] >= t, p[:, 0] < t], -1).astype(np.float64)


def batch(rng, b, c, *, hard=False, lean=0.0):
    """Logits (``lean`` added to class 0 of every row: a student leaning to one class) and weak labels."""
    logits = rng.normal(size=(b, c)).astype(np.float32)
    logits[:, 0] += lean
    if hard:
        weak = np.eye(c, dtype=np.float32)[rng.integers(0, c, size=b)]
    else:
        weak = np_softmax(rng.normal(size=(b, c)) * 2.0).astype(np.float32)
    return logits, weak


# ---- values ---------------------------------------------------------------------------------

@pytest.mark.parametrize("b,c", [(1, 3), (7, 3), (32, 5), (64, 10), (5, 7), (40, 4)])
@pytest.mark.parametrize("hard", [False, True])
def test_balanced_target_matches_the_greedy_reference(b, c, hard):
    rng = np.random.default_rng(b * 100 + c + 7 * hard)
    logits, weak = batch(rng, b, c, hard=hard, lean=1.0)
    p = np.asarray(jax.nn.softmax(jnp.asarray(logits)))
    got = np.asarray(losses.balanced_hardened_target(p, weak))
    want = np_balanced(p.astype(np.float64), weak)
    np.testing.assert_array_equal(got, want)
    assert np.all(got.sum(1) == 1.0)
    np.testing.assert_array_equal(got.sum(0), np_quotas(weak))
    if hard:  # hard weak labels: exactly their class counts
        np.testing.assert_array_equal(got.sum(0), weak.sum(0))


def test_a_student_leaning_to_one_class_is_spread_over_the_weak_labels_shares():
    """The collapse it prevents: nearly flat weak labels (shares 0.4 / 0.35 / 0.25), a student that
    puts class 0 first in every row. argmax hardens the whole batch to class 0; the quotas keep
    the weak labels' shares, and within a class take its most confident rows."""
    rng = np.random.default_rng(3)
    b = 40
    weak = np.tile(np.array([0.4, 0.35, 0.25], np.float32), (b, 1)) + rng.uniform(-0.02, 0.02, (b, 3))
    weak = (weak / weak.sum(1, keepdims=True)).astype(np.float32)
    logits = rng.normal(size=(b, 3)).astype(np.float32) * 0.1
    logits[:, 0] += 1.0
    p = np.asarray(jax.nn.softmax(jnp.asarray(logits)))
    assert np.all(np.asarray(losses.hardened_target(p, weak)).argmax(1) == 0)
    got = np.asarray(losses.balanced_hardened_target(p, weak))
    np.testing.assert_array_equal(got.sum(0), [16, 14, 10])
    # class 0 holds the 16 rows with the highest p0
    np.testing.assert_array_equal(np.sort(np.flatnonzero(got[:, 0])), np.sort(np.argsort(-p[:, 0])[:16]))


def test_quotas_round_by_largest_remainder():
    # shares 3.6 / 3.3 / 3.1 of 10 rows: floors 3, 3, 3, the one row left to the largest remainder
    weak = np.tile(np.array([0.36, 0.33, 0.31], np.float32), (10, 1))
    np.testing.assert_array_equal(np.asarray(losses._class_quotas(jnp.asarray(weak), None)), [4, 3, 3])
    np.testing.assert_array_equal(np_quotas(weak), [4, 3, 3])
    # one class absent from the weak labels gets no row, even when the student prefers it
    weak = np.eye(3, dtype=np.float32)[[0, 0, 1, 1]]
    p = np.tile(np.array([0.1, 0.1, 0.8], np.float32), (4, 1)) + np.arange(4)[:, None] * 1e-3
    got = np.asarray(losses.balanced_hardened_target(p, weak))
    np.testing.assert_array_equal(got.sum(0), [2, 2, 0])


# ---- C = 2: the quantile rule ------------------------------------------------------------------

@pytest.mark.parametrize("b", [2, 5, 16, 33, 64, 128])
def test_for_two_classes_with_hard_weak_labels_it_is_the_quantile_rule(b):
    """With hard weak labels the class-1 share q is k/n, and the quantile rule's class-1 count
    ceil(q (n - 1)) = ceil(k - q) is k whenever 0 < q < 1: both rules pick the k rows with the
    highest p1."""
    rng = np.random.default_rng(b)
    logits, weak = batch(rng, b, 2, hard=True, lean=0.5)
    weak[0], weak[-1] = [1.0, 0.0], [0.0, 1.0]  # both classes present
    p = np.asarray(jax.nn.softmax(jnp.asarray(logits)))
    balanced = np.asarray(losses.balanced_hardened_target(p, weak))
    quantile = np.asarray(losses.hardened_target(p, weak))
    np.testing.assert_array_equal(balanced, quantile)
    np.testing.assert_array_equal(quantile, np_quantile_hard(p.astype(np.float64), weak))


@pytest.mark.parametrize("seed", range(8))
def test_for_two_classes_with_soft_weak_labels_the_counts_differ_by_at_most_one_row(seed):
    """With soft labels the two rules round the class-1 count differently: the quantile rule (numpy's
    linear interpolation at q = mean weak p1) makes ceil(q (n - 1)) rows class 1, the quotas
    round q n to the nearest whole row. They differ by at most one row, and the rows they pick
    are nested (both take the highest p1 first)."""
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(5, 60))
    logits, weak = batch(rng, n, 2)
    p = np.asarray(jax.nn.softmax(jnp.asarray(logits))).astype(np.float64)
    balanced = np.asarray(losses.balanced_hardened_target(p.astype(np.float32), weak))
    quantile = np_quantile_hard(p, weak)
    q = weak[:, 1].astype(np.float64).mean()
    assert quantile[:, 1].sum() == np.ceil(q * (n - 1))
    k = balanced[:, 1].sum()
    assert abs(k - quantile[:, 1].sum()) <= 1
    assert k == np_quotas(weak)[1]
    smaller, larger = sorted([balanced[:, 1], quantile[:, 1]], key=np.sum)
    assert np.all(smaller <= larger)


def test_logconf_balanced_is_logconf_bit_for_bit_for_two_classes():
    rng = np.random.default_rng(5)
    logits, weak = batch(rng, 48, 2)
    for frac in (0.0, 0.1, 0.7):
        a = losses.logconf_balanced(logits, weak, step_frac=frac)
        b = losses.logconf(logits, weak, step_frac=frac)
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


# ---- the loss: numpy, masks, jit, gradient, sharding -----------------------------------------

def np_target(logits, weak, step_frac, where=None):
    a = 0.5 * min(1.0, step_frac / 0.2)
    p = np_softmax(logits.astype(np.float64))
    return (1 - a) * weak + a * np_balanced(p, weak, where)


@pytest.mark.parametrize("b,c", [(9, 3), (32, 6)])
def test_logconf_balanced_value_and_gradient_match_numpy(b, c):
    """The hardened target is stop-gradiented: the gradient is (softmax - target) / B, with the
    target from the numpy reference; eager and jit agree."""
    rng = np.random.default_rng(b + c)
    logits, weak = batch(rng, b, c, lean=1.5)
    target = np_target(logits, weak, 0.7)
    p = np_softmax(logits.astype(np.float64))
    want = -(target * np.log(p)).sum(-1).mean()
    fn = lambda z: losses.logconf_balanced(z, weak, step_frac=0.7)
    value, grad = jax.value_and_grad(fn)(jnp.asarray(logits))
    np.testing.assert_allclose(float(value), want, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(grad), (p - target) / b, atol=1e-6)
    jitted, jgrad = jax.jit(jax.value_and_grad(fn))(jnp.asarray(logits))
    np.testing.assert_allclose(float(jitted), float(value), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(jgrad), np.asarray(grad), atol=1e-7)


@pytest.mark.parametrize("b,pad", [(1, 3), (12, 4), (31, 1), (32, 32)])
def test_masked_rows_change_nothing_bit_for_bit(b, pad):
    """Padding rows anywhere (holding nan and inf) leaves the kept rows' target, the loss and its
    gradient as on the unpadded batch, under jit too."""
    rng = np.random.default_rng(b * 10 + pad)
    logits, weak = batch(rng, b, 4, lean=1.0)
    order = rng.permutation(b + pad)
    mask = order < b
    logits_p = np.full((b + pad, 4), np.nan, np.float32)
    weak_p = np.full((b + pad, 4), np.inf, np.float32)
    logits_p[mask], weak_p[mask] = logits, weak  # kept rows stay in their order
    p = np.asarray(jax.nn.softmax(jnp.asarray(logits)))
    p_p = np.where(mask[:, None], np.asarray(jax.nn.softmax(jnp.asarray(np.nan_to_num(logits_p)))), np.nan)
    hard_p = np.asarray(losses.balanced_hardened_target(p_p, weak_p, where=mask))
    np.testing.assert_array_equal(hard_p[mask], np.asarray(losses.balanced_hardened_target(p, weak)))
    np.testing.assert_array_equal(hard_p[~mask], 0.0)
    fn = jax.jit(jax.value_and_grad(lambda z, y, m: losses.logconf_balanced(z, y, step_frac=0.7, where=m)))
    value, grad = fn(logits_p, weak_p, mask)
    want, want_grad = jax.jit(jax.value_and_grad(lambda z, y: losses.logconf_balanced(z, y, step_frac=0.7)))(
        logits, weak)
    assert np.asarray(value).tobytes() == np.asarray(want).tobytes()
    np.testing.assert_array_equal(np.asarray(grad)[mask], np.asarray(want_grad))
    assert np.all(np.asarray(grad)[~mask] == 0.0)


def test_sharded_over_8_devices_equals_single_device():
    assert jax.device_count() == 8, "conftest should provide 8 fake CPU devices"
    rng = np.random.default_rng(11)
    logits, weak = batch(rng, 64, 5, lean=1.0)
    shard = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), P("data"))
    fn = jax.jit(lambda z, y: losses.logconf_balanced(z, y, step_frac=0.7))
    sharded = fn(jax.device_put(logits, shard), jax.device_put(weak, shard))
    np.testing.assert_allclose(sharded, fn(logits, weak), rtol=1e-6)
    target = np_target(logits, weak, 0.7)
    np.testing.assert_allclose(sharded, -(target * np.log(np_softmax(logits.astype(np.float64)))).sum(-1).mean(),
                               rtol=1e-5)


def test_registered_beside_logconf_with_its_settings():
    loss = losses.LOSSES["logconf_balanced"]
    assert loss.scheduled and loss.defaults() == losses.LOSSES["logconf"].defaults()
    settings = {"alpha_max": 0.3, "conf_warmup_frac": 0.5}
    logits, weak = batch(np.random.default_rng(2), 6, 3)
    np.testing.assert_allclose(loss(logits, weak, settings=settings, step_frac=0.25),
                               losses.logconf_balanced(logits, weak, step_frac=0.25, alpha_max=0.3, warmup_frac=0.5))
