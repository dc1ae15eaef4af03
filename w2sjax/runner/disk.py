"""Disk use of a run's checkpoints: what the plan expects a run to write, and pruning what runs of
other settings (and failed runs) left behind.

A finished stage keeps its predictions and trained parameters; while a stage trains, its in-stage
checkpoints hold the whole training state (parameters, the best ones so far, both AdamW moments,
the frozen part) for the ``keep`` newest steps, and are deleted when it finishes.

    stage_bytes(num_params, finetune=..., trainable=..., pred_values=...) -> (finished, in_stage)
    prune_candidates(directory) -> (removals, notes)
    remove(removals)

This module imports nothing heavy; ``w2sjax prune`` is a thin layer over it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil

from w2sjax.runner import rundir

__all__ = ["stage_bytes", "human", "Removal", "prune_candidates", "remove", "folder_bytes"]

FLOAT_BYTES = 4  # parameters, moments and predictions are saved as float32
HEAD_BYTES = 2 * 2**20  # a head on features or raw inputs (linear, MLP, CNN): under this
IN_STAGE_KEPT = 2  # in-stage steps kept at once (checkpoint.save's default ``keep``)
# Share of a backbone's parameters that a stage trains, as an upper bound: LoRA adapters of rank
# 8-16 are well under 2% of a BERT-sized model; top:K is bounded by the whole model.
_TRAINED_SHARE = {"all": 1.0, "lora": 0.02}


def stage_bytes(num_params: int | None, *, finetune: bool, trainable: str, pred_values: int) -> tuple[int, int]:
    """``(finished, in_stage)``: about the most a finished stage keeps, and the most its in-stage
    steps hold on disk while it trains. ``num_params``: the backbone's parameters (None or 0 for
    a head on features); ``pred_values``: how many probabilities the stage predicts."""
    trained, frozen = HEAD_BYTES, 0
    if finetune and num_params:
        backbone = int(num_params) * FLOAT_BYTES
        share = _TRAINED_SHARE.get(trainable, 1.0)
        trained += int(backbone * share)
        frozen = backbone - int(backbone * share)
    finished = trained + pred_values * FLOAT_BYTES
    in_stage = IN_STAGE_KEPT * (4 * trained + frozen)  # params, best params, two moments; the frozen part
    return finished, in_stage


def human(n: float) -> str:
    """``n`` bytes as a short figure: ``840 KB``, ``83 MB``, ``1.9 GB``."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.1f} {unit}" if unit == "GB" or n < 10 and unit != "B" else f"{n:.0f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover - unreachable


@dataclasses.dataclass(frozen=True)
class Removal:
    path: pathlib.Path
    bytes: int
    reason: str


def folder_bytes(path: pathlib.Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _only_locks(folder: pathlib.Path) -> bool:
    """Whether ``folder`` holds nothing but run locks and empty folders."""
    for p in folder.rglob("*"):
        if p.is_file() and not p.name.startswith(".lock"):
            return False
    return True


def _run_folders(directory: pathlib.Path):
    """``directory`` and every folder below it, never descending into a run's checkpoints."""
    for root, dirs, _ in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if d != "checkpoints")
        yield pathlib.Path(root)


def prune_candidates(directory: str | os.PathLike) -> tuple[list[Removal], list[str]]:
    """What ``w2sjax prune`` would remove under ``directory``, and notes on what it left alone.

    * In every run folder (one holding ``checkpoints/``) whose ``results.json`` lists the
      checkpoints its run used: every other stage's checkpoint (made under other settings) and
      the stages set aside as damaged.
    * Every folder holding nothing but run locks (left by a failed run).

    A folder whose run is in progress (its lock is held) is left alone.
    """
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        raise rundir.RunDirError(f"prune: {str(directory)!r} is not a directory")
    removals, notes = [], []
    for folder in _run_folders(directory):
        holder = rundir.holder(folder)
        if holder is not None:
            notes.append(f"{folder}: in use by process {holder}; left alone")
            continue
        if folder.is_dir() and _only_locks(folder) and not (folder / "checkpoints").is_dir():
            removals.append(Removal(folder, 0, "empty run folder (only a lock)"))
            continue
        ckpts = folder / "checkpoints"
        if not ckpts.is_dir():
            continue
        try:
            used = json.loads((folder / rundir.RESULTS).read_text()).get("checkpoints")
        except (OSError, ValueError, AttributeError):
            used = None
        if not isinstance(used, list):
            notes.append(f"{folder}: its results.json does not list the checkpoints its run used (an unfinished "
                         "run, or one made by an older w2sjax); run it again to prune it")
            continue
        used = set(used)
        for entry in sorted(ckpts.iterdir()):
            if entry.name == "damaged":
                removals.append(Removal(entry, folder_bytes(entry), "stages set aside as damaged"))
            elif entry.name.removesuffix(".out") not in used:
                removals.append(Removal(entry, folder_bytes(entry), "a stage of other settings"))
    # a folder of locks inside one being removed is removed with it
    paths = {r.path for r in removals}
    removals = [r for r in removals if not any(p in paths for p in r.path.parents)]
    return removals, notes


def remove(removals: list[Removal]) -> None:
    """Delete what :func:`prune_candidates` listed, deepest first; a run folder is locked while its
    checkpoints go, so no run starts in it meanwhile."""
    for r in sorted(removals, key=lambda r: len(r.path.parts), reverse=True):
        if r.path.parent.name == "checkpoints":
            run = r.path.parent.parent
            rundir.lock(run)
            try:
                shutil.rmtree(r.path, ignore_errors=True)
            finally:
                rundir.release(run)
        else:
            shutil.rmtree(r.path, ignore_errors=True)
