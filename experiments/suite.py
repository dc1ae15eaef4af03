"""The offline benchmark suite: the standard protocol on every packaged text task (docs/tasks.md).

GloVe bag-of-words and TF-IDF logistic regressions supervise linear probes on frozen
all-MiniLM-L6-v2 features (2 and 6 layers), with plain cross-entropy and the confidence loss,
over 3 seeds. To fit a shared 2-core CPU in about an hour, every task is capped: at most 2000
training examples (the supervisor and student halves of 1000 each), 200 validation examples and 1500 test examples
(multiple-choice tasks count rows, one per choice, and cuts move to question boundaries);
smaller tasks use what they have.

As a config (``w2sjax run --config experiments/suite.py``) it runs one task. As a script it runs
them all, one resumable output directory per task, then writes ``suite.json``, ``suite.md`` and
``task_spread.png`` into ``--out`` (``--summary-only`` writes them from the tasks finished so far)::

    python experiments/suite.py --out /tmp/suite                      # the whole suite
    python experiments/suite.py --out /tmp/tiny --tasks vader_tweets,social_iqa \\
        --set data.n_train=100 --set data.n_test=100 --set seeds=0    # a quick check

Every ``--set`` applies to every task; ``data.n_train`` / ``data.n_test`` are the caps.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from w2sjax.config import Config, DataConfig
from w2sjax.report.suite import task_config  # noqa: F401  (the caps, shared with experiments/headline.py)

MIN_GAP = 0.03  # the second median keeps tasks whose ceiling beats the supervisor by this much
# Every offline text task (w2sjax.data.registry.offline_text_tasks) but fine_foods_pooled, a re-split
# of fine_foods's reviews; the bigbench tasks, whose source was withdrawn, only by name with a copy.
TASKS = ("vader_tweets", "vader_movies", "vader_nyt", "vader_amazon", "fine_foods", "bbc_news", "bbc_headlines",
         "fortunes", "wordnet_nouns", "bible_genres", "austen", "trump_tweets", "conventions", "sarcasm",
         "corr2cause", "boolq", "siqa", "piqa_dev", "commonsense_qa", "sciq", "winogrande_dev", "hellaswag_dev",
         "quartz")


def get_config() -> Config:
    return Config(
        name="suite",
        data=DataConfig(task=TASKS[0], n_train=2000, n_val=200, n_test=1500, max_len=128),
        weak_models=("glove-bow", "tfidf"),
        strong_models=("minilm-l2", "minilm-l6"),
        losses=("xent", "logconf"),
        seeds=(0, 1, 2),
    )


def run_suite(base: Config, out: pathlib.Path, tasks, *, progress: bool = False) -> dict:
    """Run (or resume) every task into ``out/TASK`` and write the suite summary into ``out``."""
    from w2sjax import data, experiment

    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in tasks:
        cfg = task_config(base, data.load_task(name))
        print(f"suite: {name}: n_train={cfg.data.n_train} n_test={cfg.data.n_test}", file=sys.stderr, flush=True)
        results[name] = experiment.run(cfg, out / name, progress=progress)
    return summarize(base, out, results)


def summarize(base: Config, out: pathlib.Path, results: dict[str, dict]) -> dict:
    """Write ``suite.json``, ``suite.md`` and ``task_spread.png`` from each task's results."""
    from w2sjax import config as config_lib
    from w2sjax.report import plots, suite
    from w2sjax.report.results import nan_to_null
    from w2sjax.runner import atomic

    out.mkdir(parents=True, exist_ok=True)
    rows = suite.task_rows(results)
    # Also the median over tasks with a real gap to recover (at least 3 points).
    meds = suite.medians(rows) + suite.medians(rows, min_gap=MIN_GAP)
    summary = {"config": config_lib.to_dict(base), "tasks": list(results), "per_task": rows, "medians": meds}
    atomic.write_json(out / "suite.json", nan_to_null(summary))
    atomic.write_text(out / "suite.md", suite.format_markdown(rows, meds) + "\n")
    fig = plots.task_spread(rows, meds)
    if fig is not None:
        plots._save_atomic(fig, out / "task_spread.png")
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output directory (resumable)")
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated task names")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--summary-only", action="store_true",
                        help="only summarise the tasks whose results.json is already in --out (a partial run)")
    args = parser.parse_args(argv)

    from w2sjax import assets, config as config_lib
    from w2sjax.runner import xla_flags

    xla_flags.apply_defaults()  # an application may choose XLA flags, before JAX starts
    xla_flags.enable_compilation_cache(assets.cache_dir() / "xla")
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    try:
        base = config_lib.apply_overrides(get_config(), args.overrides)
        from w2sjax import data

        unknown = [t for t in tasks if t not in data.known_tasks()]
        if unknown or not tasks:
            raise config_lib.ConfigError(f"--tasks: unknown {unknown or 'none given'}; known: {', '.join(data.known_tasks())}")
        out = pathlib.Path(args.out)
        if args.summary_only:
            from w2sjax.report import tables

            done = [t for t in tasks if (out / t / "results.json").is_file()]
            summary = summarize(base, out, {t: tables.load_results(out / t) for t in done})
        else:
            summary = run_suite(base, out, tasks, progress=args.progress)
    except (config_lib.ConfigError, assets.AssetError, ValueError) as exc:
        print(f"suite: error: {exc}", file=sys.stderr)
        return 2
    from w2sjax.report import suite

    print(suite.format_markdown(summary["per_task"], summary["medians"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
