"""`w2sjax run` killed (exit 137, no clean-up at all) right after one in-stage save: a kill -9 at a
chosen point, so a test of what a kill leaves behind is not a race.

    python kill_after_save.py STAGE STEP OUT [run arguments ...]

STAGE is a readable stage name (``w2s__linear__mlp__xent__seed0``); the process exits right after
that stage saved its in-stage checkpoint of STEP.
"""

import os
import runpy
import sys

from w2sjax import experiment

stage, step, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
_save = experiment._OrbaxStage.save


def save(self, at, state):
    _save(self, at, state)
    if self.stage.startswith(stage + "--") and at == step:
        os._exit(137)


experiment._OrbaxStage.save = save
sys.argv = ["w2sjax", "run", "--out", out, "--no-progress", *sys.argv[4:]]
runpy.run_module("w2sjax.cli", run_name="__main__")
