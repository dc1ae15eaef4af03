"""experiments/headline.py and experiments/reports/headline.py: the finetuned-student headline run."""

import json
import pathlib
import runpy

import numpy as np
import pytest

from experiments.reports import headline as headline_report
from w2sjax import config as config_lib

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def headline():
    return runpy.run_path(str(ROOT / "experiments" / "headline.py"))


def test_parts_follow_the_protocol(headline):
    full = headline["parts"]()
    names = [p.name for p in full]
    assert len(names) == len(set(names))
    assert {p.task for p in full} == {"vader_tweets", "vader_movies", "winogrande_dev"}
    # the large student trains its top blocks on cached bottoms, the MiniLM ones every weight
    assert {p.trainable for p in full if "mpnet-base" in p.students} == {"top:4"}
    assert {p.trainable for p in full if "minilm-l6" in p.students} == {"all"}
    base = headline["base_config"]()
    assert base.strong_mode == "finetune" and base.seeds == (0, 1, 2) and set(base.losses) == {"xent", "logconf"}
    # students stop early on weak-labelled validation data (the standard protocol gives them the
    # supervisor's validation predictions): the config must switch early stopping on
    assert base.train.early_stopping and base.train.eval_every > 0


def test_quick_plan_counts_every_stage_without_training(headline, tmp_path):
    """The quick configuration builds for each part, and its stage plan (no training) has the
    stages the protocol needs, counted by hand."""
    base = config_lib.apply_overrides(headline["base_config"](quick=True),
                                      ["data.n_train=60", "data.n_val=20", "data.n_test=40"])
    quick = headline["parts"](quick=True)
    plan = headline["stage_plan"](base, quick, tmp_path)
    # vader_tweets: 2 ceilings + 1 supervisor + 2 students x 2 losses
    # + the chain glove-bow>minilm-l2>minilm-l6 (2 rungs per loss) and its direct student on the
    # last rung's rows (1 per loss) = 13
    # winogrande_dev: 1 ceiling + 1 supervisor + 1 student x 2 losses = 4
    assert plan == {"vader_tweets-minilm": (13, 13), "winogrande_dev-minilm": (4, 4)}
    from w2sjax import data

    cfg = headline["part_config"](base, quick[0], data.load_task("vader_tweets"))
    assert (cfg.data.n_train, cfg.data.n_test, cfg.data.task) == (60, 40, "vader_tweets")
    assert cfg.bootstrap == ("glove-bow>minilm-l2>minilm-l6",) and cfg.train.trainable == "all"


def test_parts_whose_data_is_missing_are_listed_and_stop_a_run_before_training(headline, tmp_path, capsys,
                                                                                   monkeypatch):
    from w2sjax import assets

    monkeypatch.setenv("W2SJAX_CACHE", str(tmp_path / "cache"))  # nothing built yet
    monkeypatch.setenv(assets.env_var("vader"), str(tmp_path / "empty"))  # a copy lacking every file
    argv = ["--out", str(tmp_path / "run"), "--parts", "vader_tweets-minilm", "--no-curve"]
    assert headline["main"](argv + ["--list"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("vader_tweets-minilm: unavailable: asset 'vader' unavailable")
    assert headline["main"](argv) == 2
    err = capsys.readouterr().err.strip()
    assert "1 part(s) cannot run here, nothing trained: vader_tweets-minilm" in err and "\n" not in err
    assert not (tmp_path / "run").exists()


def test_bad_part_is_one_line_exit_2(headline, tmp_path, capsys):
    assert headline["main"](["--out", str(tmp_path), "--parts", "nope", "--list"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("headline: error: --parts: unknown ['nope']") and "\n" not in err


def _run(task, weak, strong, loss, seed, accs, **extra):
    w, s, c = accs
    return {"task": task, "weak_model": weak, "strong_model": strong, "loss": loss, "seed": seed,
            "weak_acc": w, "w2s_acc": s, "ceiling_acc": c, "misfit": 0.0, **extra}


def test_summary_targets_and_tables_by_hand(tmp_path):
    """Rows, medians and the experiment's targets from hand-made results (no checkpoints: the
    seed-and-test interval is then missing and the seed interval stands)."""
    part = type("P", (), {"trainable": "all", "lr": 1e-4})
    runs = []
    for seed in (0, 1):
        # task a: ceilings rise over three rungs; logconf beats xent; PGR (0.75-0.6)/(0.8-0.6) = 0.75
        runs += [_run("a", "glove-bow", "minilm-l2", "xent", seed, (0.6, 0.62, 0.70)),
                 _run("a", "glove-bow", "minilm-l2", "logconf", seed, (0.6, 0.66, 0.70)),
                 _run("a", "glove-bow", "minilm-l4", "xent", seed, (0.6, 0.65, 0.75)),
                 _run("a", "glove-bow", "minilm-l6", "xent", seed, (0.6, 0.75, 0.80)),
                 _run("a", "glove-bow", "minilm-l6", "logconf", seed, (0.6, 0.70, 0.80)),
                 _run("a", "glove-bow", "minilm-l6", "xent", seed, (0.6, 0.70, 0.80),
                      chain="glove-bow>minilm-l2>minilm-l6",
                      stages={"w2s": "boot__glove-bow__minilm-l2__minilm-l6__xent__seed0--0"})]
    # an earlier pass with one seed of minilm-l6 and another student: the pass with more seeds wins
    earlier = {"config": {}, "runs": [_run("a", "glove-bow", "minilm-l6", "xent", 0, (0.6, 0.6, 0.8)),
                                      _run("a", "glove-bow", "minilm-l3", "xent", 0, (0.6, 0.7, 0.72))]}
    summary = headline_report.summary(tmp_path, {"p": part}, {"p": [earlier, {"config": {}, "runs": runs}]}, None)
    rows = {(r["strong_model"], r["loss"], r["chain"]): r for r in summary["rows"]}
    assert rows[("minilm-l6", "xent", None)]["pgr"] == pytest.approx(0.75)
    assert rows[("minilm-l6", "xent", None)]["seeds"] == 2 and rows[("minilm-l3", "xent", None)]["seeds"] == 1
    chain = rows[("minilm-l6", "xent", "glove-bow>minilm-l2>minilm-l6")]
    assert chain["pgr"] == pytest.approx(0.5)
    assert rows[("minilm-l2", "xent", None)]["params"] < rows[("minilm-l4", "xent", None)]["params"] \
        < rows[("minilm-l6", "xent", None)]["params"]
    t = summary["targets"]
    assert t["ceiling_rungs_rising"] == {"a": 4}  # l2 0.70 < l3 0.72 < l4 0.75 < l6 0.80
    # cells with a gap >= 0.05 and both losses: (a, l2) logconf wins, (a, l6) xent wins
    assert t["logconf_at_least_xent"] == [1, 2]
    assert t["tasks_with_pgr_above_0"] == []  # no interval over test examples without checkpoints
    # the medians leave the chain out: l6 xent over the one task is its PGR
    med = {(m["strong_model"], m["loss"], m["min_gap"]): m for m in summary["medians"]}
    assert med[("minilm-l6", "xent", 0.0)]["median_pgr"] == pytest.approx(0.75)
    text = headline_report.markdown(summary)
    assert "| a | glove-bow | glove-bow>minilm-l2>minilm-l6 | all | xent | 2 | 0.600 | 0.700 ± 0.000 |" in text
    assert "logconf ≥ xent in 1 of 2" in text
    figs = headline_report.figures(summary)
    assert set(figs) == {"size", "pgr"}


def test_curve_text_and_figure():
    curve = {"task": "t", "supervisor": "glove-bow", "student": "minilm-l6", "loss": "xent", "seed": 0,
             "epochs": 2.0, "steps_per_epoch": 4, "steps": [2, 4, 6, 8], "test_acc": [0.7, 0.8, 0.75, 0.72],
             "weak_val_acc": [0.7, 0.75, 0.8, 0.85], "weak_test_acc": 0.7}
    summary = {"rows": [], "medians": [], "targets": {"tasks_with_pgr_above_0": [], "ceiling_rungs_rising": {},
                                                      "logconf_at_least_xent": [0, 0], "best_median_pgr": None},
               "curve": curve}
    text = headline_report.markdown(summary)
    # test peaks at step 4; the weak validation slice keeps rising and picks the last step
    assert "peaks at 0.800 (step 4), ends at 0.720" in text and "picks step 8 (test 0.720)" in text
    assert set(headline_report.figures(summary)) == {"curve"}
    json.dumps(curve)
    assert np.isfinite(curve["test_acc"]).all()


@pytest.mark.slow  # the quick version with smaller caps: finetunes MiniLM students (minutes on 2 cores)
def test_quick_headline_end_to_end(headline, tmp_path):
    argv = ["--out", str(tmp_path), "--quick", "--set", "data.n_train=200", "--set", "data.n_test=100",
            "--set", "data.n_val=40", "--set", "data.max_len=32"]
    assert headline["main"](argv) == 0
    summary = json.loads((tmp_path / "headline.json").read_text())
    parts = {r["part"] for r in summary["rows"]}
    assert parts == {"vader_tweets-minilm", "winogrande_dev-minilm"}
    assert any(r["chain"] == "glove-bow>minilm-l2>minilm-l6" for r in summary["rows"])
    curve = summary["curve"]
    assert curve["student"] == "minilm-l2" and len(curve["steps"]) == len(curve["test_acc"]) \
        == len(curve["weak_val_acc"]) > 1
    assert all(0.0 <= a <= 1.0 for a in curve["test_acc"] + curve["weak_val_acc"])
    for name in ("size", "pgr", "curve"):
        assert (tmp_path / f"headline_{name}.png").stat().st_size > 0
    assert "NaN" not in (tmp_path / "headline.json").read_text()
    # a rerun trains nothing and writes the same rows
    assert headline["main"](argv) == 0
    again = json.loads((tmp_path / "headline.json").read_text())
    assert again["rows"] == summary["rows"]
