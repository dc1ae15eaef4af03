"""Devices, meshes and shardings: the one module of w2sjax that knows about them.

Everything here works the same way on one CPU, on 8 fake CPU devices, and on
several processes (hosts) that each see only their own devices:

* ``maybe_initialize_distributed`` starts ``jax.distributed`` when the
  environment asks for several processes, and does nothing otherwise.
* ``make_mesh`` builds a ``("data", "fsdp")`` mesh over all global devices.
* ``batch_sharding`` / ``replicated`` / ``param_shardings`` name where arrays
  live on that mesh; ``update_shardings`` where the optimizer's state and
  update live (split over ``data`` when opted in).
* ``local_batch_size`` / ``process_slice`` / ``global_batch_array`` turn the
  examples a process loaded into one global, data-sharded ``jax.Array``.
* ``host_gather`` brings a global array back to numpy on every process, and
  ``is_main_process`` says who writes files.

Importing this module sets no XLA flags and touches no backend.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

__all__ = [
    "AXES",
    "maybe_initialize_distributed",
    "make_mesh",
    "batch_sharding",
    "replicated",
    "param_shardings",
    "update_shardings",
    "local_batch_size",
    "process_slice",
    "global_batch_array",
    "is_main_process",
    "host_gather",
]

AXES = ("data", "fsdp")
# The batch dimension is split over both axes: devices on the fsdp axis hold
# different parameter shards but must still see different examples.
_BATCH_AXES = AXES


# --------------------------------------------------------------------------
# Multi-process start-up
# --------------------------------------------------------------------------


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else None


def maybe_initialize_distributed(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    auto: bool = False,
) -> bool:
    """Starts ``jax.distributed`` if several processes are configured.

    The configuration comes from the arguments, else from the environment
    variables ``JAX_COORDINATOR_ADDRESS`` (``host:port`` of process 0),
    ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``. With ``auto=True`` and no
    explicit configuration, JAX's own cluster detection is used (Cloud TPU
    pods, SLURM, Open MPI, Kubernetes).

    Call it first thing, before any other JAX call (``jax.devices()``
    included), on every process. On CPU the cross-process collectives use
    gloo over TCP.

    Returns:
      True when this is a multi-process run, False for a single process (then
      nothing was done). Calling it again is harmless.
    """
    if jax.distributed.is_initialized():
        return jax.process_count() > 1

    coordinator = coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
    if num_processes is None:
        num_processes = _env_int("JAX_NUM_PROCESSES")
    if process_id is None:
        process_id = _env_int("JAX_PROCESS_ID")

    explicit = num_processes is not None and num_processes > 1
    if not explicit and not auto:
        return False
    if explicit and (coordinator is None or process_id is None):
        raise ValueError(
            f"{num_processes} processes requested but the coordinator address "
            f"({coordinator!r}) or this process id ({process_id!r}) is missing; "
            "set JAX_COORDINATOR_ADDRESS and JAX_PROCESS_ID."
        )

    # Without a CPU collectives backend, cross-process computations on CPU
    # fail at run time. gloo is JAX's default today; pin it unless the user
    # chose another (e.g. mpi) themselves.
    if jax.config.jax_cpu_collectives_implementation not in ("gloo", "mpi", "megascale"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")

    if explicit:
        jax.distributed.initialize(
            coordinator_address=coordinator,
            num_processes=num_processes,
            process_id=process_id,
        )
    else:
        jax.distributed.initialize()
    return jax.process_count() > 1


# --------------------------------------------------------------------------
# Mesh and shardings
# --------------------------------------------------------------------------


def make_mesh(data: int = -1, fsdp: int = 1) -> Mesh:
    """A ``("data", "fsdp")`` mesh over every device of every process.

    One of the two sizes may be -1, meaning "all remaining devices". The axes
    are ``AxisType.Auto``: jitted code needs no sharding annotations inside
    and XLA propagates shardings from the inputs (``jax.make_mesh`` would
    default to ``Explicit``, where e.g. a sort over a sharded batch needs
    explicit resharding).
    """
    n = jax.device_count()
    if data == -1 and fsdp == -1:
        raise ValueError("at most one of data, fsdp may be -1")
    if data == -1:
        if n % fsdp:
            raise ValueError(f"fsdp={fsdp} does not divide {n} devices")
        data = n // fsdp
    elif fsdp == -1:
        if n % data:
            raise ValueError(f"data={data} does not divide {n} devices")
        fsdp = n // data
    if data * fsdp != n:
        raise ValueError(f"mesh data={data} x fsdp={fsdp} != {n} devices")
    return jax.make_mesh((data, fsdp), AXES, axis_types=(AxisType.Auto,) * 2)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over all devices, the rest whole."""
    return NamedSharding(mesh, P(_BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    """A full copy on every device of ``mesh``."""
    return NamedSharding(mesh, P())


def _param_spec(shape: tuple[int, ...], fsdp: int) -> P:
    if fsdp <= 1 or len(shape) < 2:
        return P()
    divisible = [i for i, d in enumerate(shape) if d % fsdp == 0]
    if not divisible:
        return P()
    # Largest dimension; the later one on ties (the output features of a
    # kernel), which keeps embedding tables split along the vocabulary.
    dim = max(divisible, key=lambda i: (shape[i], i))
    spec = [None] * len(shape)
    spec[dim] = "fsdp"
    return P(*spec)


def param_shardings(mesh: Mesh, abstract_params: Any) -> Any:
    """Shardings for a parameter pytree (arrays or ``ShapeDtypeStruct``s).

    With an ``fsdp`` axis larger than 1, each parameter of rank >= 2 is split
    along its largest dimension that the axis size divides; everything else
    (vectors, scalars, indivisible shapes) is replicated. Parameters are never
    split over ``data``. The result has the structure of ``abstract_params``
    (for an ``nnx.State`` the shardings sit inside its Variables), ready for
    ``jax.jit(..., out_shardings=...)`` or ``jax.device_put``.
    """
    fsdp = mesh.shape["fsdp"]

    def one(leaf):
        shape = tuple(getattr(leaf, "shape", ()))
        return NamedSharding(mesh, _param_spec(shape, fsdp))

    return jax.tree.map(one, abstract_params)


# Arrays of at least this many elements are split by `update_shardings`; None splits none (the
# default: on two CPU host devices the split update measured no faster for MPNet-base and 1-2%
# faster for MiniLM-L6, and its train programs took ~0.5 CPU-s longer to compile;
# benchmarks/RESULTS.md, 2026-12-07). 1 << 16 keeps biases and LayerNorm scales whole, where a
# split saves no measurable work and adds a collective per array.
UPDATE_SPLIT_MIN_SIZE: int | None = None


def _update_spec(shape: tuple[int, ...], fsdp: int, data: int) -> P:
    spec = _param_spec(shape, fsdp)
    minimum = UPDATE_SPLIT_MIN_SIZE
    if minimum is None or spec != P() or data <= 1 or int(np.prod(shape, dtype=np.int64)) < minimum:
        return spec
    # Along the outermost dimension only: each device's part is then one contiguous block. Split
    # along an inner one, the update ran in a transposed layout with transposing copies around
    # it, several times slower than the whole update (MPNet's 30527-row embedding table,
    # 2026-12-07), so such arrays stay whole.
    if not shape or shape[0] % data:
        return spec
    return P("data", *[None] * (len(shape) - 1))


def update_shardings(mesh: Mesh, abstract_tree: Any) -> Any:
    """Shardings for the optimizer state and update of parameters placed by `param_shardings`.

    Opt-in (``UPDATE_SPLIT_MIN_SIZE``, None by default: nothing split). Each array of at least
    ``UPDATE_SPLIT_MIN_SIZE`` elements that `param_shardings` leaves
    whole and whose first dimension the ``data`` axis divides is split along it (ZeRO
    stage 1): the parameters stay whole for the forward and backward passes, while each device
    keeps and updates only its part of AdamW's moments, from its slice of the gradients (XLA:CPU
    all-reduces them and slices; it makes no reduce-scatter), and the updated parts are all-gathered. Every device then does 1/data of the
    update's element-wise work and holds 1/data of the moments. Everything else keeps its
    `param_shardings` placement. Works on any pytree of arrays or ``ShapeDtypeStruct``s (the
    optimizer state, a parameter or gradient tree).
    """
    fsdp, data = mesh.shape["fsdp"], mesh.shape["data"]

    def one(leaf):
        shape = tuple(getattr(leaf, "shape", ()))
        return NamedSharding(mesh, _update_spec(shape, fsdp, data))

    return jax.tree.map(one, abstract_tree)


# --------------------------------------------------------------------------
# Per-process data
# --------------------------------------------------------------------------


def local_batch_size(global_batch: int) -> int:
    """How many examples of a global batch this process loads."""
    count = jax.process_count()
    if global_batch % count:
        raise ValueError(
            f"global batch {global_batch} is not divisible by {count} processes"
        )
    return global_batch // count


def process_slice(n_global: int, mesh: Mesh | None = None) -> slice:
    """The rows of a length-``n_global`` batch that this process supplies.

    The answer follows where ``mesh`` (default: ``make_mesh()``) puts this
    process's devices along the batch dimension, so feeding
    ``data[process_slice(n)]`` to ``global_batch_array`` rebuilds ``data``
    exactly. For one process it is ``slice(0, n_global)``.
    """
    if jax.process_count() == 1:
        return slice(0, n_global)
    mesh = make_mesh() if mesh is None else mesh
    index_map = batch_sharding(mesh).addressable_devices_indices_map((n_global,))
    bounds = sorted({(idx[0].start or 0, idx[0].stop or n_global) for idx in index_map.values()})
    start, stop = bounds[0][0], bounds[-1][1]
    if sum(b - a for a, b in bounds) != stop - start:
        raise ValueError(
            "this process's devices are not contiguous along the batch axis of "
            f"the mesh {dict(mesh.shape)}; build the mesh with make_mesh()"
        )
    return slice(start, stop)


def global_batch_array(mesh: Mesh, local_pytree: Any) -> Any:
    """Assembles per-process batches into global arrays sharded on the batch.

    Every leaf of ``local_pytree`` holds this process's rows (e.g.
    ``local_batch_size(global_batch)`` of them, as picked by
    ``process_slice``). The returned leaves are ``jax.Array``s whose leading
    dimension is the concatenation over processes, split across all devices
    of ``mesh``. For a single process this is a plain sharded ``device_put``.
    """
    sharding = batch_sharding(mesh)
    n_shards = mesh.size

    def one(local):
        local = np.asarray(local)
        if local.ndim == 0:
            raise ValueError("batch leaves need a leading batch dimension")
        global_rows = local.shape[0] * jax.process_count()
        if global_rows % n_shards:
            raise ValueError(
                f"global batch of {global_rows} rows does not split over "
                f"{n_shards} devices"
            )
        return jax.make_array_from_process_local_data(
            sharding, local, (global_rows,) + local.shape[1:]
        )

    return jax.tree.map(one, local_pytree)


# --------------------------------------------------------------------------
# Results back on the host
# --------------------------------------------------------------------------


def is_main_process() -> bool:
    """True on process 0, the only one that should write logs and results."""
    return jax.process_index() == 0


def host_gather(x: Any) -> Any:
    """A full numpy copy of a global array (or pytree of them) on every process.

    A collective when ``x`` spans several processes: call it on all of them.
    """

    def one(leaf):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
        return np.asarray(jax.device_get(leaf))

    return jax.tree.map(one, x)
