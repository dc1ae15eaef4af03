"""bf16-operand / float32-accumulate matmuls (`w2sjax.models.precision`) against numpy.

The references round the operands to bfloat16 with ml_dtypes and multiply in float64, so
they are independent of XLA; the gradient references also round the cotangent, which is
what the custom backward pass is meant to do.
"""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx

from w2sjax.models import precision


def _bf16(a):
    return np.asarray(a, np.float32).astype(ml_dtypes.bfloat16).astype(np.float64)


@pytest.fixture
def xwg():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 5, 24)).astype(np.float32)
    w = rng.normal(size=(24, 16)).astype(np.float32)
    g = rng.normal(size=(3, 5, 16)).astype(np.float32)
    return x, w, g


def _linear(x, w):
    return precision.bf16_dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())))


def test_forward_is_bf16_operands_with_float32_sums(xwg):
    x, w, _ = xwg
    y = _linear(jnp.asarray(x), jnp.asarray(w))
    assert y.dtype == jnp.float32
    want = np.einsum("btk,kn->btn", _bf16(x), _bf16(w))
    np.testing.assert_allclose(np.asarray(y), want, rtol=1e-5, atol=1e-4)
    # ...and it is not the float32 product: the operands really were rounded.
    assert np.abs(np.asarray(y) - np.einsum("btk,kn->btn", x, w)).max() > 1e-3


def test_gradients_round_the_cotangent_and_keep_operand_dtypes(xwg):
    x, w, g = xwg
    _, vjp = jax.vjp(_linear, jnp.asarray(x), jnp.asarray(w))
    dx, dw = vjp(jnp.asarray(g))
    assert dx.dtype == jnp.float32 and dw.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(dx), np.einsum("btn,kn->btk", _bf16(g), _bf16(w)),
                               rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.asarray(dw), np.einsum("btk,btn->kn", _bf16(x), _bf16(g)),
                               rtol=1e-5, atol=1e-4)


def test_other_contractions_fall_back_to_a_float32_result():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(4, 6, 8)).astype(np.float32), rng.normal(size=(4, 8, 3)).astype(np.float32)
    dims = (((2,), (1,)), ((0,), (0,)))  # batched: not the Linear pattern
    out = precision.bf16_dot_general(jnp.asarray(a), jnp.asarray(b), dims)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out), np.einsum("bik,bkj->bij", _bf16(a), _bf16(b)),
                               rtol=1e-5, atol=1e-4)


def test_linear_layer_lowers_to_a_bf16_dot_with_float32_result():
    """The point of the module: XLA must see bf16 x bf16 -> f32, not bf16 -> bf16."""
    layer = nnx.Linear(32, 64, rngs=nnx.Rngs(0), **precision.linear_kwargs(jnp.bfloat16))
    assert layer.kernel[...].dtype == jnp.float32  # master weights stay float32
    graphdef, state = nnx.split(layer)

    def loss(state, x):
        y = nnx.merge(graphdef, state)(x)
        return (y * y).sum()  # the backward pass needs the forward output

    x = jnp.ones((8, 32))
    text = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(state, x).as_text()
    dots = [line for line in text.splitlines() if "dot_general" in line]
    assert len(dots) >= 3  # forward, input gradient, weight gradient
    for line in dots:
        operands, result = line.split("->")[0], line.split("->")[-1]
        assert operands.count("xbf16>") == 2 and "xf32>" in result, line
    assert jax.jit(lambda x: layer(x))(x).dtype == jnp.float32


def test_float32_keeps_flax_defaults():
    assert precision.linear_kwargs(jnp.float32) == {"dtype": jnp.float32}
    assert precision.linear_kwargs("float32") == {"dtype": "float32"}


def test_xla_flag_defaults_respect_the_users_choice():
    code = (
        "import os\n"
        "from w2sjax import xla_flags\n"
        "print(xla_flags.apply_defaults(devices=3))\n"
    )
    env = dict(os.environ, XLA_FLAGS="--xla_cpu_experimental_ynn_fusion_type=")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out.split() == ["--xla_cpu_experimental_ynn_fusion_type=",
                           "--xla_force_host_platform_device_count=3"]
    env.pop("XLA_FLAGS")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert "--xla_cpu_experimental_ynn_fusion_type=individual_dot" in out.split()


def test_compilation_cache_persists_programs_unless_the_user_chose_a_dir(tmp_path):
    code = (
        "import sys, jax, jax.numpy as jnp\n"
        "from w2sjax import xla_flags\n"
        "print(xla_flags.enable_compilation_cache(sys.argv[1]))\n"
        "jax.jit(lambda x: jnp.sin(x) * 2)(jnp.ones(8)).block_until_ready()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "xla")], env=env,
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "True" and any((tmp_path / "xla").iterdir())
    env["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path / "mine")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "other")], env=env,
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False" and not (tmp_path / "other").exists()


def _param_dtypes(module):
    return {leaf.dtype for leaf in jax.tree.leaves(nnx.state(module, nnx.Param))}


@pytest.mark.parametrize("name", ["minilm-l2", pytest.param("mpnet-base", marks=pytest.mark.slow)])
def test_bf16_finetune_models_keep_float32_master_weights(name):
    from w2sjax.models import get_model

    model = get_model(name).finetune(2, rngs=nnx.Rngs(0), dtype=jnp.bfloat16)
    assert _param_dtypes(model) == {jnp.dtype(jnp.float32)}
    ids = jnp.full((2, 8), 1000, jnp.int32)
    logits = model({"input_ids": ids, "attention_mask": jnp.ones((2, 8), jnp.int32)})
    assert logits.dtype == jnp.float32 and bool(jnp.isfinite(logits).all())


def _silu(a):
    return a / (1.0 + np.exp(-a))


def test_fused_gated_mlp_matches_numpy_with_bf16_operands():
    """SwiGLU through `precision.gated_mlp`: forward and all four gradients against float64 numpy,
    rounding to bf16 where the kernel does (dot operands, the down input, the cotangents)."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 3, 8)).astype(np.float32)
    wg, wu = (rng.normal(size=(8, 12)).astype(np.float32) for _ in range(2))
    wd = rng.normal(size=(12, 8)).astype(np.float32)
    dy = rng.normal(size=(2, 3, 8)).astype(np.float32)
    act = jax.nn.silu

    y, pull = jax.vjp(lambda *a: precision._gated_bf16(act, *a), x, wg, wu, wd)
    dx, dwg, dwu, dwd = pull(jnp.asarray(dy))

    x16, g16w, u16w, d16w = map(_bf16, (x, wg, wu, wd))
    g, u = x16 @ g16w, x16 @ u16w
    h16 = _bf16(_silu(g) * u)
    dy16 = _bf16(dy)
    dh = dy16 @ d16w.T
    s = 1.0 / (1.0 + np.exp(-g))
    dg16, du16 = _bf16(dh * u * s * (1 + g * (1 - s))), _bf16(dh * _silu(g))
    want = {"y": h16 @ d16w, "dx": dg16 @ g16w.T + du16 @ u16w.T,
            "dwg": np.einsum("btd,bti->di", x16, dg16), "dwu": np.einsum("btd,bti->di", x16, du16),
            "dwd": np.einsum("bti,btd->id", h16, dy16)}
    got = {"y": y, "dx": dx, "dwg": dwg, "dwu": dwu, "dwd": dwd}
    for k, ref in want.items():
        # An intermediate may round to the neighbouring bf16 value (float32 vs float64 sums).
        np.testing.assert_allclose(np.asarray(got[k]), ref, atol=2e-2 * np.abs(ref).max(), err_msg=k)
        assert got[k].dtype == jnp.float32


def test_gated_mlp_takes_the_fused_kernel_only_for_plain_bf16_layers():
    rngs = nnx.Rngs(0)
    bf16 = precision.linear_kwargs(jnp.bfloat16)
    plain = [nnx.Linear(8, 12, use_bias=False, rngs=rngs, **bf16) for _ in range(2)]
    plain.append(nnx.Linear(12, 8, use_bias=False, rngs=rngs, **bf16))
    biased = [nnx.Linear(8, 12, rngs=rngs, **bf16) for _ in range(2)] + [nnx.Linear(12, 8, rngs=rngs, **bf16)]
    f32 = [nnx.Linear(8, 12, use_bias=False, rngs=rngs) for _ in range(2)]
    f32.append(nnx.Linear(12, 8, use_bias=False, rngs=rngs))
    x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 3, 8)), jnp.float32)

    def hlo(layers_):
        return jax.jit(lambda x: precision.gated_mlp(jax.nn.silu, *layers_, x)).lower(x).as_text()

    # The fused forward: one dot over the concatenated gate|up kernels ([8, 24]).
    assert "8x24xbf16" in hlo(plain)
    assert "8x24xbf16" not in hlo(biased) and "8x24xbf16" not in hlo(f32)
    for layers_ in (plain, biased, f32):  # each path computes down(silu(gate(x)) * up(x))
        g, u, d = layers_
        ref = d(jax.nn.silu(g(x)) * u(x))
        np.testing.assert_allclose(precision.gated_mlp(jax.nn.silu, g, u, d, x), ref, atol=2e-2)


def test_float32_gated_mlp_keeps_the_layers_forward_and_matches_float64_gradients():
    """Plain float32 layers go through `precision._gated_f32`: without gradients its value is the
    layers' own ``down(silu(gate(x)) * up(x))`` bit for bit (features do not move), and its four
    gradients (weight gradients from the transposed ``x`` and ``h`` it keeps) match float64 numpy.
    Biased and LoRA-like layers (another ``dot_general``) keep the layers' own path."""
    rngs = nnx.Rngs(0)
    layers_ = [nnx.Linear(8, 12, use_bias=False, rngs=rngs) for _ in range(2)]
    layers_.append(nnx.Linear(12, 8, use_bias=False, rngs=rngs))
    g, u, d = layers_
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(2, 3, 8)), jnp.float32)
    dy = rng.normal(size=(2, 3, 8)).astype(np.float32)
    act = jax.nn.silu

    fused = jax.jit(lambda x: precision.gated_mlp(act, g, u, d, x))
    plain = jax.jit(lambda x: d(act(g(x)) * u(x)))
    np.testing.assert_array_equal(np.asarray(fused(x)), np.asarray(plain(x)))
    assert "custom_vjp" in str(jax.make_jaxpr(lambda x: precision.gated_mlp(act, g, u, d, x))(x))
    biased = nnx.Linear(8, 12, rngs=rngs)
    assert "custom_vjp" not in str(jax.make_jaxpr(lambda x: precision.gated_mlp(act, biased, u, d, x))(x))

    kernels = [layer.kernel[...] for layer in layers_]
    y, pull = jax.vjp(lambda *a: precision._gated_f32(act, *a), x, *kernels)
    got = dict(zip(("dx", "dwg", "dwu", "dwd"), pull(jnp.asarray(dy))))
    x64, wg, wu, wd = (np.asarray(a, np.float64) for a in (x, *kernels))
    gp, up = x64 @ wg, x64 @ wu
    s = 1.0 / (1.0 + np.exp(-gp))
    h = _silu(gp) * up
    dh = dy.astype(np.float64) @ wd.T
    dg, du = dh * up * s * (1 + gp * (1 - s)), dh * _silu(gp)
    want = {"dx": dg @ wg.T + du @ wu.T, "dwg": np.einsum("btd,bti->di", x64, dg),
            "dwu": np.einsum("btd,bti->di", x64, du), "dwd": np.einsum("bti,btd->id", h, dy)}
    np.testing.assert_allclose(np.asarray(y), h @ wd, rtol=1e-5, atol=1e-5)
    for k, ref in want.items():
        assert got[k].dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(got[k]), ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max(), err_msg=k)


def test_float32_biased_projections_keep_the_layers_forward_and_match_float64_gradients():
    """Biased float32 layers go through `precision._biased_f32` in `precision.dense`: without gradients
    the values are the layers' own, bit for bit (features do not move); the input, weight and bias
    gradients (weights from the transposed ``x`` it keeps, biases as dots) match float64 numpy.
    Bias-free layers and bf16 ones keep their own paths."""
    rngs = nnx.Rngs(0)
    layers_ = [nnx.Linear(8, 6, rngs=rngs) for _ in range(3)]
    rng = np.random.default_rng(6)
    for layer in layers_:
        layer.bias[...] = jnp.asarray(rng.normal(size=6), jnp.float32)
    x = jnp.asarray(rng.normal(size=(2, 3, 8)), jnp.float32)
    gs = [rng.normal(size=(2, 3, 6)).astype(np.float32) for _ in layers_]

    got = jax.jit(lambda x: precision.dense(x, *layers_))(x)
    want = jax.jit(lambda x: tuple(layer(x) for layer in layers_))(x)
    for g_, w_ in zip(got, want):
        np.testing.assert_array_equal(np.asarray(g_), np.asarray(w_))
    jaxpr = lambda *ls: str(jax.make_jaxpr(lambda x: precision.dense(x, *ls))(x))
    assert "custom_vjp" in jaxpr(*layers_)
    assert "custom_vjp" not in jaxpr(nnx.Linear(8, 6, use_bias=False, rngs=rngs))

    kernels = tuple(layer.kernel[...] for layer in layers_)
    biases = tuple(layer.bias[...] for layer in layers_)
    _, pull = jax.vjp(precision._biased_f32, x, kernels, biases)
    dx, dks, dbs = pull(tuple(jnp.asarray(g_) for g_ in gs))
    x64, g64 = np.asarray(x, np.float64), [g_.astype(np.float64) for g_ in gs]
    k64 = [np.asarray(k, np.float64) for k in kernels]
    np.testing.assert_allclose(np.asarray(dx), sum(g_ @ k.T for g_, k in zip(g64, k64)), rtol=1e-5, atol=1e-5)
    for dk, db, g_ in zip(dks, dbs, g64):
        np.testing.assert_allclose(np.asarray(dk), np.einsum("btd,btn->dn", x64, g_), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.asarray(db), g_.sum((0, 1)), rtol=1e-5, atol=1e-5)


def test_side_by_side_projections_match_numpy_and_fall_back_for_biases():
    """q, k, v as one dot over their kernels (`precision.side_by_side`): outputs and gradients
    against float64 numpy with bf16-rounded operands and cotangents."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 3, 8)).astype(np.float32)
    ws = tuple(rng.normal(size=(8, n)).astype(np.float32) for n in (6, 2, 2))
    gs = tuple(rng.normal(size=(2, 3, n)).astype(np.float32) for n in (6, 2, 2))
    outs, pull = jax.vjp(precision._side_by_side, x, ws)
    dx, dws = pull(tuple(map(jnp.asarray, gs)))
    x16 = _bf16(x)
    for out, w in zip(outs, ws):
        np.testing.assert_allclose(np.asarray(out), x16 @ _bf16(w), atol=1e-4)
    np.testing.assert_allclose(np.asarray(dx), sum(_bf16(g) @ _bf16(w).T for g, w in zip(gs, ws)), atol=1e-4)
    for dw, g in zip(dws, gs):
        np.testing.assert_allclose(np.asarray(dw), np.einsum("btd,btn->dn", x16, _bf16(g)), atol=1e-4)

    rngs = nnx.Rngs(0)
    bf16 = precision.linear_kwargs(jnp.bfloat16)
    plain = [nnx.Linear(8, n, use_bias=False, rngs=rngs, **bf16) for n in (6, 2, 2)]
    biased = [nnx.Linear(8, n, rngs=rngs, **bf16) for n in (6, 2, 2)]
    xj = jnp.asarray(x)
    assert "8x10xbf16" in jax.jit(lambda x: precision.side_by_side(x, *plain)).lower(xj).as_text()
    for layers_ in (plain, biased):
        for got, layer in zip(precision.side_by_side(xj, *layers_), layers_):
            np.testing.assert_allclose(np.asarray(got), np.asarray(layer(xj)), atol=1e-5)


def test_biased_projections_match_numpy_and_fall_back_for_other_layers():
    """The encoders' biased projections (`precision.dense`, q, k and v as one dot): outputs, dx, the
    weight gradients (bf16-rounded operands and cotangents) and the bias gradients (float32 sums of
    the cotangents) against float64 numpy."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 3, 8)).astype(np.float32)
    ws = tuple(rng.normal(size=(8, n)).astype(np.float32) for n in (6, 2))
    bs = tuple(rng.normal(size=(n,)).astype(np.float32) for n in (6, 2))
    gs = tuple(rng.normal(size=(2, 3, n)).astype(np.float32) for n in (6, 2))
    outs, pull = jax.vjp(precision._biased, x, ws, bs)
    dx, dws, dbs = pull(tuple(map(jnp.asarray, gs)))
    x16 = _bf16(x)
    for out, w, b in zip(outs, ws, bs):
        np.testing.assert_allclose(np.asarray(out), x16 @ _bf16(w) + b, atol=1e-4)
    np.testing.assert_allclose(np.asarray(dx), sum(_bf16(g) @ _bf16(w).T for g, w in zip(gs, ws)), atol=1e-4)
    for dw, db, g in zip(dws, dbs, gs):
        np.testing.assert_allclose(np.asarray(dw), np.einsum("btd,btn->dn", x16, _bf16(g)), atol=1e-4)
        np.testing.assert_allclose(np.asarray(db), g.astype(np.float64).sum((0, 1)), atol=1e-5)
        assert dw.dtype == db.dtype == jnp.float32

    rngs = nnx.Rngs(0)
    biased = [nnx.Linear(8, n, rngs=rngs, **precision.linear_kwargs(jnp.bfloat16)) for n in (6, 2)]
    plain = [nnx.Linear(8, n, use_bias=False, rngs=rngs, **precision.linear_kwargs(jnp.bfloat16)) for n in (6, 2)]
    f32 = [nnx.Linear(8, n, rngs=rngs) for n in (6, 2)]
    xj = jnp.asarray(x)
    assert "8x8xbf16" in jax.jit(lambda x: precision.dense(x, *biased)).lower(xj).as_text()
    for layers_ in (biased, plain, f32):
        for got, layer in zip(precision.dense(xj, *layers_), layers_):
            np.testing.assert_allclose(np.asarray(got), np.asarray(layer(xj)), atol=1e-5)


def test_bf16_concatenation_as_words_keeps_the_values():
    """`precision._concat_bf16` (converted first, concatenated as uint16 words) equals the plain
    float32 concatenation converted to bf16, bit for bit, under jit as eagerly."""
    rng = np.random.default_rng(5)
    a, b = (jnp.asarray(rng.normal(size=(3, n)), jnp.float32) for n in (4, 6))
    want = np.asarray(jnp.concatenate([a, b], axis=1).astype(jnp.bfloat16)).view(np.uint16)
    for fn in (precision._concat_bf16, jax.jit(precision._concat_bf16, static_argnums=1)):
        got = fn([a, b], 1)
        assert got.dtype == jnp.bfloat16 and got.shape == (3, 10)
        np.testing.assert_array_equal(np.asarray(got).view(np.uint16), want)
