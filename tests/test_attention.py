"""Grouped-query attention (`w2sjax.models.layers.attend`) against numpy with repeated KV heads.

The library never repeats the key/value heads: query head ``h`` reads KV head ``h // group``
through a grouped einsum. The reference here does it the plain way (``np.repeat`` of K and V
to every query head, float64 softmax), so it is independent of the code under test.
"""

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from w2sjax.models import layers


def _reference(q, k, v, keep, scale, round_bf16: bool):
    r = (lambda a: a.astype(ml_dtypes.bfloat16).astype(np.float64)) if round_bf16 else (lambda a: a)
    group = q.shape[2] // k.shape[2]
    k, v = np.repeat(k, group, axis=2), np.repeat(v, group, axis=2)  # [B, S, H, d]
    scores = np.einsum("bqhd,bshd->bhqs", r(q), r(k)) * scale
    scores = np.where(keep[:, None], scores, -np.inf)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    p = p / p.sum(-1, keepdims=True)
    out = np.einsum("bhqs,bshd->bqhd", r(p), r(v))
    return out.reshape(q.shape[0], q.shape[1], -1)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_grouped_attention_equals_repeated_kv_heads(dtype):
    rng = np.random.default_rng(0)
    b, t, h, kv, d = 2, 5, 6, 2, 4
    q = rng.normal(size=(b, t, h, d)).astype(np.float32)
    k, v = (rng.normal(size=(b, t, kv, d)).astype(np.float32) for _ in range(2))
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], np.int32)  # the second row right-padded
    keep = np.asarray(layers.decoder_mask(jnp.asarray(mask)))
    assert keep[1, 4, 3] == 0 and keep[0, 1, 2] == 0 and keep[0, 2, 1] == 1  # padding and causality
    got = layers.attend(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), jnp.asarray(keep), d ** -0.5,
                        dtype=jnp.dtype(dtype))
    want = _reference(q.astype(np.float64), k.astype(np.float64), v.astype(np.float64), keep, d ** -0.5,
                      round_bf16=dtype == "bfloat16")
    assert got.shape == (b, t, h * d) and got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5 if dtype == "float32" else 2e-2)


def test_keys_major_encoder_attention_matches_numpy_with_mask_and_bias():
    """The bf16 encoders' attention (`layers.attend_keys_major`, scores laid out key-major) against
    a float64 numpy softmax attention with bf16-rounded operands, a padded key and an additive bias."""
    import jax

    rng = np.random.default_rng(1)
    b, t, h, d = 2, 5, 3, 4
    q, k, v = (rng.normal(size=(b, t, h, d)).astype(np.float32) for _ in range(3))
    bias = rng.normal(size=(1, h, t, t)).astype(np.float32)  # [1, heads, query, key]
    mask = np.ones((b, t), bool)
    mask[1, 3:] = False
    keep = mask[:, None, None, :]
    r = lambda a: a.astype(ml_dtypes.bfloat16).astype(np.float64)
    scores = np.einsum("bqhd,bkhd->bhqk", r(q), r(k)) * 0.5 + bias
    scores = np.where(keep, scores, -np.inf)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    want = np.einsum("bhqk,bkhd->bqhd", r(p), r(v)).reshape(b, t, h * d)
    got = jax.jit(layers.attend_keys_major, static_argnums=4)(q, k, v, jnp.asarray(keep), 0.5, jnp.asarray(bias))
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-2 * np.abs(want).max())
    no_bias = layers.attend_keys_major(q, k, v, jnp.asarray(keep), 0.5)
    assert not np.allclose(np.asarray(no_bias), np.asarray(got))


def test_gelu_through_erf_is_the_exact_gelu():
    """The bf16 encoders' GELU form agrees with the erf GELU computed in float64 to float32 rounding."""
    import math

    x = np.linspace(-9, 9, 2001).astype(np.float32)
    want = np.array([0.5 * a * (1 + math.erf(a / math.sqrt(2))) for a in x.astype(np.float64)])
    np.testing.assert_allclose(np.asarray(layers.gelu_erf(jnp.asarray(x))), want, atol=2e-6, rtol=1e-6)
    import jax

    pdf = np.exp(-0.5 * x.astype(np.float64) ** 2) / math.sqrt(2 * math.pi)
    slope = want / np.where(x == 0, 1, x) + x * pdf  # cdf + x * pdf
    slope[x == 0] = 0.5
    np.testing.assert_allclose(np.asarray(jax.vmap(jax.grad(layers.gelu_erf))(jnp.asarray(x))), slope, atol=2e-6)


def test_keys_major_attention_gradients_match_float32_autodiff():
    """The custom backward pass of the bf16 encoder attention (bf16 cotangents into all four
    matmuls) against autodiff of a float32 softmax attention, bias gradient included."""
    import jax

    rng = np.random.default_rng(2)
    b, t, h, d = 2, 6, 2, 4
    q, k, v = (jnp.asarray(rng.normal(size=(b, t, h, d)), jnp.float32) for _ in range(3))
    bias = jnp.asarray(rng.normal(size=(1, h, t, t)), jnp.float32)
    keep = jnp.asarray(np.arange(t)[None, None, None, :] < np.array([6, 4])[:, None, None, None])
    dout = jnp.asarray(rng.normal(size=(b, t, h * d)), jnp.float32)

    def reference(q, k, v, bias):
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) * 0.5 + bias
        p = jax.nn.softmax(jnp.where(keep, scores, -jnp.inf), axis=-1)
        return jnp.einsum("bhqk,bkhd->bqhd", p, v).reshape(b, t, h * d)

    want = jax.vjp(reference, q, k, v, bias)[1](dout)
    got = jax.vjp(lambda *a: layers.attend_keys_major(*a[:3], keep, 0.5, a[3]), q, k, v, bias)[1](dout)
    for name, g, w in zip(("dq", "dk", "dv", "dbias"), got, want):
        assert g.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=3e-2 * float(jnp.abs(w).max()), err_msg=name)


def _rotate_np(x, cos, sin):
    half = x.shape[-1] // 2
    return x * cos + np.concatenate([-x[..., half:], x[..., :half]], axis=-1) * sin


def test_decoder_attention_backward_matches_float64_numpy_with_rotary_gqa_and_window():
    """The bf16 decoders' attention (`layers.attend_rotary`: rotary, grouped-query causal attention
    with a sliding window and padding, and its own backward) against float64 numpy: the forward
    exactly as `apply_rotary` + `attend` compute it, and the gradients of q, k, v against the
    float64 chain rule (numerical differences of the float64 forward)."""
    import jax

    rng = np.random.default_rng(3)
    b, t, h, kv, d = 2, 6, 4, 2, 4
    q = rng.normal(size=(b, t, h, d)).astype(np.float32)
    k, v = (rng.normal(size=(b, t, kv, d)).astype(np.float32) for _ in range(2))
    mask = np.array([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]], np.int32)  # the first row left-padded
    keep = layers.decoder_mask(jnp.asarray(mask), sliding_window=3)
    pos = layers.real_positions(jnp.asarray(mask))
    cos, sin = layers.rotary(pos, d, 10000.0)
    dout = rng.normal(size=(b, t, h * d)).astype(np.float32)
    dout[0, :2] = 0.0  # padded queries feed nothing downstream (the readout takes the last real token)
    scale = d ** -0.5

    fast = jax.jit(lambda *a: layers.attend_rotary(*a, cos, sin, keep, scale, dtype=jnp.bfloat16))
    plain = layers.attend(layers.apply_rotary(jnp.asarray(q), cos, sin), layers.apply_rotary(jnp.asarray(k), cos, sin),
                          jnp.asarray(v), keep, scale, dtype=jnp.bfloat16)
    np.testing.assert_array_equal(np.asarray(fast(q, k, v)), np.asarray(plain))

    c64, s64, keep64 = (np.asarray(a).astype(np.float64) for a in (cos, sin, keep))

    def reference(q, k, v):  # float64 throughout, KV heads repeated; padded queries (no key) give 0
        qr, kr = _rotate_np(q, c64, s64), _rotate_np(k, c64, s64)
        with np.errstate(invalid="ignore"):
            return np.nan_to_num(_reference(qr, kr, v, keep64.astype(bool), scale, round_bf16=False))

    args = [a.astype(np.float64) for a in (q, k, v)]
    got = jax.vjp(fast, q, k, v)[1](jnp.asarray(dout))
    for i, name in enumerate(("dq", "dk", "dv")):
        want = np.zeros_like(args[i])
        for idx in np.ndindex(args[i].shape):  # central differences of the linear functional <dout, out>
            plus, minus = [list(args) for _ in range(2)]
            plus[i], minus[i] = args[i].copy(), args[i].copy()
            plus[i][idx] += 1e-5
            minus[i][idx] -= 1e-5
            want[idx] = np.sum(dout * (reference(*plus) - reference(*minus))) / 2e-5
        assert got[i].dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(got[i]), want, atol=3e-2 * np.abs(want).max(), err_msg=name)


def test_rms_norm_keeps_flax_forward_and_matches_float64_gradients():
    """`layers.rms_norm`'s own backward: the forward bit for bit flax's ``nnx.RMSNorm``, the input
    and scale gradients against the float64 formulas."""
    import jax
    from flax import nnx

    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 5, 16)).astype(np.float32) * 2
    dy = rng.normal(size=(3, 5, 16)).astype(np.float32)
    norm = nnx.RMSNorm(16, epsilon=1e-5, use_fast_variance=False, rngs=nnx.Rngs(0))
    norm.scale[...] = jnp.asarray(rng.normal(size=16), jnp.float32)
    np.testing.assert_array_equal(np.asarray(jax.jit(layers.rms_norm)(norm, x)), np.asarray(jax.jit(norm)(x)))

    def loss(norm, x):
        return jnp.sum(layers.rms_norm(norm, x) * dy)

    gnorm, gx = jax.jit(jax.grad(loss, argnums=(0, 1)))(norm, jnp.asarray(x))
    x64, dy64, s64 = x.astype(np.float64), dy.astype(np.float64), np.asarray(norm.scale[...], np.float64)
    r = 1 / np.sqrt((x64 ** 2).mean(-1, keepdims=True) + 1e-5)
    xhat = x64 * r
    want_scale = (dy64 * xhat).sum((0, 1))
    g = dy64 * s64
    want_x = r * (g - xhat * (g * xhat).mean(-1, keepdims=True))
    np.testing.assert_allclose(np.asarray(gx), want_x, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(gnorm.scale[...]), want_scale, rtol=1e-4, atol=1e-5)


def test_rotary_tables_picked_by_a_dot_equal_the_inline_form_bit_for_bit(monkeypatch):
    """`llama.rotary_picked` picks each position's row of a once-computed table with a one-hot dot
    (so XLA cannot fuse cos and sin into every consumer): the values equal `llama.rotary`'s
    computed on their own, bit for bit, under left and right padding, and past the pick's limit."""
    import jax

    from w2sjax.models import llama

    inv_freq = jnp.asarray(1.0 / (10000.0 ** (np.arange(0, 8, 2) / 8)), jnp.float32)
    mask = np.ones((3, 40), np.int32)
    mask[0, :7], mask[1, 30:] = 0, 0
    positions = layers.real_positions(jnp.asarray(mask))
    want = [np.asarray(a).view(np.uint32) for a in jax.jit(llama.rotary)(positions, inv_freq)]
    for limit in (512, 16):  # the dot, then the inline form for sequences past the limit
        monkeypatch.setattr(llama, "ROTARY_PICK_MAX", limit)
        got = jax.jit(llama.rotary_picked)(positions, inv_freq)
        for g, w in zip(got, want):
            assert g.shape == (3, 40, 1, 8)
            np.testing.assert_array_equal(np.asarray(g).view(np.uint32), w)


def test_float32_decoder_attention_reads_the_picked_tables_only_when_differentiated():
    """float32 `layers.attend_rotary` given the picked tables: without gradients it is the inline form
    (`apply_rotary` + `attend`) bit for bit, so frozen features do not move; its gradients are
    autodiff's of the same form, to float32 rounding, and a float64 numpy chain rule agrees."""
    import jax

    from w2sjax.models import llama

    rng = np.random.default_rng(5)
    b, t, h, kv, d = 2, 6, 4, 2, 8
    q = rng.normal(size=(b, t, h, d)).astype(np.float32)
    k, v = (rng.normal(size=(b, t, kv, d)).astype(np.float32) for _ in range(2))
    mask = np.array([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]], np.int32)
    keep = layers.decoder_mask(jnp.asarray(mask))
    pos = layers.real_positions(jnp.asarray(mask))
    inv_freq = jnp.asarray(1.0 / (10000.0 ** (np.arange(0, d, 2) / d)), jnp.float32)
    cos, sin, cos_p, sin_p = llama.rope_tables(pos, inv_freq)
    dout = rng.normal(size=(b, t, h * d)).astype(np.float32)
    dout[0, :2] = 0.0  # padded queries feed nothing downstream
    scale = d ** -0.5

    fast = jax.jit(lambda q, k, v: layers.attend_rotary(q, k, v, cos, sin, keep, scale, dtype=jnp.float32,
                                                        picked=(cos_p, sin_p)))
    plain = jax.jit(lambda q, k, v: layers.attend(layers.apply_rotary(q, cos, sin), layers.apply_rotary(k, cos, sin),
                                                  v, keep, scale, dtype=jnp.float32))
    np.testing.assert_array_equal(np.asarray(fast(q, k, v)), np.asarray(plain(q, k, v)))

    got = jax.vjp(fast, q, k, v)[1](jnp.asarray(dout))
    want = jax.vjp(plain, q, k, v)[1](jnp.asarray(dout))
    c64, s64 = (np.asarray(a).astype(np.float64) for a in (cos, sin))
    keep64 = np.asarray(keep)

    def reference(q, k, v):
        with np.errstate(invalid="ignore"):
            return np.nan_to_num(_reference(_rotate_np(q, c64, s64), _rotate_np(k, c64, s64), v, keep64, scale,
                                            round_bf16=False))

    args = [a.astype(np.float64) for a in (q, k, v)]
    for i, name in enumerate(("dq", "dk", "dv")):
        assert got[i].dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(got[i]), np.asarray(want[i]), rtol=1e-5, atol=1e-6, err_msg=name)
        num = np.zeros_like(args[i])
        for idx in np.ndindex(args[i].shape):  # central differences of <dout, out> in float64
            plus, minus = [list(args) for _ in range(2)]
            plus[i], minus[i] = args[i].copy(), args[i].copy()
            plus[i][idx] += 1e-5
            minus[i][idx] -= 1e-5
            num[idx] = np.sum(dout * (reference(*plus) - reference(*minus))) / 2e-5
        np.testing.assert_allclose(np.asarray(got[i]), num, atol=1e-4 * np.abs(num).max(), err_msg=name)


def test_float32_gelu_keeps_jax_values_and_matches_the_float64_derivative():
    """`layers.gelu_erfc` (the float32 encoders' GELU): ``jax.nn.gelu(approximate=False)`` bit for bit, also
    in a differentiated forward, with the derivative ``cdf + x * pdf`` computed in float64 by ``math.erf``."""
    import math

    import jax

    x = jnp.asarray(np.linspace(-9, 9, 2001), jnp.float32)
    want = np.asarray(jax.jit(lambda x: jax.nn.gelu(x, approximate=False))(x)).view(np.uint32)
    np.testing.assert_array_equal(np.asarray(jax.jit(layers.gelu_erfc)(x)).view(np.uint32), want)

    def trained(x):  # a differentiated forward, jitted as training runs it, and its slope
        y, pull = jax.vjp(layers.gelu_erfc, x)
        return y, pull(jnp.ones_like(x))[0]

    y, slope = jax.jit(trained)(x)
    np.testing.assert_array_equal(np.asarray(y).view(np.uint32), want)
    x64 = np.asarray(x, np.float64)
    cdf = np.array([0.5 * (1 + math.erf(a / math.sqrt(2))) for a in x64])
    np.testing.assert_allclose(np.asarray(slope), cdf + x64 * np.exp(-0.5 * x64 ** 2) / math.sqrt(2 * math.pi),
                               atol=2e-6)
    auto = jax.vmap(jax.grad(lambda x: jax.nn.gelu(x, approximate=False)))(x)
    np.testing.assert_allclose(np.asarray(slope), np.asarray(auto), atol=2e-6)
