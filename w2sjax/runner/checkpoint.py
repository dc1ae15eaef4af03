"""Stage checkpoints: four small functions over Orbax's ``CheckpointManager``.

Layout: ``ckpt_dir`` (an experiment's ``checkpoints/`` folder) holds one
sub-folder per *stage* (``weak__glove-bow__seed0``, ...), and inside it one
folder per saved training step. A step holds two items, three with a model: ``state``, any pytree
of jax/numpy arrays and Python scalars (parameters, optimizer state,
predictions, pseudo-labels, rng keys, a data-iterator position), ``meta``, a
small JSON dict, and optionally ``model``, a finished stage's trained
parameters, restored on its own. A step saved with ``final=True`` marks the
stage done; it is never deleted by the retention policy.

    save(ckpt_dir, stage, step, state, meta=..., final=..., checksum=..., model=...)
    is_done(ckpt_dir, stage) -> bool
    latest(ckpt_dir, stage) -> (step, meta) | None
    restore(ckpt_dir, stage, target, step=None) -> (state, meta)
    restore_model(ckpt_dir, stage, target) -> (params, meta)
    drop_model(ckpt_dir, stage) -> bytes freed;  model_bytes(ckpt_dir, stage) -> bytes
    restore_newest_good(ckpt_dir, stage, target) -> (state, meta) | None
    move_aside(ckpt_dir, stage, step=None) -> path
    remove(ckpt_dir, stage)

Damage is an error of its own, :class:`DamagedCheckpoint`, never a raw Orbax
traceback: a step whose files Orbax cannot read, or whose state does not match
the sha256 recorded at save time (``save(..., checksum=True)``, used for every
checkpoint the runner writes; a ``model`` item always carries its own).
Callers recover by moving the damaged step or stage aside (into
``ckpt_dir/damaged/``, kept for inspection) and falling back to an older step
or retraining.

A finished stage's ``model`` item can be dropped to save disk (``drop_model``):
its meta then records the dropped item's sha256 and size, the step stays final
and its ``state`` (predictions, pseudo-labels) restores and is checked as
before; only ``restore_model`` answers :class:`ModelDropped`, which is not damage.

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
import logging
import os
import re
import shutil
import sys
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from w2sjax.runner import atomic, sigint

__all__ = [
    "DamagedCheckpoint", "save", "is_done", "latest", "restore", "restore_model", "restore_newest_good",
    "move_aside", "remove", "stage_dirname", "state_sha256", "exists", "ModelDropped", "drop_model", "model_bytes",
]

_STATE = "state"
_META = "meta"
_MODEL = "model"
_FINAL_KEY = "w2sjax_final"
_SHA_KEY = "w2sjax_sha256"  # in meta: the checksum of the saved state, when asked for
_MODEL_SHA_KEY = "w2sjax_model_sha256"  # in meta: the checksum of the model item, when there is one
_DROPPED_KEY = "w2sjax_model_dropped"  # in meta: the model item was dropped; its sha256 and bytes
_DAMAGED = "damaged"


class DamagedCheckpoint(RuntimeError):
    """A saved step cannot be restored, or restores to other bytes than were saved."""

    def __init__(self, stage: str, step: int | None, reason: str):
        super().__init__(f"checkpoint step {step} of stage {stage!r} is damaged ({reason})")
        self.stage, self.step, self.reason = stage, step, reason


class ModelDropped(FileNotFoundError):
    """A finished stage's trained parameters were dropped to save disk; its predictions are kept."""

    def __init__(self, stage: str, step: int | None):
        super().__init__(f"the trained parameters of stage {stage!r} (step {step}) were dropped to save disk "
                         "(`w2sjax prune --params`); its predictions are kept; to have the parameters again, move "
                         "the stage's folder away and run again to retrain it")
        self.stage, self.step = stage, step


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


def _handlers(compress: bool = False) -> dict:
    # Registering handlers up front lets metadata reads parse both items
    # (with bare item names Orbax logs that it "could not restore" them).
    return {_STATE: _compression(ocp.StandardCheckpointHandler(), compress), _META: ocp.JsonCheckpointHandler(),
            _MODEL: _compression(ocp.StandardCheckpointHandler(), compress)}


def _compression(handler: ocp.StandardCheckpointHandler, compress: bool) -> ocp.StandardCheckpointHandler:
    """``handler`` writing its arrays with or without Orbax's zstd compression (stages are saved
    without: ``_handlers``' default).

    Trained float32 weights hardly compress (MiniLM-L6's 90 MB of parameters took 80 MB), and
    compressing them took ~0.3 s of a ~1 s save on a 2-core CPU (2026-12-07). Reads take each
    array's codecs from its own metadata, so checkpoints written compressed still restore. The
    checksums are over the arrays' values, so they are unchanged. Orbax's standard handler does
    not take the option itself; its inner handler keeps it in one attribute (Orbax 0.12), and
    another Orbax keeps its default."""
    inner = getattr(getattr(handler, "_impl", None), "_handler_impl", None)
    if inner is not None and isinstance(getattr(inner, "_use_compression", None), bool):
        inner._use_compression = compress
    return handler


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


def _final_flag(mngr: ocp.CheckpointManager, step: int) -> bool | None:
    """Whether ``step`` was saved as final; None when its step metadata is unreadable."""
    # The step's own metadata file alone: mngr.metadata() also parses the items' metadata,
    # and a damaged item must not make a finished stage look unfinished.
    try:
        step_path = ocp.step.standard_name_format().find_step(mngr.directory, step).path
        custom = json.loads((step_path / "_CHECKPOINT_METADATA").read_text()).get("custom_metadata")
        return bool((custom or {}).get(_FINAL_KEY, False))
    except Exception:
        return None


def _step_is_final(mngr: ocp.CheckpointManager, step: int) -> bool:
    return bool(_final_flag(mngr, step))


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
    checksum: bool = False,
    model: Any = None,
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
      checksum: record ``state_sha256(state)`` in the meta, checked by ``restore``.
      model: a pytree saved as a third item, beside ``state`` and restored only by
        ``restore_model`` (a finished stage's trained parameters); always checksummed.

    Saving a step that already exists replaces it. Call on every process.
    """
    path = _stage_path(ckpt_dir, stage)
    meta = _jsonable(meta)
    if checksum:
        meta[_SHA_KEY] = state_sha256(state)
    if model is not None:
        meta[_MODEL_SHA_KEY] = state_sha256(model)
    with sigint.deferred():  # Ctrl-C waits for the save to finish, then stops the run
        _save(path, step, state, meta, final, keep, model)


def _save(path: str, step: int, state: Any, meta: dict, final: bool, keep: int, model: Any = None) -> None:
    _whole_array_writes()
    mngr = _writer(path, keep)
    try:
        if step in mngr.all_steps():
            # Replacing is a delete plus a save: a crash in between loses
            # this step but never corrupts the ones before it.
            mngr.delete(step)
        items = {_STATE: ocp.args.StandardSave(state), _META: ocp.args.JsonSave(meta)}
        if model is not None:
            items[_MODEL] = ocp.args.StandardSave(model)
        mngr.save(
            int(step),
            args=ocp.args.Composite(**items),
            custom_metadata={_FINAL_KEY: bool(final)},
            force=True,
        )
        mngr.wait_until_finished()
    finally:
        mngr.close()


_whole_writes_set = False


def _whole_array_writes() -> None:
    """On one host whose devices are all CPUs, write each array from one replica, whole.

    Orbax splits the write of an array replicated over several devices among the replicas, each
    slicing its part on the device first: one small XLA program per array shape, compiled on the
    main thread (22 in the sweep's first run, ~0.5 s of compiling, 2026-12-07). Host CPU devices
    share one memory and one disk, so the split gains nothing there; what is written reads back the same.
    Orbax keeps one registry of handlers, so this holds for the whole process.
    """
    global _whole_writes_set
    if _whole_writes_set:
        return
    _whole_writes_set = True
    if jax.process_count() != 1 or any(d.platform != "cpu" for d in jax.devices()):
        return
    try:  # Orbax's default handler keeps array metadata (typed PRNG keys) in this store
        from orbax.checkpoint._src.metadata.array_metadata_store import Store
    except ImportError:  # another Orbax: keep its default handler
        return
    handler = ocp.type_handlers.ArrayHandler(use_replica_parallel=False, array_metadata_store=Store())
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)  # Orbax warns that it overrides its handler, which is the point
    try:
        ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)
    finally:
        absl.setLevel(level)


def latest(ckpt_dir: str | os.PathLike, stage: str) -> tuple[int, dict] | None:
    """``(step, meta)`` of the newest complete step of ``stage``, or None."""
    path = _stage_path(ckpt_dir, stage)
    if not _exists(path):
        return None
    mngr = _reader(path)
    try:
        step = mngr.latest_step()
        if step is None:
            return None
        try:
            meta = _read_meta(mngr, step)
        except Exception:  # damaged; restoring the step reports it and recovers
            meta = {}
        return step, meta
    finally:
        mngr.close()


def is_done(ckpt_dir: str | os.PathLike, stage: str) -> bool:
    """True when some step of ``stage`` was saved with ``final=True``.

    Raises DamagedCheckpoint when no step is final and some step's metadata is unreadable.
    """
    path = _stage_path(ckpt_dir, stage)
    if not _exists(path):
        return False
    mngr = _reader(path)
    try:
        # Newest first: the final step is normally the last one saved.
        flags = {s: _final_flag(mngr, s) for s in sorted(mngr.all_steps(), reverse=True)}
    finally:
        mngr.close()
    if any(flags.values()):
        return True
    unreadable = [s for s, flag in flags.items() if flag is None]
    if unreadable:
        raise DamagedCheckpoint(stage, unreadable[0], "its _CHECKPOINT_METADATA is unreadable")
    return False


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
    require_checksum: bool = False,
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

    The state is checked against the sha256 recorded when it was saved, if one
    was; ``require_checksum`` makes a step saved without one count as damaged.

    Raises:
      FileNotFoundError: the stage has no complete step (or not ``step``).
      DamagedCheckpoint: the step is unreadable or differs from what was saved.
    """
    return _restore_item(ckpt_dir, stage, target, step, _STATE, _SHA_KEY, require_checksum)


def restore_model(ckpt_dir: str | os.PathLike, stage: str, target: Any, *, step: int | None = None) -> tuple[Any, dict]:
    """``(model, meta)``: the ``model`` item saved with ``save(..., model=...)``, checked against its
    sha256 (``target`` as for :func:`restore`). DamagedCheckpoint when it is missing, unreadable or
    differs from what was saved; ModelDropped when :func:`drop_model` removed it."""
    found = latest(ckpt_dir, stage) if step is None else (step, _step_meta(ckpt_dir, stage, step))
    if found is not None and _DROPPED_KEY in found[1]:
        raise ModelDropped(stage, found[0])
    return _restore_item(ckpt_dir, stage, target, step, _MODEL, _MODEL_SHA_KEY, True)


def _restore_item(ckpt_dir, stage: str, target: Any, step: int | None, item: str, sha_key: str,
                  require_checksum: bool) -> tuple[Any, dict]:
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
        _ignore_late_reads()
        try:
            with sigint.deferred():  # no Orbax threads left behind by a Ctrl-C
                restored = mngr.restore(
                    step,
                    args=ocp.args.Composite(
                        **{
                            item: ocp.args.StandardRestore(_restore_target(target)),
                            _META: ocp.args.JsonRestore(),
                        }
                    ),
                )
            state, meta = restored[item], dict(restored[_META] or {})
        except Exception as e:  # Orbax and TensorStore raise many kinds; all mean "unreadable"
            reason = _one_line(e) if item == _STATE else f"its {item} is unreadable: {_one_line(e)}"
            raise DamagedCheckpoint(stage, step, reason) from None
        expected = meta.get(sha_key)
        for key in (_SHA_KEY, _MODEL_SHA_KEY, _DROPPED_KEY):
            meta.pop(key, None)
        if expected is None and require_checksum:
            raise DamagedCheckpoint(stage, step, f"no sha256 of its {item} was recorded when saved")
        if expected is not None and state_sha256(state) != expected:
            raise DamagedCheckpoint(stage, step, f"its {item} differs from the sha256 recorded when saved")
        return state, meta
    finally:
        mngr.close()


def _step_meta(ckpt_dir, stage: str, step: int) -> dict:
    """The meta of ``step`` of ``stage``; {} when it is missing or unreadable."""
    path = _stage_path(ckpt_dir, stage)
    if not _exists(path):
        return {}
    mngr = _reader(path)
    try:
        return _read_meta(mngr, step)
    except Exception:  # missing or damaged: restoring the step reports it
        return {}
    finally:
        mngr.close()


def _final_model_dirs(ckpt_dir, stage: str) -> list[tuple[str, Any]]:
    """``(meta file, model folder)`` of each final step of ``stage`` (local folders)."""
    path = _stage_path(ckpt_dir, stage)
    if not _exists(path):
        return []
    mngr = _reader(path)
    try:
        found = []
        for step in mngr.all_steps():
            if _final_flag(mngr, step):
                step_path = ocp.step.standard_name_format().find_step(mngr.directory, step).path
                found.append((os.fspath(step_path / _META / "metadata"), os.fspath(step_path / _MODEL)))
        return found
    finally:
        mngr.close()


def _folder_size(path: str) -> int:
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files
               if not os.path.islink(os.path.join(root, f)))


def model_bytes(ckpt_dir: str | os.PathLike, stage: str) -> int:
    """Bytes the ``model`` items of ``stage``'s final steps take on disk (0: none, or dropped)."""
    return sum(_folder_size(model) for _, model in _final_model_dirs(ckpt_dir, stage) if os.path.isdir(model))


def drop_model(ckpt_dir: str | os.PathLike, stage: str) -> int:
    """Delete the ``model`` item (trained parameters) of each final step of ``stage``, keeping its
    state and meta; returns the bytes freed. The stage stays finished: ``restore`` of its state
    works and is checked as before, ``restore_model`` raises :class:`ModelDropped`.

    The meta is rewritten first (atomically), recording the dropped item's sha256 and size, then
    the folder goes: a kill in between leaves a stage marked dropped whose leftover files the
    next call removes. A step whose meta is unreadable is left alone (its restore reports the
    damage). Local folders, one process."""
    freed = 0
    for meta_file, model in _final_model_dirs(ckpt_dir, stage):
        if not os.path.isdir(model):
            continue
        try:
            with open(meta_file) as f:
                meta = json.load(f)
        except (OSError, ValueError):
            continue
        size = _folder_size(model)
        if _DROPPED_KEY not in meta:
            meta[_DROPPED_KEY] = {"sha256": meta.pop(_MODEL_SHA_KEY, None), "bytes": size}
            atomic.write_json(meta_file, meta)
        shutil.rmtree(model, ignore_errors=True)
        freed += size
    return freed


def restore_newest_good(
    ckpt_dir: str | os.PathLike, stage: str, target: Any, *, require_checksum: bool = False
) -> tuple[Any, dict] | None:
    """Like ``restore`` of the newest step, but a damaged step is moved aside and the next older
    one is tried; None when no step is left. Prints one warning line when it fell back."""
    path = _stage_path(ckpt_dir, stage)
    if not _exists(path):
        return None
    damaged: list[DamagedCheckpoint] = []
    result, good = None, None
    for step in sorted(_all_steps(path), reverse=True):
        try:
            result, good = restore(ckpt_dir, stage, target, step=step, require_checksum=require_checksum), step
            break
        except DamagedCheckpoint as e:
            damaged.append(e)
            move_aside(ckpt_dir, stage, step)
    if damaged:
        then = f"resuming from step {good}" if result else "restarting the stage"
        steps = ", ".join(str(e.step) for e in damaged)
        _warn(f"stage {stage!r}: checkpoint step {steps} damaged ({damaged[0].reason}); moved to "
              f"{os.path.join(os.fspath(ckpt_dir), _DAMAGED)}; {then}")
    return result


def _all_steps(path: str) -> list[int]:
    mngr = _reader(path)
    try:
        return list(mngr.all_steps())
    finally:
        mngr.close()


def move_aside(ckpt_dir: str | os.PathLike, stage: str, step: int | None = None) -> str | None:
    """Move a damaged ``step`` of ``stage`` (or the whole stage) into ``ckpt_dir/damaged/``.

    Returns the new path, or None when there was nothing to move. Only process 0 moves; the
    others wait for it. Local folders only.
    """
    src = _stage_path(ckpt_dir, stage)
    if not _exists(src):
        return None
    name = stage_dirname(stage)
    if step is not None:
        mngr = _reader(src)
        try:
            src = os.fspath(ocp.step.standard_name_format().find_step(mngr.directory, step).path)
        finally:
            mngr.close()
        name = f"{name}.step{step}"
    dest_dir = os.path.join(os.path.dirname(_stage_path(ckpt_dir, stage)), _DAMAGED)
    dest = os.path.join(dest_dir, f"{name}.{time.strftime('%Y%m%d-%H%M%S')}.{os.getpid()}")
    if jax.process_index() == 0:
        os.makedirs(dest_dir, exist_ok=True)
        os.replace(src, dest)
    _sync(f"w2sjax_move_aside_{name}")
    return dest


def remove(ckpt_dir: str | os.PathLike, stage: str) -> bool:
    """Delete every step of ``stage`` (e.g. a finished stage's in-stage steps); True when there
    was something to delete. Only process 0 deletes; the others wait for it. Local folders only."""
    path = _stage_path(ckpt_dir, stage)
    found = _exists(path)
    if found and jax.process_index() == 0:
        shutil.rmtree(path, ignore_errors=True)
    _sync(f"w2sjax_remove_{stage_dirname(stage)}")
    return found


def exists(ckpt_dir: str | os.PathLike, stage: str) -> bool:
    """Whether ``stage`` has a folder in ``ckpt_dir`` (complete steps or not)."""
    return _exists(_stage_path(ckpt_dir, stage))


def state_sha256(state: Any) -> str:
    """sha256 over a state's leaves: their tree paths, dtypes, shapes and bytes.

    The same value whatever the arrays' placement: a leaf sharded over several processes is
    gathered first (every process must call this then).
    """
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        a = _host_value(leaf)
        h.update(f"{jax.tree_util.keystr(path)}|{a.dtype.str}|{a.shape}|".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _host_value(leaf: Any) -> np.ndarray:
    if isinstance(leaf, jax.Array):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        if not (leaf.is_fully_addressable or leaf.is_fully_replicated):
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
    return np.asarray(leaf)


def _ignore_late_reads() -> None:
    """When a restore fails, TensorStore reads still in flight complete on Orbax's event loop,
    which is closed by then; each reports "RuntimeError: Event loop is closed" through
    ``sys.unraisablehook``, possibly before the failure reaches us. They are leftovers of a damage
    that is reported anyway: keep them quiet (that one message only)."""
    if sigint.hook_chain_holds(sys.unraisablehook, lambda hook: getattr(hook, "_w2sjax", False)):
        return
    previous = sys.unraisablehook

    def hook(unraisable):
        value = unraisable.exc_value
        if not (isinstance(value, RuntimeError) and str(value) == "Event loop is closed"):
            previous(unraisable)

    hook._w2sjax, hook._w2sjax_previous = True, previous
    sys.unraisablehook = hook
    # The same leftovers can also surface as asyncio's "Task exception was never retrieved" log
    # record, when a failed TensorStore read task is garbage-collected: drop those from Orbax only.
    logging.getLogger("asyncio").addFilter(_not_a_lost_orbax_read)


def _not_a_lost_orbax_read(record: logging.LogRecord) -> bool:
    if not record.getMessage().startswith("Task exception was never retrieved") or not record.exc_info:
        return True
    if "tensorstore_spec" in str(record.exc_info[1]):  # a TensorStore read of a damaged file; its
        return False  # traceback holds only asyncio's frames, so the check below cannot see Orbax
    tb = record.exc_info[2]
    while tb is not None:
        if "orbax" in tb.tb_frame.f_code.co_filename:
            return False
        tb = tb.tb_next
    return True


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return f"{type(e).__name__}: {text[:200]}"


def _warn(message: str) -> None:
    if jax.process_index() == 0:
        print(f"w2sjax: warning: {message}", file=sys.stderr, flush=True)


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
