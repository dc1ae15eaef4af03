"""Offline text tasks beyond sentiment: topic, genre and authorship, plus two more rated
sentiment sets. Each task is built from its real fetched asset; reference rows and labels are
recomputed here from the raw files with plain Python, independently of the readers."""

import collections
import csv

import numpy as np
import pytest

from w2sjax import assets
from w2sjax.data import builders, load_task

_loaded = {}


@pytest.fixture
def real_cache(monkeypatch):
    monkeypatch.delenv("W2SJAX_CACHE", raising=False)
    for name in assets.known_assets():
        monkeypatch.delenv(assets.env_var(name), raising=False)


def _task(name):
    if name not in _loaded:
        _loaded[name] = load_task(name)
    return _loaded[name]


def _all(task):
    return {k: np.concatenate([task.train[k], task.test[k]]) for k in task.train}


def _consistent(pairs):
    """Distinct texts whose every occurrence has one label: {text: label}."""
    seen = collections.defaultdict(set)
    for text, label in pairs:
        seen[text].add(label)
    return {t: next(iter(ls)) for t, ls in seen.items() if len(ls) == 1}


def _check(task, expected: dict, *, min_test: int):
    """The task holds exactly ``expected`` ({text: label}), no text in both splits."""
    both = _all(task)
    assert sorted(zip(both["text"], both["label"].tolist())) == sorted(expected.items())
    assert not set(task.train["text"]) & set(task.test["text"])
    assert len(task.test["label"]) >= min_test
    assert task.class_names == builders.BUILDERS[task.name].CLASS_NAMES
    assert set(both["label"].tolist()) == set(range(task.num_classes))


# --- more rated sentences from the vaderSentiment sdist -------------------------------------

@pytest.mark.parametrize("name, stem, n_lines", [
    ("vader_nyt", "nytEditorialSnippets", 5190),
    ("vader_amazon", "amazonReviewSnippets", 3708),
])
def test_vader_documents_match_the_raw_files(real_cache, name, stem, n_lines):
    path = assets.fetch("vader", quiet=True) / f"{stem}_GroundTruth.txt"
    with open(path, encoding="utf-8", newline="") as f:
        rows = [r for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if r]
    assert len(rows) == n_lines
    kept = [(ident.split("_")[0], text.strip(), int(float(r) > 0)) for ident, r, text in rows if abs(float(r)) >= 0.5]
    task = _task(name)
    _check(task, _consistent([(t, lbl) for _, t, lbl in kept]), min_test=900)
    # whole documents are held out: a sentence belongs to the document it first occurs in
    first_doc = {}
    for doc, text, _ in kept:
        first_doc.setdefault(text, doc)
    side = collections.defaultdict(set)
    for part in ("train", "test"):
        for text in getattr(task, part)["text"]:
            side[first_doc[text]].add(part)
    assert all(len(s) == 1 for s in side.values())
    n_test_docs = sum(s == {"test"} for s in side.values())
    assert n_test_docs == round(0.35 * len(side))
