"""`resnet-tf predict`: top-k classes of image files, from a model dir, an export or a slim checkpoint.

With slim's 1001-class checkpoints, class 0 is slim's "background" and class i is ImageNet class
i - 1: the shipped name list (`imagenet_class_names(1001)`) carries that offset.

TensorFlow only.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from resnet_tf import preprocessing


def _read_images(paths):
    contents = []
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No image file at {path!r}")
        with open(path, "rb") as f:
            contents.append(f.read())
    return contents


def _decode(path, encoded):
    try:
        return tf.io.decode_image(encoded, channels=3, expand_animations=False)
    except tf.errors.InvalidArgumentError:
        raise ValueError(f"{path!r} is not a JPEG, PNG, BMP or GIF image") from None


def keras_classifier(model, image_size, central_fraction):
    """bytes of one image -> probabilities, with the model in inference mode."""
    def classify(path, encoded):
        image = preprocessing.preprocess_for_eval(_decode(path, encoded), image_size, image_size,
                                                  central_fraction)
        logits = tf.cast(model(image[tf.newaxis], training=False), tf.float32)
        return tf.nn.softmax(logits, axis=-1)[0].numpy()
    return classify


def export_classifier(export_dir):
    """The `serving_bytes` signature of a `resnet-tf export` SavedModel, and its class names."""
    from resnet_tf.export import CLASS_NAMES_ASSET

    if not os.path.isdir(export_dir):
        raise FileNotFoundError(f"No SavedModel at {export_dir!r}")
    loaded = tf.saved_model.load(export_dir)
    if "serving_bytes" not in loaded.signatures:
        raise ValueError(f"{export_dir!r} has no 'serving_bytes' signature (signatures: "
                         f"{sorted(loaded.signatures)}); export it with `resnet-tf export`")
    signature = loaded.signatures["serving_bytes"]

    def classify(path, encoded):
        _decode(path, encoded)  # a clear error for a file that is not an image
        return signature(image_bytes=tf.constant([encoded]))["probabilities"].numpy()[0]

    names_file = os.path.join(export_dir, "assets", CLASS_NAMES_ASSET)
    names = None
    if os.path.isfile(names_file):
        from resnet_tf.data import read_class_names

        names = read_class_names(names_file)
    return classify, names


def top_k(probabilities, class_names, k=5):
    """[(class index, name, probability)] for the k most probable classes."""
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [(int(i), class_names[i] if class_names else str(int(i)), float(probabilities[i]))
            for i in order]


def predict_files(paths, classify, class_names, k=5):
    """{path: top-k list} for every image file."""
    if not paths:
        raise ValueError("No image files given")
    if class_names is not None and len(class_names) < 1:
        raise ValueError("Empty class names")
    results = {}
    for path, encoded in zip(paths, _read_images(paths)):
        results[path] = top_k(classify(path, encoded), class_names, k)
    return results


def format_results(results) -> str:
    lines = []
    for path, top in results.items():
        lines.append(path)
        lines += [f"  {p:8.4f}  {name} ({index})" for index, name, p in top]
    return "\n".join(lines)
