"""How raw pixels become a model's input: the facts every part shares, with no TensorFlow.

A model trained by `resnet-tf train`, and slim's V2 releases, take "inception" inputs: RGB
scaled to [-1, 1] by slim's `(x / 255 - 0.5) * 2`. slim's V1 releases take "vgg" inputs: RGB
0..255 minus the ImageNet means, no scaling. Weights from other sources (`resnet_tf.weights`)
take theirs: "torchvision" (torchvision's and timm's: `(x / 255 - mean) / std`), "caffe"
(keras.applications' ResNet V1: BGR 0..255 minus the BGR means); keras.applications' ResNetV2
takes "inception"'s. At evaluation an image is first cropped and resized
to the model's size; `EvalPreprocessing` says how, and it is the one recipe that training's
validation, `evaluate`, `predict`, `export` (its preprocessing.json) and int8 calibration share.

The TensorFlow implementation of the crops and resizes is `resnet_tf.data.preprocessing`;
`normalize_pixels` uses `keras.ops` (any backend, and inside the exported graphs).
"""

from __future__ import annotations

import dataclasses

from resnet_tf.errors import UserError
from resnet_tf.utils import check_positive_int

PREPROCESSINGS = ("inception", "vgg", "torchvision", "caffe")
# The methods that resize the smaller side to `resize_side`, then take the central square.
SIDE_CROPS = ("vgg", "torchvision", "caffe")
CROPS = ("central", "side")
EVAL_CENTRAL_FRACTION = 0.875  # slim's inception eval crop
VGG_MEAN_RGB = (123.68, 116.78, 103.94)
TORCHVISION_MEAN_RGB = (0.485, 0.456, 0.406)  # of pixels / 255
TORCHVISION_STD_RGB = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # keras.applications.imagenet_utils, "caffe"
VGG_RESIZE_SIDE = 256  # slim's vgg_preprocessing._RESIZE_SIDE_MIN: the eval resize at 224 px
VGG_IMAGE_SIZE = 224


def normalize_pixels(pixels, preprocessing: str = "inception"):
    """Raw float 0..255 RGB pixels `[..., 3]` -> model input, with `keras.ops`. "inception"
    is exactly slim's `(x / 255 - 0.5) * 2`; "vgg" subtracts the RGB means; "torchvision"
    is `(x / 255 - mean) / std`; "caffe" reverses the channels to BGR and subtracts the BGR
    means (keras.applications' `preprocess_input` for ResNet V1)."""
    from keras import ops

    def constant(values):
        return ops.cast(ops.convert_to_tensor(values), pixels.dtype)

    if preprocessing == "vgg":
        return ops.subtract(pixels, constant(VGG_MEAN_RGB))
    if preprocessing == "torchvision":
        return ops.divide(ops.subtract(ops.divide(pixels, 255.0), constant(TORCHVISION_MEAN_RGB)),
                          constant(TORCHVISION_STD_RGB))
    if preprocessing == "caffe":
        return ops.subtract(ops.flip(pixels, axis=-1), constant(CAFFE_MEAN_BGR))
    check_preprocessing(preprocessing)
    return ops.multiply(ops.subtract(ops.divide(pixels, 255.0), 0.5), 2.0)


def default_crop(method: str) -> str:
    """A method's own crop: "side" for `SIDE_CROPS`, else "central"."""
    return "side" if method in SIDE_CROPS else "central"


def check_preprocessing(preprocessing: str) -> None:
    if preprocessing not in PREPROCESSINGS:
        raise UserError(f"preprocessing must be one of {list(PREPROCESSINGS)}. "
                        f"Received: preprocessing={preprocessing!r}")


@dataclasses.dataclass(frozen=True)
class EvalPreprocessing:
    """slim's evaluation crop and resize for one model, then its normalisation.

    method "inception": the central `central_fraction` of each side (None or 1.0: the whole
        image), a bilinear resize (TF 1 `resize_bilinear`, no half-pixel centres) to
        `image_size`, then `normalize_pixels(x, "inception")`.
    method "vgg": the smaller side resized to `resize_side` keeping the aspect ratio, the
        central `image_size` square, then the RGB means subtracted. slim evaluates its V1
        releases at 224 px from a 256 px side; at other sizes the side scales with the size
        (`round(image_size * 256 / 224)`) unless given.
    methods "torchvision" and "caffe": the same crop (`SIDE_CROPS`), then their own
        normalisation (`normalize_pixels`); each source's side is in `resnet_tf.weights`.
    """

    method: str = "inception"
    image_size: int = 224
    central_fraction: float | None = EVAL_CENTRAL_FRACTION
    resize_side: int | None = None
    # "central" (the central fraction, resized) or "side" (the smaller side resized, the
    # central square); None: the method's own ("side" for SIDE_CROPS). A run from other
    # weights keeps its own crop with their normalisation.
    crop: str | None = None

    def __post_init__(self):
        check_preprocessing(self.method)
        check_positive_int("image_size", self.image_size)
        if self.crop is None:
            object.__setattr__(self, "crop", default_crop(self.method))
        if self.crop not in CROPS:
            raise UserError(f"crop must be one of {list(CROPS)}. Received: crop={self.crop!r}")
        if self.crop == "side":
            if self.resize_side is None:
                object.__setattr__(self, "resize_side", round(
                    self.image_size * VGG_RESIZE_SIDE / VGG_IMAGE_SIZE))
            check_positive_int("resize_side", self.resize_side)
            if self.resize_side < self.image_size:
                raise UserError(f"resize_side must be at least image_size. Received: "
                                f"resize_side={self.resize_side}, image_size={self.image_size}")
            object.__setattr__(self, "central_fraction", None)
        else:
            if self.central_fraction is not None and not 0.0 < self.central_fraction <= 1.0:
                raise UserError(f"central_fraction must be in (0, 1] or None. "
                                f"Received: central_fraction={self.central_fraction}")
            object.__setattr__(self, "resize_side", None)

    def info(self) -> dict:
        """The fields preprocessing.json records."""
        info = {"preprocessing": self.method, "image_size": self.image_size}
        if self.crop == "side":
            info.update(resize_side=self.resize_side)
        else:
            info.update(central_fraction=self.central_fraction)
        if self.crop != default_crop(self.method):
            info.update(crop=self.crop)  # not the method's own
        if self.method == "vgg":
            info.update(mean_rgb=list(VGG_MEAN_RGB))
        elif self.method == "torchvision":
            info.update(mean_rgb=list(TORCHVISION_MEAN_RGB), std_rgb=list(TORCHVISION_STD_RGB))
        elif self.method == "caffe":
            info.update(mean_bgr=list(CAFFE_MEAN_BGR))
        return info

    @classmethod
    def from_info(cls, info: dict) -> "EvalPreprocessing":
        return cls(method=info.get("preprocessing", "inception"), image_size=info["image_size"],
                   central_fraction=info.get("central_fraction"),
                   resize_side=info.get("resize_side"), crop=info.get("crop"))
