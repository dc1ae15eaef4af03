"""Each seed's val and test rows and labels, saved by a real run (``OUT/splits/seed{N}.npz``), and
reports that score the stages' predictions from them alone, without the task."""

import dataclasses

import numpy as np
import pytest

from experiments.reports import ladder as ladder_report
from w2sjax import data, experiment, parallel
from w2sjax.config import Config, DataConfig, StudentTrainConfig, TrainConfig
from w2sjax.data.task import Task
from w2sjax.runner import saved_splits

SEEDS = (0, 1)


def tiny() -> Config:
    """digits, a linear supervisor and an MLP student, two seeds: seconds per stage."""
    return Config(
        data=DataConfig(task="digits", n_val=64, n_test=256), weak_models=("linear",), strong_models=("mlp",),
        losses=("xent",), seeds=SEEDS, weak_train=TrainConfig(epochs=3, batch_size=64, lr=1e-2),
        train=StudentTrainConfig(epochs=2, batch_size=32, lr=1e-2, log_every=5),
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return out, experiment.run(tiny(), out, progress=False)


def test_a_run_saves_each_seeds_val_and_test_rows_and_labels(run):
    out, _ = run
    assert sorted(p.name for p in (out / "splits").iterdir()) == [f"seed{s}.npz" for s in SEEDS]
    task = data.load_task("digits")
    for seed in SEEDS:
        sp = data.make_splits(task, seed=seed, n_val=64, n_test=256)  # drawn again here, independently
        rec = saved_splits.load(out, seed)
        assert set(rec) == {"num_classes", "student_half_size", "val_row", "val_label", "test_row", "test_label"}
        assert int(rec["num_classes"]) == task.num_classes == 10
        assert int(rec["student_half_size"]) == len(sp.student_half["label"])
        np.testing.assert_array_equal(rec["test_row"], sp.indices["test"])
        np.testing.assert_array_equal(rec["test_label"], task.test["label"][sp.indices["test"]])
        np.testing.assert_array_equal(rec["val_row"], sp.indices["val"])
        np.testing.assert_array_equal(rec["val_label"], task.train["label"][sp.indices["val"]])
        assert len(rec["test_row"]) == 256 and len(rec["val_row"]) == 64
    assert not np.array_equal(saved_splits.load(out, 0)["val_row"], saved_splits.load(out, 1)["val_row"])


def test_a_resumed_run_does_not_rewrite_them(run):
    out, results = run
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (out / "splits").iterdir()}
    again = experiment.run(tiny(), out, progress=False)
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (out / "splits").iterdir()}
    assert after == before
    assert [r["w2s_acc"] for r in again["runs"]] == [r["w2s_acc"] for r in results["runs"]]


def test_ladder_bootstrap_reads_the_run_folder_without_the_task(run, monkeypatch):
    out, results = run

    def refuse(*args, **kwargs):
        raise AssertionError("the report loaded the task or drew the splits again")

    monkeypatch.setattr(data, "load_task", refuse)
    monkeypatch.setattr(data, "make_splits", refuse)
    key = ("digits", "linear", "mlp", "xent")
    by_seed = ladder_report._correct(out, results)[key]
    assert sorted(by_seed) == list(SEEDS)
    for r in results["runs"]:
        weak, w2s, ceiling, rows = by_seed[r["seed"]]
        # The correctness read back reproduces the accuracies of results.json, row by row.
        assert (weak.mean(), w2s.mean(), ceiling.mean()) == pytest.approx(
            (r["weak_acc"], r["w2s_acc"], r["ceiling_acc"]), abs=1e-6)
        np.testing.assert_array_equal(rows, saved_splits.load(out, r["seed"])["test_row"])
    lo, hi = ladder_report.seed_and_example_bootstrap_pgr(out, results, n_boot=200)[key]
    assert lo <= hi


def test_no_record_leaves_the_group_out(run, tmp_path):
    import shutil

    out, results = run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "splits" / "seed1.npz").unlink()
    # One seed short, the group's interval would be about another mean: it is left out.
    assert ladder_report._correct(copy, results) == {}


def _grouped_task() -> Task:
    # Three choices per question, the first one right: one binary row per (question, choice).
    def split(n_questions: int) -> dict:
        return {"text": np.array([f"q{i // 3} c{i % 3}" for i in range(3 * n_questions)]),
                "label": np.tile(np.array([1, 0, 0], np.int32), n_questions),
                "group": np.repeat(np.arange(n_questions, dtype=np.int64), 3)}

    return Task(name="toy_choices", kind="text", num_classes=2, class_names=("no", "yes"),
                train=split(40), test=split(20))


def test_groups_are_saved_and_other_settings_keep_the_old_record(tmp_path):
    task = _grouped_task()
    sp = data.make_splits(task, seed=3, n_val=12, n_test=30)
    assert saved_splits.save(tmp_path, 3, sp, task.num_classes) is None
    rec = saved_splits.load(tmp_path, 3)
    np.testing.assert_array_equal(rec["test_group"], task.test["group"][sp.indices["test"]])
    np.testing.assert_array_equal(rec["val_group"], task.train["group"][sp.indices["val"]])
    assert rec["test_group"].dtype == np.int64
    assert saved_splits.save(tmp_path, 3, sp, task.num_classes) is None  # the same: nothing written
    # Other data settings in the same folder: the old record is kept beside the new one.
    other = data.make_splits(task, seed=3, n_val=12, n_test=15)
    kept = saved_splits.save(tmp_path, 3, other, task.num_classes)
    assert kept is not None and kept.name.startswith("seed3.") and kept.suffix == ".npz"
    with np.load(kept) as old:
        np.testing.assert_array_equal(old["test_row"], sp.indices["test"])
    assert len(saved_splits.load(tmp_path, 3)["test_row"]) == 15
    assert not any(p.name.startswith(".") for p in (tmp_path / "splits").iterdir())  # no temporary left


def test_a_planning_pass_writes_nothing(tmp_path):
    task = _grouped_task()
    for split in (task.train, task.test):
        split["row"] = np.arange(len(split["label"]))
    config = dataclasses.replace(tiny(), data=dataclasses.replace(tiny().data, n_val=12, n_test=30))
    mesh = parallel.make_mesh(config.parallel.data, config.parallel.fsdp)
    planner = experiment.Runner(config, tmp_path, mesh, task, False, planning=True)
    experiment.SeedRun(planner, task, 0)
    assert not (tmp_path / "splits").exists()
    experiment.SeedRun(experiment.Runner(config, tmp_path, mesh, task, False), task, 0)
    assert (tmp_path / "splits" / "seed0.npz").is_file()


def test_a_failed_run_that_saved_only_split_records_leaves_no_folder(tmp_path):
    from w2sjax.runner import rundir

    task = _grouped_task()
    out = tmp_path / "failed"
    rundir.lock(out)  # creates the folder, as a run does
    saved_splits.save(out, 0, data.make_splits(task, seed=0, n_val=12, n_test=30), task.num_classes)
    assert rundir.discard_if_empty(out) and not out.exists()
    mine = tmp_path / "mine"  # a folder the run did not create stays
    mine.mkdir()
    rundir.lock(mine)
    saved_splits.save(mine, 0, data.make_splits(task, seed=0, n_val=12, n_test=30), task.num_classes)
    assert not rundir.discard_if_empty(mine) and (mine / "splits" / "seed0.npz").is_file()


def test_prune_leaves_the_split_records_alone(run):
    from w2sjax.runner import disk

    out, _ = run
    removals, notes = disk.prune_candidates(out)
    assert not [r for r in removals if "splits" in r.path.parts] and not notes
