"""Big Transfer (BiT): Google's ResNet V2 with group norm and weight-standardised convolutions,
built from slim's ResNet V2 parts.

    model = resnet_v2_50x1_bit(num_classes=1000, weights="bit-m-in1k")  # Google's .npz
    backbone = resnet_v2_50x1_bit(num_classes=None, weights="bit-m")  # ImageNet-21k

BiT (Kolesnikov et al., arXiv:1912.11370) is slim's pre-activation bottleneck network with two
options of its units and root (`Bottleneck(normalizer="group_norm",
weight_standardization=True)`, `resnet_v2(normalizer=..., weight_standardization=...)`):
every batch norm a group norm of 32 groups (preact, the convolutions' norms, postnorm), every
convolution but the logits standardised per output channel and without bias, widths times a
factor (R50x1 ... R152x4: the root 64 x factor, block i's bottleneck 64 x factor x 2**i). Its
blocks stride in their first unit and its max-pool pads with zeros: the "torchvision" layout.
End points, `block_info`, `output_stride`, `.keras` files and exports work as for slim's V2.
Only `keras.layers` / `keras.ops`.
"""

from __future__ import annotations

import functools

import keras

from resnet_tf.models.resnet_utils import (
    RESNET_UNITS,
    Block,
    build_with_weights,
    check_layout,
)
from resnet_tf.models.resnet_v2 import Bottleneck, resnet_v2, resnet_v2_blocks

# name -> (depth, width factor): the BiT-M / BiT-S models Google released, as timm names them
# (`resnetv2_50x1_bit`, ...).
BIT_MODELS = {f"resnet_v2_{depth}x{width}_bit": (depth, width)
              for depth, width in ((50, 1), (50, 3), (101, 1), (101, 3), (152, 2), (152, 4))}


def bit_blocks(depth: int, width: int) -> list[Block]:
    """slim's four V2 blocks of ResNet-`depth` at `width` times the widths, of BiT's units."""
    unit_fn = functools.partial(Bottleneck, normalizer="group_norm", weight_standardization=True)
    return [Block(block.scope, unit_fn, block.args)
            for block in resnet_v2_blocks(depth, base_depth=64 * width)]


def bit_factory(model_name: str):
    depth, width = BIT_MODELS[model_name]

    def build(num_classes=None, global_pool=True, output_stride=None, spatial_squeeze=True,
              input_shape=None, name=model_name, weights=None, dtype=None, layout=None,
              **arg_scope) -> keras.Model:
        layout = "torchvision" if layout is None else layout  # BiT's own
        check_layout(layout)
        return build_with_weights(model_name, weights, num_classes, layout, lambda layout: (
            resnet_v2(bit_blocks(depth, width), num_classes=num_classes,
                      global_pool=global_pool, output_stride=output_stride,
                      include_root_block=True, spatial_squeeze=spatial_squeeze,
                      input_shape=input_shape, name=name, dtype=dtype, layout=layout,
                      normalizer="group_norm", weight_standardization=True,
                      root_depth=64 * width, **arg_scope)))

    build.__name__ = build.__qualname__ = model_name
    build.__doc__ = (f"BiT's ResNet V2-{depth}x{width} (blocks of {RESNET_UNITS[depth]} "
                     f"bottleneck units, widths x{width}, group norm, weight-standardised "
                     "convolutions; BiT's layout, \"torchvision\"). See `resnet_v2` for the "
                     "arguments; `weights`: None, \"bit-m\" (Google's BiT-M-R"
                     f"{depth}x{width}.npz, ImageNet-21k: 21,843 classes), \"bit-m-in1k\" "
                     "(BiT-M fine-tuned on ImageNet-1k), \"timm\" (the same, as timm hosts "
                     "it), or a URL or path of Google's .npz or timm's file of the model "
                     f"(`resnetv2_{depth}x{width}_bit`).")
    return build


resnet_v2_50x1_bit = bit_factory("resnet_v2_50x1_bit")
resnet_v2_50x3_bit = bit_factory("resnet_v2_50x3_bit")
resnet_v2_101x1_bit = bit_factory("resnet_v2_101x1_bit")
resnet_v2_101x3_bit = bit_factory("resnet_v2_101x3_bit")
resnet_v2_152x2_bit = bit_factory("resnet_v2_152x2_bit")
resnet_v2_152x4_bit = bit_factory("resnet_v2_152x4_bit")
