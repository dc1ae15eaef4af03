"""Result tables, plots and the `w2sjax report` command, against numbers computed here by hand."""

import json
import math
import re
import pathlib
import statistics
import struct
import subprocess
import sys

import pytest

from w2sjax.report import tables

# Two-sided 95% Student-t critical values from a printed table, independent of tables._T975.
T975 = {1: 12.706, 2: 4.303, 4: 2.776, 40: 2.021, 60: 2.000, 120: 1.980}


def _run(weak, strong, loss, seed, weak_acc, w2s_acc, ceiling_acc, misfit=0.1, **extra):
    return {"task": "toy", "weak_model": weak, "strong_model": strong, "loss": loss, "seed": seed,
            "weak_acc": weak_acc, "w2s_acc": w2s_acc, "ceiling_acc": ceiling_acc,
            "pgr": None, "misfit": misfit, "stage_seconds": {"weak": 1.0, "w2s": 2.0, "ceiling": 3.0}, **extra}


# (weak, w2s, ceiling) accuracy per seed for each group.
GROUPS = {
    ("bow", "bert", "xent"): [(0.70, 0.74, 0.80), (0.72, 0.73, 0.81), (0.69, 0.75, 0.79)],
    ("bow", "bert", "logconf"): [(0.70, 0.77, 0.80), (0.72, 0.76, 0.81), (0.69, 0.78, 0.79)],
    ("bow", "big", "xent"): [(0.70, 0.71, 0.70)],  # ceiling no better than weak: PGR undefined
}


def _results() -> dict:
    runs = [_run(w, s, loss, seed, *accs, misfit=0.05 * (seed + 1))
            for (w, s, loss), seeds in GROUPS.items() for seed, accs in enumerate(seeds)]
    runs += [_run("bow", "big", "xent", seed, 0.70, 0.76, 0.82, chain="bow>bert>big") for seed in range(2)]
    return {"config": {"name": "toy"}, "runs": runs}


def _row(summary, weak, strong, loss, chain=None):
    (row,) = [r for r in summary if (r["weak_model"], r["strong_model"], r["loss"], r["chain"]) == (weak, strong, loss, chain)]
    return row


# ---- summarize and the table ----------------------------------------------------------------

def test_summarize_matches_hand_computed_statistics():
    summary = tables.summarize(_results())
    assert len(summary) == 4  # three groups, plus the chain kept apart from its plain pair
    for (weak, strong, loss), seeds in GROUPS.items():
        row = _row(summary, weak, strong, loss)
        assert row["seeds"] == len(seeds)
        for k, name in enumerate(("weak_acc", "w2s_acc", "ceiling_acc")):
            values = [s[k] for s in seeds]
            assert row[name] == pytest.approx(statistics.mean(values))
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            assert row[name + "_std"] == pytest.approx(std)
            half = T975[len(values) - 1] * std / math.sqrt(len(values)) if len(values) > 1 else 0.0
            assert row[name + "_ci95"] == pytest.approx(half, rel=1e-3)
        weak_m, w2s_m, ceil_m = (statistics.mean(s[k] for s in seeds) for k in range(3))
        if ceil_m > weak_m:
            # PGR of the means, not the mean of per-seed PGRs.
            assert row["pgr"] == pytest.approx((w2s_m - weak_m) / (ceil_m - weak_m))
        else:
            assert math.isnan(row["pgr"])
    assert _row(summary, "bow", "bert", "xent")["misfit"] == pytest.approx(statistics.mean([0.05, 0.10, 0.15]))


def test_pgr_of_means_differs_from_mean_of_pgrs():
    seeds = GROUPS[("bow", "bert", "xent")]
    mean_of_ratios = statistics.mean((w2s - weak) / (ceil - weak) for weak, w2s, ceil in seeds)
    weak, w2s, ceil = (statistics.mean(s[k] for s in seeds) for k in range(3))
    row = _row(tables.summarize(_results()), "bow", "bert", "xent")
    assert row["pgr"] == pytest.approx((w2s - weak) / (ceil - weak))
    assert row["pgr"] != pytest.approx(mean_of_ratios, rel=1e-3)


def test_bootstrap_interval_brackets_the_estimate_and_is_reproducible():
    row = _row(tables.summarize(_results()), "bow", "bert", "logconf")
    lo, hi = row["pgr_ci95"]
    assert lo <= row["pgr"] <= hi
    assert tables.summarize(_results())[1]["pgr_ci95"] == (lo, hi)
    single = _row(tables.summarize(_results()), "bow", "big", "xent")
    assert all(math.isnan(v) for v in single["pgr_ci95"])


def test_t_interval_beyond_the_table():
    for df in (40, 60, 120):
        values = [0.0, 1.0] * ((df + 1) // 2) + [0.5] * ((df + 1) % 2)
        assert len(values) == df + 1
        expected = T975[df] * statistics.stdev(values) / math.sqrt(len(values))
        assert tables.t_interval(values) == pytest.approx(expected, rel=2e-3)
    assert tables.t_interval([0.7]) == 0.0


def test_format_table_shows_means_stds_and_pgr():
    table = tables.format_table(_results())
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["task", "weak", "strong", "loss"]
    xent = next(line for line in lines if " bert " in line and " xent " in line)
    weak, w2s, ceil = zip(*GROUPS[("bow", "bert", "xent")])
    for accs in (weak, w2s, ceil):
        assert f"{statistics.mean(accs):.3f} ± {statistics.stdev(accs):.3f}" in xent
    pgr = (statistics.mean(w2s) - statistics.mean(weak)) / (statistics.mean(ceil) - statistics.mean(weak))
    assert f"  {pgr:.2f} [" in xent  # PGR of the means, with its interval
    undefined = next(line for line in lines if " big " in line and "bow>bert>big" not in line)
    assert "undefined" in undefined
    assert "± " not in undefined  # one seed: no spread to show
    assert any("bow>bert>big" in line for line in lines)


# ---- load_results and the command ------------------------------------------------------------

@pytest.mark.parametrize("content, message", [
    (None, "no results.json"),
    ("{not json", "not valid JSON"),
    ('{"config": {}}', "no 'runs' list"),
    ('{"runs": [{"task": "t"}]}', "runs[0] lacks"),
    ('{"runs": [{"task": "t", "weak_model": "a", "strong_model": "b", "loss": "xent", '
     '"weak_acc": "high", "w2s_acc": 0.7, "ceiling_acc": 0.8}]}', "non-numeric weak_acc"),
])
def test_load_results_rejects_bad_input_in_one_line(tmp_path, content, message):
    if content is not None:
        (tmp_path / "results.json").write_text(content)
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        tables.load_results(tmp_path)
    assert "\n" not in str(info.value)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "w2sjax.cli", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("setup", ["missing", "malformed"])
def test_report_command_on_a_bad_dir_exits_2_with_one_line(tmp_path, setup):
    target = tmp_path / "nowhere"
    if setup == "malformed":
        target = tmp_path
        (tmp_path / "results.json").write_text('{"runs": [1, 2')
    proc = _cli("report", str(target))
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("w2sjax: error: report:")


def test_report_command_prints_the_table_and_writes_plots(tmp_path):
    _write_experiment_dir(tmp_path)
    proc = _cli("report", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "PGR" in proc.stdout and "logconf" in proc.stdout
    for name in ("pgr_heatmap.png", "accuracy_bars.png", "training_curves.png", "gain_vs_misfit.png"):
        assert f"wrote {tmp_path / name}" in proc.stdout


# ---- plots ----------------------------------------------------------------------------------

def _write_experiment_dir(directory: pathlib.Path, *, metrics=True, val=True) -> dict:
    results = _results()
    (directory / "results.json").write_text(json.dumps(results))
    if metrics:
        lines = []
        for stage in ("weak__bow__seed0", "ceiling__bert__seed0", "w2s__bow__bert__xent__seed0",
                      "w2s__bow__bert__logconf__seed0", "boot__bow>bert__xent__seed0"):
            for step in range(5, 55, 5):
                lines.append({"time": 0.0, "stage": stage, "step": step, "loss": 0.7 / (1 + step / 20),
                              "grad_norm": 0.5, "label_agreement": 0.8})
                if val and step % 25 == 0:
                    lines.append({"time": 0.0, "stage": stage, "step": step, "val_accuracy": 0.7 + step / 500})
        text = "\n".join(json.dumps(x) for x in lines)
        (directory / "metrics.jsonl").write_text(text + '\n{"time": 1.0, "sta')  # torn last line, as after kill -9
    return results


def _png_size(path: pathlib.Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path.name} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_write_plots_writes_valid_pngs(tmp_path):
    results = _write_experiment_dir(tmp_path)
    paths = tables.write_plots(results, tmp_path)
    assert [p.name for p in paths] == ["pgr_heatmap.png", "accuracy_bars.png", "training_curves.png",
                                       "gain_vs_misfit.png"]
    for path in paths:
        assert path.parent == tmp_path
        width, height = _png_size(path)
        assert 400 <= width <= 4000 and 250 <= height <= 4000, (path.name, width, height)
        assert path.stat().st_size > 10_000, path.name  # a blank canvas compresses to far less
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]  # atomic writes leave no debris


def test_plots_skip_figures_without_data(tmp_path):
    results = _write_experiment_dir(tmp_path, metrics=False)
    for run in results["runs"]:
        run.pop("misfit")
    names = [p.name for p in tables.write_plots(results, tmp_path)]
    assert names == ["pgr_heatmap.png", "accuracy_bars.png"]
    assert not (tmp_path / "training_curves.png").exists()
    assert not (tmp_path / "gain_vs_misfit.png").exists()
    assert tables.write_plots({"runs": []}, tmp_path / "empty") == []


def test_plots_handle_a_single_cell_and_undefined_pgr(tmp_path):
    runs = [_run("bow", "bert", "xent", 0, 0.7, 0.72, 0.7)]  # one pair, one seed, PGR undefined
    paths = tables.write_plots({"runs": runs}, tmp_path)
    assert "pgr_heatmap.png" in [p.name for p in paths]
    for path in paths:
        _png_size(path)


def test_training_curves_keep_the_last_value_of_a_resumed_step(tmp_path):
    from w2sjax.report import plots

    records = [{"stage": "weak__bow__seed0", "step": s, "loss": v} for s, v in [(5, 1.0), (10, 0.9), (10, 0.8)]]
    (steps, values), = plots._series(records, "loss").values()
    assert steps.tolist() == [5, 10] and values.tolist() == [1.0, 0.8]
    assert plots.read_metrics(tmp_path / "absent.jsonl") == []


def test_importing_the_package_does_not_import_matplotlib():
    code = "import sys, w2sjax, w2sjax.report.tables, w2sjax.report.plots; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_variants_of_one_pair_are_separate_rows():
    from w2sjax.report import tables

    base = {"task": "t", "weak_model": "w", "strong_model": "s", "loss": "xent", "ceiling_acc": 0.9, "misfit": 0.1}
    runs = [
        {**base, "seed": 0, "variant": "soft", "weak_acc": 0.6, "w2s_acc": 0.7},
        {**base, "seed": 0, "variant": "selective", "weak_acc": 0.6, "w2s_acc": 0.8},
    ]
    rows = tables.summarize({"runs": runs})
    assert sorted((r["variant"], r["w2s_acc"]) for r in rows) == [("selective", 0.8), ("soft", 0.7)]
    table = tables.format_table({"runs": runs})
    assert "variant" in table.splitlines()[0] and "selective" in table and "soft" in table


def test_a_ceiling_below_its_supervisor_or_the_majority_rate_gets_one_warning_line():
    def run(loss, weak, ceiling, majority=0.6):
        return {"task": "spam", "weak_model": "linear", "strong_model": "mlp", "loss": loss, "seed": 0,
                "weak_acc": weak, "w2s_acc": 0.5, "ceiling_acc": ceiling, "pgr": None, "misfit": 0.1,
                "majority_acc": majority}

    # lr=0: the ceiling never trained (0.41 under a supervisor of 0.93); two losses share it.
    lines = tables.format_table({"runs": [run("xent", 0.93, 0.41), run("logconf", 0.93, 0.41)]}).splitlines()
    warnings = [line for line in lines if line.startswith("warning:")]
    assert warnings == ["warning: spam mlp: ceiling 0.410 is below its supervisor's 0.930 and not above the "
                        "majority rate 0.600; the strong model did not learn the task (check train.lr and "
                        "train.epochs)"]
    assert lines[-1] == warnings[0] and len(lines) == 2 + 2 + 1  # header, rule, two rows, the warning
    # A ceiling slightly under its supervisor is a finding, not a failure; one above the majority is fine.
    assert not [x for x in tables.format_table({"runs": [run("xent", 0.80, 0.76)]}).splitlines() if "ceiling 0" in x]
    only_majority = tables.format_table({"runs": [run("xent", 0.55, 0.58)]}).splitlines()[-1]
    assert only_majority.startswith("warning: spam mlp: ceiling 0.580 is not above the majority rate 0.600")
