"""The weak-to-strong protocol as resumable stages, and the sweep every protocol runs through.

For every seed:

1. **weak**: each weak model trains on the supervisor half's ground truth and predicts the
   student half (its soft pseudo-labels), the validation slice and the test split;
2. **ceiling**: each strong model trains on the student half's ground truth;
3. **w2s**: each (weak, strong, loss) triple trains the strong model on the student half's weak labels;
4. **bootstrap** chains (``a>b>c``): each model supervises the next on the student half.

``options.labels`` adds, per w2s triple, students trained on refined weak labels
(:func:`w2sjax.pseudo_labels.refine`). Other protocols (``config.method``) live in
:mod:`w2sjax.methods`; each, like :func:`run`, hands :func:`sweep` a function from one seed's
:class:`SeedRun` to its result rows, then writes them with :func:`finish`.

Weak and ceiling stages are trained once and shared by every pair that needs them. A rerun on
the same output directory reuses the stages whose settings match and resumes the others, so an
interrupted run ends with the same ``results.json`` as an uninterrupted one.

Its pieces, one job each, are importable from here too: model inputs (:mod:`w2sjax.inputs`),
stages (:mod:`w2sjax.runner.stage_runner`), the printed plan (:mod:`w2sjax.report.plan`), task
shifts (:mod:`w2sjax.data.shift`), result rows (:mod:`w2sjax.report.results`).
"""

from __future__ import annotations

import os
import pathlib
from typing import Callable, Iterable, Iterator

import jax
import numpy as np

from w2sjax import metrics, parallel, train
from w2sjax.config import Config, ConfigError, to_dict
from w2sjax.runner import atomic, compile_stats, memory, rundir, sigint, stage_keys, tensorboard_log
# Re-exported: other programs import these names from here.
from w2sjax.data.shift import _domain_shift, shift_task  # noqa: F401
from w2sjax.inputs import Inputs, ModelInputs  # noqa: F401
from w2sjax.report.plan import (  # noqa: F401
    FEW_STEPS, SMALL_HALF, _earlier_seconds, _warn, announce_data, announce_plan, plan_then_train, warn_probed_students,
)
from w2sjax.report.results import stage_row as _row
from w2sjax.runner.stage_runner import (  # noqa: F401
    PREDICT_ROWS, USED as _USED, MetricsLog, Runner, StageOutput, _describe_mesh, _disk_estimate, _logged_after,
    _OrbaxStage, _StageLog, mesh_identity,
)


def _one_hot(labels: np.ndarray, n: int) -> np.ndarray:
    return np.eye(n, dtype=np.float32)[labels]


def _acc(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(metrics.accuracy(probs, labels))


# ---- validation -----------------------------------------------------------------------------

def validate(config: Config, names=None) -> None:
    """Check every model name in the config (or ``names``) before any work or any write.
    Raises ConfigError."""
    from w2sjax import models

    if names is None:
        names = {*config.weak_models, *config.strong_models, *(m for c in config.bootstrap for m in c.split(">"))}
    for name in sorted(names):
        try:
            models.get_model(name)
        except ValueError as exc:
            raise ConfigError(f"model: {exc}") from None


def _load_task(config: Config):
    from w2sjax import data

    try:
        return data.load_task(config.data.task, text_field=config.data.text_field,
                              label_field=config.data.label_field, label_map=config.data.label_map)
    except (ValueError, FileNotFoundError) as exc:
        raise ConfigError(f"data.task: {exc}") from None


# ---- the protocol ---------------------------------------------------------------------------

# Compile counters at the start of each run (by output directory), so `finish` reports the run's own.
_COMPILES_AT_START: dict[str, dict] = {}


def prepare(config: Config, out_dir: str | os.PathLike, *, progress: bool = True, models_used=None):
    """Everything before the first stage, shared by the standard protocol and ``w2sjax.methods``:
    join other processes, check names, build the mesh, load (and maybe shift) the task, create
    ``out_dir``. Returns ``(runner, task, out)``. Raises :class:`ConfigError` on bad input.
    """
    # First, before anything touches a JAX backend: join the other processes, if any are configured
    # (JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, or cluster auto-detection).
    parallel.maybe_initialize_distributed(auto=config.parallel.distributed)
    _COMPILES_AT_START[str(out_dir)] = compile_stats.install()
    validate(config, models_used)
    names = set(config.weak_models) | set(config.strong_models) if models_used is None else set(models_used)
    chained = {m for chain in config.bootstrap for m in chain.split(">")} if models_used is None else set()
    memory.moving_to(names | chained)  # a process running one model after another holds one at a time
    try:
        mesh = parallel.make_mesh(config.parallel.data, config.parallel.fsdp)
    except ValueError as exc:
        raise ConfigError(f"parallel: {exc}") from None
    out = pathlib.Path(out_dir)
    rundir.check(out)
    rundir.lock(out, process=jax.process_index())  # one run per directory, before anything is written
    if parallel.is_main_process():
        atomic.remove_stale(out)  # left by a run killed while writing results.json
    task = _load_task(config)
    for model_name in sorted(names):
        _check_modality(model_name, task)
    if config.options.shift != "none":
        task = shift_task(task, config.options.shift)

    config = train.with_compile_cost(config)
    runner = Runner(config, out, mesh, task, progress)
    task.train["row"], task.test["row"] = (np.arange(len(split["label"])) for split in (task.train, task.test))
    if parallel.is_main_process():
        announce_data(config, task, SeedRun.splits_of(config, task, config.seeds[0]))
    return runner, task, out


class SeedRun:
    """One seed's splits and the stages every protocol builds from them.

    Stages are named by :class:`w2sjax.runner.stage_keys.StageKey`: the same key and settings mean the same
    model, trained once and shared by every pair (and every method) that needs it.
    """

    def __init__(self, runner: Runner, task, seed: int):
        config = runner.config
        self.runner, self.task, self.seed, self.config = runner, task, seed, config
        splits = self.splits_of(config, task, seed)
        runner.record_splits(seed, splits)  # rows and labels that reports score saved predictions against
        # The supervisor half trains the supervisors; the student half is what they pseudo-label, and
        # trains the students (and the ceiling, on its ground truth).
        self.supervisor_half, self.student_half = splits.supervisor_half, splits.student_half
        self.val, self.test = splits.val, splits.test
        # Every stage predicts these sets when it ends; "b" (the student half) of a supervisor's predictions
        # holds the pseudo-labels (:meth:`pseudo_labels`). The names are stored in checkpoints.
        self.evals = {"b": ("train", self.student_half["row"]), "val": ("train", self.val["row"]),
                      "test": ("test", self.test["row"])}

    @staticmethod
    def splits_of(config: Config, task, seed: int):
        """The seed's A / B / val / test splits under ``config.data``."""
        from w2sjax import data

        try:
            d = config.data
            return data.make_splits(task, seed=seed, n_train=d.n_train, n_val=d.n_val, n_test=d.n_test,
                                    balance=d.balance, balance_train=d.balance_train)
        except ValueError as exc:
            raise ConfigError(f"data: {exc}") from None

    def gt(self, split: dict) -> np.ndarray:
        return _one_hot(split["label"], self.task.num_classes)

    def weak(self, name: str, *, rows=None, weights=None, variant: str = "") -> StageOutput:
        """Supervisor ``name`` trained on the supervisor half's ground truth (or on ``rows`` of it, as ``variant``)."""
        rows = self.supervisor_half["row"] if rows is None else rows
        labels = _one_hot(self.task.train["label"][rows], self.task.num_classes)
        return self.runner.stage(
            stage_keys.StageKey.weak(name, self.seed, variant=variant), model=name, frozen_features=True, rows=rows,
            labels=labels,
            val_rows=self.val["row"], val_labels=self.gt(self.val), evals=self.evals,
            cfg=self.config.weak_train, loss="xent", seed=self.seed, weights=weights,
        )

    def strong(self, key: stage_keys.StageKey, name: str, labels, val_labels, loss: str, *, rows=None, cfg=None,
               frozen_features: bool = False, sources=None) -> StageOutput:
        """Student ``name`` trained on the student half (or ``rows``) with ``labels``; ``key`` names it and
        ``sources`` says which stage the labels came from (:meth:`Runner.settings`)."""
        return self.runner.stage(
            key, model=name, frozen_features=frozen_features, rows=self.student_half["row"] if rows is None else rows,
            labels=labels,
            val_rows=self.val["row"], val_labels=val_labels, evals=self.evals,
            cfg=self.config.train if cfg is None else cfg, loss=loss, seed=self.seed, sources=sources,
        )

    def ceiling(self, name: str) -> StageOutput:
        return self.strong(stage_keys.StageKey.ceiling(name, self.seed), name, self.gt(self.student_half),
                           self.gt(self.val), "xent")

    @staticmethod
    def pseudo_labels(supervisor: StageOutput) -> np.ndarray:
        """The pseudo-labels: ``supervisor``'s soft predictions ``[N_student, C]`` on the student half, which it
        never saw. Its stage made them when it ended (:meth:`Runner.stage` predicts every set of
        ``evals``); its students train on them."""
        return supervisor.preds["b"]

    def supervised(self, key: stage_keys.StageKey, strong_name: str, sup: StageOutput, loss: str, *, cfg=None,
                   val_labels=None, part: np.ndarray | None = None) -> StageOutput:
        """Student ``strong_name`` on the student half with the pseudo-labels of ``sup``; its validation labels
        are the supervisor's predictions too (all a real user has) unless ``val_labels`` are given.
        ``part``: positions in the student half to train on instead of all of it (a bootstrap rung's share)."""
        labels, rows, named = self.pseudo_labels(sup), self.student_half["row"], sup.source("b")
        if part is not None:
            labels, rows = labels[part], rows[part]
            named = None if named is None else f"{named}[{stage_keys.digest(part)}]"
        sources = {"labels": named, "val_labels": sup.source("val") if val_labels is None else None}
        return self.runner.stage(
            key, model=strong_name, frozen_features=False, rows=rows,
            labels=labels, val_rows=self.val["row"],
            val_labels=sup.preds["val"] if val_labels is None else val_labels, evals=self.evals,
            cfg=self.config.train if cfg is None else cfg, loss=loss, seed=self.seed, sources=sources,
        )

    def w2s(self, weak_name: str, strong_name: str, weak: StageOutput, loss: str) -> StageOutput:
        """The standard student of ``weak_name``'s supervision (the stage :func:`run` trains)."""
        return self.supervised(stage_keys.StageKey.w2s(weak_name, strong_name, loss, self.seed), strong_name, weak, loss)

    def pairs(self) -> Iterator[tuple[str, str, str, StageOutput, StageOutput]]:
        """``(weak_name, strong_name, loss, weak, ceiling)`` for every strong model, supervisor and
        loss of the config, in that nesting; each ceiling and supervisor stage runs once."""
        for s in self.config.strong_models:
            ceiling = self.ceiling(s)
            for w in self.config.weak_models:
                weak = self.weak(w)
                for loss in self.config.losses:
                    yield w, s, loss, weak, ceiling

    def row(self, weak_name, strong_name, loss, weak, w2s, ceiling) -> dict:
        if self.runner.planning:
            return {}
        return _row(self.task, self.config, self.seed, weak_name, strong_name, loss, weak, w2s, ceiling,
                    self.test["label"], self.student_half["label"], self.test.get("group"))


def run(config: Config, out_dir: str | os.PathLike, *, progress: bool = True) -> dict:
    """Run (or resume) the experiment ``config`` into ``out_dir`` and return the results dict.

    Writes ``results.json``, ``metrics.jsonl`` and ``checkpoints/`` under ``out_dir``. A config
    whose ``method`` is not ``"w2s"`` runs that method of :mod:`w2sjax.methods` instead. First
    prints the plan: which stages train and how many are reused from earlier runs.
    """
    if config.method != "w2s":
        from w2sjax import methods

        return methods.run(config, out_dir, progress=progress)

    def seed_rows(sr: SeedRun) -> list[dict]:
        rows = []
        ceilings = {s: sr.ceiling(s) for s in config.strong_models}
        for w in config.weak_models:
            weak = sr.weak(w)
            for s in config.strong_models:
                for loss in config.losses:
                    w2s = sr.supervised(stage_keys.StageKey.w2s(w, s, loss, sr.seed), s, weak, loss)
                    rows += [sr.row(w, s, loss, weak, w2s, ceilings[s]) if refinement == "soft"
                             else _refined_row(sr, w, s, loss, weak, w2s, ceilings[s], refinement)
                             for refinement in config.options.labels]
        return rows + _bootstrap_rows(sr, ceilings)

    out, rows = sweep(config, out_dir, seed_rows, progress=progress)
    return finish(config, out, rows)


def sweep(config: Config, out_dir: str | os.PathLike, seed_rows: Callable[[SeedRun], list[dict]], *,
          progress: bool = True, models_used=None, also_lock: Iterable[pathlib.Path] = ()) -> tuple[pathlib.Path, list[dict]]:
    """The skeleton of every protocol: :func:`prepare`, then ``seed_rows`` for each seed's
    :class:`SeedRun`, twice (:func:`plan_then_train`): first on a planning runner, which keys every
    stage without training any (its rows are dropped) so the plan is printed before any model
    loads, then on the runner that trains. Returns ``(out, rows)`` of the second pass, for
    :func:`finish`. ``seed_rows`` must not compute anything but stages on a planning runner
    (``sr.runner.planning``): its stages answer uniform predictions there.

    ``models_used``: see :func:`prepare`. ``also_lock``: directories to lock for this run beside
    ``out_dir`` (a method that runs sub-sweeps into folders of its own output directory).
    """
    runner, task, out = prepare(config, out_dir, progress=progress, models_used=models_used)
    for parent in also_lock:
        rundir.lock(pathlib.Path(parent), process=jax.process_index())
    for current in plan_then_train(runner, out):  # the protocol twice: its stages keyed only, then trained
        rows = []
        for seed in config.seeds:
            rows += seed_rows(SeedRun(current, task, seed))
    return out, rows


def _bootstrap_rows(sr: SeedRun, ceilings: dict[str, StageOutput], recipes: dict | None = None) -> list[dict]:
    """The bootstrap chains (``a>b>c``) of one seed, as Burns et al. run them: the student half is
    cut into one disjoint part per rung (:func:`chain_parts`), and each rung trains on its part with
    labels that the model before it predicted for rows *it* never trained on (the supervisor never
    saw the student half). A rung labelling its own training rows would mostly echo its supervisor.
    Each chain row also carries a direct student (``a`` straight to the last model) on the last
    rung's part, so the comparison is on equal data. ``recipes``: a model's own rung config."""
    recipes = recipes or {}
    rows = []
    for chain in sr.config.bootstrap:
        models_in_chain = tuple(chain.split(">"))
        first, last = sr.weak(models_in_chain[0]), models_in_chain[-1]
        parts = chain_parts(sr.student_half, len(models_in_chain) - 1, sr.seed)
        for loss in sr.config.losses:
            current = first
            for depth, student in enumerate(models_in_chain[1:], start=1):
                key = stage_keys.StageKey.boot(models_in_chain[: depth + 1], loss, sr.seed)
                current = sr.supervised(key, student, current, loss, part=parts[depth - 1], cfg=recipes.get(student))
            direct_key = stage_keys.StageKey.w2s(models_in_chain[0], last, loss, sr.seed,
                                             variant=f"part{len(parts)}of{len(parts)}")
            direct = sr.supervised(direct_key, last, first, loss, part=parts[-1], cfg=recipes.get(last))
            ceiling = ceilings.get(last) or sr.ceiling(last)
            row = sr.row(models_in_chain[0], last, loss, first, current, ceiling)
            if sr.runner.planning:
                continue
            direct_row = sr.row(models_in_chain[0], last, loss, first, direct, ceiling)
            row.update(chain=chain, n_trained=int(len(parts[-1])), direct_w2s_acc=direct_row["w2s_acc"],
                       direct_pgr=direct_row["pgr"], direct_stage=direct.key.checkpoint_name if direct.key else None)
            rows.append(row)
    return rows


def chain_parts(half: dict, n: int, seed: int) -> list[np.ndarray]:
    """``n`` disjoint parts of the student half, as sorted positions into it, of (nearly) equal size, drawn
    by a stream of their own (``seed``); a multiple-choice question's rows stay in one part."""
    groups = half.get("group")
    ids = np.arange(len(half["label"])) if groups is None else np.asarray(groups)
    unique = np.unique(ids)
    order = np.random.default_rng([seed, 0xB0075]).permutation(unique)
    if len(order) < n:
        raise ConfigError(f"bootstrap: the student half has {len(order)} examples, fewer than the chain's {n} rungs")
    return [np.flatnonzero(np.isin(ids, share)) for share in np.array_split(order, n)]


def finish(config: Config, out: pathlib.Path, rows: list[dict], **extra) -> dict:
    """Write ``results.json`` (process 0; its config as the stages ran it, machine defaults set) and
    return it; ``extra`` adds top-level keys. Results of other settings there are kept under a printed name."""
    extra.setdefault("compile", compile_stats.since(_COMPILES_AT_START.get(str(out), {})))
    payload = {"config": to_dict(train.with_compile_cost(config)), "runs": rows, **extra}
    used = _USED.pop(str(out.absolute()), None)
    if used is not None:
        payload.setdefault("checkpoints", sorted(used))
    sigint.check()  # an interrupted run never writes results, even if it got this far
    if parallel.is_main_process():
        kept = rundir.write_results(out, payload)
        if kept is not None:
            print(f"kept the previous results (other settings) as {kept}", flush=True)
        tensorboard_log.flush_all()
    rundir.release(out)
    return payload


def _refined_row(sr: SeedRun, w, s, loss, weak, plain, ceiling, refinement: str) -> dict:
    """Train the student on refined weak labels (``pseudo_labels.refine``) and describe what it did.

    ``plain`` is the student on the raw soft labels: ``selective`` takes its confident predictions
    as "the strong model's own labels". ``knn``/``filter`` work in the strong backbone's frozen
    feature space, whatever the student's mode.
    """
    from w2sjax import pseudo_labels

    opts = sr.config.options
    student_rows = sr.student_half["row"]
    feats = None
    if sr.runner.planning:  # only the student's key matters, which does not depend on the labels
        lab, keep = sr.pseudo_labels(weak), np.ones(len(student_rows), bool)
    elif refinement in ("knn", "filter"):
        feats = sr.runner.inputs.get(s, frozen_features=True).inputs("train", student_rows)
    if not sr.runner.planning:
        lab, keep = pseudo_labels.refine(
            refinement, sr.pseudo_labels(weak), features=feats, strong=plain.preds["b"], keep_frac=opts.keep_frac,
            k=opts.knn_k,
        )
    key = stage_keys.StageKey.w2s(w, s, loss, sr.seed, variant=refinement)
    # Named by what made them, so the key is known before the supervisor and the plain student ran.
    sources = {"val_labels": weak.source("val")}
    if weak.key and plain.key:
        made_by = f"{refinement}:{weak.source('b')}:{plain.source('b')}:{opts.keep_frac}:{opts.knn_k}"
        sources.update(labels=f"labels/{made_by}", rows=f"rows/{made_by}")
    student = sr.strong(key, s, lab[keep], weak.preds["val"], loss, rows=student_rows[keep], sources=sources)
    if sr.runner.planning:
        return {}
    row = sr.row(w, s, loss, weak, student, ceiling)
    student_labels = sr.student_half["label"]
    row.update({
        "variant": refinement,
        "n_trained": int(keep.sum()),
        # How clean the labels the student saw were, against the (hidden) ground truth.
        "train_label_acc": round(_acc(lab[keep], student_labels[keep]), 6),
        "weak_label_acc": round(_acc(sr.pseudo_labels(weak), student_labels), 6),
    })
    if not keep.all():
        # Coverage expansion: examples the supervisor abstained on were never trained on.
        row["excluded_w2s_acc"] = round(_acc(student.preds["b"][~keep], student_labels[~keep]), 6)
        row["excluded_weak_acc"] = round(_acc(sr.pseudo_labels(weak)[~keep], student_labels[~keep]), 6)
    return row


def _check_modality(name: str, task) -> None:
    from w2sjax import models

    spec = models.get_model(name)
    if task.kind not in spec.modalities:
        raise ConfigError(
            f"model: {name!r} takes {'/'.join(spec.modalities)} inputs but task {task.name!r} is {task.kind}"
        )
