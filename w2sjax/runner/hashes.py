"""Content hashes (sha256) of files and directories, computed once per version of a file.

Hashing a 90 MB weight file costs about a third of a second, so each file's hash is kept in a
small record under ``cache_dir()/hashes`` together with the file's size, mtime and ctime; while
those are unchanged the record is trusted, and any write to the file (which changes its mtime
and ctime, even when the size stays the same) makes the next call hash it again.

``content_hash(path)`` is what caches are keyed by (a repaired or replaced asset never meets
features computed from the old one) and what packaged assets are checked against their pins.

The record cannot see bit rot (bytes that change on disk with the size and times unchanged), so
whatever computes from a file (features, bottoms, a stage's weights) asks for ``fresh=True``:
the bytes are hashed again, once per process and file version, and :func:`rehash` tells when the
record had a different hash (then whatever was cached under the old hash is suspect).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib

from w2sjax.runner import atomic
from w2sjax.runner.cache import cache_dir

__all__ = ["content_hash", "directory_hash", "file_sha256", "rehash"]

_CHUNK = 1 << 20
# path -> (stamp, sha256) hashed from the bytes by this process: `fresh` reads a file once per run
_FRESH: dict[str, tuple[list[int], str]] = {}


def _records_dir() -> pathlib.Path:
    return cache_dir() / "hashes"


def _stamp(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _hash_bytes(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _record_path(path: pathlib.Path) -> pathlib.Path:
    return _records_dir() / (hashlib.sha1(str(path).encode()).hexdigest() + ".json")


def _remembered(path: pathlib.Path, stamp: list[int]) -> str | None:
    try:
        record = json.loads(_record_path(path).read_text())
        if record.get("path") == str(path) and record.get("stamp") == stamp:
            return record["sha256"]
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    return None


def _remember(path: pathlib.Path, stamp: list[int], digest: str) -> None:
    if _stamp(path.stat()) != stamp:  # written to while we read it
        return
    try:
        _record_path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic.write_json(_record_path(path), {"path": str(path), "stamp": stamp, "sha256": digest})
    except OSError:
        pass  # a read-only cache only costs a rehash next time


def file_sha256(path: str | os.PathLike, *, remember: bool = True, fresh: bool = False) -> str:
    """The sha256 of one file's bytes, from its record when the file is unchanged since.

    ``remember=False`` hashes without reading or writing a record (for files about to move);
    ``fresh=True`` hashes the bytes (once per process and file version) whatever the record says,
    and corrects the record (:func:`rehash`).
    """
    if fresh:
        return rehash(path)[0]
    path = pathlib.Path(path).resolve()
    if not remember:
        return _hash_bytes(path)
    stamp = _stamp(path.stat())
    digest = _remembered(path, stamp)
    if digest is None:
        digest = _hash_bytes(path)
        _remember(path, stamp, digest)
    return digest


def rehash(path: str | os.PathLike) -> tuple[str, str | None]:
    """``(sha256 of the bytes, stale)``: ``stale`` is the hash the record held for this very
    version of the file (same size, times and inode) when it differs from the bytes' (bit rot, or a
    write that kept the times), else None. The record is corrected. The bytes are read once per
    process and file version."""
    path = pathlib.Path(path).resolve()
    stamp = _stamp(path.stat())
    seen = _FRESH.get(str(path))
    if seen is not None and seen[0] == stamp:
        return seen[1], None
    remembered = _remembered(path, stamp)
    digest = _hash_bytes(path)
    if remembered != digest:
        _remember(path, stamp, digest)
    if _stamp(path.stat()) == stamp:
        _FRESH[str(path)] = (stamp, digest)
    return digest, remembered if remembered not in (None, digest) else None


def content_hash(path: str | os.PathLike, *, fresh: bool = False) -> str:
    """sha256 of a file, or of a directory's files (their relative paths and contents).

    Hidden files and folders (``.git``, ``.w2sjax-asset.json``, ...) are left out, so
    bookkeeping next to the data does not change its hash. ``fresh`` as in :func:`file_sha256`.
    """
    path = pathlib.Path(path)
    if not path.is_dir():
        return file_sha256(path, fresh=fresh)
    return directory_hash({rel: file_sha256(f, fresh=fresh) for rel, f in data_files(path).items()})


def data_files(directory: str | os.PathLike) -> dict[str, pathlib.Path]:
    """The files of ``directory`` that its `content_hash` covers, by relative posix path."""
    directory = pathlib.Path(directory)
    files = {}
    for f in directory.rglob("*"):
        rel = f.relative_to(directory)
        if f.is_file() and not any(part.startswith(".") for part in rel.parts):
            files[rel.as_posix()] = f
    return files


def directory_hash(file_hashes: dict[str, str]) -> str:
    """The `content_hash` of a directory whose files (relative posix paths) have these sha256s."""
    h = hashlib.sha256()
    for rel in sorted(file_hashes):
        if not any(part.startswith(".") for part in rel.split("/")):
            h.update(rel.encode("utf-8") + b"\0" + file_hashes[rel].encode() + b"\n")
    return h.hexdigest()
