"""Meshes, shardings and global batches on 8 fake CPU devices, plus a real
2-process run on localhost with gloo collectives."""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from _multiprocess.launch import result, run_processes
from w2sjax import parallel

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_multiprocess", "parallel_worker.py")


def test_fake_devices_present():
    assert jax.device_count() == 8, "tests expect 8 fake CPU devices (tests/conftest.py)"


def test_make_mesh_shapes():
    mesh = parallel.make_mesh()
    assert mesh.axis_names == ("data", "fsdp")
    assert dict(mesh.shape) == {"data": 8, "fsdp": 1}
    assert dict(parallel.make_mesh(fsdp=2).shape) == {"data": 4, "fsdp": 2}
    assert dict(parallel.make_mesh(data=2, fsdp=-1).shape) == {"data": 2, "fsdp": 4}
    with pytest.raises(ValueError):
        parallel.make_mesh(data=3)
    with pytest.raises(ValueError):
        parallel.make_mesh(data=-1, fsdp=-1)


def test_single_process_helpers(monkeypatch):
    for var in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(var, raising=False)
    assert parallel.maybe_initialize_distributed() is False
    assert parallel.maybe_initialize_distributed(num_processes=1) is False
    assert parallel.is_main_process()
    assert parallel.local_batch_size(32) == 32
    assert parallel.process_slice(10) == slice(0, 10)


@pytest.mark.parametrize("fsdp", [1, 2])
def test_global_batch_array_shards_local_data(fsdp):
    mesh = parallel.make_mesh(fsdp=fsdp)
    rng = np.random.default_rng(0)
    local = {"x": rng.normal(size=(16, 3)).astype(np.float32), "y": np.arange(16)}
    batch = parallel.global_batch_array(mesh, local)

    x = batch["x"]
    assert isinstance(x, jax.Array) and x.shape == (16, 3)
    assert x.sharding == parallel.batch_sharding(mesh)
    assert len(x.addressable_shards) == 8
    for shard in x.addressable_shards:
        assert shard.data.shape == (2, 3)  # 16 rows over 8 devices
        np.testing.assert_array_equal(np.asarray(shard.data), local["x"][shard.index])
    np.testing.assert_array_equal(parallel.host_gather(x), local["x"])
    np.testing.assert_array_equal(parallel.host_gather(batch)["y"], local["y"])

    with pytest.raises(ValueError):
        parallel.global_batch_array(mesh, np.zeros((12, 2)))  # 12 rows on 8 devices


def test_jitted_mean_over_sharded_batch():
    mesh = parallel.make_mesh()
    data = np.random.default_rng(1).normal(size=(64, 5)).astype(np.float32)
    x = parallel.global_batch_array(mesh, data)
    w = jax.device_put(np.ones((5, 2), np.float32), parallel.replicated(mesh))

    mean, proj = jax.jit(lambda x, w: (jnp.mean(x, axis=0), jnp.mean(x @ w)))(x, w)
    np.testing.assert_allclose(parallel.host_gather(mean), data.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(proj), (data @ np.ones((5, 2))).mean(), rtol=1e-5, atol=1e-6)


def test_param_shardings_fsdp():
    mesh = parallel.make_mesh(fsdp=2)
    params = {
        "kernel": jax.ShapeDtypeStruct((8, 16), jnp.float32),
        "bias": jax.ShapeDtypeStruct((3,), jnp.float32),
        "odd": jax.ShapeDtypeStruct((3, 5), jnp.float32),  # nothing divisible by 2
        "tall": np.zeros((32, 4), np.float32),
    }
    sh = parallel.param_shardings(mesh, params)
    assert sh["kernel"].spec == P(None, "fsdp")  # the largest divisible dim
    assert sh["bias"].spec == P()
    assert sh["odd"].spec == P()
    assert sh["tall"].spec == P("fsdp", None)

    kernel = jax.device_put(np.arange(128, dtype=np.float32).reshape(8, 16), sh["kernel"])
    assert {s.data.shape for s in kernel.addressable_shards} == {(8, 8)}

    # Without an fsdp axis everything is replicated.
    flat = parallel.param_shardings(parallel.make_mesh(), params)
    assert all(s.spec == P() for s in flat.values())


def test_param_shardings_on_nnx_state():
    from flax import nnx

    model = nnx.Linear(8, 16, rngs=nnx.Rngs(0))
    abstract = nnx.eval_shape(lambda: nnx.state(nnx.Linear(8, 16, rngs=nnx.Rngs(0))))
    sh = parallel.param_shardings(parallel.make_mesh(fsdp=8), abstract)
    state = jax.device_put(nnx.state(model), sh)
    assert state["kernel"][...].sharding.spec == P(None, "fsdp")
    assert state["bias"][...].sharding.spec == P()


def test_update_shardings_split_large_arrays_over_data_along_their_first_dimension(monkeypatch):
    """ZeRO stage 1 (opt-in): large arrays split over ``data`` along their first dimension, contiguous
    parts; small ones, first dimensions the axis does not divide, and fsdp-sharded ones keep their
    placement. By default nothing is split."""
    tiny_tree = {"kernel": jax.ShapeDtypeStruct((64, 1024), jnp.float32)}
    assert parallel.update_shardings(parallel.make_mesh(), tiny_tree)["kernel"].spec == P()
    big = 1 << 16
    monkeypatch.setattr(parallel, "UPDATE_SPLIT_MIN_SIZE", big)
    tree = {
        "kernel": jax.ShapeDtypeStruct((64, big // 64), jnp.float32),
        "vector": jax.ShapeDtypeStruct((big,), jnp.float32),
        "bias": jax.ShapeDtypeStruct((64,), jnp.float32),  # under the size
        "odd_rows": jax.ShapeDtypeStruct((big // 64 + 1, 64), jnp.float32),  # 8 does not divide the rows
        "count": jax.ShapeDtypeStruct((), jnp.int32),
    }
    mesh = parallel.make_mesh()
    sh = parallel.update_shardings(mesh, tree)
    assert sh["kernel"].spec == P("data", None) and sh["vector"].spec == P("data")
    assert sh["bias"].spec == sh["odd_rows"].spec == sh["count"].spec == P()
    kernel = jax.device_put(np.zeros((64, big // 64), np.float32), sh["kernel"])
    assert {s.data.shape for s in kernel.addressable_shards} == {(8, big // 64)}
    # Without a data axis to split over, the parameters' own placement stands.
    fsdp_only = parallel.make_mesh(fsdp=8)
    assert parallel.update_shardings(fsdp_only, tree) == parallel.param_shardings(fsdp_only, tree)
    mixed = parallel.update_shardings(parallel.make_mesh(fsdp=2), tree)
    assert mixed["kernel"].spec == P(None, "fsdp")  # fsdp-sharded as a parameter: unchanged
    assert mixed["vector"].spec == P("data")  # a vector stays whole under fsdp: split over data


def test_two_processes_on_localhost(tmp_path):
    """Two real JAX processes, 2 CPU devices each, gloo collectives."""
    results = [result(out) for out in run_processes([sys.executable, WORKER], tmp_path, timeout=60)]

    n = 8
    x = np.arange(n * 3, dtype=np.float32).reshape(n, 3) / 7.0
    w = np.linspace(-1.0, 1.0, 6, dtype=np.float32).reshape(3, 2)
    for pid, r in enumerate(results):
        assert r["process_index"] == pid
        assert r["process_count"] == 2 and r["device_count"] == 4 and r["local_device_count"] == 2
        assert r["is_main"] == (pid == 0)
        assert r["rows"] == [4 * pid, 4 * pid + 4]
        assert r["global_shape"] == [8, 3] and not r["fully_addressable"]
        np.testing.assert_allclose(r["x"], x)
        np.testing.assert_allclose(r["sum"], x.sum(), rtol=1e-6)
        np.testing.assert_allclose(r["mean"], x.mean(axis=0), rtol=1e-6)
        np.testing.assert_allclose(r["y"], x @ w, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(r["ysum"], (x @ w).sum(), rtol=1e-5, atol=1e-5)
