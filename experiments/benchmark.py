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

# Seconds per stage on 2 quiet CPU cores, measured 2026-11-29 (docs/results.md, "What ran": halves
# of 1000 examples, up to 1500 test rows, 2 epochs) and, for the supervisors, 2026-12-06 (the same
# caps, vader_movies, on the machine shared with other jobs). Keyed by (model, how it trains); "probe" is a head on frozen features.
SECONDS_PER_STAGE = {
    ("glove-bow", "probe"): 5.0, ("tfidf", "probe"): 14.0,
    ("minilm-l2", "all"): 25.0, ("minilm-l4", "all"): 45.0, ("minilm-l6", "all"): 60.0,
    ("mpnet-base", "top:4"): 100.0,
}
# Once per task and student: MPNet's frozen bottom blocks run once per text (cached bottoms).
SECONDS_PER_TASK = {("mpnet-base", "top:4"): 60.0}


def _headline():
    sys.path.insert(0, str(HERE))
    try:
        import headline
    finally:
        sys.path.remove(str(HERE))
    return headline


@dataclasses.dataclass(frozen=True)
class Group:
    """Students (or one bootstrap chain) that train the same way with the same seeds: one part per task."""

    name: str
    students: tuple[str, ...]
    trainable: str  # "all", "lora", "top:K" or "probe" (a head on frozen features)
    seeds: tuple[int, ...]
    supervisors: tuple[str, ...]
    bootstrap: tuple[str, ...] = ()


def groups(protocol) -> list[Group]:
    """The protocol's students grouped by (trainable, seeds, role), then its chains, in its order."""
    merged: dict[tuple, list[str]] = {}
    for st in protocol["students"]:
        merged.setdefault((st["trainable"], tuple(st["seeds"]), st.get("role", "primary")), []).append(st["name"])
    out = [Group("-".join(names), tuple(names), trainable, seeds, tuple(protocol["supervisors"]))
           for (trainable, seeds, _), names in merged.items()]
    for chain in protocol.get("bootstrap", []):
        # The part trains the chain, its direct student on equal data and the last model's ceiling
        # (experiment.run also trains that model's plain students; only the chain rows are exported).
        models = chain["chain"].split(">")
        out.append(Group("chain-" + "-".join(models[1:]), (models[-1],), chain["trainable"],
                         tuple(chain["seeds"]), (models[0],), (chain["chain"],)))
    return out


def get_config():
    """As a config file (``w2sjax run --config experiments/benchmark.py``): the protocol's recipe
    with its first group of students, on the default task."""
    from w2sjax.report import protocol as protocol_lib

    protocol = protocol_lib.load(DEFAULT_PROTOCOL)
    first = groups(protocol)[0]
    base = base_config(protocol)
    return dataclasses.replace(base, strong_models=first.students, seeds=first.seeds,
                               train=dataclasses.replace(base.train, trainable=first.trainable))


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
        train=StudentTrainConfig(epochs=st["epochs"], batch_size=st["batch_size"], lr=st["lr"],
                                 early_stopping=st["early_stopping"], eval_every=st["eval_every"],
                                 log_every=st["eval_every"],
                                 loss=LossConfig(alpha_max=st["alpha_max"], conf_warmup_frac=st["conf_warmup_frac"])),
    )


class Plan:
    """The parts of a run: one per (task, group), each with the config it trains under."""

    def __init__(self, protocol, tasks: list[str], students=()):
        self.protocol, self.tasks, self.base = protocol, tasks, base_config(protocol)
        headline = _headline()
        self.headline = headline
        self.group_of_part: dict[str, Group] = {}
        self.parts = []
        chosen = [g for g in groups(protocol) if not students or set(g.students) & set(students)]
        chosen = [dataclasses.replace(g, students=tuple(s for s in g.students if not students or s in students))
                  if not g.bootstrap else g for g in chosen]
        for task in tasks:
            for g in chosen:
                part = headline.Part(f"{task}-{g.name}", task, g.students, g.supervisors,
                                     "all" if g.trainable == "probe" else g.trainable, g.bootstrap)
                self.parts.append(part)
                self.group_of_part[part.name] = g

    def config_of(self, base, part, task):
        """A part's config: the headline's (caps clipped to the task), with the group's seeds and mode."""
        g = self.group_of_part[part.name]
        cfg = self.headline.part_config(base, part, task)
        cfg = dataclasses.replace(cfg, seeds=g.seeds, name=f"benchmark-{part.name}")
        return dataclasses.replace(cfg, strong_mode="probe") if g.trainable == "probe" else cfg

    def stages(self, out: pathlib.Path) -> dict[str, dict[str, bool]]:
        return self.headline.planned_stages(self.base, self.parts, out, config_of=self.config_of)


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
                kind = (model, g.trainable)
            counts[kind] += 1
            if kind in SECONDS_PER_STAGE:
                seconds += SECONDS_PER_STAGE[kind]
            else:
                unmeasured[kind] += 1
        if todo:
            seconds += sum(SECONDS_PER_TASK.get((s, g.trainable), 0.0) for s in g.students)
    return {"seconds": seconds, "stages": dict(counts), "unmeasured": dict(unmeasured)}


def _kind(k: tuple) -> str:
    return f"{k[0]} ({k[1]})"


def export_task(plan: Plan, task_name: str, out: pathlib.Path, artefacts_dir: pathlib.Path) -> None:
    """Collect every finished part of ``task_name`` into its artefacts (``TASK.json``/``.npz``), from
    what its runs saved (results, stage predictions, the seeds' split records)."""
    from w2sjax.report import artefacts

    rows, arrays = [], {}
    for part in (p for p in plan.parts if p.task == task_name):
        results = json.loads((out / part.name / "results.json").read_text())
        if plan.group_of_part[part.name].bootstrap:  # its plain rows are the primary parts' cells
            results = {**results, "runs": [r for r in results["runs"] if r.get("chain")]}
        part_rows, part_arrays = artefacts.collect(out / part.name, results)
        artefacts.merge(rows, arrays, part_rows, part_arrays, tag=part.name)
    scored = "per question" if any(k.startswith("test_group/") for k in arrays) else "per example"
    artefacts.write_task(artefacts_dir, plan.protocol.sha256, task_name, scored, rows, arrays)


def run(plan: Plan, out: pathlib.Path, artefacts_dir: pathlib.Path, *, progress: bool = False) -> None:
    """Train every part (resumable), exporting each task's artefacts as soon as its parts finish."""
    for task in plan.tasks:
        parts = [p for p in plan.parts if p.task == task]
        plan.headline.run_parts(plan.base, parts, out, progress=progress, config_of=plan.config_of)
        export_task(plan, task, out, artefacts_dir)
        print(f"benchmark: {task}: artefacts written to {artefacts_dir}", file=sys.stderr, flush=True)


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
            line = f"estimated cost: {cost['seconds'] / 3600:.1f} h on 2 quiet CPU cores (measured seconds per stage kind)"
            if cost["unmeasured"]:
                line += "; not counted, never measured: " + ", ".join(
                    f"{n} {_kind(k)} stages" for k, n in sorted(cost["unmeasured"].items()))
            print(line)
            return 0
        artefacts.check_stamp(out, protocol.sha256)  # a run folder holds one protocol's stages
        artefacts.check_stamp(art_dir, protocol.sha256)
        atomic.write_json(art_dir / "tasks.json", resolution)
        run(plan, out, art_dir, progress=args.progress)
        s = summarize(protocol, art_dir, docs_root, figure=not args.no_figure)
    except (config_lib.ConfigError, assets.AssetError, ValueError) as exc:
        print(f"benchmark: error: {exc}", file=sys.stderr)
        return 2
    from w2sjax.report import benchmark

    print(benchmark.markdown(s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
