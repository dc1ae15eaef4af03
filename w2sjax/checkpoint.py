"""Stage checkpoints: four small functions over Orbax's ``CheckpointManager``.

Layout: ``ckpt_dir`` (an experiment's ``checkpoints/`` folder) holds one
sub-folder per *stage* (``weak__glove-bow__seed0``, ...), and inside it one
folder per saved training step. A step holds two items: ``state``, any pytree
of jax/numpy arrays and Python scalars (parameters, optimizer state,
predictions, pseudo-labels, rng keys, a data-iterator position), and
``meta``, a small JSON dict. A step saved with ``final=True`` marks the stage
done; it is never deleted by the retention policy.

    save(ckpt_dir, stage, step, state, meta=..., final=...)
    is_done(ckpt_dir, stage) -> bool
    latest(ckpt_dir, stage) -> (step, meta) | None
    restore(ckpt_dir, stage, target, step=None) -> (state, meta)

Saves are synchronous and atomic: Orbax writes into a temporary folder and
renames it when complete, so a process killed mid-save leaves the previous
step as the latest one. Leftover temporary folders are ignored by readers and
removed by the next ``save``.

Multi-process runs: call ``save`` and ``restore`` on every process (they are
collective; Orbax has each process write its own shards and process 0 write
the metadata). ``is_done`` and ``latest`` only read files.

Orbax itself stays inside this module.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from typing import Any, Callable, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

__all__ = ["save", "is_done", "latest", "restore", "stage_dirname"]

_STATE = "state"
_META = "meta"
_FINAL_KEY = "w2sjax_final"
_DEFAULT_KEEP = 2


# --------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------


def stage_dirname(stage: str) -> str:
    """The folder name used for ``stage``: the name itself when it is safe.

    Characters outside ``[A-Za-z0-9._-]`` become ``_``; when anything had to
    change, a short hash of the original name is appended so that two
    different stage names never share a folder.
    """
    if not stage:
        raise ValueError("stage name must be non-empty")
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", stage).strip("._-") or "stage"
    if safe == stage and len(safe) <= 120:
        return safe
    digest = hashlib.sha1(stage.encode("utf-8")).hexdigest()[:10]
    return f"{safe[:120]}-{digest}"


def _stage_path(ckpt_dir: str | os.PathLike, stage: str) -> str:
    root = os.fspath(ckpt_dir)
    if "://" not in root:  # Orbax wants absolute local paths; keep gs:// as is.
        root = os.path.abspath(root)
    return os.path.join(root, stage_dirname(stage))


def _exists(path: str) -> bool:
    if "://" in path:
        from etils import epath  # an Orbax dependency; handles gs:// etc.

        return epath.Path(path).exists()
    return os.path.isdir(path)


# --------------------------------------------------------------------------
# Managers
# --------------------------------------------------------------------------


@dataclasses.dataclass
class _KeepLatestAndFinal:
    """Orbax retention policy: the ``keep`` newest steps plus every final one."""

    keep: int
    is_final: Callable[[int], bool] = lambda step: False

    def should_preserve(self, checkpoints: Sequence[Any], *, context: Any) -> list[bool]:
        first_kept = len(checkpoints) - self.keep
        return [i >= first_kept or self.is_final(c.step) for i, c in enumerate(checkpoints)]


def _handlers() -> dict:
    # Registering handlers up front lets metadata reads parse both items
    # (with bare item names Orbax logs that it "could not restore" them).
    return {_STATE: ocp.StandardCheckpointHandler(), _META: ocp.JsonCheckpointHandler()}


def _writer(path: str, keep: int) -> ocp.CheckpointManager:
    policy = _KeepLatestAndFinal(keep=max(1, keep))
    options = ocp.CheckpointManagerOptions(
        enable_async_checkpointing=False,
        preservation_policy=policy,
        # Temporary folders of a save killed earlier are deleted here.
        cleanup_tmp_directories=True,
        create=True,
    )
    mngr = ocp.CheckpointManager(path, options=options, item_handlers=_handlers())
    policy.is_final = lambda step: _step_is_final(mngr, step)
    return mngr


def _reader(path: str) -> ocp.CheckpointManager:
    # No directory creation and no root metadata: reading stays free of
    # cross-process barriers, so one process may call it alone.
    options = ocp.CheckpointManagerOptions(
        create=False,
        save_root_metadata=False,
        enable_async_checkpointing=False,
        lightweight_initialize=True,
    )
    return ocp.CheckpointManager(path, options=options, item_handlers=_handlers())


def _step_is_final(mngr: ocp.CheckpointManager, step: int) -> bool:
    custom = mngr.metadata(step).custom_metadata or {}
    return bool(custom.get(_FINAL_KEY, False))


def _read_meta(mngr: ocp.CheckpointManager, step: int) -> dict:
    # The handler alone, not mngr.restore: the latter ends in a barrier
    # across processes, and readers must work when called on one process.
    step_path = ocp.step.standard_name_format().find_step(mngr.directory, step).path
    return dict(ocp.JsonCheckpointHandler().restore(step_path / _META) or {})


def _jsonable(meta: dict | None) -> dict:
    """``meta`` as plain JSON types (numpy and jax scalars become numbers)."""

    def convert(x):
        if isinstance(x, (np.generic, np.ndarray, jax.Array)):
            return np.asarray(x).tolist()
        raise TypeError(f"checkpoint meta value {x!r} is not JSON-serialisable")

    return json.loads(json.dumps(dict(meta or {}), default=convert))


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


def save(
    ckpt_dir: str | os.PathLike,
    stage: str,
    step: int,
    state: Any,
    *,
    meta: dict | None = None,
    final: bool = False,
    keep: int = _DEFAULT_KEEP,
) -> None:
    """Saves ``state`` and ``meta`` as ``step`` of ``stage``; returns when on disk.

    Args:
      ckpt_dir: the experiment's checkpoint folder.
      stage: any string naming the stage (see ``stage_dirname``).
      step: training step, a non-negative int.
      state: pytree of ``jax.Array`` (sharded or not), numpy arrays and
        Python scalars.
      meta: JSON-serialisable dict stored next to the state (numpy and jax
        scalars are converted to numbers).
      final: marks the stage complete (``is_done`` becomes True); final steps
        are kept forever.
      keep: how many of the newest steps to keep besides final ones.

    Saving a step that already exists replaces it. Call on every process.
    """
    path = _stage_path(ckpt_dir, stage)
    mngr = _writer(path, keep)
    try:
        if step in mngr.all_steps():
            # Replacing is a delete plus a save: a crash in between loses
            # this step but never corrupts the ones before it.
            mngr.delete(step)
        mngr.save(
            int(step),
            args=ocp.args.Composite(
                **{
                    _STATE: ocp.args.StandardSave(state),
                    _META: ocp.args.JsonSave(_jsonable(meta)),
                }
            ),
            custom_metadata={_FINAL_KEY: bool(final)},
            force=True,
        )
        mngr.wait_until_finished()
    finally:
        mngr.close()


def latest(ckpt_dir: str | os.PathLike, stage: str) -> tuple[int, dict] | None:
    """``(step, meta)`` of the newest complete step of ``stage``, or None."""
    path = _stage_path(ckpt_dir, stage)
    if not _exists(path):
        return None
    mngr = _reader(path)
    try:
        step = mngr.latest_step()
        return None if step is None else (step, _read_meta(mngr, step))
    finally:
        mngr.close()


def is_done(ckpt_dir: str | os.PathLike, stage: str) -> bool:
    """True when some step of ``stage`` was saved with ``final=True``."""
    path = _stage_path(ckpt_dir, stage)
    if not _exists(path):
        return False
    mngr = _reader(path)
    try:
        # Newest first: the final step is normally the last one saved.
        return any(_step_is_final(mngr, s) for s in sorted(mngr.all_steps(), reverse=True))
    finally:
        mngr.close()


def _replicated_everywhere() -> NamedSharding:
    return NamedSharding(Mesh(np.asarray(jax.devices()), ("all",)), P())


def _restore_target(target: Any) -> Any:
    """Turns a concrete or abstract state into what ``StandardRestore`` wants."""
    default = None

    def one(leaf):
        nonlocal default
        if isinstance(leaf, (jax.Array, jax.ShapeDtypeStruct)):
            sharding = getattr(leaf, "sharding", None)
            # A single-device placement means "this process's device", which
            # is not one global placement when there are several processes.
            if sharding is None or (
                jax.process_count() > 1 and not isinstance(sharding, NamedSharding)
            ):
                default = default or _replicated_everywhere()
                sharding = default
            return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)
        if isinstance(leaf, (np.ndarray, np.generic)):
            return np.asarray(leaf)  # stays numpy after restore
        return leaf  # Python scalars

    return jax.tree.map(one, target)


def restore(
    ckpt_dir: str | os.PathLike,
    stage: str,
    target: Any,
    *,
    step: int | None = None,
) -> tuple[Any, dict]:
    """Restores ``(state, meta)`` of ``step`` (default: the newest) of ``stage``.

    ``target`` gives the structure, dtypes and placement of the result; it may
    be concrete or abstract:

    * ``jax.ShapeDtypeStruct`` with ``sharding=`` (e.g. from
      ``jax.eval_shape`` plus ``parallel.param_shardings``) or a ``jax.Array``:
      restored as a ``jax.Array`` with that sharding, whatever the mesh at
      save time. Without a sharding (and, with several processes, with a
      single-device one) it is replicated on every device.
    * numpy arrays and numpy scalars: restored as numpy arrays.
    * Python scalars: restored as Python scalars.

    Raises:
      FileNotFoundError: the stage has no complete step (or not ``step``).
    """
    path = _stage_path(ckpt_dir, stage)
    if not _exists(path):
        raise FileNotFoundError(f"no checkpoint for stage {stage!r} in {ckpt_dir}")
    mngr = _reader(path)
    try:
        steps = mngr.all_steps()
        if step is None:
            step = mngr.latest_step()
        if step is None or step not in steps:
            raise FileNotFoundError(
                f"stage {stage!r} has no step {step} in {ckpt_dir} (has {sorted(steps)})"
            )
        restored = mngr.restore(
            step,
            args=ocp.args.Composite(
                **{
                    _STATE: ocp.args.StandardRestore(_restore_target(target)),
                    _META: ocp.args.JsonRestore(),
                }
            ),
        )
        return restored[_STATE], dict(restored[_META] or {})
    finally:
        mngr.close()
