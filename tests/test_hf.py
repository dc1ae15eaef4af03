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
