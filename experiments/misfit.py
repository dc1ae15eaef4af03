"""Gain versus misfit (Charikar, Pabbaraju & Shiragur): 8 supervisors (GloVe and TF-IDF heads on
30, 100, 300 or all labels of the supervisor half) × 2 MiniLM probe students on fine_foods; the theorem's
least-squares setting on the same frozen features; supervisor choice by misfit. docs/methods.md §3.
"""

from w2sjax.config import Config, DataConfig, MethodConfig, StudentTrainConfig, TrainConfig


def get_config() -> Config:
    return Config(
        name="misfit",
        method="misfit",
        data=DataConfig(task="fine_foods", n_train=2000, n_val=200),
        weak_models=("glove-bow", "tfidf"),
        strong_models=("minilm-l2", "minilm-l6"),
        losses=("xent",),
        seeds=(0, 1),
        weak_train=TrainConfig(epochs=20, batch_size=64, lr=1e-2, log_every=20),
        train=StudentTrainConfig(epochs=5, batch_size=32, lr=1e-2, log_every=50),
        options=MethodConfig(weak_sizes=(30, 100, 300, 0)),
    )
