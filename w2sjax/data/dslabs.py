"""Readers for text data in R's dslabs package as packaged by Debian
(``r-cran-dslabs=0.7.4-1``, Artistic-2.0; asset ``dslabs``).

``trump_tweets`` holds 20,761 tweets of @realDonaldTrump (2009-2018, from the Trump Twitter
Archive) with the app each was sent from. During the 2016 campaign, tweets from Android were
written by Trump himself and tweets from iPhone mostly by his staff (Robinson 2016, "Text
analysis of Trump's tweets confirms he writes only the (angrier) Android half"; the dslabs book
repeats the analysis). The task ``trump_tweets`` is that authorship question: Android or iPhone,
for the tweets sent from 2015-06-17 (the campaign's start) up to 2016-11-08 (election day), UTC,
retweets excluded. Links are removed from the text (the staff's tweets carry pictures and links
far more often, which would make the task a test for ``https``), HTML entities are decoded and
whitespace is collapsed; a tweet left empty is dropped, and so is a text sent from both phones.
30% held out by hash.
"""

from __future__ import annotations

import datetime
import html
import pathlib
import re
import warnings

import numpy as np

from w2sjax.data.bigbench import Splits, labelled_texts
from w2sjax.data.sources import read_r_lazyload

PHONES = ("android", "iphone")
_SOURCES = ("Twitter for Android", "Twitter for iPhone")
CAMPAIGN = (
    datetime.datetime(2015, 6, 17, tzinfo=datetime.timezone.utc).timestamp(),
    datetime.datetime(2016, 11, 8, tzinfo=datetime.timezone.utc).timestamp(),
)
_LINK = re.compile(r"https?://\S+")


def tweets(asset_dir: pathlib.Path):
    """The ``trump_tweets`` data frame (``created_at`` in seconds since 1970, UTC)."""
    with warnings.catch_warnings():
        # created_at is a POSIXct; rdata has no class for it and returns its seconds, as wanted.
        warnings.filterwarnings("ignore", message="Missing constructor for R class")
        return read_r_lazyload(pathlib.Path(asset_dir) / "Rdata", ["trump_tweets"])["trump_tweets"]


def clean(text: str) -> str:
    """A tweet's text without links or HTML entities, whitespace collapsed."""
    return " ".join(_LINK.sub(" ", html.unescape(text)).split())


def trump_phones(asset_dir: pathlib.Path) -> Splits:
    """Campaign tweets sent from Android (0) or iPhone (1), links removed; 30% held out."""
    df = tweets(asset_dir)
    when = df["created_at"].to_numpy(dtype=np.float64)
    source = df["source"].astype(str).to_numpy()
    retweet = df["is_retweet"].fillna(False).astype(bool).to_numpy()
    keep = (when >= CAMPAIGN[0]) & (when < CAMPAIGN[1]) & ~retweet & np.isin(source, _SOURCES)
    pairs = []
    for text, src in zip(df["text"].astype(str).to_numpy()[keep], source[keep]):
        text = clean(text)
        if text:
            pairs.append((text, _SOURCES.index(src)))
    return labelled_texts(pairs, frac=0.3, salt="trump_tweets")
