"""What limits the PGR (w2sjax.report.limits): each measure on arrays small enough to work out by
hand, and the picks' consistency with the saved per-unit correctness."""

import math

import numpy as np
import pytest

from w2sjax.report import artefacts, limits


def test_tie_shares_split_a_tie_evenly():
    got = limits.tie_shares(np.array([[0.2, 0.5, 0.3], [0.4, 0.4, 0.2], [0.1, -np.inf, 0.0]]))
    np.testing.assert_array_equal(got, [[0, 1, 0], [0.5, 0.5, 0], [1, 0, 0]])


def test_option_matrix_per_question_pads_and_orders_questions_like_unit_scores():
    # question 7: rows 0-1 (row 1 correct); question 3: rows 2-4 (row 2 correct)
    probs = np.array([[0.3, 0.7], [0.6, 0.4], [0.1, 0.9], [0.5, 0.5], [0.8, 0.2]], np.float32)
    rank, correct = limits.option_matrix(probs, np.array([0, 1, 1, 0, 0]), np.array([7, 7, 3, 3, 3]))
    np.testing.assert_allclose(rank, [[0.8, 0.0, -0.6], [0.4, -0.2, -np.inf]], atol=1e-6)
    np.testing.assert_array_equal(correct, [[True, False, False], [False, True, False]])
    rank, correct = limits.option_matrix(probs, np.array([1, 0, 1, 1, 0]))  # per example: classes
    np.testing.assert_array_equal(correct, [[0, 1], [1, 0], [0, 1], [0, 1], [1, 0]])


def test_choice_shares_follow_the_saved_score_where_the_ranking_disagrees():
    rank = np.array([[0.6, 0.4, 0.0], [0.5, 0.5, 0.0], [0.3, 0.7, 0.0], [0.9, 0.05, 0.05]])
    correct = np.zeros((4, 3), bool)
    correct[:, 0] = True
    # rows 0-1 agree with their scores; row 2's rounded ranking says wrong, its score says right;
    # row 3's says right, its score says wrong: the wrong share goes to the tied best wrong options
    got = limits.choice_shares(rank, correct, np.array([1.0, 0.5, 1.0, 0.0]))
    np.testing.assert_allclose(got, [[1, 0, 0], [0.5, 0.5, 0], [1, 0, 0], [0, 0.5, 0.5]])


def test_picks_reproduce_the_saved_unit_scores_of_a_question_task():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(40), 4)
    labels = np.zeros(160, int)
    labels[np.arange(40) * 4 + rng.integers(0, 4, 40)] = 1  # one correct choice per question
    probs = rng.random((160, 2)).astype(np.float32)
    probs[:8] = 0.5  # whole-question ties
    score = artefacts.unit_scores(probs, labels, groups)
    rank, correct = limits.option_matrix(probs.astype(np.float16), labels, groups)
    shares = limits.choice_shares(rank, correct, score)
    np.testing.assert_allclose((shares * correct).sum(-1), score, atol=1e-6)
    np.testing.assert_allclose(shares.sum(-1), 1.0, atol=1e-6)


def test_agreement_and_repeated_errors_by_hand():
    # 4 units, 3 classes, true class 0 everywhere
    correct = np.zeros((4, 3), bool)
    correct[:, 0] = True
    supervisor = np.eye(3)[[0, 1, 2, 1]]  # wrong on units 1, 2, 3
    student = np.eye(3)[[0, 1, 1, 0]]  # same wrong pick on unit 1 only; wrong differently on 2
    assert limits.agreement(student, supervisor) == pytest.approx(2 / 4)
    assert limits.repeated_errors(student, supervisor, correct) == pytest.approx(1 / 3)
    half = np.array([[1, 0, 0], [0.5, 0.5, 0], [0, 0, 1], [0, 1, 0]])  # a tie on unit 1
    assert limits.agreement(half, supervisor) == pytest.approx((1 + 0.5 + 1 + 1) / 4)
    assert limits.repeated_errors(half, supervisor, correct) == pytest.approx(2.5 / 3)
    assert math.isnan(limits.repeated_errors(student, np.eye(3)[[0, 0, 0, 0]], correct))


def test_top_share_and_seed_measures_by_hand():
    assert limits.top_share(np.eye(3)[[0, 0, 0, 2]]) == pytest.approx(0.75)
    labels = np.array([0, 1, 1, 1])
    probs = {"weak": np.eye(2)[[1, 1, 1, 0]], "w2s": np.eye(2)[[1, 1, 1, 1]], "ceiling": np.eye(2)[[0, 1, 1, 1]]}
    scores = {r: (p.argmax(-1) == labels).astype(np.float32) for r, p in probs.items()}
    m = limits.seed_measures(probs, scores, labels)
    assert m["test_gap"] == pytest.approx(1.0 - 0.5)
    assert m["agree_w2s"] == pytest.approx(3 / 4) and m["agree_ceiling"] == pytest.approx(2 / 4)
    # the supervisor is wrong on units 0 and 3: the student repeats unit 0, the ceiling neither
    assert m["repeat_w2s"] == pytest.approx(1 / 2) and m["repeat_ceiling"] == 0.0
    assert m["top_w2s"] == 1.0 and m["top_true"] == pytest.approx(3 / 4)


def _row(task, loss, test_gap, pgr, repeat, top, gap_task=True):
    return {"task": task, "weak_model": "w", "strong_model": "s", "loss": loss, "val_gap": 0.1, "gap_task": gap_task,
            "pgr": pgr, "test_gap": test_gap, "agree_w2s": 0.8, "agree_ceiling": 0.7, "repeat_w2s": repeat,
            "repeat_ceiling": 0.2, "top_w2s": top, "top_true": 0.5}


def test_overview_counts_and_the_post_hoc_median():
    rows = [_row("a", "xent", 0.20, 0.4, 0.6, 0.9), _row("b", "xent", 0.10, -0.2, 0.3, 0.6),
            _row("c", "xent", 0.01, 5.0, 0.5, 0.5), _row("d", "xent", 0.30, 0.1, 0.9, 1.0, gap_task=False)]
    (o,) = limits.overview(rows)
    assert o["n_gap"] == 3 and o["small_test_gap"] == ["c"] and o["copies"] == ["a", "c"]
    assert o["collapsed"] == ["a"] and o["n_wide"] == 2 and o["n_repeat_more"] == 3
    assert o["posthoc_median_pgr"] == pytest.approx(0.1)  # median of 0.4 and -0.2: "d" is no gap task
    assert o["median_repeat_w2s"] == pytest.approx(0.5) and o["median_repeat_ceiling"] == pytest.approx(0.2)


def test_markdown_prints_each_cell_and_the_overview():
    rows = [_row("a", "xent", 0.2, -0.001, 0.6, 0.9), _row("b", "xent", 0.3, float("nan"), 0.3, 0.6)]
    text = limits.markdown(rows)
    assert "| w | s | xent | b | 0.100 (gap) | 0.300 | undef. | 0.80 | 0.70 | 0.30 | 0.20 | 0.60 | 0.50 |" in text
    assert "| w | s | xent | a | 0.100 (gap) | 0.200 | 0.00 |" in text  # never "-0.00"
    assert text.index("| b |") < text.index("| a |")  # the widest test gap first
    assert "*Post-hoc view, not the pre-registered headline:* median PGR over the 2 gap tasks" in text
    assert limits.markdown([]) == "No benchmark cells yet."
