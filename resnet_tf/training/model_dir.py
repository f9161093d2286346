"""The model dir of `resnet-tf train`: its layout, its crash-safe training state, the record of
its data, and the questions other modules ask of it.

    data.json            the run's data record (written first: it marks a dir as a model dir)
    files/train.txt, files/val.txt   image folders: the files of each split ("label<TAB>path")
    init.json            what a fine-tune started from (the file and its SHA-256), so that a
                         re-run before the first committed epoch starts from the same weights
    config.yaml          the resolved config (a re-run must use the same one)
    class_names.txt      one name per class
    model.keras          the model after the last completed run
    checkpoints/last.keras, checkpoints/best.keras (best val_accuracy)
    backup/state.json    the committed training state: epochs done, and the weights files
    backup/epoch-N.weights.h5   weights and optimizer after N epochs (the newest two are kept)
    logs/                TensorBoard
    training_log.csv     one row per completed epoch, in order
    metrics.json         val_accuracy, val_loss, epochs, replicas, train_seconds, ...

A new run starts only in an absent or empty dir; a run resumes only in a dir this module wrote
(recognised by its data.json); anything else is refused before a file is touched.

Every file is written whole or not at all (a temporary file, then one rename). At the end of
each epoch `training.EpochEnd` writes, in this order: the log row, metrics.json, last.keras and
best.keras *staged* beside their places, the backup weights, `backup/state.json`, which commits
the epoch, and then the staged checkpoints are moved into place. A process killed at any moment
therefore leaves either the committed epoch N or N + 1; a re-run restores the committed state,
puts the committed epoch's staged checkpoints in place, removes those of an epoch never
committed, and drops any log row past it (`ModelDir.restore`), so the log, metrics.json, the
weights and the checkpoints agree, and at most the epoch in flight is lost. The newest
*readable* state is the one restored: a torn weights file falls back to the one before it, and
a torn state.json to the newest readable weights file, so no single torn file strands a run
(the checkpoints of an epoch rolled back so are rewritten from the restored weights, or
removed).

Keras' `BackupAndRestore` writes its weights and metadata in place (a kill mid-write leaves a
torn file, and `double_checkpoint` falls back only on `OSError`), and `CSVLogger` appends
without knowing what was restored: hence this module. `restore` gives `model.fit` an explicit
`initial_epoch`, and the multi-worker loop uses the same callback.

The standard library, numpy and (to check backups) h5py: no Keras at import, no TensorFlow.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sys
import zipfile

import numpy as np

from resnet_tf.errors import MissingPathError, UserError
from resnet_tf.utils import atomic_path, read_json, write_json, write_text

# The checkpoints a model dir offers (`--checkpoint`): model.keras (final), checkpoints/
# last.keras and checkpoints/best.keras.
CHECKPOINTS = ("final", "last", "best")
KEPT_BACKUPS = 2
# What atomic_path names its temporary files, and checkpoints staged for an epoch that was
# never committed.
TEMPORARY_SUFFIXES = (".tmp", ".keras", ".weights.h5", ".staged")
WRITTEN_BY = "resnet-tf train"
_BACKUP_NAME = re.compile(r"^epoch-(\d+)\.weights\.h5$")


def best_val_accuracy(rows):
    """The best `val_accuracy` of log rows, or None (no validation data)."""
    return max((row["val_accuracy"] for row in rows if "val_accuracy" in row), default=None)


def is_model_dir(path: str) -> bool:
    """Whether `path` is a dir `resnet-tf train` wrote (recognised by its data.json)."""
    record = os.path.join(path, "data.json")
    if not os.path.isfile(record):
        return False
    try:
        with open(record) as f:
            return json.load(f).get("written_by") == WRITTEN_BY
    except (OSError, ValueError, AttributeError):
        return False


def readable_keras_file(path: str) -> bool:
    """Whether a .keras file is whole: a zip archive whose every member passes its CRC check
    (a torn or truncated file does not)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile, EOFError, ValueError):
        return False


def readable_weights_file(path: str) -> bool:
    """Whether a .weights.h5 file is whole: HDF5, and every dataset in it reads."""
    import h5py

    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        return False
    try:
        with h5py.File(path, "r") as f:
            def read(_, item):
                if isinstance(item, h5py.Dataset):
                    item[()]

            f.visititems(read)
        return True
    except (OSError, ValueError, KeyError, RuntimeError):
        return False


class ModelDir:
    """The paths of a model dir and its records (see the module docstring)."""

    def __init__(self, root: str):
        self.root = root
        self.data_record = os.path.join(root, "data.json")
        self.files = os.path.join(root, "files")
        self.init = os.path.join(root, "init.json")
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
    # What a run may write into

    def checkpoint_path(self, checkpoint: str = "final") -> str:
        """The .keras file of `checkpoint` ("final": model.keras, or the last epoch's while
        the run has not finished; "last"; "best" by val_accuracy), or one sentence."""
        if checkpoint not in CHECKPOINTS:
            raise UserError(f"checkpoint must be one of {list(CHECKPOINTS)}. "
                            f"Received: checkpoint={checkpoint!r}")
        if not os.path.isdir(self.root) or not os.path.isfile(self.config):
            raise MissingPathError(f"No trained model in {self.root!r} (no config.yaml: run "
                                   "`resnet-tf train` first)")
        path = {"final": self.model, "last": self.last, "best": self.best}[checkpoint]
        if checkpoint == "final" and not os.path.isfile(path) and os.path.isfile(self.last):
            print(f"resnet-tf: {self.model} is not written yet (the run did not finish); using "
                  f"the last epoch's checkpoint {self.last}", file=sys.stderr)
            path = self.last
        if not os.path.isfile(path):
            if checkpoint == "best" and self.completed_epochs() and \
                    not any("val_accuracy" in row for row in self.completed_epochs()):
                raise MissingPathError(f"{self.root!r} has no best checkpoint: the best is "
                                       "chosen by val_accuracy, and this run has no validation "
                                       "data; use --checkpoint final or last")
            raise MissingPathError(f"No trained model in {self.root!r} (expected {path}; run "
                                   "`resnet-tf train` first)")
        return path

    def starting_checkpoint(self) -> str:
        """The .keras file another run's `init_from` starts from: the best (by
        val_accuracy) where there is one, else the final model."""
        return self.checkpoint_path("best" if os.path.isfile(self.best) else "final")

    def check_for_training(self) -> bool:
        """Reads only: True if the dir holds a run to resume, False if a new run may start in
        it (absent or empty); refuses anything else, leaving it untouched."""
        if os.path.exists(self.root) and not os.path.isdir(self.root):
            raise UserError(f"--model-dir {self.root!r} is a file, not a directory")
        if not os.path.isdir(self.root) or not os.listdir(self.root):
            return False
        if not is_model_dir(self.root):
            raise UserError(f"--model-dir {self.root!r} is not empty and was not written by "
                            "`resnet-tf train` (it has no data.json of a run); a run starts "
                            "only in a new or empty dir: give another --model-dir")
        return os.path.isfile(self.config)

    # ----------------------------------------------------------------------------------------
    # The data record

    def write_data_record(self, record) -> None:
        """Records a run's data (`data.DataRecord`): the file lists first, then data.json."""
        for split, files in record.files.items():
            write_text(os.path.join(self.files, f"{split}.txt"), "".join(
                f"{int(label)}\t{path}\n" for path, label in zip(files.paths, files.labels)))
        write_json(dict(record.to_json(), written_by=WRITTEN_BY), self.data_record)

    def read_data_record(self, check_files: bool = True):
        """The `data.DataRecord` of the run (what it trained and validated on); with
        `check_files`, an error if any of its image files is gone."""
        from resnet_tf.data.datasets import DataRecord
        from resnet_tf.data.files import ImageFiles

        if not os.path.isfile(self.data_record):
            raise MissingPathError(f"No data record in {self.root!r} (no data.json): it is "
                                   "not a `resnet-tf train` model dir")
        values = read_json(self.data_record, "data record")
        files = {}
        for split in values.get("file_lists", []):
            paths, labels = [], []
            with open(os.path.join(self.files, f"{split}.txt")) as f:
                for line in f:
                    label, path = line.rstrip("\n").split("\t", 1)
                    labels.append(int(label))
                    paths.append(path)
            missing = [p for p in paths if check_files and not os.path.isfile(p)]
            if missing:
                raise MissingPathError(
                    f"{len(missing)} of the {len(paths)} {split} images this run recorded are "
                    f"gone (e.g. {missing[0]!r}); the run's data must stay where it was")
            files[split] = ImageFiles(paths, np.asarray(labels, np.int64))
        return DataRecord(values["dataset"], values["class_names"], values["counts"], files,
                          values.get("tfrecords", {}), values.get("split"))

    # ----------------------------------------------------------------------------------------
    # What a run started from

    def write_init(self, init: dict) -> None:
        write_json(init, self.init)

    def read_init(self) -> dict | None:
        """The starting point a run recorded (`training.initialization`), or None."""
        return read_json(self.init, "init record") if os.path.isfile(self.init) else None

    def committed_epochs(self) -> int:
        """How many epochs the committed state holds (0: none committed yet), read without
        loading anything."""
        state = self.read_state()
        return 0 if state is None else int(state["epoch"])

    # ----------------------------------------------------------------------------------------
    # Records

    def completed_epochs(self) -> list[dict]:
        """The rows of the CSV log: one per completed epoch, in order."""
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

    def read_metrics(self) -> dict:
        return read_json(self.metrics, "metrics file") if os.path.isfile(self.metrics) else {}

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

    def _backups_on_disk(self) -> list:
        """[[weights file, epochs], ...] of the backup dir, newest first."""
        if not os.path.isdir(self.backup):
            return []
        found = [[name, int(m.group(1))] for name in os.listdir(self.backup)
                 if (m := _BACKUP_NAME.match(name))]
        return sorted(found, key=lambda entry: -entry[1])

    def read_state(self):
        """The committed state `{"epoch": N, "weights": [[newest file, its epochs], ...]}`, or
        None when nothing was committed. A torn state.json gives way to the weights files on
        disk, newest first (`restore` takes the newest readable one)."""
        if os.path.isfile(self.state):
            try:
                with open(self.state) as f:
                    state = json.load(f)
                if int(state["epoch"]) >= 0 and all(len(w) == 2 for w in state["weights"]):
                    return state
            except (OSError, ValueError, KeyError, TypeError):
                pass
        found = self._backups_on_disk()
        return {"epoch": found[0][1], "weights": found} if found else None

    def restore(self, model, reconcile: bool = True) -> int:
        """Loads the newest readable backup (weights and optimizer state) into `model` and
        returns the number of epochs it completed (0: nothing to restore). With `reconcile`,
        log rows past it (written before a kill that came ahead of the commit) are dropped."""
        state = self.read_state()
        epochs = 0 if state is None else self._load_backup(model, state)
        if not reconcile:
            return epochs
        self.promote(epochs)
        self._remove_stale_temporaries()
        rows = self.completed_epochs()
        kept = [row for row in rows if row["epoch"] < epochs]
        if kept != rows:
            self.write_log(kept)
        if state is not None and epochs < int(state["epoch"]):  # rolled back past a torn file
            self._checkpoints_after_rollback(model, state, kept)
        return epochs

    def _checkpoints_after_rollback(self, model, state, rows) -> None:
        """last.keras (and best.keras, where the best kept epoch is the restored one) are
        rewritten from the restored weights; a best.keras of a rolled-back epoch is removed."""
        self.save_model(model, self.last)
        best = best_val_accuracy(rows)
        if best is not None and rows[-1].get("val_accuracy") == best:
            self.save_model(model, self.best)
        elif int(state.get("best_epochs", 0)) > len(rows) and os.path.isfile(self.best):
            os.remove(self.best)
            print(f"resnet-tf: {self.best} held an epoch rolled back past a torn backup; "
                  "removed (the next better epoch writes it again)")

    def stage_model(self, model, path: str, epochs: int) -> None:
        """Writes `model` as the checkpoint `path` of `epochs` epochs, staged beside it:
        `promote(epochs)` moves it into place once the epoch is committed."""
        with atomic_path(self._staged(path, epochs), suffix=".keras") as temporary:
            model.save(temporary)

    def promote(self, epochs: int) -> None:
        """Moves the checkpoints staged for `epochs` epochs into place."""
        for path in (self.last, self.best):
            staged = self._staged(path, epochs)
            if os.path.isfile(staged):
                os.replace(staged, path)

    @staticmethod
    def _staged(path: str, epochs: int) -> str:
        return os.path.join(os.path.dirname(path),
                            f".{os.path.basename(path)}.epoch-{epochs}.staged")

    def _remove_stale_temporaries(self):
        """Temporary files of writes a killed process never finished (`utils.atomic_path`)."""
        for directory in (self.root, self.checkpoints, self.backup, self.files):
            if not os.path.isdir(directory):
                continue
            for name in os.listdir(directory):
                if name.startswith(".") and name.endswith(TEMPORARY_SUFFIXES):
                    os.remove(os.path.join(directory, name))

    def _load_backup(self, model, state) -> int:
        torn = []
        for name, epochs in state["weights"]:
            path = os.path.join(self.backup, name)
            if not readable_weights_file(path):
                torn.append(path)
                continue
            if model.optimizer is not None and not model.optimizer.built:
                model.optimizer.build(model.trainable_variables)
            try:
                model.load_weights(path)
            except (ValueError, KeyError) as error:  # whole, but not this model's
                raise UserError(f"The backup {path!r} does not fit the model being trained "
                                f"({type(error).__name__}: {str(error)[:300]}); was the model "
                                "code changed? Use a new --model-dir") from None
            if torn:
                print(f"resnet-tf: the newest backup was unreadable ({', '.join(torn)}); "
                      f"resuming from {path} ({epochs} epochs)")
            return int(epochs)
        raise UserError(f"No readable backup in {self.backup!r} ({', '.join(torn)} are torn); "
                        "remove that dir to restart training from epoch 1, or use a new "
                        "--model-dir")

    def commit(self, model, epochs: int, best_epochs: int = 0) -> None:
        """Saves the weights and optimizer after `epochs` epochs, then commits them in
        state.json (with `best_epochs`: the epochs of the model best.keras holds); older
        backups beyond the newest `KEPT_BACKUPS` are removed."""
        os.makedirs(self.backup, exist_ok=True)
        name = f"epoch-{epochs}.weights.h5"
        with atomic_path(os.path.join(self.backup, name), suffix=".weights.h5") as temporary:
            model.save_weights(temporary)
        previous = self.read_state() or {}
        weights = [[name, epochs]] + [w for w in previous.get("weights", []) if w[0] != name]
        write_json({"epoch": epochs, "weights": weights[:KEPT_BACKUPS],
                    "best_epochs": best_epochs}, self.state)
        for stale, _ in weights[KEPT_BACKUPS:]:
            try:
                os.remove(os.path.join(self.backup, stale))
            except FileNotFoundError:
                pass

    def save_model(self, model, path: str) -> None:
        """`model.save(path)`, whole or not at all."""
        with atomic_path(path, suffix=".keras") as temporary:
            model.save(temporary)
