"""Length-bucketed batch order: same examples per epoch, full batches, the tightest bucket, resumable."""

import numpy as np

from w2sjax.data import length_buckets as lb


def _lengths(n=203, max_len=128, seed=0):
    rng = np.random.default_rng(seed)
    return np.minimum(rng.geometric(1 / 40, size=n) + 2, max_len)


def test_epoch_plan_trains_on_the_unbucketed_epochs_examples_in_full_tight_batches():
    lengths, b, buckets = _lengths(), 16, (16, 32, 64, 128)
    perm = np.random.default_rng(3).permutation(len(lengths))
    plan = lb.epoch_plan(perm, lengths, b, buckets, seed=3, epoch=0)
    assert len(plan) == len(lengths) // b
    rows = np.concatenate([idx for idx, _ in plan])
    # The same examples as the unbucketed epoch (the permutation's first steps * B), each once.
    assert sorted(rows.tolist()) == sorted(perm[: len(plan) * b].tolist())
    for idx, length in plan:
        assert len(idx) == b
        longest = lengths[idx].max()
        assert length == min(x for x in buckets if x >= longest)  # the tightest bucket for its rows
    # Short batches exist and are shuffled among long ones (not sorted by length).
    seq = [length for _, length in plan]
    assert min(seq) < 128 and seq != sorted(seq)


def test_bucketed_order_is_a_pure_function_of_seed_and_step():
    lengths, b = _lengths(), 8
    perm = lambda e: np.random.default_rng([5, e]).permutation(len(lengths))
    a = lb.BucketedOrder(lengths, b, 5, 128, perm)
    steps = list(range(3 * a.per_epoch))
    first = [a.batch(s) for s in steps]
    # A fresh order (a resumed stage) asked for the steps in another order gives the same batches.
    resumed = lb.BucketedOrder(lengths, b, 5, 128, perm)
    for s in reversed(steps):
        idx, length = resumed.batch(s)
        assert length == first[s][1] and np.array_equal(idx, first[s][0])
    # Every epoch covers its own permutation's examples.
    for e in range(3):
        rows = np.concatenate([first[s][0] for s in steps[e * a.per_epoch:(e + 1) * a.per_epoch]])
        assert sorted(rows.tolist()) == sorted(perm(e)[: a.per_epoch * b].tolist())


def test_token_lengths_cut_right_padding_only():
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 0]])
    assert lb.token_lengths({"input_ids": mask * 7, "attention_mask": mask}).tolist() == [2, 4, 4, 1]
    assert lb.token_lengths(np.ones((3, 4))) is None
    assert lb.token_lengths({"x": np.ones((3, 4))}) is None


def test_trim_cuts_every_token_array_to_the_bucket():
    inputs = {"input_ids": np.arange(24).reshape(3, 8), "attention_mask": np.ones((3, 8)),
              "weights": np.ones(3)}
    out = lb.trim(inputs, 4, 8)
    assert out["input_ids"].shape == (3, 4) and out["attention_mask"].shape == (3, 4)
    assert np.array_equal(out["input_ids"], inputs["input_ids"][:, :4])
    assert out["weights"].shape == (3,)


def test_embedding_batches_take_few_shapes_across_data_subsets():
    """Another seed's or task's rows must reuse the compiled embedding programs: at most 8 row
    counts per bucket length, every batch divisible over the devices, no row lost or repeated."""
    from w2sjax.models import embed

    rng = np.random.default_rng(0)
    ndev = embed._local_devices_for_batch()
    shapes = set()
    for n in rng.integers(5, 3000, size=40):
        lengths = rng.integers(3, 128, size=n)
        plan = embed._plan(lengths, [16, 32, 64, 128], tokens_per_batch=8192)
        rows = np.concatenate([r for r, _, _ in plan])
        assert sorted(rows.tolist()) == list(range(n))
        for r, length, per in plan:
            assert len(r) <= per and per % ndev == 0 and lengths[r].max() <= length
            shapes.add((length, per))
    for length in (16, 32, 64, 128):
        assert len({per for ln, per in shapes if ln == length}) <= 8
