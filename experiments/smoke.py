"""The tiny real configuration for tests: real data and a real pretrained model, < 60 s on 2 cores.

A GloVe bag-of-words supervisor and a 2-layer MiniLM student on 480 fine-food reviews.
"""

import dataclasses

from w2sjax.config import Config, DataConfig, StudentTrainConfig, TrainConfig


def get_config() -> Config:
    return Config(
        name="smoke",
        data=DataConfig(task="fine_foods", n_train=480, n_val=64, n_test=256, max_len=64),
        weak_models=("glove-bow",),
        strong_models=("minilm-l2",),
        losses=("xent", "logconf"),
        seeds=(0,),
        weak_train=TrainConfig(epochs=20, batch_size=64, lr=2e-2, log_every=5),
        train=StudentTrainConfig(epochs=10, batch_size=32, lr=5e-3, log_every=5, checkpoint_every=20),
    )
