"""Stage identity: one frozen key names every stage and decides when its checkpoint is reused.

A stage is one model trained once (a supervisor, a ceiling, a student). Its :class:`StageKey` has
two halves:

* a readable *name*, ``kind__part__...__seedN`` (``w2s__glove-bow__minilm-l2__logconf__seed0``),
  which labels progress bars, ``metrics.jsonl`` lines and plots;
* a *fingerprint*, the sha256 of every setting that determines the stage's outputs (task data,
  rows, labels or the supervisor's fingerprint, model options, training settings, loss and its
  hyper-parameters). A student's fingerprint contains its supervisor's, so changing one link of a
  chain changes every stage below it.

Checkpoints live under :attr:`StageKey.checkpoint_name`, the name plus the fingerprint's prefix:
a stage is reused only when every setting matches, and checkpoints of other settings stay on
disk untouched (going back to them reuses them). This module imports nothing heavy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import numpy as np

from w2sjax import losses

_SEP = "__"
_FP_SEP = "--"
FINGERPRINT_CHARS = 20  # hex digits of the fingerprint in checkpoint names (80 bits)

# TrainConfig fields that never change a stage's outputs (logging and checkpoint timing: a
# resumed stage equals an uninterrupted one whatever they are).
_NOT_OUTPUT = frozenset({"log_every", "checkpoint_every", "checkpoint_minutes", "remat"})
# Loss hyper-parameters (``LossConfig`` fields), per loss, as ``w2sjax.losses`` registers them:
# a loss ignores every other one, so only its own enter its stages' fingerprints.
LOSS_FIELDS = {loss.name: tuple(p.field for p in loss.params) for loss in losses.LOSSES.values() if loss.params}
# Fields that only matter when early stopping is on.
_STOPPING_FIELDS = ("eval_every", "patience")
FINE_STEP = 8  # `w2sjax.data.length_buckets.FINE_STEP`, written out: importing w2sjax.data loads tfds


@dataclasses.dataclass(frozen=True)
class StageKey:
    """Which stage this is (``kind``, ``parts``, ``seed``) and, once bound, under which settings."""

    kind: str  # "weak", "ceiling", "w2s", "boot", or a method's own kind ("lp-ceiling", ...)
    parts: tuple[str, ...]  # models (supervisor first), loss, variant
    seed: int
    fingerprint: str = ""  # sha256 hex of the settings; "" until :meth:`bind`

    @classmethod
    def weak(cls, model: str, seed: int, *, variant: str = "") -> "StageKey":
        """A supervisor trained on the supervisor half's ground truth (``variant``: e.g. ``-n200``)."""
        return cls("weak", (f"{model}{variant}",), seed)

    @classmethod
    def ceiling(cls, model: str, seed: int) -> "StageKey":
        return cls("ceiling", (model,), seed)

    @classmethod
    def w2s(cls, weak: str, strong: str, loss: str, seed: int, *, variant: str = "") -> "StageKey":
        """A student on a supervisor's labels; ``variant`` names a treatment (``knn``, ``ep3``)."""
        return cls("w2s", (weak, strong, loss) + ((variant,) if variant else ()), seed)

    @classmethod
    def boot(cls, chain: tuple[str, ...], loss: str, seed: int) -> "StageKey":
        """The last model of ``chain`` (``a>b>c``) supervised by the one before it."""
        return cls("boot", (">".join(chain), loss), seed)

    @property
    def name(self) -> str:
        return _SEP.join((self.kind, *self.parts, f"seed{self.seed}"))

    def bind(self, settings: dict) -> "StageKey":
        """This key with the fingerprint of ``settings`` (JSON-able; numpy arrays via :func:`digest`)."""
        return dataclasses.replace(self, fingerprint=fingerprint(settings))

    @property
    def checkpoint_name(self) -> str:
        """The checkpoint folder's stage name: ``name--<fingerprint prefix>``."""
        if not self.fingerprint:
            raise ValueError(f"stage {self.name}: no fingerprint; bind the key to its settings first")
        return f"{self.name}{_FP_SEP}{self.fingerprint[:FINGERPRINT_CHARS]}"

    @property
    def outputs_name(self) -> str:
        """Where the stage's predictions are checkpointed."""
        return f"{self.checkpoint_name}.out"

    @classmethod
    def parse(cls, text: str) -> "StageKey":
        """The key of a stage name or checkpoint name (the fingerprint is its prefix, if any)."""
        name, _, fp = text.removesuffix(".out").partition(_FP_SEP)
        parts = name.split(_SEP)
        seed = 0
        if len(parts) > 1 and parts[-1].startswith("seed") and parts[-1][4:].isdigit():
            seed, parts = int(parts[-1][4:]), parts[:-1]
        return cls(parts[0], tuple(parts[1:]), seed, fp)


def fingerprint(settings: dict) -> str:
    """sha256 of the canonical JSON of ``settings``."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=_jsonable)
    return hashlib.sha256(text.encode()).hexdigest()


def digest(array: Any) -> str:
    """A short content hash of an array (its dtype and shape included)."""
    a = np.ascontiguousarray(np.asarray(array))
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    if a.dtype == object:
        h.update(json.dumps(a.tolist()).encode())
    else:
        h.update(a.tobytes())
    return h.hexdigest()[:24]


def train_settings(cfg: Any, loss: str, *, tokens: bool = False) -> dict:
    """The fields of a ``TrainConfig`` (or a student's, with its ``LossConfig``) that determine a
    stage trained with ``loss`` (on token inputs, ``tokens``: a finetuned text backbone)."""
    settings = dataclasses.asdict(cfg)
    # Compiled lengths pad some batches further (float noise in the outputs): they count only where
    # they apply, and 0 (one program per bucket) keeps the fingerprints made before the field.
    if not (tokens and settings.get("length_buckets") and settings.get("compile_cost_steps")):
        settings.pop("compile_cost_steps", None)
    else:  # their bucket lengths: `length_buckets.FINE_STEP` (before 2026-12-07 powers of two, other fingerprints)
        settings["length_step"] = FINE_STEP
    # The model options hold these, when they apply: trainable (probes train "all"), LoRA's, top:K's
    # cache, and a decoder's readout and head start (as its head_init), so stages of other models
    # keep their names.
    for field in ("trainable", "lora", "cache_bottom", "readout", "head_start"):
        settings.pop(field, None)
    loss_settings = settings.pop("loss", None) or {}  # a student's LossConfig; supervisors have none
    for field in list(settings):
        if field in _NOT_OUTPUT:
            del settings[field]
    own = {f: loss_settings[f] for f in LOSS_FIELDS.get(loss, ()) if f in loss_settings}
    if own:
        settings["loss"] = own
    if not settings.get("early_stopping"):
        for field in _STOPPING_FIELDS:
            settings.pop(field, None)
    return settings


def _jsonable(x):
    if isinstance(x, np.ndarray):
        return digest(x)
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, (tuple, set, frozenset)):
        return sorted(x) if isinstance(x, (set, frozenset)) else list(x)
    raise TypeError(f"stage setting {x!r} has no canonical form")
