"""The stronger ResNets (ResNeXt, Wide ResNet, ResNet-D, SE-ResNeXt, ResNet-RS) are slim's
network with more unit and root options: one harness checks every kind on tiny widths (end
points, block_info, output_stride, `.keras` files, mixed precision, training-only stochastic
depth and dropout, quantization-aware training), beside the parity with each source's own code
(tests/test_weight_sources.py)."""

import keras
import numpy as np
import pytest

import resnet_tf
from resnet_tf.errors import UserError
from resnet_tf.models.resnet_v1 import resnet_v1
from resnet_tf.models.variants import VARIANTS, Variant, variant_blocks

# One builder of each kind, tiny: (name, base_depth). ResNeXt's 32 groups need a base depth of
# 16 (one channel per group in block 1).
KINDS = [("resnext50_32x4d", 16), ("wide_resnet50_2", 8), ("resnet50d", 8),
         ("seresnext50_32x4d", 16), ("resnet_rs_50", 8)]


def tiny(name, base_depth, **kwargs):
    return getattr(resnet_tf, name)(num_classes=5, base_depth=base_depth, **kwargs)


def randomize(model, seed=0):
    """Random weights scaled by their fan-in and random batch-norm statistics (outputs of
    order one through 16 units)."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        if "variance" in weight.path or "gamma" in weight.path:
            value = rng.uniform(0.5, 1.5, weight.shape)
        elif len(weight.shape) > 1:
            value = rng.normal(0, np.sqrt(1.0 / np.prod(weight.shape[:-1])), weight.shape)
        else:
            value = rng.normal(0, 0.1, weight.shape)
        weight.assign(value.astype("float32"))
    return model


def images(height=32, width=32, count=2, seed=1):
    return np.random.default_rng(seed).normal(0, 1, (count, height, width, 3)).astype(
        np.float32)


@pytest.fixture(scope="module", params=KINDS, ids=[name for name, _ in KINDS])
def kind(request):
    name, base_depth = request.param
    return name, base_depth, randomize(tiny(name, base_depth))


def test_end_points_and_block_info_are_slims(kind):
    name, base_depth, model = kind
    variant = VARIANTS[name]
    points = resnet_tf.end_points(model)
    outputs = points(images(), training=False)
    stems = {"slim": ["conv1"], "deep": ["conv1_1", "conv1_2", "conv1_3"],
             "deep_strided": ["conv1_1", "conv1_2", "conv1_3", "conv1_4"]}[variant.stem]
    for stem in stems:
        assert f"{name}/{stem}" in outputs
    unit = f"{name}/block1/unit_1/bottleneck_v1"
    assert {f"{unit}/conv1", f"{unit}/conv2", f"{unit}/conv3"} <= set(outputs)
    assert (f"{unit}/shortcut" in outputs) == (4 * base_depth != 64)  # a projection
    assert (f"{unit}/se" in outputs) == bool(variant.se_ratio)
    np.testing.assert_allclose(outputs[f"{name}/spatial_squeeze"],
                               model(images(), training=False), rtol=1e-5, atol=1e-5)
    info = points.block_info
    assert [info[f"{name}/block{i}"]["stride"] for i in (1, 2, 3, 4)] == [8, 16, 32, 32]
    assert info[f"{name}/block4"]["channels"] == 4 * 8 * base_depth
    from resnet_tf.models.precision import all_layers

    groups = {layer.groups for layer in all_layers(model)
              if isinstance(layer, resnet_tf.Conv2DSame) and layer.name == "conv2"}
    assert groups == {variant.groups}


def test_a_keras_file_gives_the_same_model(kind, tmp_path):
    name, _, model = kind
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(loaded(images(), training=False), model(images(),
                                                                          training=False))
    assert set(resnet_tf.slim_variables(loaded)) == set(resnet_tf.slim_variables(model))


def test_stochastic_depth_and_dropout_act_in_training_only(kind):
    name, base_depth, model = kind
    dropping = tiny(name, base_depth, drop_path_rate=0.5, dropout_rate=0.5)
    dropping.set_weights(model.get_weights())
    units = [layer for layer in dropping.layers if isinstance(layer, resnet_tf.ResidualUnit)]
    rates = [unit.drop_path_rate for unit in units]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.5) and rates == sorted(rates)
    x = images()
    np.testing.assert_array_equal(dropping(x, training=False), model(x, training=False))
    first, second = (np.asarray(dropping(x, training=True)) for _ in range(2))
    assert not np.allclose(first, second)  # batch norm in training is deterministic


def test_mixed_precision_computes_in_bfloat16_with_float32_outputs(kind):
    name, base_depth, model = kind
    mixed = tiny(name, base_depth, dtype="mixed_bfloat16")
    mixed.set_weights(model.get_weights())
    out = mixed(images(), training=False)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    reference = np.asarray(model(images(), training=False))
    assert np.abs(np.asarray(out) - reference).max() <= 0.1 * np.abs(reference).max()


@pytest.mark.parametrize("output_stride", [8, 16])
def test_atrous_features_equal_the_nominal_ones(output_stride):
    """slim's testAtrousValues for the new options (groups, shortcut D, the deep stem; slim's
    layout: strides in a block's last unit), at a size the strides divide (at other sizes
    ResNet-D's atrous pool averages in timm's zero padding, as timm does). Not for
    squeeze-and-excitation: its mean over the image sees every atrous position (in timm too);
    parity with timm at output_stride 16 covers it (tests/test_weight_sources.py)."""
    variant = Variant((2, 2, 2, 2), groups=4, width_per_group=8, stem="deep", shortcut="D")
    blocks = variant_blocks(variant, base_depth=16)
    nominal = randomize(resnet_v1(blocks, stem="deep", global_pool=False))
    dense = resnet_v1(blocks, stem="deep", global_pool=False, output_stride=output_stride)
    dense.set_weights(nominal.get_weights())
    x = images(64, 96)
    expected = np.asarray(nominal(x, training=False))
    output = np.asarray(resnet_tf.subsample(dense(x, training=False), 32 // output_stride))
    np.testing.assert_allclose(output, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_quantization_aware_training_takes_resnext_and_refuses_se_and_d_in_one_sentence():
    from resnet_tf.quantization.qat import calibrate, quantize_model

    resnext = randomize(resnet_v1(variant_blocks(VARIANTS["resnext50_32x4d"], 16),
                                  num_classes=5, input_shape=(32, 32, 3)))
    quantized = quantize_model(resnext)
    calibrate(quantized, [images()])
    assert quantized(images(), training=False).shape == (2, 5)
    with pytest.raises(UserError, match="squeeze-and-excitation's gate"):
        quantize_model(tiny("seresnext50_32x4d", 16))
    with pytest.raises(UserError, match="ResNet-D's average-pool shortcut"):
        quantize_model(resnet_v1(variant_blocks(VARIANTS["resnet50d"], 8), num_classes=5))
    with pytest.raises(UserError, match=r"its deep stem \('conv1_2'\) has no int8 form"):
        quantize_model(tiny("resnet50d", 8))


def test_bad_options_are_one_sentence():
    with pytest.raises(UserError, match="base_depth must be at least 16"):
        tiny("resnext50_32x4d", 8)
    with pytest.raises(UserError, match=r"drop_path_rate must be in \[0, 1\)"):
        tiny("resnet50d", 8, drop_path_rate=1.0)
    with pytest.raises(UserError, match="stem must be one of"):
        resnet_v1(variant_blocks(VARIANTS["resnet50d"], 8), stem="stair")
    with pytest.raises(UserError, match="resnet50d's stem is its architecture's"):
        resnet_tf.resnet50d(stem="slim")
    with pytest.raises(UserError, match="filters must be a multiple of groups"):
        resnet_tf.Conv2DSame(10, 3, groups=4)


def test_every_variant_is_in_the_model_table_and_a_config_sets_its_options():
    from resnet_tf.training.config import config_from_dict

    assert set(VARIANTS) <= set(resnet_tf.MODEL_NAMES)
    config = config_from_dict(dict(dataset="digits", model="resnet_rs_50", base_depth=8,
                                   drop_path_rate=0.1, dropout_rate=0.0))
    from resnet_tf.training.trainer import build_model

    model = build_model(config, 10)
    assert max(unit.drop_path_rate for unit in model.layers
               if isinstance(unit, resnet_tf.ResidualUnit)) == pytest.approx(0.1)
    assert not any(layer.name == "dropout" for layer in model.layers)
    with pytest.raises(UserError, match=r"takes none of \['drop_path_rate'\]"):
        config_from_dict(dict(dataset="digits", model="resnet_v1_50", drop_path_rate=0.1))


# --------------------------------------------------------------------------------------------
# Large: tiny models of the new kinds trained on the quickstart's real digits, through the CLI


def variant_config(path, model, base_depth):
    path.write_text(f"""dataset: digits
validation_split: 0.2
image_size: 32
augment: false
central_fraction: 1.0
model: {model}
base_depth: {base_depth}
drop_path_rate: 0.1
epochs: 6
batch_size: 32
optimizer: adam
learning_rate: 0.002
schedule: cosine
batch_norm_decay: 0.9
""")
    return path


@pytest.mark.large
@pytest.mark.parametrize("model, base_depth", [("seresnext50_32x4d", 16), ("resnet_rs_50", 8)])
def test_tiny_variants_learn_the_digits_with_stochastic_depth_and_int8_keeps_the_bound(
        tmp_path, model, base_depth):
    """`resnet-tf train` of a tiny SE-ResNeXt (grouped convolutions, squeeze-and-excitation)
    and a tiny ResNet-RS (deep strided stem, average-pool shortcuts, SE, dropout) with
    stochastic depth on: they learn the real digits, `evaluate` gives the logged val_accuracy
    (stochastic depth and dropout are training-only), and the SE-ResNeXt's int8 files keep
    `--max-accuracy-drop` on all three runtimes (squeeze-and-excitation's mean and gate and the
    grouped convolutions convert on each)."""
    import json

    from conftest import resnet_tf_command

    run = tmp_path / "run"
    config = variant_config(tmp_path / f"{model}.yaml", model, base_depth)
    trained = resnet_tf_command("train", "--config", config, "--model-dir", run)
    assert trained.returncode == 0, trained.stderr[-3000:]
    metrics = json.load(open(run / "metrics.json"))
    assert metrics["val_accuracy"] >= 0.75, metrics["val_accuracy"]
    evaluated = resnet_tf_command("evaluate", "--model-dir", run, "--json", tmp_path / "e.json")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.load(open(tmp_path / "e.json"))["top1"] == pytest.approx(
        metrics["val_accuracy"], abs=1e-6)
    if model == "resnet_rs_50":  # average pool, SE and dropout in every float format
        keras_top1 = json.load(open(tmp_path / "e.json"))["top1"]
        for fmt in ("tflite", "onnx", "openvino"):
            output = tmp_path / f"{fmt}-f32"
            exported = resnet_tf_command("export", "--model-dir", run, "--output", output,
                                         "--format", fmt)
            assert exported.returncode == 0, exported.stderr[-3000:]
            evaluated = resnet_tf_command("evaluate", "--export", output, "--model-dir", run,
                                          "--json", tmp_path / f"{fmt}.json")
            assert evaluated.returncode == 0, evaluated.stderr[-3000:]
            assert json.load(open(tmp_path / f"{fmt}.json"))["top1"] == pytest.approx(
                keras_top1, abs=1 / 359 + 1e-9), fmt
        return
    for fmt in ("tflite", "onnx", "openvino"):
        output = tmp_path / f"{fmt}-int8"
        exported = resnet_tf_command("export", "--model-dir", run, "--output", output,
                                     "--format", fmt, "--precision", "int8",
                                     "--max-accuracy-drop", "0.01")
        assert exported.returncode == 0, exported.stderr[-3000:]
        accuracy = json.load(open(output / "accuracy.json"))
        assert accuracy["count"] == 359 and accuracy["drop"] <= 0.01, (fmt, accuracy)


@pytest.mark.large
def test_a_run_from_a_variants_weights_file_fine_tunes_in_their_layout(tmp_path):
    """`train --weights FILE` with a timm ResNet-D file: the run builds resnet50d in the
    file's layout, starts from its weights (all but the head: 10 classes), normalises as timm
    did and records both; `evaluate` gives the logged val_accuracy."""
    import json

    from conftest import resnet_tf_command
    from source_weights import torch_state, write_safetensors

    path = write_safetensors(torch_state("resnet50d"), tmp_path / "resnet50d.safetensors")
    config = tmp_path / "d.yaml"
    config.write_text("dataset: digits\nvalidation_split: 0.2\nimage_size: 32\naugment: false\n"
                      "central_fraction: 1.0\nmodel: resnet50d\nepochs: 1\nbatch_size: 32\n"
                      "optimizer: adam\nlearning_rate: 0.001\nbatch_norm_decay: 0.9\n"
                      "drop_path_rate: 0.05\n")
    run = tmp_path / "run"
    trained = resnet_tf_command("train", "--config", config, "--model-dir", run, "--weights",
                                path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert f"starting from {path} (weights, sha256" in trained.stdout
    init = json.load(open(run / "init.json"))
    assert (init["layout"], init["path"]) == ("torchvision", str(path))
    assert "normalization: torchvision" in (run / "config.yaml").read_text()
    model = keras.saving.load_model(run / "model.keras")
    assert [layer.name for layer in model.layers][1:4] == ["conv1_1", "conv1_2", "conv1_3"]
    evaluated = resnet_tf_command("evaluate", "--model-dir", run, "--json", tmp_path / "e.json")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    logged = json.load(open(run / "metrics.json"))["val_accuracy"]
    assert json.load(open(tmp_path / "e.json"))["top1"] == pytest.approx(logged, abs=1e-6)
