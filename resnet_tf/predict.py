"""`resnet-tf predict`: top-k classes of image files, from any model source or export.

Each image is decoded, given slim's eval crop and resize (`preprocessing.eval_pixels`) and run
through a `runtimes.Runner`; a SavedModel export gets the decoded image and crops it itself.
With slim's 1001-class checkpoints, class 0 is slim's "background" and class i is ImageNet class
i - 1: the shipped name list (`imagenet_class_names(1001)`) carries that offset.

TensorFlow only (decoding and resizing).
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from resnet_tf import preprocessing


def read_image(path: str):
    """uint8 [H, W, 3] of a JPEG/PNG/BMP/GIF file; a sentence naming the file otherwise."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No image file at {path!r}")
    with open(path, "rb") as f:
        encoded = f.read()
    try:
        return tf.io.decode_image(encoded, channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError):
        raise ValueError(f"{path!r} is not a readable JPEG, PNG, BMP or GIF image") from None


def top_k(probabilities, class_names, k=5):
    """[(class index, name, probability)] for the k most probable classes."""
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [(int(i), class_names[i] if class_names else str(int(i)), float(probabilities[i]))
            for i in order]


def predict_files(paths, runner, class_names, k=5):
    """{path: top-k list} for every image file (all files are read before any is run)."""
    if not paths:
        raise ValueError("No image files given")
    images = [read_image(path) for path in paths]
    results = {}
    for path, image in zip(paths, images):
        if runner.takes_any_size:
            pixels = tf.cast(image, tf.float32)
        else:
            pixels = preprocessing.eval_pixels(image, runner.image_size, runner.central_fraction,
                                               runner.preprocessing)
        probabilities = runner(pixels.numpy()[np.newaxis])[0]
        if class_names is not None and len(class_names) != len(probabilities):
            raise ValueError(f"{len(class_names)} class names for a model with "
                             f"{len(probabilities)} classes")
        results[path] = top_k(probabilities, class_names, k)
    return results


def format_results(results) -> str:
    lines = []
    for path, top in results.items():
        lines.append(path)
        lines += [f"  {p:8.4f}  {name} ({index})" for index, name, p in top]
    return "\n".join(lines)
