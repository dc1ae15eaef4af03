"""The train step and loop on 8 fake devices: learning, no recompiles, NaN detection, early stopping."""

import functools

import chex
import jax
import numpy as np
import pytest
from flax import nnx

from w2sjax import parallel, train
from w2sjax.config import LossConfig


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
    cfg = train.StudentTrainConfig(epochs=2, batch_size=64, lr=1e-2, trainable="head")
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
        train.make_loss("mse")
    with pytest.raises(ValueError, match="train.trainable"):
        train.StudentTrainConfig(trainable="some")


def test_one_compiled_program_serves_losses_seeds_lengths_and_alphas():
    """2 losses x 3 seeds x 2 lengths (and 3 alpha settings) of one student: its step is traced once."""
    traces = []

    def count_traces(step):
        def counted(*args):
            traces.append(1)  # runs only while tracing, i.e. once per compile
            return step(*args)
        return counted

    x, onehot, _ = separable(n=128)
    soft = (0.8 * onehot + 0.1).astype(np.float32)
    mesh = parallel.make_mesh()

    def run(loss, seed, epochs, wrapper):
        cfg = train.StudentTrainConfig(epochs=epochs, batch_size=32, lr=1e-2, loss=LossConfig(alpha_max=0.25 * (seed + 1)))
        return train.fit(Probe(10, 2, rngs=nnx.Rngs(seed)), train.ArrayData(x, soft), cfg=cfg, loss=loss, mesh=mesh,
                         seed=seed, progress=False, step_wrapper=wrapper)

    shared = {(loss, seed, epochs): run(loss, seed, epochs, count_traces)
              for loss in ("xent", "logconf") for seed in range(3) for epochs in (1, 3)}
    assert len(traces) == 1
    assert shared["xent", 0, 1].steps == 4 and shared["xent", 0, 3].steps == 12
    # The shared program really switches loss and settings: each run equals one from its own,
    # freshly compiled program (a distinct wrapper object gets its own program).
    for key in [("logconf", 2, 3), ("xent", 1, 3), ("logconf", 0, 1)]:
        alone = run(*key, lambda step: step)
        np.testing.assert_array_equal(shared[key].state.params["head"]["kernel"], alone.state.params["head"]["kernel"])
    assert not np.allclose(shared["xent", 2, 3].state.params["head"]["kernel"],
                           shared["logconf", 2, 3].state.params["head"]["kernel"])



@pytest.mark.parametrize("loss", ["xent", "logconf"])
def test_a_program_of_fewer_losses_trains_bit_for_bit_as_the_one_of_every_loss(loss):
    """A run that names its losses compiles only those into its train program (and one loss still
    as a conditional): the trained parameters equal those of the program of every loss, bit for
    bit (token inputs, as a finetuned student takes them); a stage's own loss is always in."""
    from test_compile import TinyTokens

    rng = np.random.default_rng(5)
    mask = (np.arange(16)[None] < rng.integers(1, 17, 96)[:, None]).astype(np.int32)
    tokens = {"input_ids": (rng.integers(1, 50, (96, 16)) * mask).astype(np.int32), "attention_mask": mask}
    soft = (0.7 * np.eye(2, dtype=np.float32)[rng.integers(0, 2, 96)] + 0.15).astype(np.float32)
    cfg = train.StudentTrainConfig(epochs=2, batch_size=16, lr=3e-2)
    fitted = {losses: train.fit(TinyTokens(rngs=nnx.Rngs(1)), train.ArrayData(tokens, soft), cfg=cfg, loss=loss,
                                mesh=parallel.make_mesh(), seed=0, progress=False, losses=losses)
              for losses in (None, ("logconf", "xent"), (loss,))}
    every = jax.tree.leaves(fitted[None].state.params)
    for losses in (("logconf", "xent"), (loss,)):
        for a, b in zip(every, jax.tree.leaves(fitted[losses].state.params)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert train.compiled_losses(loss, ("logconf", "xent")) == ("xent", "logconf")  # the registry's order
    assert train.compiled_losses("product", ("xent",)) == ("xent", "product")
    assert train.compiled_losses(loss) == train.LOSS_NAMES
    with pytest.raises(ValueError, match="unknown loss 'mse'"):
        train.compiled_losses(loss, ("mse",))

def test_learning_rate_matches_optax_warmup_cosine():
    import optax

    for epochs, warmup_frac in [(10, 0.05), (3, 0.0), (1, 0.5)]:
        cfg = train.TrainConfig(epochs=epochs, lr=5e-3, lr_warmup_frac=warmup_frac)
        total = 15 * epochs
        settings = train.step_settings(cfg, total)
        warmup = int(settings.warmup_steps)
        reference = optax.warmup_cosine_decay_schedule(0.0 if warmup else 5e-3, 5e-3, warmup, max(total, warmup + 1), 0.0)
        steps = np.arange(total + 2, dtype=np.int32)
        ours = jax.jit(jax.vmap(train.learning_rate, in_axes=(0, None)))(steps, settings)
        np.testing.assert_allclose(np.asarray(ours), np.asarray(jax.vmap(reference)(steps)), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize(
    "step,every,total,last,expected",
    [(10, 10, 100, True, True), (15, 10, 100, True, False), (100, 10, 100, True, True), (97, 10, 97, True, True),
     (100, 10, 100, False, False), (50, 0, 100, True, False), (100, 0, 100, True, False)],
)
def test_itstime(step, every, total, last, expected):
    assert train.itstime(step, every, total, last=last) is expected


class TokenBag(nnx.Module):
    """Masked mean of token embeddings + linear head: takes token batches of any length."""

    def __init__(self, vocab, d, c, *, rngs):
        self.embed = nnx.Embed(vocab, d, rngs=rngs)
        self.head = nnx.Linear(d, c, rngs=rngs)

    def __call__(self, inputs):
        m = inputs["attention_mask"][..., None].astype(jax.numpy.float32)
        return self.head((self.embed(inputs["input_ids"]) * m).sum(1) / jax.numpy.maximum(m.sum(1), 1.0))


def token_data(n=256, max_len=64, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, max_len + 1, size=n)
    mask = (np.arange(max_len)[None, :] < lengths[:, None]).astype(np.int32)
    ids = rng.integers(1, 50, size=(n, max_len)).astype(np.int32) * mask
    y = rng.integers(0, 2, size=n)
    return {"input_ids": ids, "attention_mask": mask}, np.eye(2, dtype=np.float32)[y]


@pytest.mark.parametrize("buckets", [True, False])
def test_length_buckets_bound_compiles_and_cut_padding(buckets):
    """Token batches run at a few fixed lengths: one trace per length (16, 32, 64), none with buckets off."""
    seen = []

    def record_shapes(step):
        def counted(state, batch, *rest):
            seen.append(batch["inputs"]["input_ids"].shape[1])  # runs only while tracing
            return step(state, batch, *rest)
        return counted

    inputs, onehot = token_data()
    cfg = train.TrainConfig(epochs=3, batch_size=32, lr=1e-2, log_every=4, length_buckets=buckets,
                            compile_cost_steps=0.0)  # one program per bucket (tests/test_length_buckets_compiled.py)
    res = train.fit(TokenBag(50, 8, 2, rngs=nnx.Rngs(0)), train.ArrayData(inputs, onehot), cfg=cfg, loss="xent",
                    mesh=parallel.make_mesh(), seed=0, progress=False, step_wrapper=record_shapes)
    assert res.steps == 3 * (256 // 32)
    assert sorted(seen) == ([16, 32, 64] if buckets else [64])  # each length traced exactly once
    assert np.isfinite(np.asarray(res.state.params["head"]["kernel"])).all()


def test_train_loop_donates_the_state():
    """The loop updates the state in place: its input buffers are given to the output (no copy of
    parameters and optimizer state per call; benchmarks/RESULTS.md, levers)."""
    x, onehot, _ = separable(n=64)
    mesh = parallel.make_mesh()
    model, state = train.init_state(Probe(10, 2, rngs=nnx.Rngs(0)), "all")
    state = train.place(state, train.state_shardings(mesh, state))
    feed = train.HostFeed(train.ArrayData(x, onehot), 16, 0, mesh, 2)
    settings = train.place(train.step_settings(train.TrainConfig(), 4), parallel.replicated(mesh))
    rng = train.place(jax.random.key_data(jax.random.key(0)), parallel.replicated(mesh))
    (count, batches), = feed.segments(0, 2)
    new_state, _ = train.train_loop(state, batches, train.place(np.int32(count), parallel.replicated(mesh)), rng,
                                    settings, model=model, mesh=mesh)
    assert int(new_state.step) == 2
    assert all(leaf.is_deleted() for leaf in jax.tree.leaves(state.params))
    assert all(leaf.is_deleted() for leaf in jax.tree.leaves(state.opt_state) if isinstance(leaf, jax.Array))


def test_train_loop_reports_the_gradient_norm_of_its_last_step():
    """The loop computes ``grad_norm`` only on the step whose metrics it returns: that value is the
    norm of the last step's gradient (a cross-entropy gradient taken here by hand, normed in numpy),
    not 0 and not an earlier step's."""
    x, onehot, _ = separable(n=96)
    mesh = parallel.make_mesh()
    feed = train.HostFeed(train.ArrayData(x, onehot), 32, 0, mesh, 3)
    (count, batches), = feed.segments(0, 3)
    settings = train.place(train.step_settings(train.TrainConfig(lr=3e-2), 3, "xent"), parallel.replicated(mesh))
    rng = train.place(jax.random.key_data(jax.random.key(0)), parallel.replicated(mesh))

    def loop(steps):
        model, state = train.init_state(Probe(10, 2, rngs=nnx.Rngs(0)), "all")
        state = train.place(state, train.state_shardings(mesh, state))
        return model, train.train_loop(state, batches, train.place(np.int32(steps), parallel.replicated(mesh)), rng,
                                       settings, model=model, mesh=mesh)

    model, (before_last, _) = loop(2)
    _, (_, metrics) = loop(3)
    last = jax.tree.map(lambda a: np.asarray(a)[2], batches)

    def cross_entropy(params):
        logits = model.bind(params, before_last.frozen)(last["inputs"])
        return -(last["labels"] * jax.nn.log_softmax(logits)).sum(-1).mean()

    grads = jax.grad(cross_entropy)(jax.tree.map(np.asarray, before_last.params))
    expected = np.sqrt(sum(np.sum(np.square(np.asarray(g, np.float64))) for g in jax.tree.leaves(grads)))
    assert expected > 1e-3
    np.testing.assert_allclose(float(metrics["grad_norm"]), expected, rtol=1e-4)


def test_predict_in_length_buckets_matches_padded_predictions_in_input_order():
    """Token inputs are predicted shortest first, each batch cut to a bucket length: the same
    probabilities, in the input order, with one compile per length used."""
    inputs, onehot = token_data(n=100, max_len=64, seed=3)
    inputs["attention_mask"][:40, 20:] = 0  # 40 rows of at most 20 tokens: a 32-token batch
    inputs["input_ids"] *= inputs["attention_mask"]
    mesh = parallel.make_mesh()
    cfg = train.TrainConfig(epochs=1, batch_size=32, lr=1e-2)
    res = train.fit(TokenBag(50, 8, 2, rngs=nnx.Rngs(0)), train.ArrayData(inputs, onehot), cfg=cfg, loss="xent",
                    mesh=mesh, seed=0, progress=False)
    jitted = train._predict_jit(res.predict_step, False)
    before = jitted._cache_size()
    bucketed = train.predict(res.predict_step, res.state, inputs, mesh=mesh, batch_size=32)
    shortest_first = np.sort(inputs["attention_mask"].sum(1))  # masks are contiguous: length = sum
    used = {next(cut for cut in (16, 32, 64) if cut >= shortest_first[i:i + 32].max()) for i in range(0, 100, 32)}
    assert len(used) >= 2 and jitted._cache_size() - before == len(used)
    padded = train.predict(res.predict_step, res.state, inputs, mesh=mesh, batch_size=32, buckets=False)
    np.testing.assert_allclose(bucketed, padded, atol=1e-6)
    # the reference: the model applied row by row in numpy order
    model = res.model.bind(res.state.params, res.state.frozen)
    direct = np.asarray(jax.nn.softmax(model(inputs), axis=-1))
    np.testing.assert_allclose(bucketed, direct, atol=1e-6)


TOY_LOSS = '''

@register(Param("toy_scale", "weight of the squared error", keyword="scale"))
def toy(logits, labels, *, scale=3.0, weights=None, where=None, reduction="mean"):
    """Squared distance between the student's probabilities and the labels, times ``scale``."""
    logits, labels, where = _prepare("toy", logits, labels, weights, where)
    per_example = scale * jnp.sum((jax.nn.softmax(logits, axis=-1) - labels) ** 2, axis=-1)
    return _reduce(per_example, weights, where, reduction)
'''

TOY_CHECKS = '''
import numpy as np
from flax import nnx
from w2sjax import config, parallel, train
from w2sjax.runner import stage_keys

assert config.__file__.startswith(%r), config.__file__
assert config.LOSS_NAMES[-1] == "toy" and config.LossConfig().toy_scale == 3.0
cfg = config.apply_overrides(config.Config(), ["losses=xent,toy", "train.loss.toy_scale=2"])
assert cfg.losses == ("xent", "toy") and cfg.train.loss.toy_scale == 2.0
assert stage_keys.train_settings(cfg.train, "toy")["loss"] == {"toy_scale": 2.0}
assert "toy_scale" not in stage_keys.train_settings(cfg.train, "logconf")["loss"]
assert {k: c for k, _, _, c in config.describe()}["train.loss.toy_scale"] == "toy: weight of the squared error"

rng = np.random.default_rng(0)
z = rng.normal(size=(8, 2)).astype(np.float32)
y = np.eye(2, dtype=np.float32)[rng.integers(0, 2, 8)]
p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
want = 2.0 * ((p - y) ** 2).sum(-1).mean()
settings = train.step_settings(cfg.train, 10, "toy", cfg.train.loss)
got = train.stage_loss(z, y, step_frac=0.0, weights=np.ones(8, np.float32), settings=settings)
assert abs(float(got) - want) < 1e-5, (float(got), want)

x = rng.normal(size=(128, 4)).astype(np.float32)
labels = np.eye(2, dtype=np.float32)[(x[:, 0] > 0).astype(int)]
res = train.fit(nnx.Linear(4, 2, rngs=nnx.Rngs(0)), train.ArrayData(x, labels), loss="toy", cfg=train.StudentTrainConfig(
    epochs=5, batch_size=32, lr=0.1, loss=cfg.train.loss), mesh=parallel.make_mesh(), seed=0, progress=False)
probs = train.predict(res.predict_step, res.state, x, mesh=parallel.make_mesh(), batch_size=64)
print(res.steps, (probs.argmax(-1) == labels.argmax(-1)).mean())
'''


def test_adding_a_loss_is_one_decorated_function_in_losses_py(tmp_path):
    """The one edit: a copy of the package with a toy loss appended to losses.py. Config parsing,
    the stage fingerprint, the docs and the compiled train step all take it up."""
    import os
    import pathlib
    import shutil
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parent.parent
    shutil.copytree(root / "w2sjax", tmp_path / "w2sjax", ignore=shutil.ignore_patterns("__pycache__"))
    with open(tmp_path / "w2sjax" / "losses.py", "a") as f:
        f.write(TOY_LOSS)
    out = subprocess.run([sys.executable, "-c", TOY_CHECKS % str(tmp_path)], env=dict(os.environ, PYTHONPATH=str(tmp_path)),
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    steps, accuracy = out.stdout.split()
    assert int(steps) == 5 * (128 // 32) and float(accuracy) > 0.75, out.stdout  # it learns (chance: 0.5)


def test_the_update_split_over_devices_trains_bit_for_bit_as_the_whole_update(monkeypatch):
    """With a mesh, each device keeps and updates only its part of AdamW's moments (ZeRO stage 1;
    `train.sharded_update`): the parameters and moments after some steps equal, bit for bit, those
    of every device running the whole update, and each device holds an eighth of the moments."""
    monkeypatch.setattr(parallel, "UPDATE_SPLIT_MIN_SIZE", 64)  # split the tiny Probe's kernels too
    x, onehot, _ = separable(n=256, d=16)
    mesh = parallel.make_mesh()
    settings = train.place(train.step_settings(train.TrainConfig(lr=3e-2, weight_decay=0.1), 8),
                           parallel.replicated(mesh))
    rng = train.place(jax.random.key_data(jax.random.key(0)), parallel.replicated(mesh))
    ends = {}
    for split in (False, True):
        model, state = train.init_state(Probe(16, 2, rngs=nnx.Rngs(0)), "all")
        shardings = (train.state_shardings(mesh, state) if split
                     else parallel.param_shardings(mesh, jax.eval_shape(lambda: state)))
        step = train.jit_train_step(functools.partial(train.train_step, model=model, mesh=mesh if split else None),
                                    mesh, shardings)
        state = train.place(state, shardings)
        for i in range(4):
            batch = {"inputs": x[64 * i:64 * (i + 1)], "labels": onehot[64 * i:64 * (i + 1)],
                     "weights": np.ones(64, np.float32)}
            state, _ = step(state, train.to_global(mesh, batch), rng, settings)
        ends[split] = state
    mu = ends[True].opt_state.inner_state[0].mu["body"]["kernel"]
    assert {s.data.shape for s in mu.addressable_shards} == {(2, 16)}
    assert ends[True].params["body"]["kernel"].sharding.is_fully_replicated
    for a, b in zip(jax.tree.leaves((ends[False].params, ends[False].opt_state)),
                    jax.tree.leaves((ends[True].params, ends[True].opt_state))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_initial_state_compiles_two_programs_whatever_the_parameter_shapes():
    """The optimizer's initial state and the best-parameter copy are one program each, not one per
    parameter shape; they hold what optax's own init and a copy hold."""
    from jax import monitoring

    class Stack(nnx.Module):
        def __init__(self, widths, *, rngs):
            self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths, widths[1:])])

        def __call__(self, x):
            for layer in self.layers:
                x = layer(x)
            return x

    def compiles(widths):
        module = Stack(widths, rngs=nnx.Rngs(0))
        seen = []
        listener = lambda name, secs, **kw: seen.append(kw.get("fun_name")) if "backend_compile" in name else None
        monitoring.register_event_duration_secs_listener(listener)
        try:
            _, state = train.init_state(module, "all")
        finally:
            monitoring.unregister_event_duration_listener(listener)
        return seen, state

    first, _ = compiles((3, 5, 2))  # 4 parameter shapes, and the scalars' programs
    assert len(first) <= 5
    again, state = compiles((4, 6, 7, 9, 11, 3))  # 10 other parameter shapes: two programs, not 20
    assert again == ["jit(<lambda>)", "jit(<lambda>)"]
    expected = train.OPTIMIZER.init(state.params)
    for got, want in zip(jax.tree.leaves(state.opt_state), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    for copy, param in zip(jax.tree.leaves(state.best_params), jax.tree.leaves(state.params)):
        np.testing.assert_array_equal(np.asarray(copy), np.asarray(param))
        assert copy.unsafe_buffer_pointer() != param.unsafe_buffer_pointer()
