"""``train.remat``: checkpointed blocks give the same loss and gradients, recomputed in backward."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from w2sjax.models import heads, hf, remat

FIXTURES = Path(__file__).parent / "fixtures" / "hf"


def _loss_and_grads(case, checkpointed):
    module, tok = hf.load(FIXTURES / case)
    clf = heads.PooledClassifier(module, 2, pooling=hf.pooling_of(FIXTURES / case), rngs=nnx.Rngs(0))
    # decoders' heads start at zero; a random one lets gradients and logits reach the blocks
    clf.head.kernel[...] = jax.random.normal(jax.random.key(0), clf.head.kernel.shape) * 0.1
    if checkpointed:
        assert remat.checkpoint_blocks(clf) == module.config.num_hidden_layers
    ids, mask = tok.encode(["great coffee again and again", "dog food box never"], 12)
    x = {"input_ids": jnp.asarray(ids), "attention_mask": jnp.asarray(mask)}
    graphdef, state = nnx.split(clf, nnx.Param)
    f = lambda s: jax.nn.log_softmax(nnx.merge(graphdef, s)(x))[:, 0].mean()
    loss, grads = jax.jit(jax.value_and_grad(f))(state)
    flat = {tuple(p for p in path if p != "block"): np.asarray(v) for path, v in nnx.to_flat_state(grads)}
    return float(loss), flat, str(jax.make_jaxpr(jax.grad(f))(state))


@pytest.mark.parametrize("case", ["gemma3_sliding", "bert"])
def test_checkpointed_blocks_give_the_same_gradients(case):
    loss, grads, plain_jaxpr = _loss_and_grads(case, False)
    loss_r, grads_r, remat_jaxpr = _loss_and_grads(case, True)
    assert "remat" in remat_jaxpr and "remat" not in plain_jaxpr  # the rematerialisation primitive
    assert abs(loss - loss_r) < 1e-6 and grads.keys() == grads_r.keys()
    for path, g in grads.items():
        np.testing.assert_allclose(grads_r[path], g, atol=1e-5, err_msg="/".join(map(str, path)))
