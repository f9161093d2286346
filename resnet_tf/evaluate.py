"""`resnet-tf evaluate`: top-1 / top-5 accuracy of any model on labelled images, as slim's
`eval_image_classifier` reports it, for a Keras model or an export run by its own runtime.

Data sources: a config's validation data (`raw_datasets(config).val`), an image folder with one
sub-folder per class (matched to the model's class names by name), or slim-format TFRecords
(labels 1..1000 with 0 free for background: kept as they are for 1001-class models, shifted down
by one for 1000-class ones). Images go through slim's eval crop and resize to the model's size;
a SavedModel export (whose preprocessing is inside) gets the decoded images themselves.

TensorFlow only (tf.data).
"""

from __future__ import annotations

import time

import numpy as np
import tensorflow as tf

from resnet_tf import data as data_lib


def folder_dataset(folder: str, class_names):
    """(raw dataset, count) of an image folder whose sub-folders are named as the model's classes."""
    paths, labels, folders = data_lib.list_image_folder(folder)
    if class_names is None:
        raise ValueError(f"--data {folder!r}: the model has no class names to match the folder "
                         "names to; evaluate a model dir or an export with class_names.txt")
    index = {name: i for i, name in enumerate(class_names)}
    unknown = [name for name in folders if name not in index]
    if unknown:
        raise ValueError(f"--data {folder!r}: sub-folders {unknown} are not classes of the model "
                         f"(its classes: {list(class_names)[:10]}"
                         f"{', ...' if len(class_names) > 10 else ''})")
    labels = np.array([index[folders[label]] for label in labels], np.int64)
    return data_lib.image_files_dataset(paths, labels), len(labels)


def tfrecord_dataset(pattern: str, num_classes: int):
    """(raw dataset, None) of slim-format TFRecords, labels mapped to the model's classes."""
    dataset = data_lib.slim_tfrecord_dataset(pattern)
    if num_classes == 1000:  # slim's records count ImageNet from 1 (0 = background)
        dataset = dataset.map(lambda image, label: (image, label - 1))
    return dataset, None


def config_dataset(config):
    """(raw dataset, count) of a training config's validation data."""
    raw = data_lib.raw_datasets(config)
    if raw.val is None:
        raise ValueError("the config has no validation data (val_data or validation_split); "
                         "give --data DIR or --tfrecords PATTERN")
    count = int(raw.val.cardinality().numpy())
    return raw.val, (count if count >= 0 else None)


def _batches(dataset, runner, batch_size):
    """Batches of (pixels, labels) for `runner`: eval-cropped as the runner says, or for a
    runner that crops itself the decoded images, consecutive images of one size together."""
    if not runner.takes_any_size:
        for pixels, labels in data_lib.eval_pixels_dataset(
                dataset, runner.image_size, runner.central_fraction, batch_size,
                runner.preprocessing):
            yield pixels.numpy(), labels.numpy()
        return
    images, labels = [], []
    for image, label in dataset.prefetch(tf.data.AUTOTUNE):
        image = image.numpy().astype(np.float32)
        if images and (image.shape != images[0].shape or len(images) == batch_size):
            yield np.stack(images), np.array(labels)
            images, labels = [], []
        images.append(image)
        labels.append(int(label))
    if images:
        yield np.stack(images), np.array(labels)


def evaluate(runner, dataset, count=None, batch_size=32, progress=True) -> dict:
    """Runs `runner` over `dataset` (raw `(image, label)`) and returns top-1, top-5, the count
    and images/s (model time only)."""
    import keras

    bar = keras.utils.Progbar(count, unit_name="image") if progress else None
    top1 = top5 = seen = 0
    model_seconds = 0.0
    began = time.perf_counter()
    for pixels, labels in _batches(dataset, runner, batch_size):
        start = time.perf_counter()
        probabilities = runner(pixels)
        model_seconds += time.perf_counter() - start
        if probabilities.shape[0] != len(labels):
            raise RuntimeError(f"{runner!r} returned {probabilities.shape[0]} rows for "
                               f"{len(labels)} images")
        if labels.min() < 0 or labels.max() >= probabilities.shape[1]:
            raise ValueError(f"labels {labels.min()}..{labels.max()} do not fit a model of "
                             f"{probabilities.shape[1]} classes")
        order = np.argsort(-probabilities, axis=-1, kind="stable")[:, :5]
        top1 += int(np.sum(order[:, 0] == labels))
        top5 += int(np.sum(np.any(order == labels[:, None], axis=-1)))
        seen += len(labels)
        if bar is not None:
            bar.update(seen, [("top1", top1 / seen)])
    if not seen:
        raise ValueError("No images to evaluate: the data source is empty")
    return {
        "top1": top1 / seen,
        "top5": top5 / seen,
        "count": seen,
        "images_per_s": seen / model_seconds if model_seconds else None,
        "seconds": round(time.perf_counter() - began, 3),
        "runtime": runner.runtime,
        "precision": runner.precision,
    }


def format_result(result: dict) -> str:
    speed = (f", {result['images_per_s']:.1f} images/s" if result.get("images_per_s")
             else "")
    return (f"top-1 {result['top1']:.4f}, top-5 {result['top5']:.4f} over {result['count']} "
            f"images ({result['runtime']}, {result['precision']}{speed})")

