"""The pre-registered benchmark: every offline text task, a protocol fixed before the run, every
published number regenerable from committed artefacts.

The protocol (``experiments/benchmark_protocol.json``; docs/benchmark.md) names the task rule,
supervisors, students, recipe, primary metric, gap rule and the tasks the project was tuned on.
A run resolves the task rule to names, then trains, per task, one resumable ``w2sjax`` experiment
(a *part*: the stage machinery of ``experiments/headline.py``) per group of students that train
the same way, and exports each finished task's rows and per-stage test predictions into the
artefact folder, stamped with the protocol's sha256. ``--summary-only`` regenerates every table,
interval and the figure from the artefacts alone (no training, no task loading) and writes the
generated sections of ``docs/results.md`` and ``README.md``::

    python experiments/benchmark.py --out runs/benchmark --list       # the plan and its cost
    python experiments/benchmark.py --out runs/benchmark --publish    # run, export into docs/benchmark/
    python experiments/benchmark.py --summary-only                    # tables from docs/benchmark/

Once a part is exported, its stages' trained parameters are dropped to save disk (``--keep-params``
keeps them); their predictions stay, and a rerun reuses every stage.
``--tasks a,b`` restricts the task set (recorded in ``tasks.json``); ``--protocol PATH`` and
``--artefacts DIR`` point elsewhere (tests use a tiny protocol in a temporary folder).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
from collections import defaultdict

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_PROTOCOL = HERE / "benchmark_protocol.json"
DEFAULT_ARTEFACTS = ROOT / "docs" / "benchmark"

# Seconds per stage on this 2-core machine, measured 2026-12-06 while it was shared with other jobs
# (load average 4 to 20; on a quiet machine on 2026-11-29 a MiniLM-L6 stage took about 60 s and an
# MPNet-base top:4 stage about 100 s, so the load cost a factor of 2 to 8). Students: the mean of
# the lr pilot's ceiling stages (experiments/benchmark_pilot.json: 62 steps on 1000 examples,
# 2 epochs, the first stage of a task computing its cached bottoms too); a run's stage also
# predicts the student half and the test split, not counted. Supervisors: the same caps on vader_movies,
# the same day. Keyed by (model, how it trains); "probe" is a head on frozen features.
SECONDS_PER_STAGE = {
    ("glove-bow", "probe"): 5.0, ("tfidf", "probe"): 14.0,
    ("minilm-l6", "top:2"): 110.0, ("mpnet-base", "top:4"): 790.0,
}
# Once per task and student, on top of its stages (none now: the pilot's means above include the
# cached bottoms, which its first stage on each task computed).
SECONDS_PER_TASK: dict[tuple[str, str], float] = {}


def _headline():
    sys.path.insert(0, str(HERE))
    try:
        import headline
    finally:
        sys.path.remove(str(HERE))
    return headline


@dataclasses.dataclass(frozen=True)
class Group:
    """One student (or one bootstrap chain) with its recipe and seeds: one part per task."""

    name: str
    students: tuple[str, ...]
    trainable: str  # "all", "lora", "top:K" or "probe" (a head on frozen features)
    seeds: tuple[int, ...]
    supervisors: tuple[str, ...]
    bootstrap: tuple[str, ...] = ()
    lr: float | None = None  # the student's own lr (protocol students[].lr); None: the recipe's default
    # a chain: each rung's model -> (trainable, lr), its student recipe
    recipes: tuple[tuple[str, str, float | None], ...] = ()


def groups(protocol) -> list[Group]:
    """One group per student, in the protocol's order, then one per chain: the run order is
    part-major (every task of the first group, then of the next), so a run cut short has whole
    students rather than whole tasks."""
    out = [Group(st["name"], (st["name"],), st["trainable"], tuple(st["seeds"]), tuple(protocol["supervisors"]),
                 lr=st.get("lr")) for st in protocol["students"]]
    by_name = {st["name"]: st for st in protocol["students"]}
    for chain in protocol.get("bootstrap", []):
        # The part trains the chain (each rung with its student's recipe), the direct student on
        # equal data and the last model's ceiling; only the chain rows are exported.
        models = chain["chain"].split(">")
        last = by_name[models[-1]]
        out.append(Group("chain-" + "-".join(models[1:]), (models[-1],), last["trainable"], tuple(chain["seeds"]),
                         (models[0],), (chain["chain"],), lr=last.get("lr"),
                         recipes=tuple((m, by_name[m]["trainable"], by_name[m].get("lr")) for m in models[1:])))
    return out


def get_config():
    """As a config file (``w2sjax run --config experiments/benchmark.py``): the protocol's recipe
    with its first group of students, on the default task."""
    from w2sjax.report import protocol as protocol_lib

    protocol = protocol_lib.load(DEFAULT_PROTOCOL)
    first = groups(protocol)[0]
    base = base_config(protocol)
    return dataclasses.replace(base, strong_models=first.students, seeds=first.seeds,
                               train=dataclasses.replace(base.train, trainable=first.trainable,
                                                         lr=base.train.lr if first.lr is None else first.lr))


def base_config(protocol):
    from w2sjax.config import Config, DataConfig, LossConfig, StudentTrainConfig, TrainConfig

    r = protocol["recipe"]
    st = r["student"]
    return Config(
        name="benchmark",
        data=DataConfig(n_train=r["n_train"], n_val=r["n_val"], n_test=r["n_test"], max_len=r["max_len"]),
        weak_models=tuple(protocol["supervisors"]), losses=tuple(protocol["losses"]),
        strong_mode="finetune", precision=r.get("precision", "float32"),
        weak_train=TrainConfig(**r["supervisor"]),
        # the lr is each student's own (protocol students[].lr, chosen by the pilot); a part sets it
        train=StudentTrainConfig(epochs=st["epochs"], batch_size=st["batch_size"], lr=st.get("lr", 1e-4),
                                 early_stopping=st["early_stopping"], eval_every=st["eval_every"],
                                 log_every=st["eval_every"],
                                 loss=LossConfig(alpha_max=st["alpha_max"], conf_warmup_frac=st["conf_warmup_frac"])),
    )


class Plan:
    """The parts of a run, one per (group, task), in run order (part-major), each with its config."""

    def __init__(self, protocol, tasks: list[str], students=()):
        self.protocol, self.tasks, self.base = protocol, tasks, base_config(protocol)
        headline = _headline()
        self.headline = headline
        self.group_of_part: dict[str, Group] = {}
        self.parts = []
        chosen = [g for g in groups(protocol) if not students or set(g.students) & set(students)]
        for g in chosen:
            for task in tasks:
                part = headline.Part(f"{task}-{g.name}", task, g.students, g.supervisors,
                                     "all" if g.trainable == "probe" else g.trainable, g.bootstrap)
                self.parts.append(part)
                self.group_of_part[part.name] = g

    def config_of(self, base, part, task):
        """A part's config: the headline's (caps clipped to the task), with the group's seeds, lr and mode."""
        g = self.group_of_part[part.name]
        cfg = self.headline.part_config(base, part, task)
        train = cfg.train if g.lr is None else dataclasses.replace(cfg.train, lr=g.lr)
        cfg = dataclasses.replace(cfg, seeds=g.seeds, name=f"benchmark-{part.name}", train=train)
        return dataclasses.replace(cfg, strong_mode="probe") if g.trainable == "probe" else cfg

    def recipes_of(self, cfg, part) -> dict:
        """A chain part's rungs: model -> its student training config (trainable and lr)."""
        g = self.group_of_part[part.name]
        return {m: dataclasses.replace(cfg.train, trainable="all" if t == "probe" else t,
                                       lr=cfg.train.lr if lr is None else lr) for m, t, lr in g.recipes}

    def stages(self, out: pathlib.Path) -> dict[str, dict[str, bool]]:
        from w2sjax import data

        plain = [p for p in self.parts if not p.bootstrap]
        plan = self.headline.planned_stages(self.base, plain, out, config_of=self.config_of) if plain else {}
        for part in (p for p in self.parts if p.bootstrap):
            cfg = self.config_of(self.base, part, data.load_task(part.task))
            plan[part.name] = chain_experiment(cfg, self.recipes_of(cfg, part), out / part.name, planning=True)
        return {p.name: plan[p.name] for p in self.parts}


class _InputsPerModel:
    """A runner's inputs with each model's own recipe (its ``trainable`` decides its inputs and
    fingerprint): the rungs of a chain train different models in different ways."""

    def __init__(self, by_model: dict, default):
        self.by_model, self.default = by_model, default

    def get(self, name, *, frozen_features=False):
        return self.by_model.get(name, self.default).get(name, frozen_features=frozen_features)

    def options(self, name, *, frozen_features=False):
        return self.by_model.get(name, self.default).options(name, frozen_features=frozen_features)


def chain_experiment(cfg, recipes: dict, folder: pathlib.Path, *, planning: bool = False, progress: bool = False):
    """A chain part (``cfg.bootstrap``): per seed, the supervisor, the last model's ceiling, and
    every chain of :func:`w2sjax.experiment._bootstrap_rows`, each rung trained with its model's
    recipe (``recipes``). Returns the results dict, or with ``planning`` each stage's checkpoint
    name and whether it is done (nothing trained)."""
    from w2sjax import experiment
    from w2sjax.runner import rundir

    models = {m for c in cfg.bootstrap for m in c.split(">")}
    runner, task, out = experiment.prepare(cfg, folder, progress=progress, models_used=models)

    def per_model(r):
        r.inputs = _InputsPerModel({m: experiment.Inputs(task, dataclasses.replace(cfg, train=recipes[m]), progress,
                                                         runner.mesh) for m in recipes}, r.inputs)
        return r

    planner = per_model(experiment.Runner(cfg, out, runner.mesh, task, progress, planning=True))
    for current in (planner, per_model(runner)):
        rows = []
        for seed in cfg.seeds:
            sr = experiment.SeedRun(current, task, seed)
            last = {c.split(">")[-1] for c in cfg.bootstrap}
            rows += experiment._bootstrap_rows(sr, {m: sr.ceiling(m) for m in sorted(last)}, recipes)
        if current is planner:
            if planning:
                rundir.release(out)
                return dict(planner.planned)
            experiment.announce_plan(planner, cfg, out)
    return experiment.finish(cfg, out, rows)


def estimate(plan: Plan, stages: dict[str, dict[str, bool]]) -> dict:
    """Seconds still to train: stages still to train × seconds per stage of their kind, plus the
    once-per-task costs; stages of a kind never measured are counted apart."""
    from w2sjax.runner.stage_keys import StageKey

    seconds, unmeasured, counts = 0.0, defaultdict(int), defaultdict(int)
    for part_name, planned in stages.items():
        g = plan.group_of_part[part_name]
        todo = [StageKey.parse(n) for n, done in planned.items() if not done]
        for key in todo:
            if key.kind == "weak":
                kind = (key.parts[0], "probe")
            else:
                model = key.parts[0] if key.kind == "ceiling" else key.parts[0].split(">")[-1] if key.kind == "boot" \
                    else key.parts[1]
                kind = (model, dict((m, t) for m, t, _ in g.recipes).get(model, g.trainable))
            counts[kind] += 1
            if kind in SECONDS_PER_STAGE:
                seconds += SECONDS_PER_STAGE[kind]
            else:
                unmeasured[kind] += 1
        if todo:
            trained = {(s, g.trainable) for s in g.students} | {(m, t) for m, t, _ in g.recipes}
            seconds += sum(SECONDS_PER_TASK.get(k, 0.0) for k in trained)
    return {"seconds": seconds, "stages": dict(counts), "unmeasured": dict(unmeasured)}


def _kind(k: tuple) -> str:
    return f"{k[0]} ({k[1]})"


def export_task(plan: Plan, task_name: str, out: pathlib.Path, artefacts_dir: pathlib.Path) -> list[str]:
    """Collect every finished part of ``task_name`` (its ``results.json`` written) into the task's
    artefacts (``TASK.json``/``.npz``) from what its runs saved (results, stage predictions, the
    seeds' split records); returns the parts exported. Parts not run yet are left out, and the
    summary lists them as not run."""
    from w2sjax.report import artefacts

    rows, arrays, done = [], {}, []
    for part in (p for p in plan.parts if p.task == task_name):
        if not (out / part.name / "results.json").is_file():
            continue
        results = json.loads((out / part.name / "results.json").read_text())
        if plan.group_of_part[part.name].bootstrap:  # only its chain rows: the plain cells are the students' parts
            results = {**results, "runs": [r for r in results["runs"] if r.get("chain")]}
        part_rows, part_arrays = artefacts.collect(out / part.name, results)
        artefacts.merge(rows, arrays, part_rows, part_arrays, tag=part.name)
        done.append(part.name)
    if done:
        scored = "per question" if any(k.startswith("test_group/") for k in arrays) else "per example"
        artefacts.write_task(artefacts_dir, plan.protocol.sha256, task_name, scored, rows, arrays)
    return done


def run(plan: Plan, out: pathlib.Path, artefacts_dir: pathlib.Path, *, progress: bool = False,
        keep_params: bool = False) -> None:
    """Train every part (resumable) in run order, exporting the task's artefacts as soon as each
    (task, part) finishes, so an interrupted run keeps every part it finished. Once a part is
    exported, the trained parameters of its stages are dropped (unless ``keep_params``): no later
    part reads them (each part trains in its own folder, a chain's rungs label from predictions),
    and a rerun reuses the stages from their predictions (``w2sjax.runner.disk.drop_params``)."""
    from w2sjax import data
    from w2sjax.runner import disk

    for part in plan.parts:
        if part.bootstrap:
            cfg = plan.config_of(plan.base, part, data.load_task(part.task))
            print(f"benchmark: {part.name}: chain {', '.join(part.bootstrap)} (each rung with its own recipe: "
                  + ", ".join(f"{m} {c.trainable} lr {c.lr:g}" for m, c in plan.recipes_of(cfg, part).items())
                  + ")", file=sys.stderr, flush=True)
            chain_experiment(cfg, plan.recipes_of(cfg, part), out / part.name, progress=progress)
        else:
            plan.headline.run_parts(plan.base, [part], out, progress=progress, config_of=plan.config_of)
        exported = part.name in export_task(plan, part.task, out, artefacts_dir)
        dropped = [] if keep_params or not exported else disk.drop_params(out / part.name)
        freed = f"; trained parameters of {len(dropped)} stages dropped, {disk.human(sum(r.bytes for r in dropped))} " \
            "freed" if dropped else ""
        print(f"benchmark: {part.name}: done; {part.task}'s artefacts written to {artefacts_dir}{freed}",
              file=sys.stderr, flush=True)


def summarize(protocol, artefacts_dir: pathlib.Path, docs_root: pathlib.Path | None, *, figure: bool = True) -> dict:
    """The summary from the artefacts alone: ``summary.json``, ``summary.md`` and ``pgr.png`` in the
    artefact folder, and (``docs_root``) the generated sections of its docs/results.md and README."""
    from w2sjax.report import artefacts, benchmark, plots
    from w2sjax.report.results import nan_to_null
    from w2sjax.runner import atomic

    arts = artefacts.load(artefacts_dir, protocol.sha256)
    resolution_path = artefacts_dir / "tasks.json"
    resolution = json.loads(resolution_path.read_text()) if resolution_path.is_file() else None
    if resolution is not None and resolution.get("protocol_sha256") != protocol.sha256:
        raise ValueError(f"{resolution_path}: made under protocol {str(resolution.get('protocol_sha256'))[:12]}, "
                         f"not {protocol.short}")
    s = benchmark.summary(arts, protocol, resolution)
    if arts:
        atomic.write_json(artefacts_dir / "summary.json", nan_to_null(s))
        atomic.write_text(artefacts_dir / "summary.md", benchmark.markdown(s) + "\n")
        fig = benchmark.figure(s) if figure else None
        if fig is not None:
            plots._save_atomic(fig, artefacts_dir / "pgr.png")
    if docs_root is not None:
        benchmark.write_docs(s, docs_root)
    return s


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="folder of the resumable run (one sub-folder per part)")
    parser.add_argument("--protocol", default=str(DEFAULT_PROTOCOL), help="the protocol file (default: %(default)s)")
    parser.add_argument("--artefacts", default="", help=f"artefact folder (default: OUT/artefacts; with --publish or "
                        f"--summary-only {DEFAULT_ARTEFACTS.relative_to(ROOT)})")
    parser.add_argument("--tasks", default="", help="comma-separated: only these tasks (recorded as a restriction)")
    parser.add_argument("--students", default="", help="comma-separated: only the groups with these students "
                        "(a partial run: the others' cells are reported as not run)")
    parser.add_argument("--list", action="store_true", help="print the plan and its estimated cost, train nothing")
    parser.add_argument("--summary-only", action="store_true", help="regenerate the summary and docs from the artefacts")
    parser.add_argument("--publish", action="store_true", help="export into docs/benchmark/ and write the docs")
    parser.add_argument("--docs-root", default="", help="repository root whose docs/results.md and README.md get "
                        "the generated sections (default: this repository with --publish or --summary-only)")
    parser.add_argument("--no-figure", action="store_true")
    parser.add_argument("--keep-params", action="store_true", help="keep each exported part's trained parameters "
                        "(by default they are dropped; predictions stay and a rerun reuses every stage)")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)

    from w2sjax import assets, config as config_lib
    from w2sjax.report import artefacts, protocol as protocol_lib
    from w2sjax.runner import atomic, xla_flags

    try:
        protocol = protocol_lib.load(args.protocol)
        default_art = DEFAULT_ARTEFACTS if (args.publish or args.summary_only) else None
        if args.artefacts:
            art_dir = pathlib.Path(args.artefacts)
        elif default_art is not None:
            art_dir = default_art
        elif args.out:
            art_dir = pathlib.Path(args.out) / "artefacts"
        else:
            raise config_lib.ConfigError("--out: expected a run folder (or --summary-only)")
        docs_root = pathlib.Path(args.docs_root) if args.docs_root else (
            ROOT if (args.publish or args.summary_only) else None)
        if args.summary_only:
            s = summarize(protocol, art_dir, docs_root, figure=not args.no_figure)
            print(f"benchmark: protocol {protocol.short}: {len(s['cells'])} cells from {art_dir}")
            return 0
        if not args.out:
            raise config_lib.ConfigError("--out: expected a run folder")
        out = pathlib.Path(args.out)
        xla_flags.apply_defaults()  # an application may choose XLA flags, before JAX starts
        xla_flags.enable_compilation_cache(assets.cache_dir() / "xla")
        only = [t.strip() for t in args.tasks.split(",") if t.strip()]
        resolution = protocol_lib.resolve_tasks(protocol, only=only)
        if not resolution["tasks"]:
            raise config_lib.ConfigError("tasks: no task resolved; " + "; ".join(
                f"{k}: {v}" for k, v in resolution["left_out"].items()))
        students = [t.strip() for t in args.students.split(",") if t.strip()]
        known = {st["name"] for st in protocol["students"]} | {m for c in protocol.get("bootstrap", [])
                                                                for m in c["chain"].split(">")[1:]}
        if set(students) - known:
            raise config_lib.ConfigError(f"--students: not in the protocol: {', '.join(sorted(set(students) - known))}")
        resolution["students_restricted_to"] = sorted(students) if students else None
        plan = Plan(protocol, resolution["tasks"], students)
        if args.list:
            stages = plan.stages(out)
            cost = estimate(plan, stages)
            print(f"benchmark: protocol {protocol.short} ({protocol.path.name}); tasks: {', '.join(plan.tasks)}")
            for name, why in resolution["left_out"].items():
                print(f"  left out {name}: {why}")
            for name, planned in stages.items():
                print(f"{name}: {sum(not d for d in planned.values())} of {len(planned)} stages to train")
            total = sum(cost["stages"].values())
            print(f"total: {total} stages to train: " + ", ".join(
                f"{n} {_kind(k)}" for k, n in sorted(cost["stages"].items())))
            line = (f"estimated cost: {cost['seconds'] / 3600:.1f} h on 2 CPU cores shared with other jobs "
                    "(seconds per stage kind measured 2026-12-06)")
            if cost["unmeasured"]:
                line += "; not counted, never measured: " + ", ".join(
                    f"{n} {_kind(k)} stages" for k, n in sorted(cost["unmeasured"].items()))
            print(line)
            return 0
        artefacts.check_stamp(out, protocol.sha256)  # a run folder holds one protocol's stages
        artefacts.check_stamp(art_dir, protocol.sha256)
        atomic.write_json(art_dir / "tasks.json", resolution)
        run(plan, out, art_dir, progress=args.progress, keep_params=args.keep_params)
        s = summarize(protocol, art_dir, docs_root, figure=not args.no_figure)
    except (config_lib.ConfigError, assets.AssetError, ValueError) as exc:
        print(f"benchmark: error: {exc}", file=sys.stderr)
        return 2
    from w2sjax.report import benchmark

    print(benchmark.markdown(s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
