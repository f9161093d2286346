"""slim's resnet_utils tests, ported: hand-computed conv2d_same, subsample, atrous == nominal."""

import keras
import numpy as np
import pytest

import resnet_tf
from resnet_tf import Block, Bottleneck, Conv2DSame, Subsample, stack_blocks_dense


def create_test_input(batch, height, width, channels):
    """slim's helper: pixel (i, j) holds i + j in every channel."""
    grid = np.arange(height)[:, None] + np.arange(width)[None, :]
    return np.tile(grid[None, :, :, None], (batch, 1, 1, channels)).astype(np.float32)


def conv_with_test_kernel(stride, same_as_slim=True):
    """A 3x3 conv with kernel w[i, j] = i + j and zero bias, like slim's test."""
    kernel = create_test_input(1, 3, 3, 1).reshape(3, 3, 1, 1)
    if same_as_slim:
        layer = Conv2DSame(1, 3, stride=stride)
        layer.build((1, None, None, 1))
        layer.kernel.assign(kernel)
        return layer
    layer = keras.layers.Conv2D(1, 3, strides=stride, padding="same")
    layer.build((1, None, None, 1))
    layer.set_weights([kernel, np.zeros(1)])
    return layer


def test_conv2d_same_even():
    x = create_test_input(1, 4, 4, 1)
    y1 = conv_with_test_kernel(1)(x)
    y1_expected = [[14, 28, 43, 26], [28, 48, 66, 37], [43, 66, 84, 46], [26, 37, 46, 22]]
    np.testing.assert_allclose(np.asarray(y1)[0, :, :, 0], y1_expected)
    y2 = Subsample(2)(y1)
    y2_expected = [[14, 43], [43, 84]]
    np.testing.assert_allclose(np.asarray(y2)[0, :, :, 0], y2_expected)
    y3 = conv_with_test_kernel(2)(x)  # conv2d_same == conv + subsample
    np.testing.assert_allclose(np.asarray(y3)[0, :, :, 0], y2_expected)
    y4 = conv_with_test_kernel(2, same_as_slim=False)(x)  # a strided 'SAME' conv is not
    np.testing.assert_allclose(np.asarray(y4)[0, :, :, 0], [[48, 37], [37, 22]])


def test_conv2d_same_odd():
    x = create_test_input(1, 5, 5, 1)
    y1 = conv_with_test_kernel(1)(x)
    y1_expected = [[14, 28, 43, 58, 34], [28, 48, 66, 84, 46], [43, 66, 84, 102, 55],
                   [58, 84, 102, 120, 64], [34, 46, 55, 64, 30]]
    np.testing.assert_allclose(np.asarray(y1)[0, :, :, 0], y1_expected)
    y2_expected = [[14, 43, 34], [43, 84, 55], [34, 55, 30]]
    np.testing.assert_allclose(np.asarray(Subsample(2)(y1))[0, :, :, 0], y2_expected)
    np.testing.assert_allclose(np.asarray(conv_with_test_kernel(2)(x))[0, :, :, 0], y2_expected)
    y4 = conv_with_test_kernel(2, same_as_slim=False)(x)  # odd sizes: the same
    np.testing.assert_allclose(np.asarray(y4)[0, :, :, 0], y2_expected)


def test_conv2d_same_atrous_pads_the_effective_kernel():
    layer = Conv2DSame(2, 3, stride=1, rate=2)
    x = np.random.default_rng(0).normal(size=(1, 7, 6, 3)).astype(np.float32)
    assert layer(x).shape == (1, 7, 6, 2)
    assert Conv2DSame(2, 3, stride=2, rate=1)(x).shape == (1, 4, 3, 2)


@pytest.mark.parametrize("factor,size,expected", [(1, 5, 5), (2, 5, 3), (2, 4, 2), (3, 7, 3)])
def test_subsample_is_a_strided_1x1_max_pool(factor, size, expected):
    x = np.random.default_rng(factor).normal(size=(2, size, size + 1, 3)).astype(np.float32)
    pooled = keras.layers.MaxPooling2D(1, strides=factor, padding="same")(x)
    y = Subsample(factor)(x)
    assert y.shape[1] == expected
    np.testing.assert_array_equal(np.asarray(y), np.asarray(pooled))
    assert resnet_tf.subsample(x, 1) is x


def randomize(model, seed=0):
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        value = rng.uniform(0.5, 1.5, weight.shape) if "variance" in weight.path or \
            "gamma" in weight.path else rng.normal(0, 0.3, weight.shape)
        weight.assign(value.astype("float32"))


def test_block_accepts_seed_tuples_and_slim_dicts():
    seed_form = Block("block1", Bottleneck, [(256, 64, 1)] * 2 + [(256, 64, 2)])
    slim_form = resnet_tf.resnet_v2_block("block1", base_depth=64, num_units=3, stride=2)
    assert seed_form == slim_form
    assert Block("block1", resnet_tf.bottleneck, [(256, 64, 2)]).args == [
        {"depth": 256, "depth_bottleneck": 64, "stride": 2}]


@pytest.mark.parametrize("args,match", [
    ([(0, 64, 1)], "depth must be a positive integer. Received: depth=0"),
    ([(256, 64, 0)], "stride must be a positive integer. Received: stride=0"),
    ([(256, -1, 1)], "depth_bottleneck must be a positive integer"),
    ([(256, 64)], r"must be a tuple \('depth', 'depth_bottleneck', 'stride'\)"),
    ([{"depth": 4, "depth_bottleneck": 1, "strides": 2}], r"unknown keys \['strides'\]"),
    ([], "at least one unit"),
])
def test_block_rejects_bad_args(args, match):
    with pytest.raises(ValueError, match=match):
        Block("block1", Bottleneck, args)


def test_block_rejects_unknown_unit_fn():
    with pytest.raises(ValueError, match="unit_fn"):
        Block("block1", lambda x: x, [(4, 1, 1)])


# slim's testAtrousValuesBottleneck: dense (atrous) features, subsampled, equal the nominal ones.
ATROUS_BLOCKS = [
    Block("block1", Bottleneck, [(4, 1, 1), (4, 1, 2)]),
    Block("block2", Bottleneck, [(8, 2, 1), (8, 2, 2)]),
    Block("block3", Bottleneck, [(16, 4, 1), (16, 4, 2)]),
    Block("block4", Bottleneck, [(32, 8, 1), (32, 8, 1)]),
]


def stacked(output_stride):
    images = keras.Input((None, None, 3))
    return keras.Model(images, stack_blocks_dense(images, ATROUS_BLOCKS, output_stride))


@pytest.mark.parametrize("output_stride", [1, 2, 4, 8, None])
def test_atrous_values_equal_nominal_stride(output_stride):
    nominal = stacked(None)
    randomize(nominal)
    dense = stacked(output_stride)
    dense.set_weights(nominal.get_weights())
    x = create_test_input(1, 30, 31, 3) / 30.0
    factor = 1 if output_stride is None else 8 // output_stride
    expected = np.asarray(nominal(x, training=False))
    output = np.asarray(resnet_tf.subsample(dense(x, training=False), factor))
    np.testing.assert_allclose(output, expected, atol=1e-4, rtol=1e-4)


def test_stack_blocks_dense_reports_block_strides_and_channels():
    points, info = {}, {}
    images = keras.Input((None, None, 3))
    stack_blocks_dense(images, ATROUS_BLOCKS, output_stride=4, end_points=points,
                       block_info=info)
    # slim's collection: the blocks, and every unit with its inner end points.
    assert [k for k in points if "/" not in k] == ["block1", "block2", "block3", "block4"]
    assert {"block1/unit_1/bottleneck_v2", "block1/unit_1/bottleneck_v2/conv3",
            "block4/unit_1/bottleneck_v2/conv2"} <= set(points)
    assert info == {"block1": {"stride": 2, "channels": 4}, "block2": {"stride": 4, "channels": 8},
                    "block3": {"stride": 4, "channels": 16},
                    "block4": {"stride": 4, "channels": 32}}


def test_the_caller_chooses_what_end_points_collect_as_slims_collections_do():
    """A slim caller whose `outputs_collections` holds only convolution outputs gets only
    those; one that collects units and blocks gets no convolution."""
    def collected(collect):
        points = {}
        stack_blocks_dense(keras.Input((None, None, 3)), ATROUS_BLOCKS[:2], end_points=points,
                           collect=collect)
        return set(points)

    convolutions = collected(("convolutions",))
    assert convolutions == {f"block{b}/unit_{u}/bottleneck_v2/{c}" for b in (1, 2)
                            for u in (1, 2) for c in ("conv1", "conv2", "conv3")} | {
        "block1/unit_1/bottleneck_v2/shortcut", "block2/unit_1/bottleneck_v2/shortcut"}
    assert collected(("units", "blocks")) == {"block1", "block2"} | {
        f"block{b}/unit_{u}/bottleneck_v2" for b in (1, 2) for u in (1, 2)}
    assert collected(resnet_tf.models.resnet_utils.END_POINT_KINDS) == \
        convolutions | collected(("units", "blocks"))
    with pytest.raises(resnet_tf.UserError, match="collect takes"):
        collected(("outputs",))


@pytest.mark.parametrize("output_stride", [3, 16, 0])
def test_unreachable_output_stride_is_refused_before_building(output_stride):
    images = keras.Input((None, None, 3))
    with pytest.raises(ValueError, match=f"output_stride={output_stride}"):
        stack_blocks_dense(images, ATROUS_BLOCKS, output_stride)


@pytest.mark.parametrize("kwargs,match", [
    (dict(weight_decay=-1.0), "weight_decay=-1.0"),
    (dict(batch_norm_decay=1.5), "batch_norm_decay=1.5"),
    (dict(batch_norm_epsilon=0.0), "batch_norm_epsilon=0.0"),
])
def test_resnet_arg_scope_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        resnet_tf.resnet_arg_scope(**kwargs)


def test_conv2d_same_rejects_stride_with_rate():
    with pytest.raises(ValueError, match="stride=2, rate=2"):
        Conv2DSame(4, 3, stride=2, rate=2)
