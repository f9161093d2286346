"""resnet_tf's ResNet V1 against TF-slim's own graph (tf_slim.nets.resnet_v1), as the V2 suite:
random values for every variable, slim's checkpoint loaded strictly, the output, every end point
and the weight-decay loss within 2e-4 relative."""

import itertools

import numpy as np
import pytest
from conftest import PAIRWISE_PARITY, tiered
from slim_reference import run_slim
from test_slim_parity import assert_matches_slim, float64_end_points

import resnet_tf
from resnet_tf.models.resnet_utils import RESNET_UNITS as RESNET_V1_UNITS

TINY_BLOCKS = [
    resnet_tf.resnet_v1_block("block1", base_depth=4, num_units=2, stride=2),
    resnet_tf.resnet_v1_block("block2", base_depth=8, num_units=2, stride=2),
    resnet_tf.resnet_v1_block("block3", base_depth=16, num_units=2, stride=2),
    resnet_tf.resnet_v1_block("block4", base_depth=32, num_units=1, stride=1),
]

GRID = list(itertools.product([None, 8, 16], [64, 49], [None, 5], [True, False], [False, True]))


@pytest.mark.parametrize("output_stride,size,num_classes,global_pool,training",
                         tiered(GRID, PAIRWISE_PARITY))
def test_tiny_resnet_v1_matches_slim(tmp_path, output_stride, size, num_classes, global_pool,
                                     training):
    rng = np.random.default_rng(size + 1)
    images = rng.uniform(-1, 1, (2, size, size + 3, 3)).astype(np.float32)
    checkpoint = str(tmp_path / "model.ckpt")
    slim_net, slim_points, slim_reg = run_slim(
        "v1", images, checkpoint, blocks=TINY_BLOCKS, num_classes=num_classes,
        is_training=training, global_pool=global_pool, output_stride=output_stride,
        scope="resnet_v1_tiny")
    model = resnet_tf.resnet_v1(TINY_BLOCKS, num_classes=num_classes, global_pool=global_pool,
                                output_stride=output_stride, spatial_squeeze=bool(global_pool),
                                name="resnet_v1_tiny")
    assert_matches_slim(model, images, checkpoint, slim_net, slim_points, slim_reg, training)


@pytest.mark.parametrize("output_stride,training", [(None, False), (2, True)])
def test_v1_without_root_block_matches_slim(tmp_path, output_stride, training):
    blocks = resnet_tf.resnet_v1_blocks(50, base_depth=2)[:3]
    images = np.random.default_rng(3).normal(size=(2, 17, 16, 5)).astype(np.float32)
    checkpoint = str(tmp_path / "model.ckpt")
    slim_net, slim_points, slim_reg = run_slim(
        "v1", images, checkpoint, blocks=blocks, num_classes=3, global_pool=False,
        is_training=training, output_stride=output_stride, include_root_block=False,
        scope="rootless_v1")
    model = resnet_tf.resnet_v1(blocks, num_classes=3, global_pool=False, spatial_squeeze=False,
                                output_stride=output_stride, include_root_block=False,
                                input_shape=(None, None, 5), name="rootless_v1")
    assert_matches_slim(model, images, checkpoint, slim_net, slim_points, slim_reg, training)


# slim's released V1 architectures at full width, 1000 classes (slim's V1 checkpoints).
FULL = [(50, None, 64, False), (50, 8, 57, True), (101, 16, 49, False), (152, None, 33, True),
        (200, 16, 41, False)]


@pytest.mark.large
@pytest.mark.parametrize("depth,output_stride,size,training", FULL)
def test_full_resnet_v1_matches_slim(tmp_path, depth, output_stride, size, training):
    images = np.random.default_rng(depth).uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
    checkpoint = str(tmp_path / "model.ckpt")
    scope = f"resnet_v1_{depth}"
    slim_net, slim_points, slim_reg = run_slim(
        "v1", images, checkpoint, depth=depth, num_classes=1000, is_training=training,
        output_stride=output_stride, scope=scope)
    units = sum(RESNET_V1_UNITS[depth])
    assert len(slim_points) == 4 * units + 4 + 1 + 4 + 2
    model = resnet_tf.create_model(scope, num_classes=1000, output_stride=output_stride)
    float64_points = None
    if training and depth > 50:
        float64_points = float64_end_points(scope, output_stride, checkpoint, images, 1000)
    assert_matches_slim(model, images, checkpoint, slim_net, slim_points, slim_reg, training,
                        float64_points)
