"""Readers for the BIG-bench tasks shipped in the ``bigbench==1.0.0`` sdist (asset ``bigbench``).

Each ``task.json`` holds ``examples``: an ``input`` string and ``target_scores`` (choice ->
1 if correct else 0). None of these tasks ships a train/test split, so each reader holds out a
fixed test split chosen by a hash of a per-example key (:func:`w2sjax.data.splits.hashed_holdout`):
the same on every machine and every numpy, and rows sharing a key (a question's choices, a claim
seen with different evidence, a sentence repeated) always land on the same side.

Multiple-choice tasks become binary as in EleutherAI/w2s: one row per (question, choice), the
text being the question followed by the choice, labelled ``correct`` or ``incorrect``, and an
int ``group`` naming its question, so splits keep a question's choices together and accuracy can
be scored per question (the argmax over its choices).
"""

from __future__ import annotations

import json
import pathlib
import re

import numpy as np

from w2sjax.data.splits import hashed_holdout

Splits = dict[str, dict[str, np.ndarray]]

BINARY_SENTIMENT = ("negative", "positive")
CHOICE_CLASSES = ("incorrect", "correct")
MULTIEMO_DOMAINS = ("hotels", "medicine", "products", "reviews")


def _examples(asset_dir: pathlib.Path, task: str) -> list[dict]:
    path = pathlib.Path(asset_dir) / task / "task.json"
    examples = json.loads(path.read_text(encoding="utf-8"))["examples"]
    for i, ex in enumerate(examples):
        scores = ex.get("target_scores")
        if not isinstance(ex.get("input"), str) or not isinstance(scores, dict) or sum(scores.values()) != 1:
            raise ValueError(f"{path}: example {i} lacks an input or exactly one correct target")
    return examples


def _answer(ex: dict) -> str:
    return next(k for k, v in ex["target_scores"].items() if v == 1)


def _split(rows: dict[str, list], keys: list[str], *, frac: float, salt: str) -> Splits:
    """Cut parallel lists into train/test by the hashed ``keys``; lists become numpy arrays."""
    test = hashed_holdout(keys, frac=frac, salt=salt)
    arrays = {}
    for name, values in rows.items():
        if name == "text":
            a = np.empty(len(values), dtype=object)
            a[:] = values
        else:
            a = np.asarray(values, dtype=np.int64 if name == "group" else np.int32)
        arrays[name] = a
    return {part: {k: v[mask] for k, v in arrays.items()} for part, mask in (("train", ~test), ("test", test))}


def labelled_texts(pairs: list[tuple[str, int]], *, frac: float, salt: str, extra=None) -> Splits:
    """Plain binary rows, deduplicated: a text seen twice with one label is kept once, a text
    seen with both labels is dropped (it cannot be scored)."""
    labels: dict[str, set[int]] = {}
    first: dict[str, int] = {}
    for i, (text, label) in enumerate(pairs):
        labels.setdefault(text, set()).add(label)
        first.setdefault(text, i)
    keep = [i for t, i in first.items() if len(labels[t]) == 1]
    rows = {"text": [pairs[i][0] for i in keep], "label": [pairs[i][1] for i in keep]}
    for name, values in (extra or {}).items():
        rows[name] = [values[i] for i in keep]
    return _split(rows, rows["text"], frac=frac, salt=salt)


def choice_pairs(questions: list[tuple[str, dict]], *, frac: float, salt: str, join) -> Splits:
    """One row per (question, choice); ``join(question, choice)`` makes the text."""
    rows: dict[str, list] = {"text": [], "label": [], "group": []}
    keys = []
    for g, (question, scores) in enumerate(questions):
        for choice, score in scores.items():
            rows["text"].append(join(question, choice))
            rows["label"].append(int(score == 1))
            rows["group"].append(g)
            keys.append(question)
    return _split(rows, keys, frac=frac, salt=salt)


def multiemo(asset_dir: pathlib.Path) -> Splits:
    """MultiEmo English sentences, positive against negative; neutral and ambivalent are dropped.

    The four per-domain files together are the 57,466 sentences of ``all_sentence_en``; reading
    them apart keeps each sentence's ``domain`` (index into :data:`MULTIEMO_DOMAINS`) for shift
    studies. 25% of the distinct sentences are held out as the test split.
    """
    pairs, domains = [], []
    for d, name in enumerate(MULTIEMO_DOMAINS):
        for ex in _examples(asset_dir, f"multiemo/{name}_sentence_en"):
            answer = _answer(ex)
            if answer in BINARY_SENTIMENT:
                pairs.append((ex["input"].strip(), BINARY_SENTIMENT.index(answer)))
                domains.append(d)
    return labelled_texts(pairs, frac=0.25, salt="multiemo", extra={"domain": domains})


def social_iqa(asset_dir: pathlib.Path) -> Splits:
    """Social IQa (1,954 questions, 3 answers each; 4 with 2) as (question, answer) pairs; half
    the questions are held out."""
    questions = [(ex["input"].strip(), ex["target_scores"]) for ex in _examples(asset_dir, "social_iqa")]
    return choice_pairs(questions, frac=0.5, salt="social_iqa", join=lambda q, a: f"{q} Answer: {a}")


def strategyqa(asset_dir: pathlib.Path) -> Splits:
    """StrategyQA yes/no questions (label 1 = yes); 44% (about 1,000) held out."""
    pairs = [(ex["input"].strip(), int(_answer(ex) == "Yes")) for ex in _examples(asset_dir, "strategyqa")]
    return labelled_texts(pairs, frac=0.44, salt="strategyqa")


_FEVER = re.compile(r"On June 2017, the following claim was made: (.*)\nQ: Was this claim true or false\?", re.S)


def fever(asset_dir: pathlib.Path) -> Splits:
    """FEVER claims from BIG-bench's ``fact_checker``: is the claim true? The fixed prompt around
    each claim is stripped, leaving the claim alone; 30% held out."""
    pairs = []
    for ex in _examples(asset_dir, "fact_checker/fever"):
        match = _FEVER.fullmatch(ex["input"])
        if match is None:
            raise ValueError(f"fever: unexpected input {ex['input'][:80]!r}")
        pairs.append((match.group(1).strip(), int(_answer(ex) == "true")))
    return labelled_texts(pairs, frac=0.3, salt="fever")


def vitaminc(asset_dir: pathlib.Path) -> Splits:
    """VitaminC: does the Wikipedia passage make the claim true or false? (``Neither`` rows,
    7,257 of 54,668, are dropped.) The text is the passage then ``Claim: ...``; the same claim
    appears with contrasting passages, so the 20% test split is drawn by claim."""
    rows: dict[str, list] = {"text": [], "label": []}
    claims = []
    for ex in _examples(asset_dir, "vitaminc_fact_verification"):
        answer = _answer(ex)
        if answer == "Neither":
            continue
        text = ex["input"].strip()
        rows["text"].append(text)
        rows["label"].append(int(answer == "True"))
        claims.append(text.rpartition("\nClaim: ")[2])
    return _split(rows, claims, frac=0.2, salt="vitaminc")


_HYPERBATON = re.compile(r'Which sentence has the correct adjective order: a " (.*) " b " (.*) " \?')


def hyperbaton(asset_dir: pathlib.Path) -> Splits:
    """Adjective order: each of the 50,000 questions offers two orderings of the same words, one
    correct. Each ordering is a row (its text alone); 20% of the questions are held out."""
    questions = []
    for ex in _examples(asset_dir, "hyperbaton"):
        match = _HYPERBATON.fullmatch(ex["input"])
        if match is None:
            raise ValueError(f"hyperbaton: unexpected input {ex['input'][:80]!r}")
        if match.group(1) == match.group(2):
            continue  # nothing to choose between
        options = dict(zip(("a", "b"), match.groups()))
        questions.append((ex["input"], {options[k]: v for k, v in ex["target_scores"].items()}))
    return choice_pairs(questions, frac=0.2, salt="hyperbaton", join=lambda q, a: a)
