"""The tasks read from the OpenAI Evals registry in the ``evals`` wheel (asset ``evals``):
sarcasm (headlines), quartz (grouped multiple choice) and corr2cause (3-way inference). Builders
read the real fetched files; the expected rows are re-derived here from the raw JSON lines."""

import collections
import json

import pytest

from w2sjax import assets
from w2sjax.data import builders, catalog, openai_evals

import task_rows

EVALS_TASKS = ("sarcasm", "quartz", "corr2cause")

# Slow: the first use downloads the 46 MB evals wheel (kept files: 11 MB).
needs_wheel = pytest.mark.slow


def _raw(name):
    """[(user message, ideal)] straight from the fetched file."""
    path = assets.fetch("evals", quiet=True) / f"{name}.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [(r["input"][-1]["content"], r["ideal"]) for r in rows]


@needs_wheel
def test_sarcasm_matches_the_raw_file(real_cache):
    raw = _raw("sarcasm")
    assert len(raw) == 28614 and collections.Counter(i for _, i in raw) == {"0": 14984, "1": 13630}
    expected = task_rows.consistent([(text.strip(), int(ideal)) for text, ideal in raw])
    task = task_rows.task("sarcasm")
    assert task.class_names == ("not_sarcastic", "sarcastic")
    both = task_rows.both_splits(task)
    assert sorted(zip(both["text"], both["label"].tolist())) == sorted(expected.items())
    assert len(task.test["label"]) == round(0.2 * len(expected))
    assert not set(task.train["text"]) & set(task.test["text"])


@needs_wheel
def test_quartz_choice_pairs(real_cache):
    raw = _raw("quartz")
    assert len(raw) == 3860
    expected = []
    for text, ideal in raw:
        question, _, options = text.partition("\n\n A: ")
        a, _, b = options.partition("\n B: ")
        expected += [(f"{question.strip()} {a.strip()}", int(ideal == "A")),
                     (f"{question.strip()} {b.strip()}", int(ideal == "B"))]
    task = task_rows.task("quartz")
    both = task_rows.both_splits(task)
    assert sorted(zip(both["text"], both["label"].tolist())) == sorted(expected)
    groups = collections.Counter(both["group"].tolist())
    assert len(groups) == 3860 and set(groups.values()) == {2}
    correct = collections.Counter(both["group"][both["label"] == 1].tolist())
    assert len(correct) == 3860 and set(correct.values()) == {1}
    assert not set(task.train["group"].tolist()) & set(task.test["group"].tolist())
    assert len(set(task.test["group"].tolist())) >= 1000


@needs_wheel
def test_corr2cause_puts_the_hypothesis_first(real_cache):
    raw = _raw("corr2cause")
    assert len(raw) == 2246
    pairs = []
    for text, ideal in raw:
        premise, hypothesis = text.removeprefix("Premise: ").rsplit(" Hypothesis: ", 1)
        label = ("entailment", "neutral", "contradiction").index(ideal.split(": ")[1])
        pairs.append((f"Hypothesis: {hypothesis.strip()} Premise: {premise.strip()}", label))
    expected = task_rows.consistent(pairs)
    assert len(expected) == 1522  # 724 items occur twice in the file, always with one label
    task = task_rows.task("corr2cause")
    assert task.class_names == ("entailment", "neutral", "contradiction") and task.num_classes == 3
    both = task_rows.both_splits(task)
    assert sorted(zip(both["text"], both["label"].tolist())) == sorted(expected.items())
    assert len(task.test["label"]) == round(0.3 * 1522) >= 300


@needs_wheel
def test_builders_record_source_licence_and_citation(real_cache):
    for name in EVALS_TASKS:
        cls = builders.BUILDERS[name]
        assert cls.ASSET == "evals" and "evals==3.0.1.post1" in cls.DESCRIPTION, name
        assert cls.LICENSE and cls.CITATION and cls.HOMEPAGE, name
    assert assets.source_of("evals") == "pip evals==3.0.1.post1"
    assert "MIT License" in (assets.fetch("evals", quiet=True) / "LICENSE.md").read_text()


def test_task_names_do_not_shadow_catalog_tasks():
    assert not set(EVALS_TASKS) & set(catalog.ALIASES)
    assert set(EVALS_TASKS) <= set(builders.BUILDERS)


def test_samples_error_names_the_line(tmp_path):
    path = tmp_path / "sarcasm.jsonl"
    good = {"input": [{"role": "system", "content": "x"}, {"role": "user", "content": "a headline"}], "ideal": "1"}
    path.write_text(json.dumps(good) + "\n\n" + json.dumps({"input": [], "ideal": "0"}) + "\n")
    with pytest.raises(ValueError, match=r"line 3: expected 'input' with a user message and a string 'ideal'"):
        openai_evals.samples(path)
    path.write_text(json.dumps(good) + "\n")
    assert openai_evals.samples(path) == [("a headline", "1")]
