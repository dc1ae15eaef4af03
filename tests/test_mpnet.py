"""The Flax MPNet port against real all-mpnet-base-v2 outputs.

The reference (tests/fixtures/mpnet_reference.npz) was computed by
sentence-transformers + PyTorch from the same model directory;
tests/fixtures/make_mpnet_reference.py shows how. Tests that need the 438 MB
checkpoint are marked slow; the fast ones use the fixture or a tiny random
MPNet.
"""

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from w2sjax import assets
from w2sjax.models import bert, mpnet

FIXTURE = Path(__file__).parent / "fixtures" / "mpnet_reference.npz"


@pytest.fixture(scope="module")
def ref():
    with np.load(FIXTURE) as z:
        return dict(z)


@pytest.fixture(scope="module")
def mpnet_dir():
    return assets.fetch("mpnet-base-v2")


@pytest.fixture(scope="module")
def loaded(mpnet_dir):
    return mpnet.load_mpnet(mpnet_dir)


def _jit(module, fn):
    """jit ``fn(module, *args)`` with the module's state as an argument, not a constant."""
    graphdef, state = nnx.split(module)
    jitted = jax.jit(lambda s, *a: fn(nnx.merge(graphdef, s), *a))
    return lambda *a: jitted(state, *a)


# ---------------------------------------------------------------- fast


def test_relative_buckets_match_torch(ref):
    buckets = mpnet.relative_position_buckets(1201)
    query = 600
    dist = ref["rel_distance"]  # key - query, -600..600
    np.testing.assert_array_equal(buckets[query, query + dist], ref["rel_bucket"])
    # Every bucket is exercised (16, "distance 0 looking forward", never occurs).
    assert set(np.unique(ref["rel_bucket"]).tolist()) == set(range(32)) - {16}


def test_position_ids_skip_padding():
    ids = jnp.array([[0, 5, 6, 2, 1, 1], [0, 7, 2, 1, 1, 1]])
    assert mpnet.position_ids(ids, 1).tolist() == [[2, 3, 4, 5, 1, 1], [2, 3, 4, 1, 1, 1]]


@pytest.fixture(scope="module")
def tiny():
    cfg = mpnet.MPNetConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=32, max_position_embeddings=40)
    # Initialised under jit: eager init dispatches (and compiles) op by op, ~3x slower.
    return nnx.jit(lambda: mpnet.MPNetEncoder(cfg, rngs=nnx.Rngs(0)))()


def test_tiny_encoder_ignores_padding_and_counts_params(tiny):
    enc = tiny
    n = sum(x.size for x in jax.tree.leaves(nnx.state(enc, nnx.Param)))
    assert n == mpnet.count_mpnet_params(enc.config)
    embed = _jit(enc, lambda m, i, k: m.embed(i, k))
    ids = np.array([[0, 11, 12, 13, 2]], np.int32)
    short = embed(jnp.asarray(ids), jnp.ones((1, 5), jnp.int32))
    padded = np.concatenate([ids, np.ones((1, 7), np.int32)], axis=1)
    long = embed(jnp.asarray(padded), jnp.asarray((padded != 1).astype(np.int32)))
    np.testing.assert_allclose(long, short, atol=1e-6)
    np.testing.assert_allclose(jnp.linalg.norm(short, axis=-1), 1.0, atol=1e-6)


def test_tiny_classifier_is_a_linear_head_on_the_mean_of_real_tokens(tiny):
    clf = bert.classifier(tiny, 3, rngs=nnx.Rngs(1))
    ids = jnp.array([[0, 11, 2, 1], [0, 11, 12, 2]])
    mask = (ids != 1).astype(jnp.int32)
    out = _jit(clf, lambda m, i, k: m({"input_ids": i, "attention_mask": k}))(ids, mask)
    # numpy reference: average the encoder's hidden states over the real tokens, then W x + b.
    hidden = np.asarray(_jit(tiny, lambda m, i, k: m(i, k))(ids, mask), np.float64)
    keep = np.asarray(mask, np.float64)[..., None]
    pooled = (hidden * keep).sum(1) / keep.sum(1)
    want = pooled @ np.asarray(clf.head.kernel[...]) + np.asarray(clf.head.bias[...])
    np.testing.assert_allclose(np.asarray(out), want, atol=1e-5)


def test_bf16_gradients_stay_close_to_float32_and_ignore_padding(tiny):
    """The bf16 block path (fused biased projections, key-major bf16 attention with the relative
    bias, erf GELU): the loss gradients of every parameter, the relative-position table included,
    stay within bf16 noise of the float32 ones, and padded keys still change nothing."""
    f32 = tiny
    state = nnx.state(f32)
    bf16 = nnx.eval_shape(lambda: mpnet.MPNetEncoder(f32.config, dtype=jnp.bfloat16, rngs=nnx.Rngs(0)))
    nnx.update(bf16, state)
    ids = jnp.array([[0, 11, 12, 13, 2, 1, 1], [0, 21, 22, 23, 24, 25, 2]])
    mask = (ids != 1).astype(jnp.int32)

    def grads(enc):
        graphdef, params = nnx.split(enc)
        loss = lambda p: jnp.sum(nnx.merge(graphdef, p).embed(ids, mask, normalize=False) ** 2)
        return jax.jit(jax.grad(loss))(params)

    g32, g16 = jax.tree.leaves(grads(f32)), jax.tree.leaves(grads(bf16))
    flat32, flat16 = (np.concatenate([np.ravel(a) for a in g]) for g in (g32, g16))
    assert np.linalg.norm(flat16 - flat32) < 0.02 * np.linalg.norm(flat32)
    # Per parameter, against the largest gradient: the key bias's true gradient is zero, its bf16 one is noise.
    for a, b in zip(g32, g16):
        assert float(jnp.abs(a - b).max()) < 0.02 * np.abs(flat32).max()
    assert float(jnp.abs(nnx.state(bf16)["relative_bias"]["embedding"][...]).max()) > 0
    emb = _jit(bf16, lambda m, i, k: m.embed(i, k))
    padded = jnp.concatenate([ids[:1, :5], jnp.ones((1, 9), ids.dtype)], axis=1)
    np.testing.assert_allclose(emb(padded, (padded != 1).astype(jnp.int32)), emb(ids[:1, :5], mask[:1, :5]),
                               atol=1e-6)


def test_too_long_sequence_is_rejected(tiny):
    # 40 positions, pad id 1 -> 38 usable
    with pytest.raises(ValueError, match="positions"):
        tiny(jnp.zeros((1, 39), jnp.int32), jnp.ones((1, 39), jnp.int32))


# ---------------------------------------------------------------- real weights


@pytest.mark.slow
def test_tokenizer_matches_reference(loaded, ref):
    _, tok = loaded
    t = ref["input_ids"].shape[1]
    ids, mask = tok.encode(list(ref["sentences"]), t)
    assert ids.dtype == np.int32 and mask.dtype == np.int32
    np.testing.assert_array_equal(ids, ref["input_ids"])
    np.testing.assert_array_equal(mask, ref["attention_mask"])
    assert tok.pad_id == 1  # "<pad>", not the vocabulary's "[PAD]" (id 4)


@pytest.mark.slow
def test_embeddings_match_sentence_transformers(loaded, ref):
    enc, tok = loaded
    ids, mask = ref["input_ids"], ref["attention_mask"]
    fwd = _jit(enc, lambda m, i, k: (m(i, k), m.embed(i, k, normalize=False), m.embed(i, k)))
    hidden, pooled, emb = (np.asarray(x) for x in fwd(jnp.asarray(ids), jnp.asarray(mask)))
    real = mask[..., None].astype(bool)
    # Measured: hidden 1.0e-6, pooled 6e-7, normalised 2.5e-7 (fp32, 2 CPU cores).
    assert np.abs(np.where(real, hidden[..., :32] - ref["hidden32"], 0)).max() < 1e-5
    np.testing.assert_allclose(pooled, ref["pooled"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(emb, ref["embeddings"], atol=1e-5, rtol=0)
    # Padding further (256 instead of the batch's longest, 240) changes nothing.
    ids2, mask2 = tok.encode(list(ref["sentences"]), 256)
    emb2 = np.asarray(fwd(jnp.asarray(ids2), jnp.asarray(mask2))[2])
    np.testing.assert_allclose(emb2, ref["embeddings"], atol=1e-5, rtol=0)


@pytest.mark.slow
def test_bfloat16_embeddings_are_close_to_sentence_transformers(mpnet_dir, ref):
    enc = mpnet.load_mpnet_encoder(mpnet_dir, dtype=jnp.bfloat16, param_dtype=jnp.float32)
    emb = np.asarray(_jit(enc, lambda m, i, k: m.embed(i, k))(jnp.asarray(ref["input_ids"]),
                                                              jnp.asarray(ref["attention_mask"])))
    cos = (emb * ref["embeddings"]).sum(1)  # both unit length
    assert cos.min() > 0.999 and np.abs(emb - ref["embeddings"]).max() < 0.02, (cos.min(), np.abs(emb - ref["embeddings"]).max())


@pytest.mark.slow
def test_full_param_count_and_truncated_ladder(loaded, mpnet_dir, ref):
    enc, _ = loaded
    n = sum(x.size for x in jax.tree.leaves(nnx.state(enc, nnx.Param)))
    assert n == mpnet.count_mpnet_params(enc.config) == 108_895_872  # the file's 109.5M minus the unused pooler
    small, tok = mpnet.load_mpnet(mpnet_dir, num_layers=2)
    assert len(small.layers) == 2
    np.testing.assert_array_equal(small.layers[1].ffn_in.kernel[...], enc.layers[1].ffn_in.kernel[...])
    clf = bert.classifier(small, 2, rngs=nnx.Rngs(0))
    ids, mask = tok.encode(list(ref["sentences"][:3]), 16)
    out = clf({"input_ids": jnp.asarray(ids), "attention_mask": jnp.asarray(mask)})
    assert out.shape == (3, 2) and bool(jnp.isfinite(out).all())
    with pytest.raises(ValueError):
        mpnet.load_mpnet(mpnet_dir, num_layers=13)


@pytest.mark.parametrize("family", ["mpnet", "bert"])
def test_float32_blocks_keep_the_plain_gelu_forward_and_its_gradients(tiny, family, monkeypatch):
    """The float32 post-norm blocks train through GELU's own backward (`layers.gelu_erfc`). Against the
    same blocks with ``jax.nn.gelu`` put back (autodiff): the forward without gradients is bit for bit
    the same, for MPNet (relative bias, exact variance) and BERT, and the loss and every parameter's
    gradient agree to float32 rounding."""
    from w2sjax.models import layers

    if family == "mpnet":
        enc = tiny
    else:
        cfg = bert.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=32, max_position_embeddings=40)
        enc = nnx.jit(lambda: bert.BertEncoder(cfg, rngs=nnx.Rngs(3)))()
    ids = jnp.array([[0, 11, 12, 13, 2, 1, 1], [0, 21, 22, 23, 24, 25, 2]])
    mask = (ids != 1).astype(jnp.int32)
    graphdef, params = nnx.split(enc)

    def forward(params):
        return nnx.merge(graphdef, params)(ids, mask)

    def loss(params):
        hidden = forward(params)
        return jnp.sum(jnp.sin(hidden) * mask[..., None])

    def run():
        out = jax.jit(forward)(params)
        value, grads = jax.jit(jax.value_and_grad(loss))(params)
        return out, value, grads

    out, value, grads = run()

    monkeypatch.setattr(layers, "gelu_erfc", lambda x: jax.nn.gelu(x, approximate=False))
    want_out, want_value, want_grads = run()
    np.testing.assert_array_equal(np.asarray(out).view(np.uint32), np.asarray(want_out).view(np.uint32))
    np.testing.assert_allclose(float(value), float(want_value), atol=1e-5)  # a sum of 224 terms of about 1
    # atol against the largest gradient: some are zero but for rounding (the key bias's, say)
    atol = 1e-5 * max(float(jnp.abs(w).max()) for w in jax.tree.leaves(want_grads))
    for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(grads), jax.tree.leaves(want_grads)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=atol, rtol=1e-4, err_msg=str(path))
