"""Pseudo-label functions: exact small cases, and the behaviour each one is for."""

import numpy as np
import pytest

from w2sjax import pseudo_labels


def _clusters(seed=0, n=600, d=16, noise=0.3, flip=0.25):
    """Two well-separated Gaussian clusters (the 'strong features'), ground truth, and weak labels
    that are right on most examples but flipped on a random ``flip`` fraction."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    centers = rng.standard_normal((2, d)) * 2
    feats = centers[y] + noise * rng.standard_normal((n, d)) * 2
    flipped = rng.random(n) < flip
    weak_class = np.where(flipped, 1 - y, y)
    conf = rng.uniform(0.55, 0.95, n)
    weak = np.stack([np.where(weak_class == 0, conf, 1 - conf), np.where(weak_class == 1, conf, 1 - conf)], 1)
    return feats.astype(np.float32), y, weak.astype(np.float32), flipped


def test_hard_and_confidence():
    p = np.array([[0.2, 0.8], [0.6, 0.4], [0.5, 0.5]], np.float32)
    np.testing.assert_array_equal(pseudo_labels.hard(p), [[0, 1], [1, 0], [1, 0]])
    np.testing.assert_allclose(pseudo_labels.confidence(p), [0.8, 0.6, 0.5])


def test_confident_mask_keeps_the_most_confident_fraction():
    p = np.array([[0.9, 0.1], [0.55, 0.45], [0.3, 0.7], [0.5, 0.5]], np.float32)
    np.testing.assert_array_equal(pseudo_labels.confident_mask(p, 0.5, per_class=False), [True, False, True, False])


def test_confident_mask_keeps_the_class_mix():
    # The supervisor is much surer of class 0: a global top half would be all class 0.
    p = np.array([[0.99, 0.01]] * 4 + [[0.98, 0.02]] * 4 + [[0.4, 0.6]] * 2 + [[0.3, 0.7]] * 2, np.float32)
    assert pseudo_labels.confident_mask(p, 0.5, per_class=False)[8:].sum() == 0
    keep = pseudo_labels.confident_mask(p, 0.5)
    assert keep[:8].sum() == 4 and keep[8:].sum() == 2
    assert pseudo_labels.confident_mask(p, 0.0).sum() == 0 and pseudo_labels.confident_mask(p, 1.0).all()
    assert pseudo_labels.confident_mask(np.tile(p, (5, 1)), 0.5).sum() == len(p) * 5 // 2
    with pytest.raises(ValueError):
        pseudo_labels.confident_mask(p, 1.5)


def test_selective_uses_the_strong_label_where_the_strong_model_is_sure():
    weak = np.array([[0.7, 0.3]] * 4, np.float32)
    strong = np.array([[0.1, 0.9], [0.45, 0.55], [0.2, 0.8], [0.5, 0.5]], np.float32)
    out, own = pseudo_labels.selective(weak, strong, 0.5)
    np.testing.assert_array_equal(own, [True, False, True, False])
    np.testing.assert_allclose(out, [[0, 1], [0.7, 0.3], [0, 1], [0.7, 0.3]])


def test_neighbours_match_brute_force_and_exclude_self():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 5)).astype(np.float32)
    got = pseudo_labels.neighbours(x, 4, block=7)  # several blocks
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = xn @ xn.T
    np.fill_diagonal(sim, -np.inf)
    want = np.argsort(-sim, axis=1, kind="stable")[:, :4]
    np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError):
        pseudo_labels.neighbours(x, 50)


def test_knn_smoothing_repairs_flipped_weak_labels():
    feats, y, weak, _ = _clusters()
    smoothed = pseudo_labels.knn_smooth(weak, feats, k=10)
    before = (weak.argmax(1) == y).mean()
    after = (smoothed.argmax(1) == y).mean()
    assert before < 0.8 and after > before + 0.15
    np.testing.assert_allclose(smoothed.sum(1), 1.0, rtol=1e-6)


def test_filter_drops_mostly_wrong_weak_labels():
    feats, y, weak, flipped = _clusters()
    keep = pseudo_labels.filter_mask(weak, feats, k=10, keep_frac=0.7)
    assert keep.sum() == round(0.7 * len(y))
    # The dropped 30% are mostly the flipped ones; what is kept is much cleaner than the whole.
    assert flipped[~keep].mean() > 0.6
    assert flipped[keep].mean() < 0.5 * flipped.mean()


def test_combine_is_a_weighted_average():
    a = np.array([[1.0, 0.0]], np.float32)
    b = np.array([[0.0, 1.0]], np.float32)
    np.testing.assert_allclose(pseudo_labels.combine([a, b]), [[0.5, 0.5]])
    np.testing.assert_allclose(pseudo_labels.combine([a, b], [3, 1]), [[0.75, 0.25]])
    with pytest.raises(ValueError):
        pseudo_labels.combine([a, b], [-1, 1])
    with pytest.raises(ValueError):
        pseudo_labels.combine([a, b], [0, 0])


def test_samme_weight_and_boosting_weights():
    assert pseudo_labels.samme_weight(0.5, 2) == pytest.approx(0.0)  # chance level gets no vote
    assert pseudo_labels.samme_weight(2 / 3, 3) == pytest.approx(0.0)
    assert pseudo_labels.samme_weight(0.1, 2) > pseudo_labels.samme_weight(0.3, 2) > 0
    w = pseudo_labels.boost_example_weights(np.ones(4), [True, True, False, True], alpha=np.log(3))
    assert w.mean() == pytest.approx(1.0)
    assert w[2] == pytest.approx(3 * w[0])


def test_refine_dispatch():
    feats, y, weak, _ = _clusters(n=100)
    for name in pseudo_labels.REFINEMENTS:
        out, keep = pseudo_labels.refine(name, weak, features=feats, strong=weak[::-1], keep_frac=0.6, k=5)
        assert out.shape == weak.shape and keep.shape == (100,) and keep.dtype == bool
        np.testing.assert_allclose(out.sum(1), 1.0, rtol=1e-6)
    _, keep = pseudo_labels.refine("confident", weak, keep_frac=0.6)
    assert keep.sum() == 60
    with pytest.raises(ValueError, match="unknown label refinement"):
        pseudo_labels.refine("magic", weak)
    with pytest.raises(ValueError, match="features"):
        pseudo_labels.refine("knn", weak)
