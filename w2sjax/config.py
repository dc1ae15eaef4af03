"""Typed experiment configs, the shipped ones, and ``key=value`` overrides.

A config is a tree of frozen dataclasses. ``experiments/NAME.py`` files each define
``get_config() -> Config``; the command line edits any leaf with ``--set section.key=value``,
parsed according to the field's declared type. Every mistake (an unknown key, a value of the
wrong type, a missing file) raises :class:`ConfigError` with one line naming the field and what
was expected.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import pathlib
import re
import sys
import types
import typing
from typing import Any

from w2sjax import losses

class ConfigError(ValueError):
    """A bad config file, key or value. The message is one line meant for the user."""


# The losses a student can train with, as ``w2sjax.losses`` registers them.
LOSS_NAMES = tuple(losses.LOSSES)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How one stage trains. Every field is a plain value so configs stay printable and typed."""

    epochs: float = 10.0  # passes over the stage's training data (fractions allowed)
    batch_size: int = 32  # global batch, rounded down to a multiple of the device count
    lr: float = 1e-3  # peak AdamW learning rate
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    lr_warmup_frac: float = 0.05  # fraction of steps with a linear learning-rate warm-up; cosine decay after
    early_stopping: bool = False  # keep the parameters with the best validation accuracy (weak labels for w2s)
    eval_every: int = 0  # steps between validation evals; 0 = once per epoch
    patience: int = 0  # evals without improvement before stopping; 0 = never stop, just keep the best
    checkpoint_every: int = 0  # steps between in-stage checkpoints; 0 = only at the end
    # minutes of training between in-stage checkpoints (also), so a hard kill loses minutes, not
    # stages; 0 = none
    checkpoint_minutes: float = 10.0
    log_every: int = 10  # steps between metrics.jsonl lines (and NaN checks)
    length_buckets: bool = True  # token inputs: batches of similar length, each cut to the shortest of 16, 32, 64, ..., max_len tokens that holds it (one compile per length), in training and in predictions; false pads every batch to max_len
    compile_cost_steps: float | None = None  # token inputs with length_buckets: a stage compiles only some of the bucket lengths its batches use (then every multiple of 8 tokens), each batch padded up to the next compiled one, choosing them to minimise programs x this + the steps weighted by length / max_len; its predictions choose their lengths alike; None = chosen for the run's precision and machine (w2sjax.data.length_buckets.default_compile_cost: 4 for bf16 on an AMX CPU or an accelerator, 0.5 otherwise); 0 = one program per power-of-two bucket length (16, 32, 64, ...)

    def __post_init__(self):
        if self.batch_size <= 0:
            raise ConfigError(f"train.batch_size: expected a positive integer, got {self.batch_size}")
        if not self.epochs > 0:
            raise ConfigError(f"train.epochs: expected a positive number, got {self.epochs}")
        if self.compile_cost_steps is not None and not 0 <= self.compile_cost_steps < math.inf:
            raise ConfigError(f"train.compile_cost_steps: expected a number >= 0, got {self.compile_cost_steps}")


# Settings of the student losses, one field per hyper-parameter that ``w2sjax.losses`` registers
# (its default and description come from there); each loss reads only its own.
LossConfig = dataclasses.make_dataclass(
    "LossConfig",
    [(field, type(default), dataclasses.field(default=default, metadata={"doc": doc}))
     for field, (default, doc) in losses.hyper_parameters().items()],
    frozen=True,
    namespace={"__module__": __name__,
               "__doc__": "Settings of the student losses; each loss reads only its own (``w2sjax.losses.LOSSES``)."},
)


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """Adapters for ``trainable="lora"``: rank, scale ``alpha / rank``, and the layers they wrap."""

    rank: int = 8  # rank of each adapter (EleutherAI/w2s's default)
    alpha: float = 16.0  # the adapter's output is scaled by alpha / rank
    targets: tuple[str, ...] = ("query", "value", "q_proj", "v_proj")  # names of the nnx.Linear layers that get adapters (attention q and v in every family)

    def __post_init__(self):
        if self.rank < 1:
            raise ConfigError(f"train.lora.rank: expected a positive integer, got {self.rank}")
        if not self.targets:
            raise ConfigError("train.lora.targets: expected at least one layer name")


@dataclasses.dataclass(frozen=True)
class StudentTrainConfig(TrainConfig):
    """A student stage (w2s, ceiling, bootstrap): it may finetune, and its loss has settings.
    The supervisors (``weak_train``) are always linear probes trained with ``xent``."""

    trainable: str = "all"  # finetune mode only: "all" trains every weight, "head" is a linear probe on the frozen backbone, "lora" trains adapters + head, "top:K" the last K blocks + final norm + head
    loss: LossConfig = LossConfig()
    lora: LoraConfig = LoraConfig()
    remat: bool = False  # finetune mode: recompute each block's activations in the backward pass (less memory, ~1 more forward)
    cache_bottom: bool = True  # top:K: run the frozen blocks once per example and train on their output, cached on disk in bf16; false runs them every step
    head_start: str = "prior"  # finetune mode, decoders with the linear readout: "prior" starts the zero-kernel head's bias at the training labels' log class shares (the untrained model predicts their prior), "uniform" at zero (1/C; what the registered benchmark protocols ran)
    readout: str = "linear"  # finetune mode, decoders: "linear" is a zero-initialised linear head on the last real token's state; "verbalizer" scores each class by the LM's logit of its name's first token (" negative", " positive") there, a head started from those vocabulary rows (use a data.prompt that ends where the answer goes)

    def __post_init__(self):
        super().__post_init__()
        if self.trainable not in ("all", "head", "lora") and not _is_top_k(self.trainable):
            raise ConfigError("train.trainable: expected 'all', 'head', 'lora' or 'top:K' (K a positive integer), "
                              f"got {self.trainable!r}")
        if self.head_start not in HEAD_STARTS:
            raise ConfigError(f"train.head_start: expected one of {', '.join(HEAD_STARTS)}, got {self.head_start!r}")
        if self.readout not in READOUTS:
            raise ConfigError(f"train.readout: expected one of {', '.join(READOUTS)}, got {self.readout!r}")


READOUTS = ("linear", "verbalizer")
HEAD_STARTS = ("prior", "uniform")


def _is_top_k(trainable: str) -> bool:
    return re.fullmatch(r"top:[1-9][0-9]*", trainable) is not None


@dataclasses.dataclass(frozen=True)
class DataConfig:
    task: str = "fine_foods"  # a registered task, csv:PATH or jsonl:PATH
    n_train: int | None = None  # cap on the training examples shared by the supervisor and student halves; None = all
    # validation slice carved from the training split (for early stopping); None = 10% of it, at
    # least 50 (or a fifth of a tiny split) and at most 200
    n_val: int | None = None
    n_test: int | None = None  # subsample of the test split; None = all of it
    balance: bool = False  # equalise classes by downsampling, in every part (the test split too)
    balance_train: bool = False  # equalise classes by downsampling in the supervisor half, the student half and the validation slice only; the test split keeps the task's class mix (the same rows as an unbalanced run of the same seed)
    max_len: int = 128  # token budget for text backbones
    prompt: str = ""  # template for pretrained text backbones, e.g. "{text}\nIs the review positive?"; "" = the bare text
    text_field: str = "text"  # csv:/jsonl: files: the column holding the text
    label_field: str = "label"  # csv:/jsonl: files: the column holding the label
    # csv:/jsonl: files: RAW:CLASS pairs mapping label texts to classes, e.g. "0:neg,1:pos,1.0:pos,nan:" (an empty class drops the row); () = labels read as values (whole numbers are class ids, else class names), and an empty, nan or fractional label is an error
    label_map: tuple[str, ...] = ()

    def __post_init__(self):
        for field in ("balance", "balance_train"):
            if not isinstance(getattr(self, field), bool):
                raise ConfigError(f"data.{field}: expected true or false, got {getattr(self, field)!r}")
        if self.balance and self.balance_train:
            raise ConfigError("data.balance_train: expected data.balance=false with it (data.balance already "
                              "balances every part; data.balance_train balances the training parts only)")
        if self.prompt and "{text}" not in self.prompt:
            raise ConfigError(f"data.prompt: expected a template containing {{text}}, got {self.prompt!r}")
        for item in self.label_map:
            if ":" not in item:
                raise ConfigError(f"data.label_map: expected RAW:CLASS items (e.g. 0:neg,1.0:pos,nan:), got {item!r}")


@dataclasses.dataclass(frozen=True)
class ParallelConfig:
    data: int = -1  # devices on the data axis; -1 = all that the fsdp axis leaves
    fsdp: int = 1  # devices over which parameters are sharded
    distributed: bool = False  # auto-detect a cluster (TPU pod, SLURM, ...) and join it; JAX_NUM_PROCESSES etc. always count


@dataclasses.dataclass(frozen=True)
class MethodConfig:
    labels: tuple[str, ...] = ("soft",)  # weak-label treatments swept in the w2s stage: soft, hard, confident, selective, knn, filter
    keep_frac: float = 0.7  # confident/filter: fraction of the student half trained on; selective: fraction keeping the weak label
    knn_k: int = 10  # knn/filter: neighbours in the strong model's frozen feature space
    shift: str = "none"  # "none"; "length": train on the shorter half of the texts, test on the longer half; "domain:NAME": train on the other domains, test on NAME (multiemo)
    epochs_grid: tuple[float, ...] = (1.0, 3.0, 10.0, 30.0)  # methods that sweep the students' training length
    weak_sizes: tuple[int, ...] = (0,)  # methods that sweep the supervisors' label budgets (examples of the supervisor half); 0 = all

    def __post_init__(self):
        from w2sjax.pseudo_labels import REFINEMENTS

        for name in self.labels:
            if name not in REFINEMENTS:
                raise ConfigError(f"options.labels: unknown refinement {name!r}; known: {', '.join(REFINEMENTS)}")
        if not self.labels:
            raise ConfigError("options.labels: expected at least one entry")
        if not 0.0 < self.keep_frac <= 1.0:
            raise ConfigError(f"options.keep_frac: expected a number in (0, 1], got {self.keep_frac}")
        if self.knn_k < 1:
            raise ConfigError(f"options.knn_k: expected a positive integer, got {self.knn_k}")
        if self.shift not in ("none", "length") and not (self.shift.startswith("domain:") and len(self.shift) > 7):
            raise ConfigError(f"options.shift: expected 'none', 'length' or 'domain:NAME', got {self.shift!r}")


# ---- value ranges -----------------------------------------------------------------------------
# Checked when a Config is made (a config file or --set), so a bad value stops the run before any
# work with one line naming its dotted key, instead of training to a meaningless result (lr=0
# trains nothing; lr=nan diverges at once and is misread as "lower the learning rate").

def _positive(v) -> bool:
    return math.isfinite(v) and v > 0


def _non_negative(v) -> bool:
    return math.isfinite(v) and v >= 0


def _fraction(v) -> bool:
    return 0 <= v <= 1


_RULES = {  # rule, what the error says was expected
    "positive": (_positive, "a positive finite number"),
    "non_negative": (_non_negative, "a finite number >= 0"),
    "fraction": (_fraction, "a number in [0, 1]"),
    "count": (lambda v: v >= 1, "a positive integer"),
    "count0": (lambda v: v >= 0, "an integer >= 0"),
    "pair": (lambda v: v >= 2, "an integer >= 2 (or none)"),
    "devices": (lambda v: v == -1 or v >= 1, "-1 (all devices) or a positive integer"),
}
_RANGES = {  # class name -> field -> rule; None values (``int | None``) are always allowed
    "TrainConfig": {"epochs": "positive", "batch_size": "count", "lr": "positive", "weight_decay": "non_negative",
                    "lr_warmup_frac": "fraction", "eval_every": "count0", "patience": "count0",
                    "checkpoint_every": "count0", "checkpoint_minutes": "non_negative", "log_every": "count0"},
    "LossConfig": {"alpha_max": "fraction", "conf_warmup_frac": "fraction", "product_alpha": "non_negative",
                   "product_beta": "non_negative"},
    "LoraConfig": {"rank": "count", "alpha": "positive"},
    "DataConfig": {"n_train": "pair", "n_val": "count0", "n_test": "count", "max_len": "count"},
    "ParallelConfig": {"data": "devices", "fsdp": "count"},
    "MethodConfig": {"keep_frac": "fraction", "knn_k": "count", "epochs_grid": "positive", "weak_sizes": "count0"},
}


def check_ranges(node, prefix: str = "") -> None:
    """Raise :class:`ConfigError` naming the first leaf of ``node`` (a config section) outside its range."""
    for cls in type(node).__mro__:
        rules = _RANGES.get(cls.__name__)
        if rules:
            break
    else:
        rules = {}
    for field in dataclasses.fields(node):
        value, key = getattr(node, field.name), f"{prefix}{field.name}"
        if dataclasses.is_dataclass(value):
            check_ranges(value, key + ".")
            continue
        if field.name not in rules:
            continue
        test, expected = _RULES[rules[field.name]]
        for v in value if isinstance(value, tuple) else (value,):
            if v is not None and (isinstance(v, bool) or not test(v)):
                raise ConfigError(f"{key}: expected {expected}, got {v}")


@dataclasses.dataclass(frozen=True)
class Config:
    name: str = "default"  # names the output directory runs/<name> when --out is not given
    data: DataConfig = DataConfig()
    weak_models: tuple[str, ...] = ("glove-bow",)  # supervisors, trained on the supervisor half's ground truth
    strong_models: tuple[str, ...] = ("minilm-l2", "minilm-l6")  # students, trained on the student half's weak labels
    losses: tuple[str, ...] = ("xent", "logconf")  # losses for the w2s students; every one is run
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)  # each seed redraws the splits and the initialisations
    strong_mode: str = "probe"  # "probe": linear head on cached frozen features; "finetune": all weights
    # matmul operands of the pretrained text backbones (features and finetuning): "float32", or
    # "bfloat16" with float32 accumulation (matrix units: AMX CPUs, GPUs, TPUs; benchmarks/RESULTS.md)
    precision: str = "float32"
    # probes on frozen features see each feature dimension standardised with the mean and std of
    # the task's whole training split (label-free); helps backbones with outlier dimensions (LLMs)
    standardize_features: bool = False
    bootstrap: tuple[str, ...] = ()  # chains such as "glove-bow>minilm-l2>minilm-l6", each supervising the next
    weak_train: TrainConfig = TrainConfig(epochs=20, batch_size=64, lr=1e-2)
    # Strong students and ceilings. Defaults suit a linear probe on frozen features (measured on
    # fine_foods: lr 1e-3 underfits by 3 points); full finetuning wants lr ~3e-5.
    train: StudentTrainConfig = StudentTrainConfig(epochs=5, batch_size=32, lr=1e-2)
    parallel: ParallelConfig = ParallelConfig()
    method: str = "w2s"  # "w2s": the standard protocol; or a method of w2sjax.methods (docs/methods.md)
    # options of the weak-label refinements and of the methods in w2sjax.methods
    options: MethodConfig = MethodConfig()

    def __post_init__(self):
        from w2sjax.methods import METHODS

        if type(self.train) is TrainConfig:  # written as TrainConfig(...): a student with default extras
            object.__setattr__(self, "train", StudentTrainConfig(**dataclasses.asdict(self.train)))

        if self.method not in METHODS:
            raise ConfigError(f"method: unknown method {self.method!r}; known: {', '.join(METHODS)}")
        if self.strong_mode not in ("probe", "finetune"):
            raise ConfigError(f"strong_mode: expected 'probe' or 'finetune', got {self.strong_mode!r}")
        if self.precision not in ("float32", "bfloat16"):
            raise ConfigError(f"precision: expected 'float32' or 'bfloat16', got {self.precision!r}")
        for loss in self.losses:
            if loss not in LOSS_NAMES:
                raise ConfigError(f"losses: unknown loss {loss!r}; known: {', '.join(LOSS_NAMES)}")
        for field in ("weak_models", "strong_models", "losses", "seeds"):
            if not getattr(self, field):
                raise ConfigError(f"{field}: expected at least one entry")
        for chain in self.bootstrap:
            if len(chain.split(">")) < 2:
                raise ConfigError(f"bootstrap: expected a chain like 'weak>mid>strong', got {chain!r}")
        check_ranges(self)


# ---- loading --------------------------------------------------------------------------------

def load_config_file(path: str | pathlib.Path) -> Config:
    """Import ``path`` and call its ``get_config()``."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ConfigError(f"--config: no such file {str(path)!r}")
    spec = importlib.util.spec_from_file_location(f"w2sjax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    # Registered while it runs, as a normal import would be: a config file that defines a
    # dataclass needs its own module in sys.modules (dataclasses looks the module up by name).
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # a user's file: report it in one line
        del sys.modules[spec.name]
        raise ConfigError(f"--config: {path} failed to load: {type(exc).__name__}: {exc}") from exc
    if not hasattr(module, "get_config"):
        raise ConfigError(f"--config: {path} defines no get_config()")
    config = module.get_config()
    if not isinstance(config, Config):
        raise ConfigError(f"--config: {path}: get_config() returned {type(config).__name__}, expected w2sjax Config")
    return config


def shipped_configs(root: str | pathlib.Path | None = None) -> list[pathlib.Path]:
    """The ``experiments/*.py`` files next to the package (in a source checkout)."""
    root = pathlib.Path(root) if root else pathlib.Path(__file__).resolve().parent.parent / "experiments"
    return sorted(p for p in root.glob("*.py") if not p.name.startswith("_"))


# ---- overrides ------------------------------------------------------------------------------

def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """Apply ``section.key=value`` strings in order; raises :class:`ConfigError` on any mistake."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.lr=1e-4")
        config = _set(config, key.strip().split("."), raw.strip(), key.strip())
    return config


def _set(node: Any, path: list[str], raw: str, full_key: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(node)}
    head = path[0]
    if head not in fields:
        raise ConfigError(f"--set {full_key}: unknown key {head!r}; expected one of {', '.join(fields)}")
    hints = typing.get_type_hints(type(node))
    current = getattr(node, head)
    if len(path) > 1:
        if not dataclasses.is_dataclass(current):
            raise ConfigError(f"--set {full_key}: {head!r} has no sub-keys")
        value = _set(current, path[1:], raw, full_key)
    elif dataclasses.is_dataclass(current):
        raise ConfigError(f"--set {full_key}: {head!r} is a section; set one of its keys, e.g. {head}.{next(iter(f.name for f in dataclasses.fields(current)))}=...")
    else:
        value = parse_value(raw, hints[head], full_key)
    try:
        return dataclasses.replace(node, **{head: value})
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"--set {full_key}: {exc}") from exc


def parse_value(raw: str, annotation: Any, key: str) -> Any:
    """Parse ``raw`` as the declared type: bool, int, float, str, ``X | None`` or ``tuple[X, ...]``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if raw.lower() in ("none", "null", ""):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return parse_value(raw, inner[0], key)
    if origin is tuple:
        item_type = args[0]
        parts = [p.strip() for p in raw.split(",") if p.strip()]
        return tuple(parse_value(p, item_type, key) for p in parts)
    if annotation is bool:
        lowered = raw.lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"--set {key}: expected true or false, got {raw!r}")
    if annotation in (int, float):
        try:
            return annotation(raw) if annotation is float else int(raw)
        except ValueError:
            raise ConfigError(f"--set {key}: expected {annotation.__name__}, got {raw!r}") from None
    if annotation is str:
        return raw
    raise ConfigError(f"--set {key}: cannot parse a value of type {annotation}")


def to_dict(config: Config) -> dict:
    """A JSON-ready dict of the whole config (tuples become lists)."""
    return dataclasses.asdict(config)


def describe(config_type=Config, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """``(key, type, default, comment)`` for every leaf: the source of the generated config docs.

    Keys are dotted as ``--set`` takes them; the type is written as declared (``int | None``,
    ``tuple[str, ...]``); the comment is the field's ``doc`` metadata (the loss settings, declared
    in ``w2sjax.losses``) or its source comment (see :func:`_field_comments`).
    """
    comments = {}
    for cls in reversed(config_type.__mro__):  # a subclass's comments win over its base's
        if dataclasses.is_dataclass(cls):
            comments.update(_field_comments(cls))
    default = config_type()
    hints = typing.get_type_hints(config_type)
    rows = []
    for field in dataclasses.fields(config_type):
        value = getattr(default, field.name)
        key = f"{prefix}{field.name}"
        comment = field.metadata.get("doc") or comments.get(field.name, "")
        if dataclasses.is_dataclass(value):
            for sub_key, typ, _, comment in describe(type(value), key + "."):
                # A section's default here can differ from its class's own (weak_train vs train).
                rows.append((sub_key, typ, _get(value, sub_key[len(key) + 1 :]), comment))
        else:
            rows.append((key, _type_name(hints[field.name]), value, comment))
    return rows


def _get(node, dotted: str):
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def _type_name(annotation) -> str:
    # Parameterised types (tuple[str, ...], int | None) need their arguments, not just "tuple".
    if typing.get_origin(annotation) is not None:
        return str(annotation).replace("typing.", "")
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _field_comments(cls) -> dict[str, str]:
    """Each field's comment in a dataclass's source.

    A trailing ``# comment`` on the field's line describes that field; otherwise the comment
    lines right above the field (joined) describe it, as in Sphinx's attribute comments.
    """
    import inspect

    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return {}
    comments: dict[str, str] = {}
    above: list[str] = []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("#").strip())
            continue
        name, colon, rest = stripped.partition(":")
        name = name.strip()
        is_field = colon and name.isidentifier() and not stripped.startswith(("def ", "class ", "@"))
        if is_field:
            trailing = rest.split("#", 1)[1].strip() if "#" in rest else ""
            if trailing or above:
                comments[name] = trailing or " ".join(above)
        above = []  # a comment block describes only the line right below it
    return comments
