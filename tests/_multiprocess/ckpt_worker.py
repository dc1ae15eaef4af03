"""Subprocess side of tests/test_checkpoint.py.

Usage: python ckpt_worker.py MODE CKPT_DIR OUT_NPZ

* ``restore``: restore stage "xfer" onto this process's devices, write the
  values and the restored shardings to OUT_NPZ.
* ``save``: build a state on this process's devices, save it as step 7
  (final) of stage "xfer", write its values to OUT_NPZ.
* ``dist``: one of 2 processes (JAX_* env set): save a data-sharded global
  array and numpy leaves collectively, restore them, report JSON on stdout.
* ``save_big``: save stage "kill" step 1 (small), print SAVING, then save
  step 2 with a large array; the test kills the process during that save.
"""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

from w2sjax import parallel
from w2sjax.runner import checkpoint

# flax and optax are imported where needed: the 2-process mode skips them,
# which saves seconds of start-up on a busy machine.


def flat(tree):
    """{path: numpy value} for every leaf (rng keys as their raw data)."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        out[jax.tree_util.keystr(path)] = np.asarray(leaf)
    return out


def model_state(mesh, seed):
    """NNX parameters (sharded by param_shardings), Adam state, predictions."""
    import optax
    from flax import nnx

    model = nnx.Linear(8, 16, rngs=nnx.Rngs(seed))
    params = nnx.state(model, nnx.Param)
    params = jax.device_put(params, parallel.param_shardings(mesh, params))
    tx = optax.adam(1e-2)
    opt_state = tx.init(params)
    # One real update so mu/nu/count are not trivially zero.
    grads = jax.tree.map(lambda p: jnp.ones_like(p) * 0.5, params)
    _, opt_state = tx.update(grads, opt_state, params)
    preds = np.random.default_rng(seed).random((10, 2)).astype(np.float32)
    return {"params": params, "opt": opt_state, "preds": preds,
            "rng": jax.random.key(seed), "position": 123}


def abstract_state(mesh):
    """What a fresh process knows before restoring: shapes and its own mesh."""
    import optax
    from flax import nnx

    def with_shardings(abstract):
        # The same rule as for parameters: Adam's moments mirror them.
        return jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
            abstract, parallel.param_shardings(mesh, abstract),
        )

    abs_params = nnx.eval_shape(lambda: nnx.state(nnx.Linear(8, 16, rngs=nnx.Rngs(0)), nnx.Param))
    abs_params = with_shardings(abs_params)
    abs_opt = with_shardings(jax.eval_shape(optax.adam(1e-2).init, abs_params))
    return {"params": abs_params, "opt": abs_opt, "preds": np.zeros((10, 2), np.float32),
            "rng": jax.eval_shape(lambda: jax.random.key(0)), "position": 0}


def dist(ckpt_dir):
    mesh = parallel.make_mesh()
    n = 8
    x = np.arange(n * 4, dtype=np.float32).reshape(n, 4)
    gx = parallel.global_batch_array(mesh, x[parallel.process_slice(n, mesh)])
    state = {"x": gx, "labels": np.arange(5), "position": 9}
    for step in (1, 2):
        checkpoint.save(ckpt_dir, "dist", step, state, meta={"step": step}, final=step == 2)
    # Readers are not collective: only process 0 asks.
    if parallel.is_main_process():
        assert checkpoint.latest(ckpt_dir, "dist") == (2, {"step": 2})
        assert checkpoint.is_done(ckpt_dir, "dist")
    target = {"x": jax.ShapeDtypeStruct(gx.shape, gx.dtype, sharding=parallel.batch_sharding(mesh)),
              "labels": np.zeros(5, np.int64), "position": 0}
    restored, meta = checkpoint.restore(ckpt_dir, "dist", target, step=1)
    print("RESULT " + json.dumps({
        "process_index": jax.process_index(),
        "meta": meta,
        "x_equal": bool(np.array_equal(parallel.host_gather(restored["x"]), x)),
        "x_fully_addressable": bool(restored["x"].is_fully_addressable),
        "labels": restored["labels"].tolist(),
        "position": restored["position"],
    }), flush=True)


def main():
    mode, ckpt_dir, out = sys.argv[1:4]
    if mode == "dist":
        assert parallel.maybe_initialize_distributed()
        return dist(ckpt_dir)
    fsdp = 2 if jax.device_count() % 2 == 0 else 1
    mesh = parallel.make_mesh(fsdp=fsdp)
    if mode == "restore":
        state, meta = checkpoint.restore(ckpt_dir, "xfer", abstract_state(mesh))
        values = flat(state)
        kernel = state["params"]["kernel"][...]
        values["__meta__"] = np.array(json.dumps(meta))
        values["__kernel_spec__"] = np.array(str(kernel.sharding.spec))
        values["__kernel_ndev__"] = np.array(len(kernel.sharding.device_set))
        values["__preds_type__"] = np.array(type(state["preds"]).__name__)
        np.savez(out, **values)
    elif mode == "save":
        state = model_state(mesh, seed=1)
        checkpoint.save(ckpt_dir, "xfer", 7, state, meta={"from": "worker"}, final=True)
        np.savez(out, **flat(state))
    elif mode == "save_big":
        small = {"w": np.arange(4.0), "step": 1}
        checkpoint.save(ckpt_dir, "kill", 1, small, meta={"step": 1})
        big = {"w": jnp.ones((64, 1024, 1024), jnp.float32), "step": 2}  # 256 MB
        print("SAVING", flush=True)
        checkpoint.save(ckpt_dir, "kill", 2, big, meta={"step": 2})
        print("SAVED", flush=True)
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
