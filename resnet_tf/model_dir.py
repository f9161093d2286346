"""The model dir of `resnet-tf train`: its layout, and the questions other modules ask of it.

    config.yaml          the resolved config (a re-run must use the same one)
    class_names.txt      one name per class
    model.keras          the model after the last completed run
    checkpoints/last.keras, checkpoints/best.keras (best val_accuracy)
    backup/              BackupAndRestore: re-running continues where training stopped
    logs/                TensorBoard
    training_log.csv     one row per epoch, across runs
    metrics.json         val_accuracy, val_loss, epochs, replicas, train_seconds, ...

This module owns those paths; `training`, `export` and `evaluate` ask it rather than building
paths themselves. Standard library only.
"""

from __future__ import annotations

import csv
import json
import os


def is_model_dir(path: str) -> bool:
    """Whether `path` looks like a `resnet-tf train` model dir (its config or checkpoints)."""
    return os.path.isfile(os.path.join(path, "config.yaml")) or os.path.isdir(
        os.path.join(path, "checkpoints"))


class ModelDir:
    """The paths of a model dir (see the module docstring)."""

    def __init__(self, root: str):
        self.root = root
        self.config = os.path.join(root, "config.yaml")
        self.class_names = os.path.join(root, "class_names.txt")
        self.model = os.path.join(root, "model.keras")
        self.checkpoints = os.path.join(root, "checkpoints")
        self.last = os.path.join(self.checkpoints, "last.keras")
        self.best = os.path.join(self.checkpoints, "best.keras")
        self.backup = os.path.join(root, "backup")
        self.logs = os.path.join(root, "logs")
        self.csv = os.path.join(root, "training_log.csv")
        self.metrics = os.path.join(root, "metrics.json")

    def completed_epochs(self) -> list[dict]:
        """The rows of the CSV log: one per completed epoch, over all runs."""
        if not os.path.isfile(self.csv):
            return []
        with open(self.csv) as f:
            return [{k: float(v) for k, v in row.items() if v not in (None, "")}
                    for row in csv.DictReader(f)]

    def best_val_accuracy(self):
        """The best `val_accuracy` of the completed epochs, or None."""
        return max((row["val_accuracy"] for row in self.completed_epochs()
                    if "val_accuracy" in row), default=None)

    def read_metrics(self) -> dict:
        if not os.path.isfile(self.metrics):
            return {}
        with open(self.metrics) as f:
            return json.load(f)
