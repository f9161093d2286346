"""Big Transfer (BiT) in slim's ResNet V2: group norm and weight-standardised convolutions as
options of slim's units, equal to timm's `resnetv2_<depth>x<width>_bit` on the same weights."""

import keras
import numpy as np
import pytest
from conftest import tiered
from release_server import Server
from source_weights import (
    BIT,
    images,
    relative_error,
    torch_state,
    write_safetensors,
)

import resnet_tf
from resnet_tf.errors import UserError

TOLERANCE = 1e-4


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    return tmp_path / "keras_home"


@pytest.mark.parametrize("fmt, timm_name, size, output_stride", tiered([
    ("safetensors", "resnetv2_50x1_bit", 224, None), ("safetensors", "resnetv2_50x1_bit", 161, 16),
    ("safetensors", "resnetv2_101x1_bit", 225, None), ("npz", "resnetv2_50x1_bit", 161, 16),
    ("npz", "resnetv2_101x1_bit", 225, None)],
    fast=[("safetensors", "resnetv2_50x1_bit", 161, 16), ("npz", "resnetv2_50x1_bit", 161, 16)]))
def test_timm_and_bits_own_files_over_a_url_give_the_stored_logits(tmp_path, keras_home, fmt,
                                                                   timm_name, size,
                                                                   output_stride):
    """timm's `resnetv2_50x1_bit` state dict with random weights, as timm's model.safetensors
    or in Google's BiT .npz layout (what timm's npz loader reads), served on 127.0.0.1:
    `resnet_v2_50x1_bit(weights=URL)` gives the logits timm's own code gave on the same [-1, 1]
    input (tests/data/sources, tests/make_source_outputs.py: "timm", and "bit" for timm's
    model loaded by timm's loader of BiT's files)."""
    from make_source_outputs import case_path
    from source_weights import write_bit_npz

    served = tmp_path / "served"
    served.mkdir()
    if fmt == "npz":
        file = "BiT-M-R{}x{}.npz".format(*BIT[timm_name])
        write_bit_npz(torch_state(timm_name), served / file)
    else:
        file = "model.safetensors"
        write_safetensors(torch_state(timm_name), served / file)
    server = Server(served)
    builder = getattr(resnet_tf, timm_name.replace("resnetv2_", "resnet_v2_"))
    model = builder(num_classes=1000, weights=f"{server.url}/{file}",
                    output_stride=output_stride)
    expected = np.load(case_path("timm" if fmt == "safetensors" else "bit", timm_name, size,
                                 output_stride))["logits"]
    assert relative_error(model.predict(images(size), verbose=0), expected) <= TOLERANCE
    # Both record BiT's [-1, 1] pixels (timm's BiT too: its mean and std are 0.5).
    assert resnet_tf.weights.sources.normalization(
        model.name, str(next(keras_home.rglob(f"*{file}")))) == "inception"


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


def test_bits_own_fine_tuned_file_comes_from_the_cache_with_bits_recipe(keras_home):
    """weights="bit-m-in1k" reads Google's `BiT-M-R50x1-ILSVRC2012.npz` from Keras' cache
    (placed there by hand: the offline route), gives timm's logits on it, and records BiT's
    evaluation: [-1, 1], the whole image at 448 px; its 1,000 classes are checked first."""
    from make_source_outputs import case_path
    from source_weights import write_bit_npz

    from resnet_tf.weights import sources

    entry = sources.published("bit-m-in1k", "resnet_v2_50x1_bit")
    assert entry.url.endswith("/bit_models/BiT-M-R50x1-ILSVRC2012.npz")
    cache = keras_home / "resnet_tf"
    cache.mkdir(parents=True)
    write_bit_npz(torch_state("resnetv2_50x1_bit"), cache / entry.fname)
    model = resnet_tf.resnet_v2_50x1_bit(num_classes=1000, weights="bit-m-in1k",
                                         output_stride=16)
    expected = np.load(case_path("bit", "resnetv2_50x1_bit", 161, 16))["logits"]
    assert relative_error(model.predict(images(161), verbose=0), expected) <= TOLERANCE
    resolved = sources.resolve_weights("resnet_v2_50x1_bit", "bit-m-in1k", None)
    assert (resolved.preprocessing.method, resolved.preprocessing.image_size,
            resolved.preprocessing.central_fraction) == ("inception", 448, None)
    with pytest.raises(UserError, match="has 1000 classes; num_classes must be 1000 or None"):
        resnet_tf.resnet_v2_50x1_bit(num_classes=10, weights="bit-m-in1k")
    features = resnet_tf.resnet_v2_50x1_bit(num_classes=None, weights="bit-m-in1k")
    assert features.output_shape == (None, 1, 1, 2048)
    # The ImageNet-21k files: 21,843 classes, at 224 px.
    bit_m = sources.published("bit-m", "resnet_v2_101x3_bit")
    assert (bit_m.num_classes, bit_m.name, bit_m.preprocessing.image_size) == (
        21843, "BiT-M-R101x3", 224)


def test_bit_npz_files_that_are_not_bit_or_not_whole_are_one_sentence(tmp_path, capsys):
    import resnet_tf_cli
    from source_weights import bit_npz_arrays

    arrays = bit_npz_arrays(torch_state("resnetv2_50x1_bit"))
    cases = {}
    np.savez(tmp_path / "other.npz", weights=np.zeros(3, np.float32))
    cases["other.npz"] = "do not hold a Big Transfer ResNet V2 in BiT's .npz layout"
    np.savez(tmp_path / "extra.npz", **arrays, **{"resnet/global_step": np.zeros(())})
    cases["extra.npz"] = r"hold arrays BiT's ResNet V2-50x1 has not \(1: resnet/global_step\)"
    np.savez(tmp_path / "pickled.npz", **arrays, note=np.array([{"a": 1}], dtype=object))
    cases["pickled.npz"] = "holding pickled Python objects, not only arrays"
    np.savez(tmp_path / "missing.npz", **{k: v for k, v in arrays.items()
                                          if k != "resnet/block1/unit02/b/group_norm/beta"})
    cases["missing.npz"] = r"lack 'resnet/block1/unit02/b/group_norm/beta'"
    whole = (tmp_path / "extra.npz").read_bytes()
    (tmp_path / "torn.npz").write_bytes(whole[: len(whole) // 2])
    cases["torn.npz"] = r"is not a complete .npz file .*fetch it again$"
    for name, message in cases.items():
        with pytest.raises(UserError, match=message):
            resnet_tf.resnet_v2_50x1_bit(weights=str(tmp_path / name))
    np.savez(tmp_path / "r101.npz", **arrays)
    with pytest.raises(UserError, match="BiT's ResNet V2-50x1 .*build it with "
                                        "resnet_v2_50x1_bit, not resnet_v2_101x1_bit"):
        resnet_tf.resnet_v2_101x1_bit(weights=str(tmp_path / "r101.npz"))
    photo = tmp_path / "photo.png"
    import tensorflow as tf

    photo.write_bytes(tf.io.encode_png(np.zeros((8, 8, 3), np.uint8)).numpy())
    assert resnet_tf_cli.main(["predict", "--model", "resnet_v2_50x1_bit", "--weights",
                               str(tmp_path / "torn.npz"), str(photo)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a complete .npz file" in err


def test_the_hyperrule_schedule_is_bits_step_for_step(tmp_path):
    """schedule: bit_hyperrule over a run of 500 steps of BiT's own length gives BiT's
    `get_lr` at every step (bit_hyperrule.py: a linear warm-up to step 100, / 10 past 200, 300
    and 400, under 20,000 images), and other lengths stretch that shape; the schedule is saved
    with the optimizer."""
    from resnet_tf.training.config import TrainConfig
    from resnet_tf.training.optimization import learning_rate_schedule, make_optimizer

    def bits_get_lr(step, base_lr, supports):
        if step < supports[0]:
            return base_lr * step / supports[0]
        return base_lr / 10 ** sum(s < step for s in supports[1:4])

    config = TrainConfig(dataset="digits", epochs=10, batch_size=32, learning_rate=0.003,
                         schedule="bit_hyperrule")
    schedule = learning_rate_schedule(config, steps_per_epoch=50)  # 1,600 images, 500 steps
    steps = np.arange(500)
    np.testing.assert_allclose([float(schedule(s)) for s in steps],
                               [bits_get_lr(s, 0.003, (100, 200, 300, 400, 500)) for s in steps],
                               rtol=1e-6, atol=1e-12)
    # 40,000 images (2 epochs of 1,250 steps of 32): BiT's 10,000-step shape, stretched.
    config.epochs = 2
    schedule = learning_rate_schedule(config, steps_per_epoch=1250)
    for step in (0, 62, 125, 200, 750, 751, 1500, 1501, 2250, 2251, 2499):
        assert float(schedule(step)) == pytest.approx(
            bits_get_lr(step * 4, 0.003, (500, 3000, 6000, 9000, 10000)), rel=1e-5, abs=1e-12)
    optimizer = make_optimizer(config, 1250)
    again = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    restored = keras.optimizers.schedules.deserialize(
        keras.optimizers.schedules.serialize(schedule))
    assert type(again) is type(optimizer)
    assert [float(restored(s)) for s in (100, 1000, 2000)] == pytest.approx([0.0024, 0.0003,
                                                                           0.00003])
    # A model compiled with it, saved whole, compiles again where only resnet_tf is imported.
    import subprocess
    import sys

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=optimizer, loss="mse")
    model.save(tmp_path / "m.keras")
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, keras, resnet_tf; m = keras.saving.load_model("
         "sys.argv[1]); s = keras.optimizers.schedules.deserialize(m.optimizer.get_config()"
         "['learning_rate']); print(type(s).__name__, float(s(1000)))", str(tmp_path / "m.keras")],
        capture_output=True, text=True,
        timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    name, rate = loaded.stdout.split()[-2:]
    assert name == "WarmupStaircase" and float(rate) == pytest.approx(0.0003)


@pytest.mark.large
def test_a_run_from_bit_m_learns_the_digits_with_the_hyperrule_and_int8_keeps_the_bound(
        tmp_path):
    """`resnet-tf train --weights bit-m` (Google's ImageNet-21k file, 21,843 classes, from
    Keras' cache: random weights here) with schedule bit_hyperrule: a new 10-class head, BiT's
    [-1, 1] recorded, BiT's own figures printed; it learns the real digits, `evaluate` gives
    the logged val_accuracy, and int8 files keep `--max-accuracy-drop` on TFLite, ONNX Runtime
    and OpenVINO (their group norms run as each runtime decomposes them: docs/models.md)."""
    import json
    import os

    from conftest import resnet_tf_command
    from source_weights import write_bit_npz

    from resnet_tf.weights.catalog import published

    home = tmp_path / "keras_home"
    (home / "resnet_tf").mkdir(parents=True)
    entry = published("bit-m", "resnet_v2_50x1_bit")
    write_bit_npz(torch_state("resnetv2_50x1_bit", num_classes=21843),
                  home / "resnet_tf" / entry.fname)
    env = dict(os.environ, KERAS_HOME=str(home))
    config = tmp_path / "bit.yaml"
    config.write_text("dataset: digits\nvalidation_split: 0.2\nimage_size: 32\naugment: false\n"
                      "central_fraction: 1.0\nmodel: resnet_v2_50x1_bit\nweights: bit-m\n"
                      "epochs: 4\nbatch_size: 32\nlearning_rate: 0.03\n"
                      "schedule: bit_hyperrule\nweight_decay: 0.0\n")
    run = tmp_path / "run"
    trained = resnet_tf_command("train", "--config", config, "--model-dir", run, env=env)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert ("bit_hyperrule: BiT trains 1438 images for 500 steps of 512 (about 178 epochs) "
            "at learning rate 0.003; this run: 4 epochs of 44 steps of 32 at 0.03, warm-up "
            "over the first 20.0%, / 10 at 40%, 60%, 80%") in trained.stdout
    assert "batch_norm_decay" not in trained.stdout  # (group norm: no moving statistics)
    assert "normalization: inception" in (run / "config.yaml").read_text()
    assert json.load(open(run / "init.json"))["layout"] == "torchvision"
    metrics = json.load(open(run / "metrics.json"))
    assert metrics["val_accuracy"] >= 0.75, metrics["val_accuracy"]
    evaluated = resnet_tf_command("evaluate", "--model-dir", run, "--json", tmp_path / "e.json",
                                  env=env)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.load(open(tmp_path / "e.json"))["top1"] == pytest.approx(
        metrics["val_accuracy"], abs=1e-6)
    for fmt in ("tflite", "onnx", "openvino"):
        output = tmp_path / f"{fmt}-int8"
        exported = resnet_tf_command("export", "--model-dir", run, "--output", output,
                                     "--format", fmt, "--precision", "int8",
                                     "--max-accuracy-drop", "0.01", env=env)
        assert exported.returncode == 0, exported.stderr[-3000:]
        accuracy = json.load(open(output / "accuracy.json"))
        assert accuracy["count"] == 359 and accuracy["drop"] <= 0.01, (fmt, accuracy)
        assert accuracy["float_layers"] == [], (fmt, accuracy)
