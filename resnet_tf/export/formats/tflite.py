"""TFLite: the file LiteRT runs (`ai_edge_litert`), built-in ops only.

Everything about the format in one place: its file, the precisions it is written and run in,
its float converter, its post-training int8 quantizer (with chosen layers kept in float), the
file of a quantization-aware model, and its runner. TensorFlow and LiteRT are imported inside
the functions that use them. The protocol every format module follows is in
`resnet_tf.export.formats`.
"""

from __future__ import annotations

import contextlib
import os
import warnings

import numpy as np

from resnet_tf.errors import UserError, require
from resnet_tf.export.contract import INPUT_NAME, OUTPUT_NAME
from resnet_tf.export.int8 import Quantizer, one_match, scope_regex
from resnet_tf.export.runner import Runner, default_threads, loading

NAME = "tflite"
RUNTIME = "tflite"
FILES = ("model.tflite",)
RUNTIME_PRECISIONS = ("float32", "float16", "int8")
UNSUPPORTED: dict = {}
CONVERTERS = (("tensorflow", "TensorFlow Lite's converter"),)
FROM_SERVING_FUNCTION = True  # converted from `deploy.serving_function`'s SavedModel
PREPARES_IMAGES = False
CLASS_NAMES_DIR = ""
STORED_PRECISION = {}
# The converter attributes post-training int8 runs with (benchmarks/int8_settings.py).
SETTINGS: dict = {}


def write_float(serve, saved_model, target, precision):
    """float32, or float16 weights (dequantized at load)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model,
                                                         signature_keys=["serving_default"])
    # Built-in ops only (no Flex / SELECT_TF_OPS): the file runs with the LiteRT interpreter alone.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if precision == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    with open(os.path.join(target, FILES[0]), "wb") as f:
        f.write(converter.convert())


class TFLiteQuantizer(Quantizer):
    """`QuantizationDebugger` with `denylisted_nodes`: a float layer is the CONV_2D whose
    `;`-joined output tensor name has a part under the layer's TensorFlow name scope."""

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
        for key, value in dict(SETTINGS, **(settings or {})).items():
            setattr(self.converter, key, value)
        self.debugger = None

    def _conv_names(self, content):
        return conv_output_names(content)

    def _with_float_layers(self, float_layers):
        import tensorflow as tf

        if self.debugger is None:  # calibrates once; each denylist re-quantizes
            self.debugger = tf.lite.experimental.QuantizationDebugger(
                converter=self.converter, debug_dataset=self.dataset)
            self.names = self._conv_names(self.debugger.calibrated_model)
        denylist = []
        for path in float_layers:
            regex = scope_regex(self.model_name, path)
            denylist.append(one_match(path, [n for n in self.names if any(
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


def make_quantizer(model, serve, saved_model, calibration, staging, settings=None) -> Quantizer:
    """The format's post-training quantizer, calibrated on `calibration` (raw pixels)."""
    return TFLiteQuantizer(saved_model, calibration, model, settings)


def conv_output_names(content: bytes, ops=("CONV_2D", "DEPTHWISE_CONV_2D",
                                            "FULLY_CONNECTED")) -> list:
    """The output tensor names of the `ops` of a .tflite file's main graph, in order. Read
    with the flatbuffer schema LiteRT ships (`ai_edge_litert.schema_py_generated`): its
    interpreter lists operators only through a private method (`_get_ops_details`)."""
    from ai_edge_litert import schema_py_generated as schema

    codes = {getattr(schema.BuiltinOperator, op) for op in ops}
    model = schema.Model.GetRootAs(content, 0)
    graph = model.Subgraphs(0)
    names = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        # Codes past 127 are in BuiltinCode; the deprecated int8 field holds the rest.
        if max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) in codes:
            names.append(graph.Tensors(op.Outputs(0)).Name().decode())
    return names


def write_quantization_aware(serve, saved_model, target) -> None:
    """The int8 file of a quantization-aware model: the converter reads its fake-quant ranges
    (no calibration)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(
        saved_model, signature_keys=["serving_default"])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]  # reads the fake-quant ranges
    # TFLITE_BUILTINS: the INT8-only set insists on a representative dataset.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    content = converter.convert()
    check_tflite_biases(content)
    with open(os.path.join(target, FILES[0]), "wb") as f:
        f.write(content)


def int8_info() -> dict:
    """What an int8 file's preprocessing.json adds for its runtime: nothing."""
    return {}


def open_runner(path: str, precision: str, prep=None, threads=None) -> Runner:
    """LiteRT's interpreter on the export dir `path`."""
    return tflite_runner(os.path.join(path, FILES[0]), precision, prep, threads)


def tflite_runner(path: str, precision: str, prep=None, threads=None) -> Runner:
    litert = require("ai_edge_litert.interpreter", "LiteRT (ai-edge-litert)")
    with loading(path, "LiteRT"):
        interpreter = litert.Interpreter(model_path=path,
                                         num_threads=threads or default_threads())
        signature = interpreter.get_signature_runner("serving_default")

    def predict(pixels):
        return signature(**{INPUT_NAME: pixels})[OUTPUT_NAME]  # resizes to the batch

    return Runner("tflite", precision, predict, prep)
