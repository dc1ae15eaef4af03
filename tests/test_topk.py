"""``train.trainable="top:K"``: the last K blocks on the frozen bottom's output, recomputed every
step or cached on disk once per example (`w2sjax.models.topk`, `w2sjax.models.bottoms`)."""

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from w2sjax import experiment, losses, parallel, train
from w2sjax.config import Config, ConfigError, DataConfig, StudentTrainConfig, TrainConfig
from w2sjax.models import bottoms, features
from w2sjax.models import heads, hf, topk

FIXTURES = Path(__file__).parent / "fixtures" / "hf"
# one checkpoint per family: post-norm encoders, MPNet's relative bias, Gemma 3's local/global
# rotary layers and final norm (llama is trained below); the other decoders in the slow run
SLOW = pytest.mark.slow
FAMILIES = ["bert", "mpnet", "gemma3_sliding", pytest.param("llama_gqa_tied", marks=SLOW),
            pytest.param("mistral_window", marks=SLOW), pytest.param("gpt2", marks=SLOW)]


def _clf(case, seed=0):
    module, tok = hf.load(FIXTURES / case)
    clf = heads.PooledClassifier(module, 2, pooling=hf.pooling_of(FIXTURES / case), rngs=nnx.Rngs(seed))
    # decoders' heads start at zero; a random one lets gradients and logits reach the blocks
    clf.head.kernel[...] = jax.random.normal(jax.random.key(seed), clf.head.kernel.shape) * 0.1
    return clf, tok


def _batch(tok, n=8, max_len=12):
    rng = np.random.default_rng(0)
    words = ["great", "coffee", "dog", "food", "terrible", "box", "again", "never"]
    texts = [" ".join(rng.choice(words, size=rng.integers(1, 7))) for _ in range(n)]
    ids, mask = tok.encode(texts, max_len)
    labels = np.eye(2, dtype=np.float32)[[int("great" in t) for t in texts]]
    return {"input_ids": ids, "attention_mask": mask}, labels


def _loss_and_grads(module, trainable, inputs, labels):
    """xent and its gradients w.r.t. the parameters ``trainable`` selects, as train.fit sees them."""
    model, state = train.init_state(module, trainable)

    def objective(params):
        logits = model.bind(params, state.frozen)({k: jnp.asarray(v) for k, v in inputs.items()})
        return losses.xent(logits, jnp.asarray(labels))

    loss, grads = jax.jit(jax.value_and_grad(objective))(state.params)
    flat = {tuple(map(str, p)): np.asarray(v) for p, v in nnx.to_flat_state(nnx.State(grads))}
    return float(loss), flat, state


def _bottom_states(clf, inputs, blocks):
    graphdef, state = nnx.split(clf.encoder)
    run = jax.jit(lambda s, i, m: nnx.merge(graphdef, s).bottom(i, m, blocks=blocks))
    return np.asarray(run(state, jnp.asarray(inputs["input_ids"]), jnp.asarray(inputs["attention_mask"])))


def _renumbered(path, shift):
    """A recompute-path parameter path with its block index as the cut model numbers it."""
    if path[:2] == ("encoder", "layers"):
        return path[:2] + (str(int(path[2]) - shift),) + path[3:]
    return path


@pytest.mark.parametrize("case", FAMILIES)
def test_cached_top_k_gives_the_recomputed_loss_and_gradients(case):
    """top:1 on the frozen bottom's stored output (float32, then bf16) against the whole model
    with the bottom frozen: the same loss and gradients, for the same parameters."""
    full, tok = _clf(case)
    inputs, labels = _batch(tok)
    n_blocks = len(full.encoder.layers)
    frozen = n_blocks - 1
    hidden = _bottom_states(full, inputs, frozen)
    loss, grads, state = _loss_and_grads(full, "top:1", inputs, labels)

    # Only the last block, the final norm (decoders) and the head train; AdamW holds two moments of each.
    norm = full.encoder.final_norm_name
    want = {p for p, _ in nnx.to_flat_state(nnx.state(full, nnx.Param))
            if p[0] == "head" or p[:3] == ("encoder", "layers", n_blocks - 1) or (norm and p[:2] == ("encoder", norm))}
    assert set(grads) == {tuple(map(str, p)) for p in want}
    n_trainable = sum(np.size(v[...]) for p, v in nnx.to_flat_state(nnx.state(full, nnx.Param)) if p in want)
    n_opt = sum(x.size for x in jax.tree.leaves(state.opt_state) if getattr(x, "ndim", 0) > 0)
    assert n_opt == 2 * n_trainable

    cut, _ = _clf(case)
    assert topk.cut_bottom(cut, 1) == frozen
    assert len(cut.encoder.layers) == 1 and all(getattr(cut.encoder, n) is None for n in cut.encoder.bottom_parts)
    # the stored bf16 states enter the top blocks as float32 (`Stack.top`): one compiled program for both
    for stored, tol in ((hidden, 1e-5), (hidden.astype(jnp.bfloat16).astype(np.float32), 3e-2)):
        got_loss, got_grads, _ = _loss_and_grads(cut, "top:1", {"hidden": stored, "attention_mask": inputs["attention_mask"]},
                                                 labels)
        assert abs(got_loss - loss) <= tol * max(1.0, abs(loss))
        assert set(got_grads) == {_renumbered(p, frozen) for p in grads}
        for p, g in grads.items():
            scale = max(1.0, float(np.abs(g).max()))
            np.testing.assert_allclose(got_grads[_renumbered(p, frozen)], g, atol=tol * scale, err_msg="/".join(p))


def test_fit_on_cached_states_trains_like_the_recomputing_student():
    """train.fit, length buckets on: the cached student's trajectory equals the recomputing one's
    (float32 states), and its parameters and optimizer state hold the top block and head only."""
    full, tok = _clf("llama_gqa_tied")
    inputs, labels = _batch(tok, n=32, max_len=16)
    cfg = StudentTrainConfig(epochs=3, batch_size=16, lr=1e-2, log_every=2, trainable="top:1", length_buckets=True)
    mesh = parallel.make_mesh()
    a = train.fit(full, train.ArrayData(inputs, labels), cfg=cfg, loss="xent", mesh=mesh, seed=0, progress=False)
    want = train.predict(a.predict_step, a.state, inputs, mesh=mesh, batch_size=16)

    cut, _ = _clf("llama_gqa_tied")
    hidden = _bottom_states(cut, inputs, len(cut.encoder.layers) - 1)
    topk.cut_bottom(cut, 1)
    parts = [h[: int(m.sum())] for h, m in zip(hidden, inputs["attention_mask"])]
    rows = bottoms.Rows(parts, 16, hidden.shape[-1])
    rows.dtype = np.dtype(np.float32)  # float32 states: the two paths then differ only by summation order
    cached = {"hidden": rows, "attention_mask": inputs["attention_mask"]}
    b = train.fit(cut, train.ArrayData(cached, labels), cfg=cfg, loss="xent", mesh=mesh, seed=0, progress=False)
    got = train.predict(b.predict_step, b.state, cached, mesh=mesh, batch_size=16)
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert np.abs(want - 0.5).max() > 0.05  # it learned something
    layer_paths = {p[2] for p, _ in nnx.to_flat_state(nnx.State(b.state.params)) if p[:2] == ("encoder", "layers")}
    assert layer_paths == {0}


@pytest.mark.parametrize("value", ["top:0", "top:-1", "top:x", "top:", "top:02", "top 2"])
def test_bad_top_k_is_one_line_naming_the_field(value):
    with pytest.raises(ConfigError, match=r"^train\.trainable: expected 'all', 'head', 'lora' or 'top:K'"):
        StudentTrainConfig(trainable=value)
    assert StudentTrainConfig(trainable="top:3").trainable == "top:3"


def test_k_at_or_above_the_model_depth_is_rejected():
    clf, _ = _clf("bert")  # 3 blocks
    for k in (3, 4):
        with pytest.raises(topk.TopKError, match=f"top:{k} needs K below the model's 3 blocks"):
            topk.cut_bottom(clf, k)
    assert topk.check(clf, 2) == 1


def test_cli_rejects_k_at_or_above_the_depth_in_one_line(tmp_path):
    from test_experiment import run_cli

    proc = run_cli(["run", "--out", str(tmp_path / "out"), "--no-progress", "--set", "weak_models=tfidf",
                    "--set", f"strong_models=hf:{FIXTURES / 'bert'}", "--set", "strong_mode=finetune",
                    "--set", "train.trainable=top:3", "--set", "data.n_train=64", "--set", "data.n_test=16",
                    "--set", "losses=xent", "--set", "weak_train.epochs=1"], check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if not line.startswith("w2sjax: warning:")]
    assert errors == ["w2sjax: error: train.trainable: hf:" + str(FIXTURES / "bert") + ": top:3 needs K below the "
                      "model's 3 blocks (at least one block stays frozen; 'all' trains every one)"]


def _stored_ids(paths) -> list[bytes]:
    out = []
    for p in paths:
        with np.load(p) as z:
            out += z["ids"].tolist()
    return out


def test_a_sweep_runs_the_bottom_once_per_example(tmp_path, monkeypatch):
    """2 losses x 2 seeds of a top:1 student: each example's bottom is computed and written once;
    a later run with another loss computes nothing; K and the cache mode are in the fingerprint."""
    root = tmp_path / "bottoms"
    monkeypatch.setenv("W2SJAX_BOTTOM_CACHE", str(root))  # this test's cache alone
    name = f"hf:{FIXTURES / 'bert'}"
    config = Config(
        name="topk", data=DataConfig(task="fine_foods", n_train=120, n_val=24, n_test=32, max_len=32),
        weak_models=("tfidf",), strong_models=(name,), strong_mode="finetune", losses=("xent", "logconf"),
        seeds=(0, 1), weak_train=TrainConfig(epochs=1, batch_size=32),
        train=StudentTrainConfig(epochs=1, batch_size=16, lr=1e-3, trainable="top:1", early_stopping=False),
    )
    runs = experiment.run(config, tmp_path / "run", progress=False)["runs"]
    assert len(runs) == 4
    written = sorted(root.glob("top1-hf-mean-len32-v1-w*/fine_foods/chunk-*.npz"))
    ids = _stored_ids(written)
    assert written and len(ids) == len(set(ids))  # no example's bottom was computed twice
    task = experiment._load_task(config)
    texts = set()
    for seed in config.seeds:  # what the students read: the student half, the validation slice, the test split
        s = experiment.SeedRun.splits_of(config, task, seed)
        for split in (s.student_half, s.val, s.test):
            texts |= set(features.example_ids({"text": split["text"]}).tolist())
    assert set(ids) == texts

    again = dataclasses.replace(config, losses=("product",), seeds=(1,))
    experiment.run(again, tmp_path / "run", progress=False)
    assert sorted(root.glob("*/*/chunk-*.npz")) == written  # nothing new computed

    def options(**train_fields):
        cfg = dataclasses.replace(config, train=dataclasses.replace(config.train, **train_fields))
        return experiment.Inputs(task, cfg, False).options(name)

    variants = [options(), options(trainable="top:2"), options(cache_bottom=False), options(trainable="all")]
    assert variants[0]["trainable"] == "top:1" and variants[0]["bottom"] == "cached-bf16"
    assert len({json.dumps(v, sort_keys=True) for v in variants}) == 4  # K and the cache mode are covered


def test_chunks_round_trip_bf16_rows_and_drop_a_damaged_file(tmp_path):
    store = bottoms._Chunks(tmp_path)
    rng = np.random.default_rng(0)
    rows = [rng.normal(size=(n, 4)).astype(jnp.bfloat16) for n in (3, 1, 5)]
    ids = [bytes([i + 1]) * 16 for i in range(3)]
    first = store.add(ids[:2], rows[:2])
    second = store.add(ids[2:], rows[2:])
    known = store.load()
    assert sorted(known) == sorted(ids)
    for i, r in zip(ids, rows):
        np.testing.assert_array_equal(known[i].astype(np.float32), r.astype(np.float32))
    second.write_bytes(second.read_bytes()[:40])  # a torn file
    assert sorted(store.load()) == sorted(ids[:2]) and not second.exists() and first.exists()
    batch = bottoms.Rows([known[i] for i in ids[:2]], 6, 4)[[1, 0]]
    assert batch.shape == (2, 6, 4) and batch.dtype == jnp.bfloat16
    assert not batch[0, 1:].astype(np.float32).any()  # zero padding after the real token
