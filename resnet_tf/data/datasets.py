"""tf.data input pipelines: scikit-learn's digits, CIFAR-10, image folders and slim TFRecords,
and the record of what a run trains and validates on.

Every pipeline yields `(images, one_hot_labels)` batches, images preprocessed as slim does
(`resnet_tf.data.preprocessing`: the training distortions, or the eval recipe of
`TrainConfig.eval_preprocessing`). Labels are one-hot so that label smoothing works;
`label_offset=1` reproduces slim's 1001-class convention (class 0 = background) for folders.

What a run uses is decided once, when it starts, and recorded in its model dir (`DataRecord`):
the image files of each split of a folder (so a validation split never changes, whatever is
added to the folder later), the counts of TFRecords (so a schedule is never built from an
unknown length), the class names. Resume, `evaluate --model-dir`, `export` and int8 calibration
read that record instead of looking at the data again.

Image folders: one sub-folder per class (class names are the sub-folder names, sorted); the
images of a class are every file with an image extension anywhere below its sub-folder (nested
folders included, as Keras' `image_dataset_from_directory` reads them); hidden files and folders
are left out, and so are other files (counted and reported).

TensorFlow only; the model code does not import it.
"""

from __future__ import annotations

import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf

from resnet_tf.data import preprocessing
from resnet_tf.data.class_names import default_class_names
from resnet_tf.data.files import (
    COUNT_GIVEN_BYTES,
    ImageFiles,
    count_tfrecords,
    image_files_dataset,
    list_image_folder,
    log,
    parse_slim_example,
    slim_tfrecord_dataset,
    split_files,
    split_indices,
    tfrecord_files,
)
from resnet_tf.errors import UserError
from resnet_tf.utils import read_class_names

AUTOTUNE = tf.data.AUTOTUNE

# --------------------------------------------------------------------------------------------
# The record of a run's data


@dataclasses.dataclass
class DataRecord:
    """What a run trains and validates on, decided when it starts (`scan`) and kept in its
    model dir (`ModelDir.write_data_record`), so that resume, evaluate, export and calibration
    see the same images.

    dataset: the config's dataset; class_names: one per class (label offset included);
    files: for folders, {"train": ImageFiles, "val": ImageFiles or absent};
    counts: {"train": n, "val": n} (examples per split); tfrecords: for TFRecords,
    {"train": count_tfrecords(...), "val": ...}; split: for the digits, the
    {"validation_split", "seed"} of the split (None in records written before it was kept:
    the config's).
    """

    dataset: str
    class_names: list
    counts: dict
    files: dict = dataclasses.field(default_factory=dict)
    tfrecords: dict = dataclasses.field(default_factory=dict)
    split: dict | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def has(self, split: str) -> bool:
        return bool(self.counts.get(split))

    def summary(self) -> str:
        val = f", {self.counts['val']} for validation" if self.has("val") else \
            ", no validation images"
        return (f"{self.dataset}: {self.counts['train']} training images{val}, "
                f"{self.num_classes} classes")

    def to_json(self) -> dict:
        """data.json (the file lists go to files/<split>.txt)."""
        values = {"dataset": self.dataset, "class_names": self.class_names,
                  "counts": self.counts, "tfrecords": self.tfrecords,
                  "file_lists": sorted(self.files)}
        return values if self.split is None else dict(values, split=self.split)


def _label_names(config, names):
    """The class names of a run: the dataset's, with slim's background offset, or a file."""
    if config.label_offset:
        names = ["background"] * config.label_offset + list(names)
    if config.class_names:
        names = read_class_names(config.class_names)
    return list(names)


def _check_num_classes(config, names):
    num_classes = config.num_classes or len(names)
    if len(names) != num_classes:
        raise UserError(f"{len(names)} class names for {num_classes} classes "
                        f"(num_classes={config.num_classes}, class_names="
                        f"{config.class_names or 'the data'!r})")


def scan(config, check: bool = True, inherit: DataRecord | None = None) -> DataRecord:
    """Looks at a config's data once (lists and checks every image of a folder and splits it,
    counts TFRecords, or loads the digits) and returns the record of what the run will use;
    prints one line per source of images. `check=False` decodes no image (the caller checks
    the ones it uses).

    `inherit` is the record of the run this one starts from (`init_from`): its training
    images never go to this run's validation (`_inherit_split`)."""
    if config.dataset == "digits":
        split = _digits_split(config, inherit)
        (_, y_train), (_, y_val) = digits_arrays(**split)
        record = DataRecord("digits", _label_names(config, [str(i) for i in range(10)]),
                            {"train": len(y_train), "val": len(y_val)}, split=split)
    elif config.dataset == "cifar10":
        record = DataRecord("cifar10", _label_names(config, CIFAR10_NAMES),
                            {"train": 50000, "val": 10000})
    elif config.dataset == "folder":
        record = _scan_folders(config, check, inherit)
    else:
        record = _scan_tfrecords(config, inherit)
    _check_num_classes(config, record.class_names)
    log(record.summary())
    return record


def _scan_folders(config, check=True, inherit=None) -> DataRecord:
    paths, labels, names = list_image_folder(config.train_data, check, report="train_data")
    train = ImageFiles(paths, labels)
    files = {"train": train}
    inherited = inherit is not None and inherit.dataset == "folder"
    if config.val_data:
        val_paths, val_labels, val_names = list_image_folder(config.val_data, check,
                                                             report="val_data")
        if val_names != names:
            raise UserError(f"The validation folder {config.val_data!r} has classes "
                            f"{val_names}, the training folder {names}")
        files["val"] = ImageFiles(val_paths, val_labels)
        if inherited:
            files["val"] = _without_trained(files["val"], inherit, config.init_from)
    elif config.validation_split:
        if inherited:
            files["train"], files["val"] = _inherit_split(train, inherit, config)
        else:
            files["train"], files["val"] = split_files(train, config.validation_split,
                                                       config.seed)
    offset = config.label_offset
    files = {split: ImageFiles(f.paths, f.labels + offset) for split, f in files.items()}
    return DataRecord("folder", _label_names(config, names),
                      {split: len(f) for split, f in files.items()}, files=files)


def _real_paths(files: ImageFiles | None) -> set:
    return set() if files is None else {os.path.realpath(p) for p in files.paths}


def _inherit_split(files: ImageFiles, source: DataRecord, config):
    """(train, val) of a folder for a run started from another run (`init_from`): the images
    that run trained on stay in training, the ones it validated on stay in validation, and
    only images it never used are split anew (`validation_split`, `seed`). Says so."""
    trained = _real_paths(source.files.get("train"))
    validated = _real_paths(source.files.get("val"))
    real = [os.path.realpath(p) for p in files.paths]
    kept_train = [i for i, p in enumerate(real) if p in trained]
    kept_val = [i for i, p in enumerate(real) if p in validated and p not in trained]
    new = np.array([i for i, p in enumerate(real) if p not in trained and p not in validated],
                   np.int64)
    new_train, new_val = split_indices(new, config.validation_split, config.seed)
    train = np.sort(np.concatenate([kept_train, new_train]).astype(np.int64))
    val = np.sort(np.concatenate([kept_val, new_val]).astype(np.int64))
    if not len(val) or not len(train):
        raise UserError(f"init_from={config.init_from!r}: keeping its training images out of "
                        f"validation leaves this run no {'training' if len(val) else 'validation'}"
                        " images; add images, or give val_data")
    log(f"the validation split follows init_from {config.init_from}: its {len(kept_train)} "
        f"training and {len(kept_val)} validation images stay where they were, and the "
        f"{len(new)} images it did not use are split anew ({len(new_val)} to validation)")
    return files.subset(train), files.subset(val)


def _without_trained(val: ImageFiles, source: DataRecord, init_from: str) -> ImageFiles:
    """val_data without the images the `init_from` run trained on (said, if any)."""
    trained = _real_paths(source.files.get("train"))
    keep = np.array([os.path.realpath(p) not in trained for p in val.paths], bool)
    if keep.all():
        return val
    if not keep.any():
        raise UserError(f"val_data: all its {len(val)} images are training images of "
                        f"init_from={init_from!r}; validate on images it did not train on")
    log(f"val_data: left out {int((~keep).sum())} of its {len(val)} images: init_from "
        f"{init_from} trained on them")
    return val.subset(np.flatnonzero(keep))


def _scan_tfrecords(config, inherit=None) -> DataRecord:
    if config.num_classes is None:
        raise UserError("dataset 'tfrecord' needs num_classes (slim's ImageNet: 1001)")
    names = default_class_names(config.num_classes) or [str(i) for i in
                                                        range(config.num_classes)]
    tfrecords, counts = {}, {}
    for split, key, pattern, given in (("train", "train_data", config.train_data,
                                        config.train_examples),
                                       ("val", "val_data", config.val_data,
                                        config.val_examples)):
        if not pattern:
            continue
        files = tfrecord_files(pattern)
        if given is None:
            log(f"{key}: counting the records of {len(files)} files once (train_examples / "
                "val_examples in the config skip this)")
            tfrecords[split] = count_tfrecords(files, key, config.num_classes)
        elif sum(os.path.getsize(f) for f in files if os.path.isfile(f)) <= COUNT_GIVEN_BYTES:
            tfrecords[split] = count_tfrecords(files, key, config.num_classes)
            if tfrecords[split]["records"] != given:
                example_key = f"{split}_examples"
                raise UserError(f"{example_key}={given}, but the {len(files)} files of {key} "
                                f"hold {tfrecords[split]['records']} records; remove "
                                f"{example_key} to use the count, or correct it")
        else:
            log(f"{key}: {given} examples per epoch as {split}_examples says, not counted "
                f"({len(files)} files); if they hold fewer, an epoch repeats records, if more, "
                "it leaves some out")
            tfrecords[split] = {"files": files, "records": given, "labels": None}
        counts[split] = tfrecords[split]["records"]
    if inherit is not None and inherit.dataset == "tfrecord" and "val" in tfrecords:
        trained = {os.path.realpath(f) for f in inherit.tfrecords.get("train", {}).get(
            "files", [])}
        shared = [f for f in tfrecords["val"]["files"] if os.path.realpath(f) in trained]
        if shared:
            raise UserError(f"val_data: {len(shared)} of its files are training files of "
                            f"init_from={config.init_from!r} (e.g. {shared[0]!r}); validate on "
                            "records it did not train on")
    return DataRecord("tfrecord", _label_names(config, names), counts, tfrecords=tfrecords)


# --------------------------------------------------------------------------------------------
# Built-in datasets

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck"]
DIGITS_VALIDATION_SPLIT = 0.2


def _digits_split(config, inherit: DataRecord | None = None) -> dict:
    """The digits' split ({"validation_split", "seed"}): the config's, or for a run started
    from another digits run, that run's (so it never validates on the images that run trained
    on; the config's seed still orders the training)."""
    split = {"validation_split": DIGITS_VALIDATION_SPLIT if config.validation_split is None
             else config.validation_split, "seed": config.seed}
    if inherit is None or inherit.dataset != "digits" or inherit.split is None:
        return split
    if inherit.split != split:
        log(f"the digits are split as init_from {config.init_from} split them "
            f"(validation_split {inherit.split['validation_split']:g}, seed "
            f"{inherit.split['seed']}), not as this config says (validation_split "
            f"{split['validation_split']:g}, seed {split['seed']}): it never validates on "
            "images that run trained on")
    return dict(inherit.split)


def digits_arrays(validation_split: float = DIGITS_VALIDATION_SPLIT, seed: int = 0):
    """scikit-learn's UCI handwritten digits (1,797 8x8 images, 10 classes) as uint8 RGB images.

    Returns ((x_train, y_train), (x_val, y_val)): a seeded, stratified split (no validation
    images with `validation_split` 0).
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # 0..16 -> 0..255
    images = np.repeat(images[..., np.newaxis], 3, axis=-1)
    labels = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    val_index = []
    for label in range(10):
        members = np.flatnonzero(labels == label)
        val_index.extend(rng.permutation(members)[: int(round(len(members) * validation_split))])
    is_val = np.zeros(len(labels), bool)
    is_val[val_index] = True
    return (images[~is_val], labels[~is_val]), (images[is_val], labels[is_val])


def _array_datasets(config, record: DataRecord) -> dict:
    if config.dataset == "digits":
        (x_train, y_train), (x_val, y_val) = digits_arrays(**(record.split or
                                                              _digits_split(config)))
    else:  # Keras' copy of CIFAR-10 (downloaded once into ~/.keras/datasets); its test set
        # validates, as in the papers.
        (x_train, y_train), (x_val, y_val) = keras.datasets.cifar10.load_data()
        y_train, y_val = y_train[:, 0].astype(np.int64), y_val[:, 0].astype(np.int64)
    splits = {"train": (x_train, y_train + config.label_offset)}
    if len(y_val):
        splits["val"] = (x_val, y_val + config.label_offset)
    return {split: tf.data.Dataset.from_tensor_slices(arrays) for split, arrays in
            splits.items()}


# --------------------------------------------------------------------------------------------
# Datasets of a record


def raw_split(config, record: DataRecord, split: str) -> tf.data.Dataset | None:
    """Unbatched `(uint8 image [H, W, 3], int64 label)` of one split ("train" or "val") of a
    run, before any preprocessing (labels with `label_offset` applied); None if the run has no
    such split."""
    if not record.has(split):
        return None
    if record.dataset in ("digits", "cifar10"):
        return _array_datasets(config, record)[split]
    if record.dataset == "folder":
        return record.files[split].dataset()
    dataset = slim_tfrecord_dataset(record.tfrecords[split]["files"])
    num_classes = record.num_classes

    def in_range(image, label):  # records counted once are checked; given counts are not
        tf.debugging.assert_non_negative(label, message="resnet-tf: a label < 0")
        tf.debugging.assert_less(label, tf.constant(num_classes, tf.int64),
                                 message=f"resnet-tf: a label >= num_classes={num_classes}")
        return image, label

    return dataset.map(in_range) if record.tfrecords[split]["labels"] is None else dataset


def sample_split(config, record: DataRecord, split: str, count: int, seed: int = 0):
    """Up to `count` examples of a run's split, raw, the same ones every time (a seeded
    choice; only those are decoded)."""
    if not record.has(split):
        raise UserError(f"the run has no {split} images")
    if record.dataset == "folder":
        files = record.files[split]
        index = np.sort(np.random.default_rng(seed).permutation(len(files))[:count])
        return image_files_dataset([files.paths[i] for i in index], files.labels[index])
    if record.dataset == "tfrecord":  # choose among the serialized records, decode only those
        records = tf.data.TFRecordDataset(record.tfrecords[split]["files"]).shuffle(
            min(record.counts[split], 2048), seed=seed, reshuffle_each_iteration=False)
        return records.take(count).map(parse_slim_example, num_parallel_calls=AUTOTUNE)
    return raw_split(config, record, split).shuffle(
        min(record.counts[split], 10000), seed=seed, reshuffle_each_iteration=False).take(count)


def eval_pixels_dataset(dataset, prep, batch_size=32):
    """Raw `(image, label)` -> batches of `(float32 0..255 pixels [N, S, S, 3], label)` prepared
    by `prep` (a `pixels.EvalPreprocessing`) without the final normalisation: what the
    exports take."""
    def crop(image, label):
        pixels = preprocessing.prepare_pixels(image, prep)
        pixels.set_shape([prep.image_size, prep.image_size, 3])
        return pixels, label

    return dataset.map(crop, num_parallel_calls=AUTOTUNE).batch(batch_size).prefetch(AUTOTUNE)


def pixels_of(dataset, prep, count: int) -> np.ndarray:
    """Up to `count` images of a raw dataset as prepared pixels `[K, S, S, 3]`."""
    arrays = [pixels.numpy() for pixels, _ in eval_pixels_dataset(dataset.take(count), prep)]
    if not arrays:
        raise UserError("No images: the dataset is empty")
    return np.concatenate(arrays)


def _pipeline(dataset, config, num_classes, training, shuffle_size=None):
    size = config.image_size
    prep = config.eval_preprocessing()

    def preprocess(image, label):
        if not (training and config.augment):  # the eval recipe evaluate and exports use
            image = preprocessing.prepare_input(image, prep)
        else:  # distorted in [0, 1], then normalised as the weights' source did
            if config.preprocessing == "cifar":
                image = preprocessing.cifar_distortions(image, size, size)
            else:
                image = preprocessing.inception_distortions(
                    image, size, size, color_distortion=config.color_distortion)
            image = preprocessing.normalize_unit(image, prep.method)
        image.set_shape([size, size, 3])
        return image, tf.one_hot(label, num_classes)

    if training:
        dataset = dataset.shuffle(shuffle_size or config.shuffle_buffer, seed=config.seed,
                                  reshuffle_each_iteration=True)
    dataset = dataset.map(preprocess, num_parallel_calls=AUTOTUNE)
    dataset = dataset.batch(config.batch_size, drop_remainder=training)
    return dataset.prefetch(AUTOTUNE)


@dataclasses.dataclass
class Datasets:
    train: tf.data.Dataset
    val: tf.data.Dataset | None
    num_classes: int
    class_names: list
    steps_per_epoch: int  # always known: schedules are built from it
    validation_steps: int | None
    record: DataRecord


def make_datasets(config, record: DataRecord | None = None,
                  inherit: DataRecord | None = None) -> Datasets:
    """The training and validation pipelines of a config: of `record` (a run's recorded
    data), or of a fresh `scan` of the config's data (`inherit`: the record of the run it
    starts from)."""
    record = scan(config, inherit=inherit) if record is None else record
    train_examples = record.counts["train"]
    steps = train_examples // config.batch_size
    if steps == 0:
        raise UserError(f"batch_size={config.batch_size} is larger than the "
                        f"{train_examples} training examples")
    train = _pipeline(raw_split(config, record, "train"), config, record.num_classes,
                      training=True, shuffle_size=min(config.shuffle_buffer, train_examples))
    # Every epoch is `steps` full batches: the pipeline repeats, so a TFRecord epoch is the
    # recorded count and no epoch ends early.
    train = train.repeat()
    val = raw_split(config, record, "val")
    validation_steps = None
    if val is not None:
        val = _pipeline(val, config, record.num_classes, training=False)
        validation_steps = -(-record.counts["val"] // config.batch_size)
    return Datasets(train, val, record.num_classes, record.class_names, steps,
                    validation_steps, record)
