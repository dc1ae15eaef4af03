"""Ctrl-C (SIGINT) that always stops a run, even when a callback swallows the interrupt.

Python runs a signal handler in the main thread at the next bytecode, wherever that is. When that
is inside a callback whose exceptions are ignored (a ``gc`` callback such as XLA's, a
``__del__``, a weakref finaliser), the default handler's ``KeyboardInterrupt`` is printed as
"Exception ignored" and lost, and the run goes on to exit 0. So the handler installed here also
*remembers* the signal, and the long-running loops poll :func:`check` at safe points (each train
chunk, each embedding batch, each stage, before results are written): a remembered interrupt is
raised there again as :class:`Interrupted`, a ``KeyboardInterrupt``.

SIGINT raises at once (Ctrl-C stops a compile or a data build too) and is remembered; inside
:func:`deferred` (a checkpoint save or restore) it is only remembered until the block ends.
Inside :func:`safe_points` (the train loop) the first one is only remembered, with one line saying
so: the loop saves an in-stage checkpoint at its next stop and raises there; a second Ctrl-C
raises at once.
SIGTERM (preemption: save, then stop) is handled by the stage-safety code (`preemption.py`, `checkpoint.py`), which
keeps its own flag and needs no raise from a handler, so nothing can swallow it.

Only an application installs the handler (the ``w2sjax`` command does, in its main thread); the
library only polls, which costs one global read when no signal came.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator

__all__ = ["Interrupted", "install", "pending", "check", "clear", "deferred", "safe_points"]

_received: int | None = None


class Interrupted(KeyboardInterrupt):
    """The run was stopped by signal ``signum`` (SIGINT); ``step`` is set when it stopped inside
    stage ``stage`` right after saving that step as an in-stage checkpoint."""

    def __init__(self, signum: int, *, stage: str | None = None, step: int | None = None):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.stage, self.step = signum, stage, step

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT


def _on_sigint(signum, frame):
    global _received
    again = _received is not None
    _received = signum
    if _deferring:
        return
    if _soft and not again:
        # os.write, not print: a handler may run inside a print of the main thread
        os.write(2, b"w2sjax: stopping at the end of the current chunk of steps (Ctrl-C again to stop now)\n")
        return
    raise Interrupted(signum)


_deferring = 0
_soft = 0


@contextlib.contextmanager
def safe_points() -> Iterator[None]:
    """Within this block the first SIGINT is only remembered: the code polls :func:`pending` at its
    safe points, saves what it must and raises. A second SIGINT raises at once."""
    global _soft
    _soft += 1
    try:
        yield
    finally:
        _soft -= 1


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Within this block a SIGINT is only remembered, and raised when the block ends.

    For work that must not be cut in half by an exception, e.g. a checkpoint save whose
    background threads would otherwise outlive the interpreter and print tracebacks.
    """
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
    if not _deferring and not _soft:  # inside safe_points the loop raises at its own stop
        check()


def install() -> None:
    """Install the SIGINT handler (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGINT, _on_sigint)
    # Already in the chain (under another w2sjax hook that wrapped this one): wrapping that hook
    # again would make the two call each other for ever.
    if not hook_chain_holds(sys.unraisablehook, lambda hook: hook is _quiet_about_lost_interrupts):
        global _previous_hook
        _previous_hook = sys.unraisablehook
        sys.unraisablehook = _quiet_about_lost_interrupts


_previous_hook = sys.unraisablehook


def hook_chain_holds(hook, wanted) -> bool:
    """Whether ``wanted(h)`` holds for ``hook`` or a hook it hands exceptions on to, following
    w2sjax's own unraisable hooks (this module's, and any with a ``_w2sjax_previous`` link)."""
    seen = set()
    while hook is not None and id(hook) not in seen:
        if wanted(hook):
            return True
        seen.add(id(hook))
        hook = _previous_hook if hook is _quiet_about_lost_interrupts else getattr(hook, "_w2sjax_previous", None)
    return False


def _quiet_about_lost_interrupts(unraisable) -> None:
    # A swallowed Interrupted is remembered and raised again by check(): no "Exception ignored"
    # traceback for it, so the run still ends with its one line.
    if not isinstance(unraisable.exc_value, Interrupted):
        _previous_hook(unraisable)


def pending() -> int | None:
    """The signal received and not yet acted on, if any."""
    return _received


def check() -> None:
    """Raise :class:`Interrupted` if Ctrl-C came, even one whose first raise was lost."""
    if _received is not None:
        raise Interrupted(_received)


def clear() -> None:
    """Forget a received signal (for a process that handled it and goes on, e.g. a notebook)."""
    global _received
    _received = None
