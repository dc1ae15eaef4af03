"""Atomic file writes: a temporary file beside the target, then one rename.

Every writer of a file that others read (``results.json``, figures, feature-cache
chunks, asset records) goes through :func:`replacing`, so

* a reader sees the old file or the new one, never half of one;
* a write that fails (a full disk, an exception, Ctrl-C) removes its temporary
  file on the way out;
* a temporary file left by a killed process (``kill -9``) is recognisable by its
  name, ``.NAME.w2sjax-tmp.PID@HOST.RANDOM[.suffix]``, and :func:`remove_stale` deletes
  it once that process is gone. Whether a process is alive can only be asked on its own
  host, and caches and run directories may sit on storage that several hosts share, so
  a temporary file of another host (or of a name without one) is only deleted when it
  is over a day old: no write takes that long.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import pathlib
import re
import secrets
import socket
import time
from collections.abc import Iterator
from typing import Any

__all__ = ["host", "replacing", "write_bytes", "write_json", "write_text", "remove_stale"]

_TAG = ".w2sjax-tmp."
STALE_AFTER = 24 * 3600  # seconds after which another host's temporary file is surely abandoned


@functools.cache
def host() -> str:
    """This host's name as it appears in temporary names: letters, digits and ``-`` only."""
    return re.sub(r"[^A-Za-z0-9-]+", "-", socket.gethostname())[:40] or "host"


def _temp_name(path: pathlib.Path) -> pathlib.Path:
    # The suffix stays last so tools that infer a format from it (savefig, np.savez) keep working.
    return path.with_name(f".{path.name}{_TAG}{os.getpid()}@{host()}.{secrets.token_hex(4)}{path.suffix}")


@contextlib.contextmanager
def replacing(path: str | os.PathLike) -> Iterator[pathlib.Path]:
    """Yield a temporary path to write; on success it is synced and renamed onto ``path``.

    On any exception (including KeyboardInterrupt) the temporary file is removed and the
    exception propagates; ``path`` is left as it was.
    """
    path = pathlib.Path(path)
    tmp = _temp_name(path)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename is None:
            e.filename = str(path)  # a failed write() names no file; say which one it was
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with replacing(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def _writer_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _writer(name: str) -> tuple[int, str | None] | None:
    """``(pid, host)`` of a temporary file's writer from its name (host None for names written
    before host names were recorded), or None if it is not one of ours.

    Also recognises ``.NAME.tmpPID``, the name used before this module existed.
    """
    if _TAG in name:
        token = name.split(_TAG, 1)[1].split(".", 1)[0]
    else:
        token = name.rsplit(".tmp", 1)[1] if ".tmp" in name else ""
    pid, _, writer_host = token.partition("@")
    return (int(pid), writer_host or None) if pid.isdigit() else None


def remove_stale(directory: str | os.PathLike, *, max_age: float = STALE_AFTER) -> list[pathlib.Path]:
    """Delete temporary files in ``directory`` (not below it) whose writer is gone: a process of
    this host that is no longer alive, or, for another host's file (or one whose name holds no
    host), one not modified for ``max_age`` seconds.

    Returns the removed paths. A temporary file of a live process (another run writing into the
    same folder right now, here or on another host) is left alone.
    """
    removed = []
    for tmp in pathlib.Path(directory).glob(".*.*tmp*"):
        writer = _writer(tmp.name)
        if writer is None:
            continue
        pid, writer_host = writer
        try:
            if writer_host == host():
                if _writer_alive(pid):
                    continue
            elif time.time() - tmp.stat().st_mtime < max_age:
                continue
            tmp.unlink()
        except FileNotFoundError:
            continue
        removed.append(tmp)
    return removed
