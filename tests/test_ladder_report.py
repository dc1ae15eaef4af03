"""Ladder views (`experiments.reports.ladder`) on a hand-made results file: order, marks, numbers, files."""

import json

import numpy as np
import pytest

from experiments.reports import ladder as ladder_report
from w2sjax.report import tables

LADDER = ["glove-bow", "minilm-l2", "mpnet-base"]
# (weak, w2s, ceiling) per seed; the ceiling depends on the student alone, as in a real sweep.
CEIL = {"glove-bow": (0.70, 0.71, 0.69), "minilm-l2": (0.76, 0.77, 0.75), "mpnet-base": (0.84, 0.85, 0.83)}
WEAK = {"glove-bow": (0.70, 0.71, 0.69), "minilm-l2": (0.76, 0.77, 0.75), "mpnet-base": (0.84, 0.85, 0.83)}


def _results() -> dict:
    runs = []
    for w in LADDER:
        for s in LADDER:
            for seed in range(3):
                weak, ceil = WEAK[w][seed], CEIL[s][seed]
                runs.append({"task": "fine_foods", "weak_model": w, "strong_model": s, "loss": "xent",
                             "seed": seed, "weak_acc": weak, "w2s_acc": (weak + ceil) / 2 + 0.001 * seed,
                             "ceiling_acc": ceil, "pgr": None, "misfit": 0.1})
    # The config lists the ladder weakest first; the runs' order must not matter.
    runs.reverse()
    return {"config": {"weak_models": LADDER, "strong_models": LADDER}, "runs": runs}


def test_order_follows_the_config_not_parameter_counts():
    assert ladder_report.ladder_order(_results()) == LADDER
    sizes = ladder_report.model_sizes(LADDER + ["no-such-model"])
    # GloVe's lookup table outweighs MiniLM-L2's transformer, which is why order is not by size.
    assert sizes["glove-bow"] == 20_000_000 and sizes["mpnet-base"] == 108_895_872
    assert sizes["minilm-l2"] < sizes["glove-bow"] and sizes["no-such-model"] is None


def test_tables_mark_pairs_that_are_not_upward():
    results = _results()
    summary = tables.summarize(results)
    sizes = ladder_report.model_sizes(LADDER)
    md = ladder_report.pgr_matrix_md(summary, LADDER, sizes)
    lines = md.splitlines()
    header = next(line for line in lines if line.startswith("| supervisor"))
    assert header.index("glove-bow") < header.index("minilm-l2") < header.index("mpnet-base")
    row = next(line for line in lines if line.startswith("| minilm-l2"))
    cells = [c.strip() for c in row.strip("|").split("|")][1:]
    # Below and on the diagonal: in parentheses; above it: a plain PGR with its interval.
    assert cells[0].startswith("(") and cells[1].startswith("(")
    r = next(r for r in summary if (r["weak_model"], r["strong_model"]) == ("minilm-l2", "mpnet-base"))
    assert cells[2].startswith(f"{r['pgr']:.2f} [") and not cells[2].startswith("(")
    # w2s sits halfway between weak and ceiling, plus 0.001 * seed: PGR just above one half.
    assert r["pgr"] == pytest.approx(0.5 + 0.001 / (0.84 - 0.76), abs=1e-9)

    acc = ladder_report.accuracy_md(summary, LADDER, sizes)
    body = [line for line in acc.splitlines() if line.startswith("| ") and "student" not in line]
    assert len(body) == 9
    assert [line.split("|")[1].strip() for line in body][:3] == ["glove-bow"] * 3  # students by rung
    assert "| mpnet-base | 109M | minilm-l2 | 3 | 0.760 ± " in acc


def test_write_ladder_writes_figure_and_tables(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps(_results()))
    paths = ladder_report.write_ladder(tmp_path)
    assert [p.name for p in paths] == ["ladder_accuracy.png", "ladder.md"]
    assert (tmp_path / "ladder_accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "PGR on fine_foods" in (tmp_path / "ladder.md").read_text()


def test_no_upward_pair_draws_no_figure_and_cli_reports_errors(tmp_path, capsys):
    results = _results()
    results["runs"] = [r for r in results["runs"] if r["weak_model"] == r["strong_model"]]
    summary = tables.summarize(results)
    assert ladder_report.accuracy_vs_size(summary, LADDER, {}) is None
    assert ladder_report.main([str(tmp_path / "missing")]) == 1
    assert "no results.json" in capsys.readouterr().err
    assert ladder_report.main([]) == 2
    # Same model on both sides: the ceiling equals the weak model, so PGR is undefined.
    assert np.isnan([r["pgr"] for r in summary]).all()


def test_test_bootstrap_widens_the_seed_interval(monkeypatch, tmp_path):
    # Three seeds scored on one shared 400-example test split. The seeds barely differ, so the
    # seed-only interval is narrow; the test draw is what makes PGR uncertain.
    rng = np.random.default_rng(0)
    truth = rng.random((3, 400))
    by_seed = {s: (truth[s % 1] < 0.70, truth[s % 1] < 0.75 + 0.001 * s, truth[s % 1] < 0.80,
                   np.arange(400)) for s in range(3)}
    key = ("fine_foods", "glove-bow", "mpnet-base", "xent")
    monkeypatch.setattr(ladder_report, "_correct", lambda d, r: {key: by_seed})
    lo, hi = ladder_report.seed_and_example_bootstrap_pgr(tmp_path, {"runs": []})[key]
    runs = [{"task": key[0], "weak_model": key[1], "strong_model": key[2], "loss": key[3], "seed": s,
             "weak_acc": c[0].mean(), "w2s_acc": c[1].mean(), "ceiling_acc": c[2].mean()}
            for s, c in by_seed.items()]
    (row,) = tables.summarize({"runs": runs})
    s_lo, s_hi = row["pgr_ci95"]
    assert lo < s_lo <= row["pgr"] <= s_hi < hi
    assert 0.2 < hi - lo < 0.8  # about 2 * 1.96 * sqrt(0.05 / 400) / 0.1 for nested errors
    md = ladder_report.pgr_matrix_md([row], ["glove-bow", "mpnet-base"], {}, {key: (lo, hi)})
    assert "over seeds and test examples" in md and f"[{lo:.2f}, {hi:.2f}]" in md
