"""Readers for the World English Bible (public domain) in the SWORD module that Debian packages as
``sword-text-web=426.0-1`` (asset ``bible_web``).

A SWORD ``zText`` module keeps each testament in three files: ``.bzz`` holds zlib-compressed
blocks (one per book in this module), ``.bzs`` the (offset, size, uncompressed size) of each
block as little-endian uint32s, and ``.bzv`` one (block, offset in the uncompressed block, size)
entry per verse slot as uint32, uint32, uint16, in canonical order. Each entry is OSIS markup:
words with Strong's numbers, footnotes (``<note>``), section titles, and milestones that open a
book (``<div type="book" sID=...>``) or a chapter (``<chapter sID=...>``).

The task ``bible_genres`` asks which of six traditional divisions a verse comes from: law
(Genesis-Deuteronomy), history (Joshua-Esther), wisdom (Job-Song of Songs), prophets
(Isaiah-Malachi, with Lamentations and Daniel), gospels (Matthew-John) or epistles
(Romans-Jude). Acts, Revelation and the deuterocanonical books are left out. A verse's text is its
words, without footnotes, section titles, markup or back matter. A verse text found in two divisions is
dropped, repeats within one are kept once. Whole chapters are held out: 20% of them, by hash.
"""

from __future__ import annotations

import html
import pathlib
import re
import struct
import zlib
from collections.abc import Iterator

from w2sjax.data.bigbench import Splits, _split

DIVISIONS = {
    "law": "Gen Exod Lev Num Deut",
    "history": "Josh Judg Ruth 1Sam 2Sam 1Kgs 2Kgs 1Chr 2Chr Ezra Neh Esth",
    "wisdom": "Job Ps Prov Eccl Song",
    "prophets": "Isa Jer Lam Ezek Dan Hos Joel Amos Obad Jonah Mic Nah Hab Zeph Hag Zech Mal",
    "gospels": "Matt Mark Luke John",
    "epistles": "Rom 1Cor 2Cor Gal Eph Phil Col 1Thess 2Thess 1Tim 2Tim Titus Phlm Heb Jas 1Pet 2Pet "
                "1John 2John 3John Jude",
}
CLASSES = tuple(DIVISIONS)
DIVISION_OF = {book: i for i, books in enumerate(DIVISIONS.values()) for book in books.split()}
MODULE = "engWEB2015eb"  # the module's files: MODULE/{ot,nt}.{bzs,bzv,bzz}

_BOOK = re.compile(r'<div\b(?=[^>]*\btype="book")(?=[^>]*\bsID=)[^>]*\bosisID="([^"]+)"')
_BOOK_END = re.compile(r'<div\b(?=[^>]*\btype="book")(?=[^>]*\beID=)[^>]*>')
_CHAPTER = re.compile(r'<chapter\b[^>]*\bsID="([^"]+)"')
_DROP = re.compile(r"<note\b.*?</note>|<title\b.*?</title>", re.S)
_TAG = re.compile(r"<[^>]*>")


def entries(module_dir: pathlib.Path, testament: str) -> Iterator[str]:
    """The markup of every verse slot of one testament (``"ot"`` or ``"nt"``), in order."""
    stem = pathlib.Path(module_dir) / testament
    bzs, bzv = (stem.with_suffix(s).read_bytes() for s in (".bzs", ".bzv"))
    bzz = stem.with_suffix(".bzz").read_bytes()
    blocks = [struct.unpack_from("<III", bzs, i) for i in range(0, len(bzs), 12)]
    cache: dict[int, bytes] = {}
    for i in range(0, len(bzv), 10):
        block, offset, size = struct.unpack_from("<IIH", bzv, i)
        if size == 0:
            yield ""
            continue
        if block not in cache:
            start, length, full = blocks[block]
            cache = {block: zlib.decompress(bzz[start : start + length])}  # blocks come in order
            if len(cache[block]) != full:
                raise ValueError(f"{stem}.bzz: block {block} is {len(cache[block])} bytes, index says {full}")
        yield cache[block][offset : offset + size].decode("utf-8")


def verses(module_dir: pathlib.Path) -> Iterator[tuple[str, str, str]]:
    """(book, chapter, text) for every verse with text, in canonical order."""
    book = chapter = None
    for testament in ("ot", "nt"):
        for markup in entries(module_dir, testament):
            if _BOOK.search(markup):
                # A book's title page, not a verse. (A book that the versification has no slots
                # for, the Greek additions to Daniel, fills one such entry whole, cut off at 64 KiB
                # before Hosea's title: so the book is read from the chapter milestones.)
                continue
            started = _CHAPTER.search(markup)
            if started:
                chapter = started.group(1)
                book = chapter.rpartition(".")[0]
            ended = _BOOK_END.search(markup)
            if ended:  # back matter (a glossary) may follow a book's last verse
                markup = markup[: ended.start()]
            text = " ".join(html.unescape(_TAG.sub("", _DROP.sub(" ", markup))).split())
            if text and book is not None:
                yield book, chapter, text


def genres(asset_dir: pathlib.Path) -> Splits:
    """Verses labelled by division; 20% of the chapters held out."""
    first: dict[str, tuple[int, str]] = {}
    divisions: dict[str, set[int]] = {}
    for book, chapter, text in verses(pathlib.Path(asset_dir) / MODULE):
        label = DIVISION_OF.get(book)
        if label is not None:
            first.setdefault(text, (label, chapter))
            divisions.setdefault(text, set()).add(label)
    kept = [t for t in first if len(divisions[t]) == 1]
    rows = {"text": kept, "label": [first[t][0] for t in kept]}
    return _split(rows, [first[t][1] for t in kept], frac=0.2, salt="bible_genres")
