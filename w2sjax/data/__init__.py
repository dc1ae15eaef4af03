"""Tasks and splits for weak-to-strong experiments.

``load_task(name)`` returns a :class:`Task` (numpy train/test splits) for a
packaged task, a TFDS catalog dataset or a user's CSV/JSONL file;
``make_splits(task, seed=...)`` cuts it into weak / strong / val / test parts.
Importing this package imports tensorflow_datasets (without TensorFlow).
"""

from w2sjax.data.registry import known_tasks, load_task
from w2sjax.data.splits import make_splits
from w2sjax.data.task import Splits, Task, take

__all__ = ["Splits", "Task", "known_tasks", "load_task", "make_splits", "take"]
