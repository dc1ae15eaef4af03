"""A benchmark protocol: the file, fixed before the run, that says what the run is.

The file (JSON, e.g. ``experiments/benchmark_protocol.json``) names the task rule, the
supervisors, the students, the recipe, the primary metric, the gap-task rule and which tasks the
project was tuned on. Its sha256 (of the file's bytes) stamps every artefact made under it, and a
run or a summary refuses artefacts stamped with another hash.

* :func:`load` reads and checks the file (a bad field is one :class:`ConfigError` line);
* :func:`resolve_tasks` turns the task rule into names at run time, with the reason for every
  registered text task left out;
* :func:`group_of`: ``"tuned"`` or ``"untuned"``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib

from w2sjax.config import ConfigError

REQUIRED = ("name", "tasks", "supervisors", "losses", "students", "recipe", "primary_metric", "gap_rule",
            "medians", "headline")


@dataclasses.dataclass(frozen=True)
class Protocol:
    path: pathlib.Path
    sha256: str
    spec: dict

    def __getitem__(self, key):
        return self.spec[key]

    def get(self, key, default=None):
        return self.spec.get(key, default)

    @property
    def short(self) -> str:
        return self.sha256[:12]


def load(path) -> Protocol:
    """Read the protocol at ``path`` and check its fields. Raises :class:`ConfigError`."""
    path = pathlib.Path(path)
    try:
        raw = path.read_bytes()
        spec = json.loads(raw)
    except OSError as exc:
        raise ConfigError(f"protocol: cannot read {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"protocol: {path}: not JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(spec, dict):
        raise ConfigError(f"protocol: {path}: expected a JSON object")
    missing = [k for k in REQUIRED if k not in spec]
    if missing:
        raise ConfigError(f"protocol: {path}: missing {', '.join(missing)}")
    for i, student in enumerate(spec["students"]):
        if not {"name", "trainable", "seeds"} <= set(student):
            raise ConfigError(f"protocol: students[{i}]: expected name, trainable and seeds")
        if not student["seeds"]:
            raise ConfigError(f"protocol: students[{i}] ({student['name']}): expected at least one seed")
        lr = student.get("lr")
        if lr is not None and not (isinstance(lr, (int, float)) and not isinstance(lr, bool) and lr > 0):
            raise ConfigError(f"protocol: students[{i}] ({student['name']}).lr: expected a positive number, got {lr!r}")
    names = {student["name"] for student in spec["students"]}
    for i, chain in enumerate(spec.get("bootstrap", [])):
        if not {"chain", "seeds"} <= set(chain) or chain["chain"].count(">") < 2:
            raise ConfigError(f"protocol: bootstrap[{i}]: expected chain 'a>b>c' and seeds")
        # every rung trains with its own student recipe (trainable, lr), so each must be a student
        unknown = [m for m in chain["chain"].split(">")[1:] if m not in names]
        if unknown:
            raise ConfigError(f"protocol: bootstrap[{i}]: {', '.join(unknown)}: not among the students "
                              "(a rung trains with its student's recipe)")
    if spec["gap_rule"].get("slice") != "validation":
        raise ConfigError("protocol: gap_rule.slice: expected 'validation' (the test split never picks tasks)")
    if not isinstance(spec["gap_rule"].get("min_gap"), (int, float)):
        raise ConfigError("protocol: gap_rule.min_gap: expected a number")
    balance = spec["recipe"].get("balance", "none")
    if balance not in BALANCE:
        raise ConfigError(f"protocol: recipe.balance: expected one of {', '.join(map(repr, BALANCE))}, got {balance!r}")
    _check_extends(path, spec.get("extends"))
    return Protocol(path, hashlib.sha256(raw).hexdigest(), spec)


# recipe.balance: "none" trains and tests on the task's class mix; "all" balances every part
# (data.balance); "train" the halves and the validation slice only (data.balance_train), so the
# test split is the one an unbalanced run of the same seed scores.
BALANCE = ("none", "all", "train")


def _check_extends(path: pathlib.Path, extends) -> None:
    """A protocol that adds parts to another names that file and its sha256; the file must still
    have those bytes (its parts and artefacts are the ones this protocol leaves as they are)."""
    if extends is None:
        return
    if not isinstance(extends, dict) or not {"file", "sha256"} <= set(extends):
        raise ConfigError("protocol: extends: expected {\"file\": PATH, \"sha256\": HEX}")
    base = path.parent / pathlib.Path(extends["file"]).name
    try:
        found = hashlib.sha256(base.read_bytes()).hexdigest()
    except OSError as exc:
        raise ConfigError(f"protocol: extends.file: cannot read {base}: {exc.strerror or exc}") from None
    if found != extends["sha256"]:
        raise ConfigError(f"protocol: extends.sha256: {base.name} now has sha256 {found[:12]}, not the "
                          f"{str(extends['sha256'])[:12]} this protocol extends")


def group_of(protocol: Protocol, task: str) -> str:
    """``"tuned"`` when the project chose any setting looking at ``task``, else ``"untuned"``."""
    return "tuned" if task in protocol["tasks"].get("tuned_on", {}) else "untuned"


def resolve_tasks(protocol: Protocol, *, only=()) -> dict:
    """The task rule resolved now: ``{"tasks": [...], "left_out": {name: reason}}``.

    A registered text task is left out when the protocol excludes it, when every source of its
    asset is one the protocol lists as withdrawn, or when it does not build (its error line).
    ``only`` restricts the result to those names (a test or a partial run), recorded as such.
    """
    from w2sjax import assets, data
    from w2sjax.data import builders

    rule = protocol["tasks"]
    withdrawn = set(rule.get("withdrawn_sources", ()))
    tasks, left_out = [], {}
    text = [name for name, cls in builders.BUILDERS.items() if cls.KIND == "text"]
    unknown = [n for n in only if n not in text]
    if unknown:
        raise ConfigError(f"--tasks: not a registered offline text task: {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(text))}")
    for name in sorted(text):
        if only and name not in only:
            left_out[name] = "not among --tasks"
            continue
        if name in rule.get("exclude", {}):
            left_out[name] = f"excluded by the protocol: {rule['exclude'][name]}"
            continue
        cls = builders.BUILDERS[name]
        asset = cls.ASSET or name
        named = {s.packages[0] for s in assets._SPECS[asset].sources()} if asset in assets.known_assets() else set()
        if not cls.OFFLINE or (named and named <= withdrawn):
            left_out[name] = f"every source ({', '.join(sorted(named))}) is withdrawn from its registry"
            continue
        try:
            data.load_task(name)
        except Exception as exc:  # any failure to build is this task's line in the record
            left_out[name] = f"did not build: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            continue
        tasks.append(name)
    return {"protocol_sha256": protocol.sha256, "tasks": tasks, "left_out": left_out,
            "restricted_to": sorted(only) if only else None}
