"""`w2sjax.models.hf.load` against transformers, on tiny random checkpoints of every family.

tests/fixtures/hf/<case>/ holds a model directory made by tests/fixtures/make_hf_reference.py
(transformers + torch, float32, eager attention) with the hidden states transformers gives for
each text run alone, unpadded. Here the JAX ports run the texts as one right-padded batch and
(decoders) one left-padded batch, and must agree at every real token within 2e-4.
"""

import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from w2sjax.models import hf

FIXTURES = Path(__file__).parent / "fixtures" / "hf"
CASES = sorted(p.name for p in FIXTURES.iterdir() if (p / "config.json").exists())
DECODERS = {c for c in CASES if hf.pooling_of(FIXTURES / c) == "last"}
TOL = 2e-4


def _ref(case):
    with np.load(FIXTURES / case / "expected.npz") as z:
        ref = dict(z)
    off = ref["offsets"]
    ref["rows"] = [ref["input_ids"][off[i]:off[i + 1]] for i in range(len(off) - 1)]
    return ref


def _padded(rows, t, pad_id, side):
    ids = np.full((len(rows), t), pad_id, np.int32)
    mask = np.zeros((len(rows), t), np.int32)
    spans = []
    for i, r in enumerate(rows):
        sl = slice(0, len(r)) if side == "right" else slice(t - len(r), t)
        ids[i, sl], mask[i, sl] = r, 1
        spans.append(sl)
    return ids, mask, spans


def _hidden(module, ids, mask):
    graphdef, state = nnx.split(module)
    run = jax.jit(lambda s, i, m: nnx.merge(graphdef, s)(i, m))
    return np.asarray(run(state, jnp.asarray(ids), jnp.asarray(mask)))


def _check(module, tok, ref, want, sides, atol):
    """Run the texts padded on each side in one batch; compare real tokens with ``want``."""
    rows, off = ref["rows"], ref["offsets"]
    t = max(len(r) for r in rows) + 3
    batches = [_padded(rows, t, tok.pad_id, side) for side in sides]
    ids = np.concatenate([b[0] for b in batches])
    mask = np.concatenate([b[1] for b in batches])
    hidden = _hidden(module, ids, mask)
    worst = 0.0
    for s, (_, _, spans) in enumerate(batches):
        for i, sl in enumerate(spans):
            got = hidden[s * len(rows) + i, sl]
            exp = want[off[i]:off[i + 1]]
            worst = max(worst, float(np.abs(got - exp).max()))
    assert worst <= atol, f"max |jax - transformers| = {worst:.2e} > {atol}"
    return worst


@pytest.mark.parametrize("case", CASES)
def test_hidden_states_match_transformers(case):
    ref = _ref(case)
    module, tok = hf.load(FIXTURES / case)
    # The tokenizer gives transformers' ids, special tokens included.
    for text, row in zip(ref["texts"], ref["rows"]):
        np.testing.assert_array_equal(tok.token_ids([str(text)], 512)[0], row)
    sides = ("right", "left") if case in DECODERS else ("right",)
    _check(module, tok, ref, ref["hidden"], sides, TOL)


@pytest.mark.parametrize("case", CASES)
def test_middle_layer_matches_transformers_hidden_states(case):
    ref = _ref(case)
    module, tok = hf.load(FIXTURES / case, num_layers=int(ref["layer"]))
    assert module.config.num_hidden_layers == int(ref["layer"])
    _check(module, tok, ref, ref["hidden_layer"], ("right",), TOL)


# bf16 matmuls (float32 sums, norms and residuals) stay within this of float32 transformers on
# these unit-scale random models (hidden std ~1): measured worst cases 0.005 (bert), 0.023
# (gpt2), 0.033 (llama), 0.048 (gemma3); printed with -s.
BF16_TOL = 0.1


@pytest.mark.parametrize("case", ["bert", "llama_gqa_tied", "gemma3_sliding", "gpt2"])
def test_bfloat16_compute_is_close(case):
    ref = _ref(case)
    module, tok = hf.load(FIXTURES / case, dtype="bfloat16", param_dtype="float32")
    worst = _check(module, tok, ref, ref["hidden"], ("right",), BF16_TOL)
    print(f"{case}: bf16 max abs error {worst:.3g}")


def test_unsupported_architecture_names_it_and_the_supported_ones(tmp_path):
    d = tmp_path / "t5"
    shutil.copytree(FIXTURES / "bert", d)
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(model_type="t5", architectures=["T5Model"])
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(hf.UnsupportedArchitecture) as err:
        hf.load(d)
    msg = str(err.value)
    assert "'t5' (T5Model) is not supported" in msg and "gemma3_text" in msg and "qwen2" in msg
    assert "\n" not in msg


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        hf.load(tmp_path)
    shutil.copy(FIXTURES / "gpt2" / "config.json", tmp_path / "config.json")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        hf.load(tmp_path)


def test_sharded_checkpoint_loads_like_a_single_file(tmp_path):
    """Shards listed in model.safetensors.index.json, read tensor by tensor."""
    from safetensors.numpy import load_file, save_file

    src = FIXTURES / "qwen2_bias"
    tensors = load_file(str(src / "model.safetensors"))
    names = sorted(tensors)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    for file, part in shards.items():
        save_file({n: tensors[n] for n in part}, str(tmp_path / file))
    index = {"metadata": {}, "weight_map": {n: f for f, part in shards.items() for n in part}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    for f in ("config.json", "tokenizer.json"):
        shutil.copy(src / f, tmp_path / f)
    one, tok = hf.load(src)
    two, _ = hf.load(tmp_path)
    ids, mask, _ = _padded(_ref("qwen2_bias")["rows"], 30, tok.pad_id, "right")
    np.testing.assert_array_equal(_hidden(two, ids, mask), _hidden(one, ids, mask))


# ---------------------------------------------------------------- hf:PATH as a model name


@pytest.mark.parametrize("case,layer", [("roberta", None), ("mistral_window", None), ("gemma3_sliding", 1)])
def test_probe_features_pool_transformers_states(case, layer):
    """hf:PATH[#L] features: the mean (encoders) or last real token (decoders) of the reference."""
    from w2sjax.models import get_model

    ref = _ref(case)
    name = f"hf:{FIXTURES / case}" + (f"#{layer}" if layer else "")
    spec = get_model(name, max_len=64, tokens_per_batch=256, progress=False)
    got = spec.featurizer({"text": ref["texts"].astype(object)})
    want = ref["hidden_layer" if layer else "hidden"]
    off = ref["offsets"]
    for i in range(len(off) - 1):
        rows = want[off[i]:off[i + 1]]
        expected = rows[-1] if case in DECODERS else rows.mean(0)
        np.testing.assert_allclose(got[i], expected, atol=TOL)
    assert spec.featurizer.key.startswith("hf-") and (f"-layer{layer}-" in spec.featurizer.key) == bool(layer)


def test_feature_key_follows_content_not_path(tmp_path):
    from safetensors.numpy import load_file, save_file

    from w2sjax.models import get_model

    copy = tmp_path / "copy"
    shutil.copytree(FIXTURES / "gpt2", copy)
    key = lambda d: get_model(f"hf:{d}", max_len=32).featurizer.key
    assert key(copy) == key(FIXTURES / "gpt2")  # moved: same features, same cache entry
    tensors = load_file(str(copy / "model.safetensors"))
    tensors["transformer.ln_f.bias"] = tensors["transformer.ln_f.bias"] + 1
    save_file(tensors, str(copy / "model.safetensors"))
    assert key(copy) != key(FIXTURES / "gpt2")  # changed weights: a new entry


def test_bad_hf_names_are_one_line_errors(tmp_path):
    from w2sjax.models import get_model

    with pytest.raises(ValueError, match="does not exist"):
        get_model(f"hf:{tmp_path / 'missing'}")
    with pytest.raises(ValueError, match="config.json"):
        get_model(f"hf:{tmp_path}")
    with pytest.raises(ValueError, match="block number"):
        get_model(f"hf:{FIXTURES / 'bert'}#x")


def _run_cli(args, **kw):
    from test_experiment import run_cli

    return run_cli(args, **kw)


SMALL_RUN = ["--no-progress", "--set", "losses=xent", "--set", "data.n_train=160", "--set", "data.n_test=64",
             "--set", "train.epochs=2", "--set", "weak_train.epochs=2"]


@pytest.mark.slow  # three hf models through the CLI; loaders and chains have their own fast tests
def test_cli_runs_hf_models_as_weak_strong_and_bootstrap(tmp_path):
    gpt2, bert = f"hf:{FIXTURES / 'gpt2'}", f"hf:{FIXTURES / 'bert'}"
    out = tmp_path / "run"
    _run_cli(["run", "--config", str(FIXTURES.parents[1].parent / "experiments" / "smoke.py"), "--out", str(out),
              *SMALL_RUN, "--set", f"weak_models=tfidf,{gpt2}", "--set", f"strong_models={bert}",
              "--set", f"bootstrap=tfidf>{gpt2}>{bert}"])
    runs = json.loads((out / "results.json").read_text())["runs"]
    rows = {(r["weak_model"], r["strong_model"], r.get("chain")) for r in runs}
    assert rows == {("tfidf", bert, None), (gpt2, bert, None), ("tfidf", bert, f"tfidf>{gpt2}>{bert}")}
    assert all(0 <= r["w2s_acc"] <= 1 for r in runs)


@pytest.mark.slow
def test_cli_finetunes_an_hf_decoder(tmp_path):
    out = tmp_path / "run"
    _run_cli(["run", "--config", str(FIXTURES.parents[1].parent / "experiments" / "smoke.py"), "--out", str(out),
              *SMALL_RUN, "--set", "weak_models=tfidf", "--set", f"strong_models=hf:{FIXTURES / 'llama_gqa_tied'}",
              "--set", "strong_mode=finetune"])
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert len(runs) == 1 and 0 <= runs[0]["ceiling_acc"] <= 1


def test_cli_unsupported_architecture_exits_2_in_one_line(tmp_path):
    d = tmp_path / "t5"
    shutil.copytree(FIXTURES / "bert", d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_type"] = "t5"
    (d / "config.json").write_text(json.dumps(cfg))
    proc = _run_cli(["run", "--out", str(tmp_path / "out"), "--set", f"strong_models=hf:{d}"], check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "'t5'" in lines[0] and "supported: bert" in lines[0] and "Traceback" not in proc.stderr


@pytest.mark.parametrize("case", ["llama3_untied_bias", "bert"])
def test_fsdp_load_places_shards_and_matches_unsharded(case):
    """parallel.fsdp=4 on the 8 test devices: each matrix is split 4 ways as it is read, every
    device holds a quarter of it, and the hidden states equal those of an unsharded load."""
    from w2sjax import parallel

    mesh = parallel.make_mesh(data=2, fsdp=4)
    sharded, tok = hf.load(FIXTURES / case, mesh=mesh)
    plain, _ = hf.load(FIXTURES / case)
    split = 0
    for (path, var), (_, ref_var) in zip(nnx.to_flat_state(nnx.state(sharded, nnx.Param)),
                                          nnx.to_flat_state(nnx.state(plain, nnx.Param))):
        arr = var[...]
        np.testing.assert_array_equal(np.asarray(arr), np.asarray(ref_var[...]))
        shards = arr.addressable_shards
        assert len(shards) == 8
        if arr.ndim >= 2 and any(d % 4 == 0 for d in arr.shape):
            split += 1
            for shard in shards:  # a quarter of the matrix, along one axis
                assert shard.data.size * 4 == arr.size, "/".join(map(str, path))
        else:  # vectors stay whole
            assert all(shard.data.size == arr.size for shard in shards)
    assert split >= 6
    ids, mask, _ = _padded(_ref(case)["rows"], 32, tok.pad_id, "right")
    np.testing.assert_allclose(_hidden(sharded, ids, mask), _hidden(plain, ids, mask), atol=1e-5)


def _tiny_task():
    from w2sjax.data.task import Task

    texts = np.array(["great coffee", "stale box", "dog food again", "never again"], dtype=object)
    split = {"text": texts, "label": np.array([1, 0, 1, 0], np.int32)}
    return Task(name="tiny", kind="text", num_classes=2, class_names=("neg", "pos"), train=split, test=split)


def test_prompt_template_reaches_the_tokenizer_and_the_fingerprint():
    from w2sjax.config import Config, ConfigError, DataConfig
    from w2sjax.experiment import Inputs

    name = f"hf:{FIXTURES / 'gpt2'}"
    prompt = "Review: {text}\nIs it positive?"
    cfg = Config(data=DataConfig(max_len=24, prompt=prompt), strong_mode="finetune")
    inputs = Inputs(_tiny_task(), cfg, progress=False)
    got = inputs.get(name).inputs("train", np.arange(4))
    _, tok = hf.load(FIXTURES / "gpt2")
    want_ids, want_mask = tok.encode([prompt.replace("{text}", t) for t in _tiny_task().train["text"]], 24)
    np.testing.assert_array_equal(got["input_ids"], want_ids)
    np.testing.assert_array_equal(got["attention_mask"], want_mask)
    options = inputs.options(name)
    assert options["prompt"] == prompt and options["checkpoint_sha256"] == hf.checkpoint_hash(FIXTURES / "gpt2")
    assert "prompt" not in Inputs(_tiny_task(), cfg, progress=False).options("tfidf", frozen_features=True)
    with pytest.raises(ConfigError, match=r"data.prompt: expected a template containing \{text\}"):
        DataConfig(prompt="no placeholder")


def test_lora_settings_are_part_of_the_fingerprint():
    import dataclasses as dc

    from w2sjax.config import Config, LoraConfig
    from w2sjax.experiment import Inputs

    name = f"hf:{FIXTURES / 'bert'}"
    cfg = Config(strong_mode="finetune")
    cfg = dc.replace(cfg, train=dc.replace(cfg.train, trainable="lora", lora=LoraConfig(rank=4)))
    options = Inputs(_tiny_task(), cfg, progress=False).options(name)
    assert options["trainable"] == "lora" and options["lora"]["rank"] == 4


def test_num_params_counts_the_checkpoint_tensors(tmp_path):
    from safetensors.numpy import load_file

    for case in ("bert", "llama3_untied_bias"):
        tensors = load_file(FIXTURES / case / "model.safetensors")
        assert hf.model_spec(f"hf:{FIXTURES / case}").num_params == sum(t.size for t in tensors.values())
    # a GGUF: its tensor table, skipping metadata of every kind (a string array like a vocabulary)
    import gguf

    path = tmp_path / "tiny.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_string("general.name", "tiny")
    w.add_array("tokenizer.ggml.tokens", ["a", "bc", "def"])
    w.add_array("tokenizer.ggml.scores", [0.5, 1.5, 2.5])
    w.add_uint32("llama.block_count", 1)
    w.add_tensor("token_embd.weight", np.zeros((3, 4), np.float32))
    w.add_tensor("output_norm.weight", np.ones((4,), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    want = sum(int(t.n_elements) for t in gguf.GGUFReader(str(path)).tensors)
    assert want == 16 and hf.count_params(path) == want


def test_runner_loads_a_finetuned_hf_student_into_fsdp_shards(tmp_path):
    """With parallel.fsdp=4 the runner hands its mesh to hf.load: the student's matrices arrive
    split four ways, and train.fit trains them where they are."""
    from w2sjax import experiment, parallel, train
    from w2sjax.config import Config, DataConfig, ParallelConfig, StudentTrainConfig

    name = f"hf:{FIXTURES / 'llama3_untied_bias'}"
    cfg = Config(data=DataConfig(task="fine_foods", max_len=16), strong_models=(name,), strong_mode="finetune",
                 parallel=ParallelConfig(data=2, fsdp=4), train=StudentTrainConfig(epochs=1, batch_size=8))
    mesh = parallel.make_mesh(data=2, fsdp=4)
    task = experiment._load_task(cfg)
    mi = experiment.Inputs(task, cfg, False, mesh).get(name)
    module = mi.build(0)
    kernel = module.encoder.layers[0].mlp.up_proj.kernel[...]
    assert len(kernel.addressable_shards) == 8
    assert all(s.data.size * 4 == kernel.size for s in kernel.addressable_shards)
    rows = np.arange(16)
    labels = np.eye(2, dtype=np.float32)[task.train["label"][rows]]
    fitted = train.fit(module, train.ArrayData(mi.inputs("train", rows), labels), cfg=cfg.train, loss="xent", mesh=mesh,
                       seed=0, progress=False)
    assert fitted.steps == 2
