"""Readers for Jane Austen's six completed novels in R's janeaustenr package as packaged by Debian
(``r-cran-janeaustenr=1.0.0-1``, MIT; the texts are Project Gutenberg's, in the public domain;
asset ``janeaustenr``).

Each novel is a character vector of the lines of its Project Gutenberg text. The task
``austen`` asks which novel a paragraph comes from: Sense and Sensibility, Pride and Prejudice,
Mansfield Park, Emma, Northanger Abbey or Persuasion. One author, one narrative voice, one era: a
passage gives itself away through its characters' names, its places and its story, and a reader
that knows only which words occur learns the names.

A paragraph is a run of non-blank lines joined by spaces; paragraphs under 8 words (chapter and
volume headings, title pages, short replies) are dropped, and so is a paragraph found in two
novels (repeats within one novel are kept once). Whole chapters are held out: 30% of the
chapters, chosen by hash, are the test split, so the test paragraphs come from stretches of each
story that the training split never saw.
"""

from __future__ import annotations

import pathlib
import re

from w2sjax.data.bigbench import Splits, _split
from w2sjax.data.sources import read_r_lazyload

# The lazy-load objects, in publication order, and the class names for them.
NOVEL_OBJECTS = ("sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey", "persuasion")
NOVELS = ("sense_and_sensibility", "pride_and_prejudice", "mansfield_park", "emma", "northanger_abbey", "persuasion")
MIN_WORDS = 8
_CHAPTER = re.compile(r"^\s*chapter\s+([0-9]+|[IVXLC]+)\b", re.IGNORECASE)


def paragraphs(lines) -> list[tuple[str, int]]:
    """(paragraph, chapter number) for each paragraph of a novel's lines; chapter 0 is anything
    before the first ``CHAPTER`` heading."""
    out, block, chapter = [], [], 0
    for line in [*map(str, lines), ""]:
        if _CHAPTER.match(line):
            chapter += 1
        if line.strip():
            block.append(line.strip())
        elif block:
            out.append((" ".join(" ".join(block).split()), chapter))
            block = []
    return out


def novels(asset_dir: pathlib.Path) -> Splits:
    """Paragraphs of at least 8 words labelled by novel; 30% of the chapters held out."""
    texts = read_r_lazyload(pathlib.Path(asset_dir) / "Rdata", list(NOVEL_OBJECTS))
    first: dict[str, tuple[int, str]] = {}  # paragraph -> (novel, chapter key) where first seen
    novels_of: dict[str, set[int]] = {}
    for label, name in enumerate(NOVEL_OBJECTS):
        for text, chapter in paragraphs(texts[name]):
            if len(text.split()) >= MIN_WORDS:
                first.setdefault(text, (label, f"{name}:{chapter}"))
                novels_of.setdefault(text, set()).add(label)
    kept = [t for t in first if len(novels_of[t]) == 1]
    rows = {"text": kept, "label": [first[t][0] for t in kept]}
    return _split(rows, [first[t][1] for t in kept], frac=0.3, salt="austen")
