"""bf16 matmuls through oneDNN on XLA:CPU, an optional custom call (``pip install w2sjax[onednn]``).

Why: XLA:CPU 0.10 gives its bf16 dots to YNNPACK, which runs the weight-gradient layout
(``x.T @ g`` over the tokens) at a third of the speed oneDNN's AMX kernels reach on the same
Xeon (``benchmarks/RESULTS.md``), and no XLA flag hands dots to oneDNN's bf16 kernels. Here a
small C++ handler (``onednn_matmul.cc``, XLA's typed FFI) calls oneDNN's matmul with the
transposes as strides, and `dot` puts it behind a ``dot_general``-like signature with a
custom gradient that uses it too.

The handler is compiled with ``g++`` on first use against the oneDNN found in the environment
(the ``onednn-cpu-gomp`` wheels: a CPU build with GNU OpenMP threads; Intel's newer ``onednn``
wheels are SYCL builds that find no CPU device without a SYCL CPU runtime), into
``<w2sjax cache>/onednn/<hash>/``, built in a temporary folder and renamed into place. When
oneDNN or g++ is missing, `available` says why and `dot` falls back to XLA's dot with a
one-line warning.

Float32 operands need no conversion pass before the call: on AMX the handler sets oneDNN's bf16
fpmath mode, which rounds them to bf16 (to nearest even, as XLA's convert does) while it packs
its blocks, so the products and float32 sums are those of bf16 operands (`packs_float32`;
``W2SJAX_ONEDNN_F32=0`` converts them in XLA first, as every CPU without AMX does).

``W2SJAX_ONEDNN=1`` routes the bf16 dense layers (`w2sjax.models.precision`) through it. Off by
default: on a 2-core AMX Xeon the dense layers' dots ran 2.4-2.6x faster alone but the finetune
steps only 1.01-1.13x, because inside a step XLA already transposes the activations for its
weight-gradient dots and the custom call needs its bf16 operands converted in passes of their
own (``benchmarks/RESULTS.md``, 2026-12-07).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from w2sjax.runner import utilisation

__all__ = ["ENV", "F32_ENV", "available", "enabled", "wanted", "packs_float32", "matmul", "dot"]

ENV = "W2SJAX_ONEDNN"
TARGET = "w2sjax_onednn_matmul"
_SOURCE = pathlib.Path(__file__).with_name("onednn_matmul.cc")
_LIB = "libdnnl.so.3"


def enabled() -> bool:
    """Whether ``W2SJAX_ONEDNN`` asks for oneDNN dots (read when a function is traced)."""
    return os.environ.get(ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _find_onednn() -> tuple[pathlib.Path, pathlib.Path] | str:
    """(include dir, lib dir) of a usable oneDNN, or why there is none. Looks under
    ``$W2SJAX_ONEDNN_ROOT``, then where pip puts a wheel's data files (``include/``, ``lib/``)."""
    roots = [os.environ.get("W2SJAX_ONEDNN_ROOT"), sysconfig.get_paths()["data"], sys.prefix, sys.base_prefix,
             "/usr/local", "/usr"]
    for root in filter(None, dict.fromkeys(roots)):
        inc, lib = pathlib.Path(root, "include"), pathlib.Path(root, "lib")
        config = inc / "oneapi" / "dnnl" / "dnnl_config.h"
        if not (config.is_file() and (lib / _LIB).is_file()):
            continue
        runtime = re.search(r"#define DNNL_CPU_RUNTIME (\w+)", config.read_text())
        if runtime and runtime.group(1) == "DNNL_RUNTIME_SYCL":
            return (f"the oneDNN in {root} is a SYCL build (it needs a SYCL CPU device); "
                    "install the CPU build: pip install 'w2sjax[onednn]'")
        return inc, lib
    return "oneDNN not found (pip install 'w2sjax[onednn]')"


def _build(inc: pathlib.Path, lib: pathlib.Path) -> pathlib.Path:
    """The compiled handler, built once per source, oneDNN and jaxlib (the hash names the folder)."""
    from w2sjax.runner.cache import cache_dir

    ffi_inc = pathlib.Path(jax.ffi.include_dir())
    cmd = ["g++", "-O2", "-std=c++17", "-shared", "-fPIC", "-fopenmp", "-w", f"-I{inc}", f"-I{ffi_inc}",
           str(_SOURCE), f"-L{lib}", f"-l:{_LIB}", f"-Wl,-rpath,{lib}"]
    digest = hashlib.sha256(_SOURCE.read_bytes())
    for part in (*cmd, (inc / "oneapi" / "dnnl" / "dnnl_version.h").read_bytes(), jax.__version__):
        digest.update(part if isinstance(part, bytes) else part.encode())
    base = cache_dir() / "onednn"
    final = base / digest.hexdigest()[:16]
    so = final / "libw2sjax_onednn.so"
    if so.is_file():
        return so
    base.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=".build-", dir=base))
    try:
        out = subprocess.run([*cmd, "-o", str(tmp / so.name)], capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(f"g++ failed building the oneDNN handler: {out.stderr.strip()[-400:]}")
        try:
            os.rename(tmp, final)
        except OSError:  # another process renamed its build into place first
            if not so.is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return so


_cpu_flags = utilisation.cpu_flags  # a module name of its own, which tests replace


# oneDNN 3.2 has bf16 matmuls on AVX-512 (its avx512_core ISA and up: AVX512-BF16 and AMX add
# native ones) and on AVX2 with AVX-NE-CONVERT; on plain AVX2 (an AMD EPYC of 2017, 2026-12-07)
# the handler's primitive cannot be created and every call would fail.
_BF16_ISAS = (frozenset({"avx512f", "avx512bw", "avx512vl", "avx512dq"}), frozenset({"avx_ne_convert"}))


def _cpu_reason() -> str | None:
    flags = _cpu_flags()
    if not flags or any(isa <= flags for isa in _BF16_ISAS):
        return None  # unknown flags: oneDNN decides
    return "this CPU has neither AVX-512 nor AVX-NE-CONVERT, which oneDNN's bf16 matmul needs"


@functools.cache
def _load() -> str | None:
    reason = _cpu_reason()
    if reason is not None:
        return reason
    found = _find_onednn()
    if isinstance(found, str):
        return found
    if shutil.which("g++") is None:
        return "g++ not found (it compiles the oneDNN handler on first use)"
    try:
        lib = ctypes.cdll.LoadLibrary(str(_build(*found)))
    except (OSError, RuntimeError) as e:
        return str(e).splitlines()[0]
    jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(lib.W2sOnednnMatmul), platform="cpu")
    return None


def available() -> str | None:
    """None when oneDNN dots can run here, else a one-line reason."""
    return _load()


@functools.cache
def _warn_fallback(reason: str) -> None:
    warnings.warn(f"oneDNN dots unavailable, using XLA's: {reason}", RuntimeWarning, stacklevel=3)


def wanted() -> bool:
    """Whether to route a bf16 dot here now: ``W2SJAX_ONEDNN`` is set, the default backend is the
    CPU, and oneDNN is `available` (when it is not, one warning says why and XLA's dot runs)."""
    if not enabled() or jax.default_backend() != "cpu":
        return False
    reason = available()
    if reason is not None:
        _warn_fallback(reason)
    return reason is None


F32_ENV = "W2SJAX_ONEDNN_F32"


def _has_amx_bf16() -> bool:
    return "amx_bf16" in _cpu_flags()


def packs_float32() -> bool:
    """Whether float32 operands go to oneDNN as they are, rounded to bf16 in its packing (its bf16
    fpmath mode) instead of by a conversion pass before the call: only with AMX, where oneDNN 3.2
    honours that mode (elsewhere it would multiply in float32, other numbers), and unless
    ``W2SJAX_ONEDNN_F32=0`` (read when a function is traced)."""
    return (os.environ.get(F32_ENV, "1").strip().lower() not in ("0", "false", "no", "off")
            and _has_amx_bf16())


def _threads() -> int:
    """OpenMP threads per call: ``$W2SJAX_ONEDNN_THREADS``, else the cores split over this process's
    XLA host devices, which each run their shard of a batch at the same time (more would
    oversubscribe the cores)."""
    if os.environ.get("W2SJAX_ONEDNN_THREADS", "").strip().isdigit():
        return max(1, int(os.environ["W2SJAX_ONEDNN_THREADS"]))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, jax.local_device_count()))


def _call(a, b, ta: bool, tb: bool, out_dtype):
    m = a.shape[1] if ta else a.shape[0]
    n = b.shape[0] if tb else b.shape[1]
    out = jax.ShapeDtypeStruct((m, n), out_dtype)
    return jax.ffi.ffi_call(TARGET, out)(a, b, transpose_a=bool(ta), transpose_b=bool(tb),
                                         threads=np.int64(_threads()))


def _axes(entry) -> tuple[str, ...]:
    return () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)


def _plan(ta: bool, tb: bool, a_spec, b_spec) -> tuple[tuple, tuple, tuple]:
    """Mesh axes of (m, k, n) for ``op(a) @ op(b)`` from its operands' partition specs: rows of
    ``op(a)`` and columns of ``op(b)`` as they come; the contraction as ``a`` has it (else ``b``),
    and no axis used twice."""
    a_spec, b_spec = tuple(a_spec) + (None,) * 2, tuple(b_spec) + (None,) * 2
    m = _axes(a_spec[1] if ta else a_spec[0])
    k = _axes(a_spec[0] if ta else a_spec[1]) or _axes(b_spec[1] if tb else b_spec[0])
    k = tuple(x for x in k if x not in m)
    n = tuple(x for x in _axes(b_spec[0] if tb else b_spec[1]) if x not in m + k)
    return m, k, n


@functools.cache
def _partitioned(ta: bool, tb: bool, out_dtype):
    """The custom call with a sharding rule, so that a sharded batch stays sharded: each device
    multiplies its own blocks, and a sharded contraction (the weight gradient over a batch split
    across devices) ends in a ``psum``, as XLA's own dot would. Without one the partitioner
    gathers every operand onto every device first."""
    from jax.experimental.custom_partitioning import custom_partitioning
    from jax.sharding import NamedSharding, PartitionSpec as P

    @custom_partitioning
    def call(a, b):
        return _call(a, b, ta, tb, out_dtype)

    def shardings(mesh, arg_shapes):
        m, k, n = _plan(ta, tb, arg_shapes[0].sharding.spec, arg_shapes[1].sharding.spec)
        spec = lambda *dims: P(*(d or None for d in dims))
        a = spec(k, m) if ta else spec(m, k)
        b = spec(n, k) if tb else spec(k, n)
        return k, (NamedSharding(mesh, a), NamedSharding(mesh, b)), NamedSharding(mesh, spec(m, n))

    def infer(mesh, arg_shapes, result_shape):
        return shardings(mesh, arg_shapes)[2]

    def partition(mesh, arg_shapes, result_shape):
        k, args, result = shardings(mesh, arg_shapes)

        def lower(a, b):
            out = _call(a, b, ta, tb, out_dtype)
            return lax.psum(out, k) if k else out

        return mesh, lower, result, args

    rule = f"{'k m' if ta else 'm k'}, {'n k' if tb else 'k n'} -> m n"
    call.def_partition(partition, infer_sharding_from_operands=infer, sharding_rule=rule, reduction_factors=("k",))
    return call


def _xla(a, b, ta, tb, out_dtype):
    dims = (((0 if ta else 1,), (1 if tb else 0,)), ((), ()))
    return lax.dot_general(a, b, dims, preferred_element_type=out_dtype)


def _operands(a, b):
    """``a`` and ``b`` as the custom call takes them: both float32 where oneDNN rounds them to bf16
    while packing (`packs_float32`), else both bf16. The products are those of bf16 operands."""
    if a.dtype == b.dtype == jnp.float32 and packs_float32():
        return a, b
    return a.astype(jnp.bfloat16), b.astype(jnp.bfloat16)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def matmul(a, b, transpose_a=False, transpose_b=False, out_dtype=jnp.float32):
    """``op(a) @ op(b)`` for 2-D arrays, computed in bf16 with a float32 (or ``out_dtype``) result;
    ``op`` transposes when its flag is set. oneDNN when `available`, else XLA's dot. Two float32
    operands are rounded to bf16 inside oneDNN's packing where it can (`packs_float32`)."""
    reason = available()
    if reason is not None or jax.default_backend() != "cpu":
        if reason is not None:
            _warn_fallback(reason)
        return _xla(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16), transpose_a, transpose_b, out_dtype)
    a, b = _operands(a, b)
    return _partitioned(bool(transpose_a), bool(transpose_b), jnp.dtype(out_dtype))(a, b)


def _matmul_fwd(a, b, ta, tb, out_dtype):
    a_, b_ = _operands(a, b)
    return matmul(a_, b_, ta, tb, out_dtype), (a_, b_, jnp.zeros((0,), a.dtype), jnp.zeros((0,), b.dtype))


def _matmul_bwd(ta, tb, out_dtype, res, g):
    a_, b_, a_dt, b_dt = res
    # A float32 cotangent goes in as it is when the saved operands are float32 (oneDNN rounds it
    # while packing); beside bf16 operands it is converted once (the two converts are one to XLA).
    g_ = g if a_.dtype == jnp.float32 else g.astype(jnp.bfloat16)
    # With A = op(a), B = op(b) and C = A @ B: dA = g @ B.T and dB = A.T @ g, each written in the
    # layout its operand is stored in, so every gradient is one more matmul with strided operands.
    da = matmul(b_, g_, tb, True) if ta else matmul(g_, b_, False, not tb)
    db = matmul(g_, a_, True, ta) if tb else matmul(a_, g_, not ta, False)
    return da.astype(a_dt.dtype), db.astype(b_dt.dtype)


matmul.defvjp(_matmul_fwd, _matmul_bwd)


def _side(shape, contract) -> tuple[bool, int, int] | None:
    """(transposed, contracted size, free size) when ``contract`` is a leading or trailing run of
    axes, so that the operand is a 2-D matrix (or its transpose) after a free reshape."""
    contract, nd = tuple(contract), len(shape)
    k = int(np.prod([shape[i] for i in contract], dtype=np.int64))
    free = int(np.prod([shape[i] for i in range(nd) if i not in contract], dtype=np.int64))
    if contract == tuple(range(nd - len(contract), nd)):
        return False, k, free
    if contract == tuple(range(len(contract))):
        return True, k, free
    return None


def dot(lhs, rhs, dimension_numbers, out_dtype=jnp.float32):
    """``lax.dot_general(lhs, rhs, dimension_numbers, preferred_element_type=out_dtype)`` on bf16
    operands (float32 ones are rounded to bf16, see `matmul`), through `matmul` when there are no batch axes and each side's contracted axes lead
    or trail (every dot of a dense layer and its gradients); any other dot goes to XLA."""
    (lc, rc), (lb, rb) = dimension_numbers
    left, right = _side(lhs.shape, lc), _side(rhs.shape, rc)
    if lb or rb or left is None or right is None or left[1] != right[1]:
        return lax.dot_general(lhs.astype(jnp.bfloat16), rhs.astype(jnp.bfloat16), dimension_numbers,
                               preferred_element_type=out_dtype)
    (ta, k, m), (tb_lead, _, n) = left, right
    a = lhs.reshape((k, m) if ta else (m, k))
    b = rhs.reshape((k, n) if tb_lead else (n, k))
    out = matmul(a, b, ta, not tb_lead, out_dtype)
    free_l = [s for i, s in enumerate(lhs.shape) if i not in tuple(lc)]
    free_r = [s for i, s in enumerate(rhs.shape) if i not in tuple(rc)]
    return out.reshape(*free_l, *free_r)
