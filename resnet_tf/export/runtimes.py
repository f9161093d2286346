"""Running a model with each inference runtime, behind one call: `runner(pixels) -> probabilities`.

    runner, info, names = open_export("exports/digits-int8")   # the format's own runtime
    probabilities = runner(pixels)     # float32 [N, S, S, 3], raw 0..255, prepared as runner.prep

Runtimes: `keras` (the model itself, on the current Keras backend), `saved_model` (TensorFlow,
for `resnet-tf export`'s SavedModel, whose preprocessing is inside), `tflite` (LiteRT's
interpreter, XNNPACK), `onnxruntime` (CPU provider) and `openvino` (CPU plugin). Every runner uses
all the machine's cores unless told `threads`. Each runtime is imported only when it is used; a
missing one is a one-line error naming the `deploy` extra, and a file its runtime cannot load
(a damaged export) is one sentence naming the file.

OpenVINO picks bfloat16 arithmetic by default on CPUs with AVX512-BF16 or AMX, which moves
probabilities by ~1e-2; float32 files therefore run with `INFERENCE_PRECISION_HINT=f32`, and
bfloat16 is a runtime precision of its own (`openvino:bfloat16`).

Imports neither Keras nor TensorFlow until a runner needs them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import typing

import numpy as np

from resnet_tf.data.pixels import EvalPreprocessing, normalize_pixels
from resnet_tf.errors import UserError, require
from resnet_tf.export.export_dir import (
    INPUT_NAME,
    MODEL_FILES,
    ORT_SESSION_CONFIG,
    OUTPUT_NAME,
    RUNTIME_OF_FORMAT,
    export_format,
    read_export_class_names,
    read_export_info,
)

# runtime -> the precisions it runs (bench's `--runtimes keras:bfloat16,openvino:int8,...`)
RUNTIME_PRECISIONS = {
    "keras": ("float32", "bfloat16", "float16"),
    "tflite": ("float32", "float16", "int8"),
    "onnxruntime": ("float32", "int8"),
    "openvino": ("float32", "float16", "bfloat16", "int8"),
}
FORMAT_OF_RUNTIME = {runtime: format for format, runtime in RUNTIME_OF_FORMAT.items()
                     if format != "saved_model"}


def default_threads() -> int:
    """All cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclasses.dataclass(frozen=True)
class Runner:
    """`runner(pixels)` -> probabilities float32 [N, C]; `pixels` float32 [N, S, S, 3], 0..255,
    prepared as `prep` says (`preprocessing.prepare_pixels`). A runner that `takes_any_size`
    (a SavedModel export) takes decoded images of any size and prepares them itself."""

    runtime: str
    precision: str
    predict: typing.Callable
    prep: EvalPreprocessing | None = None
    takes_any_size: bool = False

    def __call__(self, pixels) -> np.ndarray:
        return np.asarray(self.predict(np.ascontiguousarray(pixels, np.float32)), np.float32)

    def __repr__(self):
        return f"Runner({self.runtime}:{self.precision})"


@contextlib.contextmanager
def _loading(path: str, runtime: str):
    """A file the runtime cannot load is a sentence naming it (a damaged or foreign export)."""
    try:
        yield
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001  (each runtime raises its own types)
        reason = _reason(str(error))
        raise UserError(f"{path!r} cannot be loaded by {runtime} ({type(error).__name__}: "
                        f"{reason}); the export may be damaged: export it again") from None


def _reason(message: str) -> str:
    """The line of a runtime's error that says what is wrong: OpenVINO's first lines only
    name the C++ source that threw ("Exception from src/...cpp:132:")."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    telling = [line for line in lines if not re.match(r"^(Exception from|Check .* failed at) "
                                                      r"\S+:\d+:?$", line)]
    return ((telling or lines or [""])[0])[:200]


def check_openvino_weights(xml_path: str) -> None:
    """An OpenVINO IR's weights file (model.bin beside model.xml) must hold every byte the
    XML's constants point into; a truncated one is named, with the sizes."""
    with open(xml_path, encoding="utf-8", errors="replace") as f:
        spans = re.findall(r'offset="(\d+)"\s+size="(\d+)"', f.read())
    needed = max((int(offset) + int(size) for offset, size in spans), default=0)
    bin_path = os.path.splitext(xml_path)[0] + ".bin"
    if not needed:
        return
    if not os.path.isfile(bin_path):
        raise UserError(f"{bin_path!r} is missing: {os.path.basename(xml_path)} keeps its "
                        "weights there; the export may be damaged: export it again")
    if os.path.getsize(bin_path) < needed:
        raise UserError(f"{bin_path!r} is truncated: {os.path.basename(xml_path)} needs "
                        f"{needed} bytes of weights, the file has "
                        f"{os.path.getsize(bin_path)}; the export may be damaged: export it "
                        "again")


def tflite_runner(path: str, precision: str, prep=None, threads=None) -> Runner:
    litert = require("ai_edge_litert.interpreter", "LiteRT (ai-edge-litert)")
    with _loading(path, "LiteRT"):
        interpreter = litert.Interpreter(model_path=path,
                                         num_threads=threads or default_threads())
        signature = interpreter.get_signature_runner("serving_default")

    def predict(pixels):
        return signature(**{INPUT_NAME: pixels})[OUTPUT_NAME]  # resizes to the batch

    return Runner("tflite", precision, predict, prep)


def onnxruntime_runner(path: str, precision: str, prep=None, threads=None) -> Runner:
    ort = require("onnxruntime", "ONNX Runtime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.log_severity_level = 3
    # No busy-waiting between runs: spinning threads steal the cores from whatever runs next
    # (another runtime, the input pipeline); measured here, it cost OpenVINO int8 a fifth of
    # its speed when the runtimes took turns.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # Layers an int8 export keeps in float stay float (ONNX Runtime would re-quantize them per
    # tensor at load); no change for files that are fully int8 or float.
    for key, value in ORT_SESSION_CONFIG.items():
        options.add_session_config_entry(key, value)
    with _loading(path, "ONNX Runtime"):
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return Runner("onnxruntime", precision,
                  lambda pixels: session.run([OUTPUT_NAME], {INPUT_NAME: pixels})[0], prep)


def openvino_runner(path: str, precision: str, prep=None, threads=None) -> Runner:
    ov = require("openvino", "OpenVINO")
    hint = "bf16" if precision == "bfloat16" else "f32"
    check_openvino_weights(path)
    with _loading(path, "OpenVINO"):
        compiled = ov.Core().compile_model(path, "CPU", {
            "INFERENCE_PRECISION_HINT": hint,
            "INFERENCE_NUM_THREADS": threads or default_threads(),
            "PERFORMANCE_HINT": "LATENCY",
        })
        request = compiled.create_infer_request()
        output = compiled.output(OUTPUT_NAME)

    def predict(pixels):
        return request.infer({INPUT_NAME: pixels})[output].copy()

    return Runner("openvino", precision, predict, prep)


def saved_model_runner(path: str, prep=None) -> Runner:
    """`serving_default` of a `resnet-tf export` SavedModel: raw images of any size (it crops
    and resizes itself)."""
    tf = require("tensorflow", "TensorFlow")
    with _loading(path, "TensorFlow"):
        loaded = tf.saved_model.load(path)
    if "serving_default" not in loaded.signatures:
        raise UserError(f"{path!r} has no 'serving_default' signature (signatures: "
                        f"{sorted(loaded.signatures)}); export it with `resnet-tf export`")
    signature = loaded.signatures["serving_default"]
    return Runner("saved_model", "float32",
                  lambda pixels: signature(images=tf.constant(pixels))[OUTPUT_NAME].numpy(),
                  prep, takes_any_size=True)


def jax_forward(model, transform=None):
    """`x -> model(transform(x), training=False)` as one `jax.jit` function of the model's
    current weights (`stateless_call`)."""
    import jax

    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]

    @jax.jit
    def forward(trainable, non_trainable, x):
        if transform is not None:
            x = transform(x)
        outputs, _ = model.stateless_call(trainable, non_trainable, x, training=False)
        return outputs

    return lambda x: forward(trainable, non_trainable, x)


def keras_precision(model) -> str:
    """What a Keras model computes in: its dtype policy ("float32", "mixed_bfloat16", ...),
    or "int8 (quantization-aware)" for a model whose int8 rounding is simulated."""
    from resnet_tf.quantization.qat import is_quantized

    return "int8 (quantization-aware)" if is_quantized(model) else model.dtype_policy.name


def keras_runner(model, precision: str | None = None, prep=None) -> Runner:
    """The Keras model on the current backend, compiled once (`tf.function` / `jax.jit`),
    taking raw pixels like the exports (`pixels.normalize_pixels` inside). `prep` defaults to
    Inception preprocessing at the model's input size; `precision` (what reports call it) to
    `keras_precision(model)`."""
    import keras

    precision = precision or keras_precision(model)

    prep = prep or EvalPreprocessing("inception", model.input_shape[1])
    backend = keras.backend.backend()

    def probabilities(logits):
        return keras.ops.softmax(keras.ops.cast(logits, "float32"), axis=-1)

    if backend == "tensorflow":
        import tensorflow as tf

        compiled = tf.function(lambda x: probabilities(
            model(normalize_pixels(x, prep.method), training=False)))
        predict = lambda pixels: compiled(tf.constant(pixels)).numpy()  # noqa: E731
    elif backend == "jax":
        forward = jax_forward(model, lambda x: normalize_pixels(x, prep.method))
        predict = lambda pixels: np.asarray(probabilities(forward(pixels)))  # noqa: E731
    else:
        predict = lambda pixels: keras.ops.convert_to_numpy(probabilities(  # noqa: E731
            model(normalize_pixels(pixels, prep.method), training=False)))
    return Runner("keras", precision, predict, prep)


def open_runner(format: str, path: str, precision: str, prep=None, threads=None) -> Runner:
    """The runner of a model file of `format` (the file itself; `path` is the export dir)."""
    file = os.path.join(path, MODEL_FILES[format][0])
    if format == "saved_model":
        return saved_model_runner(path, prep)
    if format == "tflite":
        return tflite_runner(file, precision, prep, threads)
    if format == "onnx":
        return onnxruntime_runner(file, precision, prep, threads)
    return openvino_runner(file, precision, prep, threads)


def open_export(path: str, threads=None) -> tuple[Runner, dict, list | None]:
    """(runner, preprocessing info, class names) of a `resnet-tf export` dir, run by its own
    runtime."""
    format = export_format(path)
    info = read_export_info(path)
    runner = open_runner(format, path, info["precision"], EvalPreprocessing.from_info(info),
                         threads)
    return runner, info, read_export_class_names(path)
