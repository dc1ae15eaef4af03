"""The probe-ceiling check refuses a run whose validation or test rows are not the benchmark's,
and refuses to write docs/results.md without its section's markers (fast: no training)."""

import numpy as np
import pytest

from experiments.reports import probe_ceilings
from w2sjax import data
from w2sjax.data.task import Task
from w2sjax.runner import saved_splits


def _task() -> Task:
    def split(n: int) -> dict:
        return {"text": np.array([f"row {i}" for i in range(n)]), "label": (np.arange(n) % 2).astype(np.int32)}

    return Task(name="toy_binary", kind="text", num_classes=2, class_names=("no", "yes"), train=split(120),
                test=split(60))


def _save(folder, seed, **caps):
    task = _task()
    saved_splits.save(folder, seed, data.make_splits(task, seed=seed, **caps), task.num_classes)


def test_the_same_splits_pass(tmp_path):
    _save(tmp_path / "probe", 0, n_val=20, n_test=30)
    _save(tmp_path / "bench", 0, n_val=20, n_test=30)
    probe_ceilings.check_same_splits(tmp_path / "probe", tmp_path / "bench", 0)


def test_other_test_rows_fail_loudly(tmp_path):
    _save(tmp_path / "probe", 0, n_val=20, n_test=30)
    _save(tmp_path / "bench", 0, n_val=20, n_test=25)  # the same seed, another test subsample
    with pytest.raises(probe_ceilings.SplitMismatch, match="seed 0: test_row"):
        probe_ceilings.check_same_splits(tmp_path / "probe", tmp_path / "bench", 0)


def test_a_mismatched_split_file_fails_loudly(tmp_path):
    _save(tmp_path / "probe", 0, n_val=20, n_test=30)
    _save(tmp_path / "bench", 0, n_val=20, n_test=30)
    # the benchmark's record for seed 0 replaced by seed 1's: other validation rows
    _save(tmp_path / "other", 1, n_val=20, n_test=30)
    saved_splits.path(tmp_path / "other", 1).replace(saved_splits.path(tmp_path / "bench", 0))
    with pytest.raises(probe_ceilings.SplitMismatch, match="seed 0: val_row"):
        probe_ceilings.check_same_splits(tmp_path / "probe", tmp_path / "bench", 0)


def test_a_missing_benchmark_record_fails_loudly(tmp_path):
    _save(tmp_path / "probe", 2, n_val=20, n_test=30)
    with pytest.raises(probe_ceilings.SplitMismatch, match="no split record of the benchmark run"):
        probe_ceilings.check_same_splits(tmp_path / "probe", tmp_path / "bench", 2)


def test_summary_without_the_markers_is_a_one_line_error(tmp_path, capsys):
    results = tmp_path / "results.md"
    results.write_text("# Results\n\nno generated section here\n")
    assert probe_ceilings.main(["--summary-only", "--results-md", str(results)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "benchmark-probe-ceilings:begin" in err and "\n" not in err
    assert results.read_text() == "# Results\n\nno generated section here\n"  # nothing written


def test_a_probe_run_names_the_benchmark_run_it_checks(tmp_path, capsys):
    """No machine-specific default: a run without --benchmark-run stops with one line, before any
    training, and creates no run folder."""
    assert probe_ceilings.main(["--out", str(tmp_path / "probe")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --benchmark-run: expected") and "\n" not in err
    assert not (tmp_path / "probe").exists()


def test_committed_section_matches_a_regeneration(tmp_path):
    """docs/results.md's probe-ceiling section is what --summary-only writes from the committed files."""
    from w2sjax.report.benchmark import section

    root = probe_ceilings.ROOT
    results = tmp_path / "results.md"
    committed = (root / "docs" / "results.md").read_text()
    results.write_text(committed.replace(section(committed, probe_ceilings.BEGIN, probe_ceilings.END), "stale"))
    assert probe_ceilings.main(["--summary-only", "--results-md", str(results)]) == 0
    assert section(results.read_text(), probe_ceilings.BEGIN, probe_ceilings.END) == \
        section(committed, probe_ceilings.BEGIN, probe_ceilings.END)
    assert results.read_text() == committed  # the hand-written text around it is kept
