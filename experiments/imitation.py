"""Weak imitation: agreement of MiniLM-L1/L2/L6 probe students with a GloVe supervisor, overall
and on its mistakes, after 1, 3, 10 and 30 epochs, with xent and the confidence loss. fine_foods,
one seed (add seeds and minilm-l4 for a fuller picture).
docs/methods.md §2.
"""

from w2sjax.config import Config, DataConfig, MethodConfig, StudentTrainConfig, TrainConfig


def get_config() -> Config:
    return Config(
        name="imitation",
        method="imitation",
        data=DataConfig(task="fine_foods", n_train=2000, n_val=200),
        weak_models=("glove-bow",),
        strong_models=("minilm-l1", "minilm-l2", "minilm-l6"),
        losses=("xent", "logconf"),
        seeds=(0,),
        weak_train=TrainConfig(epochs=20, batch_size=64, lr=1e-2, log_every=20),
        train=StudentTrainConfig(epochs=5, batch_size=32, lr=1e-2, log_every=100),
        options=MethodConfig(epochs_grid=(1.0, 3.0, 10.0, 30.0)),
    )
