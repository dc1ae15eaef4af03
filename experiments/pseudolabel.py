"""Pseudolabel correction and coverage expansion (Lang, Sontag & Vijayaraghavan): the supervisor
abstains on its least confident half of the student half; the student trains on the confident half only and
is scored on the excluded half, next to the student trained on everything. GloVe and TF-IDF
supervisors, MiniLM-L6 probe student, fine_foods. docs/methods.md §6.
"""

from w2sjax.config import Config, DataConfig, MethodConfig, StudentTrainConfig, TrainConfig


def get_config() -> Config:
    return Config(
        name="pseudolabel",
        data=DataConfig(task="fine_foods", n_train=2000, n_val=200),
        weak_models=("glove-bow", "tfidf"),
        strong_models=("minilm-l6",),
        losses=("xent",),
        seeds=(0, 1, 2),
        weak_train=TrainConfig(epochs=20, batch_size=64, lr=1e-2, log_every=20),
        train=StudentTrainConfig(epochs=5, batch_size=32, lr=1e-2, log_every=50),
        options=MethodConfig(labels=("soft", "confident"), keep_frac=0.5),
    )
