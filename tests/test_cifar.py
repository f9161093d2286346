"""CIFAR ResNets of [1] and [2], and [2]'s ablation units checked on hand-computed cases."""

import keras
import numpy as np
import pytest
from model_helpers import trainable_count

import resnet_tf
from resnet_tf.models.cifar import AblationUnit


# [1] Table 6 (0.27M ... 1.7M) and the exact counts with option A and a 10-way fc.
@pytest.mark.parametrize("depth,count,paper", [
    (20, 269_722, 0.27), (32, 464_154, 0.46), (44, 658_586, 0.66), (56, 853_018, 0.85),
    (110, 1_727_962, 1.7),
])
def test_cifar_v1_sizes_are_the_papers(depth, count, paper):
    model = resnet_tf.cifar_resnet_v1(depth)
    assert trainable_count(model) == count and round(count / 1e6, 2 if paper < 1 else 1) == paper
    assert model.output_shape == (None, 10)


@pytest.mark.large
def test_cifar_1202_and_1001_sizes():
    assert round(trainable_count(resnet_tf.cifar_resnet_v1(1202)) / 1e6, 1) == 19.4
    # [2] Table 3's 10.2M for ResNet-1001 counts convolution and fc weights (10,178,480);
    # with batch-norm parameters and biases the model has 10,377,898.
    v1001 = resnet_tf.cifar_resnet_v2(1001)
    kernels = sum(int(np.prod(w.shape)) for w in v1001.trainable_weights
                  if w.path.endswith("kernel"))
    assert round(kernels / 1e6, 1) == 10.2 and trainable_count(v1001) == 10_377_898


def test_cifar_v2_follows_the_paper():
    v110, v164 = resnet_tf.cifar_resnet_v2(110), resnet_tf.cifar_resnet_v2(164)
    assert round(trainable_count(v110) / 1e6, 1) == 1.7  # basic units
    assert round(trainable_count(v164) / 1e6, 1) == 1.7  # bottleneck units, [2] Table 3
    assert v164.get_layer("block3.unit_1.bottleneck_v2").depth == 256
    assert v110.get_layer("block3.unit_1.basic_v2").depth == 64
    assert resnet_tf.cifar_resnet_v2(56, unit="bottleneck").get_layer(
        "block1.unit_6.bottleneck_v2") is not None


@pytest.mark.parametrize("call,message", [
    (lambda: resnet_tf.cifar_resnet_v1(21), r"depth must be 6n\+2"),
    (lambda: resnet_tf.cifar_resnet_v1(2), r"depth must be 6n\+2"),
    (lambda: resnet_tf.cifar_resnet_v2(57, unit="bottleneck"), r"depth must be 9n\+2"),
    (lambda: resnet_tf.cifar_resnet_v2(165, unit="basic"), r"depth must be 6n\+2"),
    (lambda: resnet_tf.cifar_resnet_v2(56, unit="wide"), r"unit must be"),
    (lambda: resnet_tf.cifar_resnet_v1(20, shortcut="E"), r"shortcut must be one of"),
    (lambda: resnet_tf.cifar_resnet_ablation(20, shortcut_type="skip"), r"shortcut_type must"),
    (lambda: resnet_tf.cifar_resnet_ablation(20, order="bn_relu"), r"order must be one of"),
])
def test_invalid_configurations_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def unit_on_scalar(shortcut_type, order, w1, w2, x, gate_weight=None, **kwargs):
    """A 1-channel AblationUnit on a 1x1 map: a 3x3 conv sees only its centre tap, batch norm
    (inference, mean 0, variance 1 - eps: exactly identity) and the gate are hand-set."""
    unit = AblationUnit(1, shortcut_type=shortcut_type, order=order, **kwargs)
    unit.build((1, 1, 1, 1))
    for conv, w in ((unit.conv1, w1), (unit.conv2, w2)):
        kernel = np.zeros((3, 3, 1, 1), "float32")
        kernel[1, 1] = w
        conv.kernel.assign(kernel)
    if gate_weight is not None:
        unit.gate.kernel.assign(np.full((1, 1, 1, 1), gate_weight, "float32"))
    for layer in unit._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_variance.assign(np.full((1,), 1.0 - layer.epsilon, "float32"))
    return float(np.asarray(unit(np.full((1, 1, 1, 1), x, "float32"), training=False))
                 .squeeze())


relu = lambda v: max(v, 0.0)  # noqa: E731
sigmoid = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731


@pytest.mark.parametrize("x", [1.5, -0.75])
def test_ablation_orders_by_hand(x):
    w1, w2 = 2.0, -0.5
    cases = {
        "original": relu(x + w2 * relu(w1 * x)),
        "bn_after_addition": relu(x + w2 * relu(w1 * x)),  # BN is identity here
        "relu_before_addition": x + relu(w2 * relu(w1 * x)),
        "relu_preactivation": x + w2 * relu(w1 * relu(x)),
        "full_preactivation": x + w2 * relu(w1 * relu(x)),
    }
    for order, expected in cases.items():
        assert unit_on_scalar("identity", order, w1, w2, x) == pytest.approx(expected, abs=1e-5), order


def test_ablation_shortcuts_by_hand():
    x, w1, w2 = 1.5, 2.0, -0.5
    f = w2 * relu(w1 * x)
    assert unit_on_scalar("scaling", "relu_preactivation", w1, w2, x, shortcut_scale=0.5,
                          residual_scale=0.25) == pytest.approx(0.5 * x + 0.25 * f, abs=1e-5)
    unit = AblationUnit(1, shortcut_type="exclusive_gating", order="relu_preactivation")
    unit.build((1, 1, 1, 1))
    assert float(np.asarray(unit.gate.bias)[0]) == -6.0  # [2]'s b_g initialisation
    for shortcut_type, merge in (("exclusive_gating", lambda g: (1 - g) * x + g * f),
                                 ("shortcut_gating", lambda g: (1 - g) * x + f)):
        out = unit_on_scalar(shortcut_type, "relu_preactivation", w1, w2, x, gate_weight=0.4,
                             gate_bias=-1.0)
        g = sigmoid(0.4 * x - 1.0)
        assert out == pytest.approx(merge(g), abs=1e-5), shortcut_type
    # dropout: the identity at inference.
    assert unit_on_scalar("dropout", "relu_preactivation", w1, w2, x) == pytest.approx(x + f,
                                                                                      abs=1e-5)


def test_conv_shortcut_projects_every_unit():
    model = resnet_tf.cifar_resnet_ablation(20, shortcut_type="conv")
    units = [layer for layer in model.layers if isinstance(layer, AblationUnit)]
    assert len(units) == 9 and all(u.projection_shortcut for u in units)
