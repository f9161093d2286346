"""ResNet V2 (pre-activation) as TF-slim's `nets/resnet_v2.py` builds it, in Keras 3.

    model = resnet_v2_50(num_classes=1001)     # a functional keras.Model named "resnet_v2_50"
    logits = model(images, training=False)     # [N, 1001]

The model is numerically equal to slim's graph (tests/test_slim_parity.py) and its variables map
one-to-one onto slim's checkpoint names (`slim/variables.py`). Differences from slim's code, all
deliberate: `spatial_squeeze` and the `global_pool` end point come from the newer
tensorflow/models research/slim; `training` is a call argument instead of `is_training`; arg
scopes are plain keyword arguments (`resnet_arg_scope()`).

Only `keras.layers` / `keras.ops` are used, so the model runs on TensorFlow, JAX and PyTorch.

References:
  [1] Kaiming He, Xiangyu Zhang, Shaoqing Ren, Jian Sun. Deep Residual Learning for Image
      Recognition. arXiv:1512.03385
  [2] Kaiming He, Xiangyu Zhang, Shaoqing Ren, Jian Sun. Identity Mappings in Deep Residual
      Networks. arXiv:1603.05027
"""

from __future__ import annotations

import keras

from resnet_tf.errors import UserError
from resnet_tf.models.layers import PACKAGE, Conv2DSame, batch_norm
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


@keras.saving.register_keras_serializable(package=PACKAGE)
class Bottleneck(ResidualUnit):
    """slim's `bottleneck` (v2): the full pre-activation bottleneck unit of [2], Fig. 1(b).

        preact   = relu(batch_norm(x))                     scope preact
        shortcut = subsample(x, stride)                    if depth == depth_in (un-normalised x)
                 = conv 1x1 / stride, bias, on preact      otherwise, scope shortcut
        residual = conv1 1x1 (BN, ReLU)                    scope conv1
                 -> conv2 3x3 conv2d_same, stride, rate (BN, ReLU)   scope conv2
                 -> conv3 1x1, bias, no BN                 scope conv3
        output   = shortcut + residual

    The stride sits in this unit (slim puts a block's stride in its last unit). `shortcut`
    ("B", slim's rule, by default) takes [1]'s options like the other units.
    """

    slim_scope = "bottleneck_v2"
    unit_arg_names = ("depth", "depth_bottleneck", "stride")
    expansion = 4  # resnet_v2_block: depth = 4 * depth_bottleneck
    preactivation = True

    def __init__(self, depth: int, depth_bottleneck: int, stride: int = 1, rate: int = 1,
                 **kwargs):
        super().__init__(depth, stride, rate, depth_bottleneck=depth_bottleneck, **kwargs)

    def _make_layers(self):
        scope = self.layer_scope
        return [
            ("preact", batch_norm("preact", **scope)),
            ("conv1", Conv2DSame(self.depth_bottleneck, 1, use_batch_norm=True,
                                 activation="relu", name="conv1", **scope)),
            ("conv2", Conv2DSame(self.depth_bottleneck, 3, stride=self.stride, rate=self.rate,
                                 use_batch_norm=True, activation="relu", name="conv2", **scope)),
            ("conv3", Conv2DSame(self.depth, 1, name="conv3", **scope)),
        ]

    def _residual(self, branch, training):
        conv1 = self._conv(self.conv1, branch, training)
        conv2 = self._conv(self.conv2, conv1, training, self.conv1)
        conv3 = self._conv(self.conv3, conv2, training, self.conv2)
        return conv3, {"conv1": conv1, "conv2": conv2, "conv3": conv3}


def bottleneck(inputs, depth, depth_bottleneck, stride, rate=1, name=None, **arg_scope):
    """slim's `bottleneck(inputs, depth, depth_bottleneck, stride, rate)`, functional style."""
    return Bottleneck(depth, depth_bottleneck, stride, rate, name=name, **arg_scope)(inputs)


bottleneck.layer_class = Bottleneck


@keras.saving.register_keras_serializable(package=PACKAGE)
class BasicBlockV2(ResidualUnit):
    """[2]'s full pre-activation basic unit (Fig. 4(e)), in slim's V2 conventions:

        preact   = relu(batch_norm(x))
        shortcut = subsample(x) (or zero-padded, option A), or a 1x1 projection with bias on preact
        residual = conv1 3x3, stride, on preact (BN, ReLU) -> conv2 3x3 with bias, no BN
        output   = shortcut + residual
    """

    slim_scope = "basic_v2"
    unit_arg_names = ("depth", "stride")
    preactivation = True

    def _make_layers(self):
        return [
            ("preact", batch_norm("preact", **self.layer_scope)),
            ("conv1", Conv2DSame(self.depth, 3, stride=self.stride, rate=self.rate,
                                 use_batch_norm=True, activation="relu", name="conv1",
                                 **self.layer_scope)),
            ("conv2", Conv2DSame(self.depth, 3, rate=self.rate, name="conv2", **self.layer_scope)),
        ]

    def _residual(self, branch, training):
        conv1 = self._conv(self.conv1, branch, training)
        conv2 = self._conv(self.conv2, conv1, training, self.conv1)
        return conv2, {"conv1": conv1, "conv2": conv2}


def resnet_v2_block(scope: str, base_depth: int, num_units: int, stride: int) -> Block:
    """slim's helper: `num_units` bottleneck units of depth 4 * base_depth, stride in the last."""
    return bottleneck_block(scope, Bottleneck, base_depth, num_units, stride)


def resnet_v2_blocks(depth: int, base_depth: int = 64) -> list[Block]:
    """The four blocks of ResNet-`depth` V2; `base_depth` scales the widths (64 is the paper's)."""
    return resnet_blocks(depth, Bottleneck, BasicBlockV2, base_depth, family="V2")


def resnet_v2(
    blocks,
    num_classes: int | None = None,
    global_pool: bool = True,
    output_stride: int | None = None,
    include_root_block: bool = True,
    spatial_squeeze: bool = True,
    input_shape=None,
    name: str = "resnet_v2",
    weight_decay: float = 1e-4,
    batch_norm_decay: float = 0.997,
    batch_norm_epsilon: float | None = None,
    batch_norm_scale: bool = True,
    dtype=None,
    layout: str = "slim",
    normalizer: str = "batch_norm",
    weight_standardization: bool = False,
    root_depth: int = 64,
) -> keras.Model:
    """slim's `resnet_v2` generator: a functional Keras model over any list of `Block`s.

    Args:
      blocks: a list of `Block` (e.g. `resnet_v2_blocks(50)`).
      num_classes: None returns the features (after `postnorm`, and `pool5` if `global_pool`);
        otherwise a 1x1 conv `logits` layer with bias gives the pre-softmax activations.
      global_pool: mean over height and width (keepdims) before the logits.
      output_stride: None (nominal, 32 for the standard blocks) or a stride reachable by the units
        (a multiple of 4 with the root block): deeper units then use atrous convolution.
      include_root_block: the 7x7/2 conv (with bias, no BN, no ReLU: the first unit's preact does
        that, [2] appendix) and 3x3/2 'SAME' max-pool.
      spatial_squeeze: squeeze logits `[N, 1, 1, C]` to `[N, C]` (research/slim's default); needs
        `global_pool` when there are classes.
      input_shape: `(height, width, channels)`; default `(None, None, 3)`, any image size.
      name: the model's name, which is also the slim scope of its variables.
      weight_decay, batch_norm_*: `resnet_arg_scope` semantics and defaults (epsilon: 1e-5,
        keras.applications' 1.001e-5 under its layout).
      dtype: the Keras dtype policy of every layer ("float32", "mixed_bfloat16", ...); None:
        the global policy. Under a mixed policy the head computes in float32.
      layout: where the layers sit (`resnet_utils.LAYOUTS`): "slim"; "keras" (keras.
        applications' ResNetV2: the max-pool pads 1 on every side with zeros); "torchvision"
        (also the strides in each block's first unit).
      normalizer, weight_standardization: Big Transfer's options (`models.bit`): the root's
        convolution standardised, `postnorm` a group norm (the units take theirs from their
        `unit_fn`); `root_depth`: the root convolution's channels (64; BiT's are 64 x width).
    """
    check_layout(layout)
    if layout == "torchvision":
        blocks = first_unit_strides(blocks)
    arg_scope = resnet_arg_scope(weight_decay, batch_norm_decay,
                                 layout_epsilon(layout, batch_norm_epsilon), batch_norm_scale)
    policy = dtype_policy(dtype)
    root = None
    if include_root_block:
        # "slim": TF 'SAME', on even sizes 0 pad before, 1 after; the others pad 1 + 1.
        root = [Conv2DSame(root_depth, 7, stride=2, name="conv1", dtype=policy,
                           weight_standardization=weight_standardization, **arg_scope)] + \
            root_pool(layout, policy)
    # Pre-activation units leave their output un-normalised: a final BN + ReLU ([2] appendix).
    return resnet_model(blocks, root=root, postnorm=True, num_classes=num_classes,
                        global_pool=global_pool, output_stride=output_stride,
                        spatial_squeeze=spatial_squeeze, input_shape=input_shape, name=name,
                        arg_scope=arg_scope, dtype=policy, normalizer=normalizer)


def resnet_v2_stack(units, base_depth: int = 64, block_strides=None,
                    include_root_block: bool = True, num_classes: int | None = None,
                    input_shape=None, name: str = "resnet_v2", dtype=None,
                    **arg_scope) -> keras.Model:
    """A custom `resnet_v2` of slim bottleneck blocks (the registry's and configs'
    "resnet_v2_stack"): block i has `units[i]` units of bottleneck width `base_depth * 2**i`
    and the stride `block_strides[i]` in its last unit (default 2, ..., 2, 1, as slim's)."""
    if not units:
        raise UserError(f"units must list the units of each block. Received: units={units!r}")
    strides = block_strides or [2] * (len(units) - 1) + [1]
    if len(strides) != len(units):
        raise UserError(f"block_strides needs one stride per block of units. Received: "
                        f"units={units}, block_strides={block_strides}")
    blocks = [resnet_v2_block(f"block{i + 1}", base_depth * 2 ** i, n, stride)
              for i, (n, stride) in enumerate(zip(units, strides))]
    return resnet_v2(blocks, num_classes=num_classes, include_root_block=include_root_block,
                     input_shape=input_shape, name=name, dtype=dtype, **arg_scope)


resnet_v2_18 = resnet_factory("v2", 18, resnet_v2, resnet_v2_blocks)
resnet_v2_34 = resnet_factory("v2", 34, resnet_v2, resnet_v2_blocks)
resnet_v2_50 = resnet_factory("v2", 50, resnet_v2, resnet_v2_blocks)
resnet_v2_101 = resnet_factory("v2", 101, resnet_v2, resnet_v2_blocks)
resnet_v2_152 = resnet_factory("v2", 152, resnet_v2, resnet_v2_blocks)
resnet_v2_200 = resnet_factory("v2", 200, resnet_v2, resnet_v2_blocks)
