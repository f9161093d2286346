"""`resnet-tf export --format ...`: a model in the file format of an inference runtime.

    export_model(model, "exports/digits-int8", format="onnx", precision="int8",
                 image_size=16, calibration=pixels)

Every export dir holds the model file(s) of its format, `preprocessing.json` (how to turn an
image into the input) and, when known, `class_names.txt` (line i names class i):

    saved_model  saved_model.pb, variables/   TensorFlow Serving; preprocessing inside (export.py)
    tflite       model.tflite                 LiteRT (`ai_edge_litert`), built-in ops only
    onnx         model.onnx                   ONNX Runtime (opset 17)
    openvino     model.xml + model.bin        OpenVINO

The three runtime formats share one contract: input `images`, float32 `[N, S, S, 3]`, raw 0..255
RGB pixels already cropped and resized to the model's size S (slim's eval crop: the central
`central_fraction` of each side, bilinear resize; `preprocessing.json` says which); the scaling to
[-1, 1] is inside. Output `probabilities`, float32 `[N, C]`. The batch dimension is dynamic.

Precisions:
  float32  float32 weights and arithmetic everywhere (OpenVINO's `save_model` would compress
           weights to float16 unless told not to: it is told not to).
  float16  float16 weights (TFLite: dequantized at load; OpenVINO: compressed IR). ONNX is not
           offered in float16: ONNX Runtime's CPU provider has no float16 convolutions, so such
           a file would run slower than float32 there.
  int8     full integer quantization, per-channel weights, int8 activations calibrated on real
           images (`calibration`: raw pixels as the contract above), float32 input and output
           (quantize and dequantize run inside).

TensorFlow and the runtimes' converters; each runtime is imported only when its format is asked
for, and a missing one is a one-line error naming the `deploy` extra.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import numpy as np

from resnet_tf.utils import quiet_native_stderr, write_json, write_text

FORMATS = ("saved_model", "tflite", "onnx", "openvino")
PRECISIONS = ("float32", "float16", "int8")
MODEL_FILES = {
    "saved_model": ("saved_model.pb",),
    "tflite": ("model.tflite",),
    "onnx": ("model.onnx",),
    "openvino": ("model.xml", "model.bin"),
}
PREPROCESSING_FILE = "preprocessing.json"
CLASS_NAMES_FILE = "class_names.txt"
INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"
ONNX_OPSET = 17
DEFAULT_CALIBRATION_IMAGES = 300
DEPLOY_EXTRA = "pip install 'resnet_tf[deploy]'"

UNSUPPORTED = {
    ("saved_model", "float16"): "the SavedModel export keeps the model's float32 weights; "
                                "choose --format tflite or openvino for float16 weights",
    ("saved_model", "int8"): "the SavedModel export keeps the model's float32 weights; "
                             "choose --format tflite, onnx or openvino for int8",
    ("onnx", "float16"): "ONNX Runtime's CPU provider has no float16 convolutions, so a float16 "
                         "ONNX file runs slower than float32; use --precision float32 or int8, "
                         "or --format tflite or openvino for float16 weights",
}


class MissingRuntime(ImportError):
    """A runtime or converter of the `deploy` extra is not installed."""


def require(module: str, what: str):
    """Imports `module` or raises `MissingRuntime` with one sentence naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingRuntime(f"{what} is not installed ({error.name or module} is missing); "
                             f"install the deployment runtimes with: {DEPLOY_EXTRA}") from None


def check_format(format: str, precision: str) -> None:
    if format not in FORMATS:
        raise ValueError(f"format must be one of {list(FORMATS)}. Received: format={format!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}. "
                         f"Received: precision={precision!r}")
    if (format, precision) in UNSUPPORTED:
        raise ValueError(f"--format {format} --precision {precision} is not offered: "
                         f"{UNSUPPORTED[format, precision]}")


# --------------------------------------------------------------------------------------------
# Export dirs


def is_export_dir(path: str) -> bool:
    """Whether `path` is a dir that `resnet-tf export` wrote (recognised by its files)."""
    if not os.path.isdir(path):
        return False
    names = set(os.listdir(path))
    return PREPROCESSING_FILE in names or "saved_model.pb" in names


def export_format(path: str) -> str:
    """The format of the export dir `path` (a clear error if it is not one)."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"No export dir at {path!r}")
    for format, files in MODEL_FILES.items():
        if all(os.path.isfile(os.path.join(path, f)) for f in files):
            return format
    expected = " or ".join(" + ".join(files) for files in MODEL_FILES.values())
    raise ValueError(f"{path!r} is not a `resnet-tf export` dir: it has none of {expected}")


def read_export_info(path: str) -> dict:
    """preprocessing.json of an export (older SavedModel exports have none: their
    preprocessing is inside)."""
    info_path = os.path.join(path, PREPROCESSING_FILE)
    if not os.path.isfile(info_path):
        return {"format": export_format(path), "precision": "float32"}
    try:
        with open(info_path) as f:
            return json.load(f)
    except (OSError, ValueError) as error:
        raise ValueError(f"{info_path!r} cannot be read as JSON ({error}); export again") from None


def read_export_class_names(path: str):
    from resnet_tf.data import read_class_names

    for candidate in (os.path.join(path, CLASS_NAMES_FILE),
                      os.path.join(path, "assets", CLASS_NAMES_FILE)):
        if os.path.isfile(candidate):
            return read_class_names(candidate)
    return None


def check_output(output: str, overwrite: bool) -> str:
    """The absolute output path, after refusing anything `--overwrite` must not replace: a
    file, a training model dir, a non-empty dir that is not an export. Touches nothing."""
    from resnet_tf.model_dir import is_model_dir

    output = os.path.abspath(output)
    if os.path.exists(output) and not os.path.isdir(output):
        raise ValueError(f"--output {output!r} is a file, not a directory; give a new path")
    if os.path.isdir(output):
        if is_model_dir(output):
            raise ValueError(f"--output {output!r} is a training model dir; an export needs a "
                             "path of its own (e.g. exports/NAME)")
        if not overwrite:
            raise FileExistsError(f"The export dir {output!r} exists; pass --overwrite to "
                                  "replace it")
        if os.listdir(output) and not is_export_dir(output):
            raise ValueError(f"--output {output!r} is a non-empty dir that is not an earlier "
                             "export; --overwrite replaces only exports: give a new path")
    parent = os.path.dirname(output)
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise ValueError(f"--output {output!r}: its parent {parent!r} is a file")
    return output


def preprocessing_info(format, precision, image_size, central_fraction, num_classes,
                       method="inception") -> dict:
    """preprocessing.json: how an image becomes the model's input, and who does which step."""
    inside = format == "saved_model"  # the SavedModel crops and resizes itself
    info = {
        "format": format,
        "precision": precision,
        "preprocessing": method,
        "input": "images (serving_default) / image_bytes (serving_bytes)" if inside
                 else INPUT_NAME,
        "output": OUTPUT_NAME,
        "num_classes": num_classes,
        "image_size": image_size,
        "resize": "bilinear (TF 1 resize_bilinear, align_corners=False)",
        "value_range": [0, 255],
        "layout": "NHWC",
        "channels": "RGB",
    }
    if method == "vgg":
        from resnet_tf.preprocessing import VGG_RESIZE_SIDE
        from resnet_tf.utils import VGG_MEAN_RGB

        crop = ["aspect_preserving_resize", "central_crop"]
        normalize = "subtract_mean_rgb"
        info.update(resize_side=VGG_RESIZE_SIDE, mean_rgb=list(VGG_MEAN_RGB))
    else:
        crop = ["central_crop", "resize"]
        normalize = "scale_to_[-1,1]"
        info.update(central_fraction=central_fraction)
    # What the caller does before calling the model, and what the model does itself.
    info.update(caller_applies=[] if inside else crop,
                model_applies=(crop if inside else []) + [normalize])
    return info


def export_model(model, output: str, *, format: str = "saved_model", precision: str = "float32",
                 image_size: int, central_fraction: float = 0.875, class_names=None,
                 calibration=None, overwrite: bool = False, preprocessing="inception") -> str:
    """Writes `model` to the export dir `output` in `format` and `precision` (module docstring).

    `calibration` (int8 only, required there): float32 `[K, S, S, 3]` raw 0..255 pixels of real
    images, cropped and resized as the contract says. `preprocessing`: "inception" (scaling to
    [-1, 1] inside) or "vgg" (slim's V1 checkpoints: RGB means subtracted inside). The export
    is assembled in a staging dir beside `output` and moved into place whole: a failure leaves
    `output` as it was.
    """
    check_format(format, precision)
    output = check_output(output, overwrite)
    num_classes = int(model.output_shape[-1])
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for a model with {num_classes} classes")
    if precision == "int8":
        calibration = _check_calibration(calibration, image_size)
    converters = {"tflite": ("tensorflow", "TensorFlow Lite's converter"),
                  "onnx": ("tf2onnx", "tf2onnx (the ONNX converter)"),
                  "openvino": ("openvino", "OpenVINO")}
    if format in converters:  # before any work: a missing converter is a one-line error
        require(*converters[format])
        if format == "onnx":
            require("onnxruntime", "ONNX Runtime")
        if format == "openvino" and precision == "int8":
            require("nncf", "NNCF (OpenVINO's quantizer)")

    parent = os.path.dirname(output)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        target = os.path.join(staging, "export")
        if format == "saved_model":
            from resnet_tf.export import write_saved_model

            write_saved_model(model, target, image_size, central_fraction, class_names,
                              preprocessing)
        else:
            os.makedirs(target)
            serve = serving_function(model, image_size, preprocessing)
            saved_model = os.path.join(staging, "saved_model")
            _write_serving_saved_model(serve, saved_model)
            with quiet_native_stderr():
                if format == "tflite":
                    _to_tflite(saved_model, target, precision, calibration)
                elif format == "onnx":
                    _to_onnx(serve, target, precision, calibration, staging)
                else:
                    _to_openvino(saved_model, target, precision, calibration)
            if class_names is not None:
                write_text(os.path.join(target, CLASS_NAMES_FILE), "\n".join(class_names) + "\n")
        write_json(preprocessing_info(format, precision, image_size, central_fraction,
                                      num_classes, preprocessing),
                   os.path.join(target, PREPROCESSING_FILE))
        if os.path.isdir(output):
            # Swap: the old export moves aside and is removed only once the new one is in place.
            old = os.path.join(staging, "old")
            os.replace(output, old)
        os.replace(target, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output


def _check_calibration(calibration, image_size):
    if calibration is None:
        raise ValueError("int8 quantization needs calibration images: give "
                         "--calibration-data DIR (an image folder), or export from a model dir "
                         "(its training data is used); resnet_tf never calibrates on random data")
    calibration = np.asarray(calibration, np.float32)
    if calibration.ndim != 4 or calibration.shape[1:] != (image_size, image_size, 3) or \
            not len(calibration):
        raise ValueError(f"calibration must be [K, {image_size}, {image_size}, 3] pixels. "
                         f"Received: shape {calibration.shape}")
    return calibration


# --------------------------------------------------------------------------------------------
# The serving function every runtime format is converted from


def float32_model(model):
    """`model` itself when it computes in float32, else a float32 copy with the same weights
    (a model trained under `mixed_bfloat16` / `mixed_float16` keeps float32 variables)."""
    import keras

    if model.dtype_policy.name == "float32" and all(
            layer.dtype_policy.name == "float32" for layer in model.layers):
        return model

    def to_float32(value):
        if isinstance(value, dict):
            if value.get("class_name") in ("DTypePolicy", "FloatDTypePolicy") and \
                    isinstance(value.get("config"), dict):
                return dict(value, config=dict(value["config"], name="float32"))
            return {k: to_float32(v) for k, v in value.items()}
        if isinstance(value, list):
            return [to_float32(v) for v in value]
        return value

    config = to_float32(keras.saving.serialize_keras_object(model))
    copy = keras.saving.deserialize_keras_object(config)
    copy.set_weights(model.get_weights())
    return copy


def serving_function(model, image_size: int, preprocessing: str = "inception"):
    """A `tf.function`: raw 0..255 pixels `[N, S, S, 3]` -> {"probabilities": [N, C]}, in
    inference mode, normalising as `utils.normalize_pixels` (for "inception" exactly slim's
    scaling to [-1, 1])."""
    import tensorflow as tf

    from resnet_tf.utils import normalize_pixels

    model = float32_model(model)

    @tf.function(input_signature=[tf.TensorSpec([None, image_size, image_size, 3], tf.float32,
                                                name=INPUT_NAME)])
    @tf.autograph.experimental.do_not_convert
    def serve(images):
        logits = tf.cast(model(normalize_pixels(images, preprocessing), training=False),
                         tf.float32)
        return {OUTPUT_NAME: tf.nn.softmax(logits, axis=-1)}

    serve.model = model
    return serve


def _write_serving_saved_model(serve, path):
    import keras

    archive = keras.export.ExportArchive()
    archive.track(serve.model)
    archive.add_endpoint("serving_default", serve.python_function,
                         input_signature=serve.input_signature)
    archive.write_out(path, verbose=False)


# --------------------------------------------------------------------------------------------
# Converters


def _to_tflite(saved_model, target, precision, calibration):
    import tensorflow as tf

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


def _to_onnx(serve, target, precision, calibration, staging):
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


def _to_openvino(saved_model, target, precision, calibration):
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
