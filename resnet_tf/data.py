"""tf.data input pipelines: scikit-learn's digits, image folders and slim-format TFRecords.

Every pipeline yields `(images, one_hot_labels)` batches, images preprocessed as slim does
(`resnet_tf.preprocessing`: Inception training distortions or the eval crop, values in [-1, 1]).
Labels are one-hot so that label smoothing works; `label_offset=1` reproduces slim's 1001-class
convention (class 0 = background) for folders.

TensorFlow only; the model code does not import it.
"""

from __future__ import annotations

import dataclasses
import os
import sys

import keras
import numpy as np
import tensorflow as tf

from resnet_tf import preprocessing

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
AUTOTUNE = tf.data.AUTOTUNE


@dataclasses.dataclass
class Datasets:
    train: tf.data.Dataset
    val: tf.data.Dataset | None
    num_classes: int
    class_names: list
    steps_per_epoch: int | None  # None: one pass over a finite dataset
    validation_steps: int | None
    train_examples: int | None


def imagenet_class_names(num_classes: int = 1001) -> list:
    """The 1000 ImageNet class names in slim's label order (synset ids sorted), shipped with the
    package; with 1001 classes, slim's "background" is class 0."""
    path = os.path.join(os.path.dirname(__file__), "data", "imagenet_class_names.txt")
    with open(path) as f:
        names = [line.strip() for line in f if line.strip()]
    if num_classes == 1001:
        return ["background"] + names
    if num_classes == 1000:
        return names
    raise ValueError(f"ImageNet has 1000 classes (1001 with slim's background). "
                     f"Received: num_classes={num_classes}")


def read_class_names(path: str) -> list:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No class-names file at {path!r}")
    with open(path) as f:
        names = [line.rstrip("\n") for line in f]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise ValueError(f"The class-names file {path!r} is empty")
    return names


def digits_arrays(validation_split: float = 0.2, seed: int = 0):
    """scikit-learn's UCI handwritten digits (1,797 8x8 images, 10 classes) as uint8 RGB images.

    Returns ((x_train, y_train), (x_val, y_val)): a seeded, stratified split.
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


def list_image_folder(folder: str, check: bool = True):
    """An image folder with one sub-folder per class -> (paths, labels, class_names).

    Class names are the sub-folder names, sorted (label i is the i-th name). With `check`,
    unreadable images are left out with a warning (`check_images`).
    """
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"No image folder at {folder!r}")
    try:
        class_names = sorted(d for d in os.listdir(folder)
                             if os.path.isdir(os.path.join(folder, d)) and not d.startswith("."))
    except PermissionError as error:
        raise ValueError(f"The image folder {folder!r} cannot be read: {error}") from None
    if not class_names:
        raise ValueError(f"The image folder {folder!r} has no class sub-folders; expected "
                         f"{folder}/<class name>/<image files>")
    paths, labels, empty = [], [], []
    for label, name in enumerate(class_names):
        sub = os.path.join(folder, name)
        try:
            files = sorted(f for f in os.listdir(sub) if f.lower().endswith(IMAGE_EXTENSIONS))
        except PermissionError as error:
            raise ValueError(f"The class folder {sub!r} cannot be read: {error}") from None
        if not files:
            empty.append(name)
        paths += [os.path.join(sub, f) for f in files]
        labels += [label] * len(files)
    if empty:
        raise ValueError(f"The image folder {folder!r} has class folders without images "
                         f"({', '.join(IMAGE_EXTENSIONS)}): {empty}")
    labels = np.asarray(labels, np.int64)
    if check:
        paths, labels = check_images(paths, labels, folder, class_names)
    return paths, labels, class_names


def check_images(paths, labels, folder: str, class_names):
    """Decodes every image once (in parallel, before training) and leaves out the files that
    cannot be read or decoded, naming each on stderr. A class left without images is an error.

    The policy: a few bad files in a large folder should not stop a run, and must never crash
    one mid-epoch; a folder where a whole class is unreadable is a mistake to report.
    """
    def decodes(path):
        image = decode_image(tf.io.read_file(path))
        return path, tf.shape(image)[0]

    readable = tf.data.Dataset.from_tensor_slices(list(paths)).map(
        decodes, num_parallel_calls=AUTOTUNE).ignore_errors()
    good = {path.numpy().decode() for path, _ in readable}
    if len(good) == len(paths):
        return paths, labels
    bad = [p for p in paths if p not in good]
    for path in bad:
        print(f"resnet-tf: warning: skipping {path!r}: not a readable JPEG, PNG, BMP or GIF "
              "image", file=sys.stderr)
    keep = np.array([p in good for p in paths])
    empty = sorted(set(class_names[i] for i in set(labels)) -
                   set(class_names[i] for i in set(labels[keep])))
    if empty:
        raise ValueError(f"The image folder {folder!r}: no readable image in the class "
                         f"folder(s) {empty} ({len(bad)} unreadable files in all)")
    return [p for p in paths if p in good], labels[keep]


def decode_image(encoded):
    """JPEG/PNG/BMP/GIF bytes -> uint8 [H, W, 3]."""
    return tf.io.decode_image(encoded, channels=3, expand_animations=False)


SLIM_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature((), tf.string, default_value=""),
    "image/class/label": tf.io.FixedLenFeature((), tf.int64, default_value=-1),
}


def parse_slim_example(serialized):
    """slim's ImageNet TFRecord format -> (uint8 image, label). Labels are as stored (slim's
    ImageNet records use 1..1000, with 0 free for background)."""
    features = tf.io.parse_single_example(serialized, SLIM_FEATURES)
    return decode_image(features["image/encoded"]), features["image/class/label"]


def _tfrecord_files(pattern: str):
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"No TFRecord files match {pattern!r}")
    return files


def _split(paths, labels, validation_split, seed):
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    n_val = int(round(len(labels) * validation_split))
    if validation_split and (n_val == 0 or n_val == len(labels)):
        raise ValueError(f"validation_split={validation_split} of {len(labels)} images leaves "
                         "an empty split")
    val, train = order[:n_val], order[n_val:]
    return ([paths[i] for i in train], labels[train]), ([paths[i] for i in val], labels[val])


def _pipeline(dataset, config, num_classes, training, shuffle_size=None):
    size = config.image_size

    def preprocess(image, label):
        if config.preprocessing == "cifar":
            image = (preprocessing.cifar_preprocess_for_train(image, size, size) if training and
                     config.augment else preprocessing.preprocess_for_eval(image, size, size, None))
        elif training and config.augment:
            image = preprocessing.preprocess_for_train(
                image, size, size, color_distortion=config.color_distortion)
        else:
            image = preprocessing.preprocess_for_eval(image, size, size, config.central_fraction)
        image.set_shape([size, size, 3])
        return image, tf.one_hot(label, num_classes)

    if training:
        dataset = dataset.shuffle(shuffle_size or config.shuffle_buffer, seed=config.seed,
                                  reshuffle_each_iteration=True)
    dataset = dataset.map(preprocess, num_parallel_calls=AUTOTUNE)
    dataset = dataset.batch(config.batch_size, drop_remainder=training)
    return dataset.prefetch(AUTOTUNE)


@dataclasses.dataclass
class RawData:
    """Unbatched `(uint8 image [H, W, 3], int64 label)` datasets, before any preprocessing."""
    train: tf.data.Dataset
    val: tf.data.Dataset | None
    num_classes: int
    class_names: list
    train_examples: int | None


def raw_datasets(config) -> RawData:
    """The training and validation images and labels a `TrainConfig` names (labels with
    `label_offset` applied), before preprocessing."""
    if config.dataset == "digits":
        (x_train, y_train), (x_val, y_val) = digits_arrays(config.validation_split or 0.2,
                                                           config.seed)
        names = [str(i) for i in range(10)]
        train = tf.data.Dataset.from_tensor_slices((x_train, y_train))
        val = tf.data.Dataset.from_tensor_slices((x_val, y_val))
        train_examples = len(y_train)
    elif config.dataset == "cifar10":
        # Keras' copy of CIFAR-10 (downloaded once into ~/.keras/datasets): 50,000 training and
        # 10,000 test images, the test set as validation, as in the papers.
        (x_train, y_train), (x_val, y_val) = keras.datasets.cifar10.load_data()
        names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck"]
        train = tf.data.Dataset.from_tensor_slices((x_train, y_train[:, 0].astype(np.int64)))
        val = tf.data.Dataset.from_tensor_slices((x_val, y_val[:, 0].astype(np.int64)))
        train_examples = len(y_train)
    elif config.dataset == "folder":
        paths, labels, names = list_image_folder(config.train_data)
        if config.val_data:
            val_paths, val_labels, val_names = list_image_folder(config.val_data)
            if val_names != names:
                raise ValueError(f"The validation folder {config.val_data!r} has classes "
                                 f"{val_names}, the training folder {names}")
        elif config.validation_split:
            (paths, labels), (val_paths, val_labels) = _split(paths, labels,
                                                              config.validation_split, config.seed)
        else:
            val_paths = None
        train = image_files_dataset(paths, labels)
        val = image_files_dataset(val_paths, val_labels) if val_paths is not None else None
        train_examples = len(labels)
    else:  # tfrecord
        if config.num_classes is None:
            raise ValueError("dataset 'tfrecord' needs num_classes (slim's ImageNet: 1001)")
        train = slim_tfrecord_dataset(config.train_data)
        val = slim_tfrecord_dataset(config.val_data) if config.val_data else None
        names = None
        train_examples = config.train_examples
    num_classes = config.num_classes or len(names) + config.label_offset
    if names is not None and config.label_offset:
        names = ["background"] * config.label_offset + list(names)
    if config.class_names:
        names = read_class_names(config.class_names)
    elif names is None:
        names = imagenet_class_names(num_classes) if num_classes in (1000, 1001) else \
            [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} classes")
    if config.label_offset:
        def offset(image, label):
            return image, label + config.label_offset

        train = train.map(offset)
        val = val.map(offset) if val is not None else None
    return RawData(train, val, num_classes, names, train_examples)


def image_files_dataset(paths, labels) -> tf.data.Dataset:
    """(decoded uint8 image, label) for each image file."""
    def load(path, label):
        return decode_image(tf.io.read_file(path)), label

    return tf.data.Dataset.from_tensor_slices((list(paths), np.asarray(labels, np.int64))).map(
        load, num_parallel_calls=AUTOTUNE)


def slim_tfrecord_dataset(pattern: str) -> tf.data.Dataset:
    """(decoded uint8 image, label as stored) of slim-format TFRecords matching `pattern`."""
    return tf.data.TFRecordDataset(_tfrecord_files(pattern), num_parallel_reads=AUTOTUNE).map(
        parse_slim_example, AUTOTUNE)


def eval_pixels_dataset(dataset, image_size, central_fraction, batch_size=32,
                        method="inception"):
    """Raw `(image, label)` -> batches of `(float32 0..255 pixels [N, S, S, 3], label)` after
    slim's eval crop and resize (`preprocessing.eval_pixels`): what the exports take."""
    def crop(image, label):
        pixels = preprocessing.eval_pixels(image, image_size, central_fraction, method)
        pixels.set_shape([image_size, image_size, 3])
        return pixels, label

    return dataset.map(crop, num_parallel_calls=AUTOTUNE).batch(batch_size).prefetch(AUTOTUNE)


def calibration_pixels(dataset, image_size, central_fraction, count: int = 300,
                       method="inception") -> np.ndarray:
    """Up to `count` images of a raw dataset as eval-preprocessed pixels, for int8 calibration."""
    batches = eval_pixels_dataset(dataset.take(count), image_size, central_fraction,
                                  method=method)
    arrays = [pixels.numpy() for pixels, _ in batches]
    if not arrays:
        raise ValueError("No calibration images: the dataset is empty")
    return np.concatenate(arrays)


def make_datasets(config) -> Datasets:
    """The training and validation pipelines a `TrainConfig` describes."""
    raw = raw_datasets(config)
    steps = validation_steps = None
    train_examples = raw.train_examples
    train = _pipeline(raw.train, config, raw.num_classes, training=True,
                      shuffle_size=min(config.shuffle_buffer, train_examples or
                                       config.shuffle_buffer))
    if config.dataset == "tfrecord" and train_examples:
        train = train.repeat()
        steps = train_examples // config.batch_size
    val = None
    if raw.val is not None:
        val = _pipeline(raw.val, config, raw.num_classes, training=False)
        if config.val_examples:
            validation_steps = -(-config.val_examples // config.batch_size)
    if steps == 0 or (train_examples and train_examples < config.batch_size):
        raise ValueError(f"batch_size={config.batch_size} is larger than the "
                         f"{train_examples} training examples")
    return Datasets(train, val, raw.num_classes, raw.class_names, steps, validation_steps,
                    train_examples)
