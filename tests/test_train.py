"""The train step and loop on 8 fake devices: learning, no recompiles, NaN detection, early stopping."""

import chex
import jax
import numpy as np
import pytest
from flax import nnx

from w2sjax import parallel, train


class Probe(nnx.Module):
    def __init__(self, d, c, *, rngs):
        self.body = nnx.Linear(d, d, rngs=rngs)
        self.head = nnx.Linear(d, c, rngs=rngs)

    def __call__(self, x):
        return self.head(nnx.relu(self.body(x)))


def separable(n=512, d=10, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x @ rng.normal(size=d) > 0).astype(np.int64)
    return x, np.eye(2, dtype=np.float32)[y], y


def test_fit_learns_without_recompiling_on_8_devices():
    assert jax.device_count() == 8
    x, onehot, y = separable()
    mesh = parallel.make_mesh()
    cfg = train.TrainConfig(epochs=8, batch_size=64, lr=3e-2)
    res = train.fit(
        Probe(10, 2, rngs=nnx.Rngs(0)), train.ArrayData(x, onehot), cfg=cfg, loss="logconf", mesh=mesh, seed=0,
        progress=False, step_wrapper=chex.assert_max_traces(n=1),
    )
    probs = train.predict(res.predict_step, res.state, x, mesh=mesh, batch_size=100)  # 512 % 100: padded tail
    assert probs.shape == (512, 2)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    assert (probs.argmax(-1) == y).mean() > 0.9
    assert res.steps == 8 * (512 // 64)
    chex.clear_trace_counter()


def test_head_only_training_freezes_the_backbone():
    x, onehot, _ = separable()
    mesh = parallel.make_mesh()
    module = Probe(10, 2, rngs=nnx.Rngs(1))
    body_before = np.asarray(module.body.kernel[...]).copy()
    head_before = np.asarray(module.head.kernel[...]).copy()
    cfg = train.TrainConfig(epochs=2, batch_size=64, lr=1e-2, trainable="head")
    res = train.fit(module, train.ArrayData(x, onehot), cfg=cfg, loss="xent", mesh=mesh, seed=0, progress=False)
    np.testing.assert_array_equal(res.state.frozen["body"]["kernel"], body_before)
    assert np.abs(np.asarray(res.state.params["head"]["kernel"]) - head_before).max() > 1e-3


def test_nan_loss_fails_fast_naming_stage_and_step():
    x, labels, _ = separable(n=128)
    x[:] = np.nan  # NaN inputs give NaN logits, hence a NaN loss at the very first step
    cfg = train.TrainConfig(epochs=1, batch_size=32, lr=1e-2, log_every=100)
    with pytest.raises(FloatingPointError, match=r"stage weak__x: .* step 0"):
        train.fit(Probe(10, 2, rngs=nnx.Rngs(0)), train.ArrayData(x, labels), cfg=cfg, loss="xent",
                  mesh=parallel.make_mesh(), seed=0, stage="weak__x", progress=False)


def test_early_stopping_returns_best_validation_params():
    x, onehot, y = separable(n=256, seed=3)
    flipped = onehot[:, ::-1].copy()  # train on wrong labels: validation accuracy only falls
    cfg = train.TrainConfig(epochs=6, batch_size=32, lr=5e-2, early_stopping=True, eval_every=2, patience=3)
    res = train.fit(Probe(10, 2, rngs=nnx.Rngs(0)), train.ArrayData(x, flipped), cfg=cfg, loss="xent",
                    mesh=parallel.make_mesh(), seed=0, val=train.ArrayData(x[:64], onehot[:64]), progress=False)
    assert res.stopped_early
    assert res.steps < 6 * (256 // 32)
    probs = train.predict(res.predict_step, res.state, x[:64], mesh=parallel.make_mesh(), batch_size=64)
    assert (probs.argmax(-1) == y[:64]).mean() == pytest.approx(float(res.state.best_score))


def test_batch_order_is_a_pure_function_of_seed_and_step():
    a = [train.batch_indices(100, 32, 7, s) for s in range(9)]
    b = [train.batch_indices(100, 32, 7, s) for s in range(9)]
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    epoch0 = np.concatenate(a[:3])
    assert len(set(epoch0.tolist())) == 96  # no repeats within an epoch
    assert not np.array_equal(a[0], a[3])  # a new permutation each epoch
    assert not np.array_equal(a[0], train.batch_indices(100, 32, 8, 0))


def test_unknown_loss_and_bad_trainable_are_clear_errors():
    with pytest.raises(ValueError, match="unknown loss 'mse'; known: xent"):
        train.make_loss("mse", train.TrainConfig())
    with pytest.raises(ValueError, match="train.trainable"):
        train.TrainConfig(trainable="some")
