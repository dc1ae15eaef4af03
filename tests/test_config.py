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
