"""tf.data pipelines: digits, image folders, slim TFRecords; clear errors for bad folders."""

import os

import numpy as np
import pytest
from image_data import write_image_folder, write_slim_tfrecord

from resnet_tf.data.class_names import imagenet_class_names
from resnet_tf.data.datasets import digits_arrays, make_datasets
from resnet_tf.data.files import list_image_folder
from resnet_tf.training.config import config_from_dict


def test_imagenet_names_ship_with_slims_background_offset():
    names = imagenet_class_names(1001)
    assert len(names) == 1001 and names[0] == "background"
    assert names[1] == "tench" and names[1:] == imagenet_class_names(1000)
    assert len(set(names)) == 1001


def test_digits_are_real_and_split_by_class():
    (x_train, y_train), (x_val, y_val) = digits_arrays(0.2, seed=0)
    assert x_train.shape[1:] == (8, 8, 3) and x_train.dtype == np.uint8
    assert len(y_train) + len(y_val) == 1797 and abs(len(y_val) - 360) <= 5
    assert set(np.unique(y_val)) == set(range(10)) and x_train.max() == 255


def test_folder_pipeline(tmp_path):
    root = write_image_folder(tmp_path / "images", per_class=4)
    (tmp_path / "images" / "red" / "notes.txt").write_text("not an image")
    paths, labels, names = list_image_folder(root)
    assert names == ["blue", "green", "red"] and len(paths) == 12
    assert list(labels) == [0] * 4 + [1] * 4 + [2] * 4
    config = config_from_dict(dict(dataset="folder", train_data=root, validation_split=0.25,
                                   image_size=16, batch_size=3, label_offset=1))
    data = make_datasets(config)
    assert data.num_classes == 4 and data.class_names == ["background", "blue", "green", "red"]
    images, labels = next(iter(data.train))
    assert images.shape == (3, 16, 16, 3) and labels.shape == (3, 4)
    assert float(images.numpy().min()) >= -1 and float(images.numpy().max()) <= 1
    assert np.all(labels.numpy()[:, 0] == 0)  # background never a label
    assert sum(int(x.shape[0]) for x, _ in data.val) == 3


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="No image folder"):
        list_image_folder(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no class sub-folders"):
        list_image_folder(str(tmp_path / "empty"))
    root = write_image_folder(tmp_path / "images", per_class=2)
    os.makedirs(os.path.join(root, "purple"))
    with pytest.raises(ValueError, match=r"class folders without images .*\['purple'\]"):
        list_image_folder(root)


def test_slim_tfrecords(tmp_path):
    labels = write_slim_tfrecord(tmp_path / "train-00000-of-00001", count=6)
    config = config_from_dict(dict(dataset="tfrecord", train_data=str(tmp_path / "train-*"),
                                   val_data=str(tmp_path / "train-*"), num_classes=1001,
                                   image_size=8, batch_size=6, train_examples=6))
    data = make_datasets(config)
    assert data.class_names[1] == "tench" and data.steps_per_epoch == 1
    _, one_hot = next(iter(data.val))
    assert list(np.argmax(one_hot, -1)) == labels  # slim's stored labels, as they are
    with pytest.raises(FileNotFoundError, match="No TFRecord files match"):
        make_datasets(config_from_dict(dict(dataset="tfrecord", train_data=str(tmp_path / "x*"),
                                            num_classes=1001)))
