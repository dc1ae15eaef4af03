"""Saliency probes (Burns et al. §5.3): lp(weak), lp(gt), ft(weak), ft(weak)+lp(gt), ft(gt) for a
fully finetuned MiniLM-L1 (64 tokens, 400 training reviews per half) supervised by GloVe, fine_foods,
one seed (finetuning is the slow part on CPU: about a minute per model here).
docs/methods.md §1.
"""

from w2sjax.config import Config, DataConfig, StudentTrainConfig, TrainConfig


def get_config() -> Config:
    return Config(
        name="saliency",
        method="saliency",
        data=DataConfig(task="fine_foods", n_train=800, n_val=100, n_test=500, max_len=64),
        weak_models=("glove-bow",),
        strong_models=("minilm-l1",),
        losses=("xent",),
        seeds=(0,),
        strong_mode="finetune",
        weak_train=TrainConfig(epochs=20, batch_size=64, lr=1e-2, log_every=20),
        # Full finetuning of the backbone (ft rows); the linear probes use saliency.PROBE. At lr 5e-5
        # for 3 epochs (75 steps) the finetuned model stayed at the majority class (measured).
        train=StudentTrainConfig(epochs=5, batch_size=16, lr=2e-4, log_every=20),
    )
