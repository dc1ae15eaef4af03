"""FLOPs per step, FLOP/s and MFU in metrics.jsonl, checked against a count by hand."""

import json

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from w2sjax import parallel, train
from w2sjax.runner import utilisation


class MLP(nnx.Module):
    def __init__(self, d, h, c, *, rngs):
        self.body = nnx.Linear(d, h, rngs=rngs)
        self.head = nnx.Linear(h, c, rngs=rngs)

    def __call__(self, x):
        return self.head(nnx.relu(self.body(x)))


def matmul_flops(b, d, h, c):
    """One training step's matmul FLOPs (a multiply-add is 2): the forward pass (x W1, h W2), then
    the gradients of W2, of the hidden activations and of W1; the input needs no gradient."""
    forward = 2 * b * d * h + 2 * b * h * c
    return forward + 2 * b * h * c + 2 * b * h * c + 2 * b * d * h


def test_fit_logs_flops_per_step_matching_a_count_by_hand(tmp_path):
    b, d, h, c, n = 512, 128, 512, 2, 2048
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)).astype(np.float32)
    onehot = np.eye(c, dtype=np.float32)[rng.integers(0, c, n)]
    records = []
    cfg = train.TrainConfig(epochs=2, batch_size=b, lr=1e-3, log_every=2)
    res = train.fit(MLP(d, h, c, rngs=nnx.Rngs(0)), train.ArrayData(x, onehot), cfg=cfg, loss="xent",
                    mesh=parallel.make_mesh(), seed=0, progress=False, log=records.append)
    assert res.steps == 8
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == [2, 4, 6, 8]
    expected = matmul_flops(b, d, h, c)
    for r in steps:
        # the rest (AdamW on each of the 8 devices, softmax, biases, ReLU) is a few percent here
        assert expected <= r["flops_per_step"] <= 1.1 * expected, (r["flops_per_step"], expected)
        assert r["flops_per_s"] > 0 and r["mfu"] > 0
        np.testing.assert_allclose(r["mfu"], r["flops_per_s"] / utilisation.peak_flops("float32")[0], rtol=1e-3)
    (summary,) = [r for r in records if r.get("utilisation") == "stage"]
    assert summary["step"] == 8 and summary["matmul_dtype"] == "float32"
    assert summary["flops_per_step"] == steps[0]["flops_per_step"] and summary["train_seconds"] > 0
    np.testing.assert_allclose(summary["peak_flops_per_s"], utilisation.peak_flops("float32")[0], rtol=1e-3)
    json.dumps(records)  # every field is plain JSON


def test_cost_analysis_counts_a_matmul_and_its_dtype():
    a = jax.ShapeDtypeStruct((64, 96), jnp.bfloat16)
    bm = jax.ShapeDtypeStruct((96, 32), jnp.bfloat16)
    dot = jax.jit(lambda p, q: jnp.dot(p, q, preferred_element_type=jnp.float32))
    lowered = dot.lower(a, bm)
    assert utilisation.program_flops(lowered.compile()) == 2 * 64 * 96 * 32
    assert utilisation.dot_dtype(lowered) == "bfloat16"
    assert utilisation.dot_dtype(jax.jit(jnp.dot).lower(jnp.ones((4, 4)), jnp.ones((4, 4)))) == "float32"


def test_cpu_peak_is_measured_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("W2SJAX_CACHE", str(tmp_path))
    monkeypatch.setattr(utilisation, "_peaks", {})
    peak, source = utilisation.peak_flops("float32")
    assert peak > 1e8 and "measured" in source
    saved = json.loads((tmp_path / utilisation.PEAK_FILE).read_text())
    assert [entry["flops_per_s"] for entry in saved.values()] == [peak]

    def measure_again(*args, **kwargs):
        raise AssertionError("the cached peak should have been read")

    monkeypatch.setattr(utilisation, "_peaks", {})  # a new process: only the file remains
    monkeypatch.setattr(utilisation, "measure_matmul_peak", measure_again)
    assert utilisation.peak_flops("float32") == (peak, source)


def test_accelerator_peaks_come_from_the_data_sheet_table():
    assert utilisation.known_peak("NVIDIA H100 80GB HBM3", "bfloat16") == 989e12
    assert utilisation.known_peak("NVIDIA H100 PCIe", "bfloat16") == 756e12
    assert utilisation.known_peak("TPU v5 lite", "bfloat16") == 197e12
    assert utilisation.known_peak("NVIDIA H100 80GB HBM3", "float32") is None  # measured instead
    assert utilisation.known_peak("a new chip", "bfloat16") is None
