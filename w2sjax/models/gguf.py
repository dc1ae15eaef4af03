"""GGUF files as another source of the same architectures: metadata, dequantized tensors, the
tokenizer, and `load`, which hands the file to its architecture's module.

GGUF (llama.cpp's format) stores the tokenizer as metadata: the token strings
(already in GPT-2's byte-to-unicode spelling), the merges, token types and
special-token ids. `GGUFTokenizer` rebuilds it with the ``tokenizers``
package, so no ``tokenizer.json`` is needed.

Needs the ``gguf`` package (pure Python + numpy; it dequantizes every block
type llama.cpp writes, the K-quants included).
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from w2sjax.models import embed
from w2sjax.models.tokenizer import pad_ids

__all__ = ["GGUFFile", "GGUFTokenizer", "build_bpe_tokenizer", "build_spm_tokenizer", "count_params", "find_gguf",
           "load", "open_gguf", "ARCHITECTURES"]

# general.architecture -> the module whose ``load_gguf(GGUFFile, dtype=...)`` builds it.
ARCHITECTURES = {
    "llama": "w2sjax.models.llama",
    "gemma3": "w2sjax.models.gemma3",
}

# tokenizer.ggml.token_type values (llama.cpp's llama_token_type).
_CONTROL, _USER_DEFINED = 3, 4

# How llama.cpp splits text before BPE depends on `tokenizer.ggml.pre`. These
# pre-tokenizers (SmolLM's among them) first isolate every digit (\p{N}), then
# apply the GPT-2 regex; "gpt2"/"default" use the GPT-2 regex alone. Others
# (llama3, qwen2, ...) use different regexes and are refused rather than
# silently tokenised differently.
_DIGIT_SPLIT_PRE = {"smollm", "starcoder", "refact", "codeshell", "command-r", "exaone", "minerva-7b"}
_GPT2_PRE = {"gpt2", "default"}


class GGUFFile:
    """Metadata and tensors of one ``.gguf`` file (memory-mapped, read lazily)."""

    def __init__(self, path: str | Path):
        try:
            import gguf
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("reading GGUF files needs the 'gguf' package: pip install gguf") from e
        self.path = Path(path)
        self._gguf = gguf
        self._reader = gguf.GGUFReader(str(self.path))
        self._tensors = {t.name: t for t in self._reader.tensors}
        self._tokenizer: GGUFTokenizer | None = None

    def field(self, key: str, default: Any = None) -> Any:
        """A metadata value (str, number, bool or list), or ``default``."""
        f = self._reader.fields.get(key)
        return default if f is None else f.contents()

    def keys(self) -> list[str]:
        return [k for k in self._reader.fields if not k.startswith("GGUF.")]

    def tensor_names(self) -> list[str]:
        return list(self._tensors)

    def has_tensor(self, name: str) -> bool:
        return name in self._tensors

    def tokenizer(self) -> "GGUFTokenizer":
        """The file's `GGUFTokenizer`, built on first use and kept: building Gemma's (262k tokens,
        its merges derived from the vocabulary) takes seconds."""
        if self._tokenizer is None:
            self._tokenizer = GGUFTokenizer(self)
        return self._tokenizer

    def tensor(self, name: str) -> np.ndarray:
        """The tensor dequantized to float32, in numpy (row-major, torch) order.

        GGUF lists dimensions fastest-first, so a ``[in, out]`` GGUF matrix comes
        back as ``[out, in]``, like a torch ``Linear.weight``.
        """
        t = self._tensors[name]
        # A plain view of the mapped bytes: the dequantizer splits a quantized tensor into many row
        # groups, and as np.memmap views each split cost a subclass hook (about 15% of a Gemma load).
        arr = self._gguf.quants.dequantize(np.asarray(t.data), t.tensor_type)
        return np.asarray(arr, dtype=np.float32)


# Byte sizes of GGUF's fixed-size metadata value types (8 = string, 9 = array).
_VALUE_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def count_params(path: str | Path) -> int:
    """Elements of every tensor of a ``.gguf`` file, read from its tensor table alone.

    `GGUFFile` parses all the metadata into numpy views (tens of seconds for a 262k-token
    vocabulary); this skips over it, reading only lengths, so a model spec can give its size at once.
    """
    import mmap
    import struct

    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        if m[:4] != b"GGUF":
            raise ValueError(f"{path}: not a GGUF file")
        n_tensors, n_kv = struct.unpack_from("<QQ", m, 8)
        pos = 24
        u64 = lambda: struct.unpack_from("<Q", m, pos)[0]

        def skip_value(kind: int) -> int:
            nonlocal pos
            if kind == 8:  # string: u64 length, bytes
                pos += 8 + u64()
            elif kind == 9:  # array: u32 item type, u64 count, items
                item, count = struct.unpack_from("<IQ", m, pos)
                pos += 12
                if item in _VALUE_SIZES:
                    pos += count * _VALUE_SIZES[item]
                else:
                    for _ in range(count):
                        skip_value(item)
            else:
                pos += _VALUE_SIZES[kind]
            return pos

        for _ in range(n_kv):
            pos += 8 + u64()  # the key
            kind = struct.unpack_from("<I", m, pos)[0]
            pos += 4
            skip_value(kind)
        total = 0
        for _ in range(n_tensors):
            pos += 8 + u64()  # the name
            n_dims = struct.unpack_from("<I", m, pos)[0]
            dims = struct.unpack_from(f"<{n_dims}Q", m, pos + 4)
            pos += 4 + 8 * n_dims + 4 + 8  # dims, type, offset
            total += int(np.prod(dims, dtype=np.int64))
        return total


def build_bpe_tokenizer(g: GGUFFile):
    """A ``tokenizers.Tokenizer`` equivalent to the GGUF's byte-level BPE vocabulary."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    kind = g.field("tokenizer.ggml.model")
    if kind != "gpt2":
        raise ValueError(f"{g.path}: tokenizer model {kind!r} is not byte-level BPE ('gpt2')")
    tokens: list[str] = g.field("tokenizer.ggml.tokens")
    types: list[int] = g.field("tokenizer.ggml.token_type") or [1] * len(tokens)
    merges = [tuple(m.split(" ")) for m in g.field("tokenizer.ggml.merges")]
    bpe = models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges)
    tok = Tokenizer(bpe)
    steps = [pre_tokenizers.ByteLevel(add_prefix_space=bool(g.field("tokenizer.ggml.add_space_prefix", False)),
                                      use_regex=True)]
    pre = g.field("tokenizer.ggml.pre", "default")
    if pre in _DIGIT_SPLIT_PRE:
        steps.insert(0, pre_tokenizers.Digits(individual_digits=True))
    elif pre not in _GPT2_PRE:
        raise ValueError(f"{g.path}: pre-tokenizer {pre!r} is not supported "
                         f"(known: {sorted(_DIGIT_SPLIT_PRE | _GPT2_PRE)})")
    tok.pre_tokenizer = pre_tokenizers.Sequence(steps)
    tok.decoder = decoders.ByteLevel()
    # Control tokens (<|im_start|>, ...) must stay whole when they appear in text.
    special = [AddedToken(t, special=True, normalized=False) for t, k in zip(tokens, types) if k == _CONTROL]
    added = [AddedToken(t, special=False, normalized=False) for t, k in zip(tokens, types) if k == _USER_DEFINED]
    if special:
        tok.add_special_tokens(special)
    if added:
        tok.add_tokens(added)
    return tok


_SPACE = "\u2581"  # SentencePiece's visible space


def spm_merges(tokens: Sequence[str]) -> list[tuple[str, str]]:
    """BPE merges implied by a SentencePiece vocabulary that lists none (Gemma's GGUF).

    Every token that splits into two tokens of the vocabulary gives a merge; merges are ranked
    by the merged token's position in the file (earlier first), then by a longer left piece.
    This is the order transformers' GGUF loader uses for Gemma, whose scores do not follow the
    merge order.
    """
    index = {t: i for i, t in enumerate(tokens)}
    ranked = []
    for i, t in enumerate(tokens):
        for cut in range(1, len(t)):
            left, right = t[:cut], t[cut:]
            if left in index and right in index:
                ranked.append((i, -cut, left, right))
    ranked.sort()
    return [(left, right) for _, _, left, right in ranked]


def build_spm_tokenizer(g: GGUFFile):
    """A ``tokenizers.Tokenizer`` for a SentencePiece-BPE GGUF vocabulary (``tokenizer.ggml.model``
    "llama"; Gemma): spaces become "▁", no prefix space, byte fallback for unknown characters."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers

    # Runs of spaces are stored as real spaces; the BPE looks them up as "▁▁...".
    raw = g.field("tokenizer.ggml.tokens")
    tokens = [_SPACE * len(t) if t and not t.strip(" ") else t for t in raw]
    types: list[int] = g.field("tokenizer.ggml.token_type") or [1] * len(tokens)
    unk = g.field("tokenizer.ggml.unknown_token_id")
    vocab = {t: i for i, t in enumerate(tokens)}
    bpe = models.BPE(vocab=vocab, merges=spm_merges(tokens), byte_fallback=True, fuse_unk=True,
                     unk_token=None if unk is None else tokens[int(unk)])
    tok = Tokenizer(bpe)
    tok.normalizer = normalizers.Replace(" ", _SPACE)
    tok.decoder = decoders.Sequence([decoders.Replace(_SPACE, " "), decoders.ByteFallback(), decoders.Fuse()])
    # Control tokens stay whole in text; user-defined ones too, unless respelled above.
    special = [AddedToken(t, special=True, normalized=False) for t, k in zip(raw, types) if k == _CONTROL]
    added = [AddedToken(t, special=False, normalized=False) for t, k in zip(raw, types)
             if k == _USER_DEFINED and t in vocab]
    if special:
        tok.add_special_tokens(special)
    if added:
        tok.add_tokens(added)
    return tok


class GGUFTokenizer:
    """Batch tokenisation for a GGUF decoder (byte-level BPE, or SentencePiece BPE for Gemma):
    the same interface as `tokenizer.HFTokenizer`.

    ``encode(texts, max_len)`` truncates each text to ``max_len`` tokens (keeping
    the beginning) and right-pads with ``pad_id``. A BOS token is prepended only
    when the file asks for it (``tokenizer.ggml.add_bos_token``); SmolLM2 does not.
    """

    def __init__(self, g: GGUFFile):
        kind = g.field("tokenizer.ggml.model")
        self._tok = build_spm_tokenizer(g) if kind == "llama" else build_bpe_tokenizer(g)
        self.vocab_size = len(g.field("tokenizer.ggml.tokens"))
        self.bos_id = g.field("tokenizer.ggml.bos_token_id")
        self.eos_id = g.field("tokenizer.ggml.eos_token_id")
        pad = g.field("tokenizer.ggml.padding_token_id")
        self.pad_id = int(self.eos_id if pad is None else pad)
        self.add_bos = bool(g.field("tokenizer.ggml.add_bos_token", False)) and self.bos_id is not None
        self.chat_template = g.field("tokenizer.chat_template")

    @classmethod
    def from_file(cls, path: str | Path) -> "GGUFTokenizer":
        """The tokenizer of a GGUF file (or a directory holding one), shared through `open_gguf`."""
        return open_gguf(path).tokenizer()

    def token_ids(self, texts: Sequence[str], max_len: int) -> list[np.ndarray]:
        """Token ids of each text, truncated to ``max_len``, unpadded."""
        encs = self._tok.encode_batch([str(t) for t in texts], add_special_tokens=False)
        prefix = [self.bos_id] if self.add_bos else []
        return [np.asarray((prefix + e.ids)[:max_len], dtype=np.int32) for e in encs]

    def pad(self, ids: Sequence[np.ndarray], length: int) -> tuple[np.ndarray, np.ndarray]:
        """Right-pad id arrays to ``length`` -> (input_ids, attention_mask) int32."""
        return pad_ids(ids, length, self.pad_id)

    def encode(self, texts: Sequence[str], max_len: int) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, attention_mask), int32 ``[N, max_len]``, right-padded."""
        return self.pad(self.token_ids(texts, max_len), max_len)

    def decode(self, ids, *, skip_special_tokens: bool = False) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def id_to_token(self, i: int) -> str | None:
        return self._tok.id_to_token(int(i))


def find_gguf(path: str | Path) -> Path:
    """``path`` itself, or the one ``.gguf`` file in the directory ``path``."""
    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob("*.gguf"))
        if len(found) != 1:
            raise FileNotFoundError(f"{path}: expected exactly one .gguf file, found {len(found)}")
        return found[0]
    if not path.exists():
        raise FileNotFoundError(path)
    return path


@functools.lru_cache(maxsize=2)
def _open_cached(path: str, size: int, mtime_ns: int) -> GGUFFile:
    del size, mtime_ns  # part of the key only: a file replaced in place is opened again
    return GGUFFile(path)


def open_gguf(path: str | Path) -> GGUFFile:
    """The parsed `GGUFFile` of ``path`` (a file, or a directory holding one), kept per process.

    Parsing the metadata is most of a load: about 10 s for Gemma-3-270M's 262k-token vocabulary,
    paid again by every finetuned stage of a sweep before this cache (benchmarks/RESULTS.md,
    2026-12-08). Only the parse and the tokenizer are kept; the tensors stay memory-mapped and are
    dequantized afresh by each load. `w2sjax.runner.memory.release` clears it."""
    p = find_gguf(path).resolve()
    st = p.stat()
    return _open_cached(str(p), st.st_size, st.st_mtime_ns)


def load(path: str | Path, *, dtype="float32", param_dtype=None, mesh=None):
    """``(module, tokenizer)`` of a GGUF file (or a directory holding one), whatever its
    architecture: ``module(input_ids, attention_mask) -> hidden [B, T, D]``; with a ``mesh``
    the parameters load straight into their fsdp shardings. The parsed file and its tokenizer
    are shared with earlier loads of the same file (`open_gguf`); the module is new each time."""
    import jax.numpy as jnp

    g = open_gguf(path)
    arch = g.field("general.architecture")
    if arch not in ARCHITECTURES:
        raise ValueError(f"{g.path}: GGUF architecture {arch!r} is not supported; "
                         f"supported: {', '.join(sorted(ARCHITECTURES))}")
    return importlib.import_module(ARCHITECTURES[arch]).load_gguf(
        g, dtype=jnp.dtype(dtype), param_dtype=None if param_dtype is None else jnp.dtype(param_dtype), mesh=mesh)


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, dtype_name: str):
    # One copy of the frozen weights per process, however many specs name the file.
    return load(path, dtype=dtype_name)


class GGUFFeaturizer(embed.BucketedFeaturizer):
    """Final hidden state of the last real token of a GGUF decoder: float32 ``[N, hidden]``.

    In a causal model only that token has read the whole text. Right padding does not change
    it (real tokens never attend to later positions), so the length buckets leave the features
    as they are for the unpadded text. ``asset`` names the file fetched when ``path`` is None.
    """

    pooling = "last"

    def __init__(self, name: str, *, asset: str = "", **kw):
        super().__init__(name, **kw)
        self.asset = asset or self.asset

    def load(self):
        return _load_cached(str(self.checkpoint()), self.dtype)

    def _max_positions(self, module) -> int:
        return module.config.max_position_embeddings

    def finetune(self, num_classes: int, *, rngs, dtype=None, mesh=None):
        """A trainable copy of the decoder with a linear head on its last real token (float32
        master weights whatever the compute ``dtype``): what ``strong_mode="finetune"`` trains
        with ``train.trainable`` "all", "lora" or "top:K"."""
        import jax.numpy as jnp

        from w2sjax.models import heads

        module, _ = load(self.checkpoint(), dtype=dtype or jnp.float32, param_dtype=jnp.float32, mesh=mesh)
        return heads.PooledClassifier(module, num_classes, pooling=self.pooling, rngs=rngs)
