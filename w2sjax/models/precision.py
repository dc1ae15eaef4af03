"""bfloat16 matmuls that accumulate in float32, for the Linear layers of the ports.

Why a custom ``dot_general``: on CPUs with AMX (and on accelerators) a bf16 x bf16
dot is only fast when it *asks* for a float32 result. XLA:CPU 0.10 hands such a
dot to YNNPACK's AMX kernels (~1.2-2 TFLOP/s on 2 Sapphire-Rapids cores against
~0.3 for float32), but silently upcasts a bf16 -> bf16 dot to float32. Plain
``nnx.Linear(dtype=bf16)`` produces the latter, and JAX's autodiff of the former
would pair a float32 cotangent with a bf16 operand, which XLA also upcasts. So
the backward pass here casts the cotangent to bf16 itself, the way mixed-precision
training does on accelerators: both gradient matmuls see bf16 inputs and
accumulate in float32, and the gradients come back in the operands' dtypes.

Only the contraction ``nnx.Linear`` uses (last axis of the input with axis 0 of
the kernel, no batch axes) takes the custom path; anything else falls back to
``lax.dot_general`` with a float32 result.

With ``W2SJAX_ONEDNN=1`` (and the ``onednn`` extra installed) the bf16 dots of these layers and
their gradients run as oneDNN matmuls instead (`w2sjax.models.onednn`); the arithmetic is the
same (bf16 products, float32 sums).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from w2sjax.models import onednn


def _is_linear(lhs, dims) -> bool:
    (lc, rc), (lb, rb) = dims
    return tuple(lc) == (lhs.ndim - 1,) and tuple(rc) == (0,) and not lb and not rb


@jax.custom_vjp
def _linear_bf16(x, w):
    return _dot(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16), ((x.ndim - 1,), (0,)))


def _linear_fwd(x, w):
    # Keep the bf16 copies the forward dot already made, not the float32 originals: the backward
    # then converts nothing again (converts were ~7% of a SmolLM2 step, benchmarks/RESULTS.md)
    # and the saved activations take half the memory. Zero-size arrays carry the dtypes back.
    x16, w16 = _low(x), _low(w)
    out = _dot(x16, w16, ((x.ndim - 1,), (0,)))
    return out, (x16, w16, jnp.zeros((0,), x.dtype), jnp.zeros((0,), w.dtype))


def _linear_bwd(res, g):
    x16, w16, x_dtype, w_dtype = res
    g16 = _low(g)
    # dx = g @ w.T: contracts the cotangent's last axis (a layout YNNPACK takes as is).
    dx = _dot(g16, w16, ((g.ndim - 1,), (1,)))
    # dw = x.T @ g over the tokens. XLA upcasts this one to float32: YNNPACK wants
    # the left operand contracted on its last axis, which x.T is only as a view.
    # Forcing a row-major copy (pad + slice) made the dot fast but cost as much in
    # transposes as it saved (benchmarks/RESULTS.md), so it is left to XLA.
    lead = tuple(range(x16.ndim - 1))
    dw = _dot(x16, g16, (lead, lead))
    return dx.astype(x_dtype.dtype), dw.astype(w_dtype.dtype)


_linear_bf16.defvjp(_linear_fwd, _linear_bwd)


def bf16_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None,
                     **kwargs):
    """Drop-in ``dot_general`` for ``nnx.Linear``: bf16 operands, float32 result."""
    del precision, preferred_element_type, kwargs
    if _is_linear(lhs, dimension_numbers):
        return _linear_bf16(lhs, rhs)
    return lax.dot_general(lhs.astype(jnp.bfloat16), rhs.astype(jnp.bfloat16), dimension_numbers,
                           preferred_element_type=jnp.float32)


def linear_kwargs(dtype) -> dict:
    """``nnx.Linear`` keyword arguments for a compute ``dtype``.

    float32 keeps flax's defaults. bfloat16 routes the matmul through
    `bf16_dot_general`; the output (and the bias add) is float32, so layer norms,
    softmax and the residual stream never see bf16 rounding of the matmul sums.
    """
    if jnp.dtype(dtype) == jnp.dtype(jnp.bfloat16):
        return dict(dtype=jnp.float32, dot_general=bf16_dot_general)
    return dict(dtype=dtype)


# ---------------------------------------------------------------- gated MLP (SwiGLU, GeGLU)


def _dot(a, b, dims):
    """``a . b`` contracting ``dims`` on bf16-rounded operands, float32 result: oneDNN's matmul when
    ``W2SJAX_ONEDNN`` asks for it, else XLA's dot. Operands left in float32 by `_low` are rounded
    inside oneDNN's packing, or here for XLA."""
    if onednn.wanted():
        return onednn.dot(a, b, (dims, ((), ())))
    return lax.dot_general(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16), (dims, ((), ())),
                           preferred_element_type=jnp.float32)


def _low(a):
    """A dot operand as `_dot` should get it: bf16, or float32 as it is where oneDNN rounds it to
    bf16 while packing (`onednn.packs_float32`), which saves the conversion pass that a custom
    call, unlike XLA's own dots, cannot fuse."""
    if onednn.wanted() and onednn.packs_float32():
        return a.astype(jnp.float32)
    return a.astype(jnp.bfloat16)


def _concat_bf16(arrays, axis):
    """``concatenate(arrays).astype(bf16)``, the same values, with the conversions first (each
    fuses into the pass that produces its array) and the concatenation moving 2-byte words.
    XLA:CPU computes a bf16 concatenation in float32 (it converts back and forth), so the words
    are concatenated as uint16."""
    words = [lax.bitcast_convert_type(a.astype(jnp.bfloat16), jnp.uint16) for a in arrays]
    return lax.bitcast_convert_type(jnp.concatenate(words, axis=axis), jnp.bfloat16)


def _tokens_dot(x16, g16):
    """``x.T @ g`` over every leading (token) axis: a weight gradient, float32."""
    lead = tuple(range(x16.ndim - 1))
    return _dot(x16, g16, (lead, lead))


def _gated_fwd(act, x, w_gate, w_up, w_down):
    # Gate and up are one dot on the two kernels side by side: one pass over x, and in the
    # backward one dot for dx and one for both weight gradients.
    x16 = x.astype(jnp.bfloat16)
    w_gu = _concat_bf16([w_gate, w_up], axis=1)
    wd16 = w_down.astype(jnp.bfloat16)
    gu = _dot(x16, w_gu, ((x.ndim - 1,), (0,)))
    g, u = jnp.split(gu, 2, axis=-1)
    h16 = (act(g) * u).astype(jnp.bfloat16)  # one fusion: the activation is never stored
    y = _dot(h16, wd16, ((h16.ndim - 1,), (0,)))
    dtypes = tuple(jnp.zeros((0,), a.dtype) for a in (x, w_gate, w_down))
    return y, (x16, w_gu, wd16, gu, h16, dtypes)


def _gated_pull(act, g, u, dh):
    """The cotangents of ``g`` and ``u`` in ``act(g) * u``. SiLU's are written out, sharing one
    sigmoid, so XLA evaluates them in one pass; other activations go through autodiff."""
    if act is jax.nn.silu:
        s = jax.nn.sigmoid(g)
        dsilu = dh * s
        return dsilu * u * (1.0 + g * (1.0 - s)), dsilu * g
    return jax.vjp(lambda g, u: act(g) * u, g, u)[1](dh)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _gated_bf16(act, x, w_gate, w_up, w_down):
    return _gated_fwd(act, x, w_gate, w_up, w_down)[0]


def _gated_bwd(act, res, dy):
    x16, w_gu, wd16, gu, h16, (x_dt, wgu_dt, wd_dt) = res
    dy16 = dy.astype(jnp.bfloat16)
    dh = _dot(dy16, wd16, ((dy.ndim - 1,), (1,)))
    g, u = jnp.split(gu, 2, axis=-1)
    # The activation's derivative is recomputed from the saved pre-activations inside the same
    # element-wise pass that writes both bf16 cotangents, side by side for the single dx dot.
    dgu16 = _concat_bf16(_gated_pull(act, g, u, dh), axis=-1)
    dx = _dot(dgu16, w_gu, ((dgu16.ndim - 1,), (1,)))
    dw_gate, dw_up = jnp.split(_tokens_dot(x16, dgu16), 2, axis=1)
    dw_down = _tokens_dot(h16, dy16)
    return (dx.astype(x_dt.dtype), dw_gate.astype(wgu_dt.dtype), dw_up.astype(wgu_dt.dtype),
            dw_down.astype(wd_dt.dtype))


_gated_bf16.defvjp(_gated_fwd, _gated_bwd)


def _plain_bf16(layer) -> bool:
    return (isinstance(layer, nnx.Linear) and layer.bias is None
            and getattr(layer, "dot_general", None) is bf16_dot_general)


def _f32_linear(layer, biased: bool) -> bool:
    """A float32 ``nnx.Linear`` as flax makes it (no LoRA, no precision or dtype settings), with a
    bias or without one as ``biased`` says."""
    return (type(layer) is nnx.Linear and (layer.bias is not None) == biased and layer.dot_general is lax.dot_general
            and layer.precision is None and layer.preferred_element_type is None
            and layer.kernel[...].dtype == jnp.float32 and (layer.dtype is None or jnp.dtype(layer.dtype) == jnp.float32)
            and (not biased or layer.bias[...].dtype == jnp.float32))


def _f32_dot(a, w, w_axis: int):
    """``a``'s last axis contracted with ``w``'s axis ``w_axis``, as ``nnx.Linear`` calls `lax.dot_general`."""
    return lax.dot_general(a, w, (((a.ndim - 1,), (w_axis,)), ((), ())))


def _rows(a):
    return a.reshape(-1, a.shape[-1])


def _gated_f32_primal(act, x, w_gate, w_up, w_down):
    return _f32_dot(act(_f32_dot(x, w_gate, 0)) * _f32_dot(x, w_up, 0), w_down, 0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _gated_f32(act, x, w_gate, w_up, w_down):
    """The float32 gated MLP: the layers' own arithmetic forward (a forward without gradients, as for
    features, is unchanged), and a training forward that keeps ``x`` and ``act(g) * u`` transposed,
    ``[features, tokens]``, so that each weight gradient is a plain ``[features, tokens] @ [tokens, out]``
    product. Left to autodiff, XLA:CPU contracts the tokens by transposing the gate's cotangent inside
    the element-wise pass that computes it, a cache miss per element: about 0.5 s per block, 16% of a
    float32 SmolLM2-135M step on a 2-core AVX2 EPYC (benchmarks/RESULTS.md, 2026-12-07)."""
    return _gated_f32_primal(act, x, w_gate, w_up, w_down)


def _gated_f32_fwd(act, x, w_gate, w_up, w_down):
    g, u = _f32_dot(x, w_gate, 0), _f32_dot(x, w_up, 0)
    h = act(g) * u
    return _f32_dot(h, w_down, 0), (_rows(x).T, _rows(h).T, g, u, w_gate, w_up, w_down)


def _gated_f32_bwd(act, res, dy):
    xt, ht, g, u, w_gate, w_up, w_down = res
    dg, du = _gated_pull(act, g, u, _f32_dot(dy, w_down, 1))
    dx = _f32_dot(dg, w_gate, 1) + _f32_dot(du, w_up, 1)
    return dx, xt @ _rows(dg), xt @ _rows(du), ht @ _rows(dy)


_gated_f32.defvjp(_gated_f32_fwd, _gated_f32_bwd)


def gated_mlp(act, gate, up, down, x):
    """``down(act(gate(x)) * up(x))`` for three ``nnx.Linear`` layers (SwiGLU, GeGLU).

    When all three are bias-free bf16 layers (`linear_kwargs`), one custom-gradient kernel runs
    the same arithmetic with fewer passes over the ``[tokens, intermediate]`` activations: gate
    and up as one dot, the activation and product fused into the bf16 input of ``down``, and in
    the backward the activation's derivative recomputed in the pass that writes the bf16
    cotangents (float32 everywhere else, as before). Anything else (biases, LoRA adapters,
    float32 layers as flax makes them) takes the layers as they are; plain float32 layers train
    through `_gated_f32`.
    """
    if x.dtype == jnp.float32 and all(_f32_linear(layer, biased=False) for layer in (gate, up, down)):
        return _gated_f32(act, x, gate.kernel[...], up.kernel[...], down.kernel[...])
    if not all(_plain_bf16(layer) for layer in (gate, up, down)):
        return down(act(gate(x)) * up(x))
    return _gated_bf16(act, x.astype(jnp.float32), gate.kernel[...], up.kernel[...], down.kernel[...])


# ---------------------------------------------------------------- side-by-side projections (q, k, v)


def _side_by_side_fwd(x, kernels):
    x16 = x.astype(jnp.bfloat16)
    w16 = _concat_bf16(kernels, axis=1)
    y = _dot(x16, w16, ((x.ndim - 1,), (0,)))
    ends = np.cumsum([k.shape[1] for k in kernels])[:-1]
    # Zero-row arrays carry each kernel's width and dtype, and x's dtype, to the backward.
    shapes = tuple(jnp.zeros((0, k.shape[1]), k.dtype) for k in kernels)
    return tuple(jnp.split(y, ends, axis=-1)), (x16, w16, shapes, jnp.zeros((0,), x.dtype))


@jax.custom_vjp
def _side_by_side(x, kernels):
    return _side_by_side_fwd(x, kernels)[0]


def _side_by_side_bwd(res, gs):
    x16, w16, shapes, x_dt = res
    g16 = _concat_bf16(gs, axis=-1)  # one pass writes every cotangent
    dx = _dot(g16, w16, ((g16.ndim - 1,), (1,)))
    ends = np.cumsum([s.shape[1] for s in shapes])[:-1]
    dws = jnp.split(_tokens_dot(x16, g16), ends, axis=1)
    return dx.astype(x_dt.dtype), tuple(dw.astype(s.dtype) for dw, s in zip(dws, shapes))


_side_by_side.defvjp(_side_by_side_fwd, _side_by_side_bwd)


def side_by_side(x, *layers):
    """``tuple(layer(x) for layer in layers)``: for bias-free bf16 layers (the q, k and v
    projections) one dot over their kernels side by side, and in the backward one dot for dx
    and one for every weight gradient; other layers run as they are."""
    if not all(_plain_bf16(layer) for layer in layers):
        return tuple(layer(x) for layer in layers)
    return _side_by_side(x.astype(jnp.float32), tuple(layer.kernel[...] for layer in layers))


# ---------------------------------------------------------------- biased projections (the encoders)


def _token_sum(g):
    """``g`` summed over every leading (token) axis, float32, as a dot with a row of ones: XLA:CPU
    splits ``jnp.sum`` over the tokens into a tree of ``reduce-window`` loops that ran about 14x
    slower on a ``[2048, 3072]`` cotangent (the bias gradients were ~6% of a bf16 MPNet-base step;
    benchmarks/RESULTS.md). Float32 throughout: only the order of the sum differs."""
    g2 = g.reshape(-1, g.shape[-1]).astype(jnp.float32)
    ones = jnp.ones((1, g2.shape[0]), jnp.float32)
    return lax.dot_general(ones, g2, (((1,), (0,)), ((), ())), preferred_element_type=jnp.float32)[0]


def _biased_fwd(x, kernels, biases):
    x16 = _low(x)
    w16 = _low(jnp.concatenate(kernels, axis=1))
    y = _dot(x16, w16, ((x.ndim - 1,), (0,))) + jnp.concatenate(biases).astype(jnp.float32)
    ends = np.cumsum([k.shape[1] for k in kernels])[:-1]
    # Zero-size arrays carry each kernel's and bias's width and dtype, and x's dtype, to the backward.
    shapes = tuple(jnp.zeros((0, k.shape[1]), k.dtype) for k in kernels)
    bias_dtypes = tuple(jnp.zeros((0,), b.dtype) for b in biases)
    return tuple(jnp.split(y, ends, axis=-1)), (x16, w16, shapes, bias_dtypes, jnp.zeros((0,), x.dtype))


@jax.custom_vjp
def _biased(x, kernels, biases):
    return _biased_fwd(x, kernels, biases)[0]


def _biased_bwd(res, gs):
    x16, w16, shapes, bias_dtypes, x_dt = res
    g = gs[0] if len(gs) == 1 else jnp.concatenate(gs, axis=-1)
    g16 = _low(g)
    dx = _dot(g16, w16, ((g16.ndim - 1,), (1,)))
    ends = np.cumsum([s.shape[1] for s in shapes])[:-1]
    dws = jnp.split(_tokens_dot(x16, g16), ends, axis=1)
    dbs = jnp.split(_token_sum(g), ends)
    return (dx.astype(x_dt.dtype), tuple(dw.astype(s.dtype) for dw, s in zip(dws, shapes)),
            tuple(db.astype(d.dtype) for db, d in zip(dbs, bias_dtypes)))


_biased.defvjp(_biased_fwd, _biased_bwd)


def _biased_f32_primal(x, kernels, biases):
    # nnx.Linear's arithmetic, layer by layer: the dot, then the bias added to its result.
    return tuple(_f32_dot(x, k, 0) + jnp.reshape(b, (1,) * (x.ndim - 1) + (-1,)) for k, b in zip(kernels, biases))


@jax.custom_vjp
def _biased_f32(x, kernels, biases):
    """Float32 biased projections: the layers' own forward (a forward without gradients, as for
    features, is unchanged), and a training forward that keeps ``x`` transposed, ``[features, tokens]``,
    so each weight gradient is a plain ``[features, tokens] @ [tokens, out]`` product, with the bias
    gradients as dots (`_token_sum`). Left to autodiff, XLA:CPU contracts the tokens by transposing the
    cotangent inside the element-wise pass that computes it (GELU's derivative, say), a cache miss per
    element, and sums the bias gradients in ``reduce-window`` trees (benchmarks/RESULTS.md, 2026-12-07)."""
    return _biased_f32_primal(x, kernels, biases)


def _biased_f32_fwd(x, kernels, biases):
    return _biased_f32_primal(x, kernels, biases), (_rows(x).T, kernels)


def _biased_f32_bwd(res, gs):
    xt, kernels = res
    dx = sum(_f32_dot(g, k, 1) for g, k in zip(gs, kernels))
    return dx, tuple(xt @ _rows(g) for g in gs), tuple(_token_sum(g) for g in gs)


_biased_f32.defvjp(_biased_f32_fwd, _biased_f32_bwd)


def _biased_bf16(layer) -> bool:
    return (isinstance(layer, nnx.Linear) and layer.bias is not None
            and getattr(layer, "dot_general", None) is bf16_dot_general)


def dense(x, *layers):
    """``tuple(layer(x) for layer in layers)`` for biased bf16 ``nnx.Linear`` layers (the encoders'
    projections): one dot over their kernels side by side (q, k and v together), the float32 bias
    added to its float32 result, and in the backward one dot for dx, one for every weight gradient
    and one for every bias gradient (`_token_sum`). The same arithmetic as the layers. Biased
    float32 layers as flax makes them train through `_biased_f32`; anything else (LoRA adapters,
    bias-free layers) runs as it is."""
    if x.dtype == jnp.float32 and all(_f32_linear(layer, biased=True) for layer in layers):
        return _biased_f32(x, tuple(layer.kernel[...] for layer in layers), tuple(layer.bias[...] for layer in layers))
    if not all(_biased_bf16(layer) for layer in layers):
        return tuple(layer(x) for layer in layers)
    return _biased(x.astype(jnp.float32), tuple(layer.kernel[...] for layer in layers),
                   tuple(layer.bias[...] for layer in layers))
