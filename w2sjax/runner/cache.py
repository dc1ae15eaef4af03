"""Where w2sjax keeps what it fetches and derives: assets, prepared data sets, feature and bottom
caches, remembered file hashes and XLA's compilation cache all live under :func:`cache_dir`.

It sits below both :mod:`w2sjax.assets` and :mod:`w2sjax.runner.hashes` (which records hashes
there), so neither needs the other to find it.
"""

from __future__ import annotations

import os
import pathlib


def cache_dir() -> pathlib.Path:
    """The root of w2sjax's caches: ``$W2SJAX_CACHE``, else ``$XDG_CACHE_HOME/w2sjax``, else
    ``~/.cache/w2sjax``."""
    if os.environ.get("W2SJAX_CACHE"):
        return pathlib.Path(os.environ["W2SJAX_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(os.path.expanduser(xdg)):  # the XDG spec ignores relative paths
        return pathlib.Path(xdg).expanduser() / "w2sjax"
    return pathlib.Path("~/.cache/w2sjax").expanduser()
