"""Test session set-up: 8 fake CPU devices, set before JAX initializes.

Every test therefore runs on a multi-device mesh, as a pod job would.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()

import pytest  # noqa: E402  (after the environment above, which must precede any JAX import)


@pytest.fixture
def real_cache(monkeypatch):
    """The user's cache (``W2SJAX_CACHE``, else ``$XDG_CACHE_HOME/w2sjax``, else ``~/.cache/w2sjax``),
    shared across tests so each asset is fetched once; only the per-asset overrides are dropped,
    so the registries' real packages are what the tests see."""
    from w2sjax import assets

    for name in assets.known_assets():
        monkeypatch.delenv(assets.env_var(name), raising=False)

