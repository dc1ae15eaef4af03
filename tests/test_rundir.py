"""The run directory: one writer at a time, and one-line errors before any work for a bad --out."""

import errno
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest

from w2sjax.runner import rundir

ROOT = pathlib.Path(__file__).resolve().parents[1]
SPAMBASE = ["--set", "data.task=spambase", "--set", "weak_models=linear", "--set", "strong_models=mlp",
            "--set", "seeds=0"]


def cli(*args, cwd=None, **kw):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "w2sjax.cli", "run", "--no-progress", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def wait_for(predicate, proc, timeout=300):
    start = time.time()
    while not predicate():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() - start < timeout, "condition not reached"
        time.sleep(0.02)


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("w2sjax: error:"), stderr
    return lines[0]


def test_second_run_on_same_out_exits_2_at_once_and_first_is_unharmed(tmp_path):
    out = tmp_path / "r"
    first = cli("--out", str(out), *SPAMBASE, "--set", "weak_train.epochs=2", "--set", "train.epochs=2")
    wait_for(lambda: (out / ".lock").exists() and (out / ".lock").read_text().strip() == str(first.pid), first)
    # The first run is paused while it holds the lock, so it is surely still running when the second
    # one asks (a long training run only made that likely), then resumed to finish its work.
    first.send_signal(signal.SIGSTOP)
    try:
        # The second run is the command itself, asked afterwards whether it imported JAX.
        argv = ["run", "--no-progress", "--out", str(out), *SPAMBASE]
        code = f"import sys; from w2sjax import cli; rc = cli.main({argv!r}); print('jax' in sys.modules); sys.exit(rc)"
        second = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                                capture_output=True, text=True, timeout=120)
        assert first.poll() is None, "the first run must still be running for this test to mean anything"
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 2
    assert f"{out} is in use by process {first.pid}" in one_error_line(second.stderr)
    # "At once" means before JAX is even imported (no wall-clock bound: a busy machine would make
    # one flaky, and the import is what takes the time).
    assert second.stdout.strip() == "False"
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert [r["loss"] for r in results["runs"]] == ["xent", "logconf"]
    assert results["config"]["train"]["epochs"] == 2.0


def test_kill_9_leaves_no_stale_lock(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from w2sjax import rundir; rundir.lock({str(tmp_path)!r}); print('locked', flush=True); "
                               "import time; time.sleep(600)"],
        env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(rundir.RunDirError, match=f"{tmp_path} is in use by process {holder.pid}"):
        rundir.lock(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    rundir.lock(tmp_path)  # the kernel dropped the dead process's lock
    rundir.lock(tmp_path)  # and taking it again in the same process is a no-op
    rundir.release(tmp_path)


def test_processes_of_one_job_take_their_own_lock_files(tmp_path):
    rundir.lock(tmp_path, process=0)
    rundir.lock(tmp_path, process=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", ".lock.1"]
    rundir.release(tmp_path)


@pytest.mark.parametrize(
    "make,out,message",
    [
        (lambda d: (d / "afile").write_text("x"), "afile/sub", "--out: 'afile' (in 'afile/sub') is a file, not a directory"),
        (lambda d: None, "/proc/nope", "--out: "),  # as root: cannot create it; as a user: not writable
        (lambda d: (d / "r" / "results.json").mkdir(parents=True), "r",
         "'r/results.json' exists and is not a regular file"),
    ],
)
def test_bad_out_is_one_line_before_any_work(tmp_path, make, out, message):
    make(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    proc = cli("--out", out, *SPAMBASE, cwd=tmp_path)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2
    assert message in one_error_line(err)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written


def test_full_disk_is_refused(tmp_path):
    with pytest.raises(rundir.RunDirError, match="MiB free on the disk of"):
        rundir.check(tmp_path / "new", min_free_bytes=2**62)
    assert not (tmp_path / "new").exists()


def test_unreadable_previous_results_are_kept(tmp_path):
    (tmp_path / "results.json").write_text("{ torn")
    kept = rundir.keep_previous_results(tmp_path, {"config": {}, "runs": []})
    assert kept is not None and kept.read_text() == "{ torn"


class _DiskFillsAt:
    """Each file-system call that can run out of space counts as one step; step ``k`` fails with
    ENOSPC, as a disk that fills right there would."""

    def __init__(self, k: int):
        self.k, self.calls = k, 0

    def wrap(self, fn):
        def step(*args, **kwargs):
            self.calls += 1
            if self.calls == self.k:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return fn(*args, **kwargs)
        return step


def test_results_json_survives_a_disk_that_fills_at_any_step_of_the_write(tmp_path, monkeypatch):
    old = {"config": {"train": {"lr": 0.01}}, "runs": [{"task": "t", "stages": {"w2s": "a"}}]}
    new = {"config": {"train": {"lr": 0.02}}, "runs": [{"task": "t", "stages": {"w2s": "b"}}]}
    write_text = pathlib.Path.write_text
    k, outcomes = 0, []
    while True:
        k += 1
        out = tmp_path / f"k{k}"
        out.mkdir()
        (out / "results.json").write_text(json.dumps(old))
        disk = _DiskFillsAt(k)
        with monkeypatch.context() as m:
            for name in ("link", "replace", "fsync", "open", "write"):
                m.setattr(os, name, disk.wrap(getattr(os, name)))
            m.setattr(pathlib.Path, "write_text", disk.wrap(write_text))
            m.setattr(shutil, "copyfile", disk.wrap(shutil.copyfile))
            try:
                kept = rundir.write_results(out, new)
                failed = False
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                failed = True
        # Whatever step failed, a complete results.json is there: the old one or the new one.
        assert json.loads((out / "results.json").read_text()) in (old, new)
        others = sorted(p.name for p in out.iterdir() if p.name != "results.json")
        if failed:
            assert json.loads((out / "results.json").read_text()) == old
            assert not others  # no temporary file, no second copy of the old results
            outcomes.append("old")
        else:
            assert json.loads((out / "results.json").read_text()) == new
            assert others == [kept.name] and json.loads(kept.read_text()) == old
            break
    assert k >= 4 and outcomes == ["old"] * (k - 1)  # link, temp file, its write, fsync, rename


def test_results_are_kept_by_copy_where_hard_links_are_refused(tmp_path, monkeypatch):
    (tmp_path / "results.json").write_text('{"config": {"a": 1}, "runs": []}')

    def no_links(*args):
        raise OSError(errno.EPERM, "links not supported")

    monkeypatch.setattr(os, "link", no_links)
    kept = rundir.write_results(tmp_path, {"config": {"a": 2}, "runs": []})
    assert json.loads(kept.read_text())["config"] == {"a": 1}
    assert json.loads((tmp_path / "results.json").read_text())["config"] == {"a": 2}


def test_a_full_disk_after_the_plan_with_a_settings_change_keeps_results_json(tmp_path):
    out = tmp_path / "run"
    proc = cli("--out", str(out), *SPAMBASE, "--set", "losses=xent", "--set", "data.n_train=300",
               "--set", "weak_train.epochs=2", "--set", "train.epochs=2")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    before = (out / "results.json").read_text()
    # Another name: the same stages (all reused), but results from other settings, so the old file
    # is kept; then the disk is full for anything over 1 KiB (results.json is larger).
    small_files = ["bash", "-c", "trap '' XFSZ; ulimit -f 1; exec \"$@\"", "bash"]
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    again = subprocess.run(
        [*small_files, sys.executable, "-m", "w2sjax.cli", "run", "--no-progress", "--out", str(out), *SPAMBASE,
         "--set", "losses=xent", "--set", "data.n_train=300", "--set", "weak_train.epochs=2",
         "--set", "train.epochs=2", "--set", "name=renamed"], env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 1 and "results.json" in one_error_line(
        "\n".join(line for line in again.stderr.splitlines() if not line.startswith("w2sjax: warning:")))
    assert (out / "results.json").read_text() == before
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(("results", ".results"))) == ["results.json"]
