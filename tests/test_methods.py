"""Methods of w2sjax.methods and the weak-label refinements of the standard pipeline.

Fast tests use scikit-learn's digits with models trained from scratch (no pretrained backbone);
the real-data runs are the shipped experiments (docs/methods.md). Whole-method runs are `slow`.
"""

import functools
import json

import numpy as np
import pytest

from w2sjax import config as cfg_lib
from w2sjax import experiment, theory
from w2sjax.config import Config, ConfigError, DataConfig, MethodConfig
from w2sjax.config import StudentTrainConfig, TrainConfig
from w2sjax.methods import METHODS

SCHEMA = ("task", "weak_model", "strong_model", "loss", "seed", "weak_acc", "w2s_acc", "ceiling_acc", "pgr",
          "misfit", "stage_seconds")


def digits(**kw) -> Config:
    base = dict(
        name="digits-methods",
        data=DataConfig(task="digits", n_train=600, n_val=64, n_test=256),
        weak_models=("linear",),
        strong_models=("mlp",),
        losses=("xent",),
        seeds=(0,),
        weak_train=TrainConfig(epochs=2, batch_size=64, lr=1e-2, log_every=50),
        train=StudentTrainConfig(epochs=3, batch_size=64, lr=1e-2, log_every=50),
    )
    base.update(kw)
    return Config(**base)


def check_schema(results: dict, out) -> None:
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(results))
    for row in results["runs"]:
        for key in SCHEMA:
            assert key in row, key


@pytest.mark.parametrize(
    "override,message",
    [
        ("method=magic", "method: unknown method 'magic'"),
        ("options.labels=soft,magic", "options.labels: unknown refinement 'magic'"),
        ("options.keep_frac=0", "options.keep_frac"),
        ("options.shift=sideways", "options.shift"),
        ("options.knn_k=0", "options.knn_k"),
    ],
)
def test_bad_method_options_are_one_line_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        cfg_lib.apply_overrides(Config(), [override])


@pytest.mark.slow  # ~25 s idle, a minute on a busy machine
def test_refinements_compose_with_the_standard_sweep(tmp_path):
    refinements = ("soft", "confident", "knn", "filter", "selective")
    cfg = digits(options=MethodConfig(labels=refinements, keep_frac=0.6, knn_k=5))
    results = experiment.run(cfg, tmp_path, progress=False)
    check_schema(results, tmp_path)
    runs = results["runs"]
    assert [r.get("variant", "soft") for r in runs] == list(refinements)
    soft = runs[0]
    for r in runs[1:]:
        # Same supervisor and ceiling for every refinement: the stages are shared.
        assert r["weak_acc"] == soft["weak_acc"] and r["ceiling_acc"] == soft["ceiling_acc"]
        if r["variant"] in ("confident", "filter"):
            # 60% of the student half (300 of n_train=600), rounded within each class
            assert abs(r["n_trained"] - 0.6 * 300) <= 10
            assert "excluded_w2s_acc" in r and "excluded_weak_acc" in r
        else:
            assert "excluded_w2s_acc" not in r
    conf = next(r for r in runs if r.get("variant") == "confident")
    # Training on the confident 60% only: those labels are cleaner than the supervisor's overall.
    assert conf["train_label_acc"] > conf["weak_label_acc"]
    knn = next(r for r in runs if r.get("variant") == "knn")
    assert knn["train_label_acc"] != knn["weak_label_acc"]


@pytest.mark.slow
def test_refinement_rows_leave_the_soft_rows_unchanged(tmp_path):
    plain = experiment.run(digits(), tmp_path / "plain", progress=False)["runs"]
    swept = experiment.run(digits(options=MethodConfig(labels=("soft", "hard"))), tmp_path / "swept", progress=False)["runs"]
    strip = lambda r: {k: v for k, v in r.items() if k != "stage_seconds"}
    assert strip(swept[0]) == strip(plain[0])
    assert swept[1]["variant"] == "hard"


def test_a_method_prints_its_plan_before_training(tmp_path, capsys):
    """imitation: 1 ceiling + 1 supervisor + one student per training length, keyed before any trains."""
    cfg = digits(method="imitation", options=MethodConfig(epochs_grid=(1.0, 2.0)), strong_models=("linear",),
                 data=DataConfig(task="digits", n_train=256, n_val=64, n_test=64),
                 train=StudentTrainConfig(epochs=1, batch_size=64, lr=1e-2, log_every=50))
    experiment.run(cfg, tmp_path, progress=False)
    printed = capsys.readouterr().out
    plan = [line for line in printed.splitlines() if line.startswith("plan: ")]
    names = "ceiling__linear__seed0, weak__linear__seed0, w2s__linear__linear__xent__ep1__seed0, " \
            "w2s__linear__linear__xent__ep2__seed0"
    assert len(plan) == 1 and plan[0].startswith(f"plan: 4 of 4 stages to train ({names}), 0 reused; checkpoints ~")
    again = experiment.run(cfg, tmp_path, progress=False)
    assert "plan: 0 of 4 stages to train, 4 reused" in capsys.readouterr().out
    assert [r["epochs"] for r in again["runs"]] == [1.0, 2.0]


def test_length_shift_trains_short_and_tests_long():
    from w2sjax import data

    task = data.load_task("fine_foods")
    shifted = experiment.shift_task(task, "length")
    words = lambda split: np.array([len(str(t).split()) for t in split["text"]])
    assert words(shifted.train).max() < words(shifted.test).min() + 1
    assert 0.4 < len(shifted.train["label"]) / len(task.train["label"]) <= 0.6
    with pytest.raises(ConfigError):
        experiment.shift_task(data.load_task("digits"), "length")


def test_theory_method_writes_results_and_figures(tmp_path, monkeypatch):
    # Small testbeds: this checks the method's plumbing; tests/test_theory.py checks the effects.
    monkeypatch.setattr(theory, "random_feature_w2s",
                        functools.partial(theory.random_feature_w2s, m_strong=256, n_teacher=2000, n_student=1000,
                                          n_test=1000))
    monkeypatch.setattr(theory, "realizable_misfit_w2s",
                        functools.partial(theory.realizable_misfit_w2s, n_student=5000, n_test=5000))
    results = experiment.run(Config(name="theory", method="theory", seeds=(0,)), tmp_path, progress=False)
    check_schema(results, tmp_path)
    tasks = {r["task"] for r in results["runs"]}
    assert {"synthetic-random-features", "synthetic-ridge", "synthetic-misfit"} <= tasks
    for name in ("theory_random_features.png", "theory_ridge_pgr.png", "theory_gain_vs_misfit.png"):
        assert (tmp_path / name).stat().st_size > 1000
    realizable = [r for r in results["runs"] if r["task"] == "synthetic-misfit"]
    assert all(r["train_gain"] >= r["train_misfit"] - 1e-9 for r in realizable)
    rf = {r["variant"]: r for r in results["runs"] if r["task"] == "synthetic-random-features"}
    assert rf["early_stopped_oracle"]["w2s_acc"] > rf["early_stopped_oracle"]["weak_acc"]


@pytest.mark.slow
def test_supervisors_method_downweights_a_random_supervisor(tmp_path):
    cfg = digits(method="supervisors", weak_models=("linear", "random"), strong_models=("linear",))
    results = experiment.run(cfg, tmp_path, progress=False)
    check_schema(results, tmp_path)
    variants = {r["variant"] for r in results["runs"]}
    assert variants == {"single", "average", "samme", "boost", "raven", "raven_uniform"}
    weights = results["raven_weights"][0]["weights"]
    assert weights["linear"] > 0.9 > weights["random"]
    samme = next(r for r in results["runs"] if r["variant"] == "samme")
    # SAMME votes from 64 validation examples are noisy (±0.4 at chance level for 10 classes).
    assert samme["supervisor_weights"][1] < samme["supervisor_weights"][0]
    assert (tmp_path / "supervisors_accuracy.png").exists()


# One tiny run per method that no test above runs (theory and supervisors have their own tests).
TINY_RUNS = {
    "misfit": lambda: digits(method="misfit", options=MethodConfig(weak_sizes=(50, 0)), strong_models=("linear",)),
    "early_stopping": lambda: digits(method="early_stopping",
                                     train=StudentTrainConfig(epochs=6, batch_size=64, lr=1e-2, log_every=50)),
    "imitation": lambda: digits(method="imitation", options=MethodConfig(epochs_grid=(1.0, 4.0))),
    "saliency": lambda: Config(
        name="saliency-tiny", method="saliency", strong_mode="finetune",
        data=DataConfig(task="fine_foods", n_train=120, n_val=32, n_test=64, max_len=16),
        weak_models=("glove-bow",), strong_models=("minilm-l1",), losses=("xent",), seeds=(0,),
        weak_train=TrainConfig(epochs=1, batch_size=32, lr=1e-2, log_every=50),
        train=StudentTrainConfig(epochs=1, batch_size=16, lr=1e-4, log_every=50)),
}


@pytest.mark.slow  # ~10-20 s each on an idle machine
@pytest.mark.parametrize("method", sorted(set(METHODS) - {"w2s", "theory", "supervisors"}))
def test_every_method_writes_rows_with_the_schema(method, tmp_path):
    results = experiment.run(TINY_RUNS[method](), tmp_path, progress=False)  # a new method needs a tiny run
    check_schema(results, tmp_path)
    assert results["runs"] and list(tmp_path.glob("*.png"))
    for r in results["runs"]:
        weak, w2s, ceiling = r["weak_acc"], r["w2s_acc"], r["ceiling_acc"]
        assert all(0.0 <= a <= 1.0 for a in (weak, w2s, ceiling)), r
        if ceiling > weak:  # PGR by its definition (Burns et al.), from the stored accuracies
            want = (w2s - weak) / (ceiling - weak)
            rounding = 1e-6 * (2 + abs(want)) / (ceiling - weak)  # accuracies are stored to 6 digits
            assert r["pgr"] == pytest.approx(want, abs=rounding + 1e-6), r
        else:
            assert r["pgr"] is None, r
