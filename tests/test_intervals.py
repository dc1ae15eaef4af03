"""w2sjax.report.intervals: per-cell random streams and the hierarchical median bootstrap, against
resamplings written out here in plain numpy."""

import numpy as np
import pytest

from experiments.reports import ladder as ladder_report
from w2sjax.report import intervals, suite


def _cell(rng, n_seeds=3, n_test=300, rates=(0.70, 0.76, 0.80)):
    truth = rng.random((n_seeds, n_test))
    return tuple(truth < r for r in rates)


def test_cell_stream_depends_on_its_key_alone():
    a = intervals.cell_rng("vader_tweets", "glove-bow", "minilm-l6", "xent").random(4)
    b = intervals.cell_rng("vader_tweets", "glove-bow", "minilm-l6", "xent").random(4)
    c = intervals.cell_rng("vader_tweets", "glove-bow", "minilm-l6", "logconf").random(4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # the parts are joined unambiguously: ("ab", "c") is not ("a", "bc")
    assert intervals.cell_rng("ab", "c").random() != intervals.cell_rng("a", "bc").random()


def test_pgr_draws_match_a_loop_resampling():
    """The vectorised draws equal a draw-by-draw numpy resampling from the same generator calls."""
    weak, w2s, ceil = _cell(np.random.default_rng(1))
    draws = intervals.pgr_draws(weak, w2s, ceil, rng=np.random.default_rng(7), n_boot=50)
    rng = np.random.default_rng(7)
    n_seeds, n_test = weak.shape
    rows = rng.integers(0, n_test, size=(50, n_test))  # one resample of the test rows per draw
    pick = rng.integers(0, n_seeds, size=(50, n_seeds))
    for b in range(50):
        acc = [a[:, rows[b]].mean(1) for a in (weak, w2s, ceil)]
        wk, ws, cl = (a[pick[b]].mean() for a in acc)
        assert draws[b] == pytest.approx((ws - wk) / (cl - wk), abs=1e-12)


def test_adding_a_cell_changes_no_other_cell(monkeypatch, tmp_path):
    rng = np.random.default_rng(0)
    cells = {("t1", "glove-bow", "s", "xent"): _cell(rng), ("t2", "glove-bow", "s", "xent"): _cell(rng)}
    extra = {("t0", "glove-bow", "s", "xent"): _cell(rng)}

    def as_seeds(cells):
        return {k: {s: (w[s], m[s], c[s], np.arange(w.shape[1])) for s in range(w.shape[0])}
                for k, (w, m, c) in cells.items()}

    monkeypatch.setattr(ladder_report, "_correct", lambda d, r: as_seeds(cells))
    before = ladder_report.seed_and_example_bootstrap_pgr(tmp_path, {"runs": []}, n_boot=300)
    monkeypatch.setattr(ladder_report, "_correct", lambda d, r: as_seeds({**extra, **cells}))
    after = ladder_report.seed_and_example_bootstrap_pgr(tmp_path, {"runs": []}, n_boot=300)
    for key in cells:
        assert before[key] == after[key]


def test_median_interval_resamples_tasks_then_draws():
    rng = np.random.default_rng(3)
    table = [rng.normal(loc, 0.05, size=400) for loc in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)]
    lo, hi = intervals.median_interval(table, key=("k",), n_boot=1000)
    # the same two-stage resampling by hand, from the same stream
    g = intervals.cell_rng("median", "k")
    tasks = g.integers(0, 6, size=(1000, 6))
    cols = g.integers(0, 400, size=(1000, 6))
    meds = [np.median([table[t][c] for t, c in zip(tasks[b], cols[b])]) for b in range(1000)]
    assert (lo, hi) == pytest.approx((np.percentile(meds, 2.5), np.percentile(meds, 97.5)))
    assert lo < np.median([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]) < hi
    # fewer tasks than the minimum: no interval, never the range of the values
    assert np.isnan(intervals.median_interval(table[:3], key=("k",))).all()


def test_suite_medians_take_the_hierarchical_interval_from_draws():
    rng = np.random.default_rng(4)
    rows, draws = [], {}
    for i, loc in enumerate((0.1, 0.3, 0.5, 0.7, 0.9)):
        rows.append({"task": f"t{i}", "weak_model": "w", "strong_model": "s", "loss": "xent",
                     "pgr": loc, "weak_acc": 0.6, "ceiling_acc": 0.8})
        draws[(f"t{i}", "w", "s", "xent")] = rng.normal(loc, 0.1, size=500)
    (m,) = suite.medians(rows, draws=draws, n_boot=500)
    expected = intervals.median_interval([draws[(r["task"], "w", "s", "xent")] for r in rows],
                                         key=("w", "s", "xent", 0.0), n_boot=500)
    assert m["median_ci95"] == expected and m["median_pgr"] == 0.5
    (bare,) = suite.medians(rows)
    assert np.isnan(bare["median_ci95"]).all()
