"""How close a training stage runs to the hardware's peak: FLOPs per step, FLOP/s, MFU.

A stage's FLOPs per step come from XLA's cost analysis of the compiled train program (the same
program the stage runs, so asking costs nothing once it is compiled). XLA counts a multiply-add
as two FLOPs and counts a ``while`` body once when its trip count is not a constant, which makes
the ``fori_loop`` of ``train.train_loop`` report one step. A partitioned program reports one
device's share, so the total is that times the devices of the mesh.

The peak that MFU divides by: for GPUs and TPUs the vendor's dense bfloat16 figure when the device
is in :data:`KNOWN_PEAKS`, otherwise (CPUs, float32 on accelerators, unknown devices) a square
matmul measured once per machine, dtype, JAX version and XLA flags, and cached in
``w2sjax.assets.cache_dir()/peak_flops.json``. A measured peak taken while other work loaded the
machine is low, so MFU can then exceed 1; delete the file to measure again.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import re
import threading
import time
from typing import Any

# Dense bfloat16 FLOP/s per device, from the vendors' data sheets (no sparsity).
KNOWN_PEAKS = {
    "H100 PCIe": 756e12,
    "H100": 989e12,  # SXM; device_kind "NVIDIA H100 80GB HBM3"
    "H200": 989e12,
    "A100": 312e12,
    "L4": 121e12,
    "TPU v6 lite": 918e12,
    "TPU v5 lite": 197e12,
    "TPU v5": 459e12,  # v5p
    "TPU v4": 275e12,
}

PEAK_FILE = "peak_flops.json"
_MATMUL_N = 2048  # large enough for the matmul kernels' peak on CPU, small enough to take about a second
_lock = threading.Lock()
_peaks: dict[str, tuple[float, str]] = {}  # per process: the cache file is read once per key


def program_flops(compiled) -> float | None:
    """FLOPs of one run of ``compiled`` (a ``jax.stages.Compiled``) on one device, or None when
    the backend gives no cost analysis."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # NotImplementedError, or a runtime without cost analysis
        return None
    if isinstance(cost, (list, tuple)):  # older JAX: one dict per program
        cost = cost[0] if cost else None
    flops = (cost or {}).get("flops")
    return float(flops) if flops is not None and flops >= 0 else None


_DOT = re.compile(r"stablehlo\.dot_general[^\n]*?:\s*\(tensor<[^>]*?x(bf16|f16|f32|f64)>")


def dot_dtype(lowered) -> str:
    """"bfloat16" when the program's matmuls take 16-bit operands, else "float32"."""
    try:
        kinds = set(_DOT.findall(lowered.as_text()))
    except Exception:
        return "float32"
    return "bfloat16" if kinds & {"bf16", "f16"} else "float32"


def step_cost(jitted, *args, devices: int, **kwargs) -> tuple[float | None, str]:
    """``(FLOPs per call over all devices, matmul dtype)`` of ``jitted(*args, **kwargs)``.

    Lowering and compiling are cached by JAX: asked before the call, this is the call's own compile
    (the call then reuses it); asked again, it costs microseconds."""
    lowered = jitted.lower(*args, **kwargs)
    flops = program_flops(lowered.compile())
    return (None if flops is None else flops * devices), dot_dtype(lowered)


def _device_kind() -> tuple[str, str]:
    import jax

    device = jax.devices()[0]
    return device.platform, str(getattr(device, "device_kind", ""))


def cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo, or None where it cannot be read."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


@functools.cache
def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags from /proc/cpuinfo (empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def known_peak(device_kind: str, dtype: str) -> float | None:
    """The data-sheet bfloat16 peak of one ``device_kind`` (longest matching name), else None."""
    if dtype != "bfloat16":
        return None
    names = sorted((n for n in KNOWN_PEAKS if n.lower() in device_kind.lower()), key=len, reverse=True)
    return KNOWN_PEAKS[names[0]] if names else None


def measure_matmul_peak(dtype: str, *, n: int = _MATMUL_N, repeats: int = 8) -> float:
    """FLOP/s of the fastest of ``repeats`` ``n x n`` matmuls (float32 accumulation) on the default device."""
    import jax
    import jax.numpy as jnp

    dot = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.dtype(dtype))
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.dtype(dtype))
    dot(a, b).block_until_ready()  # compile
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        dot(a, b).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best


def _peak_key(kind: str, dtype: str) -> str:
    import jax

    flags = " ".join(sorted(f for f in os.environ.get("XLA_FLAGS", "").split()
                            if "device_count" not in f))  # fake devices share the same cores
    return f"{kind} | {os.cpu_count()} cores | jax {jax.__version__} | {dtype} | {flags}"


def peak_flops(dtype: str = "float32") -> tuple[float, str]:
    """``(FLOP/s of one device, where the figure comes from)`` for matmuls with ``dtype`` operands.

    On a CPU every (fake) device shares the same cores, so this is the whole host's peak."""
    from w2sjax import assets
    from w2sjax.runner import atomic

    backend, device_kind = _device_kind()
    table = None if backend == "cpu" else known_peak(device_kind, dtype)
    if table is not None:
        return table, f"data sheet, {device_kind}"
    kind = (cpu_model() or platform.processor() or platform.machine()) if backend == "cpu" else f"{backend} {device_kind}"
    key = _peak_key(kind, dtype)
    with _lock:
        if key in _peaks:
            return _peaks[key]
        path = assets.cache_dir() / PEAK_FILE
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            saved = {}
        entry = saved.get(key) if isinstance(saved, dict) else None
        if not (isinstance(entry, dict) and isinstance(entry.get("flops_per_s"), (int, float))):
            entry = {"flops_per_s": measure_matmul_peak(dtype),
                     "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
            saved = {**(saved if isinstance(saved, dict) else {}), key: entry}
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic.write_text(path, json.dumps(saved, indent=1, sort_keys=True) + "\n")
            except OSError:
                pass  # a read-only cache: measured again by the next process
        _peaks[key] = (float(entry["flops_per_s"]), f"{_MATMUL_N}x{_MATMUL_N} matmul measured {entry['measured']}")
        return _peaks[key]


class Meter:
    """FLOPs and seconds of a stage's training calls, reported per logging interval and in all.

    ``peak_devices`` multiplies the one-device peak: the mesh's devices on GPUs and TPUs, the
    processes on CPUs (whose fake devices share one host's cores).
    """

    def __init__(self, mesh):
        import jax

        self.costs: dict[Any, float | None] = {}
        self.devices = mesh.size
        cpu = jax.devices()[0].platform == "cpu"
        self.peak_devices = jax.process_count() if cpu else mesh.size
        self.dtype = "float32"
        self.flops = self.seconds = 0.0  # since the last interval
        self.total_flops = self.total_seconds = 0.0
        self.steps = self.total_steps = 0

    def cost(self, key, jitted, *args, **kwargs) -> float | None:
        """FLOPs per step of the program ``key`` names (see :func:`step_cost`), once per key."""
        if key not in self.costs:
            start = time.perf_counter()  # mostly the program's compile, left out of the timed seconds
            lowered = jitted.lower(*args, **kwargs)
            flops = program_flops(lowered.compile())
            if not self.costs:  # every bucket length of a stage has the same matmul dtype
                self.dtype = dot_dtype(lowered)
            self.costs[key] = None if flops is None else flops * self.devices
            self.seconds -= time.perf_counter() - start
        return self.costs[key]

    def add(self, flops_per_step: float | None, steps: int) -> None:
        if flops_per_step is None:
            self.flops = float("nan")
        else:
            self.flops += flops_per_step * steps
        self.steps += steps

    def time(self, seconds: float) -> None:
        self.seconds += seconds

    def _fields(self, flops: float, seconds: float, steps: int) -> dict:
        if not steps or not seconds > 0 or flops != flops:  # nothing timed, or no cost analysis
            return {}
        rate = flops / seconds
        peak, _ = peak_flops(self.dtype)
        return {"flops_per_step": round(flops / steps), "flops_per_s": _sig(rate), "mfu": _sig(rate / (peak * self.peak_devices))}

    def interval(self) -> dict:
        """The fields for one ``metrics.jsonl`` step line: this interval's FLOPs per step, FLOP/s, MFU."""
        fields = self._fields(self.flops, self.seconds, self.steps)
        self.total_flops += self.flops
        self.total_seconds += self.seconds
        self.total_steps += self.steps
        self.flops = self.seconds = 0.0
        self.steps = 0
        return fields

    def summary(self) -> dict:
        """The whole stage's figures, with the peak and where it comes from (one line at the end)."""
        self.interval()
        fields = self._fields(self.total_flops, self.total_seconds, self.total_steps)
        if not fields:
            return {}
        peak, source = peak_flops(self.dtype)
        return {**fields, "train_seconds": round(self.total_seconds, 3), "matmul_dtype": self.dtype,
                "peak_flops_per_s": _sig(peak * self.peak_devices), "peak": source}


def _sig(x: float) -> float:
    return float(f"{x:.4g}")  # four significant digits: the timings are not more precise
