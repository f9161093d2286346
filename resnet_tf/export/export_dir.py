"""The export dir of `resnet-tf export`: its layout, its contract, and where one may be written.

Every export dir holds the model file(s) of its format, `preprocessing.json` (how an image
becomes the input, and who does which step), `class_names.txt` when the classes are known (line
i names class i; a SavedModel keeps it among its assets, `assets/class_names.txt`, so that it
travels with the SavedModel) and, for int8, `accuracy.json` (the int8 file's accuracy measured
against float32 at export):

    saved_model  saved_model.pb, variables/   TensorFlow Serving; preprocessing inside
    tflite       model.tflite                 LiteRT (`ai_edge_litert`), built-in ops only
    onnx         model.onnx                   ONNX Runtime (opset 17)
    openvino     model.xml + model.bin        OpenVINO

The three runtime formats share one contract: input `images`, float32 `[N, S, S, 3]`, raw 0..255
RGB pixels already cropped and resized to the model's size S as `preprocessing.json` says; the
normalisation is inside. Output `probabilities`, float32 `[N, C]`. The batch is dynamic.

This module owns the dir's layout (each format's files are its module's, `export.formats`);
it needs neither TensorFlow nor a runtime (`runtimes` reads export dirs with it), and `deploy`
writes them.
"""

from __future__ import annotations

import os

from resnet_tf.data.pixels import EvalPreprocessing
from resnet_tf.errors import MissingPathError, PathExistsError, UserError
from resnet_tf.export.contract import INPUT_NAME, OUTPUT_NAME
from resnet_tf.export.formats import FORMATS as FORMAT_MODULES
from resnet_tf.training.model_dir import is_model_dir
from resnet_tf.utils import read_class_names, read_json

FORMATS = tuple(FORMAT_MODULES)
PRECISIONS = ("float32", "float16", "int8")
MODEL_FILES = {name: module.FILES for name, module in FORMAT_MODULES.items()}
PREPROCESSING_FILE = "preprocessing.json"
CLASS_NAMES_FILE = "class_names.txt"
ACCURACY_FILE = "accuracy.json"
# What each format refuses to be written in, and why (the format modules' `UNSUPPORTED`).
UNSUPPORTED = {(name, precision): why for name, module in FORMAT_MODULES.items()
               for precision, why in module.UNSUPPORTED.items()}


def check_format(format: str, precision: str) -> None:
    if format not in FORMATS:
        raise UserError(f"format must be one of {list(FORMATS)}. Received: format={format!r}")
    if precision not in PRECISIONS:
        raise UserError(f"precision must be one of {list(PRECISIONS)}. "
                        f"Received: precision={precision!r}")
    if (format, precision) in UNSUPPORTED:
        raise UserError(f"--format {format} --precision {precision} is not offered: "
                        f"{UNSUPPORTED[format, precision]}")


def is_export_dir(path: str) -> bool:
    """Whether `path` is a dir that `resnet-tf export` wrote (recognised by its files: a
    preprocessing.json and the model file(s) of one format)."""
    if not os.path.isfile(os.path.join(path, PREPROCESSING_FILE)):
        return False
    return any(all(os.path.isfile(os.path.join(path, f)) for f in files)
               for files in MODEL_FILES.values())


def export_format(path: str) -> str:
    """The format of the export dir `path` (a clear error if it is not one)."""
    if not os.path.isdir(path):
        raise MissingPathError(f"No export dir at {path!r}")
    for format, files in MODEL_FILES.items():
        if all(os.path.isfile(os.path.join(path, f)) for f in files):
            return format
    expected = " or ".join(" + ".join(files) for files in MODEL_FILES.values())
    raise UserError(f"{path!r} is not a `resnet-tf export` dir: it has none of {expected}")


def read_export_info(path: str) -> dict:
    """preprocessing.json of an export dir, checked for what a runner needs."""
    export_format(path)
    info_path = os.path.join(path, PREPROCESSING_FILE)
    if not os.path.isfile(info_path):
        raise UserError(f"The export dir {path!r} has no {PREPROCESSING_FILE} (it says how "
                        "images are prepared); export it again with `resnet-tf export`")
    info = read_json(info_path, PREPROCESSING_FILE)
    try:
        EvalPreprocessing.from_info(info)
        info["format"], info["precision"]
    except (KeyError, TypeError, AttributeError, UserError) as error:
        raise UserError(f"{info_path!r} is not a valid {PREPROCESSING_FILE} ({error}); export "
                        "again") from None
    return info


def class_names_path(path: str, format: str) -> str:
    """Where an export dir of `format` keeps class_names.txt."""
    return os.path.join(path, FORMAT_MODULES[format].CLASS_NAMES_DIR, CLASS_NAMES_FILE)


def read_export_class_names(path: str):
    candidate = class_names_path(path, export_format(path))
    return read_class_names(candidate) if os.path.isfile(candidate) else None


def check_output(output: str, overwrite: bool) -> str:
    """The absolute output path, after refusing anything `--overwrite` must not replace: a
    file, a training model dir, a non-empty dir that is not an export. Touches nothing."""
    output = os.path.abspath(output)
    if os.path.exists(output) and not os.path.isdir(output):
        raise UserError(f"--output {output!r} is a file, not a directory; give a new path")
    if os.path.isdir(output):
        if is_model_dir(output):
            raise UserError(f"--output {output!r} is a training model dir; an export needs a "
                            "path of its own (e.g. exports/NAME)")
        if os.listdir(output) and not overwrite:
            raise PathExistsError(f"The export dir {output!r} exists; pass --overwrite to "
                                  "replace it")
        if os.listdir(output) and not is_export_dir(output):
            raise UserError(f"--output {output!r} is a non-empty dir that is not an earlier "
                            "export; --overwrite replaces only exports: give a new path")
    parent = os.path.dirname(output)
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise UserError(f"--output {output!r}: its parent {parent!r} is a file")
    return output


def preprocessing_info(format: str, precision: str, prep: EvalPreprocessing,
                       num_classes: int, **extra) -> dict:
    """preprocessing.json: how an image becomes the model's input, and who does which step."""
    inside = FORMAT_MODULES[format].PREPARES_IMAGES
    info = {
        "format": format,
        "precision": precision,
        **prep.info(),
        "input": "images (serving_default) / image_bytes (serving_bytes)" if inside
                 else INPUT_NAME,
        "output": OUTPUT_NAME,
        "num_classes": num_classes,
        "resize": "bilinear (TF 1 resize_bilinear, align_corners=False)",
        "value_range": [0, 255],
        "layout": "NHWC",
        "channels": "RGB",
        **extra,
    }
    crop = (["central_crop", "resize"] if prep.crop == "central"
            else ["aspect_preserving_resize", "central_crop"])
    normalize = {"inception": "scale_to_[-1,1]", "vgg": "subtract_mean_rgb",
                 "torchvision": "subtract_mean_divide_std",
                 "caffe": "rgb_to_bgr_subtract_mean_bgr"}[prep.method]
    # What the caller does before calling the model, and what the model does itself.
    info.update(caller_applies=[] if inside else crop,
                model_applies=(crop if inside else []) + [normalize])
    return info
