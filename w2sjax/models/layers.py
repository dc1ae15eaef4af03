"""Pieces several architectures share: activations, rotary embeddings, masked attention.

Numerics: scores, softmax and rotary are float32 whatever the compute dtype; masks are applied
with ``where`` (masked keys get exactly zero weight, a fully masked row gets uniform weights
instead of NaN).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["ACTIVATIONS", "activation", "gelu_erf", "gelu_erfc", "rotary", "apply_rotary", "attend", "attend_rotary",
           "attend_keys_major", "rms_norm"]

ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # erf GELU (BERT)
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),  # tanh GELU (GPT-2)
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_fast": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}


@jax.custom_jvp
def gelu_erf(x):
    """Exact (erf) GELU written with ``erf``: ``jax.nn.gelu(approximate=False)`` uses ``erfc``, which
    XLA:CPU evaluates about 2x slower (both branches of its piecewise form). The two agree to 1e-6
    in float32, far below the bf16 rounding of the FFN activation, so the bf16 encoders use this
    one; float32 keeps ``jax.nn.gelu``'s results unchanged. Its derivative ``cdf + x * pdf`` is
    formed in the forward pass that already evaluates ``erf``, and kept for the backward, which
    then is one multiply instead of a second ``erf`` and an ``exp`` over the FFN activations."""
    return x * _normal_cdf(x)


def _normal_cdf(x):
    return 0.5 * (1.0 + lax.erf(x * np.float32(np.sqrt(0.5)).astype(x.dtype)))


@gelu_erf.defjvp
def _gelu_erf_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    cdf = _normal_cdf(x)
    pdf = jnp.exp(-0.5 * x * x) * np.float32(1 / np.sqrt(2 * np.pi)).astype(x.dtype)
    return x * cdf, (cdf + x * pdf) * t


@jax.custom_vjp
def gelu_erfc(x):
    """``jax.nn.gelu(x, approximate=False)``, value for value (``0.5 * x * erfc(-x / sqrt(2))``, the float32
    encoders' GELU), whose backward recomputes the derivative ``cdf + x * pdf`` from ``x`` in the pass
    that multiplies the cotangent, with ``erf`` (half the cost of ``erfc`` on XLA:CPU) and ``exp``.
    Left to autodiff, XLA:CPU writes two of ``erfc``'s intermediates in the forward for the backward to
    read, and moves the derivative into the backward anyway: more memory passes over the FFN
    activations for nothing."""
    return _gelu_erfc(x)


def _gelu_erfc(x):
    return 0.5 * x * lax.erfc(-x * np.sqrt(0.5).astype(x.dtype))  # jax.nn.gelu's operations, in its order


def _gelu_erfc_bwd(x, dy):
    pdf = jnp.exp(-0.5 * x * x) * np.float32(1 / np.sqrt(2 * np.pi)).astype(x.dtype)
    return ((_normal_cdf(x) + x * pdf) * dy,)


gelu_erfc.defvjp(lambda x: (_gelu_erfc(x), x), _gelu_erfc_bwd)


def activation(name: str):
    """The activation a config names; ValueError listing the known ones otherwise."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unsupported activation {name!r}; known: {', '.join(sorted(ACTIVATIONS))}")
    return ACTIVATIONS[name]


def rotary(positions, head_dim: int, theta: float, scale: float = 1.0):
    """cos, sin ``[B, T, 1, head_dim]`` of the rotate-half rotary embedding (float32).

    ``scale`` > 1 is linear position interpolation (positions divided by it).
    """
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    freqs = (positions.astype(jnp.float32) / scale)[..., None] * inv_freq
    emb = jnp.concatenate([freqs, freqs], axis=-1)[:, :, None, :]
    return jnp.cos(emb), jnp.sin(emb)


def apply_rotary(x, cos, sin):
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


def attend(q, k, v, keep, scale: float, softcap: float | None = None, dtype=None):
    """Grouped-query attention: ``q [B,T,H,d]``, ``k, v [B,S,KV,d]``, ``keep [B,T,S]`` bool
    -> context ``[B, T, H*d]``. Query head ``h`` reads KV head ``h // (H // KV)`` (a grouped
    einsum: the KV heads are never repeated). ``softcap`` bounds the scores to
    ``(-softcap, softcap)`` with tanh (Gemma 2).

    ``dtype`` is the operand dtype of the two attention matmuls (None: ``v``'s). With bfloat16
    they run on the bf16 units and sum in float32, as the Linear layers do (`precision`); the
    bf16 ports' projections return float32, so without it these matmuls ran in float32."""
    b, t, h, d = q.shape
    kv = k.shape[2]
    dtype = v.dtype if dtype is None else dtype
    q = q.reshape(b, t, kv, h // kv, d).astype(dtype)
    scores = jnp.einsum("bqkgd,bskd->bkgqs", q, k.astype(dtype), preferred_element_type=jnp.float32) * scale
    if softcap is not None:
        scores = softcap * jnp.tanh(scores / softcap)
    scores = jnp.where(keep[:, None, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(dtype)
    out = jnp.einsum("bkgqs,bskd->bqkgd", probs, v.astype(dtype), preferred_element_type=jnp.float32)
    return out.reshape(b, t, h * d)


def attend_rotary(q, k, v, cos, sin, keep, scale: float, softcap: float | None = None, dtype=None,
                  picked=None):
    """The decoders' attention: rotary on ``q [B,T,H,d]`` and ``k [B,S,KV,d]`` (float32, tables
    from `rotary`), then `attend`. With bfloat16 ``dtype`` and no ``softcap`` it runs as one
    custom-gradient kernel (`_rotary_gqa`): the forward is `attend`'s, operation for operation,
    so frozen features and cached bottoms do not change; the backward rounds its cotangents to bf16
    as the Linear layers' does (`precision`), so all four of its matmuls take bf16 operands
    (autodiff ran them in float32 and rounded dq, dk and dv to bf16 instead), and undoes the
    rotary in the same pass. ``picked``: the same tables as ``cos, sin`` materialised once
    (`llama.rotary_picked`), which the training forward and backward read. Anything else is
    `apply_rotary` and `attend` as they are."""
    if softcap is not None or dtype is None or jnp.dtype(dtype) != jnp.dtype(jnp.bfloat16):
        if picked:  # training reads the materialised tables (`_rotary_tables`); the forward stays this
            return _rotary_tables(float(scale), softcap, dtype, q, k, v, cos, sin, keep, *picked)
        return _rotated_attend(float(scale), softcap, dtype, q, k, v, cos, sin, keep)
    f32 = lambda a: a.astype(jnp.float32)
    picked = tuple(picked) if picked else (cos, sin)
    return _rotary_gqa(float(scale), f32(q), f32(k), f32(v), cos, sin, keep, *picked)


def _rotated_attend(scale, softcap, dtype, q, k, v, cos, sin, keep):
    q, k = apply_rotary(q.astype(jnp.float32), cos, sin), apply_rotary(k.astype(jnp.float32), cos, sin)
    return attend(q, k, v, keep, scale, softcap=softcap, dtype=dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _rotary_tables(scale, softcap, dtype, q, k, v, cos, sin, keep, cos_p, sin_p):
    """`_rotated_attend` with the inline tables ``cos, sin`` (the forward without gradients keeps their
    values), whose training forward and autodiff backward read the materialised ``cos_p, sin_p``
    instead: inline, XLA:CPU evaluates cos and sin again for every element of q and k, in the fusion
    that also transposes them for the attention matmuls (about 16% of a float32 SmolLM2-135M step on
    an AVX2 CPU, 2026-12-07; benchmarks/RESULTS.md)."""
    return _rotated_attend(scale, softcap, dtype, q, k, v, cos, sin, keep)


def _rotary_tables_fwd(scale, softcap, dtype, q, k, v, cos, sin, keep, cos_p, sin_p):
    return jax.vjp(lambda q, k, v: _rotated_attend(scale, softcap, dtype, q, k, v, cos_p, sin_p, keep), q, k, v)


def _rotary_tables_bwd(scale, softcap, dtype, pull, dout):
    return (*pull(dout), None, None, None, None, None)


_rotary_tables.defvjp(_rotary_tables_fwd, _rotary_tables_bwd)


def _unrotate(g, cos, sin):
    """The transpose of `apply_rotary` (a rotation by minus the angle) applied to a cotangent."""
    half = g.shape[-1] // 2
    gs = g * sin
    return g * cos + jnp.concatenate([gs[..., half:], -gs[..., :half]], axis=-1)


def _rotated_bf16(q, k, v, cos, sin):
    """q, k rotated and ``q`` grouped ``[B, T, KV, group, d]``, then all three rounded to bf16."""
    b, t, h, d = q.shape
    kv = k.shape[2]
    q16 = apply_rotary(q, cos, sin).reshape(b, t, kv, h // kv, d).astype(jnp.bfloat16)
    return q16, apply_rotary(k, cos, sin).astype(jnp.bfloat16), v.astype(jnp.bfloat16)


def _rotary_gqa_primal(scale, q, k, v, cos, sin, keep, cos_p, sin_p):
    # The ops of `apply_rotary` + `attend(dtype=bf16)`, in their order, so the values are theirs:
    # what a forward pass without gradients (features, cached bottoms, predictions) computes.
    b, t, h, d = q.shape
    q16, k16, v16 = _rotated_bf16(q, k, v, cos, sin)
    scores = jnp.einsum("bqkgd,bskd->bkgqs", q16, k16, preferred_element_type=jnp.float32) * scale
    scores = jnp.where(keep[:, None, None], scores, jnp.finfo(jnp.float32).min)
    p16 = jax.nn.softmax(scores, axis=-1).astype(jnp.bfloat16)
    return jnp.einsum("bkgqs,bskd->bqkgd", p16, v16, preferred_element_type=jnp.float32).reshape(b, t, h * d)


def _rotary_gqa_fwd(scale, q, k, v, cos_inline, sin_inline, keep, cos, sin):
    # The training forward: the same arithmetic with the scores laid out keys-major
    # ``[B, KV, group, key, query]``, so the softmax's max and sum run across rows (XLA:CPU splits
    # a reduction along rows into slow ``reduce-window`` trees; see `attend_keys_major`). Values
    # agree with the primal's to float32 rounding of the sums. It reads the materialised tables.
    del cos_inline, sin_inline
    b, t, h, d = q.shape
    q16, k16, v16 = _rotated_bf16(q, k, v, cos, sin)
    keep_t = jnp.swapaxes(keep, -1, -2)[:, None, None]  # [B, 1, 1, key, query]
    scores = jnp.einsum("bskd,bqkgd->bkgsq", k16, q16, preferred_element_type=jnp.float32) * scale
    probs = jax.nn.softmax(jnp.where(keep_t, scores, jnp.finfo(jnp.float32).min), axis=-2)
    p16 = probs.astype(jnp.bfloat16)
    out = jnp.einsum("bkgsq,bskd->bqkgd", p16, v16, preferred_element_type=jnp.float32)
    return out.reshape(b, t, h * d), (q16, k16, v16, probs, p16, out, cos, sin, keep_t)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _rotary_gqa(scale, q, k, v, cos, sin, keep, cos_p, sin_p):
    return _rotary_gqa_primal(scale, q, k, v, cos, sin, keep, cos_p, sin_p)


def _rotary_gqa_bwd(scale, res, dout):
    q16, k16, v16, probs, p16, out, cos, sin, keep_t = res
    b, t, kv, g, d = q16.shape
    do = dout.reshape(b, t, kv, g, d)
    do16 = do.astype(jnp.bfloat16)
    dv = jnp.einsum("bkgsq,bqkgd->bskd", p16, do16, preferred_element_type=jnp.float32)
    dp = jnp.einsum("bqkgd,bskd->bkgsq", do16, v16, preferred_element_type=jnp.float32)
    # Softmax's backward in float32, with sum_s p * dp = <do, out> per query (FlashAttention's
    # form: a sum over the head's d features instead of over the keys); masked scores get no
    # gradient, as through `where`.
    rows = jnp.einsum("bqkgd->bkgq", do * out)[:, :, :, None, :]
    ds = jnp.where(keep_t, probs * (dp - rows), 0.0)
    ds16 = (ds * scale).astype(jnp.bfloat16)
    dq = jnp.einsum("bkgsq,bskd->bqkgd", ds16, k16, preferred_element_type=jnp.float32)
    dk = jnp.einsum("bkgsq,bqkgd->bskd", ds16, q16, preferred_element_type=jnp.float32)
    return (_unrotate(dq.reshape(b, t, kv * g, d), cos, sin), _unrotate(dk, cos, sin), dv) + (None,) * 5


_rotary_gqa.defvjp(_rotary_gqa_fwd, _rotary_gqa_bwd)


def attend_keys_major(q, k, v, keep, scale: float, bias=None):
    """Bidirectional multi-head attention with bf16 operands and float32 sums, for the bf16 encoders:
    ``q, k, v [B,T,H,d]``, ``keep [B,1,1,T]`` bool (real keys), ``bias`` ``[1,H,T,T]`` (query, key)
    or None -> context ``[B, T, H*d]``.

    The scores are laid out ``[B, H, key, query]``: the softmax's max and sum over keys then run
    across rows, which XLA:CPU vectorises, instead of along each row, which its tree-reduction pass
    splits into slow ``reduce-window`` loops (those were ~15% of a bf16 MiniLM-L6 forward;
    benchmarks/RESULTS.md). Mask and softmax stay float32, as in `attend`. The backward pass
    (`_keys_major`) rounds its cotangents to bf16 as the Linear layers' does (`precision`), so all
    four of its matmuls run on bf16 operands too; autodiff would leave them in float32."""
    b, t, h, d = q.shape
    bias_t = jnp.zeros((1, 1, 1, 1), jnp.float32) if bias is None else jnp.swapaxes(bias, -1, -2)
    out = _keys_major(scale, q.astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32),
                      jnp.swapaxes(keep, -1, -2), bias_t.astype(jnp.float32))
    return out.reshape(b, t, h * d)


def _bf16_einsum(spec, a, b):
    return jnp.einsum(spec, a.astype(jnp.bfloat16), b.astype(jnp.bfloat16), preferred_element_type=jnp.float32)


def _keys_major_fwd(scale, q, k, v, keep_t, bias_t):
    q16, k16, v16 = (a.astype(jnp.bfloat16) for a in (q, k, v))
    scores = _bf16_einsum("bknd,bqnd->bnkq", k16, q16) * scale + bias_t
    scores = jnp.where(keep_t, scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-2)
    p16 = probs.astype(jnp.bfloat16)
    out = _bf16_einsum("bnkq,bknd->bqnd", p16, v16)
    return out, (q16, k16, v16, probs, p16, jnp.zeros(bias_t.shape + (0,), bias_t.dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _keys_major(scale, q, k, v, keep_t, bias_t):
    return _keys_major_fwd(scale, q, k, v, keep_t, bias_t)[0]


def _keys_major_bwd(scale, res, dout):
    q16, k16, v16, probs, p16, bias_shape = res
    do16 = dout.astype(jnp.bfloat16)
    dv = _bf16_einsum("bnkq,bqnd->bknd", p16, do16)
    dp = _bf16_einsum("bqnd,bknd->bnkq", do16, v16)
    ds = probs * (dp - jnp.sum(probs * dp, axis=-2, keepdims=True))  # softmax's backward, float32
    dq = _bf16_einsum("bnkq,bknd->bqnd", ds * scale, k16)
    dk = _bf16_einsum("bnkq,bqnd->bknd", ds * scale, q16)
    # The bias is shared by the batch (and, when there is none, the zero stand-in by everything).
    dbias = jnp.sum(ds, axis=tuple(i for i, n in enumerate(bias_shape.shape[:-1]) if n == 1), keepdims=True)
    return dq, dk, dv, None, dbias


_keys_major.defvjp(_keys_major_fwd, _keys_major_bwd)


def rms_norm(norm, x, own_backward: bool = True):
    """``norm(x)`` for an ``nnx.RMSNorm`` (no mean subtracted): with ``own_backward`` the same
    forward values through a custom gradient whose scale gradient is a dot with a row of ones
    (`precision._token_sum`; XLA:CPU splits a sum over the tokens into slow ``reduce-window``
    trees) and whose input gradient is one pass with one row reduction. float32 throughout; only
    the order of the sums differs from autodiff. The bf16 decoders use it."""
    if not own_backward or norm.use_scale is False or norm.reduction_axes != -1 or norm.feature_axes != -1:
        return norm(x)
    return _rms(float(norm.epsilon), x.astype(jnp.float32), norm.scale[...].astype(jnp.float32))


def _rms_fwd(eps, x, scale):
    # flax's RMSNorm, operation for operation: var = mean(x^2), y = x * (rsqrt(var + eps) * scale).
    r = lax.rsqrt(jnp.mean(lax.square(x), axis=-1, keepdims=True) + eps)
    return x * (r * scale), (x, r, scale)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _rms(eps, x, scale):
    return _rms_fwd(eps, x, scale)[0]


def _rms_bwd(eps, res, dy):
    from w2sjax.models import precision

    x, r, scale = res
    xhat = x * r
    dxhat = dy * scale
    dx = r * (dxhat - xhat * jnp.mean(dxhat * xhat, axis=-1, keepdims=True))
    return dx, precision._token_sum(dy * xhat)


_rms.defvjp(_rms_fwd, _rms_bwd)


def decoder_mask(attention_mask, sliding_window: int | None = None):
    """``keep [B, q, k]`` for causal attention over real tokens; with ``sliding_window`` W a
    query also ignores keys W or more positions back (``q - k < W``, as transformers does)."""
    t = attention_mask.shape[1]
    q = jnp.arange(t)[:, None]
    k = jnp.arange(t)[None, :]
    allowed = k <= q
    if sliding_window is not None:
        allowed = allowed & (q - k < sliding_window)
    return allowed[None] & attention_mask.astype(bool)[:, None, :]


def real_positions(attention_mask):
    """Position ids that count real tokens (``cumsum(mask) - 1``), so a left- or right-padded
    example sees the same positions as the unpadded one."""
    return jnp.maximum(jnp.cumsum(attention_mask.astype(jnp.int32), axis=1) - 1, 0)


class Stack:
    """What every text backbone here is: token embeddings, a list of blocks (``layers``), and a
    final step (a norm for decoders, nothing for encoders). Splitting the forward pass so lets a
    student train only its top blocks on the cached output of the frozen ones below
    (`w2sjax.models.topk`).

    A backbone implements ``embed_tokens(input_ids, attention_mask, token_type_ids)`` (the residual
    stream entering block 0, float32), ``run_blocks(x, attention_mask, start, stop)`` (the blocks
    ``layers[start:stop]``, with whatever each needs from the mask: causal or sliding masks,
    rotary tables, relative-position bias) and ``finish(x)``. ``first_block`` is the index of
    ``layers[0]`` in the whole model: 0, or L-K once `topk.cut_bottom` dropped the bottom.
    ``final_norm_name`` names the final norm a top:K student trains; ``bottom_parts`` the
    submodules only the bottom (or the LM head) uses.
    """

    first_block = 0
    final_norm_name: str | None = None
    bottom_parts: tuple[str, ...] = ()

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None):
        if attention_mask is None:
            attention_mask = jnp.ones(input_ids.shape, jnp.int32)
        x = self.embed_tokens(input_ids, attention_mask, token_type_ids)
        return self.finish(self.run_blocks(x, attention_mask))

    def bottom(self, input_ids, attention_mask, token_type_ids=None, *, blocks: int):
        """The residual stream leaving block ``blocks`` (float32 ``[B, T, D]``), before any final norm."""
        x = self.embed_tokens(input_ids, attention_mask, token_type_ids)
        return self.run_blocks(x, attention_mask, 0, blocks)

    def top(self, x, attention_mask):
        """The held blocks and the final step on a residual stream ``x`` entering ``layers[0]``."""
        return self.finish(self.run_blocks(x.astype(jnp.float32), attention_mask))

    def finish(self, x):
        return x

    def held_blocks(self, start: int = 0, stop: int | None = None):
        """``(index in the whole model, block)`` for ``layers[start:stop]``."""
        blocks = list(self.layers)[start:stop]
        return [(self.first_block + start + i, b) for i, b in enumerate(blocks)]
