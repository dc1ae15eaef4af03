"""Which loss lets a student learn from weak labels best?

The default setting (fine-food reviews, a GloVe bag-of-words supervisor, linear probes on frozen
all-MiniLM-L6-v2 features, first 2 and all 6 layers, 5 seeds) with four losses side by side:

* ``xent``: plain cross-entropy on the weak soft labels (naive imitation);
* ``logconf``: Burns et al.'s auxiliary confidence loss (mix in the student's own hardened labels);
* ``reverse_xent``: ``CE(f_w, f)``, the roles swapped, which penalises the student less for
  disagreeing with confident-but-wrong weak labels (Yao et al., "Revisiting Weak-to-Strong
  Generalization in Theory and Practice: Reverse KL vs. Forward KL");
* ``product``: train on ``weak * student`` renormalised, so the student's beliefs temper the labels.

Features are cached after the first run of any experiment on them, so this takes about a minute
on 2 CPU cores. docs/methods_theory.md has the measured table.
"""

from w2sjax.config import Config


def get_config() -> Config:
    return Config(name="losses", losses=("xent", "logconf", "reverse_xent", "product"))
