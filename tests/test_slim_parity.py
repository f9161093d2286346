"""resnet_tf's ResNet V2 against TF-slim's own graph (tf_slim.nets.resnet_v2).

Each case: slim's graph with random-valued variables (BN statistics, gamma, beta and biases too)
-> a slim checkpoint -> `load_slim_checkpoint` -> the model's output, every end point and the
weight-decay loss, equal within 2e-4 relative (max abs difference over max abs value).
"""

import itertools

import numpy as np
import pytest
from conftest import PAIRWISE_PARITY, tiered
from slim_reference import relative_error, run_slim

import resnet_tf
from resnet_tf.models.precision import dtype_policy_scope
from resnet_tf.models.resnet_utils import RESNET_UNITS as RESNET_V2_UNITS

TOLERANCE = 2e-4
# research/slim's end points that the pip tf-slim predates.
RESEARCH_SLIM_EXTRAS = {"global_pool", "{scope}/spatial_squeeze"}


def tolerances(float64_points, slim_points):
    """Per end point: 2e-4, or twice slim's own float32 error against a float64 run.

    In training mode, batch statistics over a handful of values (batch 2, 2x2 maps in block4)
    amplify float32 rounding with depth: at ResNet-101+ slim's graph itself is 4e-4 to 7e-4 away
    from the float64 result in block4 (and ours as far or nearer). There, "equal" can only mean
    "as close to slim as slim is to the exact answer".
    """
    if float64_points is None:
        return {name: TOLERANCE for name in slim_points}
    return {name: max(TOLERANCE, 2 * relative_error(
                expected, np.asarray(float64_points[name]).reshape(expected.shape)))
            for name, expected in slim_points.items()}


def assert_matches_slim(model, images, checkpoint, slim_net, slim_points, slim_reg, training,
                        float64_points=None):
    resnet_tf.load_slim_checkpoint(model, checkpoint)
    limits = tolerances(float64_points, slim_points)
    scope = model.name
    net = np.asarray(model(images, training=training))
    assert relative_error(net.reshape(slim_net.shape), slim_net) < limits.get(
        f"{model.name}/logits", TOLERANCE)

    points = {k: np.asarray(v) for k, v in resnet_tf.end_points(model)(images, training=training).items()}
    extras = {e.format(scope=scope) for e in RESEARCH_SLIM_EXTRAS}
    assert set(slim_points) <= set(points)
    assert set(points) - set(slim_points) <= extras
    for name, expected in slim_points.items():
        actual = points[name]
        if name == "predictions":  # research/slim squeezes the logits before the softmax
            actual = actual.reshape(expected.shape)
        assert actual.shape == expected.shape, name
        assert relative_error(actual, expected) < limits[name], name

    reg = float(sum(np.asarray(loss) for loss in model.losses))
    assert reg == pytest.approx(slim_reg, rel=TOLERANCE)


# Narrow and short, but with every feature of the real blocks: projection and subsample
# shortcuts, strides in the last unit, a stride-1 last block.
TINY_BLOCKS = [
    resnet_tf.resnet_v2_block("block1", base_depth=4, num_units=2, stride=2),
    resnet_tf.resnet_v2_block("block2", base_depth=8, num_units=2, stride=2),
    resnet_tf.resnet_v2_block("block3", base_depth=16, num_units=2, stride=2),
    resnet_tf.resnet_v2_block("block4", base_depth=32, num_units=1, stride=1),
]

# Output stride x image size (even, odd) x head x pooling x mode, on a narrow ResNet-50.
GRID = list(itertools.product([None, 8, 16], [64, 49], [None, 5], [True, False], [False, True]))


@pytest.mark.parametrize("output_stride,size,num_classes,global_pool,training",
                         tiered(GRID, PAIRWISE_PARITY))
def test_tiny_resnet_v2_matches_slim(tmp_path, output_stride, size, num_classes, global_pool,
                                     training):
    rng = np.random.default_rng(size)
    images = rng.uniform(-1, 1, (2, size, size + 3, 3)).astype(np.float32)
    checkpoint = str(tmp_path / "model.ckpt")
    slim_net, slim_points, slim_reg = run_slim(
        "v2", images, checkpoint, blocks=TINY_BLOCKS, num_classes=num_classes,
        is_training=training, global_pool=global_pool, output_stride=output_stride,
        scope="resnet_v2_tiny")
    model = resnet_tf.resnet_v2(TINY_BLOCKS, num_classes=num_classes, global_pool=global_pool,
                                output_stride=output_stride, spatial_squeeze=bool(global_pool),
                                name="resnet_v2_tiny")
    assert_matches_slim(model, images, checkpoint, slim_net, slim_points, slim_reg, training)


@pytest.mark.parametrize("output_stride", [None, 2, 4])
def test_without_root_block_matches_slim(tmp_path, output_stride):
    blocks = resnet_tf.resnet_v2_blocks(50, base_depth=2)[:3]
    images = np.random.default_rng(1).normal(size=(2, 17, 16, 5)).astype(np.float32)
    checkpoint = str(tmp_path / "model.ckpt")
    slim_net, slim_points, slim_reg = run_slim(
        "v2", images, checkpoint, blocks=blocks, num_classes=3, global_pool=False,
        output_stride=output_stride, include_root_block=False, scope="rootless")
    model = resnet_tf.resnet_v2(blocks, num_classes=3, global_pool=False, spatial_squeeze=False,
                                output_stride=output_stride, include_root_block=False,
                                input_shape=(None, None, 5), name="rootless")
    assert_matches_slim(model, images, checkpoint, slim_net, slim_points, slim_reg, False)


# The released architectures at full width: every depth, eval and training mode, 1001 classes.
FULL = [
    (50, None, 65, False), (50, 16, 64, True),
    (101, 8, 57, False), (101, None, 64, True),
    (152, 16, 49, False), (152, None, 33, True),
    (200, None, 64, False), (200, 8, 41, True),
]


@pytest.mark.large
@pytest.mark.parametrize("depth,output_stride,size,training", FULL)
def test_full_resnet_v2_matches_slim(tmp_path, depth, output_stride, size, training):
    images = np.random.default_rng(depth).uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
    checkpoint = str(tmp_path / "model.ckpt")
    scope = f"resnet_v2_{depth}"
    slim_net, slim_points, slim_reg = run_slim(
        "v2", images, checkpoint, depth=depth, num_classes=1001, is_training=training,
        output_stride=output_stride, scope=scope)
    # 4 per unit (conv1, conv2, conv3, the unit), 4 projection shortcuts, conv1, 4 blocks,
    # logits, predictions: 75 for ResNet-50.
    units = sum(RESNET_V2_UNITS[depth])
    assert len(slim_points) == 4 * units + 4 + 1 + 4 + 2 == {50: 75, 101: 143, 152: 211,
                                                             200: 275}[depth]
    model = resnet_tf.create_model(scope, num_classes=1001, output_stride=output_stride)
    float64_points = None
    if training and depth > 50:
        float64_points = float64_end_points(scope, output_stride, checkpoint, images)
    assert_matches_slim(model, images, checkpoint, slim_net, slim_points, slim_reg, training,
                        float64_points)


def float64_end_points(scope, output_stride, checkpoint, images, num_classes=1001):
    """The same network and checkpoint computed in float64: the exact answer, for tolerances."""
    with dtype_policy_scope("float64"):
        model = resnet_tf.create_model(scope, num_classes=num_classes, output_stride=output_stride)
    resnet_tf.load_slim_checkpoint(model, checkpoint)
    points = resnet_tf.end_points(model)(images.astype(np.float64), training=True)
    return {name: np.asarray(value) for name, value in points.items()}
