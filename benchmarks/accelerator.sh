#!/usr/bin/env bash
# The finetune step of MiniLM-L6, MPNet-base and SmolLM2-135M (one per call, and 8 per call as fit
# runs them) and the weak-to-strong sweep on
# whatever jax.devices() offers (a GPU, a TPU or the CPU), with the matmul peak measured first
# so every record carries its ratio to peak (MFU). Records are JSON lines, the same as
# `python -m benchmarks.run` prints, written to $OUT (default benchmarks/results/) under
# YYYY-MM-DD_accelerator_<device kind>.jsonl. Extra arguments go to benchmarks.run
# (e.g. --quick for a smoke run, --repeats 5).
#
# JAX for the accelerator must be installed first (e.g. `pip install -U "jax[cuda13]"` on an
# NVIDIA machine); PyTorch is optional and, if importable, is measured alongside.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/results}"
mkdir -p "$out"
kind=$(python -c "import jax, re; print(re.sub('[^a-z0-9]+', '_', jax.devices()[0].device_kind.lower()).strip('_'))")
file="$out/$(date -u +%Y-%m-%d)_accelerator_${kind}.jsonl"
echo "benchmarks/accelerator.sh: $(python -c 'import jax; print(jax.devices())') -> $file" >&2
python -m benchmarks.run --cases matmul finetune finetune_loop sweep_vs_torch torch \
  --models minilm-l6 mpnet-base smollm2-135m --precision bfloat16 float32 "$@" | tee "$file"
