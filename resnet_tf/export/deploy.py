"""`resnet-tf export`: a model written in the file format of an inference runtime.

    export_model(model, "exports/digits-int8", EvalPreprocessing("inception", 16),
                 format="onnx", precision="int8", quantization=Int8Options(pixels))

Each format is a module of its own (`export.formats`: its files, converters, quantizers and
runner); the export dir's layout and contract are `export_dir`'s and `contract`'s. Every
format is made from the same float32 model (`precision.float32_model`: a mixed-precision
model's float32 copy, same weights), so every file computes what the contract says:

  saved_model  Keras' `ExportArchive`: `serving_default(images)` takes float32 `[N, H, W, 3]`
               raw 0..255 pixels of any size and crops, resizes and normalises itself;
               `serving_bytes(image_bytes)` takes encoded images. Both return
               `probabilities` and `classes`.
  tflite, onnx, openvino   converted from one serving function (`serving_function`): raw
               0..255 pixels `[N, S, S, 3]` already cropped and resized -> `probabilities`.

Precisions:
  float32  float32 weights and arithmetic everywhere (OpenVINO's `save_model` would compress
           weights to float16 unless told not to: it is told not to).
  float16  float16 weights (TFLite: dequantized at load; OpenVINO: compressed IR). ONNX is not
           offered in float16 (its module's `UNSUPPORTED`).
  int8     full integer quantization, per-channel weights, int8 activations, float32 input and
           output (quantize and dequantize run inside): calibrated on real images
           (`Int8Options.calibration`: raw pixels as the contract says), or, for a
           quantization-aware model, from the ranges it trained (`resnet_tf.quantization.qat`).

TensorFlow and the runtimes' converters; each converter is imported only when its format is
asked for, and a missing one is a one-line error naming the `deploy` extra.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import keras
import tensorflow as tf

from resnet_tf.data.pixels import EvalPreprocessing, normalize_pixels
from resnet_tf.errors import UserError, require
from resnet_tf.export.contract import INPUT_NAME, OUTPUT_NAME
from resnet_tf.export.export_dir import (
    ACCURACY_FILE,
    PREPROCESSING_FILE,
    check_format,
    check_output,
    class_names_path,
    preprocessing_info,
)
from resnet_tf.export.formats import FORMATS
from resnet_tf.export.int8 import Int8Options, check_int8_options, write_int8
from resnet_tf.models.precision import float32_model
from resnet_tf.utils import write_class_names, write_json


def export_model(model, output: str, prep: EvalPreprocessing, *, format: str = "saved_model",
                 precision: str = "float32", class_names=None,
                 quantization: Int8Options | None = None, overwrite: bool = False,
                 log=print) -> str:
    """Writes `model` to the export dir `output` in `format` and `precision`, its images
    prepared as `prep` says (`pixels.EvalPreprocessing`); int8 as `quantization` says.

    The export is assembled in a staging dir beside `output` and moved into place whole: a
    failure leaves `output` as it was.
    """
    from resnet_tf.quantization.qat import is_quantized

    check_format(format, precision)
    output = check_output(output, overwrite)
    if not isinstance(prep, EvalPreprocessing):
        raise UserError(f"prep must be a pixels.EvalPreprocessing. Received: prep={prep!r}")
    num_classes = int(model.output_shape[-1])
    if class_names is not None and len(class_names) != num_classes:
        raise UserError(f"{len(class_names)} class names for a model with {num_classes} "
                        "classes")
    quantization_aware = is_quantized(model)
    options = check_int8_options(precision, quantization_aware, quantization or Int8Options(),
                                 model, prep)
    module = FORMATS[format]
    converters = module.CONVERTERS
    if precision == "int8" and not quantization_aware:
        converters += getattr(module, "POST_TRAINING_CONVERTERS", ())
    for name, what in converters:  # before any work: one-line errors
        require(name, what)
    model = float32_model(model)

    def write(target, staging):
        extra = {}
        if not module.FROM_SERVING_FUNCTION:
            module.write_model(model, target, prep)
        else:
            os.makedirs(target)
            serve = serving_function(model, prep)
            saved_model = os.path.join(staging, "saved_model")
            write_serving_saved_model(serve, model, saved_model)
            if precision != "int8":
                module.write_float(serve, saved_model, target, precision)
            else:
                accuracy = write_int8(model, module, prep, serve, saved_model, target, staging,
                                      options, quantization_aware, log)
                write_json(accuracy, os.path.join(target, ACCURACY_FILE))
                extra.update(module.int8_info(), quantization=accuracy["quantization"])
        if class_names is not None:
            write_class_names(class_names_path(target, format), class_names)
        write_json(preprocessing_info(format, precision, prep, num_classes, **extra),
                   os.path.join(target, PREPROCESSING_FILE))

    return write_export_dir(output, write)
















def write_export_dir(output: str, write) -> str:
    """Calls `write(target, staging)` to fill a new dir `target` inside a staging dir beside
    `output`, then swaps it into place: the earlier export (if any) moves aside and is removed
    only once the new one is in place, and comes back if that fails."""
    parent = os.path.dirname(output)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        target = os.path.join(staging, "export")
        write(target, staging)
        old = os.path.join(staging, "old")
        if os.path.isdir(output):
            os.replace(output, old)
        try:
            os.replace(target, output)
        except BaseException:
            if os.path.isdir(old) and not os.path.exists(output):
                os.replace(old, output)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output








# --------------------------------------------------------------------------------------------
# The SavedModel (preprocessing inside)


# --------------------------------------------------------------------------------------------
# The serving function every runtime format is converted from


def serving_function(model, prep: EvalPreprocessing):
    """A `tf.function`: raw 0..255 pixels `[N, S, S, 3]` -> {"probabilities": [N, C]}, in
    inference mode, normalising as `pixels.normalize_pixels` (for "inception" exactly slim's
    scaling to [-1, 1]). `model` computes in float32 (`float32_model`)."""
    size = prep.image_size

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32,
                                                name=INPUT_NAME)])
    @tf.autograph.experimental.do_not_convert
    def serve(images):
        logits = tf.cast(model(normalize_pixels(images, prep.method), training=False),
                         tf.float32)
        return {OUTPUT_NAME: tf.nn.softmax(logits, axis=-1)}

    return serve


def write_serving_saved_model(serve, model, path) -> None:
    """The SavedModel of the serving function, which the TFLite and OpenVINO converters read."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve.python_function,
                         input_signature=serve.input_signature)
    archive.write_out(path, verbose=False)


