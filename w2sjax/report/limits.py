"""What limits a benchmark cell's PGR, measured from its saved test predictions alone.

Per (task, supervisor, student, loss) cell, seed means of:

* the test gap (ceiling minus supervisor accuracy) beside the validation gap that admitted the
  task: a task admitted on a small validation gap whose test gap is near zero makes PGR a ratio
  of noise;
* how much the student copies its supervisor: agreement with the supervisor's picks, and the
  share of the supervisor's errors whose wrong pick it repeats, each beside the ceiling's (a
  model trained on ground truth, so the share an equally strong model repeats anyway);
* collapse: the share of the student's picks on its most frequent option (a class; for a
  multiple-choice task, a choice position), beside the true share of the most frequent option.

A *pick* is what a model answers per scoring unit (:func:`option_matrix`): an example's class, or a
question's choice. Picks are shares over the options, split evenly between tied options, so the
share on the correct option is the unit's saved correctness exactly (:func:`choice_shares`): every
agreement here is consistent with the rows' accuracies, float16 rounding of the saved
probabilities notwithstanding. Pure numpy; nothing is trained or loaded.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

MIN_TEST_GAP = 0.05  # the post-hoc view keeps gap tasks whose test gap is at least this
COPY_SHARE = 0.5  # a student "copies" when it repeats at least this share of the supervisor's errors
COLLAPSE_EXCESS = 0.2  # a student "collapses" when its top class share exceeds the true one by this


def tie_shares(rank: np.ndarray) -> np.ndarray:
    """``[n, k]`` rank scores (``-inf`` pads) -> ``[n, k]`` shares: 1 on each row's highest option,
    split evenly between tied ones."""
    rank = np.asarray(rank, np.float32)
    best = rank == rank.max(-1, keepdims=True)
    return best / best.sum(-1, keepdims=True)


def option_matrix(probs, labels, groups=None) -> tuple[np.ndarray, np.ndarray]:
    """The options of each scoring unit: ``(rank [n, k], correct [n, k] bool)``.

    Per example (``groups`` None): a unit is a row, its options the classes, ranked by probability.
    Per question: a unit is a question (its rows, one per choice, in row order; questions in
    ``np.unique`` order of ``groups``, as :func:`w2sjax.report.artefacts.unit_scores` orders
    them), its options its choices, ranked by p1 - p0 (as ``metrics.question_accuracy``), padded
    with ``-inf`` to the longest question."""
    probs, labels = np.asarray(probs, np.float32), np.asarray(labels)
    if groups is None:
        return probs, np.eye(probs.shape[-1], dtype=bool)[labels]
    score = probs[:, 1] - probs[:, 0] if probs.ndim == 2 else probs
    _, dense = np.unique(groups, return_inverse=True)
    n = int(dense.max()) + 1
    order = np.argsort(dense, kind="stable")
    counts = np.bincount(dense, minlength=n)
    position = np.arange(len(dense)) - np.repeat(np.cumsum(counts) - counts, counts)
    rank = np.full((n, int(counts.max())), -np.inf, np.float32)
    correct = np.zeros(rank.shape, bool)
    rank[dense[order], position] = score[order]
    correct[dense[order], position] = labels[order] == 1
    return rank, correct


def choice_shares(rank: np.ndarray, correct: np.ndarray, unit_score: np.ndarray) -> np.ndarray:
    """Each unit's pick as shares over its options, whose share on the correct options equals the
    saved ``unit_score``. Where the float16 ranking gives another score (a rounded near-tie), the
    saved score is split over the correct options and the rest over the best-ranked wrong ones."""
    shares = tie_shares(rank)
    unit_score = np.asarray(unit_score, np.float64)
    off = np.abs((shares * correct).sum(-1) - unit_score) > 1e-6
    if off.any():
        right = correct[off] / np.maximum(correct[off].sum(-1, keepdims=True), 1)
        wrong_rank = np.where(correct[off], -np.inf, rank[off])
        has_wrong = np.isfinite(wrong_rank).any(-1, keepdims=True)
        wrong = np.where(has_wrong, tie_shares(np.where(has_wrong, wrong_rank, 0.0)), 0.0)
        s = unit_score[off, None]
        shares = shares.copy()
        shares[off] = s * right + (1 - s) * wrong
    return shares


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over units of the chance that two models pick the same option (ties broken at random)."""
    return float((np.asarray(a) * np.asarray(b)).sum(-1).mean())


def repeated_errors(student: np.ndarray, supervisor: np.ndarray, correct: np.ndarray) -> float:
    """Of the supervisor's errors, the share where the student makes the same wrong pick (nan if the
    supervisor makes none)."""
    wrong = ~np.asarray(correct)
    errors = (supervisor * wrong).sum()
    return float((student * supervisor * wrong).sum() / errors) if errors > 0 else float("nan")


def top_share(shares: np.ndarray) -> float:
    """The share of predictions in the most frequent class (``shares`` ``[n, classes]``)."""
    return float(np.asarray(shares, np.float64).mean(0).max())


def seed_measures(probs: dict, scores: dict, labels, groups=None) -> dict:
    """One seed's measures. ``probs``/``scores``: per role (weak, w2s, ceiling) the test
    probabilities and saved per-unit correctness; ``labels``/``groups`` the test rows'."""
    rank, correct = {}, None
    for role in ("weak", "w2s", "ceiling"):
        rank[role], correct = option_matrix(probs[role], labels, groups)
    picks = {role: choice_shares(rank[role], correct, scores[role]) for role in rank}
    # collapse is judged on picks: per example the class, per question the choice's position
    true = correct / np.maximum(correct.sum(-1, keepdims=True), 1)
    return {
        "test_gap": float(np.mean(scores["ceiling"], dtype=np.float64) - np.mean(scores["weak"], dtype=np.float64)),
        "agree_w2s": agreement(picks["w2s"], picks["weak"]),
        "agree_ceiling": agreement(picks["ceiling"], picks["weak"]),
        "repeat_w2s": repeated_errors(picks["w2s"], picks["weak"], correct),
        "repeat_ceiling": repeated_errors(picks["ceiling"], picks["weak"], correct),
        "top_w2s": top_share(picks["w2s"]), "top_true": top_share(true),
    }


def cell_measures(art, seed_rows: list[dict]) -> dict:
    """Seed means of :func:`seed_measures` over one cell's rows (one per seed) of task artefacts
    ``art`` (:class:`w2sjax.report.artefacts.TaskArtefacts`)."""
    per_seed = []
    for row in sorted(seed_rows, key=lambda r: r["seed"]):
        names = row["stages"]
        groups = art.arrays.get(f"test_group/seed{row['seed']}")
        per_seed.append(seed_measures({r: art.arrays[f"probs/{names[r]}"] for r in ("weak", "w2s", "ceiling")},
                                      {r: art.score(names[r]) for r in ("weak", "w2s", "ceiling")},
                                      art.arrays[f"test_label/seed{row['seed']}"], groups))
    return {k: float(np.mean([m[k] for m in per_seed])) for k in per_seed[0]}


def limits(arts: dict, cell_list: list[dict]) -> list[dict]:
    """One dict per direct cell of :func:`w2sjax.report.benchmark.cells`: its key, validation gap,
    gap-task flag and PGR, with :func:`cell_measures`."""
    out = []
    for c in (c for c in cell_list if not c["chain"]):
        rows = [r for r in arts[c["task"]].rows if not r.get("chain") and (r["weak_model"], r["strong_model"],
                r["loss"]) == (c["weak_model"], c["strong_model"], c["loss"])]
        out.append({k: c[k] for k in ("task", "weak_model", "strong_model", "loss", "val_gap", "gap_task", "pgr")}
                   | cell_measures(arts[c["task"]], rows))
    return out


def _median(values) -> float:
    """The median of the finite values, nan if there is none."""
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.median(finite)) if finite else float("nan")


def overview(rows: list[dict]) -> list[dict]:
    """Per (supervisor, student, loss), over its gap tasks (the validation rule): how many have a
    test gap under MIN_TEST_GAP, a student repeating at least COPY_SHARE of the supervisor's
    errors, a collapsed student, and the post-hoc median PGR over gap tasks whose test gap is at
    least MIN_TEST_GAP (no interval: the selection looked at test data)."""
    by_pair = defaultdict(list)
    for r in rows:
        if r["gap_task"]:
            by_pair[(r["weak_model"], r["strong_model"], r["loss"])].append(r)
    out = []
    for (w, s, loss), gap in sorted(by_pair.items()):
        wide = [r for r in gap if r["test_gap"] >= MIN_TEST_GAP]
        out.append({
            "weak_model": w, "strong_model": s, "loss": loss, "n_gap": len(gap),
            "small_test_gap": sorted(r["task"] for r in gap if r["test_gap"] < MIN_TEST_GAP),
            "copies": sorted(r["task"] for r in gap if r["repeat_w2s"] >= COPY_SHARE),
            "collapsed": sorted(r["task"] for r in gap if r["top_w2s"] - r["top_true"] >= COLLAPSE_EXCESS),
            "n_repeat_more": sum(r["repeat_w2s"] > r["repeat_ceiling"] for r in gap),
            "median_repeat_w2s": _median(r["repeat_w2s"] for r in gap),
            "median_repeat_ceiling": _median(r["repeat_ceiling"] for r in gap),
            "n_wide": len(wide), "posthoc_median_pgr": _median(r["pgr"] for r in wide),
        })
    return out


BEGIN = "<!-- benchmark-limits:begin (generated by experiments/benchmark.py --summary-only) -->"
END = "<!-- benchmark-limits:end -->"
DEFINITIONS = [
    "Measures per cell, from the saved test predictions (means over seeds); a *unit* is an example, or a question "
    "on multiple-choice tasks, and a *pick* is the class or choice a model answers (tied options share it).",
    "- **val gap**: ceiling minus supervisor accuracy on the validation slice, the number the gap rule admits a "
    "task on (marked *gap*).",
    "- **test gap**: ceiling minus supervisor accuracy on the test split, the denominator of PGR; under "
    f"{MIN_TEST_GAP:.2f} the test draw's own noise is a large part of it, and PGR tends to a ratio of noise.",
    "- **agree w2s / ceil**: the share of test units on which the weak-to-strong student (or the ceiling) picks "
    "what the supervisor picks.",
    "- **repeats w2s / ceil**: of the supervisor's wrong test picks, the share that the student (or the ceiling, "
    "trained on ground truth) picks too; the ceiling's share is what the same model repeats without "
    "being taught the supervisor's errors.",
    "- **top w2s / true**: the share of the student's picks on its most frequent option (a class; on "
    "multiple-choice tasks a choice position), and the same share for the true answers; a student "
    f"*collapses* when its share is at least {COLLAPSE_EXCESS:.2f} above the true one.",
]


def _f(x, digits: int = 2) -> str:
    if x is None or not np.isfinite(x):
        return "undef."
    text = f"{x:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def _names(tasks: list[str]) -> str:
    return f"{len(tasks)}" + (f" ({', '.join(tasks)})" if tasks else "")


def overview_lines(over: list[dict]) -> list[str]:
    """One bullet per (supervisor, student, loss) of :func:`overview`."""
    lines = []
    for o in over:
        lines.append(
            f"- {o['weak_model']} → {o['strong_model']}, {o['loss']}: {o['n_gap']} gap tasks. "
            f"Test gap under {MIN_TEST_GAP:.2f}: {_names(o['small_test_gap'])}. "
            f"The student repeats at least {COPY_SHARE:.0%} of the supervisor's errors on {_names(o['copies'])}; "
            f"median share repeated {_f(o['median_repeat_w2s'])}, the ceiling's {_f(o['median_repeat_ceiling'])}; "
            f"it repeats more of them than the ceiling on {o['n_repeat_more']} of {o['n_gap']}. "
            f"Collapsed: {_names(o['collapsed'])}. *Post-hoc view, not the pre-registered headline:* median PGR over "
            f"the {o['n_wide']} gap tasks with a test gap of at least {MIN_TEST_GAP:.2f}: "
            f"{_f(o['posthoc_median_pgr'])} (no interval; the selection looked at test data).")
    return lines


def markdown(rows: list[dict]) -> str:
    """The generated "what limits the PGR" section: definitions, the overview, one line per cell
    (per supervisor, student and loss, widest test gap first)."""
    if not rows:
        return "No benchmark cells yet."
    lines = DEFINITIONS + ["", "Over the gap tasks (the pre-registered validation rule):", ""]
    lines += overview_lines(overview(rows))
    lines += ["", "| supervisor | student | loss | task | val gap | test gap | PGR | agree w2s | agree ceil | "
              "repeats w2s | repeats ceil | top w2s | top true |", "|---" * 13 + "|"]
    for r in sorted(rows, key=lambda r: (r["weak_model"], r["strong_model"], r["loss"], -r["test_gap"], r["task"])):
        gap = "—" if r["val_gap"] is None else _f(r["val_gap"], 3) + (" (gap)" if r["gap_task"] else "")
        lines.append(f"| {r['weak_model']} | {r['strong_model']} | {r['loss']} | {r['task']} | {gap} | "
                     f"{_f(r['test_gap'], 3)} | {_f(r['pgr'])} | {_f(r['agree_w2s'])} | {_f(r['agree_ceiling'])} | "
                     f"{_f(r['repeat_w2s'])} | {_f(r['repeat_ceiling'])} | {_f(r['top_w2s'])} | {_f(r['top_true'])} |")
    return "\n".join(lines)
