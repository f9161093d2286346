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
           model, from the ranges it trained (`resnet_tf.quantization.qat`).

TensorFlow and the runtimes' converters; each converter is imported only when its format is
asked for, and a missing one is a one-line error naming the `deploy` extra.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

import keras
import numpy as np
import tensorflow as tf

from resnet_tf.data import preprocessing
from resnet_tf.data.pixels import (
    EVAL_CENTRAL_FRACTION,
    EvalPreprocessing,
    normalize_pixels,
)
from resnet_tf.errors import UserError, require
from resnet_tf.export import int8
from resnet_tf.export.export_dir import (
    ACCURACY_FILE,
    INPUT_NAME,
    ORT_SESSION_CONFIG,
    OUTPUT_NAME,
    PREPROCESSING_FILE,
    RUNTIME_OF_FORMAT,
    check_format,
    check_output,
    class_names_path,
    preprocessing_info,
)
from resnet_tf.models.precision import float32_model
from resnet_tf.utils import write_class_names, write_json

CONVERTERS = {"tflite": [("tensorflow", "TensorFlow Lite's converter")],
              "onnx": [("tf2onnx", "tf2onnx (the ONNX converter)"),
                       ("onnxruntime", "ONNX Runtime")],
              "openvino": [("openvino", "OpenVINO")]}


def export_model(model, output: str, *, format: str = "saved_model",
                 precision: str = "float32", prep: EvalPreprocessing | None = None,
                 image_size: int | None = None, central_fraction=EVAL_CENTRAL_FRACTION,
                 preprocessing: str = "inception", class_names=None, calibration=None,
                 validation=None, max_accuracy_drop: float | None = None,
                 overwrite: bool = False, log=print) -> str:
    """Writes `model` to the export dir `output` in `format` and `precision`.

    How images are prepared: `prep` (a `pixels.EvalPreprocessing`), or `image_size`,
    `central_fraction` and `preprocessing` ("inception": scaling to [-1, 1] inside; "vgg":
    slim's V1 checkpoints, RGB means subtracted inside).

    int8: `calibration` (required unless the model is quantization-aware): float32
    `[K, S, S, 3]` raw 0..255 pixels of real images, prepared as the contract says.
    `validation` (an `evaluate.LabelledImages`, never the calibration images): the int8 file is
    evaluated with its own runtime, beside the float32 model, and accuracy.json records both;
    `max_accuracy_drop` (default 0.01 with validation images) then bounds the top-1 drop: the
    most sensitive convolutions are kept in float, one at a time, until the drop is within it,
    or the export is refused and nothing written (`int8.bounded`).

    The export is assembled in a staging dir beside `output` and moved into place whole: a
    failure leaves `output` as it was.
    """
    from resnet_tf.quantization.qat import is_quantized, uncalibrated

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
    quantization_aware = is_quantized(model)
    check_int8_arguments(precision, quantization_aware, calibration, validation,
                         max_accuracy_drop)
    unset = uncalibrated(model) if quantization_aware else []
    if unset:
        raise UserError(f"the quantization-aware model has activation ranges that saw no data "
                        f"({', '.join(unset[:3])}, ...); train it, or set them "
                        "with resnet_tf.calibrate, before exporting")
    if precision == "int8" and not quantization_aware:
        calibration = check_calibration(calibration, prep.image_size)
    if max_accuracy_drop is None and validation is not None and not quantization_aware:
        max_accuracy_drop = DEFAULT_MAX_ACCURACY_DROP
    for module, what in CONVERTERS.get(format, []):  # before any work: one-line errors
        require(module, what)
    if format == "openvino" and precision == "int8" and not quantization_aware:
        require("nncf", "NNCF (OpenVINO's quantizer)")
    model = float32_model(model)

    def write(target, staging):
        extra = {}
        if format == "saved_model":
            write_saved_model(model, target, prep)
        else:
            os.makedirs(target)
            serve = serving_function(model, prep)
            saved_model = os.path.join(staging, "saved_model")
            write_serving_saved_model(serve, model, saved_model)
            if precision != "int8":
                FLOAT_CONVERTERS[format](serve, saved_model, target, precision)
            else:
                accuracy = write_int8(model, format, prep, serve, saved_model, target, staging,
                                      calibration, validation, max_accuracy_drop,
                                      quantization_aware, log)
                write_json(accuracy, os.path.join(target, ACCURACY_FILE))
                if format == "onnx":  # how ONNX Runtime must run the file (export_dir)
                    extra["onnxruntime_session_config"] = dict(ORT_SESSION_CONFIG)
                extra["quantization"] = accuracy["quantization"]
        if class_names is not None:
            write_class_names(class_names_path(target, format), class_names)
        write_json(preprocessing_info(format, precision, prep, num_classes, **extra),
                   os.path.join(target, PREPROCESSING_FILE))

    return write_export_dir(output, write)


DEFAULT_MAX_ACCURACY_DROP = 0.01


def check_int8_arguments(precision, quantization_aware, calibration, validation,
                         max_accuracy_drop) -> None:
    if quantization_aware and precision != "int8":
        raise UserError("the model is quantization-aware: it trained its int8 form, which only "
                        "--precision int8 exports (a float file of it would simulate int8 in "
                        f"float arithmetic, slower and no smaller). Received: precision "
                        f"{precision}")
    if precision != "int8":
        for name, value in (("calibration images", calibration),
                            ("validation images", validation),
                            ("max_accuracy_drop", max_accuracy_drop)):
            if value is not None:
                raise UserError(f"{name} are for --precision int8. Received: precision "
                                f"{precision}")
    if quantization_aware and max_accuracy_drop is not None:
        raise UserError("max_accuracy_drop bounds post-training quantization; a "
                        "quantization-aware model is exported as it trained (accuracy.json "
                        "still records its accuracy)")
    if max_accuracy_drop is not None:
        if not 0.0 <= max_accuracy_drop < 1.0:
            raise UserError(f"max_accuracy_drop must be in [0, 1). Received: "
                            f"max_accuracy_drop={max_accuracy_drop}")
        if validation is None:
            raise UserError("max_accuracy_drop needs labelled images to measure the drop on: "
                            "export from a model dir with validation images, or give "
                            "--validation-data DIR")


def write_int8(model, format, prep, serve, saved_model, target, staging, calibration,
               validation, max_accuracy_drop, quantization_aware, log) -> dict:
    """Writes the int8 file into `target` and returns accuracy.json: measured on `validation`
    with the file's own runtime beside the float32 (or the quantization-aware Keras) model,
    and for post-training quantization bounded by `max_accuracy_drop`."""
    from resnet_tf.export.runtimes import keras_runner, open_runner
    from resnet_tf.training.evaluate import evaluate

    runtime = RUNTIME_OF_FORMAT[format]
    if quantization_aware:
        int8.quantization_aware_file(format, serve, saved_model, target)
        accuracy = {"quantization": "quantization-aware", "float_layers": [],
                    "calibration_images": 0}
        if validation is not None:
            reference = evaluate(keras_runner(model, prep=prep), validation, progress=False)
            measured = evaluate(open_runner(format, target, "int8", prep), validation,
                                progress=False)
            accuracy.update(_accuracy(measured, reference, "quantization-aware Keras model"))
        return _report_int8(dict(accuracy, runtime=runtime), log)

    quantizer = int8.make_quantizer(format, model, serve, saved_model, calibration, staging)
    accuracy = {"quantization": "post-training", "calibration_images": len(calibration)}
    if validation is None:
        quantizer.write([], target)
        return _report_int8(dict(accuracy, float_layers=[], runtime=runtime), log)
    reference = evaluate(keras_runner(model, prep=prep), validation, progress=False)
    measured, written = {}, []

    def run_candidate(layers, measure, keep=False):
        """Writes the int8 file with `layers` in float into staging, returns (its dir, what
        `measure` says of its runner); the file is removed after unless `keep`."""
        path = os.path.join(staging, f"candidate-{len(written)}")
        os.makedirs(path)
        quantizer.write(list(layers), path)
        written.append(path)
        value = measure(open_runner(format, path, "int8", prep))
        if not keep:
            shutil.rmtree(path, ignore_errors=True)
        return path, value

    def drop(layers):
        """The top-1 drop with `layers` in float; its file is kept until a later one is."""
        previous = measured.get("path")
        measured["path"], measured[tuple(layers)] = run_candidate(
            layers, lambda runner: evaluate(runner, validation, progress=False), keep=True)
        if previous:
            shutil.rmtree(previous, ignore_errors=True)
        return reference["top1"] - measured[tuple(layers)]["top1"]

    def ranking():
        float_probabilities = keras_runner(model, prep=prep)(calibration)
        log(f"int8 {runtime}: ranking {len(int8.quantizable_layers(model))} convolutions by "
            "how much keeping each in float helps (on the calibration images)")
        return int8.rank_by_sensitivity(int8.quantizable_layers(model), lambda layers: (
            run_candidate(layers, lambda runner: int8.mean_kl(float_probabilities,
                                                              runner(calibration)))[1]))

    layers, _, history = int8.bounded(drop, ranking, max_accuracy_drop)
    for name in os.listdir(measured["path"]):  # the last measured is the one chosen
        os.replace(os.path.join(measured["path"], name), os.path.join(target, name))
    accuracy.update(_accuracy(measured[tuple(layers)], reference, "float32 Keras model"),
                    float_layers=list(layers), max_accuracy_drop=max_accuracy_drop,
                    search=[{"float_layers": len(entry), "drop": round(d, 6)}
                            for entry, d in history], runtime=runtime)
    return _report_int8(accuracy, log)


def _accuracy(measured, reference, what) -> dict:
    return {"top1": measured["top1"], "top5": measured["top5"], "count": measured["count"],
            "reference": what, "reference_top1": reference["top1"],
            "reference_top5": reference["top5"],
            "drop": round(reference["top1"] - measured["top1"], 6), "data": measured["data"],
            "measured": True}


def _report_int8(accuracy, log) -> dict:
    if "top1" not in accuracy:
        log("int8 accuracy not measured: no labelled images (export from a model dir with "
            "validation images, or give --validation-data DIR)")
        return dict(accuracy, measured=False)
    kept = accuracy["float_layers"]
    bound = accuracy.get("max_accuracy_drop")
    log(f"int8 {accuracy['runtime']}: top-1 {accuracy['top1']:.4f}, {accuracy['reference']} "
        f"{accuracy['reference_top1']:.4f}, drop {accuracy['drop']:+.4f}"
        + (f" (bound {bound:.4f})" if bound is not None else "")
        + f" over {accuracy['count']} images; "
        + (f"{len(kept)} convolutions kept in float: {', '.join(kept)}" if kept
           else "the ranges it trained" if accuracy["quantization"] == "quantization-aware"
           else "every convolution int8"))
    return accuracy


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
    from resnet_tf.data import datasets as data

    if folder:  # a seeded choice of the folder's images; only those are decoded
        paths, labels, _ = data.list_image_folder(folder, check=False)
        index = np.sort(np.random.default_rng(0).permutation(len(paths))[:count])
        chosen = data.checked(data.ImageFiles([paths[i] for i in index], labels[index]),
                              f"--calibration-data {folder!r}")
        raw = chosen.dataset()
    elif source.model_dir is not None:
        record = source.model_dir.read_data_record()
        raw = data.sample_split(source.config, record, "train", count)
    else:
        raise UserError("int8 calibration needs real images: give --calibration-data DIR (an "
                        "image folder); resnet_tf never calibrates on random data")
    pixels = data.pixels_of(raw, source.prep, count)
    if len(pixels) < count:
        where = f"--calibration-data {folder!r}" if folder else "the run's training data"
        print(f"resnet-tf: warning: int8 is calibrated on {len(pixels)} images, fewer than "
              f"the {count} asked for (--calibration-images): {where} has no more readable "
              "images; ranges from few images may clip what others need", file=sys.stderr,
              flush=True)
    return pixels


def validation_images(source, folder: str | None = None):
    """The labelled images an int8 export is measured on (`evaluate.LabelledImages`): an image
    folder named as the model's classes, or else a model dir's recorded validation images;
    None when there are none. Never the calibration images (those are training images)."""
    from resnet_tf.training import evaluate

    if folder:
        return evaluate.folder_images(folder, source.class_names)
    if source.model_dir is not None and source.model_dir.read_data_record().has("val"):
        return evaluate.labelled_images(model_dir=source.model_dir.root)
    return None


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
# float32 and float16 files (int8: `int8`)


def float_tflite(serve, saved_model, target, precision):
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model,
                                                         signature_keys=["serving_default"])
    # Built-in ops only (no Flex / SELECT_TF_OPS): the file runs with the LiteRT interpreter alone.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if precision == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    with open(os.path.join(target, "model.tflite"), "wb") as f:
        f.write(converter.convert())


def float_onnx(serve, saved_model, target, precision):
    import onnx
    import tf2onnx

    converted, _ = tf2onnx.convert.from_function(serve, input_signature=serve.input_signature,
                                                 opset=int8.ONNX_OPSET)
    onnx.save(int8.stable_names(converted), os.path.join(target, "model.onnx"))


def float_openvino(serve, saved_model, target, precision):
    import openvino as ov

    # save_model compresses float weights to float16 by default: only for --precision float16.
    ov.save_model(ov.convert_model(saved_model), os.path.join(target, "model.xml"),
                  compress_to_fp16=precision == "float16")


FLOAT_CONVERTERS = {"tflite": float_tflite, "onnx": float_onnx, "openvino": float_openvino}
