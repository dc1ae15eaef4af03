"""w2sjax.report.suite: per-task PGR (per question for multiple choice) and the median across tasks."""

import json
import pathlib
import runpy

import numpy as np
import pytest

from w2sjax.report import suite

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _run(task, weak, w2s, ceiling, seed, loss="xent", **extra):
    return {"task": task, "weak_model": "glove-bow", "strong_model": "minilm-l6", "loss": loss, "seed": seed,
            "weak_acc": weak, "w2s_acc": w2s, "ceiling_acc": ceiling, "n_test": 100, **extra}


def test_task_rows_and_median_by_hand():
    results = {
        "a": {"runs": [_run("a", 0.6, 0.7, 0.8, 0), _run("a", 0.6, 0.8, 0.8, 1)]},  # PGR (0.75-0.6)/0.2 = 0.75
        "b": {"runs": [_run("b", 0.5, 0.5, 0.9, 0)]},  # 0.0
        "c": {"runs": [_run("c", 0.7, 0.7, 0.6, 0)]},  # ceiling below weak: undefined
        # multiple choice: the per-question accuracies decide, not the per-pair ones
        "d": {"runs": [_run("d", 0.66, 0.66, 0.66, 0, weak_acc_question=0.4, w2s_acc_question=0.5,
                            ceiling_acc_question=0.6, n_test_questions=30)]},  # 0.5
    }
    rows = {r["task"]: r for r in suite.task_rows(results)}
    assert rows["a"]["pgr"] == pytest.approx(0.75) and rows["a"]["seeds"] == 2
    assert rows["b"]["pgr"] == pytest.approx(0.0)
    assert np.isnan(rows["c"]["pgr"])
    assert rows["d"]["pgr"] == pytest.approx(0.5) and rows["d"]["scored"] == "per question"
    assert rows["d"]["n_test"] == 30
    (m,) = suite.medians(list(rows.values()))
    assert m["median_pgr"] == pytest.approx(np.median([0.75, 0.0, 0.5]))
    assert (m["tasks_with_pgr"], m["tasks"]) == (3, 4)
    # per-task values alone carry no seeds or test examples: no interval (never their range)
    assert all(np.isnan(m["median_ci95"]))
    text = suite.format_markdown(list(rows.values()), [m])
    assert "| c | glove-bow | minilm-l6 | xent | per example | 0.700 | 0.700 | 0.600 | undefined |" in text
    assert "| glove-bow | minilm-l6 | xent | all | 0.50" in text and "3 of 4" in text
    (strict,) = suite.medians(list(rows.values()), min_gap=0.25)  # a (0.2) and d (0.2) drop out
    assert strict["median_pgr"] == pytest.approx(0.0) and strict["tasks_with_pgr"] == 1
    assert "| task | scored | glove-bow | minilm-l6 probe (ceiling) |" in text
    assert "| a | per example | 0.600 | 0.800 |" in text and "| d | per question | 0.400 | 0.600 |" in text


def test_suite_config_caps_each_task():
    mod = runpy.run_path(str(ROOT / "experiments" / "suite.py"))
    base = mod["get_config"]()
    assert (base.data.n_train, base.data.n_test) == (2000, 1500)
    small = type("T", (), {"name": "x", "train": {"label": np.zeros(1282)}, "test": {"label": np.zeros(1007)}})
    cfg = mod["task_config"](base, small)
    assert cfg.data.task == "x" and cfg.data.n_train == 1282 - 200 and cfg.data.n_test is None


@pytest.mark.slow  # embeds a few hundred texts with MiniLM-L1 (~1-2 min on 2 busy cores)
def test_tiny_suite_end_to_end(tmp_path):
    mod = runpy.run_path(str(ROOT / "experiments" / "suite.py"))
    sets = ["data.n_train=100", "data.n_val=40", "data.n_test=100", "seeds=0,1", "strong_models=minilm-l1",
            "data.max_len=32", "losses=xent"]
    argv = ["--out", str(tmp_path), "--tasks", "vader_tweets,siqa"] + [a for s in sets for a in ("--set", s)]
    assert mod["main"](argv) == 0
    summary = json.loads((tmp_path / "suite.json").read_text())
    assert {r["task"] for r in summary["per_task"]} == {"vader_tweets", "siqa"}
    assert len(summary["medians"]) == 4  # glove-bow and tfidf supervisors; all tasks and gap >= 0.03
    if any(r["pgr"] is not None for r in summary["per_task"]):  # the figure needs a defined PGR
        assert (tmp_path / "task_spread.png").stat().st_size > 0
    assert "NaN" not in (tmp_path / "suite.json").read_text()
    assert mod["main"](argv + ["--tasks", "nope"]) == 2


def test_the_default_suite_is_every_offline_text_task():
    from w2sjax.data import registry

    mod = runpy.run_path(str(ROOT / "experiments" / "suite.py"))
    assert set(mod["TASKS"]) == set(registry.offline_text_tasks()) - {"fine_foods_pooled"}
