"""The Flax BERT port against real all-MiniLM-L6-v2 outputs.

The reference (tests/fixtures/minilm_reference.npz) was computed by
sentence-transformers + PyTorch; tests/fixtures/make_minilm_reference.py
shows how.
"""

import shutil
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from w2sjax import assets
from w2sjax.models import bert

FIXTURE = Path(__file__).parent / "fixtures" / "minilm_reference.npz"


@pytest.fixture(scope="module")
def minilm_dir():
    return assets.fetch("minilm-l6-v2")


@pytest.fixture(scope="module")
def ref():
    with np.load(FIXTURE) as z:
        return dict(z)


@pytest.fixture(scope="module")
def tok(minilm_dir):
    return bert.load_tokenizer(minilm_dir)


@pytest.fixture(scope="module")
def full(minilm_dir):
    return bert.load_bert(minilm_dir)


def _embed(encoder, tok, texts, max_len, normalize=True):
    ids, mask = tok.encode(texts, max_len)
    hidden = encoder(jnp.asarray(ids), jnp.asarray(mask))
    return np.asarray(bert.mean_pool(hidden, mask, normalize=normalize)), np.asarray(hidden)


def test_tokenizer_matches_reference(tok, ref):
    ids, mask = tok.encode(ref["sentences"], int(ref["max_seq_length"]))
    assert ids.dtype == np.int32 and mask.dtype == np.int32
    np.testing.assert_array_equal(ids, ref["input_ids"])
    np.testing.assert_array_equal(mask.sum(1), ref["num_tokens"])
    assert ref["num_tokens"].max() > 128 and ref["num_tokens"].min() <= 3


def test_tokenizer_max_len_is_respected(tok, ref):
    long_text = max(ref["sentences"], key=len)
    (n512,) = [len(r) for r in tok.token_ids([long_text], 512)]
    assert n512 > 256  # the packaged tokenizer.json would stop at 128
    ids, mask = tok.encode([long_text, "ok"], 16)
    assert ids.shape == (2, 16)
    assert mask[0].sum() == 16 and ids[0, -1] == tok._tok.token_to_id("[SEP]")
    assert mask[1].sum() == 3 and (ids[1, 3:] == tok.pad_id).all()


def test_minilm_matches_sentence_transformers(full, tok, ref):
    max_len = int(ref["max_seq_length"])
    emb, hidden = _embed(full, tok, ref["sentences"], max_len)
    assert np.abs(emb - ref["embeddings"]).max() < 1e-5
    pooled, _ = _embed(full, tok, ref["sentences"], max_len, normalize=False)
    assert np.abs(pooled - ref["mean_pooled"]).max() < 1e-5
    i = int(ref["hidden_index"])
    n = ref["last_hidden"].shape[0]
    assert np.abs(hidden[i, :n] - ref["last_hidden"]).max() < 1e-5


def test_padding_does_not_change_embeddings(full, tok):
    texts = ["Tasty snack, fast shipping.", "no"]
    short, _ = _embed(full, tok, texts, 32)
    ids = tok.token_ids(texts, 32)
    ids128, mask128 = tok.pad(ids, 128)
    long = np.asarray(bert.mean_pool(full(jnp.asarray(ids128), jnp.asarray(mask128)), mask128))
    np.testing.assert_allclose(short, long, atol=1e-6)


def test_num_layers_truncates(minilm_dir, full, tok, ref):
    two = bert.load_bert(minilm_dir, num_layers=2)
    assert len(two.layers) == 2 and two.config.num_hidden_layers == 2
    assert len(full.layers) == 6
    np.testing.assert_array_equal(np.asarray(two.layers[1].ffn_out.kernel[...]),
                                  np.asarray(full.layers[1].ffn_out.kernel[...]))
    texts = ref["sentences"][3:6]
    e2, _ = _embed(two, tok, texts, 64)
    e6, _ = _embed(full, tok, texts, 64)
    assert np.abs(e2 - e6).max() > 1e-2
    with pytest.raises(ValueError):
        bert.load_bert(minilm_dir, num_layers=7)


def test_bfloat16_compute_is_close(minilm_dir, tok, ref):
    enc = bert.load_bert(minilm_dir, dtype=jnp.bfloat16)
    assert enc.layers[0].query.kernel[...].dtype == jnp.float32
    texts = ref["sentences"][2:8]
    emb, hidden = _embed(enc, tok, texts, 128)
    assert emb.dtype == np.float32 and np.isfinite(hidden).all()
    want = ref["embeddings"][2:8]
    cos = (emb * want).sum(1)  # both unit length
    # The last text (148 tokens) is cut at 128 here but at 256 in the reference.
    assert cos[:5].min() > 0.99 and np.abs(emb[:5] - want[:5]).max() < 0.05


def test_loads_checkpoint_with_bert_prefix(minilm_dir, tok, tmp_path):
    tensors = load_file(str(Path(minilm_dir) / "model.safetensors"))
    save_file({"bert." + k: v for k, v in tensors.items()}, str(tmp_path / "model.safetensors"))
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(Path(minilm_dir) / name, tmp_path / name)
    prefixed = bert.load_bert(tmp_path, num_layers=1)
    plain = bert.load_bert(minilm_dir, num_layers=1)
    texts = ["A renamed checkpoint must give the same vectors."]
    np.testing.assert_array_equal(_embed(prefixed, tok, texts, 32)[0],
                                  _embed(plain, tok, texts, 32)[0])


def test_classifier_logits(full, tok, ref):
    """Logits are the head applied to the mean-pooled sentence vector that sentence-transformers
    computed (the reference), in numpy."""
    from flax import nnx

    model = bert.classifier(full, 3, rngs=nnx.Rngs(0))
    texts = slice(0, 4)
    ids, mask = tok.encode(ref["sentences"][texts], int(ref["max_seq_length"]))
    logits = model({"input_ids": jnp.asarray(ids), "attention_mask": jnp.asarray(mask)})
    assert logits.dtype == jnp.float32
    want = (ref["mean_pooled"][texts].astype(np.float64) @ np.asarray(model.head.kernel[...])
            + np.asarray(model.head.bias[...]))
    np.testing.assert_allclose(np.asarray(logits), want, atol=1e-4)
