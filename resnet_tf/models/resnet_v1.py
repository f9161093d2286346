"""ResNet V1 (post-activation) as TF-slim's `nets/resnet_v1.py` builds it, and the basic-unit
ResNet-18/34 of [1], in Keras 3.

    model = resnet_v1_50(num_classes=1000)     # slim's resnet_v1_50, loads slim's V1 checkpoints
    model = resnet_v1_18(num_classes=1000)     # [1]'s ResNet-18, option B: torchvision's sizes

slim's V1 differs from V2 in the unit (`bottleneck_v1`: conv-BN-ReLU, the sum then ReLU) and the
root (conv1 has batch norm and ReLU); there is no `postnorm`. Only `keras.layers` / `keras.ops`.

References:
  [1] Kaiming He, Xiangyu Zhang, Shaoqing Ren, Jian Sun. Deep Residual Learning for Image
      Recognition. arXiv:1512.03385
"""

from __future__ import annotations

import keras

from resnet_tf.errors import UserError
from resnet_tf.models.layers import PACKAGE, Conv2DSame, SqueezeExcite, make_divisible
from resnet_tf.models.precision import dtype_policy
from resnet_tf.models.resnet_utils import (
    Block,
    bottleneck_block,
    check_layout,
    first_unit_strides,
    layout_epsilon,
    resnet_arg_scope,
    resnet_blocks,
    resnet_factory,
    resnet_model,
    root_pool,
)
from resnet_tf.models.units import ResidualUnit
from resnet_tf.utils import check_positive_int


@keras.saving.register_keras_serializable(package=PACKAGE)
class BottleneckV1(ResidualUnit):
    """slim's `bottleneck` (v1), [1] Fig. 5 right / [2] Fig. 1(a):

        shortcut = subsample(x, stride) if depth == depth_in, else conv 1x1 / stride + BN
        residual = conv1 1x1 (BN, ReLU) -> conv2 3x3 conv2d_same, stride, rate (BN, ReLU)
                   -> conv3 1x1 (BN) [-> se]
        output   = relu(shortcut + residual)

    The stronger ResNets' options (`resnet_tf.models.variants`): `groups` makes conv2 a grouped
    convolution (ResNeXt's cardinality); `se_ratio` adds squeeze-and-excitation after conv3
    (`layers.SqueezeExcite`, reduced to `make_divisible(depth * se_ratio, se_divisor)`
    channels); shortcut "D" and `drop_path_rate` are `ResidualUnit`'s.
    """

    slim_scope = "bottleneck_v1"
    unit_arg_names = ("depth", "depth_bottleneck", "stride")
    expansion = 4  # resnet_v1_block: depth = 4 * depth_bottleneck
    STRIDE_IN = ("conv2", "conv1")

    def __init__(self, depth, stride=1, rate=1, depth_bottleneck=None, stride_in="conv2",
                 groups=1, se_ratio=None, se_divisor=1, **kwargs):
        """`stride_in`: the convolution that strides, "conv2" (the 3x3: slim's, torchvision's
        "V1.5") or "conv1" (the first 1x1: keras.applications' and [1]'s original)."""
        if stride_in not in self.STRIDE_IN:
            raise UserError(f"stride_in must be one of {list(self.STRIDE_IN)}. "
                            f"Received: stride_in={stride_in!r}")
        check_positive_int("groups", groups)
        check_positive_int("se_divisor", se_divisor)
        if se_ratio is not None and not 0.0 < se_ratio <= 1.0:
            raise UserError(f"se_ratio must be in (0, 1] or None. Received: se_ratio={se_ratio!r}")
        self.stride_in = stride_in
        self.groups = groups
        self.se_ratio = None if se_ratio is None else float(se_ratio)
        self.se_divisor = se_divisor
        if self.se_ratio:
            self.no_int8_reason = ("squeeze-and-excitation's gate multiplies two activations, "
                                   "which the int8 runtimes run in float")
        super().__init__(depth, stride, rate, depth_bottleneck, **kwargs)

    def _make_layers(self):
        bn = dict(self.layer_scope, use_batch_norm=True)
        strides = {"conv1": 1, "conv2": 1, self.stride_in: self.stride}
        return [
            ("conv1", Conv2DSame(self.depth_bottleneck, 1, stride=strides["conv1"],
                                 activation="relu", name="conv1", **bn)),
            ("conv2", Conv2DSame(self.depth_bottleneck, 3, stride=strides["conv2"],
                                 rate=self.rate, activation="relu", name="conv2",
                                 groups=self.groups, **bn)),
            ("conv3", Conv2DSame(self.depth, 1, name="conv3", **bn)),
        ] + ([("se", SqueezeExcite(
            self.depth, make_divisible(self.depth * self.se_ratio, self.se_divisor),
            weight_decay=self.arg_scope["weight_decay"], name="se", dtype=self.dtype_policy))]
            if self.se_ratio else [])

    def get_config(self):
        config = super().get_config()
        if self.stride_in != "conv2":  # files without it are slim's layout
            config.update(stride_in=self.stride_in)
        if self.groups != 1:  # (nor these: plain units)
            config.update(groups=self.groups)
        if self.se_ratio:
            config.update(se_ratio=self.se_ratio, se_divisor=self.se_divisor)
        return config

    def _residual(self, branch, training):
        conv1 = self._conv(self.conv1, branch, training)
        conv2 = self._conv(self.conv2, conv1, training, self.conv1)
        conv3 = self._conv(self.conv3, conv2, training, self.conv2)
        points = {"conv1": conv1, "conv2": conv2, "conv3": conv3}
        if self.se_ratio:
            conv3 = points["se"] = self.se(conv3)
        return conv3, points


@keras.saving.register_keras_serializable(package=PACKAGE)
class BasicBlockV1(ResidualUnit):
    """[1]'s basic unit (Fig. 2), post-activation:

        residual = conv1 3x3, stride (BN, ReLU) -> conv2 3x3 (BN)
        output   = relu(shortcut + residual)        (shortcut: options A, B, C)
    """

    slim_scope = "basic_v1"
    unit_arg_names = ("depth", "stride")

    def _make_layers(self):
        bn = dict(self.layer_scope, use_batch_norm=True)
        return [
            ("conv1", Conv2DSame(self.depth, 3, stride=self.stride, rate=self.rate,
                                 activation="relu", name="conv1", **bn)),
            ("conv2", Conv2DSame(self.depth, 3, rate=self.rate, name="conv2", **bn)),
        ]

    def _residual(self, branch, training):
        conv1 = self._conv(self.conv1, branch, training)
        conv2 = self._conv(self.conv2, conv1, training, self.conv1)
        return conv2, {"conv1": conv1, "conv2": conv2}


def bottleneck(inputs, depth, depth_bottleneck, stride, rate=1, name=None, **arg_scope):
    """slim's `resnet_v1.bottleneck(inputs, depth, depth_bottleneck, stride, rate)`."""
    return BottleneckV1(depth, stride, rate, depth_bottleneck=depth_bottleneck, name=name,
                        **arg_scope)(inputs)


bottleneck.layer_class = BottleneckV1


def resnet_v1_block(scope: str, base_depth: int, num_units: int, stride: int) -> Block:
    """slim's helper: `num_units` bottleneck_v1 units of depth 4 * base_depth, stride in the last."""
    return bottleneck_block(scope, BottleneckV1, base_depth, num_units, stride)


def resnet_v1_blocks(depth: int, base_depth: int = 64) -> list[Block]:
    """The four blocks of ResNet-`depth` V1 (basic units for 18 and 34, bottlenecks otherwise)."""
    return resnet_blocks(depth, BottleneckV1, BasicBlockV1, base_depth, family="V1")


def resnet_v1(
    blocks,
    num_classes: int | None = None,
    global_pool: bool = True,
    output_stride: int | None = None,
    include_root_block: bool = True,
    spatial_squeeze: bool = True,
    input_shape=None,
    name: str = "resnet_v1",
    weight_decay: float = 1e-4,
    batch_norm_decay: float = 0.997,
    batch_norm_epsilon: float | None = None,
    batch_norm_scale: bool = True,
    dtype=None,
    layout: str = "slim",
    stem: str = "slim",
    stem_width: int = 32,
    dropout_rate: float = 0.0,
    drop_path_rate: float = 0.0,
) -> keras.Model:
    """slim's `resnet_v1` generator: root conv1 7x7/2 with BN and ReLU, 3x3/2 max-pool, the
    blocks, `pool5`, `logits`. Arguments as `resnet_v2` (there is no `postnorm`); under
    `layout` "torchvision" or "keras" a bottleneck block's stride moves to its first unit
    (`resnet_utils.LAYOUTS`), on the first 1x1 for "keras".

    The stronger ResNets' options (`resnet_tf.models.variants`): `stem` (`STEMS`: slim's
    7x7, or the deep stems of three or four 3x3 convolutions, `stem_width` wide), head dropout
    before the logits (`dropout_rate`) and stochastic depth (`drop_path_rate`), both in
    training only."""
    check_layout(layout)
    if layout != "slim":
        blocks = first_unit_strides(blocks, **({"stride_in": "conv1"} if layout == "keras"
                                                else {}))
    arg_scope = resnet_arg_scope(weight_decay, batch_norm_decay,
                                 layout_epsilon(layout, batch_norm_epsilon), batch_norm_scale)
    policy = dtype_policy(dtype)
    root = None
    if include_root_block:
        root = root_convolutions(stem, stem_width, policy, arg_scope)
        if stem != "deep_strided":
            root += root_pool(layout, policy)
    return resnet_model(blocks, root=root, num_classes=num_classes, global_pool=global_pool,
                        output_stride=output_stride, spatial_squeeze=spatial_squeeze,
                        input_shape=input_shape, name=name, arg_scope=arg_scope, dtype=policy,
                        dropout_rate=dropout_rate, drop_path_rate=drop_path_rate)


# The root blocks `resnet_v1(stem=...)` builds (each convolution with BN and ReLU):
#   "slim"          slim's conv1 7x7/2 (64), then the 3x3/2 max-pool;
#   "deep"          ResNet-C's (Bag of Tricks, arXiv:1812.01187; timm's `stem_type="deep"`):
#                   conv1_1 3x3/2 (w), conv1_2 3x3 (w), conv1_3 3x3 (2w), then the max-pool;
#   "deep_strided"  ResNet-RS's (arXiv:2103.07579; tf_keras' `STEM`): as "deep", and conv1_4
#                   3x3/2 (2w) in place of the max-pool.
STEMS = ("slim", "deep", "deep_strided")


def root_convolutions(stem: str, width: int, policy, arg_scope) -> list:
    """The convolutions of the root block `stem` (`STEMS`), `width` wide (deep stems)."""
    if stem not in STEMS:
        raise UserError(f"stem must be one of {list(STEMS)}. Received: stem={stem!r}")
    check_positive_int("stem_width", width)
    conv = dict(use_batch_norm=True, activation="relu", dtype=policy, **arg_scope)
    if stem == "slim":
        return [Conv2DSame(64, 7, stride=2, name="conv1", **conv)]
    layers = [Conv2DSame(width, 3, stride=2, name="conv1_1", **conv),
              Conv2DSame(width, 3, name="conv1_2", **conv),
              Conv2DSame(2 * width, 3, name="conv1_3", **conv)]
    if stem == "deep_strided":
        layers.append(Conv2DSame(2 * width, 3, stride=2, name="conv1_4", **conv))
    return layers


resnet_v1_18 = resnet_factory("v1", 18, resnet_v1, resnet_v1_blocks)
resnet_v1_34 = resnet_factory("v1", 34, resnet_v1, resnet_v1_blocks)
resnet_v1_50 = resnet_factory("v1", 50, resnet_v1, resnet_v1_blocks)
resnet_v1_101 = resnet_factory("v1", 101, resnet_v1, resnet_v1_blocks)
resnet_v1_152 = resnet_factory("v1", 152, resnet_v1, resnet_v1_blocks)
resnet_v1_200 = resnet_factory("v1", 200, resnet_v1, resnet_v1_blocks)
