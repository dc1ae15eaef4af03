"""Test session set-up: 8 fake CPU devices, set before JAX initializes.

Every test therefore runs on a multi-device mesh, as a pod job would.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()
