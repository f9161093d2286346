"""Running a model with each inference runtime, behind one call: `runner(pixels) -> probabilities`.

    runner, info, names = open_export("exports/digits-int8")   # the format's own runtime
    probabilities = runner(pixels)     # float32 [N, S, S, 3], raw 0..255, prepared as runner.prep

Runtimes: `keras` (the model itself, on the current Keras backend: here), and each export
format's own (`export.formats`: `saved_model`, `tflite` with LiteRT, `onnxruntime`, `openvino`).
Every runner uses all the machine's cores unless told `threads`. Each runtime is imported only
when it is used; a missing one is a one-line error naming the `deploy` extra, and a file its
runtime cannot load (a damaged export) is one sentence naming the file.

Imports neither Keras nor TensorFlow until a runner needs them.
"""

from __future__ import annotations

import numpy as np

from resnet_tf.data.pixels import EvalPreprocessing, normalize_pixels
from resnet_tf.export.export_dir import (
    export_format,
    read_export_class_names,
    read_export_info,
)
from resnet_tf.export.formats import FORMATS
from resnet_tf.export.runner import Runner

# runtime -> the precisions it runs (bench's `--runtimes keras:bfloat16,openvino:int8,...`)
RUNTIME_PRECISIONS = {"keras": ("float32", "bfloat16", "float16"),
                      **{module.RUNTIME: module.RUNTIME_PRECISIONS
                         for module in FORMATS.values() if module.RUNTIME_PRECISIONS}}
FORMAT_OF_RUNTIME = {module.RUNTIME: name for name, module in FORMATS.items()
                     if module.RUNTIME_PRECISIONS}


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
    """The runner of the export dir `path` of `format`, by the format's own runtime."""
    return FORMATS[format].open_runner(path, precision, prep, threads)


def open_export(path: str, threads=None) -> tuple[Runner, dict, list | None]:
    """(runner, preprocessing info, class names) of a `resnet-tf export` dir, run by its own
    runtime."""
    format = export_format(path)
    info = read_export_info(path)
    runner = open_runner(format, path, info["precision"], EvalPreprocessing.from_info(info),
                         threads)
    return runner, info, read_export_class_names(path)
