"""Readers for the noun database of Princeton WordNet 3.0 as packaged by Debian
(``wordnet-base=1:3.0-37``, WordNet 3.0 licence; asset ``wordnet``).

Each line of ``data.noun`` is one synset: its offset, the number of its lexicographer file (the
broad semantic class a lexicographer filed it under: noun.animal, noun.artifact, ...), its
words and pointers, then ``|`` and its gloss, a definition optionally followed by quoted
examples. The task ``wordnet_nouns`` reads the definition alone (the gloss up to its first
quoted example, without the synset's own words) and asks which of the six largest noun files it
was filed in: act, animal, artifact, communication, person or plant. Many definitions name no
member of the class ("a device that ...", "the act of ...", "any of various ..."), but many
lean on taxonomy ("a genus of ...") that word overlap alone does not sort.

A definition shared by synsets of two files is dropped; repeats within a file are kept once.
20% held out by hash.
"""

from __future__ import annotations

import pathlib

from w2sjax.data.bigbench import Splits, labelled_texts

# lexicographer file number -> class name (WordNet's lexnames(5WN)); the six largest noun files.
LEXFILES = {4: "act", 5: "animal", 6: "artifact", 10: "communication", 18: "person", 20: "plant"}
CLASSES = tuple(LEXFILES.values())


def definitions(path: pathlib.Path) -> list[tuple[str, int]]:
    """(definition, lexicographer file number) for every synset of a ``data.*`` file."""
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if line.startswith("  "):  # the licence header
                continue
            head, sep, gloss = line.partition(" | ")
            fields = head.split()
            if not sep or len(fields) < 4 or not fields[1].isdigit():
                raise ValueError(f"{path}: line {n}: expected OFFSET LEXFILE ... | GLOSS")
            definition = gloss.split('; "', 1)[0].strip().rstrip(";").strip()
            if definition:
                out.append((definition, int(fields[1])))
    return out


def nouns(asset_dir: pathlib.Path) -> Splits:
    """Noun definitions labelled by lexicographer file (six classes); 20% held out."""
    codes = list(LEXFILES)
    pairs = [(d, codes.index(f)) for d, f in definitions(pathlib.Path(asset_dir) / "data.noun") if f in LEXFILES]
    return labelled_texts(pairs, frac=0.2, salt="wordnet_nouns")
