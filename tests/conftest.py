"""Test session set-up: 8 fake CPU devices, set before JAX initializes.

Every test therefore runs on a multi-device mesh, as a pod job would. The session also compiles
cheaper: XLA without LLVM's optimisation passes, and one compile cache shared by all its processes.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    _flags += " --xla_force_host_platform_device_count=8"
if "xla_backend_optimization_level" not in _flags:
    # The tests' programs are small and each runs a few times, so LLVM's optimisation passes cost
    # more than they save (2026-12-07, 2-core AMD EPYC, the loss tests and the tiny benchmark:
    # 193 s, against 202 s at XLA's default level 2; eight test files with the shared cache below:
    # 568 s against 616 s; whole suite on a 2-core Intel Xeon beside one other CPU-bound job: 1153 s,
    # against 1218 s at level 1, which wins only on the few tests that mostly execute, not compile).
    # Without fast-math no pass may reorder float arithmetic.
    _flags += " --xla_backend_optimization_level=0"
os.environ["XLA_FLAGS"] = _flags.strip()

import pytest  # noqa: E402  (after the environment above, which must precede any JAX import)

_XLA_CACHE_VAR = "JAX_COMPILATION_CACHE_DIR"


def pytest_configure(config):
    """One persistent XLA compile cache for the whole test run, shared by every worker and every
    process a test starts: the suite compiles the same small programs in many processes (each
    worker, each `w2sjax run` a test launches), and on two cores compiling is most of its time.
    The folder is new for each run, so no test sees programs from an earlier run, and is removed
    at the end. Set up by the main process only, before xdist starts the workers that inherit it;
    a user's own ``JAX_COMPILATION_CACHE_DIR`` is kept."""
    if hasattr(config, "workerinput") or os.environ.get(_XLA_CACHE_VAR):
        return
    import tempfile

    config._w2sjax_xla_cache = tempfile.mkdtemp(prefix="w2sjax-tests-xla-")
    os.environ[_XLA_CACHE_VAR] = config._w2sjax_xla_cache
    # JAX keeps only programs that took a second to compile by default; here nearly none do
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


def pytest_unconfigure(config):
    folder = getattr(config, "_w2sjax_xla_cache", None)
    if folder:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
        os.environ.pop(_XLA_CACHE_VAR, None)


@pytest.fixture
def real_cache(monkeypatch):
    """The user's cache (``W2SJAX_CACHE``, else ``$XDG_CACHE_HOME/w2sjax``, else ``~/.cache/w2sjax``),
    shared across tests so each asset is fetched once; only the per-asset overrides are dropped,
    so the registries' real packages are what the tests see."""
    from w2sjax import assets

    for name in assets.known_assets():
        monkeypatch.delenv(assets.env_var(name), raising=False)

