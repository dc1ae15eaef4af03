"""What the command prints: help that points to the config reference, and `w2sjax list`."""

import os
import pathlib
import subprocess
import sys

from w2sjax import data, models
from w2sjax.methods import METHODS
from w2sjax.config import LOSS_NAMES

ROOT = pathlib.Path(__file__).resolve().parents[1]


def cli(*args):
    return subprocess.run([sys.executable, "-m", "w2sjax.cli", *args], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))


def test_run_help_points_to_the_config_reference():
    proc = cli("run", "--help")
    assert proc.returncode == 0
    assert "docs/configuration.md" in " ".join(proc.stdout.split())
    assert (ROOT / "docs" / "configuration.md").is_file()


def test_list_names_tasks_models_losses_and_methods():
    proc = cli("list")
    assert proc.returncode == 0, proc.stderr
    listed = {line.strip().split(":")[0] if ": " in line else line.strip() for line in proc.stdout.splitlines()}
    for name in [*data.known_tasks(), *models.known_models(), *LOSS_NAMES, *METHODS]:
        assert name in listed, name
