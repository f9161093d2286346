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
def cpu_lacks_vnni() -> bool:
    """An x86 CPU without AVX512-VNNI or AVX-VNNI (where int8 kernels multiply u8 x s8 into
    saturating int16 pairs)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f
                          if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx2" in flags and not {"avx512_vnni", "avx_vnni"} & set(flags)


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


def test_the_activations_land_on_an_8_bit_grid_and_weights_on_the_int8_grid():
    model = quantize_model(tiny(input_shape=(8, 8, 3)))
    images = np.random.default_rng(1).uniform(-1, 1, (4, 8, 8, 3)).astype(np.float32)
    calibrate(model, [images])
    unit = model.get_layer("block1.unit_1.bottleneck_v2")
    low, high = (float(v) for v in unit.preact_quant.range())
    out = np.asarray(unit.preact_quant(np.linspace(low, high, 1000, dtype=np.float32)))
    assert len(np.unique(out)) <= 256
    from resnet_tf.models.quantizers import fake_quant_weights

    kernel = np.asarray(fake_quant_weights(unit.conv1.inference_kernel()))
    codes = kernel / (np.abs(kernel).max(axis=(0, 1, 2)) / 127)
    np.testing.assert_allclose(codes, np.round(codes), atol=1e-3)


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
        alone = subprocess.run([sys.executable, "-c", RUN_ALONE, fmt, output,
                                str(tmp_path / "pixels.npy"), str(tmp_path / "labels.npy")],
                               capture_output=True, text=True, timeout=300,
                               env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        assert alone.returncode == 0, alone.stderr[-3000:]
        served = json.loads(alone.stdout.strip().splitlines()[-1])
        assert served["imported"] == []
        if not (fmt == "openvino" and cpu_lacks_vnni()):
            assert abs(served["top1"] - metrics["val_accuracy"]) * 359 <= 2 + 1e-6, (fmt, served)
        # else: OpenVINO's u8 x s8 kernels saturate on x86 without VNNI (0.8942 against 0.9694
        # on an AVX2-only Zen 3); the export measures and reports that loss (below).
        accuracy = json.load(open(os.path.join(output, "accuracy.json")))
        assert accuracy["quantization"] == "quantization-aware"
        assert accuracy["top1"] == pytest.approx(served["top1"], abs=1.5 / 359)
    refused = resnet_tf_command("export", "--model-dir", qat_run, "--output", str(tmp_path / "f"),
                                "--format", "tflite")
    assert refused.returncode == 2 and "quantization-aware" in refused.stderr
    resumed = resnet_tf_command("train", "--config", "quickstart", "--model-dir", qat_run,
                                "--quantization-aware", "--init-from", float_run, "--epochs", "4")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Epoch 4/4" in resumed.stdout and "Epoch 3/4" not in resumed.stdout
