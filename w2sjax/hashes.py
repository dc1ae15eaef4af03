"""Content hashes (sha256) of files and directories, computed once per version of a file.

Hashing a 90 MB weight file costs about a third of a second, so each file's hash is kept in a
small record under ``cache_dir()/hashes`` together with the file's size, mtime and ctime; while
those are unchanged the record is trusted, and any write to the file (which changes its mtime
and ctime, even when the size stays the same) makes the next call hash it again.

``content_hash(path)`` is what caches are keyed by (a repaired or replaced asset never meets
features computed from the old one) and what packaged assets are checked against their pins.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib

from w2sjax import atomic

__all__ = ["content_hash", "directory_hash", "file_sha256"]

_CHUNK = 1 << 20


def _records_dir() -> pathlib.Path:
    from w2sjax.assets import cache_dir

    return cache_dir() / "hashes"


def _stamp(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _hash_bytes(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: str | os.PathLike, *, remember: bool = True) -> str:
    """The sha256 of one file's bytes, from its record when the file is unchanged since.

    ``remember=False`` hashes without reading or writing a record (for files about to move).
    """
    path = pathlib.Path(path).resolve()
    if not remember:
        return _hash_bytes(path)
    record_path = _records_dir() / (hashlib.sha1(str(path).encode()).hexdigest() + ".json")
    stamp = _stamp(path.stat())
    try:
        record = json.loads(record_path.read_text())
        if record.get("path") == str(path) and record.get("stamp") == stamp:
            return record["sha256"]
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    digest = _hash_bytes(path)
    if _stamp(path.stat()) == stamp:  # not written to while we read it
        try:
            record_path.parent.mkdir(parents=True, exist_ok=True)
            atomic.write_json(record_path, {"path": str(path), "stamp": stamp, "sha256": digest})
        except OSError:
            pass  # a read-only cache only costs a rehash next time
    return digest


def content_hash(path: str | os.PathLike) -> str:
    """sha256 of a file, or of a directory's files (their relative paths and contents).

    Hidden files and folders (``.git``, ``.w2sjax-asset.json``, ...) are left out, so
    bookkeeping next to the data does not change its hash.
    """
    path = pathlib.Path(path)
    if not path.is_dir():
        return file_sha256(path)
    files = {}
    for f in path.rglob("*"):
        rel = f.relative_to(path)
        if f.is_file() and not any(part.startswith(".") for part in rel.parts):
            files[rel.as_posix()] = f
    return directory_hash({rel: file_sha256(f) for rel, f in files.items()})


def directory_hash(file_hashes: dict[str, str]) -> str:
    """The `content_hash` of a directory whose files (relative posix paths) have these sha256s."""
    h = hashlib.sha256()
    for rel in sorted(file_hashes):
        if not any(part.startswith(".") for part in rel.split("/")):
            h.update(rel.encode("utf-8") + b"\0" + file_hashes[rel].encode() + b"\n")
    return h.hexdigest()
