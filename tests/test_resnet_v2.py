"""ResNet V2 builders: pinned sizes, slim's end-point names and shapes, and bad arguments."""

import numpy as np
import pytest
from conftest import tiered
from model_helpers import trainable_count

import resnet_tf
from resnet_tf import resnet_v2, resnet_v2_block

# (total weights incl. BN moving statistics, trainable) at 1001 classes.
PARAMETER_COUNTS = {
    50: (25_615_849, 25_570_409),
    101: (44_677_609, 44_579_945),
    152: (60_382_697, 60_238_953),
    200: (64_896_489, 64_728_169),
}


@pytest.mark.parametrize("depth", tiered(sorted(PARAMETER_COUNTS), [50]))
def test_parameter_counts(depth):
    model = resnet_tf.create_model(f"resnet_v2_{depth}", num_classes=1001)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert (model.count_params(), trainable) == PARAMETER_COUNTS[depth]
    assert model.name == f"resnet_v2_{depth}"


def test_resnet_v2_50_at_1000_classes_has_the_papers_size():
    # 25,568,360 trainable: the figure quoted for ResNet-50 (and keras.applications' ResNet50V2).
    model = resnet_tf.resnet_v2_50(num_classes=1000)
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == 25_568_360


TINY = [resnet_v2_block("block1", base_depth=1, num_units=2, stride=2),
        resnet_v2_block("block2", base_depth=2, num_units=2, stride=1)]


def test_end_point_names_are_slims():
    model = resnet_v2(TINY, num_classes=3, name="resnet")
    points = resnet_tf.end_points(model)(np.zeros((2, 32, 16, 3), np.float32))
    unit = "resnet/block{}/unit_{}/bottleneck_v2"
    expected = {"resnet/conv1", "resnet/logits", "resnet/spatial_squeeze", "predictions",
                "global_pool", "resnet/block1", "resnet/block2"}
    for block, unit_index in [(1, 1), (1, 2), (2, 1), (2, 2)]:
        name = unit.format(block, unit_index)
        expected |= {name, f"{name}/conv1", f"{name}/conv2", f"{name}/conv3"}
    expected |= {unit.format(1, 1) + "/shortcut", unit.format(2, 1) + "/shortcut"}
    assert set(points) == expected


def test_end_point_shapes():
    model = resnet_v2(TINY, num_classes=None, global_pool=False, name="resnet")
    points = resnet_tf.end_points(model)(np.zeros((2, 321, 321, 3), np.float32))
    # 321 -> conv1 161 -> pool1 81 -> block1 41 (stride in its last unit).
    shapes = {
        "resnet/conv1": (2, 161, 161, 64),
        "resnet/block1/unit_1/bottleneck_v2": (2, 81, 81, 4),
        "resnet/block1/unit_2/bottleneck_v2/conv2": (2, 41, 41, 1),
        "resnet/block1": (2, 41, 41, 4),
        "resnet/block2": (2, 41, 41, 8),
    }
    for name, shape in shapes.items():
        assert tuple(points[name].shape) == shape, name
    assert "predictions" not in points and "global_pool" not in points


def test_end_points_share_weights_and_report_blocks():
    model = resnet_tf.resnet_v2_50(num_classes=10, output_stride=16)
    features = resnet_tf.end_points(model)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(features(x)["resnet_v2_50/spatial_squeeze"]),
                               np.asarray(model(x)), rtol=1e-6, atol=1e-6)
    assert features.block_info == {
        "resnet_v2_50/block1": {"stride": 8, "channels": 256},
        "resnet_v2_50/block2": {"stride": 16, "channels": 512},
        "resnet_v2_50/block3": {"stride": 16, "channels": 1024},
        "resnet_v2_50/block4": {"stride": 16, "channels": 2048},
    }


@pytest.mark.parametrize("kwargs,shape", [
    (dict(num_classes=7), (2, 7)),
    (dict(num_classes=7, spatial_squeeze=False), (2, 1, 1, 7)),
    (dict(num_classes=None), (2, 1, 1, 8)),
    (dict(num_classes=None, global_pool=False), (2, 5, 3, 8)),
    (dict(num_classes=7, global_pool=False, spatial_squeeze=False), (2, 5, 3, 7)),
])
def test_heads(kwargs, shape):
    model = resnet_v2(TINY, **kwargs)
    assert tuple(model(np.zeros((2, 33, 20, 3), np.float32)).shape) == shape


def test_regularization_loss_is_slims_half_l2():
    model = resnet_v2(TINY, num_classes=3, weight_decay=0.01)
    kernels = [w for w in model.weights if w.path.endswith("kernel")]
    expected = sum(0.01 * float(np.sum(np.square(np.asarray(k)))) / 2 for k in kernels)
    assert float(sum(model.losses)) == pytest.approx(expected, rel=1e-5)
    assert len(model.losses) == len(kernels)  # conv weights only: no biases, no BN
    assert not resnet_v2(TINY, weight_decay=0.0).losses


def test_batch_norm_uses_slims_settings():
    model = resnet_v2(TINY)
    norm = model.get_layer("postnorm")
    assert (norm.momentum, norm.epsilon, norm.scale, norm.center) == (0.997, 1e-5, True, True)


def test_fixed_input_shape():
    model = resnet_tf.resnet_v2_50(num_classes=5, input_shape=(64, 64, 3))
    assert model.input_shape == (None, 64, 64, 3)


@pytest.mark.parametrize("builder,kwargs,match", [
    (resnet_tf.resnet_v2_50, dict(output_stride=6), "output_stride=6"),
    (resnet_tf.resnet_v2_50, dict(output_stride=64), "output_stride=64"),
    (resnet_tf.resnet_v2_50, dict(output_stride=-4), "output_stride=-4"),
    (resnet_tf.resnet_v2_50, dict(num_classes=0), "num_classes=0"),
    (resnet_tf.resnet_v2_50, dict(num_classes=3, global_pool=False), "global_pool=False"),
    (resnet_tf.resnet_v2_50, dict(input_shape=(224, 224)), r"input_shape=\(224, 224\)"),
    (resnet_tf.resnet_v2_50, dict(input_shape=(0, 224, 3)), r"input_shape=\(0, 224, 3\)"),
    (resnet_tf.resnet_v2_50, dict(weight_decay=-1e-4), "weight_decay=-0.0001"),
])
def test_bad_arguments(builder, kwargs, match):
    with pytest.raises(ValueError, match=match):
        builder(**kwargs)


def test_unknown_depth():
    with pytest.raises(ValueError, match="depth=42"):
        resnet_tf.resnet_v2_blocks(42)
    with pytest.raises(ValueError, match="name='resnet_v2_42'"):
        resnet_tf.create_model("resnet_v2_42")


def test_wrong_channel_count():
    model = resnet_v2(TINY, num_classes=3)
    with pytest.raises(ValueError, match=r"expected shape=\(None, None, None, 3\), "
                                         r"found shape=\(1, 32, 32, 4\)"):
        model(np.zeros((1, 32, 32, 4), np.float32))


def test_end_points_refuses_foreign_models():
    import keras

    inputs = keras.Input((4,))
    branch = keras.layers.Dense(2)(inputs)
    merged = keras.layers.Concatenate()([inputs, branch])
    with pytest.raises(ValueError, match="built by resnet_tf"):
        resnet_tf.end_points(keras.Model(inputs, merged))


def test_v2_basic_sizes():
    # Pre-activation: a BN before every unit and after the last, biases on conv2 and the
    # shortcut projections, no BN after the root conv.
    assert trainable_count(resnet_tf.resnet_v2_18(num_classes=1000)) == 11_690_600
    assert trainable_count(resnet_tf.resnet_v2_34(num_classes=1000)) == 21_800_616


# [1] Table 6 (0.27M ... 1.7M) and the exact counts with option A and a 10-way fc.
