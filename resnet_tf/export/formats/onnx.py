"""ONNX: the file ONNX Runtime runs (CPU provider), opset 17.

Everything about the format in one place (the protocol is in `resnet_tf.export.formats`): its
file, precisions, float converter (tf2onnx), post-training int8 quantizer (onnxruntime's
`quantize_static`, QDQ, per-channel weights), the file of a quantization-aware model, the
session config an int8 file must run with, and the runner. The same inputs give the same file:
tf2onnx's counter-named constants are renamed (`stable_names`). tf2onnx, onnx and onnxruntime
are imported inside the functions that use them.
"""

from __future__ import annotations

import os

import numpy as np

from resnet_tf.errors import require
from resnet_tf.export.contract import INPUT_NAME, OUTPUT_NAME
from resnet_tf.export.int8 import Quantizer, one_match, quantizable_layers, scope_regex
from resnet_tf.export.runner import Runner, default_threads, loading

NAME = "onnx"
RUNTIME = "onnxruntime"
FILES = ("model.onnx",)
RUNTIME_PRECISIONS = ("float32", "int8")
UNSUPPORTED = {
    "float16": "ONNX Runtime's CPU provider has no float16 convolutions, so a float16 ONNX "
               "file runs slower than float32; use --precision float32 or int8, or --format "
               "tflite or openvino for float16 weights",
}
CONVERTERS = (("tf2onnx", "tf2onnx (the ONNX converter)"), ("onnxruntime", "ONNX Runtime"))
FROM_SERVING_FUNCTION = True
PREPARES_IMAGES = False
CLASS_NAMES_DIR = ""
STORED_PRECISION = {}
OPSET = 17
# `quantize_static`'s arguments for post-training int8 (`calibrate_method` by name,
# `extra_options`): benchmarks/int8_settings.py.
SETTINGS = {"calibrate_method": "MinMax", "per_channel": True, "reduce_range": False}
# The ONNX Runtime session config an int8 ONNX file runs with; its preprocessing.json carries
# it as `onnxruntime_session_config`. Layers kept in float stay float (otherwise ORT re-quantizes
# them per tensor at load). On x86 CPUs without VNNI, ORT's u8 x s8 convolutions add pairs of
# products in int16, which saturates with 8-bit weights: `x64quantprecision` makes it multiply
# u8 x u8 instead (slower there, no effect where VNNI is). On an AVX2-only AMD EPYC (Zen 3) the
# quickstart's int8 top-1 was 0.8997 without it and 0.9777 with it (float32: 0.9721).
SESSION_CONFIG = {"optimization.disable_specified_optimizers": "WeightBiasQuantization",
                  "session.x64quantprecision": "1"}


def write_float(serve, saved_model, target, precision):
    import onnx
    import tf2onnx

    converted, _ = tf2onnx.convert.from_function(serve, input_signature=serve.input_signature,
                                                 opset=OPSET)
    onnx.save(stable_names(converted), os.path.join(target, FILES[0]))


class OnnxQuantizer(Quantizer):
    """onnxruntime's `quantize_static(nodes_to_exclude=...)`: a float layer is the Conv whose
    weight input is under the layer's scope (the Conv's own name is a counter for strided ones)."""

    def __init__(self, serve, calibration, model, staging, settings=None):
        import onnx
        import tf2onnx
        from onnxruntime import quantization
        from onnxruntime.quantization.shape_inference import quant_pre_process

        float_path = os.path.join(staging, "float.onnx")
        converted, _ = tf2onnx.convert.from_function(serve, input_signature=serve.input_signature,
                                                     opset=OPSET)
        # Each layer's Conv, by its weights' TensorFlow name (before `stable_names` renames
        # them; node names stay).
        convs = [n for n in converted.graph.node if n.op_type == "Conv" and len(n.input) > 1]
        self.nodes = {}
        for path in quantizable_layers(model):
            regex = scope_regex(model.name, path)
            self.nodes[path] = one_match(path, [n.name for n in convs if regex.match(n.input[1])],
                                    "ONNX Conv nodes")
        onnx.save(stable_names(converted), float_path)
        self.prepared = os.path.join(staging, "prepared.onnx")
        quant_pre_process(float_path, self.prepared, skip_symbolic_shape=True)
        self.cache = os.path.join(staging, "calibration.json")
        settings = dict(SETTINGS, **(settings or {}))
        self.method = getattr(quantization.CalibrationMethod, settings.pop("calibrate_method"))
        self.settings = settings

        class Reader(quantization.CalibrationDataReader):
            def __init__(self):
                self.batches = iter(calibration[i:i + 1] for i in range(len(calibration)))

            def get_next(self):
                batch = next(self.batches, None)
                return None if batch is None else {INPUT_NAME: batch}

        self.reader = Reader()

    def write(self, float_layers, target):
        from onnxruntime import quantization

        exclude = [self.nodes[path] for path in float_layers]
        reader, self.reader = self.reader, None  # calibrates once, then reads the cache
        quantization.quantize_static(
            self.prepared, os.path.join(target, FILES[0]), reader,
            quant_format=quantization.QuantFormat.QDQ,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8, calibrate_method=self.method,
            nodes_to_exclude=exclude, calibration_cache_path=self.cache, **self.settings)


def make_quantizer(model, serve, saved_model, calibration, staging, settings=None) -> Quantizer:
    """The format's post-training quantizer, calibrated on `calibration` (raw pixels)."""
    return OnnxQuantizer(serve, calibration, model, staging, settings)


def write_quantization_aware(serve, saved_model, target) -> None:
    """The int8 file of a quantization-aware model: tf2onnx turns its fake-quant ops into
    QuantizeLinear/DequantizeLinear pairs; the kernels are stored as int8 (`int8_conv_weights`)."""
    import onnx
    import tf2onnx

    converted, _ = tf2onnx.convert.from_function(serve, input_signature=serve.input_signature,
                                                 opset=OPSET)
    leftover = sorted({n.op_type for n in converted.graph.node
                       if n.op_type.startswith(("FakeQuant", "QuantizeAndDequantize"))})
    if leftover:  # tf2onnx logs these and leaves the TensorFlow op in the graph
        raise AssertionError(f"tf2onnx left {leftover} unconverted")
    onnx.save(stable_names(int8_conv_weights(converted)), os.path.join(target, FILES[0]))


def int8_info() -> dict:
    """What an int8 file's preprocessing.json adds: how ONNX Runtime must run it."""
    return {"onnxruntime_session_config": dict(SESSION_CONFIG)}


def stable_names(model):
    """tf2onnx names constants after whichever TensorFlow op it met first, or with a
    process-wide counter (`const_fold_opt__12`), so the same model can give files that differ
    in names only. Every constant named after its first consumer makes them equal."""
    initializers = {i.name for i in model.graph.initializer}
    rename = {}
    for node in model.graph.node:
        for k, name in enumerate(node.input):
            if name in initializers and name not in rename:
                rename[name] = f"{node.name}/input_{k}"
    for initializer in model.graph.initializer:
        initializer.name = rename.get(initializer.name, initializer.name)
    for node in model.graph.node:
        node.input[:] = [rename.get(name, name) for name in node.input]
    ordered = sorted(model.graph.initializer, key=lambda initializer: initializer.name)
    del model.graph.initializer[:]
    model.graph.initializer.extend(ordered)
    graph = model.graph
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param.startswith("unk__"):
                dim.dim_param = "batch"
    return model


def _on_int8_grid(weights):
    """(scale per output channel, int8 codes, largest error) of OIHW `weights` that lie on a
    per-channel grid of 7-bit codes (-63..63, `quantizers.WEIGHT_BITS`) or 8-bit ones: each
    channel takes the 7-bit grid where it fits (the same weights, and no int8 kernel can
    saturate on them), the 8-bit one otherwise."""
    flat = weights.reshape(weights.shape[0], -1)
    bound = np.abs(flat).max(1)

    def step(largest):
        return np.where(bound > 0, bound / largest, 1.0).astype(np.float32)

    seven = step(63)  # on it: within float32 rounding of its step
    on_seven = np.abs(np.round(flat / seven[:, None]) * seven[:, None] - flat).max(1) <= \
        1e-3 * seven
    scale = np.where(on_seven, seven, step(127))
    codes = np.round(flat / scale[:, None])
    error = np.abs(codes * scale[:, None] - flat).max(1)
    return scale, codes.reshape(weights.shape), float(error.max(initial=0.0))


def int8_conv_weights(model, tolerance: float = 1e-5):
    """tf2onnx folds each kernel's per-channel fake-quant into float32 weights on the int8
    grid; ONNX Runtime would re-quantize those per tensor (its `WeightBiasQuantization`).
    Stored as int8 + `DequantizeLinear` (axis 0, scale max|w_c| / 127, or / 63 for 7-bit
    weights), they are the trained weights exactly, and a quarter of the size."""
    from onnx import helper, numpy_helper

    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    uses = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    dequantize = []
    for node in graph.node:
        if node.op_type != "Conv" or node.input[1] not in initializers:
            continue
        name = node.input[1]
        weights = numpy_helper.to_array(initializers[name]).astype(np.float32)
        scale, codes, error = _on_int8_grid(weights)
        if error > tolerance * max(1.0, float(np.abs(weights).max())):
            raise AssertionError(f"Conv {node.name}: weights off the int8 grid ({error:.3g})")
        graph.initializer.extend([
            numpy_helper.from_array(codes.astype(np.int8), name + "_quantized"),
            numpy_helper.from_array(scale, name + "_scale"),
            numpy_helper.from_array(np.zeros(len(scale), np.int8), name + "_zero_point")])
        dequantize.append(helper.make_node(
            "DequantizeLinear", [name + "_quantized", name + "_scale", name + "_zero_point"],
            [name + "_dequantized"], name=name + "_dequantize", axis=0))
        node.input[1] = name + "_dequantized"
        if uses.get(name, 0) == 1:
            graph.initializer.remove(initializers[name])
    nodes = dequantize + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def open_runner(path: str, precision: str, prep=None, threads=None) -> Runner:
    """ONNX Runtime's CPU provider on the export dir `path`."""
    return onnxruntime_runner(os.path.join(path, FILES[0]), precision, prep, threads)


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
    for key, value in SESSION_CONFIG.items():
        options.add_session_config_entry(key, value)
    with loading(path, "ONNX Runtime"):
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return Runner("onnxruntime", precision,
                  lambda pixels: session.run([OUTPUT_NAME], {INPUT_NAME: pixels})[0], prep)
