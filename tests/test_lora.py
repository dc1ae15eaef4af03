"""LoRA adapters (`w2sjax.models.lora`) and ``train.trainable="lora"`` on tiny real checkpoints."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from w2sjax import parallel, train
from w2sjax.config import ConfigError, LoraConfig, StudentTrainConfig
from w2sjax.models import heads, hf, lora

FIXTURES = Path(__file__).parent / "fixtures" / "hf"


def _clf(case, seed=0):
    module, tok = hf.load(FIXTURES / case)
    pooling = hf.pooling_of(FIXTURES / case)
    clf = heads.PooledClassifier(module, 2, pooling=pooling, rngs=nnx.Rngs(seed))
    # decoders' heads start at zero; a random one lets gradients and logits reach the blocks
    clf.head.kernel[...] = jax.random.normal(jax.random.key(seed), clf.head.kernel.shape) * 0.1
    return clf, tok


def _inputs(tok, n=16):
    rng = np.random.default_rng(0)
    words = ["great", "coffee", "dog", "food", "terrible", "box", "again", "never"]
    texts = [" ".join(rng.choice(words, size=rng.integers(2, 7))) for _ in range(n)]
    ids, mask = tok.encode(texts, 12)
    return {"input_ids": ids, "attention_mask": mask}, texts


def _logits(module, inputs):
    graphdef, state = nnx.split(module)
    return np.asarray(jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, {k: jnp.asarray(v) for k, v in inputs.items()}))


@pytest.mark.parametrize("case,per_layer", [("llama_gqa_tied", 2), ("bert", 2), ("gpt2", 2)])
def test_adapters_start_as_the_identity(case, per_layer):
    clf, tok = _clf(case)
    inputs, _ = _inputs(tok)
    before = _logits(clf, inputs)
    n = lora.add_adapters(clf, rank=4, alpha=8.0, rngs=nnx.Rngs(1))
    assert n == per_layer * clf.encoder.config.num_hidden_layers
    np.testing.assert_allclose(_logits(clf, inputs), before, atol=1e-6)  # B = 0
    with pytest.raises(ValueError, match="no linear layer named nope"):
        lora.add_adapters(clf, targets=("nope",), rngs=nnx.Rngs(1))


def test_lora_training_moves_only_adapters_and_head():
    clf, tok = _clf("qwen2_bias")
    lora.add_adapters(clf, rank=4, alpha=8.0, rngs=nnx.Rngs(1))
    base = {p: np.asarray(v[...]) for p, v in nnx.to_flat_state(nnx.state(clf, nnx.Param))}
    inputs, texts = _inputs(tok, 32)
    labels = np.eye(2, dtype=np.float32)[[int("great" in t) for t in texts]]
    cfg = StudentTrainConfig(epochs=8, batch_size=16, lr=1e-2, log_every=4, trainable="lora")
    fitted = train.fit(clf, train.ArrayData(inputs, labels), cfg=cfg, loss="xent", mesh=parallel.make_mesh(),
                       seed=0, progress=False)
    trained = {tuple(p): v for p, v in nnx.to_flat_state(nnx.State(fitted.state.params))}
    # Only the adapters and the head are in the optimizer's parameters (and so its state).
    assert trained and all("lora_a" in p or "lora_b" in p or "head" in p for p in trained)
    assert sum(1 for p in trained if "lora_b" in p) == 2 * clf.encoder.config.num_hidden_layers
    n_opt = sum(x.size for x in jax.tree.leaves(fitted.state.opt_state) if getattr(x, "ndim", 0) > 0)
    n_train = sum(np.size(v) for v in trained.values())
    assert n_opt == 2 * n_train  # AdamW's two moments, nothing for the frozen weights
    frozen = {tuple(p): v for p, v in nnx.to_flat_state(nnx.State(fitted.state.frozen))}
    for p, v in frozen.items():
        if p in base:
            np.testing.assert_array_equal(np.asarray(v), base[p])
    assert any(np.abs(np.asarray(v)).max() > 0 for p, v in trained.items() if "lora_b" in p)


def test_trainable_values_are_checked():
    assert StudentTrainConfig(trainable="lora").lora == LoraConfig()
    with pytest.raises(ConfigError, match="train.trainable: expected 'all', 'head', 'lora' or 'top:K'"):
        StudentTrainConfig(trainable="adapters")
    with pytest.raises(ConfigError, match="train.lora.rank"):
        LoraConfig(rank=0)
