"""Validation accuracies of finished runs' supervisors and ceilings, against the ground truth.

A setting (a readout, a learning rate) must be chosen without looking at the test split. Every
stage saves its predictions on the validation rows (carved from the training split), so this
reads them back, rebuilds the seed's splits from the run's config, and scores them:

    python benchmarks/val_accuracy.py RUN_DIR [RUN_DIR ...]

prints one line per run and seed: task, student, readout, validation size and majority rate,
the supervisor's and the ceiling's validation accuracy (and, after them, the test accuracies the
run reported, for the record once a choice is made).
"""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np


def val_accuracies(run_dir: pathlib.Path) -> list[dict]:
    from w2sjax import data
    from w2sjax.runner import checkpoint
    from w2sjax.runner.stage_keys import StageKey

    results = json.loads((run_dir / "results.json").read_text())
    d = results["config"]["data"]
    task = data.load_task(d["task"], text_field=d.get("text_field", "text"), label_field=d.get("label_field", "label"),
                          label_map=tuple(d.get("label_map", ())))
    out, seen = [], set()
    for row in results["runs"]:
        key = (row["strong_model"], row["seed"])
        if key in seen:  # one ceiling per student and seed, whatever the losses
            continue
        seen.add(key)
        sp = data.make_splits(task, seed=row["seed"], n_train=d.get("n_train"), n_val=d.get("n_val"),
                              n_test=d.get("n_test"), balance=d.get("balance", False))
        shape = {"b": len(sp.strong["label"]), "val": len(sp.val["label"]), "test": len(sp.test["label"])}
        target = {k: np.zeros((n, task.num_classes), np.float32) for k, n in shape.items()}
        acc = {}
        for role in ("weak", "ceiling"):
            preds, _ = checkpoint.restore(run_dir / "checkpoints", StageKey.parse(row["stages"][role]).outputs_name,
                                          target)
            test = float(np.mean(np.argmax(np.asarray(preds["test"]), -1) == sp.test["label"]))
            if abs(test - row[f"{role}_acc"]) > 1e-5:  # not the splits the run scored
                raise ValueError(f"{run_dir}: rebuilt splits give {role} test acc {test}, the run says {row[f'{role}_acc']}")
            acc[role] = float(np.mean(np.argmax(np.asarray(preds["val"]), -1) == sp.val["label"]))
        counts = np.bincount(sp.val["label"], minlength=task.num_classes)
        out.append({"run": str(run_dir), "task": row["task"], "strong_model": row["strong_model"], "seed": row["seed"],
                    "readout": results["config"]["train"].get("readout", "linear"),
                    "n_val": int(len(sp.val["label"])), "val_majority": round(float(counts.max() / counts.sum()), 4),
                    "weak_val_acc": round(acc["weak"], 4), "ceiling_val_acc": round(acc["ceiling"], 4),
                    "weak_test_acc": row["weak_acc"], "ceiling_test_acc": row["ceiling_acc"],
                    "test_majority": row.get("majority_acc")})
    return out


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        return 2
    for run in argv:
        for line in val_accuracies(pathlib.Path(run)):
            print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
