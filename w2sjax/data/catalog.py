"""TFDS catalog datasets as tasks (for machines with network access).

A registered catalog task (:data:`CATALOG`) names its TFDS dataset, the splits that serve as
train and test (GLUE-style benchmarks hide their test labels, so their validation split is the
test split), and a converter from the records ``tfds.data_source`` returns (``bytes`` for text,
ints for labels, dicts and lists for nested features) to a split: ``text`` and ``label``, plus
``group`` for multiple-choice data, which becomes one binary row per (question, choice) as in
EleutherAI/w2s. Any other ``tfds:NAME`` with a text (or image) feature and a ClassLabel ``label``
is read generically. Datasets are prepared as array_record; nothing here needs TensorFlow, but
a few older TFDS builders (``super_glue``) do, and say so when prepared.
"""

from __future__ import annotations

import dataclasses
import importlib
import pathlib
import re
from collections.abc import Callable

import numpy as np
import tensorflow_datasets as tfds

from w2sjax.assets import AssetError
from w2sjax.data.builders import read_split, tfds_output_to_log
from w2sjax.data.task import Split, Task, take

CHOICE_CLASSES = ("incorrect", "correct")


def _s(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _split(texts: list[str], labels: list[int], groups: list[int] | None = None) -> Split:
    text = np.empty(len(texts), dtype=object)
    text[:] = texts
    out = {"text": text, "label": np.asarray(labels, dtype=np.int32).reshape(-1)}
    if groups is not None:
        out["group"] = np.asarray(groups, dtype=np.int64).reshape(-1)
    return out


def text_label(text_key: str, *, label_key: str = "label",
               relabel: dict[int, int] | None = None) -> Callable[[list[dict]], Split]:
    """One text feature and its label; ``relabel`` maps raw labels (others are dropped)."""

    def convert(records):
        texts, labels = [], []
        for r in records:
            label = int(r[label_key])
            if relabel is not None:
                if label not in relabel:
                    continue
                label = relabel[label]
            if label < 0:
                continue  # unlabelled (hidden test labels)
            texts.append(_s(r[text_key]))
            labels.append(label)
        return _split(texts, labels)

    return convert


def text_pair(template: str) -> Callable[[list[dict]], Split]:
    """Two or more text fields joined by ``template`` (``str.format`` over the record's fields)."""

    def convert(records):
        texts, labels = [], []
        for r in records:
            if int(r["label"]) < 0:
                continue
            texts.append(template.format(**{k: _s(v) for k, v in r.items() if not isinstance(v, dict)}))
            labels.append(int(r["label"]))
        return _split(texts, labels)

    return convert


def choice_pairs(question: Callable[[dict], str], choices: Callable[[dict], list[str]],
                 answer: Callable[[dict], int]) -> Callable[[list[dict]], Split]:
    """Multiple choice as binary rows: ``question(r) + " " + choice``, labelled correct or not,
    grouped by record; records without an answer (``answer(r) < 0``) are dropped."""

    def convert(records):
        texts, labels, groups = [], [], []
        for g, r in enumerate(records):
            right = answer(r)
            if right < 0:
                continue
            q = question(r)
            for i, choice in enumerate(choices(r)):
                texts.append(f"{q} {choice}".strip())
                labels.append(int(i == right))
                groups.append(g)
        return _split(texts, labels, groups)

    return convert


def _winogrande(records):
    # The blank "_" in the sentence is filled with each option; label "1"/"2" is ClassLabel 0/1.
    return choice_pairs(
        lambda r: "", lambda r: [_s(r["sentence"]).replace("_", _s(r[f"option{i}"]), 1) for i in (1, 2)],
        lambda r: int(r["label"]),
    )(records)


def _arc_answer(r) -> int:
    keys = [int(k) for k in r["choices"]["label"]]
    return keys.index(int(r["answerKey"])) if int(r["answerKey"]) in keys else -1


@dataclasses.dataclass(frozen=True)
class CatalogTask:
    tfds_name: str
    train: str
    test: str
    class_names: tuple[str, ...]
    convert: Callable[[list[dict]], Split]
    module: str = ""  # the tensorflow_datasets module that registers an older builder


_BOOL = ("false", "true")
_MC = CHOICE_CLASSES

CATALOG: dict[str, CatalogTask] = {
    "super_glue/boolq": CatalogTask("super_glue/boolq", "train", "validation", _BOOL,
                                    text_pair("{question}? {passage}"), "tensorflow_datasets.text.super_glue"),
    "super_glue/wic": CatalogTask("super_glue/wic", "train", "validation", ("different", "same"),
                                  text_pair("{word}: {sentence1} / {sentence2}"), "tensorflow_datasets.text.super_glue"),
    "super_glue/multirc": CatalogTask("super_glue/multirc", "train", "validation", _BOOL,
                                      text_pair("{paragraph} Question: {question} Answer: {answer}"),
                                      "tensorflow_datasets.text.super_glue"),
    "glue/sst2": CatalogTask("glue/sst2", "train", "validation", ("negative", "positive"), text_label("sentence"),
                             "tensorflow_datasets.text.glue"),
    "imdb_reviews": CatalogTask("imdb_reviews", "train", "test", ("neg", "pos"), text_label("text")),
    "yelp_polarity_reviews": CatalogTask("yelp_polarity_reviews", "train", "test", ("negative", "positive"),
                                         text_label("text"), "tensorflow_datasets.text.yelp_polarity"),
    # polarity 0 = negative, 4 = positive; the 139 neutral (2) test tweets are dropped.
    "sentiment140": CatalogTask("sentiment140", "train", "test", ("negative", "positive"),
                                text_label("text", label_key="polarity", relabel={0: 0, 4: 1})),
    "paws_wiki": CatalogTask("paws_wiki", "train", "test", ("different", "paraphrase"),
                             text_pair("{sentence1} / {sentence2}")),
    "anli/r1": CatalogTask("anli/r1", "train", "test", ("entailment", "neutral", "contradiction"),
                           text_pair("{context} Hypothesis: {hypothesis}")),
    "cosmos_qa": CatalogTask(
        "cosmos_qa", "train", "validation", _MC,
        choice_pairs(lambda r: f"{_s(r['context'])} {_s(r['question'])}",
                     lambda r: [_s(r[f"answer{i}"]) for i in range(4)], lambda r: int(r["label"])),
        "tensorflow_datasets.question_answering.cosmos_qa"),
    "hellaswag": CatalogTask(
        "hellaswag", "train", "validation", _MC,
        choice_pairs(lambda r: _s(r["context"]), lambda r: [_s(e) for e in r["endings"]], lambda r: int(r["label"])),
        "tensorflow_datasets.text.hellaswag"),
    "piqa": CatalogTask(
        "piqa", "train", "validation", _MC,
        choice_pairs(lambda r: _s(r["goal"]), lambda r: [_s(r["sol1"]), _s(r["sol2"])], lambda r: int(r["label"]))),
    "openbookqa": CatalogTask(
        "openbookqa", "train", "test", _MC,
        choice_pairs(lambda r: _s(r["question"]["stem"]), lambda r: [_s(r["question"][f"choice_{c}"]) for c in "ABCD"],
                     lambda r: int(r["answerKey"]))),
    "ai2_arc/ARC-Challenge": CatalogTask(
        "ai2_arc/ARC-Challenge", "train", "test", _MC,
        choice_pairs(lambda r: _s(r["question"]), lambda r: [_s(t) for t in r["choices"]["text"]], _arc_answer)),
    "ai2_arc/ARC-Easy": CatalogTask(
        "ai2_arc/ARC-Easy", "train", "test", _MC,
        choice_pairs(lambda r: _s(r["question"]), lambda r: [_s(t) for t in r["choices"]["text"]], _arc_answer)),
    "winogrande": CatalogTask("winogrande", "train_xl", "validation", _MC, _winogrande,
                              "tensorflow_datasets.text.winogrande"),
}
CATALOG["anli/r2"] = dataclasses.replace(CATALOG["anli/r1"], tfds_name="anli/r2")
CATALOG["anli/r3"] = dataclasses.replace(CATALOG["anli/r1"], tfds_name="anli/r3")

# Kept for callers of the first version of this module: task name -> (TFDS name, train, test).
ALIASES: dict[str, tuple[str, str, str]] = {k: (v.tfds_name, v.train, v.test) for k, v in CATALOG.items()}

_TEXT_KEYS = ("text", "sentence", "review", "content", "document")
_BUILDER_KWARGS = {"file_format": "array_record"}


def _prepared(task: str, tfds_name: str, data_dir: pathlib.Path, module: str = ""):
    if module:
        importlib.import_module(module)  # older builders register only when their module is imported
    try:
        builder = tfds.builder(tfds_name, data_dir=str(data_dir), **_BUILDER_KWARGS)
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(f"task {task!r}: TFDS has no dataset {tfds_name!r}") from None
    with tfds_output_to_log(f"tfds-{tfds_name.replace('/', '_')}"):
        try:
            builder.download_and_prepare()  # split names are known only once prepared
        except OSError as exc:  # requests' and urllib3's connection errors are OSErrors
            raise AssetError(_offline_message(task, tfds_name, data_dir, exc)) from None
    return builder


def _records(tfds_name: str, split: str, data_dir: pathlib.Path) -> list[dict]:
    source = tfds.data_source(tfds_name, split=split, data_dir=str(data_dir), builder_kwargs=_BUILDER_KWARGS)
    return source.__getitems__(range(len(source))) if len(source) else []


def load(task: str, tfds_name: str, data_dir: pathlib.Path) -> Task:
    """Prepare (downloading if needed) and read a TFDS catalog dataset."""
    entry = CATALOG.get(task) or CATALOG.get(tfds_name)
    builder = _prepared(task, tfds_name, data_dir, entry.module if entry else "")
    if entry is not None:
        parts = [entry.convert(_records(tfds_name, s, data_dir)) for s in (entry.train, entry.test)]
        return Task(name=task, kind="text", num_classes=len(entry.class_names), class_names=entry.class_names,
                    train=parts[0], test=parts[1], fingerprint=f"tfds:{tfds_name}:{builder.info.version}")
    return _load_generic(task, tfds_name, builder, data_dir)


def _load_generic(task: str, tfds_name: str, builder, data_dir: pathlib.Path) -> Task:
    splits = builder.info.splits
    train_split, test_split = "train", "test" if "test" in splits else "validation"
    if train_split not in splits or test_split not in splits:
        raise ValueError(f"TFDS dataset {tfds_name!r} lacks a {train_split!r} or {test_split!r} split")
    features = builder.info.features
    label = features["label"] if "label" in features else None  # noqa: SIM401 (no .get)
    if not isinstance(label, tfds.features.ClassLabel):
        raise ValueError(f"TFDS dataset {tfds_name!r} has no ClassLabel 'label' feature")
    text_key = next(
        (k for k in _TEXT_KEYS if k in features and isinstance(features[k], tfds.features.Text)),
        None,
    )
    if text_key is not None:
        kind, key = "text", text_key
    elif "image" in features:
        kind, key = "image", "image"
    else:
        raise ValueError(f"TFDS dataset {tfds_name!r} has no text or image feature to classify")
    sources = tfds.data_source(
        tfds_name, split=[train_split, test_split], data_dir=str(data_dir), builder_kwargs=_BUILDER_KWARGS
    )
    parts = []
    for source in sources:
        split = read_split(source, kind, key)
        # Unlabelled rows (label -1) cannot be scored.
        parts.append(take(split, np.flatnonzero(split["label"] >= 0)))
    return Task(
        name=task,
        kind=kind,
        num_classes=label.num_classes,
        class_names=tuple(label.names),
        train=parts[0],
        test=parts[1],
        fingerprint=f"tfds:{tfds_name}:{builder.info.version}",
    )


def _offline_message(task: str, tfds_name: str, data_dir: pathlib.Path, exc: OSError) -> str:
    """One line: the task, what failed, and how to provide the data without network access."""
    host = re.search(r"host='([^']+)'", str(exc))
    what = f"cannot reach {host.group(1)}" if host else f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    return (
        f"data.task={task}: downloading TFDS dataset {tfds_name!r} failed ({what}). Offline: on a machine with "
        f"network run `tfds build {tfds_name} --file_format array_record --data_dir DIR` and copy DIR's contents "
        f"into {data_dir} (W2SJAX_CACHE moves it); datasets with a manual download read their files from "
        f"{data_dir / 'downloads' / 'manual'} (TFDS manual_dir)"
    )
