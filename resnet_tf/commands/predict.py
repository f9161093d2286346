"""`resnet-tf predict`: top-k classes of image files, from any model source or export.

Each image is decoded, prepared by the runner's eval recipe (`runner.prep`) and run through a
`runtimes.Runner`; a SavedModel export gets the decoded image and prepares it itself. A file
that cannot be read is reported and the others are still predicted. With slim's 1001-class
checkpoints, class 0 is slim's "background" and class i is ImageNet class i - 1: the shipped
name list (`resnet_tf.data.class_names.imagenet_class_names(1001)`) carries that offset.

TensorFlow only (decoding and resizing).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import tensorflow as tf

from resnet_tf.data import preprocessing
from resnet_tf.data.files import IMAGE_KINDS, decode_image
from resnet_tf.errors import MissingPathError, UserError


def read_image(path: str):
    """uint8 [H, W, 3] of an image file; a sentence naming the file otherwise."""
    if os.path.isdir(path):
        raise UserError(f"{path!r} is a directory, not an image file")
    if not os.path.isfile(path):
        raise MissingPathError(f"No image file at {path!r}")
    with open(path, "rb") as f:
        encoded = f.read()
    try:
        return decode_image(encoded)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError):
        raise UserError(f"{path!r} is not a readable {IMAGE_KINDS} image") from None


def top_k(probabilities, class_names, k=5):
    """[(class index, name, probability)] for the k most probable classes."""
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [(int(i), class_names[i] if class_names else str(int(i)), float(probabilities[i]))
            for i in order]


def predict_files(paths, runner, class_names, k=5):
    """({path: top-k list} of every readable image, {path: why it failed} of the others)."""
    if not paths:
        raise UserError("No image files given")
    results, failures = {}, {}
    for path in paths:
        try:
            image = read_image(path)
        except UserError as error:
            failures[path] = str(error)
            continue
        if runner.takes_any_size:
            pixels = tf.cast(image, tf.float32)
        else:
            pixels = preprocessing.prepare_pixels(image, runner.prep)
        probabilities = runner(pixels.numpy()[np.newaxis])[0]
        if class_names is not None and len(class_names) != len(probabilities):
            raise UserError(f"{len(class_names)} class names for a model with "
                            f"{len(probabilities)} classes")
        results[path] = top_k(probabilities, class_names, k)
    return results, failures


def format_results(results) -> str:
    lines = []
    for path, top in results.items():
        lines.append(path)
        lines += [f"  {p:8.4f}  {name} ({index})" for index, name, p in top]
    return "\n".join(lines)


def run(args) -> int:
    """`resnet-tf predict`: the top classes of each image; a file that cannot be read is said
    on stderr, the others are predicted, and the status is 1 if any failed."""
    from resnet_tf.commands.model_source import source_runner

    if not any(os.path.isfile(path) for path in args.images):  # before the model loads
        read_image(args.images[0])  # the sentence for the first
    runner, names = source_runner(args)
    results, failures = predict_files(args.images, runner, names, args.top)
    if results:
        print(format_results(results))
    for why in failures.values():
        print(f"resnet-tf predict: error: {why}", file=sys.stderr)
    return 1 if failures else 0
