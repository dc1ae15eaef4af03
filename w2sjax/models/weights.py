"""Filling an abstractly built NNX module with a checkpoint's tensors.

Every loader here builds its module with ``nnx.eval_shape`` (no random initialisation of millions
of parameters), then asks, for each parameter path, for the matching tensor of the file already
converted to the module's layout. The shape check and the dtype cast live here, once.
"""

from __future__ import annotations

from typing import Any, Callable

import jax.numpy as jnp
import numpy as np
from flax import nnx

Path = tuple  # an NNX parameter path, e.g. ("layers", 0, "query", "kernel")


class TorchNames(dict):
    """Parameter path -> ``(tensor name, transpose?)`` for checkpoints in torch's layout."""

    def norm(self, path: Path, name: str) -> None:
        self[path + ("scale",)] = (name + ".weight", False)
        self[path + ("bias",)] = (name + ".bias", False)

    def linear(self, path: Path, name: str) -> None:
        # torch Linear stores [out, in]; NNX kernels are [in, out].
        self[path + ("kernel",)] = (name + ".weight", True)
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


def fill(abstract: nnx.Module, tensor_for: Callable[[Path], np.ndarray], *, param_dtype) -> nnx.Module:
    """The module ``abstract`` with every parameter taken from ``tensor_for(path)``.

    Raises ``ValueError`` naming the parameter when a tensor's shape differs from the module's.
    """
    graphdef, state = nnx.split(abstract)
    flat: dict[Path, Any] = {}
    for path, var in nnx.to_flat_state(state):
        arr = np.asarray(tensor_for(path))
        if arr.shape != var.shape:
            where = "/".join(str(p) for p in path)
            raise ValueError(f"{where}: checkpoint shape {arr.shape} != model {var.shape}")
        flat[path] = jnp.asarray(arr, dtype=param_dtype)
    nnx.replace_by_pure_dict(state, unflatten(flat))
    return nnx.merge(graphdef, state)


def unflatten(flat: dict[Path, Any]) -> dict:
    """``{("a", 0, "b"): x}`` -> ``{"a": {0: {"b": x}}}``."""
    out: dict = {}
    for path, value in flat.items():
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return out
