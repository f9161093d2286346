"""The files a run reads: image folders (one sub-folder per class) and slim's TFRecords, listed,
checked, decoded and counted, and the one-line reports a run prints of them.

Image folders: class names are the sub-folder names, sorted; the images of a class are every
file with an image extension anywhere below its sub-folder (nested folders included, as Keras'
`image_dataset_from_directory` reads them); hidden files and folders are left out, and so are
other files (counted and reported). Every image is decoded once before a run uses it: a file
that cannot be read is left out with a warning naming it.

TensorFlow only (decoding, tf.data).
"""

from __future__ import annotations

import dataclasses
import os
import sys

import numpy as np
import tensorflow as tf

from resnet_tf.errors import MissingPathError, UserError

AUTOTUNE = tf.data.AUTOTUNE
# What `tf.io.decode_image` reads; the same list for training folders, evaluate and predict.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
IMAGE_KINDS = "JPEG, PNG, BMP, GIF or WebP"
# Given train_examples / val_examples are checked against a count of the records when the
# files are this small (a quick read of their labels); larger ones are taken as given.
COUNT_GIVEN_BYTES = 256 << 20


def log(message: str) -> None:
    print(f"resnet-tf: {message}", flush=True)


def warn(message: str) -> None:
    print(f"resnet-tf: warning: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Image folders


@dataclasses.dataclass
class ImageFiles:
    """Image files and their labels (indices into `class_names`)."""

    paths: list
    labels: np.ndarray

    def __len__(self):
        return len(self.paths)

    def subset(self, index) -> "ImageFiles":
        """The files at `index` (a sequence of positions), in that order."""
        return ImageFiles([self.paths[i] for i in index], self.labels[np.asarray(index,
                                                                                 np.int64)])

    def dataset(self) -> tf.data.Dataset:
        """(decoded uint8 image, label) for each file."""
        return image_files_dataset(self.paths, self.labels)


def _walk_images(directory: str):
    """(image files, other files) below `directory`, recursively, sorted; hidden names are
    left out; symbolic links to folders are followed once."""
    images, others, seen = [], 0, set()
    for root, dirs, files in os.walk(directory, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a link loop
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            if name.lower().endswith(IMAGE_EXTENSIONS):
                images.append(os.path.join(root, name))
            else:
                others += 1
    return images, others


def list_image_folder(folder: str, check: bool = True, report: str | None = None):
    """An image folder with one sub-folder per class -> (paths, labels, class_names).

    With `check`, every image is decoded once and unreadable ones are left out with a warning
    (`check_images`). With `report` (e.g. "train_data"), one line says what was found.
    """
    if not os.path.isdir(folder):
        raise MissingPathError(f"No image folder at {folder!r}")
    try:
        class_names = sorted(d for d in os.listdir(folder)
                             if os.path.isdir(os.path.join(folder, d)) and not d.startswith("."))
    except PermissionError as error:
        raise UserError(f"The image folder {folder!r} cannot be read: {error}") from None
    if not class_names:
        raise UserError(f"The image folder {folder!r} has no class sub-folders; expected "
                        f"{folder}/<class name>/<image files>")
    paths, labels, empty, others, nested = [], [], [], 0, 0
    for label, name in enumerate(class_names):
        sub = os.path.join(folder, name)
        files, other = _walk_images(sub)
        others += other
        nested += sum(os.path.dirname(f) != sub for f in files)
        if not files:
            empty.append(name)
        paths += files
        labels += [label] * len(files)
    if empty:
        raise UserError(f"The image folder {folder!r} has class folders without images "
                        f"({', '.join(IMAGE_EXTENSIONS)}): {empty}")
    labels = np.asarray(labels, np.int64)
    if check:
        paths, labels = check_images(paths, labels, folder, class_names)
    if report:
        details = [f"{nested} in nested folders"] if nested else []
        if others:
            details.append(f"{others} other files left out (not {', '.join(IMAGE_EXTENSIONS)})")
        log(f"{report} {folder}: {len(paths)} images in {len(class_names)} classes" +
            (f" ({'; '.join(details)})" if details else ""))
    return paths, labels, class_names


def check_images(paths, labels, folder: str, class_names):
    """Decodes every image once (in parallel, before training) and leaves out the files that
    cannot be read or decoded, naming each on stderr. A class left without images is an error.

    The policy: a few bad files in a large folder should not stop a run, and must never crash
    one mid-epoch; a folder where a whole class is unreadable is a mistake to report.
    """
    keep = _readable(paths)
    if keep.all():
        return paths, labels
    bad = [p for p, k in zip(paths, keep) if not k]
    empty = sorted(set(class_names[i] for i in set(labels)) -
                   set(class_names[i] for i in set(labels[keep])))
    if empty:
        raise UserError(f"The image folder {folder!r}: no readable image in the class "
                        f"folder(s) {empty} ({len(bad)} unreadable files in all)")
    return [p for p, k in zip(paths, keep) if k], labels[keep]


def _readable(paths) -> np.ndarray:
    """Which of `paths` decode (a bool per path); each one that does not is named on stderr."""
    def decodes(path):
        image = decode_image(tf.io.read_file(path))
        return path, tf.shape(image)[0]

    readable = tf.data.Dataset.from_tensor_slices(list(paths)).map(
        decodes, num_parallel_calls=AUTOTUNE).ignore_errors()
    good = {path.numpy().decode() for path, _ in readable}
    for path in paths:
        if path not in good:
            warn(f"skipping {path!r}: not a readable {IMAGE_KINDS} image")
    return np.array([p in good for p in paths], dtype=bool)


def decode_image(encoded):
    """JPEG/PNG/BMP/GIF/WebP bytes -> uint8 [H, W, 3]."""
    return tf.io.decode_image(encoded, channels=3, expand_animations=False)


def image_files_dataset(paths, labels) -> tf.data.Dataset:
    """(decoded uint8 image, label) for each image file."""
    def load(path, label):
        return decode_image(tf.io.read_file(path)), label

    return tf.data.Dataset.from_tensor_slices((list(paths), np.asarray(labels, np.int64))).map(
        load, num_parallel_calls=AUTOTUNE)


def checked(files: ImageFiles, where: str) -> ImageFiles:
    """`files` (a sample to use, not a dataset to train on) without the ones that cannot be
    decoded, each named on stderr; an error if none can."""
    keep = _readable(files.paths)
    if len(files) and not keep.any():
        raise UserError(f"{where}: none of the {len(files)} images it uses decodes as a "
                        f"{IMAGE_KINDS} image")
    return ImageFiles([p for p, k in zip(files.paths, keep) if k], files.labels[keep])


def split_files(files: ImageFiles, validation_split: float, seed: int):
    """(train, val) `ImageFiles`: a seeded random `validation_split` of the files held out."""
    train, val = split_indices(np.arange(len(files)), validation_split, seed)
    if not len(train) or not len(val):
        raise UserError(f"validation_split={validation_split} of {len(files)} images leaves "
                        "an empty split")
    return files.subset(train), files.subset(val)


def split_indices(index: np.ndarray, validation_split: float, seed: int):
    """(train, val): a seeded random `validation_split` of `index` held out, each sorted."""
    order = index[np.random.default_rng(seed).permutation(len(index))]
    n_val = int(round(len(index) * validation_split))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


# --------------------------------------------------------------------------------------------
# slim TFRecords

SLIM_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature((), tf.string, default_value=""),
    "image/class/label": tf.io.FixedLenFeature((), tf.int64, default_value=-1),
}


def parse_slim_example(serialized):
    """slim's ImageNet TFRecord format -> (uint8 image, label). Labels are as stored (slim's
    ImageNet records use 1..1000, with 0 free for background)."""
    features = tf.io.parse_single_example(serialized, SLIM_FEATURES)
    return decode_image(features["image/encoded"]), features["image/class/label"]


def tfrecord_files(pattern: str) -> list:
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise MissingPathError(f"No TFRecord files match {pattern!r}")
    return files


def slim_tfrecord_dataset(files) -> tf.data.Dataset:
    """(decoded uint8 image, label as stored) of slim-format TFRecord files (a list, or a
    pattern)."""
    if isinstance(files, str):
        files = tfrecord_files(files)
    return tf.data.TFRecordDataset(files, num_parallel_reads=AUTOTUNE).map(
        parse_slim_example, AUTOTUNE)


def count_tfrecords(files, key: str, num_classes: int) -> dict:
    """{"files", "records", "labels": [min, max]} of slim-format records: one read of every
    record (labels only, no image is decoded). Labels outside [0, num_classes) are an error."""
    label_only = {"image/class/label": SLIM_FEATURES["image/class/label"]}
    labels = tf.data.TFRecordDataset(files, num_parallel_reads=AUTOTUNE).map(
        lambda s: tf.io.parse_single_example(s, label_only)["image/class/label"],
        num_parallel_calls=AUTOTUNE).batch(65536)
    count, low, high = 0, None, None
    try:
        for batch in labels:
            batch = batch.numpy()
            count += len(batch)
            low = batch.min() if low is None else min(low, batch.min())
            high = batch.max() if high is None else max(high, batch.max())
    except tf.errors.OpError as error:
        raise UserError(f"{key}: the TFRecords cannot be read as slim's format "
                        f"(image/encoded, image/class/label): {error.message}") from None
    if not count:
        raise UserError(f"{key}: the TFRecord files {files[:3]}... hold no records")
    if low < 0 or high >= num_classes:
        raise UserError(f"{key}: labels {int(low)}..{int(high)} do not fit num_classes="
                        f"{num_classes} (slim's ImageNet records use 1..1000 with "
                        "num_classes 1001)")
    return {"files": list(files), "records": count, "labels": [int(low), int(high)]}
