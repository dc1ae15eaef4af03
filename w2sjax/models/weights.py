"""Reading checkpoints into abstractly built NNX modules.

Every loader builds its module with ``nnx.eval_shape`` (no random initialisation of millions of
parameters), then fills each parameter from a ``tensor_for(path)`` function that returns the
checkpoint's tensor already converted to the module's layout. The shape check and the dtype cast
live here, once, and so does reading a Hugging Face safetensors directory (one file, or shards
listed in ``model.safetensors.index.json``), tensor by tensor.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path as FsPath
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

Path = tuple  # an NNX parameter path, e.g. ("layers", 0, "query", "kernel")


class TorchNames(dict):
    """Parameter path -> ``(tensor name, transpose?)`` for checkpoints in torch's layout."""

    def norm(self, path: Path, name: str, *, bias: bool = True) -> None:
        self[path + ("scale",)] = (name + ".weight", False)
        if bias:
            self[path + ("bias",)] = (name + ".bias", False)

    def linear(self, path: Path, name: str, *, bias: bool = True, transpose: bool = True) -> None:
        # torch Linear stores [out, in]; NNX kernels are [in, out]. (GPT-2's Conv1D is [in, out].)
        self[path + ("kernel",)] = (name + ".weight", transpose)
        if bias:
            self[path + ("bias",)] = (name + ".bias", False)

    def tensor(self, path: Path, name: str) -> None:
        self[path] = (name, False)


def torch_reader(names: TorchNames, read: Callable[[str], np.ndarray]) -> Callable[[Path], np.ndarray]:
    """``tensor_for(path)`` over a torch-layout file, given ``read(tensor name) -> array``."""

    def tensor_for(path: Path) -> np.ndarray:
        name, transpose = names[path]
        arr = read(name)
        return arr.T if transpose else arr

    return tensor_for


def fill(abstract: nnx.Module, tensor_for: Callable[[Path], np.ndarray], *, param_dtype,
         mesh=None) -> nnx.Module:
    """The module ``abstract`` with every parameter taken from ``tensor_for(path)``.

    With a ``mesh`` each parameter goes straight to its `parallel.param_shardings` placement
    (split over the ``fsdp`` axis), one tensor at a time: every device receives only its slice,
    no device ever holds a whole sharded matrix, and host memory stays near one tensor above the
    shards. Raises ``ValueError`` naming the parameter when a tensor's shape differs from the
    module's.
    """
    graphdef, state = nnx.split(abstract)
    flat: dict[Path, Any] = {}
    for path, var in nnx.to_flat_state(state):
        arr = np.asarray(tensor_for(path))
        if arr.shape != var.shape:
            where = "/".join(str(p) for p in path)
            raise ValueError(f"{where}: checkpoint shape {arr.shape} != model {var.shape}")
        flat[path] = jnp.asarray(arr, dtype=param_dtype) if mesh is None else _sharded(arr, param_dtype, mesh)
    nnx.replace_by_pure_dict(state, unflatten(flat))
    return nnx.merge(graphdef, state)


def _sharded(arr: np.ndarray, dtype, mesh):
    from w2sjax import parallel

    sharding = parallel.param_shardings(mesh, jax.ShapeDtypeStruct(arr.shape, dtype))
    host = arr.astype(dtype)
    return jax.make_array_from_callback(arr.shape, sharding, lambda index: host[index])


def unflatten(flat: dict[Path, Any]) -> dict:
    """``{("a", 0, "b"): x}`` -> ``{"a": {0: {"b": x}}}``."""
    out: dict = {}
    for path, value in flat.items():
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return out


# ---------------------------------------------------------------- safetensors directories


def safetensors_files(directory: str | FsPath) -> list[FsPath]:
    """The weight files of a checkpoint directory: ``model.safetensors``, or the shards that
    ``model.safetensors.index.json`` lists. Raises FileNotFoundError naming what is missing."""
    directory = FsPath(directory)
    single = directory / "model.safetensors"
    if single.exists():
        return [single]
    index = directory / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [s for s in shards if not (directory / s).exists()]
        if missing:
            raise FileNotFoundError(f"{directory}: shard {missing[0]} listed in {index.name} is missing")
        return [directory / s for s in shards]
    raise FileNotFoundError(f"{single} not found (only safetensors checkpoints load: model.safetensors "
                            "or model.safetensors.index.json)")


class SafetensorsDir:
    """Tensors of a checkpoint directory by name, read one at a time (memory-mapped files).

    ``prefix`` is put in front of every name asked for: Hugging Face saves a model with its
    task head under ``bert.``, ``model.``, ``transformer.`` ...; `find_prefix` picks it.
    """

    def __init__(self, directory: str | FsPath):
        from safetensors import safe_open

        self.directory = FsPath(directory)
        self._stack = contextlib.ExitStack()
        self._where: dict[str, Any] = {}
        for file in safetensors_files(self.directory):
            handle = self._stack.enter_context(safe_open(str(file), framework="np"))
            for name in handle.keys():
                self._where[name] = handle
        self.prefix = ""

    def __enter__(self) -> "SafetensorsDir":
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def keys(self) -> list[str]:
        return list(self._where)

    def has(self, name: str) -> bool:
        return self.prefix + name in self._where

    def has_unprefixed(self, name: str) -> bool:
        return name in self._where

    def find_prefix(self, anchor: str, candidates: Iterable[str] = ()) -> str:
        """Set and return the prefix in front of ``anchor`` (a tensor every such checkpoint has):
        '' or one of ``candidates``, or whatever precedes it. Raises ValueError when absent."""
        for p in ("", *candidates):
            if p + anchor in self._where:
                self.prefix = p
                return p
        hits = sorted(n[: -len(anchor)] for n in self._where if n.endswith(anchor))
        if not hits:
            raise ValueError(f"{self.directory}: no tensor named '*{anchor}'")
        self.prefix = hits[0]
        return self.prefix

    def get(self, name: str, *, prefixed: bool = True) -> np.ndarray:
        """The tensor ``prefix + name`` (just ``name`` when not ``prefixed``), as numpy."""
        full = self.prefix + name if prefixed else name
        if full not in self._where:
            raise KeyError(f"{self.directory}: checkpoint has no tensor {full!r}")
        arr = self._where[full].get_tensor(full)
        # bf16 tensors come back as a numpy void type without ml_dtypes' help: view them.
        if arr.dtype.kind == "V" and arr.dtype.itemsize == 2:
            arr = arr.view(jnp.bfloat16)
        return arr
