"""Selective and refined weak labels in the standard pipeline (options.labels): soft, hard, the
strong model's own label where it is confident (selective), kNN smoothing and disagreement
filtering in the MiniLM feature space. GloVe supervisor, MiniLM-L2/L6 probe students, fine_foods.
docs/methods.md §5.
"""

from w2sjax.config import Config, DataConfig, MethodConfig, StudentTrainConfig, TrainConfig


def get_config() -> Config:
    return Config(
        name="refine_labels",
        data=DataConfig(task="fine_foods", n_train=2000, n_val=200),
        weak_models=("glove-bow",),
        strong_models=("minilm-l2", "minilm-l6"),
        losses=("xent",),
        seeds=(0, 1, 2),
        weak_train=TrainConfig(epochs=20, batch_size=64, lr=1e-2, log_every=20),
        train=StudentTrainConfig(epochs=5, batch_size=32, lr=1e-2, log_every=50),
        options=MethodConfig(labels=("soft", "hard", "selective", "knn", "filter"), keep_frac=0.7, knn_k=10),
    )
