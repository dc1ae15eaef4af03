"""The exploratory headline's numbers in the README caption come from docs/headline/headline.json:
each one is looked up in the committed rows and medians and compared at the printed precision."""

import json
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _headline():
    return json.loads((ROOT / "docs" / "headline" / "headline.json").read_text())


def _caption():
    text = (ROOT / "README.md").read_text()
    start = text.index("*Exploratory, not a benchmark.")
    return text[start:text.index("*", start + 1)]


def _row(task, student, loss, supervisor="glove-bow"):
    (row,) = [r for r in _headline()["rows"] if (r["task"], r["weak_model"], r["strong_model"], r["loss"], r["chain"])
              == (task, supervisor, student, loss, None)]
    return row["pgr"]


def _median(student, loss, supervisor="glove-bow"):
    values = {m["median_pgr"] for m in _headline()["medians"]
              if (m["weak_model"], m["strong_model"], m["loss"]) == (supervisor, student, loss)}
    (value,) = values
    return value


# (the phrase in the caption with the number as a group, where the number comes from)
CLAIMS = [
    (r"recovered (\d\.\d\d) of the gap on vader_tweets", lambda: _row("vader_tweets", "mpnet-base", "logconf")),
    (r"(\d\.\d\d) on multiemo", lambda: _row("multiemo", "mpnet-base", "logconf")),
    (r"and (\d\.\d\d) on\s+vader_movies", lambda: _row("vader_movies", "mpnet-base", "logconf")),
    (r"plain cross-entropy: median (\d\.\d\d)", lambda: _median("mpnet-base", "xent")),
    (r"MiniLM-L6 about a fifth naively \(median (\d\.\d\d)\)", lambda: _median("minilm-l6", "xent")),
    (r"TF-IDF supervisor\s+\(PGR (−\d\.\d\d)\)", lambda: _row("vader_tweets", "minilm-l6", "xent", "tfidf")),
]


@pytest.mark.parametrize("pattern,source", CLAIMS, ids=[c[0][:40] for c in CLAIMS])
def test_caption_number_matches_the_committed_rows(pattern, source):
    match = re.search(pattern, _caption())
    assert match, f"the README caption no longer says {pattern!r}"
    printed = float(match.group(1).replace("−", "-"))
    assert f"{source():.2f}" == f"{printed:.2f}"


def test_hyperbaton_recovers_nothing_as_the_caption_says():
    assert "on hyperbaton nothing is recovered (PGR ≈ 0)" in " ".join(_caption().split())
    pgrs = [r["pgr"] for r in _headline()["rows"] if r["task"] == "hyperbaton" and r["pgr"] is not None]
    assert pgrs and max(abs(p) for p in pgrs) < 0.05
