"""The TFDS catalog converters, offline.

The installed tensorflow-datasets ships no dummy_data for these builders, so each converter
runs on rows written in its builder's real feature schema: the schema comes from the installed
builder (``tfds.builder(name).info.features``, after importing the module that registers an
older builder), except super_glue, whose ``_info`` needs TensorFlow (``tf.int32``): its schema
is copied here from tensorflow_datasets/text/super_glue.py (``SuperGlue._info`` and the boolq /
wic / multirc configs). Rows go through ``serialize_example`` and ``deserialize_example_np``,
the codec behind ``tfds.data_source``, so the converters see exactly what they see online.
"""

import importlib

import numpy as np
import pytest
import tensorflow_datasets as tfds

from w2sjax.data import catalog, known_tasks

F = tfds.features


def _super_glue(names, extra=None, idx=None):
    feats = {n: F.Text() for n in names}
    feats.update(extra or {})
    feats["idx"] = idx or F.Tensor(shape=(), dtype=np.int32)
    feats["label"] = F.ClassLabel(names=["False", "True"])
    return F.FeaturesDict(feats)


_SUPER_GLUE = {
    "super_glue/boolq": _super_glue(["question", "passage"]),
    "super_glue/wic": _super_glue(
        ["word", "sentence1", "sentence2"], {k: F.Tensor(shape=(), dtype=np.int32) for k in ("start1", "start2", "end1", "end2")}
    ),
    "super_glue/multirc": _super_glue(
        ["paragraph", "question", "answer"],
        idx=F.FeaturesDict({k: F.Tensor(shape=(), dtype=np.int32) for k in ("paragraph", "question", "answer")}),
    ),
}


def _features(name, tmp_path):
    if name in _SUPER_GLUE:
        return _SUPER_GLUE[name]
    entry = catalog.CATALOG[name]
    if entry.module:
        importlib.import_module(entry.module)
    return tfds.builder(entry.tfds_name, data_dir=str(tmp_path), try_gcs=False).info.features


def _convert(name, rows, tmp_path):
    feats = _features(name, tmp_path)
    records = [feats.deserialize_example_np(feats.serialize_example(r)) for r in rows]
    out = catalog.CATALOG[name].convert(records)
    assert out["label"].dtype == np.int32 and out["text"].dtype == object
    return [(t, int(lbl)) for t, lbl in zip(out["text"], out["label"])], out.get("group")


# name -> (rows in the builder's schema, expected (text, label) pairs, expected groups or None)
CASES = {
    "super_glue/boolq": (
        [{"question": "is the sky blue", "passage": "The sky is blue.", "idx": 0, "label": 1}],
        [("is the sky blue? The sky is blue.", 1)], None),
    "super_glue/wic": (
        [{"word": "bank", "sentence1": "a river bank", "sentence2": "a bank loan", "start1": 8, "start2": 2,
          "end1": 12, "end2": 6, "idx": 3, "label": 0}],
        [("bank: a river bank / a bank loan", 0)], None),
    "super_glue/multirc": (
        [{"paragraph": "Ann has a cat.", "question": "What pet?", "answer": "a cat",
          "idx": {"paragraph": 0, "question": 0, "answer": 0}, "label": 1},
         {"paragraph": "Ann has a cat.", "question": "What pet?", "answer": "a dog",
          "idx": {"paragraph": 0, "question": 0, "answer": 1}, "label": 0}],
        [("Ann has a cat. Question: What pet? Answer: a cat", 1), ("Ann has a cat. Question: What pet? Answer: a dog", 0)],
        None),
    "glue/sst2": (
        [{"sentence": "great film", "label": 1, "idx": 0}, {"sentence": "dull", "label": 0, "idx": 1},
         {"sentence": "hidden", "label": -1, "idx": 2}],  # GLUE test rows carry label -1
        [("great film", 1), ("dull", 0)], None),
    "imdb_reviews": ([{"text": "A fine movie.", "label": "pos"}, {"text": "Bad.", "label": "neg"}],
                     [("A fine movie.", 1), ("Bad.", 0)], None),
    "yelp_polarity_reviews": ([{"text": "Tasty!", "label": "2"}, {"text": "Cold food.", "label": "1"}],
                              [("Tasty!", 1), ("Cold food.", 0)], None),
    "sentiment140": (
        [{"polarity": 4, "date": "d", "query": "q", "user": "u", "text": "love it"},
         {"polarity": 2, "date": "d", "query": "q", "user": "u", "text": "it is tuesday"},
         {"polarity": 0, "date": "d", "query": "q", "user": "u", "text": "hate it"}],
        [("love it", 1), ("hate it", 0)], None),
    "paws_wiki": ([{"sentence1": "A is B.", "sentence2": "B is A.", "label": 1}], [("A is B. / B is A.", 1)], None),
    "anli/r1": (
        [{"uid": "u", "context": "It rains.", "hypothesis": "It is dry.", "label": "c"}],
        [("It rains. Hypothesis: It is dry.", 2)], None),
    "cosmos_qa": (
        [{"context": "I woke late.", "question": "Why?", "answer0": "alarm failed", "answer1": "b",
          "answer2": "c", "answer3": "d", "label": "0", "id": "x"}],
        [("I woke late. Why? alarm failed", 1), ("I woke late. Why? b", 0), ("I woke late. Why? c", 0),
         ("I woke late. Why? d", 0)], [0, 0, 0, 0]),
    "hellaswag": (
        [{"context": "He opens the door", "endings": ["and walks in.", "and flies."], "activity_label": "a",
          "label": 0, "split_type": "indomain", "source_id": "s"},
         {"context": "She cooks", "endings": ["x", "y", "z"], "activity_label": "a", "label": 2,
          "split_type": "indomain", "source_id": "s"}],
        [("He opens the door and walks in.", 1), ("He opens the door and flies.", 0),
         ("She cooks x", 0), ("She cooks y", 0), ("She cooks z", 1)], [0, 0, 1, 1, 1]),
    "piqa": (
        [{"id": "p", "goal": "Cut bread:", "sol1": "use a knife", "sol2": "use a spoon", "label": 0}],
        [("Cut bread: use a knife", 1), ("Cut bread: use a spoon", 0)], [0, 0]),
    "openbookqa": (
        [{"question": {"stem": "Sun is a", "choice_A": "star", "choice_B": "moon", "choice_C": "planet",
                       "choice_D": "rock"}, "fact1": "f", "humanScore": 1.0, "clarity": 1.0,
          "turkIdAnonymized": "t", "answerKey": "A"}],
        [("Sun is a star", 1), ("Sun is a moon", 0), ("Sun is a planet", 0), ("Sun is a rock", 0)], [0] * 4),
    "ai2_arc/ARC-Challenge": (
        [{"id": "a", "question": "Which is a gas?", "choices": {"text": ["ice", "steam", "rock"], "label": ["A", "B", "C"]},
          "answerKey": "B"}],
        [("Which is a gas? ice", 0), ("Which is a gas? steam", 1), ("Which is a gas? rock", 0)], [0, 0, 0]),
    "winogrande": (
        [{"sentence": "The cup fell off the table because _ was wobbly.", "option1": "the cup",
          "option2": "the table", "label": "2"}],
        [("The cup fell off the table because the cup was wobbly.", 0),
         ("The cup fell off the table because the table was wobbly.", 1)], [0, 0]),
}
CASES["ai2_arc/ARC-Easy"] = CASES["ai2_arc/ARC-Challenge"]
CASES["anli/r2"] = CASES["anli/r3"] = CASES["anli/r1"]


def test_every_catalog_task_has_a_case_and_is_registered():
    assert set(CASES) == set(catalog.CATALOG)
    assert set(catalog.CATALOG) <= set(known_tasks())


@pytest.mark.parametrize("name", sorted(CASES))
def test_converter_on_rows_in_the_builders_schema(name, tmp_path):
    rows, expected, groups = CASES[name]
    got, got_groups = _convert(name, rows, tmp_path)
    assert got == expected
    assert (got_groups is None) == (groups is None)
    if groups is not None:
        assert got_groups.tolist() == groups
    assert max(label for _, label in got) < len(catalog.CATALOG[name].class_names)


def test_schema_names_match_the_converters_class_names(tmp_path):
    # The converters' class names follow the builders' own label order.
    assert catalog.CATALOG["imdb_reviews"].class_names == tuple(_features("imdb_reviews", tmp_path)["label"].names)
    assert _features("anli/r1", tmp_path)["label"].names == ["e", "n", "c"]
    assert _features("paws_wiki", tmp_path)["label"].names == ["different_meaning", "paraphrase"]
