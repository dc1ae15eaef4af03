"""Any supported Hugging Face model directory or GGUF file: ``load`` and the ``hf:PATH`` specs.

``load(path)`` reads ``config.json``, picks the architecture's module by ``model_type`` and
returns ``(module, tokenizer)``, where ``module(input_ids, attention_mask)`` gives the final
hidden states ``[B, T, D]`` that ``transformers``' ``AutoModel`` calls ``last_hidden_state``
(after the final norm for decoders, the last layer's output for encoders). A path ending in
``.gguf`` (or a directory holding one and no config.json) loads through `w2sjax.models.gguf`.

Padding: decoders number positions by real tokens (``cumsum(mask) - 1``), so left- and
right-padded rows equal the unpadded ones; transformers gives the same when passed those
``position_ids`` (as its ``generate`` does).

``hf:PATH`` as a model name (weak, strong, bootstrap) probes the checkpoint's pooled features
(mean over real tokens for encoders, the last real token for decoders), cached on disk under a
key holding the checkpoint's content hash, or finetunes it with a linear head. ``hf:PATH#L``
probes the output of block ``L`` instead of the last layer.
"""

from __future__ import annotations

import functools
import importlib
import json
import math
from pathlib import Path

import jax.numpy as jnp
from flax import nnx

from w2sjax.models import embed, heads, weights
from w2sjax.models.spec import ModelSpec, text_tokenizer
from w2sjax.models.tokenizer import load_tokenizer
from w2sjax.runner import hashes

__all__ = ["load", "read_config", "family", "FAMILIES", "checkpoint_hash", "HFFeaturizer", "model_spec",
           "UnsupportedArchitecture"]

# config.json "model_type" -> (module under w2sjax.models, pooling of its probe features)
FAMILIES: dict[str, tuple[str, str]] = {
    "bert": ("bert", "mean"),
    "roberta": ("bert", "mean"),
    "mpnet": ("mpnet", "mean"),
    "llama": ("llama", "last"),
    "mistral": ("llama", "last"),
    "qwen2": ("llama", "last"),
    "gemma3_text": ("gemma3", "last"),
    "gemma3": ("gemma3", "last"),
    "gpt2": ("gpt2", "last"),
}


class UnsupportedArchitecture(ValueError):
    """A checkpoint whose architecture no module here implements."""


def read_config(path: str | Path) -> dict:
    """The parsed ``config.json`` of a checkpoint directory."""
    file = Path(path) / "config.json"
    if not file.exists():
        raise FileNotFoundError(f"{file} not found (an hf: directory needs config.json, safetensors "
                                "weights and tokenizer.json)")
    return json.loads(file.read_text())


def family(config: dict) -> tuple[str, str]:
    """``(module name, pooling)`` for a config; `UnsupportedArchitecture` names the supported ones."""
    kind = config.get("model_type")
    if kind not in FAMILIES:
        arch = ", ".join(config.get("architectures") or []) or "no architectures field"
        raise UnsupportedArchitecture(
            f"model_type {kind!r} ({arch}) is not supported; supported: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[kind]


def _is_gguf(path: Path) -> bool:
    return path.suffix == ".gguf" or (path.is_dir() and not (path / "config.json").exists()
                                      and any(path.glob("*.gguf")))


def load(path: str | Path, *, dtype="float32", param_dtype=None, num_layers: int | None = None, mesh=None):
    """``(module, tokenizer)`` of a Hugging Face directory or a GGUF file.

    Args:
      path: a directory with ``config.json``, ``model.safetensors`` (or shards listed in
        ``model.safetensors.index.json``) and ``tokenizer.json``; or a ``.gguf`` file.
      dtype: compute dtype of the matmuls ("float32" or "bfloat16"); norms, softmax and the
        residual stream stay float32.
      param_dtype: storage dtype of the parameters (default: ``dtype``).
      num_layers: keep only the first ``num_layers`` blocks (then a decoder's output is that
        block's, without the final norm, as transformers' ``hidden_states[num_layers]``).
      mesh: load each parameter straight into its sharding on this mesh (split over its
        ``fsdp`` axis; `w2sjax.parallel.param_shardings`), reading tensor by tensor.
    """
    path = Path(path)
    dtype = jnp.dtype(dtype)
    from w2sjax.runner import verify

    # Read for computing: bit rot under a remembered hash must not reach caches keyed by that hash.
    try:
        files = _checkpoint_files(path)
    except (OSError, ValueError):
        files = {}  # missing files: the loader below names them
    verify.check_unchanged({rel: f for rel, f in files.items() if f.is_file()}, owner=f"hf:{path}")
    if _is_gguf(path):
        from w2sjax.models import gguf

        if num_layers is not None:
            raise ValueError("num_layers is not supported for GGUF files")
        return gguf.load(path, dtype=dtype, param_dtype=param_dtype, mesh=mesh)
    config = read_config(path)
    module_name, _ = family(config)
    arch = importlib.import_module(f"w2sjax.models.{module_name}")
    module = arch.load_hf(path, config, dtype=dtype, param_dtype=jnp.dtype(param_dtype or dtype),
                          num_layers=num_layers, mesh=mesh)
    return module, load_tokenizer(path)


def pooling_of(path: str | Path) -> str:
    """"mean" for encoders, "last" for decoders (GGUF files are decoders)."""
    path = Path(path)
    return "last" if _is_gguf(path) else family(read_config(path))[1]


# ---------------------------------------------------------------- content hash


def _checkpoint_files(path: Path) -> dict[str, Path]:
    """The files that determine a checkpoint's outputs (config, tokenizer, weights; for GGUF the
    one file), by relative name."""
    if _is_gguf(path):
        from w2sjax.models import gguf

        files = [gguf.find_gguf(path)]
        root = files[0].parent
    else:
        root = path
        files = [path / "config.json", path / "tokenizer.json", *weights.safetensors_files(path)]
    return {f.relative_to(root).as_posix(): f for f in files}


def checkpoint_hash(path: str | Path) -> str:
    """sha256 over the files that determine a checkpoint's outputs, by relative name and content:
    the cache key of its features, so a moved checkpoint keeps its cache and a changed one never
    meets the old features."""
    # Each file's hash is remembered with its size and times (w2sjax.runner.hashes): hashed once per version.
    return hashes.directory_hash({rel: hashes.file_sha256(f) for rel, f in _checkpoint_files(Path(path)).items()})


# ---------------------------------------------------------------- parameter count


def count_params(path: str | Path) -> int:
    """Parameters stored in a checkpoint (every tensor, a task head or pooler included), read from
    the safetensors headers or the GGUF tensor table without loading any weight."""
    path = Path(path).expanduser().resolve()
    if _is_gguf(path):
        from w2sjax.models import gguf

        file = gguf.find_gguf(path)
    else:
        file = path
    stat = file.stat()
    return _count_params(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=32)
def _count_params(path: str, _mtime_ns: int, _size: int) -> int:
    # keyed by the file's time and size too: a replaced checkpoint is counted again
    if _is_gguf(Path(path)):
        from w2sjax.models import gguf

        return gguf.count_params(gguf.find_gguf(path))
    total = 0
    for file in weights.safetensors_files(path):
        with open(file, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(size))
        total += sum(math.prod(t["shape"]) for name, t in header.items() if name != "__metadata__")
    return total


# ---------------------------------------------------------------- hf:PATH as a model name


def parse_name(name: str) -> tuple[Path, int | None]:
    """``hf:PATH`` or ``hf:PATH#L`` -> (path, layer or None)."""
    body = name[len("hf:"):]
    layer = None
    if "#" in body:
        body, _, tail = body.rpartition("#")
        if not tail.isdigit() or int(tail) < 1:
            raise ValueError(f"{name!r}: expected hf:PATH#L with L a block number >= 1, got {tail!r}")
        layer = int(tail)
    if not body:
        raise ValueError(f"{name!r}: expected hf:PATH, a Hugging Face directory or .gguf file")
    return Path(body).expanduser(), layer


@functools.lru_cache(maxsize=8)
def _load_cached(path: str, dtype_name: str, num_layers: int | None):
    # One copy of the frozen weights per process, however many specs name the checkpoint.
    return load(path, dtype=dtype_name, num_layers=num_layers)


class HFFeaturizer(embed.BucketedFeaturizer):
    """Pooled features of a checkpoint (mean for encoders, last real token for decoders).

    The cache key names the checkpoint by content (``hf-...-w<sha256[:16]>``), not by path.
    """

    def __init__(self, name: str, *, path: Path, layer: int | None = None, **kw):
        super().__init__(name, path=path, **kw)
        self.layer = layer
        self.pooling = pooling_of(path)

    def _key_parts(self) -> list[str]:
        parts = ["hf", self.pooling, f"len{self.max_len}"]
        return parts + ([f"layer{self.layer}"] if self.layer is not None else [])

    def weights_hash(self) -> str:
        """`checkpoint_hash`: only the files that determine the outputs, wherever they are."""
        return checkpoint_hash(self.path)

    def load(self):
        return _load_cached(str(Path(self.path).resolve()), self.dtype, self.layer)

    def _max_positions(self, module) -> int:
        cfg = module.config
        return getattr(cfg, "max_len", None) or cfg.max_position_embeddings


def model_spec(name: str, *, max_len: int = 128, tokens_per_batch: int = 8192, dtype: str = "float32",
               progress: bool = True) -> ModelSpec:
    """``hf:PATH[#L]``: frozen pooled features + linear head, or finetuned whole with a linear
    head on the same pooling (float32 master weights whatever the compute dtype)."""
    path, layer = parse_name(name)
    if not path.exists():
        raise ValueError(f"{name!r}: {path} does not exist")
    try:
        featurizer = HFFeaturizer(name, path=path, layer=layer, max_len=max_len,
                                  tokens_per_batch=tokens_per_batch, dtype=dtype, progress=progress)
    except (FileNotFoundError, json.JSONDecodeError) as exc:
        raise ValueError(f"{name!r}: {exc}") from None

    def finetune(num_classes: int, *, rngs: nnx.Rngs, dtype=jnp.float32, mesh=None):
        # with a mesh, each weight is read straight into its fsdp shard (hf.load)
        module, _ = load(path, dtype=dtype, param_dtype=jnp.float32, num_layers=layer, mesh=mesh)
        return heads.PooledClassifier(module, num_classes, pooling=featurizer.pooling, rngs=rngs)

    try:
        num_params = count_params(path)
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{name!r}: {exc}") from None
    return ModelSpec(name=name, modalities=("text",), num_params=num_params, featurizer=featurizer,
                     head="linear", finetune=finetune, tokenize=text_tokenizer(featurizer))
