"""Compiled lengths: a stage compiles a few of its bucket lengths and pads each batch up to the next
one. The choice is checked against every subset (numpy), the batches against the bucketed order,
and a stage killed mid-way and resumed against the same stage run through."""

import itertools

import numpy as np
import pytest
from flax import nnx

from w2sjax.data import length_buckets as lb


def _brute_force_cost(step_lengths, max_len, cost):
    """The cheapest ``len(S) * cost + sum(compiled length) / max_len`` over every subset ``S`` of
    the used lengths that holds the longest, each step at the shortest member of ``S`` holding it."""
    used = np.unique(step_lengths)
    best = np.inf
    for r in range(len(used)):
        for below in itertools.combinations(used[:-1], r):
            s = np.array([*below, used[-1]])
            compiled = s[np.searchsorted(s, step_lengths)]
            best = min(best, len(s) * cost + compiled.sum() / max_len)
    return best


def _cost(step_lengths, chosen, max_len, cost):
    s = np.asarray(chosen)
    return len(s) * cost + s[np.searchsorted(s, step_lengths)].sum() / max_len


@pytest.mark.parametrize("seed", range(40))
def test_choice_is_the_cheapest_subset(seed):
    rng = np.random.default_rng(seed)
    max_len = int(rng.choice([64, 128, 512]))
    buckets = np.array(lb.bucket_lengths(max_len))
    steps = rng.choice(buckets, size=int(rng.integers(1, 60)), p=rng.dirichlet(np.ones(len(buckets))))
    cost = float(rng.choice([0.3, 1.0, 2.5, 8.0, 40.0]))
    chosen = lb.choose_lengths(steps, max_len, cost)
    assert set(chosen) <= set(steps.tolist()) and max(chosen) == steps.max()
    assert _cost(steps, chosen, max_len, cost) == pytest.approx(_brute_force_cost(steps, max_len, cost), abs=1e-9)
    # no compile cost: every used length its own program (one program per bucket)
    assert lb.choose_lengths(steps, max_len, 0.0) == tuple(np.unique(steps).tolist())


def test_choice_examples():
    # 10 steps at 16 and 1 at 128: padding 10 steps to 128 costs 8.75 full steps, a second program 5
    assert lb.choose_lengths([16] * 10 + [128], 128, 5.0) == (16, 128)
    assert lb.choose_lengths([16] * 10 + [128], 128, 10.0) == (128,)
    assert lb.compiled_length(20, (32, 128)) == 32 and lb.compiled_length(20, None) == 20


def _lengths(n=203, max_len=128, seed=0):
    rng = np.random.default_rng(seed)
    return np.minimum(rng.geometric(1 / 40, size=n) + 2, max_len)


def test_compiled_lengths_keep_the_batches_and_resume_alike():
    lengths, b, total = _lengths(), 8, 60
    perm = lambda e: np.random.default_rng([5, e]).permutation(len(lengths))
    # a compile cost near 0 compiles every bucket the plan uses: each batch at its own fine-grid bucket
    plain = lb.BucketedOrder(lengths, b, 5, 128, perm, total=total, compile_cost=1e-9)
    padded = lb.BucketedOrder(lengths, b, 5, 128, perm, total=total, compile_cost=6.0)
    assert padded.buckets == tuple(range(8, 129, 8))  # compiled lengths bucket on multiples of 8 tokens
    per_bucket = lb.BucketedOrder(lengths, b, 5, 128, perm, total=total, compile_cost=0.0)
    assert per_bucket.compiled is None and per_bucket.buckets == (16, 32, 64, 128)  # powers of two, as before
    buckets = [plain.batch(s)[1] for s in range(total)]
    assert set(plain.compiled) == set(buckets)
    assert padded.compiled == lb.choose_lengths(buckets, 128, 6.0)
    assert len(padded.compiled) < len(set(buckets))  # the policy merged some lengths here
    for step in range(total):
        (idx, length), (idx0, bucket) = padded.batch(step), plain.batch(step)
        assert np.array_equal(idx, idx0)  # the same rows, in the same order
        assert length == min(c for c in padded.compiled if c >= bucket)
    # a stage resumed at step 37 (a fresh order) pads every later step alike
    resumed = lb.BucketedOrder(lengths, b, 5, 128, perm, total=total, compile_cost=6.0)
    for step in range(37, total):
        assert resumed.batch(step)[1] == padded.batch(step)[1]


class _TokenBag(nnx.Module):
    """Masked mean of token embeddings, then a linear head: any padded length gives the same output."""

    def __init__(self, *, rngs):
        self.embed = nnx.Embed(50, 8, rngs=rngs)
        self.head = nnx.Linear(8, 2, rngs=rngs)

    def __call__(self, inputs):
        import jax.numpy as jnp

        m = inputs["attention_mask"][..., None].astype(jnp.float32)
        return self.head((self.embed(inputs["input_ids"]) * m).sum(1) / jnp.maximum(m.sum(1), 1.0))


def _token_data(n=192, max_len=64, seed=1):
    from w2sjax import train

    rng = np.random.default_rng(seed)
    lengths = np.minimum(rng.geometric(1 / 8, size=n) + 1, max_len)  # mostly short: 16-token buckets dominate
    mask = (np.arange(max_len)[None, :] < lengths[:, None]).astype(np.int32)
    ids = (rng.integers(1, 50, size=(n, max_len)) * mask).astype(np.int32)
    return train.ArrayData({"input_ids": ids, "attention_mask": mask}, np.eye(2, dtype=np.float32)[rng.integers(0, 2, n)])


class _Killed(BaseException):
    pass


def test_a_stage_resumed_mid_way_equals_one_run_through(tmp_path):
    """A token stage under compiled lengths, killed right after its in-stage save at step 8 and run
    again on the same Orbax checkpoints, ends with the parameters of the stage run through; its
    padded lengths differ from the per-bucket stage's, and its parameters by float noise at most."""
    import jax

    from w2sjax import parallel, train
    from w2sjax.runner.stage_runner import _OrbaxStage

    data, mesh = _token_data(), parallel.make_mesh()
    cfg = train.TrainConfig(epochs=3, batch_size=16, lr=1e-2, checkpoint_every=4, compile_cost_steps=4.0)
    fit = lambda cfg, ckpt=None: train.fit(_TokenBag(rngs=nnx.Rngs(0)), data, cfg=cfg, loss="xent", mesh=mesh, seed=0,
                                           progress=False, ckpt=ckpt)
    params = lambda res: jax.tree.map(np.asarray, res.state.params)
    through_fit = fit(cfg)
    through = params(through_fit)

    stage = _OrbaxStage(tmp_path, "stage")
    save = stage.save

    def killed_after_8(step, state):
        save(step, state)
        if step == 8:
            raise _Killed

    stage.save = killed_after_8
    with pytest.raises(_Killed):
        fit(cfg, stage)
    resumed = fit(cfg, _OrbaxStage(tmp_path, "stage"))
    assert resumed.resumed_from == 8
    jax.tree.map(np.testing.assert_array_equal, params(resumed), through)

    # a compile cost near 0 compiles every bucket of the same (fine) plan: the same batches, each at its own bucket
    feed = lambda cost: train.HostFeed(data, 16, 0, mesh, 4, buckets=True, total=36, compile_cost=cost)
    assert feed(4.0).lengths(0, 36) < feed(1e-9).lengths(0, 36)  # fewer programs: the policy is active here
    per_bucket = params(fit(train.TrainConfig(epochs=3, batch_size=16, lr=1e-2, compile_cost_steps=1e-9)))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), per_bucket, through)
    _predict_check(through_fit, data, mesh)


def test_a_bad_compile_cost_is_a_one_line_config_error():
    from w2sjax.config import ConfigError, TrainConfig

    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match=r"^train\.compile_cost_steps: expected a number >= 0"):
            TrainConfig(compile_cost_steps=bad)


def _predict_check(fitted, data, mesh):
    """Predictions padded to a stage's compiled lengths match the per-bucket ones (masked padding)."""
    from w2sjax import train

    cfg = train.TrainConfig(batch_size=16, compile_cost_steps=20.0)
    buckets = train.predict_buckets([data.inputs], cfg, mesh)
    per_bucket = {n for _, n in train.predict_batches(data.inputs, batch_size=train.predict_rows(cfg), mesh=mesh)[2]}
    assert isinstance(buckets, tuple) and set(buckets) < per_bucket  # fewer predict programs
    assert train.predict_buckets([data.inputs], train.TrainConfig(compile_cost_steps=0.0), mesh) is True
    run = lambda b: train.predict(fitted.predict_step, fitted.state, data.inputs, mesh=mesh, batch_size=64, buckets=b)
    np.testing.assert_allclose(run(buckets), run(True), atol=1e-6)


def test_compiled_predictions_pad_each_batch_to_the_shortest_chosen_length_that_holds_it():
    """With a compile cost, prediction lengths are chosen from the multiples of 8 tokens, and each
    batch runs at the shortest chosen one holding its longest row (not at a power of two)."""
    from w2sjax import parallel, train

    data, mesh = _token_data(), parallel.make_mesh()
    chosen = train.predict_buckets([data.inputs], train.TrainConfig(batch_size=16, compile_cost_steps=0.5), mesh)
    assert isinstance(chosen, tuple) and all(c % lb.FINE_STEP == 0 for c in chosen)
    lengths = lb.token_lengths(data.inputs)
    for idx, n in train.predict_batches(data.inputs, batch_size=64, mesh=mesh, buckets=chosen)[2]:
        longest = lengths[idx].max()
        assert n == min(c for c in chosen if c >= longest)
    assert lb.bucket_lengths(60, step=8) == [8, 16, 24, 32, 40, 48, 56, 60]
    assert lb.candidate_lengths(64, 0.5) == list(range(8, 65, 8)) and lb.candidate_lengths(64, 0.0) == [16, 32, 64]


def _cpu_has_amx_bf16() -> bool:
    """Read here from /proc/cpuinfo, apart from the library's own reader."""
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return any(line.startswith("flags") and "amx_bf16" in line.split() for line in text.splitlines())


def test_an_unset_compile_cost_follows_the_step_speed_of_precision_and_machine():
    """Compile cost is compile seconds over step seconds: where steps run on matrix units (bf16 on an
    AMX CPU, any accelerator) it is 4 steps, elsewhere 0.5; a number the run gives is kept."""
    import jax

    from w2sjax import train
    from w2sjax.config import Config, StudentTrainConfig

    assert lb.default_compile_cost("bfloat16", "cpu", frozenset({"avx512f", "amx_bf16"})) == 4.0
    assert lb.default_compile_cost("float32", "cpu", frozenset({"avx512f", "amx_bf16"})) == 0.5
    assert lb.default_compile_cost("bfloat16", "cpu", frozenset({"avx2", "fma"})) == 0.5
    assert lb.default_compile_cost("float32", "gpu") == lb.default_compile_cost("bfloat16", "tpu") == 4.0
    assert StudentTrainConfig().compile_cost_steps is None
    on_cpu = jax.default_backend() == "cpu"
    for precision in ("float32", "bfloat16"):
        resolved = train.with_compile_cost(Config(precision=precision))
        fast = not on_cpu or (precision == "bfloat16" and _cpu_has_amx_bf16())
        assert resolved.train.compile_cost_steps == resolved.weak_train.compile_cost_steps == (4.0 if fast else 0.5)
    given = Config(precision="bfloat16", train=StudentTrainConfig(compile_cost_steps=1.5))
    assert train.with_compile_cost(given).train.compile_cost_steps == 1.5
