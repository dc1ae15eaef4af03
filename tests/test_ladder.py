"""The strong-model ladder: mpnet-base and smollm2-135m as registry models, and their featurizers.

The featurizers batch texts in length buckets; these tests check that the bucketed, padded and
reordered computation returns exactly what one direct call of the model gives for each text.
The SmolLM2 check runs by default (its GGUF is small); the 438 MB MPNet load is marked slow.
"""

import runpy
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from w2sjax.models import get_model, heads, known_models, llama, mpnet

ROOT = Path(__file__).resolve().parents[1]
# Different lengths on purpose: the plan sorts by length, so output order is checked too.
TEXTS = np.array([
    "The dog food made my puppy sick and I will never order it again, what a waste of money!",
    "ok",
    "Great coffee, would buy again.",
], dtype=object)


def test_registered_with_runner_options():
    assert {"mpnet-base", "smollm2-135m"} <= set(known_models())
    m = get_model("mpnet-base", max_len=64, progress=False)
    s = get_model("smollm2-135m", max_len=64, progress=False)
    for spec in (m, s):
        assert spec.modalities == ("text",) and spec.head == "linear"
        assert spec.featurizer.max_len == 64 and spec.featurizer.progress is False
        assert spec.tokenize is not None  # so the runner passes data.max_len through
    # Keys name the model, pooling and length, then the weights' content (they address the on-disk
    # cache); a packaged asset's content hash comes from its pins, so nothing is fetched here.
    from w2sjax import assets

    mpnet_w = "-w" + assets.content_hash("mpnet-base-v2")[:16]
    assert m.featurizer.key == "mpnet-base-mean-len64-v1" + mpnet_w
    assert s.featurizer.key == "smollm2-135m-last-len64-v1-w" + assets.content_hash("smollm2-135m")[:16]
    assert get_model("mpnet-base", max_len=128).featurizer.key == "mpnet-base-mean-len128-v1" + mpnet_w
    assert get_model("mpnet-base", normalize=True).featurizer.key.endswith("-l2-v1" + mpnet_w)
    assert m.num_params == 108_895_872 and s.num_params == 134_515_008
    assert callable(m.finetune) and callable(s.finetune)


def test_ladder_config_is_valid():
    cfg = runpy.run_path(str(ROOT / "experiments" / "ladder.py"))["get_config"]()
    assert cfg.data.task == "fine_foods_pooled" and cfg.data.max_len == 128
    assert cfg.strong_mode == "probe" and len(cfg.seeds) >= 3
    ladder = {"glove-bow", "minilm-l2", "minilm-l6", "mpnet-base", "smollm2-135m"}
    assert set(cfg.weak_models) | set(cfg.strong_models) == ladder
    assert ladder <= set(known_models())


def _jit(module, fn):
    """jit ``fn(module, *args)`` with the state as an argument: eager dispatch is ~3x slower."""
    graphdef, state = nnx.split(module)
    jitted = jax.jit(lambda s, *a: fn(nnx.merge(graphdef, s), *a))
    return lambda *a: jitted(state, *(jnp.asarray(x) for x in a))


def _count(module) -> int:
    return sum(x.size for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


@pytest.mark.slow  # the real SmolLM2; the decoder read-position tests pool the same states by default
def test_smollm2_features_match_direct_call():
    # A small tokens_per_batch keeps the compiled batches tiny (the default is sized for sweeps).
    spec = get_model("smollm2-135m", max_len=32, tokens_per_batch=128, progress=False)
    got = spec.featurizer({"text": TEXTS})
    model, tok = spec.featurizer.load()
    assert _count(model) == spec.num_params
    ids, mask = tok.encode(list(TEXTS), 32)
    clf = llama.DecoderClassifier(model, 2, rngs=nnx.Rngs(0))
    want = _jit(clf, lambda m, i, k: m.features({"input_ids": i, "attention_mask": k}))(ids, mask)
    assert got.shape == (3, 576) and got.dtype == np.float32
    np.testing.assert_allclose(got, np.asarray(want), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_mpnet_features_match_direct_call():
    spec = get_model("mpnet-base", max_len=32, tokens_per_batch=128, progress=False)
    got = spec.featurizer({"text": TEXTS})
    encoder, tok = spec.featurizer.load()
    assert _count(encoder) == spec.num_params
    ids, mask = tok.encode(list(TEXTS), 32)
    want = _jit(encoder, lambda m, i, k: m.embed(i, k, normalize=False))(ids, mask)
    assert got.shape == (3, 768) and got.dtype == np.float32
    np.testing.assert_allclose(got, np.asarray(want), rtol=1e-4, atol=1e-4)
    # The finetune model starts from the same weights: its pooled features agree.
    clf = spec.finetune(2, rngs=nnx.Rngs(0))
    assert isinstance(clf, heads.PooledClassifier)
    pooled = _jit(clf.encoder, lambda m, i, k: m.embed(i, k, normalize=False))(ids, mask)
    np.testing.assert_allclose(np.asarray(pooled), np.asarray(want), atol=1e-5)
