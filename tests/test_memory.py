"""A process that moves from one model to the next lets go of the first one's weights and programs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from w2sjax import assets, train
from w2sjax.runner import memory
from w2sjax.models import bert


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.setattr(memory, "_held", set())


def test_moving_to_other_models_releases_weights_and_programs(fresh):
    path = str(assets.fetch("minilm-l6-v2"))
    bert._load_cached(path, 1, "float32")  # a sweep's shared copy of one backbone
    square = jax.jit(lambda x: x * x)
    square(jnp.ones(3))
    train._COMPILED[("probe", 1)] = object()
    assert bert._load_cached.cache_info().currsize >= 1 and square._cache_size() == 1

    assert memory.moving_to({"minilm-l6", "glove-bow"}) is False  # the first run holds nothing yet
    assert memory.moving_to({"minilm-l6"}) is False  # the small glove-bow supervisor is not worth a release
    assert memory.moving_to({"mpnet-base", "glove-bow"}) is True  # MiniLM is not needed any more
    assert bert._load_cached.cache_info().currsize == 0
    assert square._cache_size() == 0 and not train._COMPILED
    np.testing.assert_array_equal(square(jnp.ones(3)), np.ones(3))  # compiles again when asked


def test_runs_of_the_same_models_keep_their_caches(fresh):
    path = str(assets.fetch("minilm-l6-v2"))
    assert memory.moving_to({"minilm-l6", "glove-bow"}) is False
    bert._load_cached(path, 1, "float32")
    assert memory.moving_to({"glove-bow", "minilm-l6"}) is False
    assert memory.moving_to({"glove-bow", "minilm-l6", "mpnet-base"}) is False  # one more model: nothing to drop
    assert bert._load_cached.cache_info().currsize >= 1


def test_resident_memory_is_read_from_the_kernel():
    rss, peak = memory.rss_bytes(), memory.peak_rss_bytes()
    assert 10 * 2**20 < rss <= peak
