"""The embedded default (what `w2sjax run` runs with no --config).

Amazon fine-food reviews; a GloVe bag-of-words logistic regression supervises all-MiniLM-L6-v2
(a linear probe on its frozen mean-pooled features); naive cross-entropy and the auxiliary
confidence loss side by side, over five seeds.
"""

from w2sjax.config import Config


def get_config() -> Config:
    return Config()
