"""`resnet-tf export`: a model written in the file format of an inference runtime.

    export_model(model, "exports/digits-int8", format="onnx", precision="int8",
                 image_size=16, calibration=pixels)

The formats, the files and the input contract are `export_dir`'s. Every format is made from the
same float32 model (`precision.float32_model`: a mixed-precision model's float32 copy, same
weights), so every file computes what the contract says:

  saved_model  Keras' `ExportArchive`: `serving_default(images)` takes float32 `[N, H, W, 3]`
               raw 0..255 pixels of any size and crops, resizes and normalises itself;
               `serving_bytes(image_bytes)` takes encoded images. Both return
               `probabilities` and `classes`.
  tflite, onnx, openvino   converted from one serving function: raw 0..255 pixels
               `[N, S, S, 3]` already cropped and resized -> `probabilities`.

Precisions:
  float32  float32 weights and arithmetic everywhere (OpenVINO's `save_model` would compress
           weights to float16 unless told not to: it is told not to).
  float16  float16 weights (TFLite: dequantized at load; OpenVINO: compressed IR). ONNX is not
           offered in float16 (`export_dir.UNSUPPORTED`).
  int8     full integer quantization, per-channel weights, int8 activations, float32 input and
           output (quantize and dequantize run inside): calibrated on real images
           (`calibration`: raw pixels as the contract says), or, for a quantization-aware
           model, from the ranges it trained (`resnet_tf.quantization`).

TensorFlow and the runtimes' converters; each converter is imported only when its format is
asked for, and a missing one is a one-line error naming the `deploy` extra.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from resnet_tf import preprocessing
from resnet_tf.errors import UserError, require
from resnet_tf.export_dir import (INPUT_NAME, OUTPUT_NAME, PREPROCESSING_FILE, check_format,
                                  check_output, class_names_path, preprocessing_info)
from resnet_tf.pixels import EVAL_CENTRAL_FRACTION, EvalPreprocessing, normalize_pixels
from resnet_tf.precision import float32_model
from resnet_tf.utils import write_class_names, write_json

ONNX_OPSET = 17
CONVERTERS = {"tflite": [("tensorflow", "TensorFlow Lite's converter")],
              "onnx": [("tf2onnx", "tf2onnx (the ONNX converter)"),
                       ("onnxruntime", "ONNX Runtime")],
              "openvino": [("openvino", "OpenVINO")]}


def export_model(model, output: str, *, format: str = "saved_model",
                 precision: str = "float32", prep: EvalPreprocessing | None = None,
                 image_size: int | None = None, central_fraction=EVAL_CENTRAL_FRACTION,
                 preprocessing: str = "inception", class_names=None, calibration=None,
                 overwrite: bool = False) -> str:
    """Writes `model` to the export dir `output` in `format` and `precision`.

    How images are prepared: `prep` (a `pixels.EvalPreprocessing`), or `image_size`,
    `central_fraction` and `preprocessing` ("inception": scaling to [-1, 1] inside; "vgg":
    slim's V1 checkpoints, RGB means subtracted inside). `calibration` (int8 only, required
    there): float32 `[K, S, S, 3]` raw 0..255 pixels of real images, prepared as the contract
    says. The export is assembled in a staging dir beside `output` and moved into place whole:
    a failure leaves `output` as it was.
    """
    check_format(format, precision)
    output = check_output(output, overwrite)
    if prep is None:
        if image_size is None:
            raise UserError("export_model needs prep= or image_size=")
        prep = EvalPreprocessing(preprocessing, image_size, central_fraction)
    num_classes = int(model.output_shape[-1])
    if class_names is not None and len(class_names) != num_classes:
        raise UserError(f"{len(class_names)} class names for a model with {num_classes} "
                        "classes")
    if precision == "int8":
        calibration = check_calibration(calibration, prep.image_size)
    for module, what in CONVERTERS.get(format, []):  # before any work: one-line errors
        require(module, what)
    if format == "openvino" and precision == "int8":
        require("nncf", "NNCF (OpenVINO's quantizer)")
    model = float32_model(model)

    def write(target, staging):
        if format == "saved_model":
            write_saved_model(model, target, prep)
        else:
            os.makedirs(target)
            serve = serving_function(model, prep)
            saved_model = os.path.join(staging, "saved_model")
            write_serving_saved_model(serve, model, saved_model)
            if format == "tflite":
                to_tflite(saved_model, target, precision, calibration)
            elif format == "onnx":
                to_onnx(serve, target, precision, calibration, staging)
            else:
                to_openvino(saved_model, target, precision, calibration)
        if class_names is not None:
            write_class_names(class_names_path(target, format), class_names)
        write_json(preprocessing_info(format, precision, prep, num_classes),
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


def calibration_pixels(source, folder: str | None = None, count: int = 300) -> np.ndarray:
    """Up to `count` real images for int8 calibration, prepared as `source.prep` says: from an
    image folder, or else from the training images a model dir's run recorded (a seeded
    choice, the same every time). `source` is a `loading.ModelSource`."""
    from resnet_tf import data

    if folder:
        paths, labels, _ = data.list_image_folder(folder)
        index = np.sort(np.random.default_rng(0).permutation(len(paths))[:count])
        raw = data.image_files_dataset([paths[i] for i in index], labels[index])
    elif source.model_dir is not None:
        record = source.model_dir.read_data_record()
        raw = data.sample_split(source.config, record, "train", count)
    else:
        raise UserError("int8 calibration needs real images: give --calibration-data DIR (an "
                        "image folder); resnet_tf never calibrates on random data")
    return data.pixels_of(raw, source.prep, count)


def check_calibration(calibration, image_size):
    if calibration is None:
        raise UserError("int8 quantization needs calibration images: give "
                        "--calibration-data DIR (an image folder), or export from a model dir "
                        "(its training data is used); resnet_tf never calibrates on random "
                        "data")
    calibration = np.asarray(calibration, np.float32)
    if calibration.ndim != 4 or calibration.shape[1:] != (image_size, image_size, 3) or \
            not len(calibration):
        raise UserError(f"calibration must be [K, {image_size}, {image_size}, 3] pixels. "
                        f"Received: shape {calibration.shape}")
    return calibration


# --------------------------------------------------------------------------------------------
# The SavedModel (preprocessing inside)


def write_saved_model(model, target: str, prep: EvalPreprocessing) -> None:
    """Writes the SavedModel with `serving_default` (raw pixels of any size) and
    `serving_bytes` (encoded images) to the new dir `target`."""

    def classify(inputs):
        logits = tf.cast(model(inputs, training=False), tf.float32)
        probabilities = tf.nn.softmax(logits, axis=-1)
        return {OUTPUT_NAME: probabilities, "classes": tf.argmax(probabilities, axis=-1)}

    def serve_images(images):
        if prep.method == "inception":  # floats in [0, 1], as slim's preprocessing takes them
            images = preprocessing.scale_pixels(images)
        return classify(preprocessing.prepare_input(images, prep))

    def serve_bytes(image_bytes):
        def one(encoded):
            image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
            return preprocessing.prepare_input(image, prep)

        images = tf.map_fn(one, image_bytes, fn_output_signature=tf.TensorSpec(
            [prep.image_size, prep.image_size, 3], tf.float32))
        return classify(images)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve_images, input_signature=[
        tf.TensorSpec([None, None, None, 3], tf.float32, name="images")])
    archive.add_endpoint("serving_bytes", serve_bytes, input_signature=[
        tf.TensorSpec([None], tf.string, name="image_bytes")])
    archive.write_out(target, verbose=False)


def export_saved_model(model, output: str, image_size: int,
                       central_fraction: float = EVAL_CENTRAL_FRACTION, class_names=None,
                       overwrite: bool = False) -> str:
    """`export_model(format="saved_model")` with slim's Inception eval preprocessing."""
    return export_model(model, output, format="saved_model", image_size=image_size,
                        central_fraction=central_fraction, class_names=class_names,
                        overwrite=overwrite)


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


# --------------------------------------------------------------------------------------------
# Converters


def to_tflite(saved_model, target, precision, calibration):
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model,
                                                         signature_keys=["serving_default"])
    # Built-in ops only (no Flex / SELECT_TF_OPS): the file runs with the LiteRT interpreter alone.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if precision == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif precision == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([calibration[i:i + 1]]
                                                    for i in range(len(calibration)))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # inference_input_type / inference_output_type stay float32: the quantize and dequantize
        # ops are inside, so callers never handle scales.
    with open(os.path.join(target, "model.tflite"), "wb") as f:
        f.write(converter.convert())


def to_onnx(serve, target, precision, calibration, staging):
    import tf2onnx

    float_path = os.path.join(target if precision == "float32" else staging, "model.onnx")
    tf2onnx.convert.from_function(serve, input_signature=serve.input_signature,
                                  opset=ONNX_OPSET, output_path=float_path)
    if precision == "int8":
        from onnxruntime import quantization
        from onnxruntime.quantization.shape_inference import quant_pre_process

        prepared = os.path.join(staging, "prepared.onnx")
        quant_pre_process(float_path, prepared, skip_symbolic_shape=True)

        class Reader(quantization.CalibrationDataReader):
            def __init__(self):
                self.batches = iter(calibration[i:i + 1] for i in range(len(calibration)))

            def get_next(self):
                batch = next(self.batches, None)
                return None if batch is None else {INPUT_NAME: batch}

        quantization.quantize_static(
            prepared, os.path.join(target, "model.onnx"), Reader(),
            quant_format=quantization.QuantFormat.QDQ, per_channel=True,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8)


def to_openvino(saved_model, target, precision, calibration):
    import openvino as ov

    model = ov.convert_model(saved_model)
    if precision == "int8":
        import logging

        import nncf

        nncf.set_log_level(logging.ERROR)
        model = nncf.quantize(model, nncf.Dataset([calibration[i:i + 1]
                                                   for i in range(len(calibration))]),
                              subset_size=len(calibration))
    # save_model compresses float weights to float16 by default: only for --precision float16.
    ov.save_model(model, os.path.join(target, "model.xml"),
                  compress_to_fp16=precision == "float16")
