"""The synthetic theory testbeds (w2sjax.theory) over three seeds: random-feature teacher/student
(Medvedev et al.), ridge on representations of varying overlap (Dong et al.), the prediction gap
(Xue et al.), gain vs misfit with and without realizability (Charikar et al.). No data files.
docs/methods.md §7 and §3.
"""

from w2sjax.config import Config


def get_config() -> Config:
    return Config(name="theory", method="theory", seeds=(0, 1, 2))
