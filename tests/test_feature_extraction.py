"""end_points(model): an ordinary functional model over the model's own layers, built through
public Keras API only; it saves, reloads, and works on a reloaded model."""

import os
import re

import keras
import numpy as np

import resnet_tf
from resnet_tf import resnet_v2, resnet_v2_block

TINY = [resnet_v2_block("block1", base_depth=2, num_units=2, stride=2),
        resnet_v2_block("block2", base_depth=4, num_units=1, stride=1)]
PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "resnet_tf")


def randomised(model):
    rng = np.random.default_rng(0)
    for w in model.weights:
        w.assign(rng.uniform(0.5, 1.5, w.shape).astype("float32"))
    return model


def test_the_end_points_model_saves_and_reloads(tmp_path):
    model = randomised(resnet_v2(TINY, num_classes=3, name="resnet"))
    images = np.random.default_rng(1).uniform(-1, 1, (2, 20, 18, 3)).astype(np.float32)
    features = resnet_tf.end_points(model)
    assert isinstance(features, keras.Model) and features.get_config()["layers"]
    before = {k: np.asarray(v) for k, v in features(images, training=False).items()}
    np.testing.assert_allclose(before["resnet/spatial_squeeze"],
                               model(images, training=False), rtol=1e-6)
    features.save(tmp_path / "features.keras")
    reloaded = keras.saving.load_model(tmp_path / "features.keras")
    after = reloaded(images, training=False)
    assert set(after) == set(before)
    for name, value in before.items():
        np.testing.assert_allclose(after[name], value, rtol=1e-6, err_msg=name)


def test_end_points_of_a_reloaded_model(tmp_path):
    model = randomised(resnet_v2(TINY, num_classes=3, name="resnet"))
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    images = np.random.default_rng(2).uniform(-1, 1, (1, 16, 16, 3)).astype(np.float32)
    ours, theirs = resnet_tf.end_points(model), resnet_tf.end_points(loaded)
    assert theirs.block_info == ours.block_info == {  # root block 4, block1's last unit 2
        "resnet/block1": {"stride": 8, "channels": 8},
        "resnet/block2": {"stride": 8, "channels": 16}}
    a, b = ours(images, training=False), theirs(images, training=False)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-6, err_msg=name)
    # Twice on one model: each call is a new functional model over the same layers.
    again = resnet_tf.end_points(model)(images, training=False)
    np.testing.assert_allclose(again["resnet/block2"], a["resnet/block2"], rtol=1e-6)


def test_the_package_uses_no_private_keras_attributes():
    private = re.compile(r"\._(inbound_nodes|outbound_nodes|keras_history|initial_epoch|"
                         r"layers|self_tracked|tracker|trainable_variables|functional|"
                         r"build_shapes_dict)\b|\.built = ")
    found = []
    for name in sorted(os.listdir(PACKAGE)):
        if name.endswith(".py"):
            for number, line in enumerate(open(os.path.join(PACKAGE, name)), 1):
                if private.search(line):
                    found.append(f"{name}:{number}: {line.strip()}")
    assert found == []
