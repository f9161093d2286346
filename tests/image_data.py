"""Small on-disk image datasets for the pipeline, training and export tests."""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

COLOURS = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}


def image_of(colour, rng, size=(20, 24)):
    noise = rng.integers(-25, 26, size + (3,))
    return np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)


def write_image_folder(root, per_class=4, seed=0, classes=COLOURS, fmt="png"):
    """root/<colour>/<i>.png: noisy flat colours, one class per colour."""
    rng = np.random.default_rng(seed)
    for name, colour in classes.items():
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(per_class):
            image = image_of(colour, rng)
            data = tf.io.encode_png(image) if fmt == "png" else tf.io.encode_jpeg(image)
            with open(os.path.join(root, name, f"{i}.{fmt}"), "wb") as f:
                f.write(data.numpy())
    return str(root)


def write_slim_tfrecord(path, count=8, seed=0, label_base=1):
    """slim's ImageNet record format: image/encoded (JPEG) and image/class/label."""
    rng = np.random.default_rng(seed)
    labels = []
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(count):
            label = label_base + i % len(COLOURS)
            image = image_of(list(COLOURS.values())[i % len(COLOURS)], rng)
            feature = {
                "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[tf.io.encode_jpeg(image).numpy()])),
                "image/format": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"JPEG"])),
                "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(
                    value=[label])),
            }
            writer.write(tf.train.Example(features=tf.train.Features(
                feature=feature)).SerializeToString())
            labels.append(label)
    return labels


def write_digits_folder(root, per_class=None, fmt="png", nested_every=0):
    """scikit-learn's real handwritten digits as an image folder root/<digit>/<i>.<fmt>
    (8x8 RGB); with `nested_every` k, every k-th image of a class goes to <digit>/more/."""
    from resnet_tf.data.datasets import digits_arrays

    (x_train, y_train), (x_val, y_val) = digits_arrays(0.0, seed=0)
    images, labels = x_train, y_train
    for digit in range(10):
        members = images[labels == digit][:per_class]
        folder = os.path.join(root, str(digit))
        os.makedirs(os.path.join(folder, "more"), exist_ok=True)
        for i, image in enumerate(members):
            target = os.path.join(folder, "more") if nested_every and i % nested_every == 0 \
                else folder
            if fmt == "webp":
                import io

                from PIL import Image

                out = io.BytesIO()
                Image.fromarray(image).save(out, format="WEBP", lossless=True)
                data = out.getvalue()
            else:
                data = tf.io.encode_png(image).numpy()
            with open(os.path.join(target, f"{i}.{fmt}"), "wb") as f:
                f.write(data)
    return str(root)


def write_colour_tfrecords(path, count, num_classes=5, seed=0, label_base=0, size=(12, 12)):
    """slim-format TFRecords of noisy flat colours, `num_classes` colours, labels
    label_base..label_base + num_classes - 1."""
    palette = np.random.default_rng(1234).integers(0, 256, (num_classes, 3))  # fixed classes
    rng = np.random.default_rng(seed)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(count):
            label = i % num_classes
            image = image_of(tuple(palette[label]), rng, size)
            feature = {
                "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[tf.io.encode_png(image).numpy()])),
                "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(
                    value=[label + label_base])),
            }
            writer.write(tf.train.Example(features=tf.train.Features(
                feature=feature)).SerializeToString())
