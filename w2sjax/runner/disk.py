"""Disk use of a run's checkpoints: what the plan expects a run to write, and pruning what runs of
other settings (and failed runs) left behind, and, when asked, the trained parameters of the
stages a finished run used.

A finished stage keeps its predictions and trained parameters; while a stage trains, its in-stage
checkpoints hold the whole training state (parameters, the best ones so far, both AdamW moments,
the frozen part) for the ``keep`` newest steps, and are deleted when it finishes. Its parameters
are what a rerun never needs: a finished stage is reused from its predictions (pseudo-labels
included) alone; only ``Runner.trained_module`` reads them. Dropping them (``params=True``) keeps
the stage finished and its predictions checked, as :func:`w2sjax.runner.checkpoint.drop_model` says.

    stage_bytes(num_params, finetune=..., trainable=..., pred_values=...) -> (finished, in_stage)
    prune_candidates(directory, params=False) -> (removals, notes)
    remove(removals)
    drop_params(run_dir) -> what was dropped (a Removal per stage, with its bytes)

This module imports nothing heavy at import; reading stage folder names and dropping parameters
import ``checkpoint`` (Orbax) when they run. ``w2sjax prune`` is a thin layer over it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil

from w2sjax.runner import rundir

__all__ = ["stage_bytes", "human", "Removal", "prune_candidates", "remove", "folder_bytes", "drop_params"]

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
    stage: str = ""  # set: drop this finished stage's trained parameters only (``path`` is its folder)


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


def prune_candidates(directory: str | os.PathLike, *, params: bool = False) -> tuple[list[Removal], list[str]]:
    """What ``w2sjax prune`` would remove under ``directory``, and notes on what it left alone.

    * In every run folder (one holding ``checkpoints/``) whose ``results.json`` lists the
      checkpoints its run used: every other stage's checkpoint (made under other settings) and
      the stages set aside as damaged; with ``params``, also the trained parameters of the
      stages it used (their predictions stay, and a rerun still reuses them).
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
        folders = _stage_folders(used)
        for entry in sorted(ckpts.iterdir()):
            if entry.name == "damaged":
                removals.append(Removal(entry, folder_bytes(entry), "stages set aside as damaged"))
            elif entry.name not in folders:
                removals.append(Removal(entry, folder_bytes(entry), "a stage of other settings"))
            elif params and folders[entry.name].endswith(".out"):
                removals += _params_removal(ckpts, entry, folders[entry.name])
    # a folder of locks inside one being removed is removed with it
    paths = {r.path for r in removals}
    removals = [r for r in removals if not any(p in paths for p in r.path.parents)]
    return removals, notes


def _stage_folders(used: list[str]) -> dict[str, str]:
    """Folder name -> stage name, for every checkpoint a run used (its in-stage steps and its
    outputs): a name with characters unsafe in a path (a chain's ``>``) has a folder of another name."""
    from w2sjax.runner.checkpoint import stage_dirname

    return {stage_dirname(n): n for name in used for n in (name, f"{name}.out")}


def _params_removal(ckpts: pathlib.Path, folder: pathlib.Path, stage: str) -> list[Removal]:
    from w2sjax.runner import checkpoint

    size = checkpoint.model_bytes(ckpts, stage)
    return [Removal(folder, size, "trained parameters of a stage the run used; its predictions stay", stage)] \
        if size else []


def remove(removals: list[Removal]) -> None:
    """Delete what :func:`prune_candidates` listed, deepest first; a run folder is locked while its
    checkpoints go, so no run starts in it meanwhile."""
    for r in sorted(removals, key=lambda r: len(r.path.parts), reverse=True):
        if r.path.parent.name == "checkpoints":
            run = r.path.parent.parent
            rundir.lock(run)
            try:
                if r.stage:
                    from w2sjax.runner import checkpoint

                    checkpoint.drop_model(r.path.parent, r.stage)
                else:
                    shutil.rmtree(r.path, ignore_errors=True)
            finally:
                rundir.release(run)
        else:
            shutil.rmtree(r.path, ignore_errors=True)


def drop_params(run_dir: str | os.PathLike) -> list[Removal]:
    """Drop the trained parameters of every stage that the finished run in ``run_dir`` used (as its
    ``results.json`` lists them), keeping their predictions; returns what was dropped (``bytes``
    each). Nothing when the run has not finished or is in progress. A rerun reuses every stage
    and writes the same results; ``Runner.trained_module`` then raises ``checkpoint.ModelDropped``."""
    removals = [r for r in prune_candidates(run_dir, params=True)[0] if r.stage]
    remove(removals)
    return removals
