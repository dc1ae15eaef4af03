"""A user's own labelled file as a task: ``csv:PATH`` or ``jsonl:PATH``.

Columns (CSV header, or JSON keys):

- ``label``: the values are read, not their spelling: when every label is a whole number
  (``1``, ``1.0``, ``1e0``) the classes are the integers ``0..C-1``; otherwise each distinct
  string is a class, in sorted order. An empty, ``nan`` or infinite label, or a fractional one
  among numbers (``1.5``), is an error naming its row, unless ``label_map`` (``data.label_map``)
  maps the labels explicitly: ``("0:neg", "1:pos", "1.0:pos", "nan:")`` maps each label's text to
  a class, and an empty class drops the row; any label not in the map is then an error.
- ``text``: makes a text task. Without it every other column (except
  ``split``) must be numeric and becomes a tabular feature; a JSON line may
  instead hold the features as a list under ``"x"``.
- ``split`` (optional): ``train`` or ``test`` per row. Without it a fixed,
  stratified 20% of the rows (chosen by a hash of the row number) is the test
  split.

The file is read afresh on every call (no cache, so an edited file is always
seen); ``Task.fingerprint`` is a hash of its bytes for downstream caches. A
malformed file raises ``ValueError`` with one line naming the file and row.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import pathlib
import re

import numpy as np

from w2sjax.data.splits import holdout_mask
from w2sjax.data.task import Task

_INT = re.compile(r"[+-]?\d+")
_SPLITS = ("train", "test")


def load(spec: str, *, text_field: str = "text", label_field: str = "label",
         label_map: tuple[str, ...] | dict[str, str] = ()) -> Task:
    """Read ``csv:PATH`` or ``jsonl:PATH`` into a Task named ``spec``.

    ``text_field`` and ``label_field`` name the columns holding the text and the label
    (``data.text_field`` / ``data.label_field`` in a config); ``label_map`` maps label texts to
    classes (``data.label_map``: ``"RAW:CLASS"`` items, or a dict), an empty class dropping the row.
    """
    mapping = parse_label_map(label_map)
    fmt, _, path_str = spec.partition(":")
    path = pathlib.Path(path_str).expanduser()
    if fmt not in ("csv", "jsonl") or not path_str:
        raise ValueError(f"user task must be csv:PATH or jsonl:PATH, got {spec!r}")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e.strerror})") from None
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ValueError(f"{path}: line {line}: not UTF-8 text") from None
    rows = _csv_rows(content, path) if fmt == "csv" else _jsonl_rows(content, path)
    rows = _rename(rows, text_field, label_field)
    task = _to_task(spec, path, rows, hashlib.sha256(raw).hexdigest()[:16], mapping)
    if (text_field, label_field) != ("text", "label"):  # other columns, other data: another fingerprint
        task = dataclasses.replace(task, fingerprint=f"{task.fingerprint}:{text_field}:{label_field}")
    if mapping is not None:  # other classes, other data
        shown = json.dumps(sorted(mapping.items()), separators=(",", ":"))
        task = dataclasses.replace(task, fingerprint=f"{task.fingerprint}:map{hashlib.sha256(shown.encode()).hexdigest()[:12]}")
    return task


def parse_label_map(items: tuple[str, ...] | list[str] | dict[str, str]) -> dict[str, str] | None:
    """``("RAW:CLASS", ...)`` (the form ``--set data.label_map=0:neg,1:pos`` gives) as a dict,
    or None for no map. The last ``:`` splits, so a raw label may hold one."""
    if isinstance(items, dict):
        return {str(k).strip(): str(v).strip() for k, v in items.items()} or None
    mapping: dict[str, str] = {}
    for item in items:
        raw, sep, target = item.rpartition(":")
        if not sep:
            raise ValueError(f"data.label_map: expected RAW:CLASS items (e.g. 0:neg,1.0:pos,nan:), got {item!r}")
        raw, target = raw.strip(), target.strip()
        if mapping.get(raw, target) != target:
            raise ValueError(f"data.label_map: label {raw!r} is mapped twice ({mapping[raw]!r} and {target!r})")
        mapping[raw] = target
    return mapping or None


def class_counts(task: Task) -> str:
    """``"0: 412, 1: 188"``: each class with its examples in the train and test splits together."""
    counts = np.bincount(np.concatenate([task.train["label"], task.test["label"]]), minlength=task.num_classes)
    return ", ".join(f"{name}: {int(n)}" for name, n in zip(task.class_names, counts, strict=True))


def _rename(rows: list["_Row"], text_field: str, label_field: str) -> list["_Row"]:
    """Rows with the chosen columns under the names the reader expects, ``text`` and ``label``."""
    if not rows or (text_field, label_field) == ("text", "label"):
        return rows
    found = ", ".join(rows[0].values)
    if label_field not in rows[0].values:
        raise ValueError(f"{rows[0].where}: no {label_field!r} column; found columns {found} (pick one with data.label_field)")
    if text_field != "text" and text_field not in rows[0].values:
        raise ValueError(f"{rows[0].where}: no {text_field!r} column (data.text_field); found columns {found}")
    mapping = {label_field: "label", text_field: "text"}
    for row in rows:
        row.values = {mapping.get(k, k): v for k, v in row.values.items()
                      if k not in ("text", "label") or k in mapping}
    return rows


class _Row:
    __slots__ = ("values", "where")

    def __init__(self, values: dict, where: str):
        self.values, self.where = values, where


def _csv_rows(content: str, path: pathlib.Path) -> list[_Row]:
    reader = csv.DictReader(io.StringIO(content, newline=""), restkey="\0extra")
    if not reader.fieldnames:
        raise ValueError(f"{path}: empty file, expected a header row")
    fields = [f.strip() for f in reader.fieldnames]
    if len(set(fields)) != len(fields):
        raise ValueError(f"{path}: row 0 (line 1): duplicate column names in the header")
    reader.fieldnames = fields
    rows = []
    for n, record in enumerate(reader, start=1):
        where = f"{path}: row {n} (line {reader.line_num})"
        if "\0extra" in record:
            raise ValueError(f"{where}: more fields than the header has")
        if any(v is None for v in record.values()):
            raise ValueError(f"{where}: fewer fields than the header has")
        if not any(v.strip() for v in record.values()):
            continue  # a blank line
        rows.append(_Row(record, where))
    return rows


def _jsonl_rows(content: str, path: pathlib.Path) -> list[_Row]:
    rows = []
    for line_no, line in enumerate(content.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}: row {len(rows) + 1} (line {line_no})"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: bad JSON ({e.msg})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{where}: expected a JSON object")
        rows.append(_Row(record, where))
    return rows


def _to_task(spec: str, path: pathlib.Path, rows: list[_Row], digest: str, mapping: dict[str, str] | None) -> Task:
    if not rows:
        raise ValueError(f"{path}: no data rows")
    first = rows[0].values
    found = f"found columns {', '.join(first)}"
    if "label" not in first:
        raise ValueError(f"{rows[0].where}: no 'label' column; {found} (pick one with data.label_field)")
    kind = "text" if "text" in first else "tabular"
    feature_keys = [k for k in first if k not in ("label", "split", "text")]
    if kind == "tabular" and not feature_keys:
        raise ValueError(f"{rows[0].where}: needs a 'text' column or numeric feature columns; {found}")
    if kind == "tabular":
        _check_numeric(first, feature_keys, rows[0].where, found)
    has_split = "split" in first

    labels_raw, texts, feats, is_test = _columns(rows, kind, feature_keys, has_split, mapped=mapping is not None)

    class_names, labels, keep = _encode_labels(labels_raw, rows, path, mapping)
    if not keep.all():  # rows whose label maps to no class
        rows = [r for r, k in zip(rows, keep, strict=True) if k]
        texts = [t for t, k in zip(texts, keep, strict=True) if k] if kind == "text" else texts
        feats = [f for f, k in zip(feats, keep, strict=True) if k] if kind != "text" else feats
        is_test = [t for t, k in zip(is_test, keep, strict=True) if k] if has_split else is_test
    if has_split:
        test = np.array(is_test, dtype=bool)
    else:
        test = holdout_mask(labels, frac=0.2, salt="user")
    if test.all() or not test.any():
        raise ValueError(f"{path}: needs rows in both the train and the test split")
    if kind == "text":
        data = np.empty(len(texts), dtype=object)
        data[:] = texts
        key = "text"
    else:
        widths = {len(f) for f in feats}
        if len(widths) > 1:
            bad = next(r for r, f in zip(rows, feats, strict=True) if len(f) != len(feats[0]))
            raise ValueError(f"{bad.where}: {len(feats[0])} features expected")
        data, key = np.asarray(feats, dtype=np.float32), "x"
    return Task(
        name=spec,
        kind=kind,
        num_classes=len(class_names),
        class_names=class_names,
        train={key: data[~test], "label": labels[~test]},
        test={key: data[test], "label": labels[test]},
        fingerprint=f"{path.name}:sha256:{digest}",
    )


def _columns(rows: list[_Row], kind: str, feature_keys: list[str], has_split: bool, *, mapped: bool):
    """``(labels, texts, features, is_test)`` read from every row, each checked: labels as text,
    texts (text tasks) or feature vectors (tabular ones), and the split column when there is one."""
    required = ["label"] + ["text"] * (kind == "text") + ["split"] * has_split
    labels_raw, texts, feats, is_test = [], [], [], []
    for row in rows:
        v = row.values
        for k in required:
            if k not in v:
                raise ValueError(f"{row.where}: missing {k!r}")
        labels_raw.append(_label_text(v["label"], row.where, mapped=mapped))
        if kind == "text":
            text = v["text"]
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"{row.where}: empty or non-string text")
            texts.append(text)
        else:
            feats.append(_features(v, feature_keys, row.where))
        if has_split:
            split = v["split"].strip().lower() if isinstance(v["split"], str) else v["split"]
            if split not in _SPLITS:
                raise ValueError(
                    f"{row.where}: split must be 'train' or 'test', got {v['split']!r}"
                )
            is_test.append(split == "test")
    return labels_raw, texts, feats, is_test


def _label_text(value, where: str, *, mapped: bool) -> str:
    """A label as text: CSV gives strings, JSON strings or numbers (a JSON ``1.0`` reads ``1.0``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{where}: bad label {value!r} (use an integer or a class name)")
    text = value.strip() if isinstance(value, str) else repr(value)
    if not text and not mapped:
        raise ValueError(f"{where}: empty label (fix the row, or map labels with data.label_map)")
    return text


def _number(text: str) -> float | None:
    """The label's numeric value, or None when it is not a number."""
    if _INT.fullmatch(text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return None


def _encode_labels(
    raw: list[str], rows: list[_Row], path: pathlib.Path, mapping: dict[str, str] | None
) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """Class names, each kept row's class id (dropped rows have none), and which rows are kept (a
    map may drop some).

    Labels are values: ``1`` and ``1.0`` are one class. Whole numbers are class ids; any other
    text makes every label a class name."""
    keep = np.ones(len(raw), bool)
    if mapping is not None:
        for i, (text, row) in enumerate(zip(raw, rows, strict=True)):
            if text not in mapping:
                known = ", ".join(repr(k) for k in sorted(mapping))
                raise ValueError(f"{row.where}: label {text!r} is not in data.label_map (it maps {known})")
            keep[i] = mapping[text] != ""
        raw = [mapping[t] for t in raw]
    values = [_number(t) for t in raw]
    for text, value, row, kept in zip(raw, values, rows, keep, strict=True):
        if kept and (text.lower().lstrip("+-") in ("nan", "inf", "infinity")
                     or (value is not None and not math.isfinite(value))):
            raise ValueError(f"{row.where}: label {text!r} is missing or not a number "
                             "(fix the row, or map labels with data.label_map)")
    kept_rows = [(t, v, r) for t, v, r, k in zip(raw, values, rows, keep, strict=True) if k]
    if not kept_rows:
        raise ValueError(f"{path}: data.label_map drops every row")
    if all(v is not None for _, v, _ in kept_rows):
        ids = []
        for text, value, row in kept_rows:
            if value != int(value):
                raise ValueError(f"{row.where}: label {text!r} is not a whole number; integer labels are "
                                 "class ids 0..C-1 (or map labels with data.label_map)")
            if value < 0:
                raise ValueError(f"{row.where}: bad label {text} (integer labels must be 0..C-1)")
            if value >= len(kept_rows):
                raise ValueError(f"{row.where}: label {text} is larger than the number of rows; integer labels "
                                 "are class ids 0..C-1 (or map labels with data.label_map)")
            ids.append(int(value))
        names = tuple(str(c) for c in range(max(ids) + 1))
    else:
        texts = [t for t, _, _ in kept_rows]
        names = tuple(sorted(set(texts)))
        lookup = {n: i for i, n in enumerate(names)}
        ids = [lookup[t] for t in texts]
    if len(set(ids)) < 2:
        raise ValueError(f"{path}: needs at least two classes, found only {kept_rows[0][0]!r}")
    return names, np.asarray(ids, dtype=np.int32), keep


def _check_numeric(values: dict, keys: list[str], where: str, found: str) -> None:
    """Without a text column every feature must be a number: a column of words most likely is the
    text under another name."""
    if keys == ["x"] and isinstance(values.get("x"), list):
        return
    for k in keys:
        v = values[k]
        try:
            float(v.strip() if isinstance(v, str) else v)
        except (TypeError, ValueError, AttributeError):
            raise ValueError(
                f"{where}: no 'text' column; {found} (column {k!r} is not a number: set data.text_field={k} "
                "if it holds the text)"
            ) from None


def _features(values: dict, keys: list[str], where: str) -> list[float]:
    if keys == ["x"] and isinstance(values.get("x"), list):
        items = [("x", v) for v in values["x"]]
    else:
        items = []
        for k in keys:
            if k not in values:
                raise ValueError(f"{where}: missing {k!r}")
            items.append((k, values[k]))
    out = []
    for k, v in items:
        try:
            if isinstance(v, bool):
                raise ValueError
            f = float(v.strip() if isinstance(v, str) else v)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: column {k!r} is not a number: {v!r}") from None
        if not math.isfinite(f):
            raise ValueError(f"{where}: column {k!r} is not finite: {v!r}")
        out.append(f)
    return out
