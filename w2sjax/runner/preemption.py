"""Preemption: on SIGTERM a run stops at a step every process agrees on, after a checkpoint.

TPU VMs, GCE spot VMs and SLURM send SIGTERM some time before they take the machine. The train
loop asks :func:`reached_sync_point` at every stop (the host-side points between compiled chunks
of steps); when it says yes, the loop saves an in-stage checkpoint and raises :class:`Preempted`,
and the command exits non-zero saying the same command resumes the run.

* One process: :func:`install` sets a Python SIGTERM handler that only raises a flag.
* Several processes: ``jax.distributed`` owns SIGTERM (its preemption notifier tells every
  process), and ``multihost_utils.reached_preemption_sync_point`` answers True on all of them at
  the same call, so every process saves the same step. It needs a counter that advances in step
  on every process: the number of calls made so far, identical because every process runs the
  same stages with the same stops.
* :func:`agree` makes any other per-process decision (a time-based checkpoint) the same on every
  process: process 0's answer wins.
"""

from __future__ import annotations

import signal
import threading

import jax
import numpy as np

EXIT_PREEMPTED = 128 + signal.SIGTERM  # what a shell reports for a process ended by SIGTERM

_state = {"requested": False, "calls": 0}


class Preempted(Exception):
    """A SIGTERM stopped stage ``stage`` at ``step`` (after its in-stage checkpoint, when ``saved``)."""

    def __init__(self, stage: str, step: int, *, saved: bool = True):
        where = f"at step {step}, after saving a checkpoint" if saved else "before it started"
        super().__init__(f"stage {stage} stopped by SIGTERM {where}")
        self.stage, self.step = stage, step


def _on_sigterm(signum, frame) -> None:
    _state["requested"] = True


def install() -> None:
    """Catch SIGTERM (an application calls this, before JAX starts; the library never does).

    In a multi-process job, ``jax.distributed.initialize`` later installs its own SIGTERM handler
    in place of this one, which is what :func:`reached_sync_point` then relies on.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


def clear() -> None:
    """Forget a SIGTERM already seen (an application that handled it, or a test)."""
    _state["requested"] = False


def requested() -> bool:
    """Whether this process got a SIGTERM (single-process runs)."""
    return _state["requested"]


def reached_sync_point() -> bool:
    """True when the run must save and stop now; the same answer on every process. Call it at
    every host stop of the train loop, on every process."""
    _state["calls"] += 1
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return multihost_utils.reached_preemption_sync_point(_state["calls"])
    return _state["requested"]


def agree(flag: bool) -> bool:
    """``flag`` as process 0 sees it, on every process (one tiny collective; free on one process)."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.asarray(flag, np.bool_)))
