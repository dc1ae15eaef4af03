"""Training curves as TensorBoard event files, beside ``metrics.jsonl``, when TensorBoard's writer is
installed (``pip install 'w2sjax[tensorboard]'``, i.e. ``tensorboardX``); otherwise nothing.

``metrics.jsonl`` stays the record the figures are drawn from; the event files are a view of it
for people who watch runs in TensorBoard (``tensorboard --logdir DIR/tensorboard``). Each number
of a record becomes the scalar ``<name>/<stage>`` (``loss/w2s__glove-bow__minilm-l2__xent__seed0``)
at the record's step and wall time: TensorBoard groups the charts by metric, and every stage (so
every loss: xent and logconf are different objectives) has a chart of its own.

Only ``tensorboardX`` is used. TensorFlow's ``tf.summary`` (and ``clu.metric_writers`` over it)
would import TensorFlow into a JAX process: seconds of start-up, and on a GPU machine TensorFlow
claims the accelerator's memory unless told not to. ``W2SJAX_TENSORBOARD=0`` turns the writer off.
"""

from __future__ import annotations

import atexit
import math
import numbers
import os
import pathlib
import re
import sys

SUBDIR = "tensorboard"
_SKIP = frozenset({"stage", "step", "time"})
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_./-]")  # TensorBoard tags allow these characters only
_writers: dict[pathlib.Path, object] = {}  # one writer per directory per process


def available() -> bool:
    """Whether event files will be written: tensorboardX is importable and not turned off."""
    if os.environ.get("W2SJAX_TENSORBOARD", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    try:
        _import_tensorboardx()
    except ImportError:
        return False
    return True


def _import_tensorboardx():
    """``import tensorboardX`` without letting it import PyTorch.

    When torch is installed, tensorboardX imports it at import time, only to accept torch tensors
    as values: 1.5 s or more added to the start of every run (measured 2026-12-06: 1.84 s against
    0.44 s on a loaded 2-core Xeon), for scalars that here are always Python floats. While it
    imports, ``torch`` is marked missing (tensorboardX catches that ImportError); the mark is
    removed right after, so a later ``import torch`` works as usual. Called from the main thread,
    before any training thread starts.
    """
    hide = "torch" not in sys.modules
    if hide:
        sys.modules["torch"] = None  # makes `import torch` raise ImportError
    try:
        import tensorboardX
    finally:
        if hide and "torch" in sys.modules and sys.modules["torch"] is None:
            del sys.modules["torch"]
    return tensorboardX


def _writer(logdir: pathlib.Path):
    writer = _writers.get(logdir)
    if writer is None:
        writer = _import_tensorboardx().SummaryWriter(logdir=str(logdir), flush_secs=30)
        atexit.register(writer.close)  # events still queued are written when the process ends
        _writers[logdir] = writer
    return writer


class TensorBoardLog:
    """``log(record)`` adds a metrics record's numbers to ``directory/tensorboard``; a no-op when
    ``directory`` is None or TensorBoard's writer is not installed."""

    def __init__(self, directory: pathlib.Path | None):
        self.logdir = None if directory is None or not available() else pathlib.Path(directory) / SUBDIR

    def __call__(self, record: dict) -> None:
        if self.logdir is None or not isinstance(record.get("stage"), str):
            return
        step = record.get("step")
        if not isinstance(step, numbers.Real) or isinstance(step, bool):
            return
        writer = _writer(self.logdir)
        walltime = record.get("time")
        stage = _TAG_UNSAFE.sub("_", record["stage"])  # hf:/path -> hf_/path, a>b -> a_b
        for name, value in record.items():
            if name in _SKIP or isinstance(value, bool) or not isinstance(value, numbers.Real):
                continue
            if math.isfinite(value):
                writer.add_scalar(f"{name}/{stage}", float(value), global_step=int(step),
                                  walltime=walltime if isinstance(walltime, numbers.Real) else None)



def flush_all() -> None:
    """Write out every queued event and close the files (a run calls it when it finishes, so they
    are complete while the process goes on, as in a notebook). tensorboardX writes from a
    background queue that only closing drains; a later record opens a new event file."""
    while _writers:
        _, writer = _writers.popitem()
        writer.close()
