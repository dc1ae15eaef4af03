"""Configs: every shipped experiment parses, overrides are typed, mistakes are one-line errors."""

import pytest

from w2sjax import config as cfg_lib
from w2sjax.config import Config, ConfigError


@pytest.mark.parametrize("path", cfg_lib.shipped_configs(), ids=lambda p: p.stem)
def test_every_shipped_config_parses(path):
    config = cfg_lib.load_config_file(path)
    assert isinstance(config, Config)
    assert config.name
    cfg_lib.to_dict(config)  # JSON-ready


def test_shipped_configs_include_smoke_and_default():
    names = {p.stem for p in cfg_lib.shipped_configs()}
    assert {"smoke", "default"} <= names


def test_overrides_parse_by_declared_type():
    c = cfg_lib.apply_overrides(
        Config(),
        ["train.lr=1e-4", "seeds=0,1,2,3", "data.n_train=none", "data.n_test=500", "train.early_stopping=true",
         "losses=xent", "data.task=csv:/tmp/x.csv", "weak_train.epochs=2.5"],
    )
    assert c.train.lr == 1e-4 and isinstance(c.train.lr, float)
    assert c.seeds == (0, 1, 2, 3)
    assert c.data.n_train is None and c.data.n_test == 500
    assert c.train.early_stopping is True
    assert c.losses == ("xent",)
    assert c.data.task == "csv:/tmp/x.csv"
    assert c.weak_train.epochs == 2.5
    assert Config().train.lr != 1e-4  # the default is untouched


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.lrr=1", r"unknown key 'lrr'; expected one of epochs"),
        ("nope=1", r"unknown key 'nope'"),
        ("train.lr=fast", r"train.lr: expected float, got 'fast'"),
        ("seeds=a,b", r"seeds: expected int, got 'a'"),
        ("train.early_stopping=maybe", r"expected true or false"),
        ("train=1", r"'train' is a section"),
        ("train.lr", r"expected key=value"),
        ("losses=mse", r"losses: unknown loss 'mse'"),
        ("strong_mode=full", r"strong_mode: expected 'probe' or 'finetune'"),
        ("precision=fp16", r"precision: expected 'float32' or 'bfloat16', got 'fp16'"),
        ("standardize_features=sometimes", r"expected true or false"),
        ("train.trainable=bias", r"train.trainable"),
        ("train.batch_size=0", r"train.batch_size: expected a positive integer"),
    ],
)
def test_bad_overrides_are_one_line_errors(override, message):
    with pytest.raises(ConfigError, match=message) as info:
        cfg_lib.apply_overrides(Config(), [override])
    assert "\n" not in str(info.value)


def test_bad_config_files(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        cfg_lib.load_config_file(tmp_path / "missing.py")
    (tmp_path / "empty.py").write_text("x = 1\n")
    with pytest.raises(ConfigError, match="defines no get_config"):
        cfg_lib.load_config_file(tmp_path / "empty.py")
    (tmp_path / "broken.py").write_text("def get_config(:\n")
    with pytest.raises(ConfigError, match="failed to load: SyntaxError"):
        cfg_lib.load_config_file(tmp_path / "broken.py")
    (tmp_path / "wrong.py").write_text("def get_config():\n    return {'a': 1}\n")
    with pytest.raises(ConfigError, match="returned dict"):
        cfg_lib.load_config_file(tmp_path / "wrong.py")


def test_importing_config_loads_neither_flax_nor_optax():
    import subprocess
    import sys

    code = (
        "import sys, w2sjax.config\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('flax', 'optax', 'orbax', 'tensorflow_datasets')]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    "override,message",
    [
        # The supervisors always train with xent as linear probes: they have no loss or trainable keys.
        ("weak_train.loss.alpha_max=0.3", r"--set weak_train.loss.alpha_max: unknown key 'loss'; expected one of epochs"),
        ("weak_train.trainable=head", r"--set weak_train.trainable: unknown key 'trainable'"),
        ("weak_train.alpha_max=0.3", r"unknown key 'alpha_max'"),
        ("train.alpha_max=0.3", r"unknown key 'alpha_max'"),  # it moved to train.loss
    ],
)
def test_removed_keys_are_one_line_errors(override, message):
    with pytest.raises(ConfigError, match=message) as info:
        cfg_lib.apply_overrides(Config(), [override])
    assert "\n" not in str(info.value)


def test_student_loss_settings_are_a_section():
    c = cfg_lib.apply_overrides(Config(), ["train.loss.alpha_max=0.75", "train.loss.product_beta=2"])
    assert c.train.loss.alpha_max == 0.75 and c.train.loss.product_beta == 2.0
    # A config file that writes train=TrainConfig(...) gets a student config with default loss settings.
    plain = Config(train=cfg_lib.TrainConfig(epochs=3))
    assert isinstance(plain.train, cfg_lib.StudentTrainConfig)
    assert plain.train.epochs == 3 and plain.train.loss == cfg_lib.LossConfig()


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.lr=0", r"^train\.lr: expected a positive finite number, got 0\.0$"),
        ("train.lr=nan", r"^train\.lr: expected a positive finite number, got nan$"),
        ("train.lr=inf", r"^train\.lr: expected a positive finite number, got inf$"),
        ("weak_train.lr=-1", r"^weak_train\.lr: expected a positive finite number, got -1\.0$"),
        ("train.epochs=inf", r"^train\.epochs: expected a positive finite number"),
        ("train.weight_decay=-0.1", r"^train\.weight_decay: expected a finite number >= 0"),
        ("train.lr_warmup_frac=1.5", r"^train\.lr_warmup_frac: expected a number in \[0, 1\]"),
        ("train.checkpoint_minutes=nan", r"^train\.checkpoint_minutes: expected a finite number >= 0"),
        ("train.patience=-1", r"^train\.patience: expected an integer >= 0"),
        ("train.loss.alpha_max=1.5", r"^train\.loss\.alpha_max: expected a number in \[0, 1\]"),
        ("train.loss.conf_warmup_frac=nan", r"^train\.loss\.conf_warmup_frac: expected a number in \[0, 1\]"),
        ("train.loss.product_beta=-2", r"^train\.loss\.product_beta: expected a finite number >= 0"),
        ("train.lora.alpha=0", r"^train\.lora\.alpha: expected a positive finite number"),
        ("data.n_test=0", r"^data\.n_test: expected a positive integer, got 0$"),
        ("data.n_train=1", r"^data\.n_train: expected an integer >= 2"),
        ("data.max_len=0", r"^data\.max_len: expected a positive integer"),
        ("parallel.data=0", r"^parallel\.data: expected -1 \(all devices\) or a positive integer"),
        ("options.epochs_grid=1,nan", r"^options\.epochs_grid: expected a positive finite number, got nan$"),
        ("data.label_map=0-neg", r"^data\.label_map: expected RAW:CLASS items"),
    ],
)
def test_out_of_range_settings_are_one_line_errors_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        cfg_lib.apply_overrides(Config(), [override])


def test_ranges_are_checked_in_config_files_too(tmp_path):
    (tmp_path / "zero.py").write_text(
        "from w2sjax.config import Config, TrainConfig\n"
        "def get_config():\n    return Config(weak_train=TrainConfig(lr=0.0))\n")
    with pytest.raises(ConfigError, match=r"^weak_train\.lr: expected a positive finite number, got 0\.0$"):
        cfg_lib.load_config_file(tmp_path / "zero.py")


def test_lr_zero_from_the_command_line_exits_2_with_one_line(tmp_path):
    import os
    import pathlib
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "w2sjax.cli", "run", "--out", str(tmp_path / "r"), "--set", "train.lr=0"],
                          env=dict(os.environ, PYTHONPATH=str(root)), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["w2sjax: error: train.lr: expected a positive finite number, got 0.0"]
    assert not (tmp_path / "r").exists()
