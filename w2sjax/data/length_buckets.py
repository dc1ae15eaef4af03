"""Length-bucketed batches for finetuning on token inputs.

Tokenised texts arrive padded to ``max_len``, but short texts (reviews, tweets, sentences) are
mostly padding, and a transformer pays for every padded token. Here each batch is cut to the
shortest of a small fixed set of lengths (`bucket_lengths`: 16, 32, 64, ..., max_len) that
holds its longest row, so a stage compiles at most one program per bucket length.

The order, per epoch ``e`` of a stage with seed ``s`` and batch size ``B``:

1. The epoch's examples are the same as without buckets: the first ``steps_per_epoch * B`` of the
   seeded permutation ``feed._epoch_permutation(n, s, e)`` (the rest, fewer than ``B``, sit the
   epoch out, as before).
2. Each example goes to the shortest bucket that holds it; within a bucket, examples keep their
   order in the permutation.
3. From the shortest bucket to the longest, a bucket's examples (after any carried over from the
   shorter one) are cut into batches of ``B``; a remainder of fewer than ``B`` is carried to the
   next longer bucket (padding up is harmless). So every batch is full, and the last bucket's
   count is a multiple of ``B``.
4. The epoch's batches are shuffled with the seed ``(s, e, 1)``, so long and short batches mix
   over the epoch instead of running short to long.

Every step's batch is a pure function of ``(seed, step)``, as without buckets, so a resumed stage
continues with the batches an uninterrupted one would have used.

**Compiled lengths.** Each padded length is one XLA program to trace and compile (about 4 s for
MiniLM-L6's train step on 2 CPUs), while a stage of a small sweep trains only a few steps at
each. With a compile cost ``C > 0`` (``train.compile_cost_steps``, in steps at ``max_len``), a
stage compiles only a subset ``S`` of the bucket lengths its steps use, and each batch runs at
the shortest length in ``S`` that holds its bucket (`choose_lengths`): the batches and their
order stay as above, only some are padded further, and padded positions are masked. Since only
``S`` compiles, the buckets are then fine (`candidate_lengths`: every multiple of 8 tokens), so
that ``S`` can sit close to where the batches' longest rows are. ``S``
minimises ``|S| * C + sum over steps of (its compiled length / max_len)`` over the whole
stage's plan, which is known ahead, so it is a pure function of the plan and ``C`` (never of
what happens to be compiled already): reruns and resumes pad every step alike.
A stage's predictions choose their lengths the same way over all their batches
(`w2sjax.train.predict_buckets`).

**The default cost.** ``C`` is compile seconds over step seconds, so it depends on how fast the
machine steps: a run that leaves it unset gets `default_compile_cost` for its precision and
machine, and the runner puts that number into every stage's fingerprint.
"""

from __future__ import annotations

import numpy as np


def bucket_lengths(max_len: int, smallest: int = 16, step: int = 0) -> list[int]:
    """Padded lengths used for batching: powers of two from ``smallest`` below ``max_len``, then
    it; with ``step > 0``, the multiples of ``step`` below ``max_len``, then it."""
    if step > 0:
        return list(range(step, max_len, step)) + [max_len]
    out, n = [], smallest
    while n < max_len:
        out.append(n)
        n *= 2
    return out + [max_len]


# With compiled lengths (a compile cost > 0) the buckets are every multiple of this many tokens:
# the stage compiles only a few of them (`choose_lengths`), so the finer grid adds no program by
# itself, and the chosen lengths can sit near the batches' longest rows instead of up to twice
# above them. The sweep benchmark's tweets (2026-12-07): 24, 40 and 80 tokens, 37 a step on
# average, against 32 and 128 (56 a step) on powers of two at the earlier compile cost of 4.
FINE_STEP = 8


def candidate_lengths(max_len: int, compile_cost: float) -> list[int]:
    """The bucket lengths batches are cut to: the multiples of `FINE_STEP` when a stage compiles
    only some of them (``compile_cost > 0``), else the powers of two (each one used gets its own program)."""
    return bucket_lengths(max_len, step=FINE_STEP if compile_cost > 0 else 0)


__all__ = ["FINE_STEP", "BucketedOrder", "bucket_lengths", "candidate_lengths", "choose_lengths", "compiled_length",
           "default_compile_cost", "epoch_plan", "token_lengths", "trim"]

# ``C`` for a run that leaves ``train.compile_cost_steps`` unset, measured on the sweep benchmark
# (`benchmarks.sweep_cold`, MiniLM-L6, first run and warm against PyTorch; benchmarks/RESULTS.md).
# Slow steps: float32, or bf16 without matrix units (a 2-core AMD EPYC, 2026-12-07: a float32 train
# program compiles in about one step at 32x128). Fast steps: bf16 on a CPU with AMX, where a step is
# ~5x faster and 4 beat 0.5 and 2 on the first run (2026-12-07); and accelerators, whose steps are
# faster still next to their compiles (not measured here: the same value, as the nearest measured).
SLOW_STEP_COMPILE_COST = 0.5
FAST_STEP_COMPILE_COST = 4.0


def default_compile_cost(precision: str, platform: str, cpu_flags=frozenset()) -> float:
    """The compile cost in steps at ``max_len`` for a run of ``precision`` on ``platform`` ("cpu",
    "gpu", "tpu"), whose CPU has ``cpu_flags``: `FAST_STEP_COMPILE_COST` where steps run on matrix
    units (an accelerator, or bf16 on a CPU with ``amx_bf16``), else `SLOW_STEP_COMPILE_COST`."""
    fast = platform != "cpu" or (precision == "bfloat16" and "amx_bf16" in cpu_flags)
    return FAST_STEP_COMPILE_COST if fast else SLOW_STEP_COMPILE_COST


def choose_lengths(step_lengths, max_len: int, compile_cost: float) -> tuple[int, ...]:
    """The padded lengths to compile for steps of bucket lengths ``step_lengths`` (ascending).

    Minimises ``len(S) * compile_cost + sum(compiled length of each step) / max_len`` over the
    sets ``S`` of the lengths used that hold the longest one (each step runs at the shortest
    length in ``S`` holding its own), by dynamic programming over the sorted distinct lengths.
    ``compile_cost <= 0`` gives every used length its own program.
    """
    used, counts = np.unique(np.asarray(step_lengths, np.int64), return_counts=True)
    if compile_cost <= 0 or len(used) <= 1:
        return tuple(int(x) for x in used)
    # best[j]: the cheapest way to serve the steps of used[:j+1] with used[j] compiled; cut[j] is
    # the compiled length below it (-1: none), so steps of used[cut[j]+1 .. j] all run at used[j].
    best, cut = np.zeros(len(used)), np.zeros(len(used), np.int64)
    for j in range(len(used)):
        options = [(0.0 if i < 0 else best[i]) + compile_cost + counts[i + 1:j + 1].sum() * used[j] / max_len
                   for i in range(-1, j)]
        cut[j] = int(np.argmin(options)) - 1  # on a tie, the first minimum: a deterministic choice
        best[j] = options[cut[j] + 1]
    chosen, j = [], len(used) - 1
    while j >= 0:
        chosen.append(int(used[j]))
        j = cut[j]
    return tuple(sorted(chosen))


def compiled_length(length: int, compiled: tuple[int, ...] | None) -> int:
    """The shortest of ``compiled`` holding ``length`` (``length`` itself when none does, or without a set)."""
    if not compiled:
        return length
    i = int(np.searchsorted(np.asarray(compiled), length))
    return int(compiled[i]) if i < len(compiled) else length


def token_lengths(inputs) -> np.ndarray | None:
    """Per-example length up to the last real token, for token inputs; ``None`` for anything else.

    Token inputs are a dict with a 2-D ``attention_mask``. The length is the position of the
    last non-zero mask entry plus one, so right padding is cut and any other layout is kept whole.
    """
    if not isinstance(inputs, dict) or "attention_mask" not in inputs:
        return None
    mask = np.asarray(inputs["attention_mask"])
    if mask.ndim != 2:
        return None
    real = mask != 0
    last = mask.shape[1] - np.argmax(real[:, ::-1], axis=1)
    return np.where(real.any(axis=1), last, 1).astype(np.int64)


def epoch_plan(perm: np.ndarray, lengths: np.ndarray, batch_size: int, buckets: tuple[int, ...], seed: int,
               epoch: int) -> list[tuple[np.ndarray, int]]:
    """The epoch's batches as ``(example indices, padded length)``, in training order.

    ``perm`` is the epoch's permutation of example indices; its first ``len(perm) // batch_size
    * batch_size`` entries are trained on (see the module docstring for the order).
    """
    keep = perm[: len(perm) // batch_size * batch_size]
    which = np.searchsorted(np.asarray(buckets), lengths[keep])  # shortest bucket >= length
    batches: list[tuple[np.ndarray, int]] = []
    carry = np.zeros(0, dtype=keep.dtype)
    for b, length in enumerate(buckets):
        rows = np.concatenate([carry, keep[which == b]])
        full = len(rows) // batch_size * batch_size
        batches += [(rows[i:i + batch_size], int(length)) for i in range(0, full, batch_size)]
        carry = rows[full:]
    assert len(carry) == 0, "the last bucket holds every length, so nothing is left over"
    order = np.random.default_rng([seed, epoch, 1]).permutation(len(batches))
    return [batches[i] for i in order]


class BucketedOrder:
    """Step -> ``(example indices, padded length)`` for one stage, one epoch plan cached at a time.

    ``permutation(epoch)`` must return the epoch's seeded permutation of ``range(len(lengths))``
    (the same one unbucketed batches are drawn from). With ``compile_cost > 0`` and the stage's
    ``total`` steps, each batch runs at its length in `choose_lengths` of the whole stage's plan
    (``compiled``); otherwise at its bucket length (``compiled`` is None). The buckets are
    `candidate_lengths`.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int, max_len: int, permutation, *,
                 total: int | None = None, compile_cost: float = 0.0):
        self.lengths = np.minimum(np.asarray(lengths, np.int64), max_len)
        self.batch_size, self.seed, self.permutation = batch_size, seed, permutation
        compiling = compile_cost > 0 and bool(total)
        self.buckets = tuple(candidate_lengths(max_len, compile_cost if compiling else 0.0))
        self.per_epoch = max(1, len(self.lengths) // batch_size)
        self._epoch, self._plan = None, None
        self.compiled = None
        if compiling:
            plan = [self._bucketed(step)[1] for step in range(total)]
            self.compiled = choose_lengths(plan, max_len, compile_cost)

    def batch(self, step: int) -> tuple[np.ndarray, int]:
        idx, length = self._bucketed(step)
        return idx, compiled_length(length, self.compiled)

    def _bucketed(self, step: int) -> tuple[np.ndarray, int]:
        epoch, k = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            self._epoch = epoch
            self._plan = epoch_plan(self.permutation(epoch), self.lengths, self.batch_size, self.buckets,
                                    self.seed, epoch)
        idx, length = self._plan[k]
        return idx.copy(), length


def trim(inputs: dict, length: int, max_len: int) -> dict:
    """Token inputs cut to their first ``length`` positions (every ``[N, max_len, ...]`` array:
    token ids, masks, and a top:K student's cached hidden states)."""
    return {k: (v[:, :length] if np.ndim(v) >= 2 and np.shape(v)[1] == max_len else v) for k, v in inputs.items()}
