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
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def _is_linear(lhs, dims) -> bool:
    (lc, rc), (lb, rb) = dims
    return tuple(lc) == (lhs.ndim - 1,) and tuple(rc) == (0,) and not lb and not rb


@jax.custom_vjp
def _linear_bf16(x, w):
    return lax.dot_general(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16),
                           (((x.ndim - 1,), (0,)), ((), ())),
                           preferred_element_type=jnp.float32)


def _linear_fwd(x, w):
    # Keep the bf16 copies the forward dot already made, not the float32 originals: the backward
    # then converts nothing again (converts were ~7% of a SmolLM2 step, benchmarks/RESULTS.md)
    # and the saved activations take half the memory. Zero-size arrays carry the dtypes back.
    x16, w16 = x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
    out = lax.dot_general(x16, w16, (((x.ndim - 1,), (0,)), ((), ())), preferred_element_type=jnp.float32)
    return out, (x16, w16, jnp.zeros((0,), x.dtype), jnp.zeros((0,), w.dtype))


def _linear_bwd(res, g):
    x16, w16, x_dtype, w_dtype = res
    g16 = g.astype(jnp.bfloat16)
    # dx = g @ w.T: contracts the cotangent's last axis (a layout YNNPACK takes as is).
    dx = lax.dot_general(g16, w16, (((g.ndim - 1,), (1,)), ((), ())),
                         preferred_element_type=jnp.float32)
    # dw = x.T @ g over the tokens. XLA upcasts this one to float32: YNNPACK wants
    # the left operand contracted on its last axis, which x.T is only as a view.
    # Forcing a row-major copy (pad + slice) made the dot fast but cost as much in
    # transposes as it saved (benchmarks/RESULTS.md), so it is left to XLA.
    lead = tuple(range(x16.ndim - 1))
    dw = lax.dot_general(x16, g16, ((lead, lead), ((), ())), preferred_element_type=jnp.float32)
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
