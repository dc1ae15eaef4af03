"""Benchmark artefacts: every number of a published summary, kept small enough to commit.

Per task, two files in the artefact folder (``docs/benchmark/``):

* ``TASK.json``: the protocol hash, how the task is scored (per example, or per question for
  multiple choice) and every seed's ``results.json`` row of every cell;
* ``TASK.npz`` (compressed): per seed the test split's rows, labels (and questions), and the
  validation slice's labels; per stage (by checkpoint name: readable name and fingerprint) its
  test probabilities as float16, and its per-unit correctness on the test split and on the
  validation slice (float32: 0/1 per example, or a question's share of a tie).

The correctness arrays are what summaries use, so accuracies recompute exactly (an argmax of
float16 probabilities could flip a near-tie). ``protocol.sha256`` names the protocol every file
was made under; :func:`write_task` and :func:`load` refuse a folder that mixes protocols.
"""

from __future__ import annotations

import dataclasses
import io
import json
import pathlib

import numpy as np

from w2sjax.config import ConfigError
from w2sjax.runner import atomic

STAMP = "protocol.sha256"


@dataclasses.dataclass
class TaskArtefacts:
    task: str
    scored: str  # "per example" or "per question"
    rows: list[dict]
    arrays: dict[str, np.ndarray]

    def score(self, stage: str, split: str = "test") -> np.ndarray:
        return self.arrays[f"{'val_' if split == 'val' else ''}score/{stage}"]

    def test_rows(self, seed: int) -> np.ndarray:
        return self.arrays[f"test_row/seed{seed}"]


def check_stamp(folder: pathlib.Path, sha256: str) -> None:
    """Stamp ``folder`` with ``sha256``, or raise when it holds artefacts of another protocol."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = folder / STAMP
    if stamp.is_file():
        found = stamp.read_text().strip()
        if found != sha256:
            raise ConfigError(f"artefacts: {folder} holds artefacts of protocol {found[:12]}, not {sha256[:12]}; "
                              "use another folder (a protocol's artefacts are never mixed with another's)")
    else:
        atomic.write_text(stamp, sha256 + "\n")


def unit_scores(probs: np.ndarray, labels: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """Correctness per scoring unit: per example (argmax equals the label), or per question (the
    highest-scoring choice is correct; a tie between k choices scores the share of correct ones)."""
    probs = np.asarray(probs, np.float32)
    if groups is None:
        return (np.argmax(probs, -1) == labels).astype(np.float32)
    # The same score as metrics.question_accuracy (p1 - p0, not p1): the two order rows alike but
    # can round to different ties in float32, and a row's accuracy must be reproduced exactly.
    score = probs[:, 1] - probs[:, 0] if probs.ndim == 2 else probs
    _, dense = np.unique(groups, return_inverse=True)
    n = int(dense.max()) + 1
    best = np.full(n, -np.inf)
    np.maximum.at(best, dense, score)
    is_best = score == best[dense]
    hits = np.bincount(dense, weights=is_best & (labels == 1), minlength=n)
    return (hits / np.bincount(dense, weights=is_best, minlength=n)).astype(np.float32)


def collect(run_dir: pathlib.Path, results: dict) -> tuple[list[dict], dict]:
    """The rows of one finished experiment and the arrays of every stage they name, read from its
    checkpoints and its seeds' split records (``splits/seed{N}.npz``,
    :mod:`w2sjax.runner.saved_splits`): the task is neither loaded nor split again. Raises
    ``ValueError`` when a seed has no record or a stage's saved predictions do not reproduce its
    row's accuracy."""
    seeds = sorted({r["seed"] for r in results["runs"]} | set(results.get("config", {}).get("seeds", ())))
    records = {seed: _record(run_dir, seed) for seed in seeds}
    arrays, rows = {}, []
    for row in results["runs"]:
        _score_stages(run_dir, row, records[row["seed"]], arrays)
        rows.append(row)
    for seed, rec in records.items():
        arrays[f"test_row/seed{seed}"] = rec["test_row"].astype(np.int32)
        arrays[f"test_label/seed{seed}"] = rec["test_label"].astype(np.int8)
        arrays[f"val_label/seed{seed}"] = rec["val_label"].astype(np.int8)
        if "test_group" in rec:
            arrays[f"test_group/seed{seed}"] = rec["test_group"].astype(np.int32)
    return rows, arrays


def _record(run_dir: pathlib.Path, seed: int) -> dict[str, np.ndarray]:
    from w2sjax.runner import saved_splits

    rec = saved_splits.load(run_dir, seed)
    if rec is None:
        raise ValueError(f"artefacts: {saved_splits.path(run_dir, seed)} is missing or unreadable; "
                         "run the experiment again (it reuses every stage) to write it")
    return rec


def _score_stages(run_dir: pathlib.Path, row: dict, rec: dict, arrays: dict) -> None:
    """Add the probabilities and per-unit scores of every stage ``row`` names to ``arrays``, and
    check that they give the row's accuracies."""
    from w2sjax.runner import checkpoint, saved_splits
    from w2sjax.runner.stage_keys import StageKey

    groups = rec.get("test_group")
    named = dict(row["stages"])
    if row.get("direct_stage"):
        named["direct"] = row["direct_stage"]
    for name in named.values():
        if f"score/{name}" in arrays:
            continue
        preds, _ = checkpoint.restore(run_dir / "checkpoints", StageKey.parse(name).outputs_name,
                                      saved_splits.prediction_target(rec))
        test, val = np.asarray(preds["test"]), np.asarray(preds["val"])
        arrays[f"probs/{name}"] = test.astype(np.float16)
        arrays[f"score/{name}"] = unit_scores(test, rec["test_label"], groups)
        arrays[f"val_score/{name}"] = unit_scores(val, rec["val_label"], rec.get("val_group"))
    suffix = "_question" if groups is not None else ""
    for role, field in (("weak", "weak_acc"), ("w2s", "w2s_acc"), ("ceiling", "ceiling_acc")):
        got = float(arrays[f"score/{named[role]}"].mean())
        if abs(got - row[field + suffix]) > 1e-5:
            raise ValueError(f"artefacts: {named[role]}: saved predictions give {field}{suffix} {got:.6f}, "
                             f"the row says {row[field + suffix]}")


def merge(rows: list[dict], arrays: dict, new_rows: list[dict], new_arrays: dict, tag: str) -> None:
    """Add one experiment's ``new_rows``/``new_arrays`` (:func:`collect`) to a task's ``rows``/``arrays``.

    Two experiments (run folders) of a task can each train the same stage (same checkpoint name,
    e.g. a supervisor both need). When both copies predicted the same, one is kept; when they
    differ (a non-deterministic kernel), the new copy is kept as ``NAME@tag`` and its rows point
    at it, so every row still reads the predictions that made it."""
    renamed = {}
    for key, value in new_arrays.items():
        kind, _, name = key.partition("/")
        if key in arrays and kind in ("probs", "score", "val_score") and not np.array_equal(arrays[key], value):
            renamed[name] = f"{name}@{tag}"
    for key, value in new_arrays.items():
        kind, _, name = key.partition("/")
        if name in renamed:
            key = f"{kind}/{renamed[name]}"
        if kind in ("test_row", "test_label", "test_group", "val_label") and key in arrays \
                and not np.array_equal(arrays[key], value):
            raise ValueError(f"artefacts: {key} differs between the experiments of one task ({tag})")
        arrays.setdefault(key, value)
    for row in new_rows:
        row = {**row, "stages": {role: renamed.get(n, n) for role, n in row["stages"].items()}}
        if row.get("direct_stage"):
            row["direct_stage"] = renamed.get(row["direct_stage"], row["direct_stage"])
        rows.append(row)


def cell_key(row: dict) -> tuple:
    """What identifies a row's cell and seed within a task: its supervisor, student (or chain),
    loss and seed."""
    return (row["weak_model"], row["strong_model"], row.get("chain") or "", row["loss"], row["seed"])


def carry_over(earlier: TaskArtefacts, rows: list[dict], arrays: dict, tag: str = "earlier") -> int:
    """Add to ``rows``/``arrays`` each row of ``earlier`` (a task's artefacts already written) whose
    cell and seed ``rows`` lacks, with the arrays it reads; returns how many rows were kept. A run
    folder that holds only some of a task's parts (a run restarted on another machine for the
    parts it had not finished) then exports without dropping the parts published before."""
    have = {cell_key(r) for r in rows}
    kept = [r for r in earlier.rows if cell_key(r) not in have]
    names = {n for r in kept for n in (*r["stages"].values(), r.get("direct_stage")) if n}
    seeds = {f"seed{r['seed']}" for r in kept}
    old = {k: v for k, v in earlier.arrays.items()
           if k.partition("/")[2] in (names if k.partition("/")[0] in ("probs", "score", "val_score") else seeds)}
    merge(rows, arrays, kept, old, tag=tag)
    return len(kept)


def write_task(folder: pathlib.Path, sha256: str, task: str, scored: str, rows: list[dict], arrays: dict) -> None:
    """Write ``TASK.json`` and ``TASK.npz`` into ``folder`` (stamped with ``sha256``)."""
    check_stamp(folder, sha256)
    buf = io.BytesIO()
    np.savez_compressed(buf, protocol_sha256=np.array(sha256), **arrays)
    atomic.write_bytes(folder / f"{task}.npz", buf.getvalue())
    atomic.write_json(folder / f"{task}.json", {"protocol_sha256": sha256, "task": task, "scored": scored,
                                                "rows": rows})


def load(folder: pathlib.Path, sha256: str | None = None) -> dict[str, TaskArtefacts]:
    """Every task's artefacts in ``folder``, each checked against the folder's stamp (and against
    ``sha256`` when given). Raises :class:`ConfigError` on a mix of protocols."""
    folder = pathlib.Path(folder)
    if not (folder / STAMP).is_file():
        return {}
    stamp = (folder / STAMP).read_text().strip()
    if sha256 is not None and stamp != sha256:
        raise ConfigError(f"artefacts: {folder} was made under protocol {stamp[:12]}, not {sha256[:12]}")
    out = {}
    for path in sorted(folder.glob("*.json")):
        meta = json.loads(path.read_text())
        if not isinstance(meta, dict) or "rows" not in meta or "task" not in meta:
            continue  # summary.json, tasks.json: not a task's artefacts
        with np.load(folder / f"{meta['task']}.npz") as npz:
            arrays = {k: npz[k] for k in npz.files}
        for what, found in (("json", meta.get("protocol_sha256")), ("npz", str(arrays.pop("protocol_sha256")))):
            if found != stamp:
                raise ConfigError(f"artefacts: {meta['task']}.{what} was made under protocol {str(found)[:12]}, "
                                  f"the folder under {stamp[:12]}; they cannot be summarised together")
        out[meta["task"]] = TaskArtefacts(meta["task"], meta["scored"], meta["rows"], arrays)
    return out
