"""int8 export, generic over the formats: layers by path, the quantizer's interface, and the
bound search that keeps the most sensitive convolutions in float.

Post-training quantization (PTQ) calibrates activation ranges on real images and quantizes
every convolution, per output channel, except the layers named in `float_layers`, by the
model's layer paths (`quantizable_layers`: "conv1", "block1.unit_1.bottleneck_v2/conv2",
"logits", ...). Each format's module (`export.formats`) has its own quantizer, which finds a
layer by the path in its own graph (TFLite: by TensorFlow name scope, `scope_regex`; ONNX: by
the Conv's weight input; OpenVINO: by the folded kernel, `layer_at`). The TFLite and ONNX
quantizers calibrate once and re-quantize with other float layers in a fraction of a second;
NNCF calibrates each time (seconds for a small model, minutes for a large one).

`bounded` then searches: the fully int8 file first; if its top-1 drop against float32 is
over the bound, the convolutions ranked by how much keeping each alone in float helps
(`rank_by_sensitivity`, by `mean_kl` on the calibration images), kept in float one at a time.

Quantization-aware models (`resnet_tf.quantization.qat`) carry their ranges as fake-quant ops,
which every format's `write_quantization_aware` reads.

`Int8Options` is what an int8 export is given (calibration pixels, validation images, the
bound), `int8_options` gathers them for a model source as `resnet-tf export` does, and
`write_int8` writes a format's int8 file and returns its accuracy.json. No TensorFlow here:
each format's module does the converting.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import sys

import numpy as np

from resnet_tf.errors import UserError
from resnet_tf.machine import machine_description
from resnet_tf.models.layers import Conv2DSame
from resnet_tf.models.units import ResidualUnit

# --------------------------------------------------------------------------------------------
# Layers by path


def quantizable_layers(model) -> list:
    """The layer paths of every convolution of a resnet_tf model, in order: a top-level
    convolution's name ("conv1", "logits"), or "<unit>/<sublayer>" inside a residual unit."""
    paths = []
    for layer in model.layers:
        if isinstance(layer, Conv2DSame):
            paths.append(layer.name)
        elif isinstance(layer, ResidualUnit):
            paths += [f"{layer.name}/{scope}" for scope, sub in layer.slim_sublayers()
                      if isinstance(sub, Conv2DSame)]
    return paths


def layer_at(model, path: str) -> Conv2DSame:
    first, *rest = path.split("/")
    layer = model.get_layer(first)
    for part in rest:
        layer = dict(layer.slim_sublayers())[part]
    return layer


def scope_regex(model_name: str, path: str):
    """The TensorFlow name scope of a layer path inside the serving function: each part may
    carry a `_<n>` Keras added (`resnet_v2_1/block2.unit_1.bottleneck_v2_1/conv2_1/...`),
    anchored at the model so that the root's "conv1" never matches a unit's."""
    parts = [re.escape(part) + r"(?:_\d+)?" for part in [model_name] + path.split("/")]
    return re.compile("^" + "/".join(parts) + "/")


def one_match(path, found, what):
    """The one item of `found` that layer `path` names in a runtime's graph."""
    if len(found) != 1:
        raise AssertionError(f"layer {path!r} matches {len(found)} {what}: {found[:4]}")
    return found[0]


# --------------------------------------------------------------------------------------------
# Post-training quantization with float layers


class Quantizer:
    """A format's post-training quantizer, made by its module's `make_quantizer` (calibrated
    there); `write(float_layers, target)` writes the int8 model file(s) into the dir `target`
    with the layers at those paths kept in float."""

    def write(self, float_layers, target: str) -> None:
        raise NotImplementedError


# --------------------------------------------------------------------------------------------
# Measured, and bounded


def mean_kl(reference, probabilities) -> float:
    """Mean KL(reference || probabilities) over the rows: how far an int8 model's outputs are
    from float32's (label-free)."""
    reference = np.clip(np.asarray(reference, np.float64), 1e-12, 1.0)
    probabilities = np.clip(np.asarray(probabilities, np.float64), 1e-12, 1.0)
    return float(np.mean(np.sum(reference * (np.log(reference) - np.log(probabilities)), -1)))


def rank_by_sensitivity(candidates, measure) -> list:
    """`candidates` ordered by how much keeping each alone in float helps: `measure(layers)`
    is the int8 error with `layers` in float (lower is better)."""
    errors = {path: measure([path]) for path in candidates}
    return sorted(candidates, key=lambda path: (errors[path], candidates.index(path)))


def bounded(measure_drop, ranking, max_drop):
    """Keeps layers in float in the order `ranking()` gives (asked only when the fully int8
    model misses the bound), one at a time, until `measure_drop(layers)` is at most
    `max_drop`. Returns (float layers, drop, measured history); a `UserError` naming the best
    drop reached when no mix reaches it."""
    layers, history = [], []
    drop = measure_drop(layers)
    history.append((list(layers), drop))
    order = ranking() if drop > max_drop else []
    for path in order:
        if drop <= max_drop:
            break
        layers.append(path)
        drop = measure_drop(layers)
        history.append((list(layers), drop))
    if drop > max_drop:
        best_layers, best = min(history, key=lambda entry: (entry[1], len(entry[0])))
        raise UserError(f"no int8 model is within --max-accuracy-drop {max_drop:.4f} of "
                        f"float32: the best reached was a drop of {best:.4f} top-1 (with "
                        f"{len(best_layers)} of {len(order)} convolutions in float); nothing "
                        "was written")
    return layers, drop, history


# --------------------------------------------------------------------------------------------
# What an int8 export is given, and what it writes


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
    layers, _, history = bounded(search.drop, search.ranking, options.max_accuracy_drop)
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
        candidates = quantizable_layers(self.model)
        self.log(f"int8 {self.module.RUNTIME}: ranking {len(candidates)} convolutions by how "
                 "much keeping each in float helps (on the calibration images)")
        return rank_by_sensitivity(candidates, lambda layers: self._candidate(
            layers, lambda runner: mean_kl(float_probabilities, runner(calibration)))[1])

    def chosen(self) -> str:
        return self.measured["path"]


def _accuracy(measured, reference, what) -> dict:
    return {"top1": measured["top1"], "top5": measured["top5"], "count": measured["count"],
            "reference": what, "reference_top1": reference["top1"],
            "reference_top5": reference["top5"],
            "drop": round(reference["top1"] - measured["top1"], 6), "data": measured["data"],
            "measured": True}


def _report_int8(accuracy, log) -> dict:
    """Says what the int8 file scored (or that it was not measured), and records the CPU it
    was measured on: int8 kernels differ by instruction set (VNNI or not, AVX-512, AMX)."""
    machine = machine_description()
    accuracy = dict(accuracy, cpu=dict(processor=machine["processor"],
                                       **machine["cpu_features"]))
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


def calibration_pixels(source, folder: str | None = None, count: int = 300) -> np.ndarray:
    """Up to `count` real images for int8 calibration, prepared as `source.prep` says: from an
    image folder, or else from the training images a model dir's run recorded (a seeded
    choice, the same every time). `source` is a `loading.ModelSource`."""
    from resnet_tf.data import datasets as data
    from resnet_tf.data import files

    if folder:  # a seeded choice of the folder's images; only those are decoded
        paths, labels, _ = files.list_image_folder(folder, check=False)
        index = np.sort(np.random.default_rng(0).permutation(len(paths))[:count])
        chosen = files.checked(files.ImageFiles([paths[i] for i in index], labels[index]),
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


def int8_options(source, calibration_data=None, calibration_images=None, validation_data=None,
                 max_accuracy_drop=None, log=print) -> Int8Options:
    """The `Int8Options` of an int8 export of `source` (a `loading.ModelSource`): a
    quantization-aware model needs no calibration and refuses calibration images; any other
    is calibrated on `calibration_images` (300) images of `calibration_data` or of its run's
    training images. Measured on `validation_data` or its run's validation images."""
    from resnet_tf.quantization.qat import is_quantized

    calibration = None
    if is_quantized(source.model):
        if calibration_data or calibration_images:
            raise UserError("--calibration-data/--calibration-images: the model is "
                            "quantization-aware; its int8 ranges are the ones it trained, "
                            "no calibration is needed")
        log("Exporting the quantization-aware model's own int8 ranges (no calibration)")
    else:
        calibration = calibration_pixels(source, calibration_data, calibration_images or 300)
        log(f"Calibrating int8 on {len(calibration)} images")
    return Int8Options(calibration, validation_images(source, validation_data),
                       max_accuracy_drop)
