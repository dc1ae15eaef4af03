"""w2sjax.runner.progress: a bar on a terminal, plain periodic lines in a redirected log."""

import io
import sys

from w2sjax.runner import progress


def test_a_redirected_log_gets_plain_lines_not_redraws(monkeypatch):
    err = io.StringIO()  # not a terminal
    monkeypatch.setattr(sys, "stderr", err)
    clock = iter([0.0, 0.0, 10.0, 31.0, 40.0, 65.0, 70.0])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    with progress.bar(100, "w2s__seed0", unit="steps", every_s=30.0) as bar:
        for _ in range(5):
            bar.update(20)
    lines = err.getvalue().splitlines()
    assert "\r" not in err.getvalue()
    assert lines == ["w2s__seed0: 60/100 steps (60%), 31 s", "w2s__seed0: 100/100 steps (100%), 65 s",
                     "w2s__seed0: 100/100 steps (100%), 70 s"]


def test_disabled_progress_prints_nothing(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    with progress.bar(10, "x", enabled=False) as bar:
        bar.update(10)
    assert err.getvalue() == "" and bar.n == 10
