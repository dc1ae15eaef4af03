"""A GGUF file is parsed once per process: every load after the first shares the parsed metadata
and the tokenizer, builds a module of its own, and a file replaced in place is read again."""

import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

from w2sjax import assets
from w2sjax.models import gguf
from w2sjax.runner import memory


@pytest.fixture()
def smollm2_copy(tmp_path):
    """The SmolLM2-135M GGUF copied to a folder of its own (its parse not cached by other tests)."""
    src = gguf.find_gguf(assets.fetch("smollm2-135m"))
    dst = tmp_path / "smollm2" / src.name
    dst.parent.mkdir()
    shutil.copyfile(src, dst)
    yield dst
    gguf._open_cached.cache_clear()


def test_loads_share_the_parse_and_tokenizer_but_not_the_module(smollm2_copy):
    first, tok1 = gguf.load(smollm2_copy, dtype=jnp.float32)
    second, tok2 = gguf.load(smollm2_copy.parent, dtype=jnp.float32)  # the directory names the same file
    assert gguf.open_gguf(smollm2_copy) is gguf.open_gguf(smollm2_copy.parent)
    assert tok2 is tok1
    # Two modules with equal weights, each its own arrays: training one leaves the other alone.
    a, b = first.embed.embedding[...], second.embed.embedding[...]
    assert a is not b
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    first.embed.embedding[...] = a + 1.0
    np.testing.assert_array_equal(np.asarray(second.embed.embedding[...]), np.asarray(b))
    # The cached tokenizer encodes as a freshly built one does.
    fresh = gguf.GGUFTokenizer(gguf.GGUFFile(smollm2_copy))
    texts = ["Weak supervisors, strong students.", "1234 tokens"]
    assert [t.tolist() for t in tok1.token_ids(texts, 16)] == [t.tolist() for t in fresh.token_ids(texts, 16)]


def test_a_file_replaced_in_place_is_parsed_again(smollm2_copy):
    before = gguf.open_gguf(smollm2_copy)
    stat = smollm2_copy.stat()
    os.utime(smollm2_copy, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # as a rewrite would leave it
    assert gguf.open_gguf(smollm2_copy) is not before


def test_moving_to_another_model_drops_the_parsed_files(smollm2_copy):
    gguf.open_gguf(smollm2_copy)
    assert gguf._open_cached.cache_info().currsize == 1
    memory.release()
    assert gguf._open_cached.cache_info().currsize == 0
