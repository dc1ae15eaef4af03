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
