"""w2sjax.data on the real packaged data, built once into ~/.cache/w2sjax/tfds."""

import gzip
import json
import pathlib
import struct

import numpy as np
import pytest
import tensorflow_datasets as tfds

from w2sjax import assets
from w2sjax.data import Splits, Task, builders, known_tasks, load_task, make_splits, take

# name -> (kind, num_classes, train, test, x shape); counts checked against the sources below.
EXPECTED = {
    "fine_foods": ("text", 2, 4000, 1000, None),
    "fine_foods_pooled": ("text", 2, 2500, 2500, None),
    "fashion_mnist": ("image", 10, 60000, 10000, (28, 28, 1)),
    "spambase": ("tabular", 2, 3680, 921, (57,)),
    "digits": ("image", 10, 1438, 359, (8, 8, 1)),
    "mnist5k": ("image", 10, 4000, 1000, (28, 28, 1)),
}

_loaded: dict[str, Task] = {}


@pytest.fixture
def task(request, monkeypatch):
    name = request.param
    if name not in _loaded:
        _loaded[name] = load_task(name)
    return _loaded[name]


@pytest.mark.parametrize("task", list(EXPECTED), indirect=True)
def test_registered_task_reads_back(task):
    kind, num_classes, n_train, n_test, shape = EXPECTED[task.name]
    assert (task.kind, task.num_classes, len(task.class_names)) == (kind, num_classes, num_classes)
    assert (len(task.train["label"]), len(task.test["label"])) == (n_train, n_test)
    for split in (task.train, task.test):
        assert split["label"].dtype == np.int32
        assert set(np.unique(split["label"])) == set(range(num_classes))
        if kind == "text":
            assert split["text"].dtype == object and set(split) == {"text", "label"}
            assert all(isinstance(t, str) and t.strip() for t in split["text"])
        else:
            assert split["x"].dtype == np.float32 and split["x"].shape[1:] == shape
        if kind == "image":
            assert split["x"].min() == 0.0 and split["x"].max() == 1.0
    # Same rows, same order as the raw reader: nothing was shuffled on the way.
    builder = builders.BUILDERS[task.name]
    raw = builder.source_reader(assets.fetch(builder.ASSET or task.name, quiet=True))
    for part in ("train", "test"):
        np.testing.assert_array_equal(raw[part]["label"], getattr(task, part)["label"])
        if kind == "text":
            assert list(raw[part]["text"]) == list(getattr(task, part)["text"])
        else:
            x = raw[part]["x"]
            x = x.astype(np.float32) / np.float32(255) if x.dtype == np.uint8 else x
            assert np.array_equal(x, getattr(task, part)["x"])


def test_counts_match_the_source_files():
    # Independent of our readers: the IDX headers and the documented class totals.
    d = assets.fetch("fashion_mnist", quiet=True)
    for stem, n in (("train", 60000), ("t10k", 10000)):
        with gzip.open(d / f"{stem}-labels-idx1-ubyte.gz") as f:
            assert struct.unpack(">HBBI", f.read(8))[3] == n
        with gzip.open(d / f"{stem}-images-idx3-ubyte.gz") as f:
            assert struct.unpack(">HBBIII", f.read(16))[3:] == (n, 28, 28)
    ff = load_task("fine_foods")
    assert ff.class_names == ("great", "other")
    assert np.bincount(ff.train["label"]).tolist() == [2600, 1400]
    assert np.bincount(ff.test["label"]).tolist() == [658, 342]
    spam = load_task("spambase")  # UCI: 4601 e-mails, 1813 of them spam
    both = np.concatenate([spam.train["label"], spam.test["label"]])
    assert spam.class_names == ("nonspam", "spam") and np.bincount(both).tolist() == [2788, 1813]
    digits = load_task("digits")
    assert len(digits.train["label"]) + len(digits.test["label"]) == 1797


def test_built_as_array_record_and_reused(monkeypatch):
    load_task("digits")
    path = assets.cache_dir() / "tfds" / "w2sjax_digits" / "1.0.0"
    info = json.loads((path / "dataset_info.json").read_text())
    assert info["fileFormat"] == "array_record" and info["disableShuffling"] is True
    stored = tfds.builder_from_directory(path)
    assert stored.info.splits["train"].num_examples == 1438
    stamp = {p: p.stat().st_mtime_ns for p in path.iterdir()}
    again = load_task("digits")
    assert {p: p.stat().st_mtime_ns for p in path.iterdir()} == stamp
    assert again.fingerprint == "w2sjax_digits:1.0.0"


def test_an_unchanged_prepared_data_set_is_decoded_once_and_a_changed_one_again(tmp_path, monkeypatch):
    """A second read of the same checked content decodes nothing and hands out arrays of its own;
    a shard changed on disk is caught by its sha256 (and rebuilt), never served from memory."""
    decoded = []
    real_read = builders._read
    monkeypatch.setattr(builders, "_read", lambda *a: decoded.append(a[1]) or real_read(*a))
    first = load_task("digits", data_dir=tmp_path)
    first.train["x"][:] = -1.0  # the caller's own copy: later reads do not see it
    again = load_task("digits", data_dir=tmp_path)
    assert decoded == ["digits"] and again.train["x"].min() == 0.0
    fresh = load_task("digits", data_dir=tmp_path / "elsewhere")  # another folder: decoded from its files
    assert decoded == ["digits", "digits"]
    np.testing.assert_array_equal(fresh.train["x"], again.train["x"])
    shard = next((tmp_path / "w2sjax_digits" / "1.0.0").glob("w2sjax_digits-train.array_record-*"))
    with open(shard, "r+b") as f:
        f.truncate(shard.stat().st_size // 2)
    rebuilt = load_task("digits", data_dir=tmp_path)
    assert decoded[2:] == ["digits"] and shard.stat().st_size > 0  # rebuilt, then decoded from disk
    np.testing.assert_array_equal(rebuilt.train["x"], fresh.train["x"])


def test_fresh_build_matches_the_cache(tmp_path, monkeypatch):
    fresh, cached = load_task("digits", data_dir=tmp_path), load_task("digits")
    assert (tmp_path / "w2sjax_digits" / "1.0.0" / "dataset_info.json").is_file()
    for part in ("train", "test"):
        for key in ("x", "label"):
            assert np.array_equal(getattr(fresh, part)[key], getattr(cached, part)[key])


def test_fine_foods_pooled_is_a_stratified_half_split_of_all_reviews():
    ff, pooled = load_task("fine_foods"), load_task("fine_foods_pooled")
    every = sorted(zip(np.concatenate([ff.train["text"], ff.test["text"]]),
                       np.concatenate([ff.train["label"], ff.test["label"]])))
    split = sorted(zip(np.concatenate([pooled.train["text"], pooled.test["text"]]),
                       np.concatenate([pooled.train["label"], pooled.test["label"]])))
    assert split == every  # the same 5000 (review, label) pairs, nothing lost or duplicated
    # 3258 great and 1742 other in all (2600+658, 1400+342), halved within each class.
    assert np.bincount(pooled.test["label"]).tolist() == [1629, 871]
    assert np.bincount(pooled.train["label"]).tolist() == [1629, 871]
    # Built from the fine_foods asset: the two tasks share cached features.
    assert pooled.source == ff.source == "fine_foods"
    assert pooled.fingerprint != ff.fingerprint


def test_unknown_task():
    with pytest.raises(
        ValueError, match=r"unknown task 'nope'; known tasks: .*fine_foods.*csv:PATH"
    ):
        load_task("nope")
    assert {
        "fine_foods",
        "fashion_mnist",
        "spambase",
        "digits",
        "mnist5k",
        "imdb_reviews",
        "glue/sst2",
    } <= set(known_tasks())


# --- splits -------------------------------------------------------------------


@pytest.mark.parametrize("task", ["fine_foods"], indirect=True)
def test_splits_disjoint_and_sized(task):
    s = make_splits(task, seed=0)
    assert isinstance(s, Splits)
    idx = s.indices
    assert len(idx["val"]) == 200 and len(idx["supervisor_half"]) == len(idx["student_half"]) == 1900  # 10% capped at 200
    train_rows = np.concatenate([idx["supervisor_half"], idx["student_half"], idx["val"]])
    assert len(np.unique(train_rows)) == len(train_rows)  # disjoint
    np.testing.assert_array_equal(idx["test"], np.arange(1000))
    for part in ("supervisor_half", "student_half", "val"):
        np.testing.assert_array_equal(getattr(s, part)["label"], task.train["label"][idx[part]])
        assert list(getattr(s, part)["text"]) == list(task.train["text"][idx[part]])
    assert list(s.test["text"]) == list(task.test["text"])


def test_default_validation_slice_scales_with_the_data():
    from w2sjax.data.splits import default_n_val

    sizes = {n: default_n_val(n) for n in (20, 100, 320, 1000, 1437, 3680, 4000, 60000)}
    # 10% of n, at least min(50, n/5), at most 200: computed by hand
    assert sizes == {20: 4, 100: 20, 320: 50, 1000: 100, 1437: 143, 3680: 200, 4000: 200, 60000: 200}


@pytest.mark.parametrize("task", ["fine_foods"], indirect=True)
def test_splits_deterministic_per_seed(task):
    a, b, c = make_splits(task, seed=3), make_splits(task, seed=3), make_splits(task, seed=4)
    for part in ("supervisor_half", "student_half", "val"):
        np.testing.assert_array_equal(a.indices[part], b.indices[part])
        assert not np.array_equal(a.indices[part], c.indices[part])
    small = make_splits(task, seed=3, n_train=500, n_test=200)
    np.testing.assert_array_equal(small.indices["val"], a.indices["val"])  # val ignores n_train
    assert len(small.supervisor_half["label"]) == len(small.student_half["label"]) == 250
    assert len(small.test["label"]) == 200 and np.all(np.diff(small.indices["test"]) > 0)
    assert not np.array_equal(
        small.indices["test"], make_splits(task, seed=4, n_test=200).indices["test"]
    )


@pytest.mark.parametrize("task", ["fine_foods"], indirect=True)
def test_balanced_splits(task):
    s = make_splits(task, seed=1, n_val=200, n_train=1000, n_test=500, balance=True)
    for part, n in (("supervisor_half", 250), ("student_half", 250), ("val", 100), ("test", 250)):
        assert np.bincount(getattr(s, part)["label"], minlength=2).tolist() == [n, n], part
    full = make_splits(task, seed=1, balance=True)
    assert np.bincount(full.test["label"]).tolist() == [342, 342]
    rows = np.concatenate([full.indices[p] for p in ("supervisor_half", "student_half", "val")])
    assert len(np.unique(rows)) == len(rows)


@pytest.mark.parametrize("task", ["fine_foods"], indirect=True)
def test_balance_train_balances_the_training_parts_and_keeps_the_natural_test_split(task):
    """``balance_train``: the halves and the validation slice as with ``balance``; the test split is
    the one an unbalanced run of the same seed scores (fine_foods: 658 of its 1000 test reviews are
    class 0), so such cells are scored on the same rows as unbalanced ones."""
    s = make_splits(task, seed=1, n_val=200, n_train=1000, n_test=500, balance_train=True)
    both = make_splits(task, seed=1, n_val=200, n_train=1000, n_test=500, balance=True)
    plain = make_splits(task, seed=1, n_val=200, n_train=1000, n_test=500)
    for part, n in (("supervisor_half", 250), ("student_half", 250), ("val", 100)):
        assert np.bincount(getattr(s, part)["label"], minlength=2).tolist() == [n, n], part
        np.testing.assert_array_equal(s.indices[part], both.indices[part])
    np.testing.assert_array_equal(s.indices["test"], plain.indices["test"])
    counts = np.bincount(task.test["label"][plain.indices["test"]], minlength=2)
    assert counts[0] != counts[1]  # the natural class mix, not a balanced one
    whole = make_splits(task, seed=1, n_val=200, n_train=1000, balance_train=True)
    np.testing.assert_array_equal(whole.indices["test"], np.arange(1000))
    assert np.bincount(whole.test["label"]).tolist() == [658, 342]
    with pytest.raises(ValueError, match="one of them"):
        make_splits(task, seed=1, balance=True, balance_train=True)


def test_balance_train_is_a_checked_config_setting():
    from w2sjax.config import Config, ConfigError, DataConfig, apply_overrides

    assert apply_overrides(Config(), ["data.balance_train=true"]).data.balance_train is True
    with pytest.raises(ConfigError, match=r"^--set data.balance_train: expected true or false, got 'maybe'$"):
        apply_overrides(Config(), ["data.balance_train=maybe"])
    with pytest.raises(ConfigError, match=r"^data.balance_train: expected true or false, got 'yes'$"):
        DataConfig(balance_train="yes")
    with pytest.raises(ConfigError, match=r"^data.balance_train: expected data.balance=false with it"):
        apply_overrides(Config(), ["data.balance=true", "data.balance_train=true"])


def test_balance_train_refuses_multiple_choice_rows_in_one_line():
    from w2sjax import experiment
    from w2sjax.config import Config, ConfigError, DataConfig

    rows = {"text": np.array([f"q{i // 2} choice {i % 2}" for i in range(40)], dtype=object),
            "label": np.array([1, 0] * 20, np.int32), "group": (np.arange(40) // 2).astype(np.int32)}
    mc = Task("tiny_mc", "text", 2, ("wrong", "right"), rows, {k: v[:10] for k, v in rows.items()})
    cfg = Config(data=DataConfig(task="tiny_mc", n_val=10, balance_train=True))
    with pytest.raises(ConfigError, match=r"^data: task 'tiny_mc': balance_train=True is not supported for grouped"):
        experiment.SeedRun.splits_of(cfg, mc, 0)


@pytest.mark.parametrize("task", ["digits"], indirect=True)
def test_split_errors_and_take(task):
    with pytest.raises(ValueError, match="n_train"):
        make_splits(task, seed=0, n_train=10_000)
    with pytest.raises(ValueError, match="n_test"):
        make_splits(task, seed=0, n_test=10_000)
    sub = take(task.test, np.array([3, 1]))
    assert sub["x"].shape == (2, 8, 8, 1)
    np.testing.assert_array_equal(sub["label"], task.test["label"][[3, 1]])


# --- user files ---------------------------------------------------------------


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_user_csv_text_round_trip(tmp_path):
    rows = [("good stuff, really", "pos"), ("bad", "neg"), ('said "meh"', "neutral")] * 20
    body = "text,label\n" + "".join(
        f'"{t.replace(chr(34), chr(34) * 2)}",{lab}\n' for t, lab in rows
    )
    path = _write(tmp_path, "reviews.csv", body)
    task = load_task(f"csv:{path}")
    assert (task.kind, task.class_names) == ("text", ("neg", "neutral", "pos"))
    assert len(task.train["label"]) + len(task.test["label"]) == 60
    assert np.bincount(task.test["label"]).tolist() == [4, 4, 4]  # stratified 20%
    names = np.array(task.class_names)
    got = sorted(zip(task.train["text"], names[task.train["label"]], strict=True))
    want = sorted(r for r in rows)
    assert set(got) <= set(want) and 'said "meh"' in set(task.train["text"])
    again = load_task(f"csv:{path}")
    np.testing.assert_array_equal(again.test["label"], task.test["label"])
    assert list(again.test["text"]) == list(task.test["text"])
    _write(tmp_path, "reviews.csv", body + "new row,pos\n")
    assert load_task(f"csv:{path}").fingerprint != task.fingerprint  # edited file is re-read


def test_planning_reads_each_task_once_inside_reuse_loaded_tasks(tmp_path):
    """Inside the block a task is read from disk once (an edit after the first read is not seen);
    outside it every call reads the file again."""
    from w2sjax.data import registry

    path = _write(tmp_path, "r.csv", "text,label\n" + "".join(f"row {i},{'ab'[i % 2]}\n" for i in range(40)))
    with registry.reuse_loaded_tasks():
        first = load_task(f"csv:{path}")
        _write(tmp_path, "r.csv", path.read_text() + "one more,a\n")
        assert load_task(f"csv:{path}") is first
        with registry.reuse_loaded_tasks():  # nested: the same memory
            assert load_task(f"csv:{path}") is first
        assert load_task(f"csv:{path}", label_field="label", text_field="text") is first
    after = load_task(f"csv:{path}")
    assert after is not first and len(after.train["label"]) + len(after.test["label"]) == 41


def test_user_csv_tabular_with_split_column(tmp_path):
    body = "a,b,label,split\n" + "".join(
        f"{i},{i * 0.5},{i % 3},{'test' if i % 4 == 0 else 'train'}\n" for i in range(40)
    )
    task = load_task(f"csv:{_write(tmp_path, 'feat.csv', body)}")
    assert task.kind == "tabular" and task.class_names == ("0", "1", "2")
    assert task.train["x"].shape == (30, 2) and task.test["x"].shape == (10, 2)
    np.testing.assert_array_equal(task.test["x"][:, 0], np.arange(0, 40, 4))
    assert task.train["x"].dtype == np.float32 and task.test["label"].dtype == np.int32


def test_user_jsonl(tmp_path):
    lines = [json.dumps({"text": f"example {i}", "label": i % 2}) for i in range(30)]
    task = load_task(f"jsonl:{_write(tmp_path, 'd.jsonl', chr(10).join(lines) + chr(10))}")
    assert task.kind == "text" and task.num_classes == 2
    assert len(task.train["text"]) == 24 and len(task.test["text"]) == 6
    vec = [
        json.dumps({"x": [i, -i, 0.5], "label": "ab"[i % 2], "split": "test" if i < 4 else "train"})
        for i in range(20)
    ]
    tab = load_task(f"jsonl:{_write(tmp_path, 'v.jsonl', chr(10).join(vec))}")
    assert tab.kind == "tabular" and tab.class_names == ("a", "b") and tab.test["x"].shape == (4, 3)


@pytest.mark.parametrize(
    "name, body, expected",
    [
        (
            "nolabel.csv",
            "text,target\nhi,1\n",
            r"nolabel\.csv: row 1 \(line 2\): no 'label' column",
        ),
        ("empty.csv", "text,label\nfine,1\nok,0\n  ,1\n", r"empty\.csv: row 3 \(line 4\): empty"),
        ("neg.csv", "text,label\na,0\nb,-1\n", r"neg\.csv: row 2 \(line 3\): bad label -1"),
        ("short.csv", "text,label\na,0\nb\n", r"short\.csv: row 2 \(line 3\): fewer fields"),
        (
            "nan.csv",
            "f,label\n1,0\nx,1\n",
            r"nan\.csv: row 2 \(line 3\): column 'f' is not a number",
        ),
        (
            "split.csv",
            "text,label,split\na,0,train\nb,1,dev\n",
            r"split\.csv: row 2 \(line 3\): split must be",
        ),
        ("one.csv", "text,label\na,0\nb,0\n", r"one\.csv: needs at least two classes"),
        (
            "bad.jsonl",
            '{"text": "a", "label": 0}\n{"text": "b", "label": 1\n',
            r"bad\.jsonl: row 2 \(line 2\): bad JSON",
        ),
        (
            "float.jsonl",
            '{"text": "a", "label": 0}\n\n{"text": "b", "label": 0.5}\n',
            r"float\.jsonl: row 2 \(line 3\): label '0\.5' is not a whole number",
        ),
        (
            "miss.jsonl",
            '{"text": "a", "label": 0}\n{"label": 1}\n',
            r"miss\.jsonl: row 2 \(line 2\): missing 'text'",
        ),
    ],
)
def test_user_file_errors_name_the_row(tmp_path, name, body, expected):
    path = _write(tmp_path, name, body)
    with pytest.raises(ValueError, match=expected) as e:
        load_task(f"{name.rsplit('.', 1)[1]}:{path}")
    assert "\n" not in str(e.value)


def test_user_csv_with_other_column_names(tmp_path):
    """A user's file: columns ``sentence,label``. The error names what is expected and what was
    found; ``text_field`` / ``label_field`` (data.text_field / data.label_field) pick the columns."""
    rows = [("a fine film", "1"), ("dull and long", "0")] * 10
    path = _write(tmp_path, "s.csv", "sentence,label\n" + "".join(f"{t},{y}\n" for t, y in rows))
    with pytest.raises(ValueError, match=r"no 'text' column; found columns sentence, label \(column 'sentence' "
                                         r"is not a number: set data.text_field=sentence"):
        load_task(f"csv:{path}")
    task = load_task(f"csv:{path}", text_field="sentence")
    assert task.kind == "text" and sorted(set(task.train["text"]) | set(task.test["text"])) == sorted(
        {"a fine film", "dull and long"})
    other = _write(tmp_path, "t.csv", "review,stars\n" + "".join(f"{t},{y}\n" for t, y in rows))
    with pytest.raises(ValueError, match=r"no 'label' column; found columns review, stars"):
        load_task(f"csv:{other}", text_field="review")
    renamed = load_task(f"csv:{other}", text_field="review", label_field="stars")
    np.testing.assert_array_equal(renamed.train["label"], task.train["label"])
    assert renamed.fingerprint != task.fingerprint
    with pytest.raises(ValueError, match=r"no 'body' column \(data.text_field\); found columns review, stars"):
        load_task(f"csv:{other}", text_field="body", label_field="stars")


def _tabular(labels) -> str:
    """A tabular CSV whose one feature is the row number, with these label texts."""
    return "f,label\n" + "".join(f"{i},{y}\n" for i, y in enumerate(labels))


def test_user_labels_are_values_so_1_and_1_0_are_one_class(tmp_path):
    # pandas writes a float column with missing values as 1.0 / 0.0; mixed with 1 / 0 elsewhere.
    ints = [i % 2 for i in range(100)]
    mixed = [f"{y}.0" if i % 3 == 0 else str(y) for i, y in enumerate(ints)]
    plain = load_task(f"csv:{_write(tmp_path, 'ints.csv', _tabular(ints))}")
    task = load_task(f"csv:{_write(tmp_path, 'mixed.csv', _tabular(mixed))}")
    assert task.num_classes == 2 and task.class_names == ("0", "1")
    for part in ("train", "test"):
        np.testing.assert_array_equal(getattr(task, part)["label"], getattr(plain, part)["label"])
        np.testing.assert_array_equal(getattr(task, part)["label"], np.asarray(getattr(task, part)["x"][:, 0]) % 2)
    # JSON numbers too: 1 and 1.0 (and 1e0 in a CSV) are class 1.
    lines = [json.dumps({"text": f"t{i}", "label": [0, 1.0, 1][i % 3]}) for i in range(30)]
    js = load_task(f"jsonl:{_write(tmp_path, 'm.jsonl', chr(10).join(lines))}")
    assert js.class_names == ("0", "1")
    assert np.bincount(np.concatenate([js.train["label"], js.test["label"]])).tolist() == [10, 20]
    from w2sjax.data import user

    assert user.class_counts(task) == "0: 50, 1: 50"


@pytest.mark.parametrize("bad, expected", [
    ("nan", r"row 7 \(line 8\): label 'nan' is missing or not a number"),
    ("NaN", r"row 7 \(line 8\): label 'NaN' is missing or not a number"),
    ("inf", r"row 7 \(line 8\): label 'inf' is missing or not a number"),
    ("1.5", r"row 7 \(line 8\): label '1\.5' is not a whole number"),
    ("", r"row 7 \(line 8\): empty label"),
])
def test_a_missing_or_fractional_label_names_its_row(tmp_path, bad, expected):
    labels = [str(i % 2) for i in range(600)]
    labels[6] = bad
    with pytest.raises(ValueError, match=expected + r".*data\.label_map") as e:
        load_task(f"csv:{_write(tmp_path, 'one_bad.csv', _tabular(labels))}")
    assert "\n" not in str(e.value)


def test_a_label_map_maps_labels_and_can_drop_rows(tmp_path):
    labels = ["great", "other", "1.0", "nan"] * 25
    path = _write(tmp_path, "m.csv", _tabular(labels))
    with pytest.raises(ValueError, match=r"row 4 \(line 5\): label 'nan' is missing"):
        load_task(f"csv:{path}")  # as strings, 'nan' is still no class
    task = load_task(f"csv:{path}", label_map=("great:1", "1.0:1", "other:0", "nan:"))
    assert task.class_names == ("0", "1") and len(task.train["label"]) + len(task.test["label"]) == 75
    x = np.concatenate([task.train["x"][:, 0], task.test["x"][:, 0]]).astype(int)
    y = np.concatenate([task.train["label"], task.test["label"]])
    np.testing.assert_array_equal(y, [{0: 1, 1: 0, 2: 1}[i % 4] for i in x])  # rows 3, 7, ... dropped
    assert task.fingerprint != load_task(f"csv:{path}", label_map=("great:0", "1.0:0", "other:1", "nan:")).fingerprint
    with pytest.raises(ValueError, match=r"row 2 \(line 3\): label 'other' is not in data.label_map"):
        load_task(f"csv:{path}", label_map=("great:1", "1.0:1", "nan:"))


def test_a_nan_label_stops_the_run_with_one_line_and_exit_2(tmp_path):
    import os
    import subprocess
    import sys

    labels = [str(i % 2) for i in range(600)]
    labels[99] = "nan"
    path = _write(tmp_path, "nan_label.csv", _tabular(labels))
    root = pathlib.Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "-m", "w2sjax.cli", "run", "--out", str(tmp_path / "r"), "--no-progress",
         "--set", f"data.task=csv:{path}", "--set", "weak_models=linear", "--set", "strong_models=linear"],
        env=dict(os.environ, PYTHONPATH=str(root), JAX_PLATFORMS="cpu"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        f"w2sjax: error: data.task: {path}: row 100 (line 101): label 'nan' is missing or not a number "
        "(fix the row, or map labels with data.label_map)"]


def test_user_file_missing(tmp_path):
    with pytest.raises(ValueError, match="cannot read"):
        load_task(f"csv:{tmp_path / 'absent.csv'}")


# --- TFDS catalog path ----------------------------------------------------------


class W2sjaxTestCatalog(tfds.core.GeneratorBasedBuilder):
    """A registered stand-in for a catalog dataset such as glue/sst2 (offline)."""

    VERSION = tfds.core.Version("1.0.0")

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):  # see builders._SourceBuilder.code_path
        return None

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "sentence": tfds.features.Text(),
                    "label": tfds.features.ClassLabel(names=["neg", "pos"]),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        return {
            "train": self._generate_examples(20, 0),
            "validation": self._generate_examples(6, 0),
        }

    def _generate_examples(self, n, _):
        for i in range(n):
            yield i, {"sentence": f"sentence {i}", "label": i % 2}


def test_tfds_catalog_task(tmp_path):
    task = load_task("tfds:w2sjax_test_catalog", data_dir=tmp_path)
    assert (task.kind, task.class_names) == ("text", ("neg", "pos"))
    assert len(task.train["text"]) == 20 and len(task.test["text"]) == 6
    assert sorted(task.test["text"]) == sorted(f"sentence {i}" for i in range(6))
    assert task.fingerprint == "tfds:w2sjax_test_catalog:1.0.0"
    assert (pathlib.Path(tmp_path) / "w2sjax_test_catalog" / "1.0.0").is_dir()


class W2sjaxTestUnreachable(W2sjaxTestCatalog):
    """A catalog dataset whose download host can never resolve (``.invalid``, RFC 2606): a real
    network failure through TFDS's own downloader, whatever network this machine has."""

    def _split_generators(self, dl_manager):
        dl_manager.download("http://w2sjax-data.invalid/archive.tar.gz")
        return super()._split_generators(dl_manager)


@pytest.mark.slow  # TFDS retries the download 10 times with back-off: about 3.5 minutes
def test_tfds_download_failure_is_one_line_saying_how_to_work_offline(tmp_path, capsys):
    from w2sjax.assets import AssetError

    with pytest.raises(AssetError) as e:
        load_task("tfds:w2sjax_test_unreachable", data_dir=tmp_path)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("data.task=tfds:w2sjax_test_unreachable: downloading TFDS dataset")
    assert "cannot reach w2sjax-data.invalid" in message
    assert f"copy DIR's contents into {tmp_path}" in message and "manual_dir" in message
    assert "Downloading and preparing" not in capsys.readouterr().out  # TFDS's chatter is not on stdout


def test_unknown_tfds_dataset_is_a_value_error():
    with pytest.raises(ValueError, match="TFDS has no dataset 'no_such_dataset_w2sjax'"):
        load_task("tfds:no_such_dataset_w2sjax")


def test_building_a_packaged_task_keeps_tfds_chatter_off_the_terminal(tmp_path, capsys):
    from w2sjax import assets
    from w2sjax.data import builders

    log = assets.log_path("tfds-digits")
    before = log.stat().st_size if log.is_file() else 0
    builders.load("digits", tmp_path)  # a fresh data_dir: TFDS builds it and reports progress
    out, err = capsys.readouterr()
    assert "Downloading and preparing" not in out + err and "Generating" not in out + err
    with open(log, encoding="utf-8") as f:
        f.seek(before)
        assert "Downloading and preparing" in f.read()  # kept in the log the fetch messages name


def test_a_run_on_mixed_1_and_1_0_labels_is_a_2_class_task_and_prints_its_classes(tmp_path, capsys):
    from w2sjax import experiment
    from w2sjax.config import Config, DataConfig

    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 3))
    y = (x[:, 0] > 0).astype(int)
    text = "a,b,c,label\n" + "".join(
        f"{r[0]:.4f},{r[1]:.4f},{r[2]:.4f},{t}{'.0' if i % 2 else ''}\n" for i, (r, t) in enumerate(zip(x, y)))
    path = _write(tmp_path, "mixed.csv", text)
    config = Config(data=DataConfig(task=f"csv:{path}"), weak_models=("linear",), strong_models=("mlp",),
                    losses=("xent",), seeds=(0,))
    results = experiment.run(config, tmp_path / "out", progress=False)
    out = capsys.readouterr().out
    counts = np.bincount(y)
    assert f"data: 2 classes in the file (rows per class): 0: {counts[0]}, 1: {counts[1]}" in out.splitlines()
    # Read as 4 classes ('0', '0.0', '1', '1.0'), every other row would be a class of its own, and
    # the ceiling could not tell them apart (about 0.5).
    assert results["runs"][0]["ceiling_acc"] > 0.9


@pytest.mark.parametrize("name", ["dataset_info.json", "features.json"])
def test_a_truncated_tfds_metadata_file_is_rebuilt_with_one_line_naming_it(tmp_path, monkeypatch, capfd, name):
    first = load_task("spambase", data_dir=tmp_path)
    info = tmp_path / "w2sjax_spambase" / "1.0.0" / name
    info.write_bytes(info.read_bytes()[:150])
    capfd.readouterr()
    again = load_task("spambase", data_dir=tmp_path)
    err = capfd.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("w2sjax: warning: ")]
    assert len(warnings) == 1 and str(info) in warnings[0] and "rebuilding" in warnings[0], err
    assert "Traceback" not in err
    for part in ("train", "test"):
        for k in ("x", "label"):
            np.testing.assert_array_equal(getattr(again, part)[k], getattr(first, part)[k])
    json.loads(info.read_text())  # rebuilt whole
