"""Running a model with each inference runtime, behind one call: `runner(pixels) -> probabilities`.

    runner = open_export("exports/digits-int8")       # the format's own runtime
    probabilities = runner(pixels)                      # float32 [N, S, S, 3], raw 0..255

Runtimes: `keras` (the model itself, on the current Keras backend), `saved_model` (TensorFlow,
for `resnet-tf export`'s SavedModel, whose preprocessing is inside), `tflite` (LiteRT's
interpreter, XNNPACK), `onnxruntime` (CPU provider) and `openvino` (CPU plugin). Every runner uses
all the machine's cores unless told `threads`. Each runtime is imported only when it is used; a
missing one is a one-line error naming the `deploy` extra.

OpenVINO picks bfloat16 arithmetic by default on CPUs with AVX512-BF16 or AMX, which moves
probabilities by ~1e-2; float32 files therefore run with `INFERENCE_PRECISION_HINT=f32`, and
bfloat16 is a runtime precision of its own (`openvino:bfloat16`).
"""

from __future__ import annotations

import os

import numpy as np

from resnet_tf.deploy import (INPUT_NAME, OUTPUT_NAME, export_format, read_export_class_names,
                              read_export_info, require)
from resnet_tf.utils import quiet_native_stderr

# runtime -> the precisions it runs (bench's `--runtimes keras:bfloat16,openvino:int8,...`)
RUNTIME_PRECISIONS = {
    "keras": ("float32", "bfloat16", "float16"),
    "tflite": ("float32", "float16", "int8"),
    "onnxruntime": ("float32", "int8"),
    "openvino": ("float32", "float16", "bfloat16", "int8"),
}
RUNTIME_OF_FORMAT = {"saved_model": "saved_model", "tflite": "tflite", "onnx": "onnxruntime",
                     "openvino": "openvino"}
FORMAT_OF_RUNTIME = {"tflite": "tflite", "onnxruntime": "onnx", "openvino": "openvino"}


def default_threads() -> int:
    """All cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Runner:
    """`runner(pixels)` -> probabilities float32 [N, C]; `pixels` float32 [N, S, S, 3], 0..255,
    prepared as `preprocessing.eval_pixels(image, image_size, central_fraction, preprocessing)`
    says (the runner's attributes)."""

    takes_any_size = False  # True: the runner crops and resizes itself (SavedModel exports)

    def __init__(self, runtime: str, precision: str, predict, image_size=None,
                 central_fraction=None, preprocessing="inception"):
        self.runtime = runtime
        self.precision = precision
        self.image_size = image_size
        self.central_fraction = central_fraction
        self.preprocessing = preprocessing
        self._predict = predict

    def __call__(self, pixels) -> np.ndarray:
        return np.asarray(self._predict(np.ascontiguousarray(pixels, np.float32)), np.float32)

    def __repr__(self):
        return f"Runner({self.runtime}:{self.precision})"


def tflite_runner(path: str, precision: str, threads=None) -> Runner:
    litert = require("ai_edge_litert.interpreter", "LiteRT (ai-edge-litert)")
    with quiet_native_stderr():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
        interpreter = litert.Interpreter(model_path=path,
                                         num_threads=threads or default_threads())
        signature = interpreter.get_signature_runner("serving_default")

    applied = []

    def predict(pixels):
        if applied:
            return signature(**{INPUT_NAME: pixels})[OUTPUT_NAME]  # resizes to the batch
        with quiet_native_stderr():  # XNNPACK announces itself on the first call
            applied.append(True)
            return signature(**{INPUT_NAME: pixels})[OUTPUT_NAME]

    return Runner("tflite", precision, predict)


def onnxruntime_runner(path: str, precision: str, threads=None) -> Runner:
    ort = require("onnxruntime", "ONNX Runtime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.log_severity_level = 3
    # No busy-waiting between runs: spinning threads steal the cores from whatever runs next
    # (another runtime, the input pipeline); measured here, it cost OpenVINO int8 a fifth of
    # its speed when the runtimes took turns.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return Runner("onnxruntime", precision,
                  lambda pixels: session.run([OUTPUT_NAME], {INPUT_NAME: pixels})[0])


def openvino_runner(path: str, precision: str, threads=None) -> Runner:
    ov = require("openvino", "OpenVINO")
    hint = "bf16" if precision == "bfloat16" else "f32"
    compiled = ov.Core().compile_model(path, "CPU", {
        "INFERENCE_PRECISION_HINT": hint,
        "INFERENCE_NUM_THREADS": threads or default_threads(),
        "PERFORMANCE_HINT": "LATENCY",
    })
    request = compiled.create_infer_request()
    output = compiled.output(OUTPUT_NAME)

    def predict(pixels):
        return request.infer({INPUT_NAME: pixels})[output].copy()

    return Runner("openvino", precision, predict)


def saved_model_runner(path: str) -> Runner:
    """`serving_default` of a `resnet-tf export` SavedModel: raw images of any size (it crops
    and resizes itself)."""
    tf = require("tensorflow", "TensorFlow")
    loaded = tf.saved_model.load(path)
    if "serving_default" not in loaded.signatures:
        raise ValueError(f"{path!r} has no 'serving_default' signature (signatures: "
                         f"{sorted(loaded.signatures)}); export it with `resnet-tf export`")
    signature = loaded.signatures["serving_default"]
    runner = Runner("saved_model", "float32",
                    lambda pixels: signature(images=tf.constant(pixels))["probabilities"].numpy())
    runner.takes_any_size = True
    return runner


def keras_runner(model, precision: str = "float32", preprocessing: str = "inception",
                 image_size=None, central_fraction=None) -> Runner:
    """The Keras model on the current backend, compiled once (`tf.function` / `jax.jit`),
    taking raw pixels like the exports (`utils.normalize_pixels` inside)."""
    import keras

    from resnet_tf.utils import normalize_pixels

    backend = keras.backend.backend()

    def probabilities(x):
        logits = keras.ops.cast(model(normalize_pixels(x, preprocessing), training=False),
                                "float32")
        return keras.ops.softmax(logits, axis=-1)

    if backend == "tensorflow":
        import tensorflow as tf

        compiled = tf.function(probabilities)
        predict = lambda pixels: compiled(tf.constant(pixels)).numpy()  # noqa: E731
    elif backend == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]

        @jax.jit
        def stateless(trainable, non_trainable, x):
            logits, _ = model.stateless_call(trainable, non_trainable,
                                             normalize_pixels(x, preprocessing), training=False)
            return jax.nn.softmax(logits.astype("float32"), axis=-1)

        predict = lambda pixels: np.asarray(  # noqa: E731
            jax.block_until_ready(stateless(trainable, non_trainable, pixels)))
    else:
        predict = lambda pixels: keras.ops.convert_to_numpy(probabilities(pixels))  # noqa: E731
    return Runner("keras", precision, predict, image_size or model.input_shape[1],
                  central_fraction, preprocessing)


def open_export(path: str, threads=None) -> tuple[Runner, dict, list | None]:
    """(runner, preprocessing info, class names) of a `resnet-tf export` dir, run by its own
    runtime."""
    format = export_format(path)
    info = read_export_info(path)
    precision = info.get("precision", "float32")
    if format == "saved_model":
        runner = saved_model_runner(path)
    elif format == "tflite":
        runner = tflite_runner(os.path.join(path, "model.tflite"), precision, threads)
    elif format == "onnx":
        runner = onnxruntime_runner(os.path.join(path, "model.onnx"), precision, threads)
    else:
        runner = openvino_runner(os.path.join(path, "model.xml"), precision, threads)
    runner.image_size = info.get("image_size")
    runner.central_fraction = info.get("central_fraction")
    runner.preprocessing = info.get("preprocessing", "inception")
    return runner, info, read_export_class_names(path)
