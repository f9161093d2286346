"""slim's Inception preprocessing (`research/slim/preprocessing/inception_preprocessing.py`), TF 2.

The preprocessing slim's ResNet V2 checkpoints were trained and evaluated with:

  train: a random crop covering 5%..100% of the image with aspect ratio 3/4..4/3
         (`sample_distorted_bounding_box`, min_object_covered 0.1), resized bilinearly to the
         output size, a random left-right flip, random brightness (32/255) and saturation
         (0.5..1.5) in random order (slim's `fast_mode`), values clipped to [0, 1];
  eval:  a central crop keeping 87.5% of each side, bilinear resize to the output size;
  both:  values in [0, 1] mapped to [-1, 1] by `(x - 0.5) * 2`.

The resize is TF 1's `resize_bilinear(align_corners=False)` (no half-pixel centres), as in slim;
TF 2's `tf.image.resize` samples at half-pixel centres and gives (slightly) different pixels.

Images come in as uint8 (0..255) or floats already in [0, 1] (`tf.image.convert_image_dtype`
semantics, like slim). `scale_pixels` handles the exported model's raw 0..255 floats.

A model's evaluation has one recipe, `pixels.EvalPreprocessing`, and two entry points here:
`prepare_pixels` (the crop and resize: raw 0..255 pixels, what the runtime exports take) and
`prepare_input` (then the normalisation: what the Keras model and the SavedModel take).
Training's validation, `evaluate`, `predict`, `export` and int8 calibration all go through
them; training's distortions (`inception_distortions`, `cifar_distortions`) end in [0, 1] and
`normalize_unit` scales them as the recipe's method says. slim's own names
(`preprocess_for_eval`, `preprocess_for_train`) are kept, tested equal to slim's TF 1 code.

TensorFlow only (tf.data and serving); the model code does not import it.
"""

from __future__ import annotations

import tensorflow as tf

from resnet_tf.data.pixels import (
    EVAL_CENTRAL_FRACTION,
    normalize_pixels,
)
from resnet_tf.errors import UserError
from resnet_tf.utils import check_positive_int


def _to_unit_float(image):
    """uint8 -> [0, 1] float32; floats are taken to be in [0, 1] already (slim's convention)."""
    if image.dtype != tf.float32:
        image = tf.image.convert_image_dtype(image, tf.float32)
    return image


def _resize(image, height, width):
    # TF 1 semantics, as slim: `tf.image.resize_bilinear(..., align_corners=False)`.
    batched = image[tf.newaxis] if image.shape.rank == 3 else image
    resized = tf.raw_ops.ResizeBilinear(images=batched, size=[height, width],
                                        align_corners=False, half_pixel_centers=False)
    return resized[0] if image.shape.rank == 3 else resized


def scale_to_signed_unit(image):
    """[0, 1] -> [-1, 1]: slim's `tf.multiply(tf.subtract(image, 0.5), 2.0)`."""
    return tf.multiply(tf.subtract(image, 0.5), 2.0)


def central_crop(image, central_fraction):
    """`tf.image.central_crop` (one image or a batch); a fraction of None or 1 keeps all."""
    if central_fraction is None or central_fraction >= 1.0:
        return image
    return tf.image.central_crop(image, central_fraction)


def preprocess_for_eval(image, height, width, central_fraction=EVAL_CENTRAL_FRACTION):
    """slim's `preprocess_for_eval`: central crop, bilinear resize, scale to [-1, 1].

    Works on one image `[H, W, 3]` or a batch `[N, H, W, 3]`; each image of a batch gets exactly
    what it would get alone.
    """
    _check_size(height, width)
    if central_fraction is not None and not 0.0 < central_fraction <= 1.0:
        raise UserError(f"central_fraction must be in (0, 1]. "
                         f"Received: central_fraction={central_fraction}")
    image = _to_unit_float(image)
    image = central_crop(image, central_fraction)
    image = _resize(image, height, width)
    return scale_to_signed_unit(image)


def _distort_color_fast(image, seed=None):
    """slim's `distort_color(..., fast_mode=True)`: brightness and saturation in random order."""
    def brightness_first():
        x = tf.image.random_brightness(image, max_delta=32.0 / 255.0, seed=seed)
        return tf.image.random_saturation(x, lower=0.5, upper=1.5, seed=seed)

    def saturation_first():
        x = tf.image.random_saturation(image, lower=0.5, upper=1.5, seed=seed)
        return tf.image.random_brightness(x, max_delta=32.0 / 255.0, seed=seed)

    order = tf.random.uniform([], maxval=2, dtype=tf.int32, seed=seed)
    image = tf.cond(tf.equal(order, 0), brightness_first, saturation_first)
    return tf.clip_by_value(image, 0.0, 1.0)


def preprocess_for_train(image, height, width, bbox=None, color_distortion=True, seed=None):
    """slim's `preprocess_for_train` (fast_mode): random crop, resize, flip, colour; to [-1, 1].

    One image `[H, W, 3]`. `bbox` is slim's `[1, num_boxes, 4]` object boxes; None means the
    whole image.
    """
    return scale_to_signed_unit(inception_distortions(image, height, width, bbox,
                                                      color_distortion, seed))


def inception_distortions(image, height, width, bbox=None, color_distortion=True, seed=None):
    """`preprocess_for_train` before its scaling: the distorted image in [0, 1]."""
    _check_size(height, width)
    image = _to_unit_float(image)
    if bbox is None:
        bbox = tf.constant([0.0, 0.0, 1.0, 1.0], dtype=tf.float32, shape=[1, 1, 4])
    begin, size, _ = tf.image.sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=bbox,
        min_object_covered=0.1,
        aspect_ratio_range=(0.75, 1.33),
        area_range=(0.05, 1.0),
        max_attempts=100,
        use_image_if_no_bounding_boxes=True,
        seed=0 if seed is None else seed,
    )
    image = tf.slice(image, begin, size)
    image.set_shape([None, None, 3])
    image = _resize(image, height, width)
    image = tf.image.random_flip_left_right(image, seed=seed)
    if color_distortion:
        image = _distort_color_fast(image, seed=seed)
    return image


def cifar_preprocess_for_train(image, height, width, padding=4, seed=None):
    """[1]'s CIFAR augmentation: (resize to height x width if needed), zero-pad `padding`
    pixels per side, a random height x width crop, a random left-right flip; then [-1, 1]."""
    return scale_to_signed_unit(cifar_distortions(image, height, width, padding, seed))


def cifar_distortions(image, height, width, padding=4, seed=None):
    """`cifar_preprocess_for_train` before its scaling: the distorted image in [0, 1]."""
    _check_size(height, width)
    image = _to_unit_float(image)
    if image.shape[0] != height or image.shape[1] != width:
        image = _resize(image, height, width)
    image = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
    image = tf.image.random_crop(image, [height, width, 3], seed=seed)
    return tf.image.random_flip_left_right(image, seed=seed)


def prepare_pixels(image, prep):
    """The eval crop and resize of `prep` (a `pixels.EvalPreprocessing`) without the final
    normalisation: raw float32 0..255 pixels at `prep.image_size`, what the runtime exports
    take (`pixels.normalize_pixels` is inside them). One image `[H, W, 3]` or a batch of one
    size.

    crop "central": the central `central_fraction` of each side, bilinear resize;
    `scale_to_signed_unit(prepare_pixels(x, prep) / 255)` is `preprocess_for_eval(x, S, S,
    fraction)` up to float rounding. crop "side" (slim's `vgg_preprocessing.preprocess_for_eval`
    before its mean subtraction): the smaller side resized to `resize_side` keeping the aspect
    ratio (TF 1 bilinear), then the central square.
    """
    if prep.crop == "side":
        return _side_crop(image, prep.image_size, prep.resize_side)
    _check_size(prep.image_size, prep.image_size)
    image = central_crop(_to_unit_float(image), prep.central_fraction)
    return _resize(image, prep.image_size, prep.image_size) * 255.0


def prepare_input(image, prep):
    """The model input of `prep`: `prepare_pixels`, then its normalisation (exactly slim's
    `preprocess_for_eval` for "inception", up to float rounding)."""
    if prep.method != "inception" or prep.crop != "central":
        return normalize_pixels(prepare_pixels(image, prep), prep.method)
    return preprocess_for_eval(image, prep.image_size, prep.image_size, prep.central_fraction)


def normalize_unit(image, method: str):
    """[0, 1] pixels (what the training distortions give) -> the model input of `method`:
    slim's `scale_to_signed_unit` for "inception", `normalize_pixels` otherwise."""
    if method == "inception":
        return scale_to_signed_unit(image)
    return normalize_pixels(image * 255.0, method)


def _side_crop(image, size, resize_side):
    """slim's `vgg_preprocessing.preprocess_for_eval` before its mean subtraction: resize the
    smaller side to `resize_side` keeping the aspect ratio (TF 1 bilinear), then the central
    `size` x `size` crop; float32 0..255 (slim: `tf.to_float`, values stay 0..255)."""
    _check_size(size, size)
    _check_size(resize_side, resize_side)
    image = tf.cast(image, tf.float32)
    shape = tf.shape(image)
    height = tf.cast(shape[-3], tf.float32)
    width = tf.cast(shape[-2], tf.float32)
    scale = tf.cond(height > width, lambda: resize_side / width, lambda: resize_side / height)
    new_height = tf.cast(tf.math.rint(height * scale), tf.int32)
    new_width = tf.cast(tf.math.rint(width * scale), tf.int32)
    batched = image[tf.newaxis] if image.shape.rank == 3 else image
    resized = tf.raw_ops.ResizeBilinear(images=batched, size=tf.stack([new_height, new_width]),
                                        align_corners=False, half_pixel_centers=False)
    top = (new_height - size) // 2
    left = (new_width - size) // 2
    cropped = resized[:, top:top + size, left:left + size, :]
    cropped = tf.ensure_shape(cropped, [None, size, size, image.shape[-1]])
    return cropped[0] if image.shape.rank == 3 else cropped


def scale_pixels(images):
    """Raw 0..255 float pixels (what the exported model takes) -> [0, 1]."""
    return tf.cast(images, tf.float32) / 255.0


def _check_size(height, width):
    check_positive_int("height", height)
    check_positive_int("width", width)
