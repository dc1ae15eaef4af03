"""Atomic file writes: a temporary file beside the target, then one rename.

Every writer of a file that others read (``results.json``, figures, feature-cache
chunks, asset records) goes through :func:`replacing`, so

* a reader sees the old file or the new one, never half of one;
* a write that fails (a full disk, an exception, Ctrl-C) removes its temporary
  file on the way out;
* a temporary file left by a killed process (``kill -9``) is recognisable by its
  name, ``.NAME.w2sjax-tmp.PID.RANDOM[.suffix]``, and :func:`remove_stale` deletes
  it once that process is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import secrets
from collections.abc import Iterator
from typing import Any

__all__ = ["replacing", "write_bytes", "write_json", "write_text", "remove_stale"]

_TAG = ".w2sjax-tmp."


def _temp_name(path: pathlib.Path) -> pathlib.Path:
    # The suffix stays last so tools that infer a format from it (savefig, np.savez) keep working.
    return path.with_name(f".{path.name}{_TAG}{os.getpid()}.{secrets.token_hex(4)}{path.suffix}")


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


def _writer_pid(name: str) -> str | None:
    """The writer's pid in a temporary file's name, or None if it is not one of ours.

    Also recognises ``.NAME.tmpPID``, the name used before this module existed.
    """
    if _TAG in name:
        pid = name.split(_TAG, 1)[1].split(".", 1)[0]
    else:
        pid = name.rsplit(".tmp", 1)[1] if ".tmp" in name else ""
    return pid if pid.isdigit() else None


def remove_stale(directory: str | os.PathLike) -> list[pathlib.Path]:
    """Delete temporary files in ``directory`` (not below it) whose writer process is gone.

    Returns the removed paths. A temporary file of a live process (another run writing into the
    same folder right now) is left alone.
    """
    removed = []
    for tmp in pathlib.Path(directory).glob(".*.*tmp*"):
        pid_text = _writer_pid(tmp.name)
        if pid_text is None or _writer_alive(int(pid_text)):
            continue
        try:
            tmp.unlink()
        except FileNotFoundError:
            continue
        removed.append(tmp)
    return removed
