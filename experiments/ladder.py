"""A ladder of strong students (issue 6): does weak-to-strong gain grow with the student's size?

Fine-food reviews, linear probes on frozen features. Supervisors: GloVe bag-of-words, MiniLM-L2,
MiniLM-L6. Students, by backbone size: MiniLM-L2 (~11M), MiniLM-L6 (~23M), all-mpnet-base-v2
(~109M, mean-pooled) and SmolLM2-135M (~135M, last-token). The runner trains every weak x strong
pair, so minilm-l2 -> minilm-l2 and minilm-l6 -> minilm-l6 are included: a student imitating a
supervisor of its own size, a useful zero point rather than a ladder step.

Sizes are set by feature extraction on 2 shared CPU cores, where MPNet ran at ~1.4 and SmolLM2
at well under 1 review/s under load: per seed 200 training reviews (100 per half), 40 for
validation and a seeded 100-review test sample, so three seeds embed ~650 distinct reviews per
backbone. These are small: see docs/ladder.md for what the intervals allow. Features are cached
per example, so raising the sizes later (e.g. --set data.n_test=1000) only embeds the new rows.
"""

from w2sjax.config import Config, DataConfig
from w2sjax.train import TrainConfig


def get_config() -> Config:
    return Config(
        name="ladder",
        data=DataConfig(task="fine_foods", n_train=200, n_val=40, n_test=100, max_len=128),
        weak_models=("glove-bow", "minilm-l2", "minilm-l6"),
        strong_models=("minilm-l2", "minilm-l6", "mpnet-base", "smollm2-135m"),
        losses=("xent",),  # PGR of plain imitation; one loss keeps the sweep within the time box
        seeds=(0, 1, 2),
        strong_mode="probe",
        # 100 examples per half give only a few steps per epoch; the default 5-20 epochs left the
        # probes near chance (measured), so train longer: features are cached, steps are cheap.
        weak_train=TrainConfig(epochs=100, batch_size=32, lr=1e-2),
        train=TrainConfig(epochs=100, batch_size=32, lr=1e-2),
    )
