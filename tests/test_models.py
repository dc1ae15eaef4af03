"""The model registry, heads, and the weak featurizers on real GloVe / MiniLM."""

import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from w2sjax import assets
from w2sjax.models import bert, embed, get_model, heads, known_models
from w2sjax.models.shallow import RawFeaturizer, TfidfFeaturizer

TEXTS = np.array([
    "The cookies were great, great value!",
    "Terrible: stale crackers and a broken box.",
    "great coffee; would buy again",
    "Qwzxvb flurbled.",  # nothing in GloVe
    "",
], dtype=object)


def _split(texts):
    return {"text": np.asarray(texts, dtype=object), "label": np.zeros(len(texts), np.int32)}


def _n_params(module):
    return sum(x.size for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


# ------------------------------------------------------------------ registry


def test_known_models():
    ours = [f"minilm-l{k}" for k in range(1, 7)] + ["glove-bow", "tfidf", "linear", "mlp", "cnn"]
    assert set(ours) <= set(known_models())
    for n in ours:
        spec = get_model(n)
        assert spec.name == n and spec.head in ("linear", "mlp", "cnn") and spec.modalities


def test_unknown_model_lists_known_ones():
    with pytest.raises(ValueError, match=r"unknown model 'x'; known: .*minilm-l6.*tfidf"):
        get_model("x")


def test_spec_fields():
    m = get_model("minilm-l3", max_len=64)
    assert m.modalities == ("text",) and m.finetune is not None and m.tokenize is not None
    assert "len64" in m.featurizer.key and "minilm-l3" in m.featurizer.key
    assert get_model("minilm-l3", max_len=128).featurizer.key != m.featurizer.key
    assert get_model("cnn").featurizer is None and get_model("cnn").finetune is None
    assert get_model("tfidf").num_params == 0
    assert get_model("glove-bow").num_params == 400_000 * 50


@pytest.mark.parametrize("k", [1, 6])
def test_minilm_num_params_match_checkpoint(k):
    enc = bert.load_bert(assets.fetch("minilm-l6-v2"), num_layers=k)
    assert get_model(f"minilm-l{k}").num_params == _n_params(enc)


# ------------------------------------------------------------------ heads


@pytest.mark.parametrize("name,in_shape,options", [
    ("linear", (50,), {}),
    ("mlp", (8, 8, 1), {"hidden": (32, 16)}),
    ("cnn", (28, 28, 1), {}),
    ("cnn", (8, 8), {"channels": (8, 16), "hidden": 32}),
])
def test_heads_give_logits(name, in_shape, options):
    spec = get_model(name, **options)
    head = spec.make_head(in_shape, 4, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (5, *in_shape))
    logits = head(x)
    assert logits.shape == (5, 4) and logits.dtype == jnp.float32
    assert spec.count_params(in_shape, 4) == _n_params(head)


def test_mlp_hidden_sizes():
    mlp = heads.MLP(10, 3, hidden=(7, 5), rngs=nnx.Rngs(0))
    assert _n_params(mlp) == (10 * 7 + 7) + (7 * 5 + 5) + (5 * 3 + 3)


# ------------------------------------------------------------------ tf-idf


def _tfidf_reference(train, test, max_features):
    """TF-IDF written out directly: count matrix, idf, L2 rows."""
    tok = [re.findall(r"[^\W_]+", t.lower()) for t in train]
    df = {}
    for doc in tok:
        for w in set(doc):
            df[w] = df.get(w, 0) + 1
    vocab = sorted(df.items(), key=lambda kv: (-kv[1], kv[0]))[:max_features]
    col = {w: j for j, (w, _) in enumerate(vocab)}
    idf = np.array([np.log((1 + len(train)) / (1 + d)) + 1 for _, d in vocab])
    counts = np.zeros((len(test), len(vocab)))
    for i, t in enumerate(test):
        for w in re.findall(r"[^\W_]+", t.lower()):
            if w in col:
                counts[i, col[w]] += 1
    x = counts * idf
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(n > 0, x / np.where(n > 0, n, 1), 0)


@pytest.mark.parametrize("max_features", [5000, 4])
def test_tfidf_matches_numpy(max_features):
    test = list(TEXTS) + ["great great cookies and stale coffee", "unseen words only"]
    feat = TfidfFeaturizer(max_features).fit(_split(TEXTS))
    got = feat(_split(test))
    want = _tfidf_reference(list(TEXTS), test, max_features)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_tfidf_needs_fit_and_keys_on_its_training_text():
    with pytest.raises(RuntimeError):
        TfidfFeaturizer()(_split(TEXTS))
    a = TfidfFeaturizer().fit(_split(TEXTS))
    b = TfidfFeaturizer().fit(_split(TEXTS[:3]))
    assert a.key != b.key and a.key == TfidfFeaturizer().fit(_split(TEXTS)).key


# ------------------------------------------------------------------ glove


def test_glove_bow_matches_numpy():
    root = Path(assets.fetch("glove-6b-50d"))
    words = (root / "vocab.txt").read_text(encoding="utf-8").split("\n")
    vectors = np.load(root / "embeddings.npy")
    row = {}
    for i, w in enumerate(words):
        row.setdefault(w, i)
    want = []
    for t in TEXTS:
        hits = [row[w] for w in re.findall(r"[^\W_]+", t.lower()) if w in row]
        want.append(vectors[hits].astype(np.float64).mean(0) if hits else np.zeros(50))
    got = get_model("glove-bow").featurizer(_split(TEXTS))
    assert got.shape == (len(TEXTS), 50) and got.dtype == np.float32
    np.testing.assert_allclose(got, np.array(want), atol=1e-6)
    assert not got[3].any() and not got[4].any()  # all-OOV and empty texts


def test_raw_featurizer():
    x = np.arange(2 * 8 * 8, dtype=np.float64).reshape(2, 8, 8, 1)
    assert RawFeaturizer()({"x": x}).shape == (2, 8, 8, 1)
    out = RawFeaturizer(flatten=True)({"x": x})
    assert out.dtype == np.float32 and out.shape == (2, 64)


# ------------------------------------------------------------------ minilm


def test_minilm_featurizer_and_finetune_model_agree():
    spec = get_model("minilm-l2", max_len=48, tokens_per_batch=256, progress=False)
    texts = list(TEXTS) + ["a much longer review " * 12, "a medium length one " * 4]
    compiled = embed.pooled_features._cache_size()
    got = spec.featurizer(_split(texts))
    assert got.shape == (len(texts), 384) and got.dtype == np.float32
    # One compiled program per length bucket (16, 32, 48), however many batches.
    assert embed.pooled_features._cache_size() - compiled <= len(embed.bucket_lengths(48)) == 3

    # The same features, computed directly at one fixed padded length.
    enc = bert.load_bert(assets.fetch("minilm-l6-v2"), num_layers=2)
    ids, mask = bert.load_tokenizer(assets.fetch("minilm-l6-v2")).encode(texts, 48)
    want = np.asarray(bert.mean_pool(enc(jnp.asarray(ids), jnp.asarray(mask)), mask,
                                     normalize=False))
    np.testing.assert_allclose(got, want, atol=1e-5)

    model = spec.finetune(2, rngs=nnx.Rngs(0))
    inputs = spec.tokenize(_split(texts))
    assert inputs["input_ids"].shape == (len(texts), 48)
    logits = model(inputs)
    assert logits.shape == (len(texts), 2)
    # The finetuned model starts from exactly the probe's representation.
    pooled = bert.mean_pool(model.encoder(inputs["input_ids"], inputs["attention_mask"]),
                            inputs["attention_mask"], normalize=False)
    np.testing.assert_allclose(np.asarray(pooled), got, atol=1e-5)


def test_row_blocks_divide_rows_over_devices():
    assert embed.row_blocks(64, 128, 2) == 8  # 8192 tokens in blocks of 1024
    assert embed.row_blocks(64, 16, 2) == 1  # 1024 tokens: one block
    assert embed.row_blocks(12, 128, 8) == 1  # 12 rows cannot split into blocks of 8 devices
    for rows, length, ndev in [(48, 128, 8), (40, 64, 2), (7, 512, 1), (96, 32, 4)]:
        n = embed.row_blocks(rows, length, ndev)
        assert rows % (n * ndev) == 0 and rows * length // n >= min(rows * length, embed.BLOCK_TOKENS)


def test_blocked_features_equal_unblocked(monkeypatch):
    """Row blocks change only the loop, not the numbers: MiniLM features in 8-row blocks (one row
    per test device) equal one-piece features, row for row and in input order."""
    texts = [f"review number {i}: " + "tasty " * (i % 7) for i in range(64)]
    spec = get_model("minilm-l2", max_len=16, tokens_per_batch=1024, progress=False)
    whole = spec.featurizer(_split(texts))
    monkeypatch.setattr(embed, "BLOCK_TOKENS", 64)  # 16-token rows: as small as 8 devices allow
    assert embed.row_blocks(64, 16, 8) == 8 and embed.row_blocks(32, 16, 8) == 4
    blocked = spec.featurizer(_split(texts))
    np.testing.assert_allclose(blocked, whole, atol=1e-6)


def test_map_row_blocks_keeps_row_order_on_a_sharded_batch():
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    x = jax.device_put(np.arange(64 * 3, dtype=np.float32).reshape(64, 3), rows)
    fn = lambda a: a * 2 + a.sum(1, keepdims=True)  # row-wise
    got = jax.jit(lambda a: embed.map_row_blocks(fn, 4, a))(x)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(fn(np.asarray(x))))
