"""The strongest public ResNets, built from slim's ResNet V1 parts: ResNeXt, Wide ResNet,
ResNet-D, SE-ResNeXt and ResNet-RS, named as their sources name them.

    model = resnext50_32x4d(num_classes=1000, weights="torchvision")
    model = resnet_rs_50(num_classes=1000, weights="keras")        # tf_keras' ResNet-RS-50
    model = seresnext50_32x4d(num_classes=1000, weights="timm")

Each is `resnet_v1` over slim's `Block`s of `BottleneckV1` units with a few more unit and root
options (`Variant`):
  - `groups`, `width_per_group`: conv2 a grouped convolution of `groups` x `width_per_group`
    channels per 64 of the unit's base depth (ResNeXt, arXiv:1611.05431; torchvision's
    `width = int(planes * base_width / 64) * groups`), wider for Wide ResNet-50-2 (128);
  - `stem`: slim's 7x7, or a deep stem (`resnet_v1.STEMS`);
  - `shortcut` "D": ResNet-D's average-pool projection (arXiv:1812.01187);
  - `se_ratio`, `se_divisor`: squeeze-and-excitation after conv3 (arXiv:1709.01507);
  - `dropout_rate` before the logits and `drop_path_rate` (stochastic depth), in training only.
End points, `block_info`, `output_stride`, `.keras` files and exports are the plain ResNets'.
Only `keras.layers` / `keras.ops`.

    [RS] Irwan Bello et al. Revisiting ResNets: Improved Training and Scaling Strategies.
         arXiv:2103.07579
"""

from __future__ import annotations

import dataclasses
import functools

import keras

from resnet_tf.errors import UserError
from resnet_tf.models.resnet_utils import (
    BLOCK_STRIDES,
    RESNET_UNITS,
    Block,
    build_with_weights,
    check_layout,
)
from resnet_tf.models.resnet_v1 import BottleneckV1, resnet_v1

# ResNet-RS's units per block ([RS] Table 7; tf_keras' `BLOCK_ARGS`).
RS_UNITS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3), 200: (3, 24, 36, 3),
            270: (4, 29, 53, 4), 350: (4, 36, 72, 4), 420: (4, 44, 87, 4)}


@dataclasses.dataclass(frozen=True)
class Variant:
    """One architecture: its units per block and the unit and root options over slim's V1."""

    units: tuple
    groups: int = 1
    width_per_group: int = 64
    stem: str = "slim"
    shortcut: str = "B"
    se_ratio: float | None = None
    se_divisor: int = 1
    dropout_rate: float = 0.0  # the source's default before its classifier
    description: str = ""


VARIANTS = {
    # torchvision's ResNeXt and Wide ResNet.
    "resnext50_32x4d": Variant(RESNET_UNITS[50], 32, 4, description="ResNeXt-50 32x4d"),
    "resnext101_32x8d": Variant(RESNET_UNITS[101], 32, 8, description="ResNeXt-101 32x8d"),
    "resnext101_64x4d": Variant(RESNET_UNITS[101], 64, 4, description="ResNeXt-101 64x4d"),
    "wide_resnet50_2": Variant(RESNET_UNITS[50], 1, 128, description="Wide ResNet-50-2"),
    "wide_resnet101_2": Variant(RESNET_UNITS[101], 1, 128, description="Wide ResNet-101-2"),
    # timm's ResNet-D (deep stem 32-32-64, average-pool shortcuts) and SE-ResNeXt (SE at
    # 1/16, channels a multiple of 8).
    **{f"resnet{depth}d": Variant(RESNET_UNITS[depth], stem="deep", shortcut="D",
                                  description=f"ResNet-{depth}-D")
       for depth in (50, 101, 152, 200)},
    "seresnext50_32x4d": Variant(RESNET_UNITS[50], 32, 4, se_ratio=1 / 16, se_divisor=8,
                                 description="SE-ResNeXt-50 32x4d"),
    "seresnext101d_32x8d": Variant(RESNET_UNITS[101], 32, 8, stem="deep", shortcut="D",
                                   se_ratio=1 / 16, se_divisor=8,
                                   description="SE-ResNeXt-101-D 32x8d"),
    # tf_keras' ResNet-RS: the deep stem with a strided fourth convolution, average-pool
    # shortcuts, SE at 1/4 of the unit's output, dropout 0.25 before the classifier (0.4 from
    # ResNet-RS-350 on).
    **{f"resnet_rs_{depth}": Variant(units, stem="deep_strided", shortcut="D", se_ratio=0.25,
                                     dropout_rate=0.4 if depth >= 350 else 0.25,
                                     description=f"ResNet-RS-{depth}")
       for depth, units in RS_UNITS.items()},
}


def variant_blocks(variant: Variant, base_depth: int = 64) -> list[Block]:
    """slim's four blocks for `variant`: block i's units have depth 4 * b * 2**i and a
    bottleneck of `int(b * 2**i * width_per_group / 64) * groups` channels (b: `base_depth`,
    the sources' 64; smaller for tiny models); the stride in each block's last unit (slim's
    layout; `layout="torchvision"` moves it)."""
    unit_fn = functools.partial(
        BottleneckV1, shortcut=variant.shortcut,
        **({"groups": variant.groups} if variant.groups != 1 else {}),
        **({"se_ratio": variant.se_ratio, "se_divisor": variant.se_divisor}
           if variant.se_ratio else {}))
    if int(base_depth * variant.width_per_group / 64) < 1:
        raise UserError(f"base_depth {base_depth} leaves {variant.description}'s bottleneck no "
                        f"channels ({variant.width_per_group} per group per 64 of base "
                        f"depth); base_depth must be at least "
                        f"{-(-64 // variant.width_per_group)}")
    blocks = []
    for i, (count, stride) in enumerate(zip(variant.units, BLOCK_STRIDES)):
        planes = base_depth * 2 ** i
        unit = {"depth": 4 * planes,
                "depth_bottleneck": int(planes * variant.width_per_group / 64) * variant.groups}
        blocks.append(Block(f"block{i + 1}", unit_fn,
                            [dict(unit, stride=1)] * (count - 1) + [dict(unit, stride=stride)]))
    return blocks


def variant_factory(model_name: str):
    """The builder `model_name(num_classes=None, ..., weights=None)` of `VARIANTS[model_name]`."""
    variant = VARIANTS[model_name]

    def build(num_classes=None, global_pool=True, output_stride=None, spatial_squeeze=True,
              input_shape=None, name=model_name, weights=None, dtype=None, layout=None,
              dropout_rate=variant.dropout_rate, drop_path_rate=0.0, base_depth=64,
              **arg_scope) -> keras.Model:
        if layout is not None:
            check_layout(layout)
        if "stem" in arg_scope or "stem_width" in arg_scope:
            raise UserError(f"{model_name}'s stem is its architecture's; build another with "
                            "resnet_tf.resnet_v1(blocks, stem=...)")
        return build_with_weights(model_name, weights, num_classes, layout, lambda layout: (
            resnet_v1(variant_blocks(variant, base_depth), num_classes=num_classes,
                      global_pool=global_pool,
                      output_stride=output_stride, include_root_block=True,
                      spatial_squeeze=spatial_squeeze, input_shape=input_shape, name=name,
                      dtype=dtype, layout=layout, stem=variant.stem,
                      dropout_rate=dropout_rate, drop_path_rate=drop_path_rate, **arg_scope)))

    options = [f"{variant.groups} groups of {variant.width_per_group}" if variant.groups > 1
               else f"bottleneck width {variant.width_per_group} per 64" if
               variant.width_per_group != 64 else "",
               f"{variant.stem} stem" if variant.stem != "slim" else "",
               "average-pool shortcuts (D)" if variant.shortcut == "D" else "",
               f"squeeze-and-excitation at {variant.se_ratio:g}" if variant.se_ratio else "",
               f"dropout {variant.dropout_rate:g} before the logits" if variant.dropout_rate
               else ""]
    build.__name__ = build.__qualname__ = model_name
    build.__doc__ = (f"{variant.description}: slim's ResNet V1 with blocks of {variant.units} "
                     f"bottleneck units; {', '.join(o for o in options if o)}. See "
                     "`resnet_v1` for the arguments; `weights`: None, a source's name "
                     "(`resnet_tf.weights.catalog`) or a URL or path of its file, which sets "
                     "`layout`; `dropout_rate` (before the logits) and `drop_path_rate` "
                     "(stochastic depth) act in training only; `base_depth`: block 1's base "
                     "depth (64; smaller for tiny models).")
    return build


resnext50_32x4d = variant_factory("resnext50_32x4d")
resnext101_32x8d = variant_factory("resnext101_32x8d")
resnext101_64x4d = variant_factory("resnext101_64x4d")
wide_resnet50_2 = variant_factory("wide_resnet50_2")
wide_resnet101_2 = variant_factory("wide_resnet101_2")
resnet50d = variant_factory("resnet50d")
resnet101d = variant_factory("resnet101d")
resnet152d = variant_factory("resnet152d")
resnet200d = variant_factory("resnet200d")
seresnext50_32x4d = variant_factory("seresnext50_32x4d")
seresnext101d_32x8d = variant_factory("seresnext101d_32x8d")
resnet_rs_50 = variant_factory("resnet_rs_50")
resnet_rs_101 = variant_factory("resnet_rs_101")
resnet_rs_152 = variant_factory("resnet_rs_152")
resnet_rs_200 = variant_factory("resnet_rs_200")
resnet_rs_270 = variant_factory("resnet_rs_270")
resnet_rs_350 = variant_factory("resnet_rs_350")
resnet_rs_420 = variant_factory("resnet_rs_420")
