"""slim's Inception preprocessing: the eval path equals slim's own code (TF 1 ops), hand cases."""

import numpy as np
import pytest
import tensorflow as tf

from resnet_tf.data import preprocessing
from resnet_tf.data.pixels import EvalPreprocessing


def slim_preprocess_for_eval(image, height, width, central_fraction=0.875):
    """research/slim's `preprocess_for_eval`, verbatim in its TF 1 ops."""
    if image.dtype != tf.float32:
        image = tf.image.convert_image_dtype(image, dtype=tf.float32)
    if central_fraction:
        image = tf.image.central_crop(image, central_fraction=central_fraction)
    if height and width:
        image = tf.expand_dims(image, 0)
        image = tf.compat.v1.image.resize_bilinear(image, [height, width], align_corners=False)
        image = tf.squeeze(image, [0])
    image = tf.subtract(image, 0.5)
    return tf.multiply(image, 2.0)


@pytest.mark.parametrize("shape, size", [((320, 480, 3), 299), ((224, 224, 3), 224),
                                         ((37, 53, 3), 64)])
def test_eval_equals_slims_code(shape, size):
    image = tf.constant(np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8))
    ours = preprocessing.preprocess_for_eval(image, size, size)
    np.testing.assert_allclose(ours, slim_preprocess_for_eval(image, size, size), atol=1e-6)
    assert ours.shape == (size, size, 3)


def test_eval_of_a_batch_equals_each_image_alone():
    images = np.random.default_rng(1).uniform(0, 255, (3, 40, 50, 3)).astype(np.float32)
    batch = preprocessing.preprocess_for_eval(preprocessing.scale_pixels(images), 32, 32)
    for i in range(3):
        alone = preprocessing.preprocess_for_eval(tf.constant(images[i] / 255.0), 32, 32)
        np.testing.assert_allclose(batch[i], alone, atol=1e-6)


def test_resize_is_tf1_bilinear_without_half_pixel_centres():
    # TF 1 `resize_bilinear(align_corners=False)` maps output x to input x * in / out: a 2 -> 4
    # upsampling samples the input at 0, 0.5, 1, 1.5 (clamped), not at half-pixel centres.
    image = tf.constant([[[0.0], [1.0]]] * 2)  # 2x2, columns 0 and 1
    out = preprocessing.preprocess_for_eval(tf.image.grayscale_to_rgb(image), 4, 4, None)
    np.testing.assert_allclose(out[0, :, 0], (np.array([0.0, 0.5, 1.0, 1.0]) - 0.5) * 2)


def test_scaling_maps_0_255_to_minus_1_1():
    image = tf.constant(np.array([[[0, 0, 0], [255, 255, 255]]], np.uint8))
    out = preprocessing.preprocess_for_eval(image, 1, 2, None)
    np.testing.assert_allclose(out[0], [[-1, -1, -1], [1, 1, 1]])


def test_train_distortions_stay_in_range_and_vary():
    image = tf.constant(np.random.default_rng(2).integers(0, 256, (80, 100, 3), dtype=np.uint8))
    outs = [preprocessing.preprocess_for_train(image, 32, 32).numpy() for _ in range(4)]
    for out in outs:
        assert out.shape == (32, 32, 3) and out.min() >= -1.0 and out.max() <= 1.0
    assert not all(np.allclose(outs[0], o) for o in outs[1:])  # random crops differ


def test_bad_sizes_are_named():
    with pytest.raises(ValueError, match="height must be a positive integer"):
        preprocessing.preprocess_for_eval(tf.zeros((4, 4, 3)), 0, 4)
    with pytest.raises(ValueError, match="central_fraction must be in"):
        preprocessing.preprocess_for_eval(tf.zeros((4, 4, 3)), 4, 4, 1.5)


def test_cifar_augmentation_is_a_shifted_flipped_copy():
    image = np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    scaled = (image / 255.0 - 0.5) * 2
    padded = np.pad(scaled, [(4, 4), (4, 4), (0, 0)], constant_values=-1.0)  # zero pixels
    out = preprocessing.cifar_preprocess_for_train(tf.constant(image), 32, 32).numpy()
    assert out.shape == (32, 32, 3)
    windows = [padded[i:i + 32, j:j + 32] for i in range(9) for j in range(9)]
    assert any(np.allclose(out, w, atol=1e-6) or np.allclose(out, w[:, ::-1], atol=1e-6)
               for w in windows)


def test_vgg_eval_is_slims_aspect_preserving_resize_and_central_crop():
    """slim's vgg_preprocessing.preprocess_for_eval (before its mean subtraction), written as
    slim writes it: smaller side to 256 (rint of the scaled sides), TF 1 bilinear, central
    crop at (new - 224) // 2."""
    rng = np.random.default_rng(0)
    for height, width in ((300, 200), (257, 380), (224, 224)):
        image = rng.integers(0, 256, (height, width, 3)).astype(np.uint8)
        scale = 256 / min(height, width)
        new_h, new_w = int(np.rint(height * scale)), int(np.rint(width * scale))
        resized = tf.compat.v1.image.resize_bilinear(
            tf.cast(image[None], tf.float32), [new_h, new_w], align_corners=False)[0].numpy()
        top, left = (new_h - 224) // 2, (new_w - 224) // 2
        expected = resized[top:top + 224, left:left + 224]
        prep = EvalPreprocessing("vgg", 224)
        actual = preprocessing.prepare_pixels(tf.constant(image), prep).numpy()
        np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-4)
        # The model input subtracts slim's RGB means.
        np.testing.assert_allclose(
            preprocessing.prepare_input(image, prep),
            actual - np.array([123.68, 116.78, 103.94], np.float32), rtol=1e-6, atol=1e-4)
