"""Metrics against brute-force numpy computations written here."""

import subprocess
import sys

import jax
import numpy as np
import pytest

from w2sjax import metrics


def np_auroc_pairs(scores, labels):
    """O(n^2) definition: P(score_pos > score_neg) + 0.5 P(tie)."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    diff = pos[:, None] - neg[None, :]
    return ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / (len(pos) * len(neg))


def test_accuracy_from_logits_probs_and_ids():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 3))
    labels = rng.integers(0, 3, 50)
    want = (logits.argmax(-1) == labels).mean()
    assert float(metrics.accuracy(logits, labels)) == pytest.approx(want)
    assert float(metrics.accuracy(logits, np.eye(3)[labels])) == pytest.approx(want)
    assert float(metrics.accuracy(logits.argmax(-1), labels)) == pytest.approx(want)


@pytest.mark.parametrize("seed", range(4))
def test_auroc_with_ties_matches_pairwise_definition(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.normal(size=200) + labels, 1)  # rounding creates many ties
    assert float(metrics.auroc(scores, labels)) == pytest.approx(np_auroc_pairs(scores, labels), abs=1e-6)
    two_col = np.stack([np.zeros(200), scores], -1)
    assert float(metrics.auroc(two_col, labels)) == pytest.approx(np_auroc_pairs(scores, labels), abs=1e-6)


def test_auroc_edge_cases():
    assert float(metrics.auroc(np.array([0.1, 0.9]), np.array([0, 1]))) == 1.0
    assert float(metrics.auroc(np.array([0.5, 0.5, 0.5]), np.array([0, 1, 1]))) == 0.5
    assert np.isnan(float(metrics.auroc(np.array([0.1, 0.9]), np.array([1, 1]))))
    assert float(jax.jit(metrics.auroc)(np.array([0.2, 0.1]), np.array([0, 1]))) == 0.0


def test_pgr_formula_and_undefined_case():
    assert float(metrics.pgr(0.6, 0.7, 0.8)) == pytest.approx(0.5)
    assert float(metrics.pgr(0.6, 0.55, 0.8)) == pytest.approx(-0.25)
    vec = metrics.pgr(np.array([0.6, 0.5]), np.array([0.8, 0.6]), np.array([0.8, 0.9]))
    np.testing.assert_allclose(vec, [1.0, 0.25], rtol=1e-6)
    with pytest.warns(UserWarning, match="ceiling accuracy <= weak"):
        assert np.isnan(float(metrics.pgr(0.8, 0.85, 0.8)))
    assert np.isnan(float(jax.jit(metrics.pgr)(0.8, 0.85, 0.7)))  # traced: nan, no warning possible


def test_misfit_squared_and_kl():
    rng = np.random.default_rng(1)
    s = rng.dirichlet(np.ones(3), size=40)
    t = rng.dirichlet(np.ones(3), size=40)
    assert float(metrics.misfit(s, t)) == pytest.approx(((s - t) ** 2).sum(-1).mean(), rel=1e-5)
    assert float(metrics.misfit(s, t, kind="kl")) == pytest.approx((t * np.log(t / s)).sum(-1).mean(), rel=1e-4)
    assert float(metrics.misfit(t, t, kind="kl")) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="kind"):
        metrics.misfit(s, t, kind="l1")


def test_agreement_on_teacher_errors():
    labels = np.array([0, 0, 1, 1, 1, 0])
    teacher = np.array([0, 1, 1, 0, 0, 0])  # wrong on examples 1, 3, 4
    student = np.array([0, 1, 1, 1, 0, 1])
    out = metrics.agreement(np.eye(2)[student], np.eye(2)[teacher], labels)
    assert float(out["agreement"]) == pytest.approx(4 / 6)
    assert float(out["agreement_on_teacher_errors"]) == pytest.approx(2 / 3)  # copies mistakes 1 and 4
    assert float(out["corrected_teacher_errors"]) == pytest.approx(1 / 3)  # fixes mistake 3
    assert np.isnan(float(metrics.agreement(labels, labels, labels)["agreement_on_teacher_errors"]))


def test_losses_and_metrics_import_light():
    code = (
        "import sys, w2sjax.losses, w2sjax.metrics\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in "
        "('tensorflow_datasets', 'tensorflow', 'orbax', 'flax', 'optax', 'torch')]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_docstring_examples_run():
    """Every public function shows an example, and every example holds."""
    import doctest
    import inspect

    for name in metrics.__all__:
        assert ">>>" in (inspect.getdoc(getattr(metrics, name)) or ""), f"metrics.{name} has no example"
    result = doctest.testmod(metrics, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted >= 20, result
