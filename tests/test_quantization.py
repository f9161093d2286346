"""Quantization-aware training: the int8 model trained is the int8 model each runtime runs."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import resnet_tf_command

import resnet_tf
from resnet_tf.data.pixels import EvalPreprocessing
from resnet_tf.quantization.qat import (
    calibrate,
    is_quantized,
    quantize_model,
    uncalibrated,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Each file with its own runtime only (no resnet_tf, no TensorFlow): top-1 on the digits.
def test_a_quantization_aware_run_recorded_before_weight_bits_resumes_on_8_bits(tmp_path,
                                                                               capsys):
    """A QAT run whose recorded config predates `qat_weight_bits` trained 8-bit weights: its
    resume keeps them (and says so) instead of switching grids mid-run."""
    import yaml

    from resnet_tf.training.config import load_config
    from resnet_tf.training.trainer import config_for_run

    run = tmp_path / "run"
    run.mkdir()
    recorded = load_config("quickstart", quantization_aware=True).to_dict()
    del recorded["qat_weight_bits"]
    (run / "config.yaml").write_text(yaml.safe_dump(recorded))
    resumed = config_for_run("quickstart", str(run), quantization_aware=True)
    assert resumed.qat_weight_bits == 8
    assert "resuming with the run's own qat_weight_bits 8 (the config says 7)" in \
        capsys.readouterr().out


def cpu_has(flag: str) -> bool:
    """Whether the CPU's /proc/cpuinfo flags include `flag` (False where there are none)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f
                          if line.startswith("flags")), [])
    except OSError:
        return False
    return flag in flags


RUN_ALONE = r"""
import json, sys
import numpy as np
fmt, path, pixels_path, labels_path = sys.argv[1:5]
pixels, labels = np.load(pixels_path), np.load(labels_path)
if fmt == "tflite":
    from ai_edge_litert.interpreter import Interpreter
    runner = Interpreter(model_path=path + "/model.tflite", num_threads=2).get_signature_runner(
        "serving_default")
    probabilities = runner(images=pixels)["probabilities"]
elif fmt == "onnx":
    import onnxruntime
    options = onnxruntime.SessionOptions()
    info = json.load(open(path + "/preprocessing.json"))
    for key, value in info.get("onnxruntime_session_config", {}).items():  # the contract's
        options.add_session_config_entry(key, value)
    session = onnxruntime.InferenceSession(path + "/model.onnx", options,
                                           providers=["CPUExecutionProvider"])
    probabilities = session.run(["probabilities"], {"images": pixels})[0]
else:
    import openvino as ov
    compiled = ov.Core().compile_model(path + "/model.xml", "CPU",
                                       {"INFERENCE_PRECISION_HINT": "f32"})
    probabilities = compiled({"images": pixels})[compiled.output("probabilities")]
print(json.dumps({"top1": float(np.mean(np.argmax(probabilities, -1) == labels)),
                  "imported": sorted(m for m in ("resnet_tf", "tensorflow", "keras")
                                     if m in sys.modules)}))
"""


def largest_weight_code(fmt: str, path: str) -> int:
    """The largest |int8 code| of the weights an int8 export stores, read with its runtime's
    own library: at most 63, no x86 int8 kernel can saturate on it (`quantizers.WEIGHT_BITS`)."""
    if fmt == "tflite":
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=os.path.join(path, "model.tflite"))
        interpreter.allocate_tensors()
        codes = [interpreter.get_tensor(t["index"]) for t in interpreter.get_tensor_details()
                 if t["dtype"] == np.int8 and len(t["quantization_parameters"]["scales"]) > 1]
    elif fmt == "onnx":
        import onnx
        from onnx import numpy_helper

        graph = onnx.load(os.path.join(path, "model.onnx")).graph
        codes = [numpy_helper.to_array(t) for t in graph.initializer
                 if t.data_type == onnx.TensorProto.INT8]
    else:
        import openvino as ov

        model = ov.Core().read_model(os.path.join(path, "model.xml"))
        codes = [op.get_data() for op in model.get_ordered_ops()
                 if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8]
    assert codes, f"no int8 weights in {path}"
    return max(int(np.abs(c.astype(np.int32)).max()) for c in codes)


def tiny(**kwargs):
    blocks = [resnet_tf.resnet_v2_block("block1", 4, 1, 2), resnet_tf.resnet_v2_block(
        "block2", 8, 1, 1)]
    return resnet_tf.resnet_v2(blocks, num_classes=5, include_root_block=False, **kwargs)


def test_a_quantized_model_saves_loads_and_keeps_its_ranges(tmp_path):
    model = tiny(input_shape=(16, 16, 3))
    images = np.random.default_rng(0).uniform(-1, 1, (8, 16, 16, 3)).astype(np.float32)
    quantized = quantize_model(model)
    assert is_quantized(quantized) and not is_quantized(model)
    assert uncalibrated(quantized)  # ranges start empty
    calibrate(quantized, [images])
    assert uncalibrated(quantized) == []
    # The same weights: quantization moves the outputs a little, not a lot.
    float_out, int8_out = model(images, training=False), quantized(images, training=False)
    assert 0 < np.abs(np.asarray(float_out) - np.asarray(int8_out)).max() < \
        0.2 * np.abs(np.asarray(float_out)).max()
    quantized.save(tmp_path / "q.keras")
    loaded = keras.saving.load_model(tmp_path / "q.keras")
    assert is_quantized(loaded) and uncalibrated(loaded) == []
    np.testing.assert_array_equal(loaded(images, training=False), int8_out)
    # slim's names still cover every model variable (the ranges are not slim's).
    assert set(resnet_tf.slim_variables(quantized)) == set(resnet_tf.slim_variables(model))


def test_an_uncalibrated_quantization_aware_model_is_not_exported(tmp_path):
    """Ranges that saw no data would be written as if trained: one sentence, nothing written."""
    from resnet_tf.errors import UserError
    from resnet_tf.export.deploy import export_model

    output = tmp_path / "int8"
    with pytest.raises(UserError, match=r"activation ranges that saw no data \(.*\); train it"):
        export_model(quantize_model(tiny(input_shape=(16, 16, 3))), str(output),
                     EvalPreprocessing("inception", 16), format="tflite", precision="int8")
    assert not output.exists()


@pytest.mark.parametrize("weight_bits", [None, 8])
def test_the_activations_land_on_an_8_bit_grid_and_weights_on_their_int8_grid(weight_bits):
    """Weights on 7-bit codes (-63..63) by default, 8-bit (-127..127) when asked."""
    model = quantize_model(tiny(input_shape=(8, 8, 3)),
                           **({"weight_bits": weight_bits} if weight_bits else {}))
    images = np.random.default_rng(1).uniform(-1, 1, (4, 8, 8, 3)).astype(np.float32)
    calibrate(model, [images])
    unit = model.get_layer("block1.unit_1.bottleneck_v2")
    low, high = (float(v) for v in unit.preact_quant.range())
    out = np.asarray(unit.preact_quant(np.linspace(low, high, 1000, dtype=np.float32)))
    assert len(np.unique(out)) <= 256
    from resnet_tf.models.quantizers import fake_quant_weights

    largest = {None: 63, 8: 127}[weight_bits]
    assert unit.conv1.weight_bits == (weight_bits or 7)
    original = unit.conv1.inference_kernel()
    kernel = np.asarray(fake_quant_weights(original, unit.conv1.weight_bits))
    step = np.abs(original).max(axis=(0, 1, 2)) / largest  # the runtimes' weight scale
    codes = kernel / step
    np.testing.assert_allclose(codes, np.round(codes), atol=1e-3)
    assert np.abs(np.round(codes)).max(axis=(0, 1, 2)).tolist() == [largest] * codes.shape[-1]
    # The bias on the int32 grid of input scale x that weight scale.
    from resnet_tf.models.quantizers import round_bias

    input_range = (-1.0, 1.0 + 1.0 / 127.0)
    bias = np.random.default_rng(2).normal(0, 0.3, codes.shape[-1]).astype(np.float32)
    rounded = np.asarray(round_bias(bias, input_range, original, unit.conv1.weight_bits))
    grid = rounded / ((input_range[1] - input_range[0]) / 255.0 * step)
    np.testing.assert_allclose(grid, np.round(grid), atol=1e-2)
    with pytest.raises(ValueError, match=r"weight_bits must be 7 or 8\. Received: weight_bits=6"):
        quantize_model(tiny(), weight_bits=6)


def test_the_onnx_export_recovers_either_weight_grid_exactly():
    """tf2onnx writes fake-quantized kernels as float32 on their grid; the export stores them
    as int8 codes: 7-bit weights within +-63, 8-bit ones on their own grid, tiny channels
    (a batch norm's near-zero gamma folded in) included."""
    from resnet_tf.export.formats.onnx import _on_int8_grid

    rng = np.random.default_rng(0)
    bounds = np.array([1.0, 0.5, 1e-3, 2e-4], np.float32)
    for largest in (63, 127):
        codes = rng.integers(-largest, largest + 1, (4, 8, 3, 3))
        codes[:, 0, 0, 0] = largest  # each channel's max
        weights = (codes * (bounds / largest)[:, None, None, None]).astype(np.float32)
        scale, found, error = _on_int8_grid(weights)
        np.testing.assert_array_equal(found, codes)
        np.testing.assert_allclose(scale, bounds / largest, rtol=1e-6)
        assert error <= 1e-6


# One int8 convolution in OpenVINO, its weights all +-CODE and its u8 inputs 0 or 255: the
# largest |error| against exact integer arithmetic. Run with and without oneDNN's ISA capped.
SATURATION_PROBE = r"""
import sys
import numpy as np
import openvino as ov
import openvino.opset13 as ops
code = int(sys.argv[1])
rng = np.random.default_rng(0)
weights = rng.choice([-code, code], size=(16, 64, 3, 3)).astype(np.int8)
x = ops.parameter([1, 64, 8, 8], np.float32, name="x")
u8 = ops.fake_quantize(x, np.float32(0), np.float32(255), np.float32(0), np.float32(255), 256)
kernel = ops.multiply(ops.convert(ops.constant(weights), np.float32),
                      ops.constant(np.ones((16, 1, 1, 1), np.float32)))
conv = ops.convolution(u8, kernel, [1, 1], [1, 1], [1, 1], [1, 1])
compiled = ov.Core().compile_model(ov.Model([conv], [x]), "CPU",
                                   {"INFERENCE_PRECISION_HINT": "f32"})
pixels = (rng.random((1, 64, 8, 8)) > 0.5).astype(np.float32) * 255
out = compiled({"x": pixels})[0]
padded = np.pad(pixels, ((0, 0), (0, 0), (1, 1), (1, 1))).astype(np.float64)
windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))
exact = np.einsum("bchwij,ocij->bohw", windows, weights.astype(np.float64))
print(float(np.abs(out - exact).max()))
"""


def openvino_probe_error(code: int, capped: bool) -> float:
    env = dict(os.environ, **({"ONEDNN_MAX_CPU_ISA": "AVX2"} if capped else {}))
    result = subprocess.run([sys.executable, "-c", SATURATION_PROBE, str(code)],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    return float(result.stdout.split()[-1])


@pytest.mark.skipif(not cpu_has("avx2"), reason="x86 with AVX2 only")
def test_openvino_without_vnni_saturates_8_bit_weights_and_not_7_bit_ones():
    """Why quantization-aware weights are 7-bit by default, and the proof that capping oneDNN's
    ISA (`ONEDNN_MAX_CPU_ISA=AVX2`) makes OpenVINO take the kernels of an x86 CPU without VNNI,
    on any x86 CPU: the large tier's QAT test evaluates OpenVINO files that way."""
    assert openvino_probe_error(127, capped=True) > 1000  # u8 x s8 pairs saturate int16
    assert openvino_probe_error(63, capped=True) == 0.0  # 255 * 63 * 2 < 32767
    if cpu_has("avx512_vnni") or cpu_has("avx_vnni"):
        assert openvino_probe_error(127, capped=False) == 0.0  # int32 dot products


def test_units_without_an_int8_form_are_refused():
    ablation = resnet_tf.cifar_resnet_ablation(8, shortcut_type="exclusive_gating")
    with pytest.raises(ValueError, match="AblationUnit units have no int8 form"):
        quantize_model(ablation)
    with pytest.raises(ValueError, match="quantization-aware already"):
        quantize_model(quantize_model(tiny()))


@pytest.mark.parametrize("build", [
    lambda: resnet_tf.resnet_v1_18(num_classes=4, input_shape=(32, 32, 3)),
    lambda: resnet_tf.resnet_v2_50(num_classes=4, input_shape=(32, 32, 3)),
    lambda: resnet_tf.cifar_resnet_v1(8, shortcut="A", num_classes=4),
    lambda: resnet_tf.cifar_resnet_v2(11, unit="bottleneck", num_classes=4),
])
def test_every_family_with_a_unit_quantizes(build):
    model = build()
    quantized = quantize_model(model)
    images = np.random.default_rng(2).uniform(-1, 1, (2,) + model.input_shape[1:])
    calibrate(quantized, [images.astype(np.float32)])
    assert quantized(images, training=False).shape == model(images, training=False).shape


@pytest.mark.large
def test_quickstart_quantization_aware_training_exports_what_it_trained(quickstart_run,
                                                                        tmp_path):
    """The session's float quickstart, then `--quantization-aware --init-from` it for 3
    epochs: within half a point of float; int8 in all three formats with no calibration data;
    each file at most half its float32 export's size; each runtime alone gives the run's
    val_accuracy within 2 images; a larger --epochs resumes; a float32 export of the run is
    refused."""
    from resnet_tf.data import preprocessing
    from resnet_tf.data.datasets import digits_arrays
    from resnet_tf.data.pixels import EvalPreprocessing

    float_run, qat_run = quickstart_run, str(tmp_path / "qat")  # the session's float run
    result = resnet_tf_command("train", "--config", "quickstart", "--model-dir", qat_run,
                               "--quantization-aware", "--init-from", float_run, "--epochs", "3")
    assert result.returncode == 0, result.stderr[-3000:]
    assert ("quantization-aware fine-tune at learning rate 0.0002 (learning_rate 0.002 x "
            "qat_learning_rate_scale 0.1)") in result.stdout
    floats = json.load(open(os.path.join(float_run, "metrics.json")))
    metrics = json.load(open(os.path.join(qat_run, "metrics.json")))
    assert metrics["quantization_aware"] is True and metrics["epochs"] == 3
    assert metrics["val_accuracy"] >= floats["val_accuracy"] - 0.005
    _, (x_val, y_val) = digits_arrays(0.2, 0)
    pixels = preprocessing.prepare_pixels(x_val, EvalPreprocessing("inception", 16, 1.0))
    np.save(tmp_path / "pixels.npy", pixels.numpy())
    np.save(tmp_path / "labels.npy", y_val)
    for fmt in ("tflite", "onnx", "openvino"):
        output = str(tmp_path / f"{fmt}-int8")
        exported = resnet_tf_command("export", "--model-dir", qat_run, "--output", output,
                                     "--format", fmt, "--precision", "int8")
        assert exported.returncode == 0, exported.stderr[-3000:]
        assert "no calibration" in exported.stdout and "Calibrating" not in exported.stdout
        assert resnet_tf_command("export", "--model-dir", float_run, "--output",
                                 str(tmp_path / f"{fmt}-f32"), "--format", fmt).returncode == 0
        files = {"tflite": ["model.tflite"], "onnx": ["model.onnx"],
                 "openvino": ["model.xml", "model.bin"]}[fmt]
        sizes = [sum(os.path.getsize(os.path.join(d, f)) for f in files)
                 for d in (output, str(tmp_path / f"{fmt}-f32"))]
        assert sizes[0] <= 0.5 * sizes[1], (fmt, sizes)
        assert largest_weight_code(fmt, output) <= 63  # 7-bit weights in every format
        served = {}
        for capped in (False, True) if fmt == "openvino" else (False,):
            # Capped: oneDNN's kernels for x86 CPUs without VNNI (the fast tier's probe shows
            # they saturate 8-bit weights: 0.9025 against 0.9666 on one such run).
            alone = subprocess.run([sys.executable, "-c", RUN_ALONE, fmt, output,
                                    str(tmp_path / "pixels.npy"), str(tmp_path / "labels.npy")],
                                   capture_output=True, text=True, timeout=300,
                                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
                                            **({"ONEDNN_MAX_CPU_ISA": "AVX2"} if capped
                                               else {})))
            assert alone.returncode == 0, alone.stderr[-3000:]
            served[capped] = json.loads(alone.stdout.strip().splitlines()[-1])
            assert served[capped]["imported"] == []
            assert abs(served[capped]["top1"] - metrics["val_accuracy"]) * 359 <= 2 + 1e-6, (
                fmt, capped, served)
        accuracy = json.load(open(os.path.join(output, "accuracy.json")))
        assert accuracy["quantization"] == "quantization-aware"
        assert accuracy["top1"] == pytest.approx(served[False]["top1"], abs=1.5 / 359)
    refused = resnet_tf_command("export", "--model-dir", qat_run, "--output", str(tmp_path / "f"),
                                "--format", "tflite")
    assert refused.returncode == 2 and "quantization-aware" in refused.stderr
    resumed = resnet_tf_command("train", "--config", "quickstart", "--model-dir", qat_run,
                                "--quantization-aware", "--init-from", float_run, "--epochs", "4")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Epoch 4/4" in resumed.stdout and "Epoch 3/4" not in resumed.stdout
