"""Readers for labelled sets in the registry of the ``evals`` wheel (OpenAI Evals; asset ``evals``).

Each ``samples.jsonl`` line is one prompt, ``{"input": [chat messages], "ideal": answer}``: a
system message with the instructions, then the item itself as the last user message. The readers
keep the item and the ideal answer. None of these sets ships a train/test split, so a fixed
share is held out by hash (:func:`w2sjax.data.splits.hashed_holdout`).
"""

from __future__ import annotations

import json
import pathlib
import re

from w2sjax.data.bigbench import Splits, choice_pairs, labelled_texts

SARCASM_CLASSES = ("not_sarcastic", "sarcastic")
NLI_CLASSES = ("entailment", "neutral", "contradiction")


def samples(path: pathlib.Path) -> list[tuple[str, str]]:
    """(last user message, ideal answer) for every line of an Evals ``*.jsonl`` file."""
    out = []
    lines = pathlib.Path(path).read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            user = [m["content"] for m in row["input"] if m["role"] == "user"]
            ideal = row["ideal"]
        except (ValueError, KeyError, TypeError):
            user, ideal = [], None
        if not user or not isinstance(ideal, str):
            raise ValueError(f"{path}: line {n}: expected 'input' with a user message and a string 'ideal'")
        out.append((user[-1], ideal))
    return out


def sarcasm(asset_dir: pathlib.Path) -> Splits:
    """News headlines (Misra & Arora): The Onion's (sarcastic, label 1) against HuffPost's;
    28,614 lines, repeated headlines kept once; 20% held out."""
    pairs = []
    for headline, ideal in samples(pathlib.Path(asset_dir) / "sarcasm.jsonl"):
        if ideal not in ("0", "1"):
            raise ValueError(f"sarcasm: expected ideal '0' or '1', got {ideal!r}")
        pairs.append((headline.strip(), int(ideal)))
    return labelled_texts(pairs, frac=0.2, salt="sarcasm")


_QUARTZ = re.compile(r"(.*)\n\n A: (.*)\n B: (.*)", re.S)


def quartz(asset_dir: pathlib.Path) -> Splits:
    """QuaRTz: 3,860 questions about qualitative relationships with two answers each, one row per
    (question, answer) as ``QUESTION ANSWER``; 30% of the questions held out."""
    questions = []
    for text, ideal in samples(pathlib.Path(asset_dir) / "quartz.jsonl"):
        match = _QUARTZ.fullmatch(text)
        if match is None or ideal not in ("A", "B"):
            raise ValueError(f"quartz: unexpected item {text[:80]!r} with answer {ideal!r}")
        question, a, b = (g.strip() for g in match.groups())
        if a == b:
            continue
        questions.append((question, {a: int(ideal == "A"), b: int(ideal == "B")}))
    return choice_pairs(questions, frac=0.3, salt="quartz", join=lambda q, a: f"{q} {a}")


_CORR2CAUSE = re.compile(r"Premise: (.*) Hypothesis: (.*)", re.S)


def corr2cause(asset_dir: pathlib.Path) -> Splits:
    """Corr2Cause (dev set): a premise listing the correlations among a few variables, and a
    causal hypothesis; does the premise entail it, contradict it, or neither? The text puts the
    hypothesis first, ``Hypothesis: H Premise: P``, because premises run to ~400 words and a
    truncating encoder would otherwise never see the hypothesis. 30% held out."""
    pairs = []
    for text, ideal in samples(pathlib.Path(asset_dir) / "corr2cause.jsonl"):
        match = _CORR2CAUSE.fullmatch(text)
        answer = ideal.removeprefix("Answer: ")
        if match is None or answer not in NLI_CLASSES:
            raise ValueError(f"corr2cause: unexpected item {text[:80]!r} with answer {ideal!r}")
        premise, hypothesis = (g.strip() for g in match.groups())
        pairs.append((f"Hypothesis: {hypothesis} Premise: {premise}", NLI_CLASSES.index(answer)))
    return labelled_texts(pairs, frac=0.3, salt="corr2cause")
