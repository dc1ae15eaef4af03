"""XLA flags that the applications (the ``w2sjax`` command, the benchmarks) choose on CPU.

Flags only take effect before JAX initialises, and they are process-wide, so the
library never sets them on import: downstream code that imports ``w2sjax.losses``
keeps its own. A flag already present in the user's ``XLA_FLAGS`` always wins.

The choices, measured in ``benchmarks/RESULTS.md``:
  * YNNPACK only for individual dots (``individual_dot``). JAX 0.10's default also
    hands element-wise and reduce fusions to YNNPACK, which was slower on BERT
    graphs; turning YNNPACK off entirely loses its AMX kernels for bfloat16 dots
    (about 4x faster than float32 there).
  * One host device per core (up to 8), so a batch sharded over the data axis keeps
    every core busy.
  * No oneDNN flag (2026-12-06, Intel Xeon with AMX, ``benchmarks/flag_ab.py``):
    ``--xla_cpu_use_onednn`` and ``--xla_cpu_experimental_onednn_custom_call`` route none of
    the finetune step's dots to oneDNN while YNNPACK takes them, and oneDNN's dot fusion (YNNPACK
    off) gets them as float32 and then fails to compile a partition.

`enable_compilation_cache` is the application's other default: a persistent cache of
compiled programs, so a rerun, or a preempted job resuming, skips XLA compiles. A damaged entry
(a torn write, a disk error) makes JAX warn and recompile on every run without replacing it, so
the first such warning drops every entry that no longer decompresses, with one line.
"""

from __future__ import annotations

import glob
import os
import pathlib
import re
import sys
import warnings

YNN_FLAG = "xla_cpu_experimental_ynn_fusion_type"
DEVICE_FLAG = "xla_force_host_platform_device_count"


def apply_defaults(*, ynn: str | None = "individual_dot", devices: int | None = None) -> str:
    """Add the defaults to ``XLA_FLAGS`` (those the user has not set); return the result.

    ``ynn=None`` leaves XLA's own YNNPACK default; ``""`` turns YNNPACK off.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    extra = []
    if ynn is not None and YNN_FLAG not in flags:
        extra.append(f"--{YNN_FLAG}={ynn}")
    if DEVICE_FLAG not in flags:
        n = devices if devices is not None else max(1, min(os.cpu_count() or 1, 8))
        extra.append(f"--{DEVICE_FLAG}={n}")
    if extra:
        os.environ["XLA_FLAGS"] = " ".join([flags, *extra]).strip()
    return os.environ.get("XLA_FLAGS", "")


def enable_compilation_cache(path, *, min_compile_secs: float = 0.0) -> bool:
    """Persist compiled XLA programs under ``path`` (unless ``JAX_COMPILATION_CACHE_DIR`` is set).

    JAX's default threshold only keeps programs that took a second to compile, and on CPU none
    of the probe or step programs do. Keeping all of them (under 1 MB for the default experiment)
    makes it rerun in 9.5 s instead of 12.4 s. Returns whether this call turned the cache on.
    """
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return False
    import jax

    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_secs)
    _drop_damaged_entries_on_first_warning(pathlib.Path(path))
    return True


_READ_ERROR = "Error reading persistent compilation cache entry"  # JAX's warning for an unreadable entry


def drop_damaged_entries(path: pathlib.Path) -> list[pathlib.Path]:
    """Delete the entries of the compile cache at ``path`` that do not decompress; returns them."""
    from jax._src import compilation_cache  # the entry format is JAX's own

    dropped = []
    for entry in sorted(path.glob("*-cache")):
        try:
            compilation_cache.decompress_executable(entry.read_bytes())
        except FileNotFoundError:
            continue
        except Exception:  # zlib.error, zstd's errors, OSError: all mean the entry is unusable
            entry.unlink(missing_ok=True)
            dropped.append(entry)
    return dropped


def _drop_damaged_entries_on_first_warning(path: pathlib.Path) -> None:
    """Replace JAX's warning per damaged entry (on every run, the entry never being rewritten) by
    one line, once, after dropping every damaged entry: the programs compile again and are stored
    whole."""
    shown = warnings.showwarning
    handled = []

    def showwarning(message, category, filename, lineno, file=None, line=None):
        text = str(message)
        if not text.startswith(_READ_ERROR):
            return shown(message, category, filename, lineno, file, line)
        dropped = [] if handled else drop_damaged_entries(path)
        found = re.search(r"entry for '([^']+)'", text)
        if found and not any(p.name.startswith(found.group(1) + "-") for p in dropped):
            # It decompressed but did not load: drop that program's entries (a few recompiles).
            for entry in path.glob(f"{glob.escape(found.group(1))}-*-cache"):
                entry.unlink(missing_ok=True)
                dropped.append(entry)
        if not handled:
            handled.append(True)
            print(f"w2sjax: warning: the XLA compile cache {path} had damaged entries; dropped {len(dropped)}, "
                  "their programs are compiled again", file=sys.stderr, flush=True)
        return None

    warnings.showwarning = showwarning
