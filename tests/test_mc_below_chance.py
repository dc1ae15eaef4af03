"""The below-chance section of docs/benchmark.md is generated from committed files, and its
numbers match a plain per-question recomputation."""

from pathlib import Path

import numpy as np
import pytest

from experiments.reports import mc_below_chance as mc
from w2sjax.report import artefacts

ROOT = Path(__file__).resolve().parents[1]


def test_the_section_in_benchmark_md_is_the_one_the_committed_files_give():
    body = mc.markdown(mc.summary(artefacts.load(mc.DECODERS), artefacts.load(mc.ENCODERS), mc.DIRECTION))
    text = (ROOT / "docs" / "benchmark.md").read_text()
    assert f"{mc.BEGIN}\n{body}\n{mc.END}" in text


def _loop_corr(x, y, groups):
    """Within-question correlation, one question at a time."""
    dx, dy = np.empty(len(x)), np.empty(len(y))
    for g in set(groups.tolist()):
        m = groups == g
        dx[m], dy[m] = x[m] - x[m].mean(), y[m] - y[m].mean()
    return float((dx * dy).sum() / np.sqrt((dx * dx).sum() * (dy * dy).sum()))


def _loop_acc(score, labels, groups):
    """Per-question accuracy: the highest-scoring options share the question's point."""
    accs = []
    for g in sorted(set(groups.tolist())):
        s, y = score[groups == g], labels[groups == g]
        best = s == s.max()
        accs.append((best & (y == 1)).sum() / best.sum())
    return float(np.mean(accs))


@pytest.mark.parametrize("task,seed", [("commonsense_qa", 2), ("sciq", 1)])
def test_each_cell_matches_a_per_question_loop(task, seed):
    arts = artefacts.load(mc.DECODERS)
    with np.load(mc.DIRECTION) as z:
        scores = z[f"{task}/score"]
    a = arts[task]
    rows, groups = a.arrays[f"test_row/seed{seed}"], a.arrays[f"test_group/seed{seed}"]
    labels = a.arrays[f"test_label/seed{seed}"]
    found = [c for c in mc.cells(arts, task, scores) if c["seed"] == seed]
    # 2 supervisors x 2 losses of SmolLM2-135M; commonsense_qa's artefacts also hold Gemma-3-270M's
    # rows, which are not this report's cells
    assert len(found) == 4
    for cell, row in zip(found, [r for r in a.rows if r["seed"] == seed and r["strong_model"] == mc.STUDENT]):
        probs = a.arrays[f"probs/{row['stages']['w2s']}"].astype(np.float64)
        score = probs[:, 1] - probs[:, 0]
        assert cell["w2s_acc"] == pytest.approx(row["w2s_acc_question"], abs=1e-6)
        assert cell["w2s_r_direction"] == pytest.approx(_loop_corr(score, scores[rows].astype(np.float64), groups),
                                                        abs=1e-9)
        assert cell["w2s_r_truth"] == pytest.approx(_loop_corr(score, labels.astype(np.float64), groups), abs=1e-9)
        assert cell["direction_acc"] == pytest.approx(_loop_acc(scores[rows], labels, groups), abs=1e-6)


@pytest.mark.slow
def test_the_committed_direction_is_the_frozen_models():
    """Recomputes the frozen SmolLM2-135M direction (the model loads; minutes on 2 cores)."""
    with np.load(mc.DIRECTION) as z:
        for task in mc.TASKS:
            committed = z[f"{task}/score"]
            score, share = mc.direction(task, np.flatnonzero(~np.isnan(committed)))
            np.testing.assert_array_equal(np.isnan(score), np.isnan(committed))
            np.testing.assert_allclose(score[~np.isnan(committed)], committed[~np.isnan(committed)], rtol=1e-5,
                                       atol=1e-4)
            assert share == pytest.approx(float(z[f"{task}/mean_share"]), abs=1e-6)
