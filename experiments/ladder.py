"""A ladder of strong students: does weak-to-strong gain grow with the student's size?

Fine-food reviews, linear probes on frozen features. Supervisors: GloVe bag-of-words, MiniLM-L2,
MiniLM-L6. Students, by backbone size: MiniLM-L2 (~15M), MiniLM-L6 (~23M), all-mpnet-base-v2
(~109M, mean-pooled) and SmolLM2-135M (~135M, last-token). The runner trains every weak x strong
pair, so minilm-l2 -> minilm-l2 and minilm-l6 -> minilm-l6 are included: a student imitating a
supervisor of its own size, a useful zero point rather than a ladder step.

The task is `fine_foods_pooled`: all 5000 reviews re-split 2500/2500, so every seed shares one
2500-review test set (standard error about +-0.9 points per accuracy, against +-1.5 with the
shipped 1000-review split) and the halves get about 1150 reviews each. Every backbone embeds
each review once (about 10 minutes for the whole ladder on 2 AMX cores in bfloat16; features
are cached per example, and shared with the `fine_foods` task).

`precision="bfloat16"` runs the backbones' matmuls on bf16 operands with float32 sums, 1.7x
faster here than float32 (benchmarks/RESULTS.md); docs/ladder.md compares the two on MiniLM.
"""

from w2sjax.config import Config, DataConfig, StudentTrainConfig, TrainConfig


def get_config() -> Config:
    return Config(
        name="ladder",
        data=DataConfig(task="fine_foods_pooled", n_val=200, max_len=128),
        weak_models=("glove-bow", "minilm-l2", "minilm-l6"),
        strong_models=("minilm-l2", "minilm-l6", "mpnet-base", "smollm2-135m"),
        losses=("xent", "logconf"),
        seeds=(0, 1, 2),
        strong_mode="probe",
        precision="bfloat16",
        # ~36 steps per epoch on ~1150 examples; 30 epochs reach the plateau of the probes'
        # validation accuracy (docs/ladder.md).
        weak_train=TrainConfig(epochs=30, batch_size=32, lr=1e-2),
        train=StudentTrainConfig(epochs=30, batch_size=32, lr=1e-2),
    )
