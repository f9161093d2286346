"""OpenVINO: the IR (model.xml + model.bin) OpenVINO's CPU plugin runs.

Everything about the format in one place (the protocol is in `resnet_tf.export.formats`): its
files, precisions (float16: compressed weights; bfloat16: a runtime precision of its own), float
converter, post-training int8 quantizer (NNCF), the file of a quantization-aware model, and the
runner. OpenVINO picks bfloat16 arithmetic by default on CPUs with AVX512-BF16 or AMX, which
moves probabilities by ~1e-2; float32 files therefore run with `INFERENCE_PRECISION_HINT=f32`.
OpenVINO and NNCF are imported inside the functions that use them.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re

import numpy as np

from resnet_tf.errors import UserError, require
from resnet_tf.export.contract import INPUT_NAME, OUTPUT_NAME
from resnet_tf.export.int8 import Quantizer, layer_at, one_match
from resnet_tf.export.runner import Runner, default_threads, loading

NAME = "openvino"
RUNTIME = "openvino"
FILES = ("model.xml", "model.bin")
RUNTIME_PRECISIONS = ("float32", "float16", "bfloat16", "int8")
UNSUPPORTED: dict = {}
CONVERTERS = (("openvino", "OpenVINO"),)
POST_TRAINING_CONVERTERS = (("nncf", "NNCF (OpenVINO's quantizer)"),)
FROM_SERVING_FUNCTION = True
PREPARES_IMAGES = False
CLASS_NAMES_DIR = ""
STORED_PRECISION = {"bfloat16": "float32"}  # bench's bfloat16: OpenVINO's arithmetic on float32
# `nncf.quantize`'s arguments for post-training int8 (`preset` by name, `advanced`: fields of
# `nncf.AdvancedQuantizationParameters`). NNCF's full bias correction, not its fast one: the
# same graph and speed, a second or so more to quantize, up to 6 images (of 359) better on a
# CIFAR ResNet-20 where the fast one broke the default bound, one worse on one quickstart run
# (benchmarks/RESULTS.md).
SETTINGS = {"preset": "PERFORMANCE", "fast_bias_correction": False}


def write_float(serve, saved_model, target, precision):
    import openvino as ov

    # save_model compresses float weights to float16 by default: only for --precision float16.
    ov.save_model(ov.convert_model(saved_model), os.path.join(target, FILES[0]),
                  compress_to_fp16=precision == "float16")


class OpenVinoQuantizer(Quantizer):
    """NNCF's `IgnoredScope(names=...)`: a float layer is the Convolution whose weights equal
    the layer's kernel with its batch norm folded in (OpenVINO keeps no TensorFlow names).
    NNCF calibrates on every `write`."""

    def __init__(self, saved_model, calibration, model, staging, settings=None):
        import nncf
        import openvino as ov

        nncf.set_log_level(logging.ERROR)
        self.model = model
        self.float_ir = os.path.join(staging, "float.xml")
        ov.save_model(ov.convert_model(saved_model), self.float_ir, compress_to_fp16=False)
        self.dataset = nncf.Dataset([calibration[i:i + 1] for i in range(len(calibration))])
        self.count = len(calibration)
        self.settings = dict(SETTINGS, **(settings or {}))

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
            names.append(one_match(path, [name for name, w in weights.items()
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
        ov.save_model(quantized, os.path.join(target, FILES[0]), compress_to_fp16=False)


def _same_up_to_input_scales(weights, kernel) -> bool:
    """Whether OIHW `weights` are `kernel` with each input channel scaled by one factor."""
    if weights.shape != kernel.shape:
        return False
    norms = np.einsum("oihw,oihw->i", kernel, kernel)
    scales = np.einsum("oihw,oihw->i", weights, kernel) / np.where(norms > 0, norms, 1.0)
    scaled = kernel * scales[None, :, None, None]
    return bool(np.allclose(weights, scaled, rtol=1e-4,
                            atol=1e-6 * float(np.abs(scaled).max() or 1.0)))


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


def make_quantizer(model, serve, saved_model, calibration, staging, settings=None) -> Quantizer:
    """The format's post-training quantizer, calibrated on `calibration` (raw pixels)."""
    return OpenVinoQuantizer(saved_model, calibration, model, staging, settings)


def write_quantization_aware(serve, saved_model, target) -> None:
    """The int8 IR of a quantization-aware model: FakeQuantize ops and int8 weights, with
    residual roundings kept apart (`separate_residual_rounding`)."""
    import openvino as ov

    model = ov.convert_model(saved_model)  # FakeQuantize ops; i8 weights
    separate_residual_rounding(model)
    ov.save_model(model, os.path.join(target, FILES[0]), compress_to_fp16=False)


def int8_info() -> dict:
    return {}


def open_runner(path: str, precision: str, prep=None, threads=None) -> Runner:
    """OpenVINO's CPU plugin on the export dir `path`."""
    return openvino_runner(os.path.join(path, FILES[0]), precision, prep, threads)


def openvino_runner(path: str, precision: str, prep=None, threads=None) -> Runner:
    ov = require("openvino", "OpenVINO")
    hint = "bf16" if precision == "bfloat16" else "f32"
    check_openvino_weights(path)
    with loading(path, "OpenVINO"):
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
