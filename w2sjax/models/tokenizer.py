"""Batch tokenisation with a Hugging Face ``tokenizer.json`` (the ``tokenizers`` package, no
transformers), and the right-padding every tokenizer here shares."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["pad_ids", "HFTokenizer", "load_tokenizer"]


def pad_ids(ids: Sequence[np.ndarray], length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad id arrays to ``length`` -> (input_ids, attention_mask) int32; shared by every tokenizer."""
    out = np.full((len(ids), length), pad_id, dtype=np.int32)
    mask = np.zeros((len(ids), length), dtype=np.int32)
    for r, row in enumerate(ids):
        out[r, : len(row)] = row
        mask[r, : len(row)] = 1
    return out, mask


class HFTokenizer:
    """Batch tokenisation with a ``tokenizers`` ``tokenizer.json``.

    Special tokens are added as the file's post-processor says ([CLS] ... [SEP] for BERT,
    <s> ... </s> for RoBERTa and MPNet, a BOS for Llama 3, nothing for GPT-2). The file's own
    padding/truncation settings are ignored: every call truncates to the ``max_len`` it is
    given (special tokens included) and pads with numpy, with ``pad_id``.
    """

    def __init__(self, path: str | Path, pad_id: int | None = None):
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(path))
        self._tok.no_padding()
        self._tok.no_truncation()
        if pad_id is None:
            pad = self._tok.token_to_id("[PAD]")
            pad_id = 0 if pad is None else int(pad)
        self.pad_id = int(pad_id)

    def token_ids(self, texts, max_len: int) -> list[np.ndarray]:
        """Token ids of each text, truncated to ``max_len``, unpadded."""
        self._tok.enable_truncation(max_length=max_len)
        try:
            encs = self._tok.encode_batch([str(t) for t in texts])
        finally:
            self._tok.no_truncation()
        return [np.asarray(e.ids, dtype=np.int32) for e in encs]

    def pad(self, ids: Sequence[np.ndarray], length: int) -> tuple[np.ndarray, np.ndarray]:
        """Right-pad id arrays to ``length`` -> (input_ids, attention_mask) int32."""
        return pad_ids(ids, length, self.pad_id)

    def encode(self, texts, max_len: int) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, attention_mask), int32 ``[N, max_len]``."""
        return self.pad(self.token_ids(texts, max_len), max_len)

    def decode(self, ids, *, skip_special_tokens: bool = False) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)


def load_tokenizer(directory: str | Path, *, pad_id: int | None = None) -> HFTokenizer:
    """The tokenizer of a checkpoint directory (its ``tokenizer.json``).

    The pad id is ``pad_id`` if given, else the config's ``pad_token_id``, else the tokenizer's
    "[PAD]", else the config's ``eos_token_id`` (decoders often have no pad token: the padded
    positions are masked, so any id does), else 0.
    """
    directory = Path(directory)
    file = directory / "tokenizer.json"
    if not file.exists():
        raise FileNotFoundError(f"{file} not found (a checkpoint directory needs tokenizer.json)")
    tok = HFTokenizer(file, pad_id=pad_id)
    if pad_id is None and (directory / "config.json").exists():
        cfg = json.loads((directory / "config.json").read_text())
        cfg = cfg.get("text_config", cfg)
        eos = cfg.get("eos_token_id")
        eos = eos[0] if isinstance(eos, list) else eos
        if cfg.get("pad_token_id") is not None:
            tok.pad_id = int(cfg["pad_token_id"])
        elif tok._tok.token_to_id("[PAD]") is None and eos is not None:
            tok.pad_id = int(eos)
    return tok
