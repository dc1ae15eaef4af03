"""The SmolLM2-135M (llama architecture, GGUF) port against an independent implementation.

tests/fixtures/smollm2_reference.npz holds next-token logits of Hugging Face
``LlamaForCausalLM`` (PyTorch, fp32, eager attention) loading the same Q4_1
GGUF file; tests/fixtures/make_smollm2_reference.py shows how. The reference
dequantizes with the same ``gguf`` package but un-permutes q/k, builds rotary
embeddings, GQA and the tokenizer with its own code.
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from w2sjax import assets
from w2sjax.models import llama

FIXTURE = Path(__file__).parent / "fixtures" / "smollm2_reference.npz"
PAD_TO = 32


@pytest.fixture(scope="module")
def ref():
    with np.load(FIXTURE) as z:
        return dict(z)


@pytest.fixture(scope="module")
def loaded():
    return llama.load_smollm2(assets.fetch("smollm2-135m"))


def _jit(module, fn):
    """jit ``fn(module, *args)`` with the module's state as an argument, not a constant."""
    graphdef, state = nnx.split(module)
    jitted = jax.jit(lambda s, *a: fn(nnx.merge(graphdef, s), *a))
    return lambda *a: jitted(state, *a)


def _ref_ids(ref):
    off = ref["offsets"]
    return [ref["input_ids"][off[i]:off[i + 1]] for i in range(len(off) - 1)]


def test_config_and_param_count(loaded):
    model, _ = loaded
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads) == (30, 576, 9, 3)
    assert cfg.tie_word_embeddings and model.lm_head is None
    assert cfg.rope_theta == 100000.0 and cfg.head_dim == 64
    n = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert n == llama.count_llama_params(cfg) == 134_515_008


def test_tokenizer_matches_reference(loaded, ref):
    _, tok = loaded
    for prompt, ids in zip(ref["prompts"], _ref_ids(ref)):
        np.testing.assert_array_equal(tok.token_ids([str(prompt)], 512)[0], ids)
        assert tok.decode(ids) == str(prompt)


def test_tokenizer_follows_llama_cpp_smollm_rules(loaded):
    _, tok = loaded
    # llama.cpp's "smollm" pre-tokenizer isolates every digit before BPE.
    ids = tok.token_ids(["in 2024"], 16)[0]
    assert [tok.id_to_token(i) for i in ids] == ["in", "Ġ", "2", "0", "2", "4"]
    # Control tokens stay whole; no BOS is added (add_bos_token is false).
    ids = tok.token_ids(["<|im_start|>user\nhi<|im_end|>"], 16)[0]
    assert ids[0] == 1 and ids[-1] == 2 and len(ids) == 5
    ids, mask = tok.encode(["a b c", "a"], 4)
    assert ids.dtype == np.int32 and mask.tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]
    assert ids[1, 1] == tok.pad_id == 2


def test_unpermute_inverts_llama_cpp_permutation():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3 * 8, 5)).astype(np.float32)  # 3 heads of dim 8
    # llama.cpp convert_hf_to_gguf: per head, rows (i, i + d/2) become (2i, 2i + 1).
    permuted = w.reshape(3, 2, 4, 5).swapaxes(1, 2).reshape(w.shape)
    np.testing.assert_array_equal(llama._unpermute_rows(permuted, 3), w)


def test_last_token_index():
    mask = jnp.array([[1, 1, 1, 0], [1, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 0]])
    assert llama.last_token_index(mask).tolist() == [2, 3, 3, 0]


def test_next_token_logits_match_transformers(loaded, ref):
    """All prompts in one right-padded batch; the reference ran each alone, unpadded."""
    model, tok = loaded
    ids, mask = tok.pad(_ref_ids(ref), PAD_TO)
    fwd = _jit(model, lambda m, i, k: (m(i, k), m.logits(i, k)))
    hidden, logits = (np.asarray(x) for x in fwd(jnp.asarray(ids), jnp.asarray(mask)))
    last = mask.sum(1) - 1
    off = ref["offsets"]
    for p in range(len(off) - 1):
        n = off[p + 1] - off[p]
        lg = logits[p, :n]
        # Top-1 next token at every position of every prompt.
        np.testing.assert_array_equal(lg.argmax(-1), ref["top1"][off[p]:off[p + 1]])
        np.testing.assert_allclose(lg.max(-1), ref["top1_logit"][off[p]:off[p + 1]], atol=1e-3, rtol=0)
        final = logits[p, last[p]]
        np.testing.assert_allclose(final[ref["topk_ids"][p]], ref["topk_logits"][p], atol=1e-3, rtol=0)
        np.testing.assert_allclose(final[ref["probe_ids"]], ref["probe_logits"][p], atol=1e-3, rtol=0)
        np.testing.assert_allclose(hidden[p, last[p]], ref["hidden_last"][p], atol=1e-3, rtol=0)
    # ' Paris' after "The capital of France is".
    assert tok.decode([int(logits[0, last[0]].argmax())]) == " Paris"


def test_classifier_reads_last_real_token_under_padding(loaded, ref):
    """Per-example logits agree for an unpadded batch, right padding and left padding."""
    model, _ = loaded
    clf = llama.DecoderClassifier(model, 3, rngs=nnx.Rngs(0))
    assert not np.asarray(clf.head.kernel[...]).any()  # a decoder's head starts at zero (heads.PooledClassifier)
    clf.head.kernel[...] = jax.random.normal(jax.random.key(0), clf.head.kernel.shape) * 0.1
    rows = _ref_ids(ref)
    n = min(len(r) for r in rows)
    same_len = [rows[0][:n], rows[1][:n]]
    longer = rows[2]
    run = _jit(clf, lambda m, i, k: m({"input_ids": i, "attention_mask": k}))

    unpadded = np.asarray(run(jnp.asarray(np.stack(same_len)), jnp.ones((2, n), jnp.int32)))

    ids = np.full((3, PAD_TO), 2, np.int32)
    right, left = np.zeros_like(ids), np.zeros_like(ids)
    ids_r, ids_l = ids.copy(), ids.copy()
    for r, row in enumerate(same_len + [longer]):
        ids_r[r, :len(row)], right[r, :len(row)] = row, 1
        ids_l[r, PAD_TO - len(row):], left[r, PAD_TO - len(row):] = row, 1
    out_r = np.asarray(run(jnp.asarray(ids_r), jnp.asarray(right)))
    out_l = np.asarray(run(jnp.asarray(ids_l), jnp.asarray(left)))
    assert clf.head.kernel.shape == (576, 3)
    np.testing.assert_allclose(out_r[:2], unpadded, atol=1e-4, rtol=0)
    np.testing.assert_allclose(out_l[:2], unpadded, atol=1e-4, rtol=0)
    np.testing.assert_allclose(out_l[2], out_r[2], atol=1e-4, rtol=0)
