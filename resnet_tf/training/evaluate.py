"""`resnet-tf evaluate`: top-1 / top-5 accuracy of any model on labelled images, as slim's
`eval_image_classifier` reports it, for a Keras model or an export run by its own runtime.

    images = labelled_images(model_dir="runs/quickstart")      # the run's own validation images
    result = evaluate(keras_runner(model, prep=prep), images)

Data sources (`labelled_images`): a model dir's validation images (the ones its run recorded),
a config's validation data, an image folder with one sub-folder per class (matched to the
model's class names by name), or slim-format TFRecords (labels 1..1000 with 0 free for
background: kept as they are for 1001-class models, shifted down by one for 1000-class ones).
Images go through the runner's eval recipe (`runner.prep`); a SavedModel export (whose
preprocessing is inside) gets the decoded images themselves.

TensorFlow only (tf.data).
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np
import tensorflow as tf

from resnet_tf.data import datasets as data_lib
from resnet_tf.data import files
from resnet_tf.errors import UserError


@dataclasses.dataclass
class LabelledImages:
    """Raw `(uint8 image, label)` examples, how many (None: unknown), and what they are."""

    dataset: tf.data.Dataset
    count: int | None
    description: str


def labelled_images(model_dir=None, config=None, folder=None, tfrecords=None,
                    class_names=None) -> LabelledImages:
    """The labelled images to evaluate on, from exactly one source: `model_dir` (its run's
    recorded validation images), `config` (a `TrainConfig`'s validation data), `folder` (an
    image folder whose sub-folders are named as `class_names`) or `tfrecords` (slim-format
    records, labels matched to `len(class_names)` classes)."""
    given = [name for name, value in (("model_dir", model_dir), ("config", config),
                                      ("folder", folder), ("tfrecords", tfrecords))
             if value is not None]
    if len(given) != 1:
        raise UserError("give the labelled images as exactly one of: a model dir, a config, "
                        f"an image folder, TFRecords. Received: {given or 'none'}")
    if folder is not None:
        return folder_images(folder, class_names)
    if tfrecords is not None:
        return tfrecord_images(tfrecords, len(class_names) if class_names else None)
    if model_dir is not None:
        from resnet_tf.training.config import load_config
        from resnet_tf.training.model_dir import ModelDir

        run_dir = ModelDir(model_dir)
        config = load_config(run_dir.config)
        record = run_dir.read_data_record()
        source = f"the validation images recorded in {model_dir}"
    else:  # the config's validation images only are decoded
        if config.dataset == "folder" and config.validation_split and not config.val_data:
            files.warn(f"--config: validation_split {config.validation_split:g} of "
                       f"{config.train_data} is drawn anew here; it is a run's own split only "
                       "if the folder has not changed since, and images a run trained on may "
                       "be in it. To score a run's validation images, use --model-dir RUN "
                       "(beside --export EXPORT for an export)")
        record = data_lib.scan(config, check=False)
        if "val" in record.files:
            record.files["val"] = files.checked(record.files["val"],
                                                f"{config.val_data or config.train_data!r}")
        source = f"the validation data of the config ({config.dataset})"
    val = data_lib.raw_split(config, record, "val")
    if val is None:
        raise UserError(f"there are no validation images in {source.split(' in ')[-1]} "
                        "(val_data or validation_split); give --data DIR or --tfrecords PATTERN")
    return LabelledImages(val, record.counts["val"], source)


def check_same_classes(class_names, model_dir: str, what: str) -> None:
    """An export scored on a run's images must have that run's classes, in its order."""
    from resnet_tf.training.model_dir import ModelDir
    from resnet_tf.utils import read_class_names

    run_dir = ModelDir(model_dir)
    if not os.path.isfile(run_dir.class_names):
        raise UserError(f"--model-dir {model_dir!r} is not a trained run (no class_names.txt)")
    theirs = read_class_names(run_dir.class_names)
    if class_names is not None and list(class_names) != theirs:
        raise UserError(f"{what} has other classes than the run {model_dir!r} ({len(class_names)}"
                        f" vs {len(theirs)}, e.g. {list(class_names)[:3]} vs {theirs[:3]}): it "
                        "was not exported from that run")


def folder_images(folder: str, class_names) -> LabelledImages:
    """An image folder whose sub-folders are named as the model's classes."""
    if class_names is None:
        raise UserError(f"--data {folder!r}: the model has no class names to match the folder "
                        "names to; evaluate a model dir or an export with class_names.txt")
    paths, labels, folders = files.list_image_folder(folder)
    index = {name: i for i, name in enumerate(class_names)}
    unknown = [name for name in folders if name not in index]
    if unknown:
        raise UserError(f"--data {folder!r}: sub-folders {unknown} are not classes of the model "
                        f"(its classes: {list(class_names)[:10]}"
                        f"{', ...' if len(class_names) > 10 else ''})")
    labels = np.array([index[folders[label]] for label in labels], np.int64)
    return LabelledImages(files.image_files_dataset(paths, labels), len(labels),
                          f"the image folder {folder}")


def tfrecord_images(pattern: str, num_classes: int | None) -> LabelledImages:
    """slim-format TFRecords, labels mapped to the model's classes."""
    dataset = files.slim_tfrecord_dataset(pattern)
    if num_classes == 1000:  # slim's records count ImageNet from 1 (0 = background)
        dataset = dataset.map(lambda image, label: (image, label - 1))
    return LabelledImages(dataset, None, f"the TFRecords {pattern}")


def _batches(dataset, runner, batch_size):
    """Batches of (pixels, labels) for `runner`: prepared as the runner says, or for a runner
    that prepares images itself the decoded images, consecutive images of one size together."""
    if not runner.takes_any_size:
        for pixels, labels in data_lib.eval_pixels_dataset(dataset, runner.prep, batch_size):
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


def evaluate(runner, images: LabelledImages, batch_size=32, progress=True) -> dict:
    """Runs `runner` over the labelled images and returns top-1, top-5, the count and
    images/s (model time only)."""
    import keras

    bar = keras.utils.Progbar(images.count, unit_name="image") if progress else None
    top1 = top5 = seen = 0
    model_seconds = 0.0
    began = time.perf_counter()
    for pixels, labels in _batches(images.dataset, runner, batch_size):
        start = time.perf_counter()
        probabilities = runner(pixels)
        model_seconds += time.perf_counter() - start
        if probabilities.shape[0] != len(labels):
            raise RuntimeError(f"{runner!r} returned {probabilities.shape[0]} rows for "
                               f"{len(labels)} images")
        if labels.min() < 0 or labels.max() >= probabilities.shape[1]:
            raise UserError(f"labels {labels.min()}..{labels.max()} do not fit a model of "
                            f"{probabilities.shape[1]} classes")
        order = np.argsort(-probabilities, axis=-1, kind="stable")[:, :5]
        top1 += int(np.sum(order[:, 0] == labels))
        top5 += int(np.sum(np.any(order == labels[:, None], axis=-1)))
        seen += len(labels)
        if bar is not None:
            bar.update(seen, [("top1", top1 / seen)])
    if not seen:
        raise UserError(f"No images to evaluate: {images.description} is empty")
    return {
        "top1": top1 / seen,
        "top5": top5 / seen,
        "count": seen,
        "images_per_s": seen / model_seconds if model_seconds else None,
        "seconds": round(time.perf_counter() - began, 3),
        "runtime": runner.runtime,
        "precision": runner.precision,
        "data": images.description,
    }


def format_result(result: dict) -> str:
    speed = (f", {result['images_per_s']:.1f} images/s" if result.get("images_per_s")
             else "")
    return (f"top-1 {result['top1']:.4f}, top-5 {result['top5']:.4f} over {result['count']} "
            f"images ({result['runtime']}, {result['precision']}{speed})")
