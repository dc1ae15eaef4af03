"""Early stopping without ground truth: a GloVe supervisor and MiniLM-L2/L6 probe students trained
40 epochs on fine_foods, stopped on weak validation labels vs run to the end vs an oracle stopped on
ground truth. docs/methods.md §9.
"""

from w2sjax.config import Config, DataConfig, StudentTrainConfig, TrainConfig


def get_config() -> Config:
    return Config(
        name="early_stopping",
        method="early_stopping",
        data=DataConfig(task="fine_foods", n_train=2000, n_val=200),
        weak_models=("glove-bow",),
        strong_models=("minilm-l2", "minilm-l6"),
        losses=("xent",),
        seeds=(0, 1, 2),
        weak_train=TrainConfig(epochs=20, batch_size=64, lr=1e-2, log_every=20),
        train=StudentTrainConfig(epochs=40, batch_size=32, lr=1e-2, log_every=100),
    )
