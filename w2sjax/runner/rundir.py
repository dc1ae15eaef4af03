"""The run directory (``--out``): checks before any work, one writer at a time, earlier results kept.

* :func:`check` looks at the directory without writing anything: a parent that is a file, a
  ``results.json`` that is not a regular file, a full disk are one-line :class:`RunDirError`\\ s.
* :func:`lock` creates the directory and takes an OS lock on a file inside it (``fcntl.flock``):
  the kernel drops it when the process ends, even on ``kill -9``, so no stale lock is ever left.
  A second run on the same directory stops at once with ``DIR is in use by process N``. The
  processes of one multi-host job share the directory: each takes its own lock file
  (``.lock`` for process 0, ``.lock.<i>`` for process i), so two jobs collide but one job's
  processes do not.
* :func:`process_hint` says which process this is before JAX starts, when the environment tells.
* :func:`write_results` writes ``results.json``; one made under other settings is first kept as
  ``results.<time>.json`` (:func:`keep_previous_results`), and the old ``results.json`` stays in
  place until the new one is complete, so a full disk or a kill at any step leaves a
  ``results.json``.
* :func:`discard_if_empty` removes the directory a failed run created and left holding only its
  lock (and split records); :func:`holder` says which process runs in a directory, without creating anything.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import pathlib
import shutil
import time

from w2sjax.runner import atomic, saved_splits

RESULTS = "results.json"
MIN_FREE_BYTES = 100 * 2**20  # a stage's checkpoint (a finetuned MiniLM with its optimizer) is ~100 MB

_HELD: dict[str, int] = {}  # lock file path -> open descriptor, for the locks this process holds
_CREATED: set[str] = set()  # run directories this process created (removed again if a failed run leaves them empty)


class RunDirError(ValueError):
    """The output directory cannot be used. The message is one line for the user."""


def check(out: str | os.PathLike, *, min_free_bytes: int = MIN_FREE_BYTES) -> None:
    """Raise :class:`RunDirError` unless ``out`` can hold a run; writes nothing."""
    out = pathlib.Path(out)
    existing = out  # the deepest part of the path that exists, spelled as the user spelled it
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "" if existing == out else f" (in {str(out)!r})"
        raise RunDirError(f"--out: {str(existing)!r}{where} is a file, not a directory")
    if existing == out:
        results = out / RESULTS
        if os.path.lexists(results) and not (results.is_file() and not results.is_symlink()):
            raise RunDirError(f"--out: {str(out / RESULTS)!r} exists and is not a regular file; move it away")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunDirError(f"--out: {str(existing)!r} is not writable")
    disk = os.statvfs(existing)
    free = disk.f_bavail * disk.f_frsize
    # A pseudo file system (/proc) reports no blocks at all; creating the directory then fails
    # with its own one-line error in lock().
    if disk.f_blocks and free < min_free_bytes:
        raise RunDirError(
            f"--out: only {free / 2**20:.0f} MiB free on the disk of {str(existing)!r}; "
            f"a run needs at least {min_free_bytes / 2**20:.0f} MiB"
        )


def lock(out: str | os.PathLike, *, process: int = 0) -> None:
    """Create ``out`` and hold its lock for ``process`` until :func:`release` or the process ends.

    Taking a lock this process already holds is a no-op (an in-process rerun on one directory).
    """
    out = pathlib.Path(out)
    path = out / (".lock" if process == 0 else f".lock.{process}")
    if str(path.absolute()) in _HELD:
        return
    try:
        if not out.exists():
            _CREATED.add(str(out.absolute()))
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise RunDirError(f"--out: cannot create {str(out)!r}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise RunDirError(f"{out} is in use by process {holder}; wait for it or choose another --out") from None
        raise RunDirError(f"--out: cannot lock {str(path)!r}: {exc.strerror}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _HELD[str(path.absolute())] = fd


def release(out: str | os.PathLike) -> None:
    """Drop the locks this process holds on ``out`` and below it (closing the file releases the flock)."""
    root = str(pathlib.Path(out).absolute())
    for path in [p for p in _HELD if p.startswith(root + os.sep)]:  # and sub-runs' (methods.supervisors)
        os.close(_HELD.pop(path))


def holder(out: str | os.PathLike) -> str | None:
    """The process id written in a lock of ``out`` that another process holds now, else None.
    Creates nothing."""
    for path in sorted(pathlib.Path(out).glob(".lock*")):
        if str(path.absolute()) in _HELD:
            continue
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return os.read(fd, 64).decode(errors="replace").strip() or "?"
        finally:
            os.close(fd)  # closing drops the shared lock just taken
    return None


def discard_if_empty(out: str | os.PathLike) -> bool:
    """After a failed run: drop its locks, and remove ``out`` when this process created it and it
    holds nothing but locks, empty folders and the seeds' split records. True when it was removed."""
    out = pathlib.Path(out)
    release(out)
    if str(out.absolute()) not in _CREATED or not out.is_dir():
        return False
    # The seeds' split records (`saved_splits`) only describe stages, and a failed run that
    # wrote nothing else finished none.
    kept = (p for p in out.rglob("*") if p.relative_to(out).parts[0] != saved_splits.DIRNAME)
    if any(p.is_file() and not p.name.startswith(".lock") or p.is_symlink() for p in kept):
        return False
    shutil.rmtree(out, ignore_errors=True)
    _CREATED.discard(str(out.absolute()))
    return True


def process_hint(distributed: bool) -> int | None:
    """This process's index in its job, known before JAX starts: 0 for a single-process run, the
    ``JAX_PROCESS_ID`` of an explicitly configured job, or None when only ``jax.distributed``
    can tell (cluster auto-detection)."""
    if os.environ.get("JAX_PROCESS_ID", "").isdigit():
        return int(os.environ["JAX_PROCESS_ID"])
    if distributed or os.environ.get("JAX_NUM_PROCESSES", "1") not in ("", "1"):
        return None
    return 0


def _previous(out: pathlib.Path) -> dict | None:
    try:
        previous = json.loads((out / RESULTS).read_text())
    except (OSError, ValueError):
        return None
    return previous if isinstance(previous, dict) else None


def _flat(tree, prefix: str = "") -> dict:
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree}


_MAX_SHOWN = 6  # changed keys named in the plan line; the rest are counted


def changed_settings(out: str | os.PathLike, config: dict) -> str:
    """``"train.epochs 0.2 -> 5.0, ..."``: the config keys that differ from the run already in
    ``out`` (its ``results.json``); ``""`` when there is none or nothing changed."""
    previous = _previous(pathlib.Path(out))
    if previous is None or not isinstance(previous.get("config"), dict):
        return ""
    old, new = _flat(previous["config"]), _flat(json.loads(json.dumps(config)))
    keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    fmt = lambda v: "-" if v is None else ",".join(map(str, v)) if isinstance(v, list) else str(v)
    shown = [f"{k} {fmt(old.get(k))} -> {fmt(new.get(k))}" for k in keys[:_MAX_SHOWN]]
    return ", ".join(shown) + (f" and {len(keys) - _MAX_SHOWN} more" if len(keys) > _MAX_SHOWN else "")


def _stage_names(results: dict) -> set:
    runs = results.get("runs") if isinstance(results.get("runs"), list) else []
    return {json.dumps(r.get("stages"), sort_keys=True) for r in runs if isinstance(r, dict)}


def keep_previous_results(out: str | os.PathLike, results: dict) -> pathlib.Path | None:
    """Before ``results`` replaces ``out/results.json``: when that file came from other settings
    (another config, or stages with other fingerprints), keep it also as ``results.<time>.json``
    and return that path; a plain resume of the same run keeps nothing.

    ``results.json`` itself is left in place (the new one replaces it atomically): the copy is a
    hard link, which writes no data and so works on a full disk, or a copy where links are not
    supported."""
    out = pathlib.Path(out)
    if not (out / RESULTS).is_file():
        return None
    previous = _previous(out) or {}  # an unreadable file is kept too: it may be someone's only copy
    same_config = previous.get("config") == json.loads(json.dumps(results["config"]))
    if same_config and _stage_names(previous) == _stage_names(json.loads(json.dumps(results))):
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime((out / RESULTS).stat().st_mtime))
    target = out / f"results.{stamp}.json"
    n = 1
    while target.exists():
        n += 1
        target = out / f"results.{stamp}-{n}.json"
    try:
        os.link(out / RESULTS, target)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EEXIST):
            raise
        with atomic.replacing(target) as tmp:  # no hard links here (some network file systems)
            shutil.copyfile(out / RESULTS, tmp)
    return target


def write_results(out: str | os.PathLike, results: dict) -> pathlib.Path | None:
    """Write ``out/results.json`` atomically, keeping one from other settings first
    (:func:`keep_previous_results`, whose path is returned). If the write fails, the old
    ``results.json`` is still there, and the extra copy of it is removed again."""
    out = pathlib.Path(out)
    kept = keep_previous_results(out, results)
    try:
        atomic.write_json(out / RESULTS, results)
    except BaseException:
        if kept is not None and (out / RESULTS).is_file():
            kept.unlink(missing_ok=True)  # results.json is still the old one; it needs no second name
        raise
    return kept
