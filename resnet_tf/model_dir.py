"""The model dir of `resnet-tf train`: its layout, its crash-safe training state, and the
questions other modules ask of it.

    config.yaml          the resolved config (a re-run must use the same one)
    class_names.txt      one name per class
    model.keras          the model after the last completed run
    checkpoints/last.keras, checkpoints/best.keras (best val_accuracy)
    backup/state.json    the committed training state: epochs done, and the weights file
    backup/epoch-N.weights.h5   weights and optimizer after N epochs (the newest two are kept)
    logs/                TensorBoard
    training_log.csv     one row per completed epoch, in order
    metrics.json         val_accuracy, val_loss, epochs, replicas, train_seconds, ...

Every file is written whole or not at all (a temporary file, then one rename). At the end of
each epoch `EpochEnd` writes, in this order: the log row, metrics.json, last.keras, best.keras,
the backup weights, and last `backup/state.json`, which commits the epoch. A process killed at
any moment therefore leaves either the committed epoch N or N + 1; a re-run restores the
committed state and drops any log row past it (`ModelDir.restore`), so the log, metrics.json and
the weights agree, and at most the epoch in flight is lost. A backup file that cannot be read
falls back to the one before it.

Keras' `BackupAndRestore` writes its weights and metadata in place (a kill mid-write leaves a
torn file that strands the run, and `double_checkpoint` falls back only on `OSError`), and
`CSVLogger` appends without knowing what was restored: hence this module. Its `restore` gives
`model.fit` an explicit `initial_epoch`, and the multi-worker loop uses the same callback.

This module owns those paths; `training`, `export` and `evaluate` ask it rather than building
paths themselves.
"""

from __future__ import annotations

import csv
import io
import json
import os

from resnet_tf.utils import atomic_path, write_json, write_text

KEPT_BACKUPS = 2
TEMPORARY_SUFFIXES = (".tmp", ".keras", ".weights.h5")  # what atomic_path names them


def best_val_accuracy(rows):
    """The best `val_accuracy` of log rows, or None (no validation data)."""
    return max((row["val_accuracy"] for row in rows if "val_accuracy" in row), default=None)


def is_model_dir(path: str) -> bool:
    """Whether `path` looks like a `resnet-tf train` model dir (its config or checkpoints)."""
    return os.path.isfile(os.path.join(path, "config.yaml")) or os.path.isdir(
        os.path.join(path, "checkpoints"))


class ModelDir:
    """The paths of a model dir and its records (see the module docstring)."""

    def __init__(self, root: str):
        self.root = root
        self.config = os.path.join(root, "config.yaml")
        self.class_names = os.path.join(root, "class_names.txt")
        self.model = os.path.join(root, "model.keras")
        self.checkpoints = os.path.join(root, "checkpoints")
        self.last = os.path.join(self.checkpoints, "last.keras")
        self.best = os.path.join(self.checkpoints, "best.keras")
        self.backup = os.path.join(root, "backup")
        self.state = os.path.join(self.backup, "state.json")
        self.logs = os.path.join(root, "logs")
        self.csv = os.path.join(root, "training_log.csv")
        self.metrics = os.path.join(root, "metrics.json")

    def worker(self, name: str) -> "ModelDir":
        """The dir a non-chief worker of a multi-worker run writes its copy of the state to."""
        return ModelDir(os.path.join(self.root, "workers", name))

    # ----------------------------------------------------------------------------------------
    # Records

    def completed_epochs(self) -> list[dict]:
        """The rows of the CSV log: one per completed epoch, in order. A torn last line (a
        process killed while writing an older, non-atomic log) is left out."""
        if not os.path.isfile(self.csv):
            return []
        with open(self.csv) as f:
            text = f.read()
        rows = []
        for row in csv.DictReader(io.StringIO(text)):
            try:
                values = {k: float(v) for k, v in row.items() if k and v not in (None, "")}
            except ValueError:
                break
            if "epoch" not in values or len(values) != len([k for k in row if k]):
                break
            rows.append(values)
        return rows

    def best_val_accuracy(self):
        """The best `val_accuracy` of the completed epochs, or None."""
        return best_val_accuracy(self.completed_epochs())

    def read_metrics(self) -> dict:
        if not os.path.isfile(self.metrics):
            return {}
        try:
            with open(self.metrics) as f:
                return json.load(f)
        except ValueError:  # written by an older, non-atomic version and torn
            return {}

    def write_log(self, rows: list[dict]) -> None:
        """Rewrites the CSV log with `rows` (atomically)."""
        names = []
        for row in rows:
            names += [k for k in row if k not in names]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=names, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (int(v) if k == "epoch" else v) for k, v in row.items()})
        write_text(self.csv, out.getvalue())

    # ----------------------------------------------------------------------------------------
    # Training state

    def read_state(self):
        """The committed state `{"epoch": N, "weights": [[newest file, its epochs], ...]}`, or
        None. A backup written by Keras' `BackupAndRestore` (earlier resnet_tf) is read too."""
        legacy = os.path.join(self.backup, "training_metadata.json")
        if not os.path.isfile(self.state) and os.path.isfile(legacy):
            with open(legacy) as f:
                epoch = json.load(f)["epoch"]
            return {"epoch": epoch, "weights": [["latest.weights.h5", epoch]]}
        if not os.path.isfile(self.state):
            return None
        try:
            with open(self.state) as f:
                state = json.load(f)
            int(state["epoch"]), list(state["weights"])
        except (OSError, ValueError, KeyError, TypeError):
            raise ValueError(f"The training state {self.state!r} is unreadable; remove the "
                             f"{self.backup!r} dir to restart training from epoch 1, or use a "
                             "new --model-dir") from None
        return state

    def restore(self, model, reconcile: bool = True) -> int:
        """Loads the newest readable backup (weights and optimizer state) into `model` and
        returns the number of epochs it completed (0: nothing to restore). With `reconcile`,
        log rows past it (written before a kill that came ahead of the commit) are dropped."""
        state = self.read_state()
        epochs = 0 if state is None else self._load_backup(model, state)
        if reconcile:
            self._remove_stale_temporaries()
        rows = self.completed_epochs()
        kept = [row for row in rows if row["epoch"] < epochs]
        if reconcile and kept != rows:
            self.write_log(kept)
        return epochs

    def _remove_stale_temporaries(self):
        """Temporary files of writes a killed process never finished (`utils.atomic_path`)."""
        for directory in (self.root, self.checkpoints, self.backup):
            if not os.path.isdir(directory):
                continue
            for name in os.listdir(directory):
                if name.startswith(".") and name.endswith(TEMPORARY_SUFFIXES):
                    os.remove(os.path.join(directory, name))

    def _load_backup(self, model, state) -> int:
        failures = []
        for name, epochs in state["weights"]:
            path = os.path.join(self.backup, name)
            try:
                if model.optimizer is not None and not model.optimizer.built:
                    model.optimizer.build(model.trainable_variables)
                model.load_weights(path)
                if failures:
                    print(f"resnet-tf: the newest backup was unreadable ({failures[0]}); "
                          f"resuming from {path} ({epochs} epochs)")
                return int(epochs)
            except Exception as error:  # noqa: BLE001  (a torn file fails in many ways)
                failures.append(f"{path}: {type(error).__name__}")
        raise ValueError(f"No readable backup in {self.backup!r} ({'; '.join(failures)}); "
                         f"remove that dir to restart training from epoch 1, or use a new "
                         "--model-dir")

    def commit(self, model, epochs: int) -> None:
        """Saves the weights and optimizer after `epochs` epochs, then commits them in
        state.json; older backups beyond the newest `KEPT_BACKUPS` are removed."""
        os.makedirs(self.backup, exist_ok=True)
        name = f"epoch-{epochs}.weights.h5"
        with atomic_path(os.path.join(self.backup, name), suffix=".weights.h5") as temporary:
            model.save_weights(temporary)
        previous = self.read_state() if os.path.isfile(self.state) else None
        weights = [[name, epochs]] + [w for w in (previous or {}).get("weights", [])
                                      if w[0] != name]
        write_json({"epoch": epochs, "weights": weights[:KEPT_BACKUPS]}, self.state)
        for stale, _ in weights[KEPT_BACKUPS:]:
            try:
                os.remove(os.path.join(self.backup, stale))
            except FileNotFoundError:
                pass

    def save_model(self, model, path: str) -> None:
        """`model.save(path)`, whole or not at all."""
        with atomic_path(path, suffix=".keras") as temporary:
            model.save(temporary)


def epoch_end_callback(paths: ModelDir, start_epoch: int, metrics_fn=None):
    """`EpochEnd`: the Keras callback that writes a model dir's per-epoch state (module
    docstring), for `model.fit` and the multi-worker loop alike."""
    import keras

    class EpochEnd(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.rows = [row for row in paths.completed_epochs() if row["epoch"] < start_epoch]

        def on_epoch_end(self, epoch, logs=None):
            row = {"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()
                                       if k != "learning_rate"}}
            best = best_val_accuracy(self.rows)
            self.rows.append(row)
            paths.write_log(self.rows)
            if metrics_fn is not None:
                write_json(metrics_fn(self.rows), paths.metrics)
            paths.save_model(self.model, paths.last)
            if "val_accuracy" in row and (best is None or row["val_accuracy"] > best):
                paths.save_model(self.model, paths.best)
            paths.commit(self.model, epoch + 1)

    return EpochEnd()
