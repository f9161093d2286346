"""Every layer's get_config is its constructor arguments; `.keras` files round-trip in a fresh
process; the same weights give the same outputs on the JAX backend."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import resnet_tf
from resnet_tf import Bottleneck, Conv2DSame, Subsample, resnet_v2, resnet_v2_block
from resnet_tf.models.cifar import ORDERS, SHORTCUT_TYPES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [resnet_v2_block("block1", base_depth=2, num_units=2, stride=2),
        resnet_v2_block("block2", base_depth=4, num_units=2, stride=2),
        resnet_v2_block("block3", base_depth=4, num_units=1, stride=1)]


@pytest.mark.parametrize("layer", [
    Conv2DSame(8, 3, stride=2, use_batch_norm=True, activation="relu", weight_decay=1e-3,
               batch_norm_decay=0.9, batch_norm_epsilon=1e-3, batch_norm_scale=False, name="c"),
    Subsample(3, name="s"),
    Bottleneck(16, 4, stride=2, rate=1, weight_decay=0.0, batch_norm_decay=0.99, name="b"),
])
def test_get_config_round_trips(layer):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    registered = keras.saving.get_registered_name(type(layer))
    assert registered == f"resnet_tf>{type(layer).__name__}"


def randomized(model, seed=0):
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        low = 0.5 if ("variance" in weight.path or "gamma" in weight.path) else -0.5
        weight.assign(rng.uniform(low, low + 1.0, weight.shape).astype("float32"))
    return model


def run_in_fresh_process(code: str, backend: str = "tensorflow") -> str:
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_keras_file_round_trip_in_a_fresh_process(tmp_path):
    """A `.keras` file loads in a fresh process after `import resnet_tf`, whichever of Keras
    and resnet_tf that process imports first (no import hook: importing resnet_tf registers
    its layers)."""
    model = randomized(resnet_v2(TINY, num_classes=4, output_stride=16, name="resnet_v2_tiny"))
    images = np.random.default_rng(1).uniform(-1, 1, (3, 37, 30, 3)).astype(np.float32)
    np.save(tmp_path / "images.npy", images)
    expected = np.asarray(model(images, training=False))
    model.save(tmp_path / "model.keras")
    for order in ("keras, resnet_tf", "resnet_tf, keras"):
        run_in_fresh_process(f"""
            import numpy as np
            import {order}
            model = keras.saving.load_model({str(tmp_path / 'model.keras')!r})
            images = np.load({str(tmp_path / 'images.npy')!r})
            np.save({str(tmp_path / 'out.npy')!r}, np.asarray(model(images, training=False)))
            print(model.name)
        """)
        np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, rtol=1e-5,
                                   atol=1e-6)


@pytest.mark.large
@pytest.mark.parametrize("training", [False, True])
def test_jax_backend_gives_the_same_outputs(tmp_path, training):
    pytest.importorskip("jax")
    model = randomized(resnet_v2(TINY, num_classes=4, name="resnet_v2_tiny"))
    images = np.random.default_rng(2).uniform(-1, 1, (2, 33, 40, 3)).astype(np.float32)
    np.save(tmp_path / "images.npy", images)
    model.save_weights(tmp_path / "tiny.weights.h5")
    expected = {k: np.asarray(v) for k, v in
                resnet_tf.end_points(model)(images, training=training).items()}
    out = run_in_fresh_process(f"""
        import json, numpy as np, keras, resnet_tf
        assert keras.backend.backend() == "jax"
        blocks = [resnet_tf.resnet_v2_block("block1", 2, 2, 2),
                  resnet_tf.resnet_v2_block("block2", 4, 2, 2),
                  resnet_tf.resnet_v2_block("block3", 4, 1, 1)]
        model = resnet_tf.resnet_v2(blocks, num_classes=4, name="resnet_v2_tiny")
        model.load_weights({str(tmp_path / 'tiny.weights.h5')!r})
        images = np.load({str(tmp_path / 'images.npy')!r})
        points = resnet_tf.end_points(model)(images, training={training})
        np.savez({str(tmp_path / 'jax.npz')!r}, **{{k: np.asarray(v) for k, v in points.items()}})
        print(json.dumps(keras.backend.backend()))
    """, backend="jax")
    assert json.loads(out.strip().splitlines()[-1]) == "jax"
    got = np.load(tmp_path / "jax.npz")
    assert set(got.files) == set(expected)
    for name, value in expected.items():
        scale = max(float(np.abs(value).max()), 1e-12)
        assert float(np.abs(got[name] - value).max()) / scale < 2e-4, name


# Every family through one round trip: save, reload, same outputs, slim names, end points.
BUILDERS = [
    lambda: resnet_tf.resnet_v1_18(num_classes=7, input_shape=(64, 64, 3)),
    lambda: resnet_tf.resnet_v2_18(num_classes=7, input_shape=(64, 64, 3)),
    lambda: resnet_tf.resnet_v1(resnet_tf.resnet_v1_blocks(50, base_depth=4), num_classes=3),
    lambda: resnet_tf.cifar_resnet_v1(20, shortcut="A"),
    lambda: resnet_tf.cifar_resnet_v1(20, shortcut="C"),
    lambda: resnet_tf.cifar_resnet_v2(20),
    lambda: resnet_tf.cifar_resnet_v2(11, unit="bottleneck"),
] + [
    (lambda s=s, o=o: resnet_tf.cifar_resnet_ablation(8, shortcut_type=s, order=o))
    for s in SHORTCUT_TYPES for o in ORDERS
]


@pytest.mark.parametrize("build", BUILDERS)
def test_keras_round_trip(tmp_path, build):
    model = build()
    for w in model.non_trainable_weights:
        w.assign(np.random.default_rng(0).uniform(0.5, 1.5, w.shape).astype("float32"))
    shape = tuple(d or 40 for d in model.input_shape[1:3]) + (3,)
    images = np.random.default_rng(1).uniform(-1, 1, (2,) + shape).astype("float32")
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded(images, training=False), model(images, training=False),
                               rtol=1e-5, atol=1e-5)
    # Every variable has a slim name, and end points work for every family.
    assert len(resnet_tf.slim_variables(model)) == len(model.weights)
    assert f"{model.name}/logits" in resnet_tf.end_points(model)(images)


@pytest.mark.parametrize("name", ["resnet_v2_tiny", "resnet_v2_tiny_qat", "cifar_ablation_tiny"])
def test_keras_files_written_before_the_layout_change_load(name):
    """Files saved by resnet_tf 0.1.0's flat layout (their configs name `resnet_tf.units`,
    `resnet_tf.quantizers`, ...) load and give the outputs they gave then."""
    data = os.path.join(ROOT, "tests", "data")
    model = keras.saving.load_model(os.path.join(data, f"{name}_0.1.0.keras"))
    images = np.load(os.path.join(data, "images_32px.npy"))
    np.testing.assert_allclose(np.asarray(model(images, training=False)),
                               np.load(os.path.join(data, f"{name}_0.1.0_outputs.npy")),
                               rtol=1e-5, atol=1e-6)
