"""One process of the 2-process localhost test in tests/test_parallel.py.

Started with JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID in
the environment; prints one JSON line of results on stdout.
"""

import json
import sys

from w2sjax import parallel

# Must run before anything touches the JAX backend.
assert parallel.maybe_initialize_distributed()
assert parallel.maybe_initialize_distributed()  # idempotent

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402


def main():
    mesh = parallel.make_mesh()
    n = 8
    x = np.arange(n * 3, dtype=np.float32).reshape(n, 3) / 7.0
    w = np.linspace(-1.0, 1.0, 6, dtype=np.float32).reshape(3, 2)

    rows = parallel.process_slice(n, mesh)
    assert rows.stop - rows.start == parallel.local_batch_size(n)
    batch = parallel.global_batch_array(mesh, {"x": x[rows]})
    gx = batch["x"]
    w_dev = jax.device_put(w, parallel.replicated(mesh))

    @jax.jit
    def step(x, w):
        y = x @ w
        return jnp.sum(x), jnp.mean(x, axis=0), y, jnp.sum(y)

    total, mean, y, ysum = step(gx, w_dev)
    out = {
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
        "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
        "rows": [rows.start, rows.stop],
        "global_shape": list(gx.shape),
        "fully_addressable": bool(gx.is_fully_addressable),
        "sharding_spec": str(gx.sharding.spec),
        "is_main": parallel.is_main_process(),
        "sum": float(parallel.host_gather(total)),
        "mean": parallel.host_gather(mean).tolist(),
        "ysum": float(parallel.host_gather(ysum)),
        "y": parallel.host_gather(y).tolist(),
        "x": parallel.host_gather(gx).tolist(),
    }
    print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
    sys.stdout.flush()
