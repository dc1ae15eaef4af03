"""The on-disk feature cache, with real featurizers wrapped to count their calls."""

import numpy as np
import pytest

from w2sjax.models import get_model
from w2sjax.models.features import cached_features, example_ids
from w2sjax.models.shallow import RawFeaturizer

TEXTS = [
    "Great crunchy granola, not too sweet.",
    "The tea arrived stale.",
    "My cat ignores this food completely, what a waste of money",
    "ok",
    "Five stars for the hot sauce!",
    "Would not buy again.",
]


class Counting:
    """Passes calls through to a real featurizer and records them."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = []

    @property
    def key(self):
        return self.inner.key

    def __call__(self, split):
        self.calls.append(list(split["text"] if "text" in split else range(len(split["x"]))))
        return self.inner(split)


def _split(texts, label=0):
    return {"text": np.array(texts, dtype=object), "label": np.full(len(texts), label, np.int32)}


@pytest.fixture(scope="module")
def minilm():
    return get_model("minilm-l1", max_len=32, tokens_per_batch=256, progress=False).featurizer


def test_second_call_hits_the_cache(minilm, tmp_path):
    f = Counting(minilm)
    first = cached_features(f, "foods", "train", _split(TEXTS), cache_dir=tmp_path)
    assert len(f.calls) == 1 and sorted(f.calls[0]) == sorted(TEXTS)
    assert first.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(first, minilm(_split(TEXTS)), atol=1e-5)

    # Same inputs, other labels, another split name: nothing recomputed.
    again = cached_features(f, "foods", "val", _split(TEXTS, label=1), cache_dir=tmp_path)
    assert len(f.calls) == 1
    np.testing.assert_array_equal(again, first)

    # A reshuffled, overlapping split with a repeat: only the new text runs, once.
    mixed = [TEXTS[3], "Brand new review text.", TEXTS[0], "Brand new review text."]
    got = cached_features(f, "foods", "test", _split(mixed), cache_dir=tmp_path)
    assert len(f.calls) == 2 and f.calls[1] == ["Brand new review text."]
    np.testing.assert_array_equal(got[0], first[3])
    np.testing.assert_array_equal(got[2], first[0])
    np.testing.assert_array_equal(got[1], got[3])

    # A fresh featurizer object with the same key reads the same cache.
    f2 = Counting(get_model("minilm-l1", max_len=32, progress=False).featurizer)
    cached_features(f2, "foods", "train", _split(TEXTS), cache_dir=tmp_path)
    assert f2.calls == []
    assert not list(tmp_path.rglob(".tmp-*"))  # writes left no temporary files


def test_key_and_task_separate_entries(minilm, tmp_path):
    f = Counting(minilm)
    cached_features(f, "foods", "train", _split(TEXTS[:2]), cache_dir=tmp_path)
    cached_features(f, "other_task", "train", _split(TEXTS[:2]), cache_dir=tmp_path)
    longer = Counting(get_model("minilm-l1", max_len=64, progress=False).featurizer)
    cached_features(longer, "foods", "train", _split(TEXTS[:2]), cache_dir=tmp_path)
    assert len(f.calls) == 2 and len(longer.calls) == 1


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_cache_is_recomputed(minilm, tmp_path, damage):
    f = Counting(minilm)
    first = cached_features(f, "foods", "train", _split(TEXTS), cache_dir=tmp_path)
    (chunk,) = tmp_path.rglob("chunk-*.npz")
    data = bytearray(chunk.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF  # inside the feature values
    else:
        data = data[: len(data) // 3]
    chunk.write_bytes(bytes(data))

    again = cached_features(f, "foods", "train", _split(TEXTS), cache_dir=tmp_path)
    assert len(f.calls) == 2
    np.testing.assert_allclose(again, first, atol=1e-6)
    # The rewritten cache is sound: a third call computes nothing.
    cached_features(f, "foods", "train", _split(TEXTS), cache_dir=tmp_path)
    assert len(f.calls) == 2


def test_array_inputs_are_keyed_by_content(tmp_path):
    x = np.random.default_rng(0).normal(size=(6, 8, 8, 1)).astype(np.float32)
    f = Counting(RawFeaturizer(flatten=True))
    out = cached_features(f, "digits", "train", {"x": x, "label": np.zeros(6)}, cache_dir=tmp_path)
    np.testing.assert_array_equal(out, x.reshape(6, -1))
    x2 = x.copy()
    x2[5, 0, 0, 0] += 1.0
    out2 = cached_features(f, "digits", "test", {"x": x2[::-1]}, cache_dir=tmp_path)
    assert len(f.calls) == 2 and f.calls[1] == [0]  # only the changed image
    np.testing.assert_array_equal(out2, x2[::-1].reshape(6, -1))


def test_example_ids_ignore_labels_and_see_inputs():
    a = example_ids(_split(["x", "y"], label=0))
    b = example_ids(_split(["x", "y"], label=1))
    np.testing.assert_array_equal(a, b)
    assert a[0] != a[1] and len(set(example_ids(_split(["x", "x "])).tolist())) == 2
