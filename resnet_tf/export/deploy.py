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

import dataclasses
import os
import shutil
import sys
import tempfile

import keras
import numpy as np
import tensorflow as tf

from resnet_tf.data.pixels import EvalPreprocessing, normalize_pixels
from resnet_tf.errors import UserError, require
from resnet_tf.export import int8
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
from resnet_tf.models.precision import float32_model
from resnet_tf.utils import write_class_names, write_json


@dataclasses.dataclass(frozen=True)
class Int8Options:
    """How an int8 export is calibrated, measured and bounded.

    calibration: float32 `[K, S, S, 3]` raw 0..255 pixels of real images, prepared as the
      export's `prep` says (required for post-training quantization; a quantization-aware
      model needs none).
    validation: labelled images (`evaluate.LabelledImages`, never the calibration images): the
      int8 file is evaluated with its own runtime beside the float32 model, and accuracy.json
      records both.
    max_accuracy_drop: bounds the top-1 drop (default 0.01 with validation images): the most
      sensitive convolutions are kept in float, one at a time, until the drop is within it, or
      the export is refused and nothing written (`int8.bounded`).
    """

    calibration: np.ndarray | None = None
    validation: object = None
    max_accuracy_drop: float | None = None


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


DEFAULT_MAX_ACCURACY_DROP = 0.01


def check_int8_options(precision, quantization_aware, options: Int8Options, model,
                       prep) -> Int8Options:
    """The options checked against the precision and the model, before any work: the
    calibration pixels' shape, the bound's range and that it has images to be measured on;
    the default bound where validation images are given."""
    from resnet_tf.quantization.qat import uncalibrated

    calibration, validation, max_accuracy_drop = (options.calibration, options.validation,
                                                  options.max_accuracy_drop)
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
        return options
    if quantization_aware:
        if max_accuracy_drop is not None:
            raise UserError("max_accuracy_drop bounds post-training quantization; a "
                            "quantization-aware model is exported as it trained (accuracy.json "
                            "still records its accuracy)")
        unset = uncalibrated(model)
        if unset:
            raise UserError(f"the quantization-aware model has activation ranges that saw no "
                            f"data ({', '.join(unset[:3])}, ...); train it, or set them with "
                            "resnet_tf.calibrate, before exporting")
        return options
    if max_accuracy_drop is not None:
        if not 0.0 <= max_accuracy_drop < 1.0:
            raise UserError(f"max_accuracy_drop must be in [0, 1). Received: "
                            f"max_accuracy_drop={max_accuracy_drop}")
        if validation is None:
            raise UserError("max_accuracy_drop needs labelled images to measure the drop on: "
                            "export from a model dir with validation images, or give "
                            "--validation-data DIR")
    elif validation is not None:
        max_accuracy_drop = DEFAULT_MAX_ACCURACY_DROP
    return Int8Options(check_calibration(calibration, prep.image_size), validation,
                       max_accuracy_drop)


def write_int8(model, module, prep, serve, saved_model, target, staging,
               options: Int8Options, quantization_aware, log) -> dict:
    """Writes the int8 file of the format `module` into `target` and returns accuracy.json:
    measured on the validation images with the file's own runtime beside the float32 (or the
    quantization-aware Keras) model, and for post-training quantization bounded."""
    if quantization_aware:
        module.write_quantization_aware(serve, saved_model, target)
        accuracy = {"quantization": "quantization-aware", "float_layers": [],
                    "calibration_images": 0}
        if options.validation is not None:
            accuracy.update(_measure(model, module, target, prep, options.validation,
                                     "quantization-aware Keras model"))
        return _report_int8(dict(accuracy, runtime=module.RUNTIME), log)
    quantizer = module.make_quantizer(model, serve, saved_model, options.calibration, staging)
    accuracy = {"quantization": "post-training",
                "calibration_images": len(options.calibration)}
    if options.validation is None:
        quantizer.write([], target)
        return _report_int8(dict(accuracy, float_layers=[], runtime=module.RUNTIME), log)
    search = _BoundSearch(model, module, quantizer, prep, options, staging, log)
    layers, _, history = int8.bounded(search.drop, search.ranking, options.max_accuracy_drop)
    chosen = search.chosen()
    for name in os.listdir(chosen):  # the last measured is the one chosen
        os.replace(os.path.join(chosen, name), os.path.join(target, name))
    accuracy.update(_accuracy(search.measured[tuple(layers)], search.reference,
                              "float32 Keras model"),
                    float_layers=list(layers), max_accuracy_drop=options.max_accuracy_drop,
                    search=[{"float_layers": len(entry), "drop": round(d, 6)}
                            for entry, d in history], runtime=module.RUNTIME)
    return _report_int8(accuracy, log)


def _measure(model, module, path, prep, validation, what) -> dict:
    """accuracy.json's measured part: the int8 file at `path` beside the Keras model."""
    from resnet_tf.export.runtimes import keras_runner
    from resnet_tf.training.evaluate import evaluate

    reference = evaluate(keras_runner(model, prep=prep), validation, progress=False)
    measured = evaluate(module.open_runner(path, "int8", prep), validation, progress=False)
    return _accuracy(measured, reference, what)


class _BoundSearch:
    """What `int8.bounded` asks of a post-training export: the top-1 drop of an int8 file with
    some layers in float (`drop`), and the layers ranked by how much each helps (`ranking`).
    Candidate files are written into `staging`; the last one measured is kept (`chosen`)."""

    def __init__(self, model, module, quantizer, prep, options, staging, log):
        from resnet_tf.export.runtimes import keras_runner
        from resnet_tf.training.evaluate import evaluate

        self.model, self.module, self.quantizer, self.prep = model, module, quantizer, prep
        self.options, self.staging, self.log = options, staging, log
        self.evaluate = lambda runner: evaluate(runner, options.validation, progress=False)
        self.keras = keras_runner(model, prep=prep)
        self.reference = self.evaluate(self.keras)
        self.measured, self.written = {}, 0

    def _candidate(self, layers, measure, keep=False):
        """Writes the int8 file with `layers` in float into staging, returns (its dir, what
        `measure` says of its runner); the file is removed after unless `keep`."""
        path = os.path.join(self.staging, f"candidate-{self.written}")
        os.makedirs(path)
        self.quantizer.write(list(layers), path)
        self.written += 1
        value = measure(self.module.open_runner(path, "int8", self.prep))
        if not keep:
            shutil.rmtree(path, ignore_errors=True)
        return path, value

    def drop(self, layers):
        """The top-1 drop with `layers` in float; its file is kept until a later one is."""
        previous = self.measured.get("path")
        self.measured["path"], self.measured[tuple(layers)] = self._candidate(
            layers, self.evaluate, keep=True)
        if previous:
            shutil.rmtree(previous, ignore_errors=True)
        return self.reference["top1"] - self.measured[tuple(layers)]["top1"]

    def ranking(self):
        calibration = self.options.calibration
        float_probabilities = self.keras(calibration)
        candidates = int8.quantizable_layers(self.model)
        self.log(f"int8 {self.module.RUNTIME}: ranking {len(candidates)} convolutions by how "
                 "much keeping each in float helps (on the calibration images)")
        return int8.rank_by_sensitivity(candidates, lambda layers: self._candidate(
            layers, lambda runner: int8.mean_kl(float_probabilities, runner(calibration)))[1])

    def chosen(self) -> str:
        return self.measured["path"]


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


