"""Gradient checkpointing ("remat") of a backbone's blocks, for finetuning big models in less memory.

``checkpoint_blocks(module)`` wraps, in place, every block of every ``layers`` list in the
module (all families here keep their blocks in ``layers``) so that its activations are not kept
for the backward pass but recomputed from the block's input. The outputs and gradients are the
same; the backward pass costs one more forward of each block.
"""

from __future__ import annotations

from flax import nnx

__all__ = ["Checkpointed", "checkpoint_blocks"]


def _call(block, *args):
    return block(*args)


_remat_call = nnx.remat(_call)


class Checkpointed(nnx.Module):
    """``block(*args)``, recomputed in the backward pass instead of stored."""

    def __init__(self, block: nnx.Module):
        self.block = block

    def __call__(self, *args):
        return _remat_call(self.block, *args)


def checkpoint_blocks(module: nnx.Module) -> int:
    """Wrap every block in every ``layers`` list of ``module`` in `Checkpointed`; returns how many."""
    count = 0
    for _, parent in list(nnx.iter_modules(module)):
        blocks = getattr(parent, "layers", None)
        if isinstance(blocks, nnx.List):
            for i, block in enumerate(blocks):
                if not isinstance(block, Checkpointed):
                    blocks[i] = Checkpointed(block)
                    count += 1
    if count == 0:
        raise ValueError("train.remat: the model has no 'layers' list of blocks to checkpoint")
    return count
