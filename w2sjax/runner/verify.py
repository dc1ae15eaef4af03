"""Check everything w2sjax keeps on disk from its bytes, say what is wrong, and repair what can be.

`verify` (the ``w2sjax verify`` command) reads every fetched asset, every prepared data set and
every chunk of the feature and bottom caches, and prints one line for each asset, each data set and
each cache folder (and one for each damaged chunk):

* an asset file whose bytes differ from its pinned sha256 (bit rot, a stray write): the asset is
  fetched again; one whose remembered hash (`w2sjax.runner.hashes`) was stale besides: whatever was cached
  under the asset's hash is discarded (:func:`discard_derived`), since it may have been computed
  from the damaged bytes;
* a prepared TFDS data set whose files differ from the sha256s recorded when it was built: it is
  removed, and rebuilt from its asset on next use;
* a cache chunk that does not read back (bad zip CRC, truncation) or holds NaN or infinite values:
  it is deleted, and its examples are computed again on next use.

A run makes the same checks where it reads (`w2sjax.assets.fetch`, `w2sjax.models.features`), so this is
for a whole cache at once, e.g. after a disk error.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable

from w2sjax import assets
from w2sjax.models import features
from w2sjax.runner import hashes

__all__ = ["check_unchanged", "discard_derived", "verify"]


def _cache_roots() -> list[pathlib.Path]:
    """The feature cache and the bottoms cache: their folders are named by keys that end in (or hold)
    ``-w<sha256[:16]>`` of the weights they were computed from."""
    bottoms = os.environ.get("W2SJAX_BOTTOM_CACHE") or assets.cache_dir() / "bottoms"
    return [assets.cache_dir() / "features", pathlib.Path(bottoms).expanduser()]


def discard_derived(content_hash: str, *, because: str) -> list[pathlib.Path]:
    """Delete the feature and bottom caches computed from weights with this content hash, with one
    warning line saying ``because``; returns the deleted folders."""
    pattern = re.compile(rf"-w{re.escape(content_hash[:16])}(-|$)")
    gone = []
    for root in _cache_roots():
        if not root.is_dir():
            continue
        for folder in sorted(root.iterdir()):
            if folder.is_dir() and pattern.search(folder.name):
                # Renamed first, so no reader finds a half-deleted folder under the key.
                doomed = folder.with_name(f".discarded-{folder.name}-{os.getpid()}")
                try:
                    folder.rename(doomed)
                except OSError:
                    continue  # another process got there first
                shutil.rmtree(doomed, ignore_errors=True)
                gone.append(folder)
    if gone:
        print(f"w2sjax: warning: {because} while its remembered hash stayed the same (bit rot?); discarded "
              f"{len(gone)} cache folder(s) computed under the old hash: {', '.join(p.name for p in gone)}",
              file=sys.stderr, flush=True)
    return gone


def check_unchanged(files: dict[str, pathlib.Path], *, owner: str) -> None:
    """Re-hash ``files`` (relative name -> path, one checkpoint or asset directory) from their bytes
    (once per process). If a file's bytes differ from the hash remembered for its unchanged size and
    times, the caches keyed by the directory's old hash are discarded and AssetError says so: the
    next run keys its caches by the new content. ``owner`` names the files in the message."""
    old, changed = {}, []
    for rel, path in files.items():
        digest, stale = hashes.rehash(path)
        old[rel] = stale or digest
        if stale:
            changed.append(path)
    if changed:
        discard_derived(hashes.directory_hash(old), because=f"{changed[0]} changed on disk")
        raise assets.AssetError(
            f"{owner}: {changed[0]} changed on disk while its size and times stayed the same (bit rot?); what "
            "was cached from its old content was discarded; check the file and run again")


def verify(*, repair: bool = True, say: Callable[[str], None] = print) -> int:
    """Check assets, prepared data sets and cache chunks (see the module doc), one line each via
    ``say``; with ``repair`` refetch, remove or drop what is damaged. Returns how many problems are
    left unrepaired (0: all is well)."""
    left = 0
    for name in assets.known_assets():
        left += _asset(name, repair, say)
    tfds_root = assets.cache_dir() / "tfds"
    if tfds_root.is_dir():
        for record in sorted(tfds_root.glob("*/*/.w2sjax-sha256.json")):
            left += _prepared(record.parent, repair, say)
    for root in _cache_roots():
        if root.is_dir():
            for folder in sorted(p for p in root.glob("*/*") if p.is_dir()):
                left += _chunks(folder, repair, say)
    return left


def _asset(name: str, repair: bool, say) -> int:
    spec = assets._SPECS[name]
    override = os.environ.get(assets.env_var(name))
    if override:
        path = pathlib.Path(override).expanduser()
        try:
            assets._check_override(spec, path)
        except assets.AssetError as exc:
            say(f"asset {name}: {exc}")
            return 0  # discarded; the directory is the user's to check
        say(f"asset {name}: {assets.env_var(name)}={path}, {len(hashes.data_files(path))} files, not pinned")
        return 0
    dest = assets.cache_dir() / name
    if not dest.exists():
        return 0  # never fetched: nothing to check
    stale: list[str] = []
    try:
        damaged = assets._unpinned(spec, dest, remember=True, stale=stale)
    except OSError as exc:
        damaged, stale = [f"({exc.strerror})"], []
    if stale:
        discard_derived(assets.content_hash(name), because=f"{dest / stale[0]} changed on disk")
    if not damaged:
        say(f"asset {name}: ok, {len(spec.sha256)} files match their pinned sha256")
        return 0
    what = f"{', '.join(damaged)} differ{'s' if len(damaged) == 1 else ''} from the pinned sha256"
    if not repair:
        say(f"asset {name}: {what}; `w2sjax verify` (without --no-repair) refetches it")
        return 1
    aside = pathlib.Path(tempfile.mkdtemp(prefix=f".damaged-{name}-", dir=dest.parent))
    with assets.file_lock(dest.parent / f".{name}.lock"):
        dest.rename(aside / name)
    shutil.rmtree(aside, ignore_errors=True)
    try:
        assets.fetch(name, quiet=True)
    except assets.AssetError as exc:
        say(f"asset {name}: {what}; removed, but refetching failed: {exc}")
        return 1
    say(f"asset {name}: {what}; refetched ({assets.source_of(name)})")
    return 0


def _prepared(prepared: pathlib.Path, repair: bool, say) -> int:
    shown = prepared.relative_to(prepared.parent.parent.parent)
    try:
        recorded = json.loads((prepared / ".w2sjax-sha256.json").read_text())
        bad = [n for n, sha in recorded.items()
               if not (prepared / n).is_file() or hashes.file_sha256(prepared / n, fresh=True) != sha]
    except (OSError, ValueError, AttributeError) as exc:  # the record itself is damaged
        recorded, bad = {}, [f".w2sjax-sha256.json ({type(exc).__name__})"]
    if not bad:
        say(f"data set {shown}: ok, {len(recorded)} files match the sha256 recorded when it was built")
        return 0
    what = f"{', '.join(bad)} differ from the sha256 recorded when it was built"
    if not repair:
        say(f"data set {shown}: {what}")
        return 1
    with assets.file_lock(prepared.parent.parent / f".{prepared.parent.name}.lock"):  # the builders' lock
        shutil.rmtree(prepared, ignore_errors=True)
    say(f"data set {shown}: {what}; removed, it is rebuilt from its asset on next use")
    return 0


def _chunks(folder: pathlib.Path, repair: bool, say) -> int:
    shown = f"{folder.parent.parent.name}/{folder.parent.name}/{folder.name}"
    chunks = sorted(folder.glob("chunk-*.npz"))
    damaged = 0
    for path in chunks:
        try:
            features.check_chunk(features.read_chunk(path))
        except FileNotFoundError:
            continue
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            damaged += 1
            if repair:
                path.unlink(missing_ok=True)
            say(f"cache chunk {path}: damaged ({' '.join(str(exc).split())[:120]})"
                + ("; dropped, its examples are computed again on next use" if repair else ""))
    say(f"cache {shown}: {len(chunks) - damaged} of {len(chunks)} chunks ok")
    return 0 if repair else damaged
