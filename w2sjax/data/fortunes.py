"""Readers for the fortune-cookie files of BSD ``fortune`` as packaged by Debian
(``fortunes=1:1.99.1-7.3``, BSD licence; asset ``fortunes``).

Each file gathers quotations, jokes, verse and aphorisms on one theme, one entry after another,
separated by lines holding only ``%``. The task ``fortunes`` asks which of six files an entry
comes from: computers, men-women, politics, science, songs-poems (a genre more than a topic)
or work. Many entries never name their theme ("A man may be so much of everything that he is
nothing of anything."), so a bag of words is a weak reader of them.

An entry's text is its lines joined by single spaces, with the terminal overstrike sequences
(``_``/backspace for underlining) removed; its ``-- author`` line is kept. An entry that occurs in
two files is dropped, repeats within a file are kept once; 30% held out by hash.
"""

from __future__ import annotations

import pathlib
import re

from w2sjax.data.bigbench import Splits, labelled_texts

TOPICS = ("computers", "men-women", "politics", "science", "songs-poems", "work")
_OVERSTRIKE = re.compile(r"[^\x08]\x08")  # "_\bX" underlines X, "X\bX" bolds it: keep the X


def entries(path: pathlib.Path) -> list[str]:
    """The entries of one fortune file, as normalised text, in file order."""
    raw = pathlib.Path(path).read_text(encoding="utf-8")
    out, lines = [], []
    for line in raw.split("\n") + ["%"]:
        if line.rstrip() == "%":
            text = " ".join(_plain("\n".join(lines)).split())
            if text:
                out.append(text)
            lines = []
        else:
            lines.append(line)
    return out


def _plain(text: str) -> str:
    """``text`` without overstrikes; "___" then three backspaces underlines the next 3 chars."""
    while (shorter := _OVERSTRIKE.sub("", text)) != text:
        text = shorter
    return text


def topics(asset_dir: pathlib.Path) -> Splits:
    """Entries of the six files, labelled by file; 30% held out."""
    pairs = [(text, i) for i, name in enumerate(TOPICS) for text in entries(pathlib.Path(asset_dir) / name)]
    return labelled_texts(pairs, frac=0.3, salt="fortunes")
