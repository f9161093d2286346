"""Big Transfer (BiT) in slim's ResNet V2: group norm and weight-standardised convolutions as
options of slim's units, equal to timm's `resnetv2_<depth>x<width>_bit` on the same weights."""

import keras
import numpy as np
import pytest
from conftest import tiered
from release_server import Server
from source_weights import images, relative_error, torch_state, write_safetensors

import resnet_tf
from resnet_tf.errors import UserError

TOLERANCE = 1e-4


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    return tmp_path / "keras_home"


@pytest.mark.parametrize("timm_name, size, output_stride", tiered([
    ("resnetv2_50x1_bit", 224, None), ("resnetv2_50x1_bit", 161, 16),
    ("resnetv2_101x1_bit", 225, None)], fast=[("resnetv2_50x1_bit", 161, 16)]))
def test_timm_bit_safetensors_over_a_url_give_timms_stored_logits(tmp_path, keras_home,
                                                                  timm_name, size, output_stride):
    """timm's `resnetv2_50x1_bit` state dict with random weights, as timm's model.safetensors
    served on 127.0.0.1: `resnet_v2_50x1_bit(weights=URL)` gives the logits timm's own code gave
    (tests/data/sources, tests/make_source_outputs.py) on the same [-1, 1] input."""
    from make_source_outputs import case_path

    served = tmp_path / "served"
    served.mkdir()
    write_safetensors(torch_state(timm_name), served / "model.safetensors")
    server = Server(served)
    builder = getattr(resnet_tf, timm_name.replace("resnetv2_", "resnet_v2_"))
    model = builder(num_classes=1000, weights=f"{server.url}/model.safetensors",
                    output_stride=output_stride)
    expected = np.load(case_path("timm", timm_name, size, output_stride))["logits"]
    assert relative_error(model.predict(images(size), verbose=0), expected) <= TOLERANCE


@pytest.fixture(scope="module")
def bit50():
    model = resnet_tf.resnet_v2_50x1_bit(num_classes=5, input_shape=(64, 64, 3))
    rng = np.random.default_rng(0)
    for weight in model.weights:
        weight.assign(rng.normal(0.0, 0.2, weight.shape).astype("float32") +
                      (1.0 if weight.path.endswith("gamma") else 0.0))
    return model


def test_bit_is_slims_v2_with_group_norm_and_standardised_weights(bit50, tmp_path):
    names = set(resnet_tf.slim_variables(bit50))
    unit = "resnet_v2_50x1_bit/block1/unit_1/bottleneck_v2"
    assert {f"{unit}/preact/gamma", f"{unit}/conv1/GroupNorm/beta", f"{unit}/shortcut/weights",
            "resnet_v2_50x1_bit/postnorm/gamma"} <= names
    assert not any("moving_mean" in n or n.endswith("biases") and "logits" not in n
                   for n in names)  # no batch-norm statistics, no biases but the head's
    x = images(64)
    points = resnet_tf.end_points(bit50)(x, training=False)
    np.testing.assert_allclose(points["resnet_v2_50x1_bit/spatial_squeeze"],
                               bit50(x, training=False), rtol=1e-5, atol=1e-5)
    assert [resnet_tf.block_info(bit50)[f"resnet_v2_50x1_bit/block{i}"]["stride"]
            for i in (1, 2, 3, 4)] == [4, 8, 16, 32]  # BiT's layout: strides in first units
    # Training and inference agree (group norm has no moving statistics).
    np.testing.assert_allclose(bit50(x, training=True), bit50(x, training=False), rtol=1e-5,
                               atol=1e-5)
    bit50.save(tmp_path / "bit.keras")
    loaded = keras.saving.load_model(tmp_path / "bit.keras")
    np.testing.assert_array_equal(loaded(x, training=False), bit50(x, training=False))


def test_weight_standardisation_makes_the_kernels_scale_irrelevant(bit50):
    """Scaling a standardised convolution's kernel per output channel changes nothing."""
    x = images(64)
    before = np.asarray(bit50(x, training=False))
    conv = bit50.get_layer("block2.unit_1.bottleneck_v2").conv2
    kernel = np.asarray(conv.kernel)
    conv.kernel.assign(kernel * np.linspace(0.5, 4.0, kernel.shape[-1]) + 0.3)
    try:
        np.testing.assert_allclose(bit50(x, training=False), before, rtol=1e-4, atol=1e-4)
    finally:
        conv.kernel.assign(kernel)


def test_quantization_aware_training_refuses_group_norm_in_one_sentence(bit50):
    from resnet_tf.quantization.qat import quantize_model

    with pytest.raises(UserError, match="group norm and weight standardisation"):
        quantize_model(bit50)


def test_a_timm_file_of_another_width_is_refused_in_one_sentence(tmp_path):
    from source_weights import bit_state_shapes, random_arrays

    path = write_safetensors(random_arrays(bit_state_shapes(50, 1), 0), tmp_path / "m.safetensors")
    with pytest.raises(UserError, match="BiT ResNet V2-50x1 .*build it with resnet_v2_50x1_bit, "
                                        "not resnet_v2_101x1_bit"):
        resnet_tf.resnet_v2_101x1_bit(num_classes=1000, weights=str(path))


@pytest.mark.large
@pytest.mark.parametrize("fmt", ["tflite", "onnx", "openvino"])
def test_a_bit_model_exports_with_plain_convolutions_and_keras_numbers(tmp_path, fmt):
    """A tiny BiT (group norm, standardised convolutions) exported to float32: each runtime,
    alone, gives Keras' probabilities, and the ONNX file's convolutions take their weights as
    constants (the standardisation folded at export: a plain convolution)."""
    import functools
    import json
    import os
    import subprocess
    import sys

    from test_deploy import RUN_ALONE

    from resnet_tf import Block, Bottleneck, resnet_v2
    from resnet_tf.data.pixels import EvalPreprocessing
    from resnet_tf.export.deploy import export_model

    unit = functools.partial(Bottleneck, normalizer="group_norm", weight_standardization=True)
    blocks = [Block(f"block{i + 1}", unit, [(128 * 2 ** i, 32 * 2 ** i, 2 if i < 3 else 1)])
              for i in range(4)]
    model = resnet_v2(blocks, num_classes=5, input_shape=(32, 32, 3), name="bit_tiny",
                      normalizer="group_norm", weight_standardization=True, root_depth=32,
                      layout="torchvision")
    rng = np.random.default_rng(0)
    for weight in model.weights:
        weight.assign(rng.normal(0.0, 0.3, weight.shape).astype("float32") +
                      (1.0 if weight.path.endswith("gamma") else 0.0))
    output = str(tmp_path / fmt)
    export_model(model, output, EvalPreprocessing("inception", 32, central_fraction=None),
                 format=fmt, log=lambda *a: None)
    pixels = rng.uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    np.save(tmp_path / "pixels.npy", pixels)
    expected = keras.ops.convert_to_numpy(keras.ops.softmax(
        model(pixels / 127.5 - 1.0, training=False)))
    result = subprocess.run([sys.executable, "-c", RUN_ALONE, fmt, output,
                             str(tmp_path / "pixels.npy")], capture_output=True, text=True,
                            timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 0, result.stderr[-3000:]
    served = json.loads(result.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(np.array(served["probabilities"]), expected, atol=1e-5)
    if fmt == "onnx":
        import onnx

        graph = onnx.load(os.path.join(output, "model.onnx")).graph
        constants = {i.name for i in graph.initializer} | {
            n.output[0] for n in graph.node if n.op_type == "Constant"}
        convs = [n for n in graph.node if n.op_type == "Conv"]
        assert len(convs) == 1 + 4 * 3 + 4 + 1  # root, 3 per unit, 4 shortcuts, logits
        assert all(n.input[1] in constants for n in convs)
