"""oneDNN bf16 matmuls as an XLA:CPU custom call (`w2sjax.models.onednn`) against numpy.

References round the operands (and, for gradients, the cotangent) to bfloat16 with ml_dtypes and
multiply in float64, independently of XLA and oneDNN. Skipped with the reason when the ``onednn``
extra (the oneDNN CPU wheels) or g++ is missing.
"""

import itertools

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from w2sjax.models import onednn, precision

_REASON = onednn.available()
needs_onednn = pytest.mark.skipif(_REASON is not None, reason=f"oneDNN dots unavailable: {_REASON}")


def _bf16(a):
    return np.asarray(a, np.float32).astype(ml_dtypes.bfloat16).astype(np.float64)


def _op(a, t):
    return a.T if t else a


def _stored(rng, m, k, n, ta, tb):
    """Float32 operands of an ``[m, k] @ [k, n]`` product, each stored transposed where its flag says."""
    a = rng.normal(size=(k, m) if ta else (m, k)).astype(np.float32)
    b = rng.normal(size=(n, k) if tb else (k, n)).astype(np.float32)
    return a, b


def _uses_onednn(f, *args) -> bool:
    """Whether the compiled (partitioned) program of ``f`` calls the oneDNN handler."""
    return "w2sjax_onednn_matmul" in f.lower(*args).compile().as_text()


@needs_onednn
@pytest.mark.parametrize("ta,tb", list(itertools.product([False, True], repeat=2)))
def test_matmul_all_layouts_float32_and_bf16_results(ta, tb):
    rng = np.random.default_rng(0)
    m, k, n = 40, 72, 24
    a, b = _stored(rng, m, k, n, ta, tb)
    want = _op(_bf16(a), ta) @ _op(_bf16(b), tb)
    f = jax.jit(onednn.matmul, static_argnums=(2, 3, 4))
    out = f(jnp.asarray(a), jnp.asarray(b), ta, tb, jnp.float32)
    assert out.dtype == jnp.float32 and out.shape == (m, n)
    np.testing.assert_allclose(np.asarray(out), want, rtol=1e-5, atol=1e-4)
    out16 = f(jnp.asarray(a), jnp.asarray(b), ta, tb, jnp.bfloat16)
    assert out16.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out16, np.float64), want, rtol=2 ** -7, atol=1e-2)
    assert _uses_onednn(f, jnp.asarray(a), jnp.asarray(b), ta, tb, jnp.float32)


@needs_onednn
@pytest.mark.parametrize("ta,tb", list(itertools.product([False, True], repeat=2)))
def test_matmul_gradients_round_the_cotangent(ta, tb):
    rng = np.random.default_rng(1)
    m, k, n = 24, 40, 16
    a, b = _stored(rng, m, k, n, ta, tb)
    g = rng.normal(size=(m, n)).astype(np.float32)
    _, vjp = jax.vjp(lambda a, b: onednn.matmul(a, b, ta, tb), jnp.asarray(a), jnp.asarray(b))
    da, db = vjp(jnp.asarray(g))
    A, B, G = _op(_bf16(a), ta), _op(_bf16(b), tb), _bf16(g)
    np.testing.assert_allclose(np.asarray(da), _op(G @ B.T, ta), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.asarray(db), _op(A.T @ G, tb), rtol=1e-5, atol=1e-4)
    assert da.dtype == db.dtype == jnp.float32


@needs_onednn
def test_dot_takes_the_dense_layer_contractions_and_falls_back_on_others():
    rng = np.random.default_rng(2)
    x, w, g = (rng.normal(size=s).astype(np.float32) for s in ((3, 5, 24), (24, 16), (3, 5, 16)))
    x16, w16, g16 = (jnp.asarray(v, jnp.bfloat16) for v in (x, w, g))
    cases = [(x16, w16, (((2,), (0,)), ((), ())), np.einsum("btk,kn->btn", _bf16(x), _bf16(w))),  # forward
             (g16, w16, (((2,), (1,)), ((), ())), np.einsum("btn,kn->btk", _bf16(g), _bf16(w))),  # input gradient
             (x16, g16, (((0, 1), (0, 1)), ((), ())), np.einsum("btk,btn->kn", _bf16(x), _bf16(g))),  # weight gradient
             (x16, g16, (((1,), (1,)), ((0,), (0,))), np.einsum("btk,btn->bkn", _bf16(x), _bf16(g)))]  # batched: XLA
    for lhs, rhs, dims, want in cases:
        f = jax.jit(lambda a, b, dims=dims: onednn.dot(a, b, dims))
        np.testing.assert_allclose(np.asarray(f(lhs, rhs)), want, rtol=1e-5, atol=1e-4)
        custom = _uses_onednn(f, lhs, rhs)
        assert custom == (not dims[1][0]), dims


def _custom_call_operands(f, *args) -> list[str]:
    """The operand types of every oneDNN custom call in the compiled program of ``f``."""
    return [line.split("operand_layout_constraints={")[1].split("api_version")[0]
            for line in f.lower(*args).compile().as_text().splitlines() if "w2sjax_onednn_matmul" in line]


@needs_onednn
@pytest.mark.parametrize("packs", ["1", "0"])
def test_float32_operands_are_rounded_to_bf16_in_onednn_or_before(monkeypatch, packs):
    """Two float32 operands go in as they are where oneDNN rounds them while packing (AMX, its bf16
    fpmath mode), else as bf16 converted by XLA; either way the products are those of
    bf16-rounded operands (numpy: ml_dtypes rounding, float64 sums), for every layout, and for
    a bf16 result (which that mode cannot write: the handler converts its operands first)."""
    monkeypatch.setenv(onednn.F32_ENV, packs)
    rng = np.random.default_rng(6)
    m, k, n = 96, 160, 64
    # A new function: the switch is read when tracing, and JAX keeps traces per function.
    f = jax.jit(lambda *args: onednn.matmul(*args), static_argnums=(2, 3, 4))
    for ta, tb in itertools.product([False, True], repeat=2):
        a, b = _stored(rng, m, k, n, ta, tb)
        want = _op(_bf16(a), ta) @ _op(_bf16(b), tb)
        np.testing.assert_allclose(np.asarray(f(a, b, ta, tb, jnp.float32)), want, rtol=1e-5, atol=1e-4)
        out16 = f(a, b, ta, tb, jnp.bfloat16)
        np.testing.assert_allclose(np.asarray(out16, np.float64), want, rtol=2 ** -7, atol=1e-2)
        operands = _custom_call_operands(f, a, b, ta, tb, jnp.float32)
        in_f32 = packs == "1" and onednn.packs_float32()
        assert operands and all(o.count("f32[" if in_f32 else "bf16[") == 2 for o in operands), operands


def _encoder_dense(x, kernels, biases):
    """`precision.dense`'s arithmetic on its own: one bf16 dot over the kernels side by side."""
    q, k, v = precision._biased(x, kernels, biases)
    return (q * k + v * v).sum()


@needs_onednn
@pytest.mark.parametrize("packs", ["1", "0"])
def test_dense_layers_route_through_onednn_on_a_sharded_batch(monkeypatch, packs):
    """With ``W2SJAX_ONEDNN=1`` a bf16 Linear's and the encoders' biased q/k/v projections' values
    and gradients equal the XLA path's and numpy's, under jit with the batch sharded over 2 fake
    devices, with float32 operands rounded in oneDNN or converted before the call, and the
    program holds the custom call."""
    monkeypatch.setenv(onednn.F32_ENV, packs)
    layer = nnx.Linear(24, 16, rngs=nnx.Rngs(0), **precision.linear_kwargs(jnp.bfloat16))
    graphdef, state = nnx.split(layer)
    mesh = Mesh(np.array(jax.devices()[:2]), ("data",))
    rng = np.random.default_rng(3)
    x = jax.device_put(rng.normal(size=(8, 5, 24)).astype(np.float32), NamedSharding(mesh, P("data")))
    kernels = tuple(rng.normal(size=(24, 16)).astype(np.float32) for _ in range(3))
    biases = tuple(rng.normal(size=(16,)).astype(np.float32) for _ in range(3))

    def loss(state, x):
        y = nnx.merge(graphdef, state)(x)
        return (y * y).sum(), y

    runs = {}
    for flag in ("0", "1"):
        monkeypatch.setenv(onednn.ENV, flag)
        f = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
        g = jax.jit(jax.value_and_grad(_encoder_dense, argnums=(0, 1, 2)))
        runs[flag] = (f(state, x), g(x, kernels, biases), _uses_onednn(f, state, x) and _uses_onednn(g, x, kernels, biases))
    ((_, y0), g0), e0, used0 = runs["0"]
    ((_, y1), g1), e1, used1 = runs["1"]
    assert used1 and not used0
    np.testing.assert_allclose(np.asarray(y1), np.asarray(y0), rtol=1e-5, atol=1e-4)
    for a, b in zip(jax.tree.leaves((g1, e1)), jax.tree.leaves((g0, e0))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-3)
    # numpy: the forward's bf16 products, and dx, dW from the cotangent rounded to bf16 (float64
    # sums); the bias gradients sum the float32 cotangent.
    X, W, B = _bf16(np.asarray(x)), [_bf16(k_) for k_ in kernels], [np.asarray(b_, np.float64) for b_ in biases]
    q, k, v = (np.einsum("btd,dn->btn", X, w_) + b_ for w_, b_ in zip(W, B))
    np.testing.assert_allclose(float(e1[0]), (q * k + v * v).sum(), rtol=1e-4)
    gq, gk, gv = k, q, 2 * v
    dW = [np.einsum("btd,btn->dn", X, _bf16(g_)) for g_ in (gq, gk, gv)]
    dX = sum(np.einsum("btn,dn->btd", _bf16(g_), w_) for g_, w_ in zip((gq, gk, gv), W))
    _, (dx, dws, dbs) = e1
    np.testing.assert_allclose(np.asarray(dx), dX, rtol=2e-3, atol=5e-2)
    for got, want in zip(dws, dW):
        np.testing.assert_allclose(np.asarray(got), want, rtol=2e-3, atol=5e-2)
    for got, g_ in zip(dbs, (gq, gk, gv)):
        np.testing.assert_allclose(np.asarray(got), g_.sum((0, 1)), rtol=1e-4, atol=1e-3)


def test_a_sycl_build_is_refused_with_the_reason(tmp_path, monkeypatch):
    """Intel's newer ``onednn`` wheels are SYCL builds whose CPU engine needs a SYCL CPU device;
    the loader names that instead of failing inside the first call."""
    (tmp_path / "include" / "oneapi" / "dnnl").mkdir(parents=True)
    (tmp_path / "include" / "oneapi" / "dnnl" / "dnnl_config.h").write_text(
        "#define DNNL_CPU_RUNTIME DNNL_RUNTIME_SYCL\n")
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "libdnnl.so.3").write_bytes(b"")
    monkeypatch.setenv("W2SJAX_ONEDNN_ROOT", str(tmp_path))
    reason = onednn._find_onednn()
    assert isinstance(reason, str) and "SYCL build" in reason


def test_a_cpu_without_avx512_is_refused_with_the_reason(monkeypatch):
    """On plain AVX2 (no AVX-512, no AVX-NE-CONVERT) oneDNN 3.2 cannot create a bf16 matmul, so the
    switch warns and XLA computes instead of every call failing; the other CPUs pass the check."""
    monkeypatch.setattr(onednn, "_cpu_flags", lambda: frozenset({"sse4_2", "avx", "avx2", "fma", "f16c"}))
    monkeypatch.setenv(onednn.ENV, "1")
    onednn._load.cache_clear()
    onednn._warn_fallback.cache_clear()
    try:
        assert "AVX-512" in onednn.available()
        with pytest.warns(RuntimeWarning, match="AVX-512"):
            assert not onednn.wanted()
    finally:
        onednn._load.cache_clear()  # the next test finds this machine's answer again
    for flags in ({"avx2", "avx512f", "avx512bw", "avx512vl", "avx512dq"}, {"avx2", "avx_ne_convert"}, set()):
        monkeypatch.setattr(onednn, "_cpu_flags", lambda flags=flags: frozenset(flags))
        assert onednn._cpu_reason() is None


@needs_onednn
def test_devices_calling_at_once_on_a_sharded_batch():
    """Every fake device multiplies its own rows at the same time (the step's layout): the weight
    gradient over a batch split across devices is the sum of their partial products, so no state
    may be shared between the calls, and no operand is gathered onto every device first."""
    mesh = Mesh(np.array(jax.devices()), ("data",))
    rows = NamedSharding(mesh, P("data"))
    d = len(jax.devices())
    rng = np.random.default_rng(4)
    x = jax.device_put(rng.normal(size=(d * 256, 384)).astype(np.float32), rows)
    g = jax.device_put(rng.normal(size=(d * 256, 192)).astype(np.float32), rows)
    w = rng.normal(size=(384, 192)).astype(np.float32)  # replicated, as the weights are
    # The weight gradient x.T @ g, the forward x @ w and the input gradient g @ w.T.
    f = jax.jit(lambda x, g, w: (onednn.matmul(x, g, True, False), onednn.matmul(x, w, False, False),
                                 onednn.matmul(g, w, False, True)))
    hlo = f.lower(x, g, w).compile().as_text()
    assert "all-gather" not in hlo and "all-reduce" in hlo
    X, G, W = _bf16(x), _bf16(g), _bf16(w)
    for _ in range(3):
        dw, y, dx = f(x, g, w)
        assert y.sharding.spec[0] == "data" and dx.sharding.spec[0] == "data"
        np.testing.assert_allclose(np.asarray(dw), X.T @ G, rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(np.asarray(y), X @ W, rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(np.asarray(dx), G @ W.T, rtol=1e-5, atol=1e-3)


@pytest.fixture
def no_onednn(monkeypatch):
    """A machine without oneDNN: the finder reports none, whether or not this one has it."""
    if _REASON is None:
        monkeypatch.setattr(onednn, "_find_onednn", lambda: "oneDNN not found (pip install 'w2sjax[onednn]')")
    onednn._load.cache_clear()
    yield
    onednn._load.cache_clear()  # the next test finds the real oneDNN again


def test_without_onednn_the_switch_warns_once_and_xla_computes(monkeypatch, no_onednn):
    monkeypatch.setenv(onednn.ENV, "1")
    onednn._warn_fallback.cache_clear()
    rng = np.random.default_rng(5)
    x, w = rng.normal(size=(4, 6, 24)).astype(np.float32), rng.normal(size=(24, 16)).astype(np.float32)
    linear = lambda x, w: precision.bf16_dot_general(x, w, (((2,), (0,)), ((), ())))
    with pytest.warns(RuntimeWarning, match="oneDNN dots unavailable") as caught:
        y = jax.jit(linear)(jnp.asarray(x), jnp.asarray(w))
        jax.jit(lambda x, w: linear(x, w) * 2)(jnp.asarray(x), jnp.asarray(w))
    assert len([c for c in caught if "oneDNN" in str(c.message)]) == 1
    np.testing.assert_allclose(np.asarray(y), np.einsum("btk,kn->btn", _bf16(x), _bf16(w)), rtol=1e-5, atol=1e-4)
