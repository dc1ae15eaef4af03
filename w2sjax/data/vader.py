"""Readers for the human-rated sentences of Hutto & Gilbert (ICWSM 2014), shipped in the
``vaderSentiment==3.3.2`` sdist (MIT; asset ``vader``).

Each ``*_GroundTruth.txt`` line is ``ID<TAB>MEAN-RATING<TAB>TEXT``, the mean of at least 20
raters on a -4 (most negative) .. +4 (most positive) scale. As a binary task, a text is
``positive`` when its mean is at least +0.5 and ``negative`` when it is at most -0.5; texts in
between (near-neutral, or raters disagreeing) are dropped, and so are texts that occur twice.
A fixed hashed share of the texts is the test split.

The New York Times and Amazon files are sentences cut from whole documents (500 editorials, 309
reviews), and their IDs say which (``DOC_SENTENCE``). Sentences of one document share its topic,
product and names, so those two tasks hold out whole documents: no document straddles the split.
"""

from __future__ import annotations

import pathlib

from w2sjax.data.bigbench import BINARY_SENTIMENT, Splits, _split, labelled_texts  # noqa: F401 (named below)

THRESHOLD = 0.5  # |mean rating| below this is dropped as near-neutral


def ratings(path: pathlib.Path) -> list[tuple[str, float]]:
    """(text, mean rating) for every line of a ``*_GroundTruth.txt`` file."""
    return [(text, rating) for _, text, rating in rated_lines(path)]


def rated_lines(path: pathlib.Path) -> list[tuple[str, str, float]]:
    """(ID, text, mean rating) for every line of a ``*_GroundTruth.txt`` file."""
    out = []
    lines = pathlib.Path(path).read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise ValueError(f"{path}: line {n}: expected ID, rating and text separated by tabs")
        rating = float(parts[1])
        if not -4.0 <= rating <= 4.0:
            raise ValueError(f"{path}: line {n}: rating {rating} outside [-4, 4]")
        out.append((parts[0].strip().lstrip("\ufeff"), parts[2].strip(), rating))
    return out


def _binary(path: pathlib.Path, *, frac: float, salt: str) -> Splits:
    # label 1 is BINARY_SENTIMENT[1], "positive"
    kept = [(t, int(r > 0)) for t, r in ratings(path) if abs(r) >= THRESHOLD]
    return labelled_texts(kept, frac=frac, salt=salt)


def movie_sentences(asset_dir: pathlib.Path) -> Splits:
    """10,605 Rotten-Tomatoes review sentences (Pang & Lee 2004); 30% of the kept ones are test."""
    return _binary(pathlib.Path(asset_dir) / "movieReviewSnippets_GroundTruth.txt", frac=0.3, salt="vader_movies")


def tweets(asset_dir: pathlib.Path) -> Splits:
    """4,200 tweets; 35% of the kept ones (about 1,200) are test."""
    return _binary(pathlib.Path(asset_dir) / "tweets_GroundTruth.txt", frac=0.35, salt="vader_tweets")


def _binary_by_document(path: pathlib.Path, *, frac: float, salt: str) -> Splits:
    """Like `_binary`, but the test split holds out whole documents (the ID before ``_``)."""
    labels: dict[str, set[int]] = {}
    first: dict[str, tuple[str, int]] = {}  # text -> (document, label) where it first occurs
    for ident, text, rating in rated_lines(path):
        if abs(rating) < THRESHOLD:
            continue
        doc, sep, _ = ident.partition("_")
        if not sep:
            raise ValueError(f"{path}: ID {ident!r} is not DOCUMENT_SENTENCE")
        labels.setdefault(text, set()).add(int(rating > 0))
        first.setdefault(text, (doc, int(rating > 0)))
    kept = [t for t in first if len(labels[t]) == 1]  # a text rated both ways cannot be scored
    rows = {"text": kept, "label": [first[t][1] for t in kept]}
    return _split(rows, [first[t][0] for t in kept], frac=frac, salt=salt)


def nyt_editorials(asset_dir: pathlib.Path) -> Splits:
    """5,190 sentences of 500 New York Times opinion articles; 35% of the articles are test."""
    path = pathlib.Path(asset_dir) / "nytEditorialSnippets_GroundTruth.txt"
    return _binary_by_document(path, frac=0.35, salt="vader_nyt")


def amazon_reviews(asset_dir: pathlib.Path) -> Splits:
    """3,708 sentences of 309 Amazon reviews of five products (Hu & Liu 2004); 35% of the
    reviews are test."""
    path = pathlib.Path(asset_dir) / "amazonReviewSnippets_GroundTruth.txt"
    return _binary_by_document(path, frac=0.35, salt="vader_amazon")
