"""Progress on long work: a tqdm bar on a terminal, plain periodic lines in a log.

A redirected log full of carriage-return redraws is unreadable, so when stderr is not a
terminal the same calls print one line now and then (every ``every_s`` seconds, and at the end).
"""

from __future__ import annotations

import sys
import time


class _Lines:
    """The part of tqdm's interface the library uses, as occasional plain lines on stderr."""

    def __init__(self, total: int, desc: str, unit: str, initial: int, every_s: float):
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.every_s = every_s
        self._start = self._last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            self._say(now)

    def _say(self, now: float) -> None:
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        print(f"{self.desc}: {self.n}/{self.total} {self.unit}{share}, {now - self._start:.0f} s",
              file=sys.stderr, flush=True)

    def close(self) -> None:
        now = time.monotonic()
        if now - self._start >= self.every_s:  # a short task needs no closing line
            self._say(now)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Off(_Lines):
    def update(self, n: int = 1) -> None:
        self.n += n

    def close(self) -> None:
        pass


def bar(total: int, desc: str, *, enabled: bool = True, unit: str = "it", initial: int = 0,
        every_s: float = 30.0):
    """A progress reporter with ``update(n)``, ``close()`` and context-manager use: tqdm on a
    terminal, periodic lines otherwise, nothing when not ``enabled``."""
    if not enabled:
        return _Off(total, desc, unit, initial, every_s)
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=False)
    return _Lines(total, desc, unit, initial, every_s)
