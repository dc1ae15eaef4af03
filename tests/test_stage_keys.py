"""Stage identity: a stage is reused only when every setting that made it is unchanged.

The make-like behaviour is checked on a tiny real run (GloVe supervisor, 1-layer MiniLM student,
128 fine-food reviews, 16 tokens): one setting changes at a time on an existing run directory,
exactly the stages that depend on it retrain, and the results equal a fresh run's.
"""

import dataclasses
import json
import pathlib
import shutil
import subprocess
import sys

import pytest

from w2sjax import experiment
from w2sjax.config import Config, DataConfig, LossConfig, StudentTrainConfig, TrainConfig, apply_overrides
from w2sjax.runner.stage_keys import StageKey, digest, train_settings

ROOT = pathlib.Path(__file__).resolve().parents[1]

WEAK = "weak__glove-bow__seed0"
CEILING = "ceiling__minilm-l1__seed0"
XENT = "w2s__glove-bow__minilm-l1__xent__seed0"
LOGCONF = "w2s__glove-bow__minilm-l1__logconf__seed0"
STUDENTS = {CEILING, XENT, LOGCONF}


def tiny_text_config() -> Config:
    return Config(
        name="stages-test",
        data=DataConfig(task="fine_foods", n_train=128, n_val=32, n_test=64, max_len=16),
        weak_models=("glove-bow",), strong_models=("minilm-l1",), losses=("xent", "logconf"), seeds=(0,),
        weak_train=TrainConfig(epochs=2, batch_size=32, lr=1e-2),
        train=TrainConfig(epochs=2, batch_size=32, lr=1e-2),
    )


def trained_stages(out: pathlib.Path, since: int) -> set[str]:
    """Stages that logged a training step in metrics.jsonl after its first ``since`` lines."""
    lines = (out / "metrics.jsonl").read_text().splitlines()[since:]
    return {json.loads(line)["stage"] for line in lines}


def comparable(results: dict) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "stage_seconds"} for r in results["runs"]]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("base")
    experiment.run(tiny_text_config(), out, progress=False)
    return out


@pytest.mark.parametrize(
    "change,retrained",
    [
        ("train.epochs=3", STUDENTS),
        ("train.lr=0.03", STUDENTS),
        ("train.loss.alpha_max=0.9", {LOGCONF}),  # only the loss that has the hyper-parameter
        ("data.max_len=24", STUDENTS),  # GloVe ignores the token budget; MiniLM does not
        ("precision=bfloat16", STUDENTS),
        ("weak_train.epochs=3", {WEAK, XENT, LOGCONF}),  # the supervisor: it and its students
        ("train.log_every=1", set()),  # logging never changes outputs
    ],
)
def test_one_changed_setting_retrains_exactly_its_dependents(base_run, tmp_path, capsys, change, retrained):
    out = tmp_path / "changed"
    shutil.copytree(base_run, out)
    before = len((out / "metrics.jsonl").read_text().splitlines())
    config = apply_overrides(tiny_text_config(), [change])
    capsys.readouterr()
    changed = experiment.run(config, out, progress=False)
    printed = capsys.readouterr().out
    assert trained_stages(out, before) == retrained
    key = change.split("=")[0]
    plan = next(line for line in printed.splitlines() if line.startswith("plan: "))
    assert plan.startswith(f"plan: {len(retrained)} of 4 stages to train")
    assert f"{4 - len(retrained)} reused" in plan and f"changed since the last run: {key} " in plan
    # the stages to train ran before under other settings: their time is the estimate
    assert ("s of training by earlier runs of these stages" in plan) == bool(retrained)
    fresh = experiment.run(config, tmp_path / "fresh", progress=False)
    assert comparable(changed) == comparable(fresh)
    # The replaced results are kept, under the name the run printed.
    kept = [p for p in out.glob("results.*.json")]
    assert len(kept) == 1 and f"as {kept[0]}" in printed
    assert json.loads(kept[0].read_text()) == json.loads((base_run / "results.json").read_text())


def test_unchanged_rerun_trains_nothing_and_keeps_no_copy(base_run, tmp_path, capsys):
    out = tmp_path / "again"
    shutil.copytree(base_run, out)
    before = len((out / "metrics.jsonl").read_text().splitlines())
    capsys.readouterr()
    experiment.run(tiny_text_config(), out, progress=False)
    assert trained_stages(out, before) == set()
    assert "plan: 0 of 4 stages to train, 4 reused" in capsys.readouterr().out
    assert not list(out.glob("results.*.json"))


def test_going_back_to_earlier_settings_reuses_their_checkpoints(base_run, tmp_path):
    out = tmp_path / "back"
    shutil.copytree(base_run, out)
    experiment.run(apply_overrides(tiny_text_config(), ["train.loss.alpha_max=0.9"]), out, progress=False)
    before = len((out / "metrics.jsonl").read_text().splitlines())
    experiment.run(tiny_text_config(), out, progress=False)
    assert trained_stages(out, before) == set()
    assert comparable(json.loads((out / "results.json").read_text())) == comparable(
        json.loads((base_run / "results.json").read_text()))


def test_rows_carry_each_stage_fingerprint(base_run):
    runs = json.loads((base_run / "results.json").read_text())["runs"]
    for r in runs:
        keys = {role: StageKey.parse(name) for role, name in r["stages"].items()}
        assert keys["weak"].name == WEAK and keys["ceiling"].name == CEILING
        assert keys["w2s"].name == (XENT if r["loss"] == "xent" else LOGCONF)
        assert all(len(k.fingerprint) == 20 for k in keys.values())
        assert (base_run / "checkpoints" / f"{r['stages']['w2s']}.out").is_dir()


# ---- the key itself -------------------------------------------------------------------------

def test_stage_names_round_trip():
    key = StageKey.w2s("glove-bow", "minilm-l2", "logconf", 3, variant="knn")
    assert key.name == "w2s__glove-bow__minilm-l2__logconf__knn__seed3"
    assert StageKey.parse(key.name) == key
    bound = key.bind({"anything": 1})
    assert StageKey.parse(bound.checkpoint_name + ".out") == dataclasses.replace(
        key, fingerprint=bound.fingerprint[:20])
    assert StageKey.boot(("a", "b", "c"), "xent", 0).name == "boot__a>b>c__xent__seed0"
    with pytest.raises(ValueError, match="no fingerprint"):
        key.checkpoint_name


def test_fingerprint_covers_settings_and_array_contents():
    key = StageKey.ceiling("mlp", 0)
    assert key.bind({"lr": 0.1}).fingerprint == key.bind({"lr": 0.1}).fingerprint
    assert key.bind({"lr": 0.1}).fingerprint != key.bind({"lr": 0.2}).fingerprint
    import numpy as np

    assert digest(np.arange(4)) != digest(np.arange(1, 5)) and digest(np.arange(4)) == digest(np.arange(4))
    assert digest(np.arange(4, dtype=np.int32)) != digest(np.arange(4, dtype=np.int64))


def test_train_settings_keep_only_what_changes_outputs():
    cfg = StudentTrainConfig(log_every=7, checkpoint_every=9, loss=LossConfig(alpha_max=0.3, product_alpha=2.0))
    xent, logconf, product = (train_settings(cfg, loss) for loss in ("xent", "logconf", "product"))
    for s in (xent, logconf, product):
        assert "log_every" not in s and "checkpoint_every" not in s and s["lr"] == cfg.lr
    assert "loss" not in xent and logconf["loss"] == {"alpha_max": 0.3, "conf_warmup_frac": 0.2}
    assert product["loss"] == {"product_alpha": 2.0, "product_beta": 1.0}
    assert train_settings(TrainConfig(), "xent") == train_settings(StudentTrainConfig(), "xent")
    assert "patience" not in xent  # only counts with early stopping
    assert train_settings(dataclasses.replace(cfg, early_stopping=True), "xent")["patience"] == 0


def test_compiled_lengths_enter_only_finetuned_text_stages_that_use_them():
    """``compile_cost_steps`` pads token batches further (float noise): it counts for a finetuned
    text backbone with length buckets, and 0 (one program per bucket) keeps the older fingerprints."""
    from w2sjax.data import length_buckets
    from w2sjax.runner import stage_keys

    cfg = StudentTrainConfig(compile_cost_steps=0.5)
    assert train_settings(cfg, "xent", tokens=True)["compile_cost_steps"] == 0.5
    # their buckets are the fine grid's (multiples of 8 tokens, since 2026-12-07): named, so that
    # stages padded to powers of two under the same compile cost are not taken for them
    assert train_settings(cfg, "xent", tokens=True)["length_step"] == length_buckets.FINE_STEP == stage_keys.FINE_STEP
    per_bucket = dataclasses.replace(cfg, compile_cost_steps=0.0)
    assert "compile_cost_steps" not in train_settings(per_bucket, "xent", tokens=True)
    assert "length_step" not in train_settings(per_bucket, "xent", tokens=True)
    assert train_settings(per_bucket, "xent", tokens=True) == train_settings(cfg, "xent")  # only the field differs
    assert "compile_cost_steps" not in train_settings(cfg, "xent")  # probes and other inputs: no effect
    assert "compile_cost_steps" not in train_settings(dataclasses.replace(cfg, length_buckets=False), "xent", tokens=True)


# Fingerprints of the default student settings, recorded on 2026-12-06 before the losses moved to
# one registry (w2sjax.losses.LOSSES): a change here orphans every saved checkpoint of that loss.
PINNED_FINGERPRINTS = {
    ("default", "xent"): "f433e970d9a53b6b3dc882bb734989d4fa75d66b679035b55c229469d702ea1a",
    ("default", "logconf"): "16ddf27a38b318400c4456163b5feceb2e858c987766755b8c3d9ba1ddd95f34",
    ("default", "product"): "8ee99c77a54a898930ef334a0ac1bef57048aa7588a16a89bbc89a5e05471416",
    ("default", "entropy_conf"): "16ddf27a38b318400c4456163b5feceb2e858c987766755b8c3d9ba1ddd95f34",
    ("default", "reverse_xent"): "f433e970d9a53b6b3dc882bb734989d4fa75d66b679035b55c229469d702ea1a",
    ("custom", "logconf"): "f15a25aff3f1f72f6abb09c67473336a7b15fe0a45b4f69f3739df90619981d7",
    ("custom", "product"): "5576a5a2312dd038c6bd405f71c561b59dbab8bff5bfebac07f589779bbb1332",
    ("weak", "xent"): "ca3131fbeff4733c566b734bd6781eb7fd41e4ad0e545353b548c1ef0f862470",
}


def test_fingerprints_of_existing_losses_are_unchanged():
    from w2sjax.runner.stage_keys import fingerprint

    cfgs = {"default": Config().train, "weak": Config().weak_train,
            "custom": StudentTrainConfig(loss=LossConfig(alpha_max=0.3, product_alpha=2.0))}
    for (cfg, loss), want in PINNED_FINGERPRINTS.items():
        assert fingerprint(train_settings(cfgs[cfg], loss)) == want, (cfg, loss)


# ---- the documented commands: rerun, change a setting, resume ---------------------------------

SMALL_RUN = ["--set", "data.task=spambase", "--set", "weak_models=linear", "--set", "strong_models=mlp"]


def _cli(args, cwd):
    proc = subprocess.run([sys.executable, "-m", "w2sjax.cli", "run", "--no-progress", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_issue_stale_results_command(tmp_path):
    """``train.epochs=0.2`` then ``train.epochs=5`` on one --out reports the 5-epoch numbers."""
    _cli(["--out", "r", *SMALL_RUN, "--set", "train.epochs=0.2"], tmp_path)
    second = _cli(["--out", "r", *SMALL_RUN, "--set", "train.epochs=5"], tmp_path)
    assert "changed since the last run: train.epochs 0.2 -> 5.0" in second.stdout
    _cli(["--out", "fresh", *SMALL_RUN, "--set", "train.epochs=5"], tmp_path)
    load = lambda d: comparable(json.loads((tmp_path / d / "results.json").read_text()))
    assert load("r") == load("fresh")


def test_a_stage_config_with_an_unset_compile_cost_is_keyed_as_the_runs_own(tmp_path):
    """A finetuned text stage whose config leaves the compile cost unset (a recipe built apart from
    the run's config, as a bootstrap rung's) pads and is fingerprinted with the run's machine default,
    not as if it compiled one program per bucket: the same checkpoint name as the run's own config,
    another than an explicit 0."""
    from w2sjax.runner.stage_runner import Runner

    config = dataclasses.replace(tiny_text_config(), strong_mode="finetune", precision="bfloat16")
    runner, task, out = experiment.prepare(config, tmp_path / "run", progress=False)
    planner = Runner(runner.config, out, runner.mesh, task, False, planning=True)
    sr = experiment.SeedRun(planner, task, 0)
    unset = dataclasses.replace(runner.config.train, compile_cost_steps=None)
    name = lambda cfg: sr.strong(StageKey.ceiling("minilm-l1", 0), "minilm-l1", sr.gt(sr.student_half),
                                 sr.gt(sr.val), "xent", cfg=cfg).key.checkpoint_name
    assert runner.config.train.compile_cost_steps is not None
    assert name(unset) == name(runner.config.train)
    assert name(dataclasses.replace(unset, compile_cost_steps=0.0)) != name(unset)
