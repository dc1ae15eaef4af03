"""Several weak supervisors (GloVe and TF-IDF heads, plus one that outputs random probabilities) for
a MiniLM-L6 probe student on fine_foods: single, average, SAMME-weighted, boosted (EnsemW2S-style)
and RAVEN-style learned weights; in distribution and trained on short reviews / tested on long
ones. docs/methods.md §4.
"""

from w2sjax.config import Config, DataConfig, MethodConfig, StudentTrainConfig, TrainConfig


def get_config() -> Config:
    return Config(
        name="supervisors",
        method="supervisors",
        data=DataConfig(task="fine_foods", n_train=1600, n_val=200),
        weak_models=("glove-bow", "tfidf", "random"),
        strong_models=("minilm-l6",),
        losses=("xent",),
        seeds=(0, 1),
        weak_train=TrainConfig(epochs=20, batch_size=64, lr=1e-2, log_every=20),
        train=StudentTrainConfig(epochs=5, batch_size=32, lr=1e-2, log_every=50),
        options=MethodConfig(shift="length"),
    )
