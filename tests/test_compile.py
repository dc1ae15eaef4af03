"""Compiling less and earlier: the per-function record of compiles, and train programs compiled
ahead on a background thread that the stage then runs (8 fake devices, tiny models)."""

import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from w2sjax import parallel, train
from w2sjax.models import embed
from w2sjax.runner import compile_stats, pending, precompile


class Head(nnx.Module):  # a shape no other test compiles, so the counts below are this file's own
    def __init__(self, d, c, *, rngs):
        self.head = nnx.Linear(d, c, rngs=rngs)

    def __call__(self, x):
        return self.head(x)


def _data(n=96, d=13, c=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x, np.eye(c, dtype=np.float32)[rng.integers(0, c, size=n)]


def test_compiles_are_recorded_by_function_and_shapes():
    start = compile_stats.install()

    def scaled_total(x, ids):
        return (x * 3).sum() + ids.sum()

    f = jax.jit(scaled_total)
    ids = jnp.zeros((2, 7), jnp.int32)
    for width in (5, 6, 6):  # the third call reuses the second's program
        f(jnp.zeros((3, 4, width)), ids)
    stats = compile_stats.since(start)
    mine = [g for g in stats["by_function"] if g["name"] == "scaled_total"]
    assert mine == [{"name": "scaled_total", "programs": 2, "compiled": 2, "compile_s": mine[0]["compile_s"],
                     "shapes": 2}]
    shapes = [p["shapes"] for p in compile_stats.programs(start) if p["name"] == "scaled_total"]
    assert shapes == ["2 args 0.0 MB float32[3,4,5] int32[2,7]", "2 args 0.0 MB float32[3,4,6] int32[2,7]"]
    assert stats["programs"] == sum(g["programs"] for g in stats["by_function"])
    assert "scaled_total 2x" in compile_stats.describe(stats, top=len(stats["by_function"]), min_s=0)
    assert any(line.split()[:4] == ["scaled_total", "2", "2", "2"] for line in compile_stats.table(stats).splitlines())


def test_train_program_compiled_ahead_on_a_thread_is_the_one_fit_runs():
    x, onehot = _data()
    mesh = parallel.make_mesh()
    cfg = train.TrainConfig(epochs=2, batch_size=32, lr=1e-2)
    start = compile_stats.install()
    future = precompile.start(lambda: Head(13, 3, rngs=nnx.Rngs(0)), train.ArrayData(x[:1], onehot[:1]), len(x),
                              name="head13", cfg=cfg, loss="xent", mesh=mesh, seed=0, trainable="all")
    compiled = future.result()
    assert compiled.cost_analysis() is not None  # a real executable
    fitted = train.fit(Head(13, 3, rngs=nnx.Rngs(0)), train.ArrayData(x, onehot), cfg=cfg, loss="xent", mesh=mesh,
                       seed=0, progress=False)
    loops = [p for p in compile_stats.programs(start) if p["name"] == "train_loop"]
    assert len(loops) == 1  # fit found the program compiled ahead, on the background thread
    assert compile_stats.since(start)["ahead_s"] > 0
    # ... and it trains as a program compiled in place does (a wrapper object gets a program of its own)
    alone = train.fit(Head(13, 3, rngs=nnx.Rngs(0)), train.ArrayData(x, onehot), cfg=cfg, loss="xent", mesh=mesh,
                      seed=0, progress=False, step_wrapper=lambda step: step)
    np.testing.assert_array_equal(fitted.state.params["head"]["kernel"], alone.state.params["head"]["kernel"])
    # asked again for the same program: nothing to do
    assert precompile.start(lambda: Head(13, 3, rngs=nnx.Rngs(0)), train.ArrayData(x[:1], onehot[:1]), len(x),
                            name="head13", cfg=cfg, loss="xent", mesh=mesh, seed=0, trainable="all") is None


def test_an_error_on_the_compile_thread_is_raised_to_the_stage():
    x, onehot = _data(d=11)

    def broken():
        raise RuntimeError("no such model")

    future = precompile.start(broken, train.ArrayData(x[:1], onehot[:1]), len(x), name="broken", cfg=train.TrainConfig(),
                              loss="xent", mesh=parallel.make_mesh(), seed=0, trainable="all")
    with pytest.raises(RuntimeError, match="no such model"):
        future.result()


def test_feature_batch_shapes_do_not_depend_on_the_texts():
    """Any texts, any count: each bucket length uses only its own four row counts."""
    ndev = embed._local_devices_for_batch()
    rng = np.random.default_rng(1)
    seen = set()
    for n in (1, 7, 300, 2500):
        lengths = rng.integers(1, 129, size=n)
        for rows, length, per in embed._plan(lengths, embed.bucket_lengths(128), tokens_per_batch=8192):
            assert len(rows) <= per and lengths[rows].max() <= length
            seen.add((length, per))
    for length in embed.bucket_lengths(128):
        allowed = embed.batch_rows(length, 8192, ndev)
        assert len(allowed) <= 4 and allowed[-1] == 8192 // length - (8192 // length) % ndev
        assert {per for ln, per in seen if ln == length} <= set(allowed)


class TinyTokens(nnx.Module):  # token inputs, as a finetuned text model takes them
    def __init__(self, *, rngs):
        self.embed = nnx.Embed(50, 8, rngs=rngs)
        self.head = nnx.Linear(8, 2, rngs=rngs)

    def __call__(self, inputs):
        mask = inputs["attention_mask"][..., None].astype(jnp.float32)
        return self.head((self.embed(inputs["input_ids"]) * mask).sum(1) / jnp.maximum(mask.sum(1), 1.0))


def _token_data(rng, n=200, max_len=32):
    """``n`` random token rows of random lengths up to ``max_len`` with binary labels: ``(n, inputs, data)``."""
    mask = (np.arange(max_len)[None] < rng.integers(1, max_len + 1, n)[:, None]).astype(np.int32)
    inputs = {"input_ids": (rng.integers(1, 50, (n, max_len)) * mask).astype(np.int32), "attention_mask": mask}
    return n, inputs, train.ArrayData(inputs, np.eye(2, dtype=np.float32)[rng.integers(0, 2, n)])


@pytest.mark.parametrize("cost, programs", [(0.0, 2), (20.0, 1)])
def test_finetune_programs_compiled_ahead_are_the_ones_the_stage_runs(cost, programs):
    """Every compiled length's train program (each length bucket's, with ``cost`` 0) and every
    predict program, compiled side by side before the stage trains: training and predicting
    afterwards compile nothing more."""
    jax.clear_caches()  # each case compiles its own programs (a case before may have compiled some)
    precompile.forget()
    n, inputs, data = _token_data(np.random.default_rng(3))
    cfg, mesh = train.TrainConfig(epochs=2, batch_size=8, lr=1e-2, compile_cost_steps=cost), parallel.make_mesh()
    start = compile_stats.install()
    futures = precompile.start_finetune(TinyTokens(rngs=nnx.Rngs(0)), data, [inputs], cfg=cfg, loss="xent", mesh=mesh,
                                       seed=0, trainable="all")
    for future in futures:
        future.result()
    names = lambda: sorted(p["name"] for p in compile_stats.programs(start) if p["name"] in ("train_loop", "predict_step"))
    ahead = names()
    # 24 steps at 16 and 26 at 32; at cost 20 all 50 run at 32 (20 + 50 full steps against 2 x 20 + 12 + 26),
    # and so do the 4 predict batches (16, 32, 32, 32: at 0.12 x 20 per program, 2.4 + 4 against 4.8 + 3.5)
    assert ahead.count("train_loop") == programs and ahead.count("predict_step") == programs
    assert len(futures) == len(ahead)
    fitted = train.fit(TinyTokens(rngs=nnx.Rngs(0)), data, cfg=cfg, loss="xent", mesh=mesh, seed=0, progress=False)
    train.predict(fitted.predict_step, fitted.state, inputs, mesh=mesh, batch_size=train.predict_rows(cfg),
                  buckets=train.predict_buckets([inputs], cfg, mesh))  # as the stage predicts
    assert names() == ahead  # nothing compiled in place
    assert precompile.start_finetune(TinyTokens(rngs=nnx.Rngs(0)), data, [inputs], cfg=cfg, loss="xent", mesh=mesh,
                                     seed=0, trainable="all") == []  # asked again: nothing to do


def test_a_stage_that_trains_at_once_waits_for_each_program_compiling_ahead_instead_of_compiling_it_again():
    """The stage starts training without waiting for every program started ahead: each call waits
    for its own (JAX would otherwise compile a program still compiling on a thread a second time),
    so every program compiles once; the train programs start in the order the steps first use them."""
    jax.clear_caches()
    precompile.forget()
    n, inputs, data = _token_data(np.random.default_rng(4))
    cfg, mesh = train.TrainConfig(epochs=2, batch_size=8, lr=1e-2), parallel.make_mesh()
    batch_size, total, _ = train._stage_length(n, cfg, mesh, validated=False)
    feed = train.stage_feed(data, cfg, batch_size, total, 0, mesh, train._chunk_size(cfg))
    order = precompile.first_use(feed, total)
    first_segment = next(iter(feed.segments(0, total)))[1]["inputs"]["input_ids"].shape[2]
    assert order[0] == first_segment and sorted(order) == sorted(feed.lengths(0, total)) and len(order) >= 2
    buckets = train.predict_buckets([inputs], cfg, mesh)
    predicted = {n for _, n in train.predict_batches(inputs, batch_size=train.predict_rows(cfg), mesh=mesh,
                                                     buckets=buckets)[2]}
    start = compile_stats.install()
    futures = precompile.start_finetune(TinyTokens(rngs=nnx.Rngs(0)), data, [inputs], cfg=cfg, loss="xent", mesh=mesh,
                                       seed=0, trainable="all")
    fitted = train.fit(TinyTokens(rngs=nnx.Rngs(0)), data, cfg=cfg, loss="xent", mesh=mesh, seed=0, progress=False)
    train.predict(fitted.predict_step, fitted.state, inputs, mesh=mesh, batch_size=train.predict_rows(cfg),
                  buckets=buckets)
    for future in futures:
        future.result()
    names = sorted(p["name"] for p in compile_stats.programs(start) if p["name"] in ("train_loop", "predict_step"))
    assert names.count("train_loop") == len(order) and names.count("predict_step") == len(predicted)
    assert len(futures) == len(order) + len(predicted)  # each compiled once, ahead


def test_wait_blocks_until_the_program_started_ahead_has_compiled_and_raises_its_error():
    precompile.forget()
    release = threading.Event()
    like = lambda rows: {"x": np.zeros((rows, 4), np.float32)}
    precompile._submit(pending.key("predict", "owner", like(3), "mesh"), lambda: release.wait(10))
    waiter = threading.Thread(target=pending.wait, args=("predict", "owner", like(3), "mesh"))
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive()  # still compiling: the call waits
    release.set()
    waiter.join(10)
    assert not waiter.is_alive()
    pending.wait("predict", "owner", like(5), "mesh")  # never started ahead: returns at once
    abstract = {"x": jax.ShapeDtypeStruct((3, 4), jnp.float32)}  # keyed alike, abstract or concrete
    precompile._submit(pending.key("train", "owner", abstract, "mesh"), lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        pending.wait("train", "owner", like(3), "mesh")
    precompile.forget()


def test_programs_compiled_ahead_are_traced_one_at_a_time():
    """Tracing is Python: the background threads take turns at it (`precompile._compile`), so the
    program asked for first reaches XLA first instead of both finishing their traces late."""
    import time

    lock, inside, most = threading.Lock(), [0], [0]

    def f(x):  # runs while JAX traces it
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.05)  # releases the GIL: without the turn-taking the other thread traces meanwhile
        with lock:
            inside[0] -= 1
        return x * 2

    jitted = jax.jit(f)
    futures = [precompile._executor().submit(precompile._compile, jitted, jax.ShapeDtypeStruct((n,), np.float32))
               for n in (3, 4, 5)]
    outs = [future.result() for future in futures]
    assert most[0] == 1
    np.testing.assert_array_equal(np.asarray(outs[0](np.ones(3, np.float32))), [2, 2, 2])
