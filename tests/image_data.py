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
