"""Pipeline variants on a fast task (scikit-learn digits, models trained from scratch):
bootstrapping chains, an fsdp-sharded mesh, and weak/ceiling stages shared across pairs."""

import dataclasses
import json

import numpy as np
import pytest

from w2sjax import config as cfg_lib
from w2sjax import experiment
from w2sjax.config import Config, DataConfig, ParallelConfig
from w2sjax.config import StudentTrainConfig, TrainConfig
from w2sjax.runner import checkpoint


def digits_config(**kw) -> Config:
    base = dict(
        name="digits-test",
        data=DataConfig(task="digits", n_val=64, n_test=256),
        weak_models=("linear",),
        strong_models=("mlp",),
        losses=("xent",),
        seeds=(0,),
        weak_train=TrainConfig(epochs=3, batch_size=64, lr=1e-2, log_every=5),
        train=StudentTrainConfig(epochs=5, batch_size=64, lr=1e-2, log_every=5),
    )
    base.update(kw)
    return Config(**base)


@pytest.mark.slow  # a three-rung chain; the disjoint-rows and prune tests run chains by default
def test_bootstrap_chain_and_shared_stages(tmp_path):
    config = digits_config(strong_models=("mlp", "cnn"), bootstrap=("linear>mlp>cnn",))
    results = experiment.run(config, tmp_path, progress=False)
    runs = results["runs"]
    chain = [r for r in runs if r.get("chain") == "linear>mlp>cnn"]
    assert len(chain) == 1
    assert chain[0]["weak_model"] == "linear" and chain[0]["strong_model"] == "cnn"
    plain = {r["strong_model"]: r for r in runs if not r.get("chain")}
    assert set(plain) == {"mlp", "cnn"}
    # One weak stage serves both pairs and the chain; one ceiling per strong model.
    assert plain["mlp"]["weak_acc"] == plain["cnn"]["weak_acc"] == chain[0]["weak_acc"]
    assert chain[0]["ceiling_acc"] == plain["cnn"]["ceiling_acc"]
    ckpt = tmp_path / "checkpoints"
    assert len(list(ckpt.glob("weak__*"))) == 1  # one weak stage: its outputs and trained parameters
    # The chain's intermediate (mlp on linear's labels) and final (cnn on mlp's labels) stages both ran.
    assert chain[0]["stages"]["w2s"].startswith("boot__linear>mlp>cnn__xent__seed0--")
    assert checkpoint.is_done(ckpt, chain[0]["stages"]["w2s"] + ".out")
    assert len(list(ckpt.glob("boot__linear_mlp__xent__seed0--*.out-*"))) == 1
    # Each rung trains on its own half of the student half; the direct student on the last rung's rows.
    assert chain[0]["n_trained"] == len(config_b_half(config)) // 2
    assert chain[0]["direct_stage"].startswith("w2s__linear__cnn__xent__part2of2__seed0--")
    assert 0.3 < chain[0]["direct_w2s_acc"] <= 1.0
    for r in runs:
        assert 0.3 < r["weak_acc"] <= 1.0 and 0.3 < r["ceiling_acc"] <= 1.0  # 10 classes: chance is 0.1
    assert json.loads((tmp_path / "results.json").read_text())["runs"] == runs


def config_b_half(config):
    from w2sjax import data

    return experiment.SeedRun.splits_of(config, data.load_task(config.data.task), 0).student_half["label"]


def test_no_chain_stage_learns_from_labels_of_its_own_training_rows(tmp_path, monkeypatch):
    """Every student's labels come from a model that never trained on the rows it labelled: the
    supervisor (the supervisor half) and each rung of a bootstrap chain (its own part of the student half). Recorded from
    the real stages as they run."""
    trained, taught = {}, []
    real_stage = experiment.Runner.stage

    def recording_stage(self, key, **kw):
        out = real_stage(self, key, **kw)
        if self.planning:  # the planning pass keys the stages without training them
            return out
        trained[out.key.fingerprint] = (out.key.name, set(np.asarray(kw["rows"]).tolist()))
        label_source = (kw.get("sources") or {}).get("labels")
        if label_source:
            taught.append((out.key.name, label_source.split("/")[0], set(np.asarray(kw["rows"]).tolist())))
        return out

    monkeypatch.setattr(experiment.Runner, "stage", recording_stage)
    # one epoch a stage: the rows each stage sees are the point here, not how well it learns
    base = digits_config(strong_models=("mlp", "cnn"), bootstrap=("linear>mlp>cnn",), losses=("xent",))
    config = dataclasses.replace(base, weak_train=dataclasses.replace(base.weak_train, epochs=1),
                                 train=dataclasses.replace(base.train, epochs=1))
    experiment.run(config, tmp_path, progress=False)
    chain_stages = [name for name, _, _ in taught if name.startswith("boot")]
    assert len(chain_stages) == 2
    for name, teacher, rows in taught:
        teacher_name, teacher_rows = trained[teacher]
        assert rows and not rows & teacher_rows, (name, teacher_name)
    # the two rungs split the student half between them
    rung_rows = [rows for name, _, rows in taught if name.startswith("boot")]
    assert not rung_rows[0] & rung_rows[1]
    assert len(rung_rows[0] | rung_rows[1]) == len(config_b_half(config))


def test_chain_parts_are_disjoint_and_keep_questions_whole():
    half = {"label": np.zeros(10, int), "group": np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])}
    parts = experiment.chain_parts(half, 2, seed=3)
    assert sorted(np.concatenate(parts).tolist()) == list(range(10))
    for part in parts:
        assert all(set(half["group"][part]).isdisjoint(half["group"][other]) for other in parts if other is not part)
    plain = experiment.chain_parts({"label": np.zeros(7, int)}, 3, seed=0)
    assert sorted(len(p) for p in plain) == [2, 2, 3]
    with pytest.raises(cfg_lib.ConfigError, match="bootstrap"):
        experiment.chain_parts({"label": np.zeros(2, int)}, 3, seed=0)


def test_fsdp_mesh_matches_data_parallel(tmp_path):
    """Sharding the MLP's parameters over 2 devices changes where they live, not what is learned."""
    dp = experiment.run(digits_config(), tmp_path / "dp", progress=False)["runs"][0]
    fsdp = experiment.run(digits_config(parallel=ParallelConfig(data=4, fsdp=2)), tmp_path / "fsdp",
                          progress=False)["runs"][0]
    for field in ("weak_acc", "w2s_acc", "ceiling_acc"):
        assert fsdp[field] == pytest.approx(dp[field], abs=2 / 256), field


def test_bad_mesh_is_a_config_error(tmp_path):
    with pytest.raises(cfg_lib.ConfigError, match="parallel:"):
        experiment.run(digits_config(parallel=ParallelConfig(data=3, fsdp=1)), tmp_path, progress=False)
    assert not (tmp_path / "checkpoints").exists()
    np.testing.assert_equal(list(tmp_path.iterdir()), [])


def test_standardize_features_uses_whole_training_split_statistics():
    """Probe inputs are (features - mean) / std with the statistics of all training rows, for any
    rows of either split; the raw features come from the same cache."""
    from w2sjax.data import load_task

    task = load_task("fine_foods")  # the shared cache: GloVe features are keyed by content
    base = dict(data=DataConfig(task="fine_foods"), weak_models=("glove-bow",), strong_models=("glove-bow",))
    raw = experiment.Inputs(task, Config(**base), progress=False).get("glove-bow", frozen_features=True).inputs
    std = experiment.Inputs(task, Config(**base, standardize_features=True), progress=False)
    std = std.get("glove-bow", frozen_features=True).inputs
    every = raw("train", np.arange(len(task.train["label"]))).astype(np.float64)
    mean, sd = every.mean(0), every.std(0)
    rows = np.array([5, 17, 999])
    for split in ("train", "test"):
        want = (raw(split, rows) - mean) / sd
        np.testing.assert_allclose(std(split, rows), want, rtol=1e-4, atol=1e-4)
    whole = std("train", np.arange(len(task.train["label"])))
    np.testing.assert_allclose(whole.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(whole.std(0), 1.0, atol=1e-3)
