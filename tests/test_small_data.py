"""Small data: the validation slice scales with the data, split sizes are printed, and a small half
or a short stage is a one-line warning (a 400-row file once lost 200 rows to validation)."""

import numpy as np

from w2sjax import experiment
from w2sjax.config import Config, DataConfig


def write_csv(path, n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    y = (x[:, 0] > 0).astype(int)
    path.write_text("a,b,c,d,label\n" + "".join(",".join(f"{v:.4f}" for v in row) + f",{t}\n" for row, t in zip(x, y)))
    return path


def test_400_row_file_keeps_its_rows_and_warns(tmp_path, capsys):
    path = write_csv(tmp_path / "small.csv", 400)
    config = Config(data=DataConfig(task=f"csv:{path}"), weak_models=("linear",), strong_models=("mlp",),
                    losses=("xent",), seeds=(0,))
    experiment.run(config, tmp_path / "out", progress=False)
    out, err = capsys.readouterr()
    # 400 rows: a stratified 20% test split (80), then 10% of the 320 for validation, at least 50.
    assert "data: csv:" in out and "supervisor half 135, student half 135, val 50, test 80 examples" in out
    warnings = [line for line in err.splitlines() if line.startswith("w2sjax: warning:")]
    assert len(warnings) == 2, err
    assert "the supervisor half has 135 and the student half has 135 examples (< 200)" in warnings[0]
    # students: 5 epochs of 135 // 32 = 4 steps -> 20
    assert "students ~20 (135 examples, batch 32, 5 epochs)" in warnings[1]


def test_enough_data_prints_sizes_without_warnings(tmp_path, capsys):
    path = write_csv(tmp_path / "big.csv", 3000)
    config = Config(data=DataConfig(task=f"csv:{path}", n_test=100), weak_models=("linear",), strong_models=("linear",),
                    losses=("xent",), seeds=(0,))
    experiment.run(config, tmp_path / "out", progress=False)
    out, err = capsys.readouterr()
    assert "supervisor half 1100, student half 1100, val 200, test 100 examples" in out  # 2400 train rows: val capped at 200
    assert "warning" not in err
