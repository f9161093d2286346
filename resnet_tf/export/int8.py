"""int8 files for the three runtimes: post-training quantization with chosen layers kept in
float, and the conversion of quantization-aware models, which need no calibration.

Post-training quantization (PTQ) calibrates activation ranges on real images and quantizes
every convolution, per output channel, except the layers named in `float_layers`, by the
model's layer paths (`quantizable_layers`: "conv1", "block1.unit_1.bottleneck_v2/conv2",
"logits", ...). Each runtime has its own mechanism, and its own names for a layer:

  tflite    `QuantizationDebugger` with `denylisted_nodes`: the CONV_2D whose `;`-joined output
            tensor name has a part under the layer's TensorFlow name scope;
  onnx      onnxruntime's `quantize_static(nodes_to_exclude=...)`: the Conv whose weight input
            is under the layer's scope (the Conv's own name is a counter for strided ones). ONNX
            Runtime re-quantizes a float Conv between quantized tensors at load unless its
            `WeightBiasQuantization` optimizer is off: `runtimes` turns it off, and
            preprocessing.json says so (`onnxruntime_session_config`);
  openvino  NNCF's `IgnoredScope(names=...)`: the Convolution whose weights equal the layer's
            kernel with its batch norm folded in (OpenVINO keeps no TensorFlow names).

The TFLite and ONNX quantizers calibrate once and re-quantize with other float layers in a
fraction of a second; NNCF calibrates each time (seconds for a small model, minutes for a large
one: a bound search on OpenVINO takes that many times the ranking's number of convolutions).
The same inputs give the same file (ONNX: tf2onnx's counter-named constants are renamed).

Quantization-aware models (`resnet_tf.quantization.qat`) carry their ranges as fake-quant ops, which
every converter reads (`quantization_aware_file`).

TensorFlow and the runtimes' converters.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import warnings

import numpy as np

from resnet_tf.errors import UserError
from resnet_tf.export.export_dir import INPUT_NAME
from resnet_tf.models.layers import Conv2DSame
from resnet_tf.models.units import ResidualUnit

# The settings each quantizer runs with by default (chosen by measurement:
# benchmarks/int8_settings.py, benchmarks/RESULTS.md). Each quantizer takes `settings` that
# override them: TFLite converter attributes; onnxruntime's `quantize_static` arguments
# (`calibrate_method` by name, `extra_options`); `nncf.quantize` arguments (`preset` by
# name, `advanced`: fields of `nncf.AdvancedQuantizationParameters`).
TFLITE_SETTINGS: dict = {}
ONNX_SETTINGS = {"calibrate_method": "MinMax", "per_channel": True, "reduce_range": False}
# NNCF's full bias correction, not its fast one: the same graph and speed, a second or so more
# to quantize, up to 6 images (of 359) better on a CIFAR ResNet-20 where the fast one broke the
# default bound, one worse on one quickstart run (benchmarks/RESULTS.md).
OPENVINO_SETTINGS = {"preset": "PERFORMANCE", "fast_bias_correction": False}


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


def _one(path, found, what):
    if len(found) != 1:
        raise AssertionError(f"layer {path!r} matches {len(found)} {what}: {found[:4]}")
    return found[0]


# --------------------------------------------------------------------------------------------
# Post-training quantization with float layers


class Quantizer:
    """Calibrated once; `write(float_layers, target)` writes the int8 model file(s) of its
    format into the dir `target`."""

    def write(self, float_layers, target: str) -> None:
        raise NotImplementedError


class TFLiteQuantizer(Quantizer):
    def __init__(self, saved_model, calibration, model, settings=None):
        import tensorflow as tf

        self.model_name = model.name
        self.dataset = lambda: ([calibration[i:i + 1]] for i in range(len(calibration)))
        self.converter = tf.lite.TFLiteConverter.from_saved_model(
            saved_model, signature_keys=["serving_default"])
        self.converter.optimizations = [tf.lite.Optimize.DEFAULT]
        self.converter.representative_dataset = self.dataset
        # Built-in int8 ops only (no Flex): the file runs with the LiteRT interpreter alone;
        # inference_input/output_type stay float32 (quantize and dequantize run inside).
        self.converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        for key, value in dict(TFLITE_SETTINGS, **(settings or {})).items():
            setattr(self.converter, key, value)
        self.debugger = None

    def _conv_names(self, content):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        interpreter = Interpreter(model_content=content, experimental_op_resolver_type=(
            OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
        tensors = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
        return [tensors[op["outputs"][0]] for op in interpreter._get_ops_details()
                if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")]

    def _with_float_layers(self, float_layers):
        import tensorflow as tf

        if self.debugger is None:  # calibrates once; each denylist re-quantizes
            self.debugger = tf.lite.experimental.QuantizationDebugger(
                converter=self.converter, debug_dataset=self.dataset)
            self.names = self._conv_names(self.debugger.calibrated_model)
        denylist = []
        for path in float_layers:
            regex = scope_regex(self.model_name, path)
            denylist.append(_one(path, [n for n in self.names if any(
                regex.match(part) for part in n.split(";"))], "TFLite convolutions"))
        self.debugger.options = tf.lite.experimental.QuantizationDebugOptions(
            denylisted_nodes=denylist)
        return self.debugger.get_nondebug_quantized_model()

    def write(self, float_layers, target):
        if not float_layers:
            content = self.converter.convert()
        else:
            with _no_interpreter_deprecation():  # each step below makes a tf.lite.Interpreter
                content = self._with_float_layers(float_layers)
        check_tflite_biases(content)
        with open(os.path.join(target, "model.tflite"), "wb") as f:
            f.write(content)


@contextlib.contextmanager
def _no_interpreter_deprecation():
    """TensorFlow's QuantizationDebugger runs the deprecated `tf.lite.Interpreter` inside (it
    takes no other), which warns with a block of text on each use; our own runs use LiteRT."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")
        yield


def check_tflite_biases(content) -> None:
    """An int32 bias is stored in units of input scale x weight scale; calibration images that
    leave an input range nearly empty (all black, say) make those units so small that the bias
    saturates (the converter clamps it to 2^30), and LiteRT's XNNPACK then aborts the process
    when the file runs. Such a file is refused here, with what to do."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_content=content, experimental_op_resolver_type=(
        OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
    limit = 2 ** 30 - 1  # the converter clamps int32 biases to +-2^30
    for tensor in interpreter.get_tensor_details():
        if tensor["dtype"] != np.int32 or not len(tensor["quantization_parameters"]["scales"]):
            continue
        try:
            values = interpreter.get_tensor(tensor["index"])
        except ValueError:  # not a constant
            continue
        if values.size and np.abs(values.astype(np.int64)).max() >= limit:
            raise UserError("the int8 biases overflow: the calibration images leave some "
                            "activation ranges nearly empty (are they all alike, or blank?); "
                            "calibrate on images like the ones the model will see")


class OnnxQuantizer(Quantizer):
    def __init__(self, serve, calibration, model, staging, settings=None):
        import onnx
        import tf2onnx
        from onnxruntime import quantization
        from onnxruntime.quantization.shape_inference import quant_pre_process

        float_path = os.path.join(staging, "float.onnx")
        converted, _ = tf2onnx.convert.from_function(serve, input_signature=serve.input_signature,
                                                     opset=ONNX_OPSET)
        # Each layer's Conv, by its weights' TensorFlow name (before `stable_names` renames
        # them; node names stay).
        convs = [n for n in converted.graph.node if n.op_type == "Conv" and len(n.input) > 1]
        self.nodes = {}
        for path in quantizable_layers(model):
            regex = scope_regex(model.name, path)
            self.nodes[path] = _one(path, [n.name for n in convs if regex.match(n.input[1])],
                                    "ONNX Conv nodes")
        onnx.save(stable_names(converted), float_path)
        self.prepared = os.path.join(staging, "prepared.onnx")
        quant_pre_process(float_path, self.prepared, skip_symbolic_shape=True)
        self.cache = os.path.join(staging, "calibration.json")
        settings = dict(ONNX_SETTINGS, **(settings or {}))
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
            self.prepared, os.path.join(target, "model.onnx"), reader,
            quant_format=quantization.QuantFormat.QDQ,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8, calibrate_method=self.method,
            nodes_to_exclude=exclude, calibration_cache_path=self.cache, **self.settings)


class OpenVinoQuantizer(Quantizer):
    def __init__(self, saved_model, calibration, model, staging, settings=None):
        import nncf
        import openvino as ov

        nncf.set_log_level(logging.ERROR)
        self.model = model
        self.float_ir = os.path.join(staging, "float.xml")
        ov.save_model(ov.convert_model(saved_model), self.float_ir, compress_to_fp16=False)
        self.dataset = nncf.Dataset([calibration[i:i + 1] for i in range(len(calibration))])
        self.count = len(calibration)
        self.settings = dict(OPENVINO_SETTINGS, **(settings or {}))

    def _ignored(self, ov_model, float_layers):
        """The Convolutions whose weights are the float layers' (batch norm folded; a scale
        per input channel allowed: OpenVINO folds the input normalization into the first
        convolution)."""
        weights = {}
        for op in ov_model.get_ordered_ops():
            if op.get_type_name() in ("Convolution", "GroupConvolution"):
                source = op.input(1).get_source_output().get_node()
                while source.get_type_name() == "Convert":
                    source = source.input(0).get_source_output().get_node()
                if source.get_type_name() == "Constant":
                    weights[op.get_friendly_name()] = source.get_data().astype(np.float32)
        names = []
        for path in float_layers:
            kernel = np.transpose(layer_at(self.model, path).inference_kernel(), (3, 2, 0, 1))
            names.append(_one(path, [name for name, w in weights.items()
                                     if _same_up_to_input_scales(w, kernel)],
                              "OpenVINO convolutions"))
        return names

    def write(self, float_layers, target):
        import nncf
        import openvino as ov

        float_model = ov.Core().read_model(self.float_ir)
        names = self._ignored(float_model, float_layers)
        settings = dict(self.settings)
        settings["preset"] = getattr(nncf.QuantizationPreset, settings["preset"])
        if "advanced" in settings:
            settings["advanced_parameters"] = nncf.AdvancedQuantizationParameters(
                **settings.pop("advanced"))
        with contextlib.redirect_stdout(io.StringIO()):  # NNCF's progress bars
            quantized = nncf.quantize(float_model, self.dataset, subset_size=self.count,
                                      ignored_scope=nncf.IgnoredScope(names=names) if names
                                      else None, **settings)
        ov.save_model(quantized, os.path.join(target, "model.xml"), compress_to_fp16=False)


def _same_up_to_input_scales(weights, kernel) -> bool:
    """Whether OIHW `weights` are `kernel` with each input channel scaled by one factor."""
    if weights.shape != kernel.shape:
        return False
    norms = np.einsum("oihw,oihw->i", kernel, kernel)
    scales = np.einsum("oihw,oihw->i", weights, kernel) / np.where(norms > 0, norms, 1.0)
    scaled = kernel * scales[None, :, None, None]
    return bool(np.allclose(weights, scaled, rtol=1e-4,
                            atol=1e-6 * float(np.abs(scaled).max() or 1.0)))


ONNX_OPSET = 17


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


def make_quantizer(format, model, serve, saved_model, calibration, staging,
                   settings=None) -> Quantizer:
    if format == "tflite":
        return TFLiteQuantizer(saved_model, calibration, model, settings)
    if format == "onnx":
        return OnnxQuantizer(serve, calibration, model, staging, settings)
    return OpenVinoQuantizer(saved_model, calibration, model, staging, settings)


# --------------------------------------------------------------------------------------------
# Quantization-aware models: the ranges are in the graph


def quantization_aware_file(format, serve, saved_model, target) -> None:
    """The int8 file of a quantization-aware model's serving function (no calibration)."""
    if format == "tflite":
        import tensorflow as tf

        converter = tf.lite.TFLiteConverter.from_saved_model(
            saved_model, signature_keys=["serving_default"])
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # reads the fake-quant ranges
        # TFLITE_BUILTINS: the INT8-only set insists on a representative dataset.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        content = converter.convert()
        check_tflite_biases(content)
        with open(os.path.join(target, "model.tflite"), "wb") as f:
            f.write(content)
    elif format == "onnx":
        import onnx
        import tf2onnx

        converted, _ = tf2onnx.convert.from_function(serve, input_signature=serve.input_signature,
                                                     opset=ONNX_OPSET)
        leftover = sorted({n.op_type for n in converted.graph.node
                           if n.op_type.startswith(("FakeQuant", "QuantizeAndDequantize"))})
        if leftover:  # tf2onnx logs these and leaves the TensorFlow op in the graph
            raise AssertionError(f"tf2onnx left {leftover} unconverted")
        onnx.save(stable_names(int8_conv_weights(converted)),
                  os.path.join(target, "model.onnx"))
    else:
        import openvino as ov

        model = ov.convert_model(saved_model)  # FakeQuantize ops; i8 weights
        separate_residual_rounding(model)
        ov.save_model(model, os.path.join(target, "model.xml"), compress_to_fp16=False)


def int8_conv_weights(model, tolerance: float = 1e-5):
    """tf2onnx folds each kernel's per-channel fake-quant into float32 weights on the int8
    grid; ONNX Runtime would re-quantize those per tensor (its `WeightBiasQuantization`).
    Stored as int8 + `DequantizeLinear` (axis 0, scale max|w_c| / 127), they are the trained
    weights exactly, and a quarter of the size."""
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
        bound = np.abs(weights).reshape(weights.shape[0], -1).max(1)
        scale = np.where(bound > 0, bound / 127.0, 1.0).astype(np.float32)
        shape = (-1,) + (1,) * (weights.ndim - 1)
        codes = np.round(weights / scale.reshape(shape))
        error = np.abs(codes * scale.reshape(shape) - weights).max()
        if error > tolerance * max(1.0, float(bound.max())):
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


def separate_residual_rounding(model) -> int:
    """OpenVINO's CPU plugin fuses `Conv -> FakeQuantize -> Add [-> Relu] -> FakeQuantize`
    into one int8 convolution with a sum and drops the rounding of the first FakeQuantize
    (intel_cpu's conv.cpp calls it an unsafe optimization), which moves residual sums a step
    away from what was trained. An identity 1x1 max-pool between that FakeQuantize and the Add
    keeps them apart; the add then runs as its own int8 op. Returns the number inserted."""
    import openvino.opset13 as opset

    found = []
    for op in model.get_ordered_ops():
        if op.get_type_name() != "FakeQuantize" or \
                op.input_value(0).get_node().get_type_name() == "Constant":
            continue
        consumers = list(op.output(0).get_target_inputs())
        if len(consumers) != 1 or consumers[0].get_node().get_type_name() != "Add":
            continue
        after = [c.get_node() for c in consumers[0].get_node().output(0).get_target_inputs()]
        if len(after) == 1 and after[0].get_type_name() == "Relu":
            after = [c.get_node() for c in after[0].output(0).get_target_inputs()]
        if any(node.get_type_name() == "FakeQuantize" for node in after):
            found.append((op, consumers[0]))
    for op, target in found:
        spatial = op.output(0).get_partial_shape().rank.get_length() - 2
        pool = opset.max_pool(op.output(0), [1] * spatial, [1] * spatial, [0] * spatial,
                              [0] * spatial, [1] * spatial)
        target.replace_source_output(pool.output(0))
    model.validate_nodes_and_infer_types()
    return len(found)


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
