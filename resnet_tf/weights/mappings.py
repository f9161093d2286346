"""A source's names -> slim's: what each source's file holds, as the variables of the builder
that builds the same network (names below the model's scope), and which builder that is.

  - torchvision's and timm's ResNet state dicts (the same keys): the plain ResNets, ResNeXt and
    Wide ResNet (a grouped or wider conv2), timm's ResNet-D (`conv1.0`...: the deep stem;
    `downsample.1`: the projection after the average pool) and SE-ResNeXt (`se.fc1`, `se.fc2`);
  - timm's Big Transfer ResNet V2s (`stem.conv`, `stages.0.blocks.0.norm1`, ...) and Google's
    own BiT `.npz` files (`resnet/block1/unit01/a/standardized_conv2d/kernel`, ...);
  - keras.applications' ResNet / ResNetV2 `.h5` (`conv2_block1_1_conv`, ...) and tf_keras'
    ResNet-RS (`BlockGroup2__block_0__conv_1`, ...).

Every tensor of the file must be used (else one sentence says the file is another network);
`sources.assign_strictly` then checks every variable of the model.
"""

from __future__ import annotations

import collections
import dataclasses
import re

import numpy as np

from resnet_tf.data.pixels import EvalPreprocessing
from resnet_tf.errors import UserError
from resnet_tf.models.resnet_utils import BASIC_DEPTHS, RESNET_UNITS
from resnet_tf.models.variants import RS_UNITS, VARIANTS

# The depth of a ResNet from its units per block, and whether it is a bottleneck one.
DEPTHS = {(units, depth not in BASIC_DEPTHS): depth for depth, units in RESNET_UNITS.items()}
RS_DEPTHS = {units: depth for depth, units in RS_UNITS.items()}


@dataclasses.dataclass(frozen=True)
class Mapped:
    """A file's tensors in slim's names, with what they need."""

    source: str  # "torchvision" | "timm" | "keras" | "bit" (Google's BiT files)
    layout: str
    num_classes: int
    preprocessing: EvalPreprocessing
    arrays: dict


def check_builder(model_name: str, wanted: str, what: str, holds: str) -> None:
    if model_name == wanted:
        return
    if wanted.startswith("resnet_v") or wanted in VARIANTS:
        raise UserError(f"weights {what} hold {holds}: build it with {wanted}, not "
                        f"{model_name}")
    raise UserError(f"weights {what} hold {holds} ({wanted}), which resnet_tf does not build")


def _bn(prefix, gamma, beta, mean, variance, out, bias=None):
    """A batch norm's four arrays; a convolution's `bias` before it folds into its mean."""
    out[f"{prefix}/gamma"] = gamma
    out[f"{prefix}/beta"] = beta
    out[f"{prefix}/moving_mean"] = mean if bias is None else mean - bias
    out[f"{prefix}/moving_variance"] = variance


class _Taken:
    """A file's tensors (a Keras `.h5`: its layers) by name, and which were taken: every one
    must be (`check_all_taken`), else the file is another network."""

    def __init__(self, items: dict, what: str):
        self.items, self.what, self.taken = items, what, set()

    def __call__(self, key):
        if key not in self.items:
            raise UserError(f"weights {self.what} lack {key!r}, which the network their other "
                            "names describe has; the file is another network or incomplete")
        self.taken.add(key)
        return self.items[key]

    def check_all_taken(self, what: str, kind: str, network: str) -> None:
        unused = sorted(set(self.items) - self.taken)
        if unused:
            raise UserError(f"weights {what} hold {kind} {network} has not ({len(unused)}: "
                            f"{', '.join(unused[:5])}); it is another network")


def _torch_architecture(state, depth, bottleneck):
    """(builder name, the network's name) of a torchvision/timm state dict."""
    deep = "conv1.0.weight" in state
    se = "layer1.0.se.fc1.weight" in state
    if not bottleneck:
        if deep or se:  # timm's resnet18d, resnet34d, seresnet34, ...
            return (f"{'se' if se else ''}resnet{depth}{'d' if deep else ''}",
                    f"{'SE-' if se else ''}ResNet-{depth}{'-D' if deep else ''}")
        return f"resnet_v1_{depth}", f"ResNet-{depth}"
    width = int(state["layer1.0.conv2.weight"].shape[0])
    groups = width // int(state["layer1.0.conv2.weight"].shape[1])
    per_group = width // groups
    prefix, suffix = ("se" if se else ""), ("d" if deep else "")
    title = f"{'SE-' if se else ''}{{}}-{depth}{'-D' if deep else ''}"
    if groups > 1:
        return (f"{prefix}resnext{depth}{suffix}_{groups}x{per_group}d",
                f"{title.format('ResNeXt')} {groups}x{per_group}d")
    if per_group != 64:
        return f"wide_resnet{depth}_{per_group // 64}", f"Wide ResNet-{depth}-{per_group // 64}"
    if deep or se:
        return f"{prefix}resnet{depth}{suffix}", title.format("ResNet")
    return f"resnet_v1_{depth}", f"ResNet-{depth}"


def from_torch(model_name: str, state: dict, what: str, source: str) -> Mapped:
    """torchvision's / timm's ResNet state dict (their keys are the same) in slim's names;
    timm's ResNet V2 of Big Transfer (`stem.conv`, `stages.0.blocks.0...`: `from_timm_bit`)."""
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    if "stem.conv.weight" in state:
        return from_timm_bit(model_name, state, what, source)
    units = collections.defaultdict(set)
    for key in state:
        match = re.match(r"layer(\d)\.(\d+)\.", key)
        if match:
            units[int(match.group(1))].add(int(match.group(2)))
    bottleneck = any(".conv3." in key for key in state)
    counts = tuple(len(units[i]) for i in (1, 2, 3, 4))
    depth = DEPTHS.get((counts, bottleneck))
    deep = "conv1.0.weight" in state
    if depth is None or not ("conv1.weight" in state or deep):
        raise UserError(f"weights {what} do not hold a torchvision-style ResNet (units per "
                        f"stage {counts}; keys such as {sorted(state)[:4]})")
    classes = int(state["fc.weight"].shape[0]) if "fc.weight" in state else None
    wanted, network = _torch_architecture(state, depth, bottleneck)
    check_builder(model_name, wanted, what, f"a {source} {network} ({classes or 'no'} classes)")
    unit = "bottleneck_v1" if bottleneck else "basic_v1"
    out, take = {}, _Taken(state, what)

    def conv(key, name, bias=False):
        out[f"{name}/weights"] = np.transpose(take(f"{key}.weight"), (2, 3, 1, 0))
        if bias:
            out[f"{name}/biases"] = take(f"{key}.bias")

    def bn(key, name):
        _bn(f"{name}/BatchNorm", take(f"{key}.weight"), take(f"{key}.bias"),
            take(f"{key}.running_mean"), take(f"{key}.running_var"), out)

    if deep:  # timm's deep stem: Sequential(conv, bn, relu, conv, bn, relu, conv), then bn1
        for k, (conv_key, bn_key) in enumerate((("conv1.0", "conv1.1"), ("conv1.3", "conv1.4"),
                                                ("conv1.6", "bn1")), start=1):
            conv(conv_key, f"conv1_{k}")
            bn(bn_key, f"conv1_{k}")
    else:
        conv("conv1", "conv1")
        bn("bn1", "conv1")
    for stage in (1, 2, 3, 4):
        for index in sorted(units[stage]):
            key, name = f"layer{stage}.{index}", f"block{stage}/unit_{index + 1}/{unit}"
            for k in (1, 2, 3) if bottleneck else (1, 2):
                conv(f"{key}.conv{k}", f"{name}/conv{k}")
                bn(f"{key}.bn{k}", f"{name}/conv{k}")
            if f"{key}.se.fc1.weight" in state:
                conv(f"{key}.se.fc1", f"{name}/se/reduce", bias=True)
                conv(f"{key}.se.fc2", f"{name}/se/expand", bias=True)
            if f"{key}.downsample.0.weight" in state:
                conv(f"{key}.downsample.0", f"{name}/shortcut")
                bn(f"{key}.downsample.1", f"{name}/shortcut")
            elif f"{key}.downsample.1.weight" in state:  # after ResNet-D's average pool
                conv(f"{key}.downsample.1", f"{name}/shortcut")
                bn(f"{key}.downsample.2", f"{name}/shortcut")
    if classes:
        out["logits/weights"] = take("fc.weight").T[None, None]
        out["logits/biases"] = take("fc.bias")
    take.check_all_taken(what, "tensors", f"a {source} {network}")
    prep = EvalPreprocessing("torchvision", 224, resize_side=256)
    return Mapped(source, "torchvision", classes or 0, prep, out)


def _bit_arrays(units: dict, conv, group_norm, has_shortcut) -> dict:
    """A BiT ResNet V2's arrays in slim's names, whichever file holds them: `conv(unit, part)`
    gives a kernel (HWIO) and `group_norm(unit, part)` a (gamma, beta) pair of unit (stage,
    index) or of the network (unit None); parts as timm names them ("conv1", "norm1", ...:
    timm's `norm1` is slim's `preact`, `norm2` / `norm3` conv1's / conv2's `GroupNorm`)."""
    out = {"conv1/weights": conv(None, "stem")}

    def norm(name, unit, part):
        out[f"{name}/gamma"], out[f"{name}/beta"] = group_norm(unit, part)

    for stage in (0, 1, 2, 3):
        for index in sorted(units[stage]):
            unit, name = (stage, index), f"block{stage + 1}/unit_{index + 1}/bottleneck_v2"
            norm(f"{name}/preact", unit, "norm1")
            for k in (1, 2, 3):
                out[f"{name}/conv{k}/weights"] = conv(unit, f"conv{k}")
            norm(f"{name}/conv1/GroupNorm", unit, "norm2")
            norm(f"{name}/conv2/GroupNorm", unit, "norm3")
            if has_shortcut(unit):
                out[f"{name}/shortcut/weights"] = conv(unit, "downsample")
    norm("postnorm", None, "norm")
    return out


def _bit_depth(units: dict, what: str, network: str, keys) -> int:
    counts = tuple(len(units[i]) for i in (0, 1, 2, 3))
    depth = DEPTHS.get((counts, True))
    if depth is None:
        raise UserError(f"weights {what} do not hold {network} (units per stage {counts}; "
                        f"keys such as {sorted(keys)[:4]})")
    return depth


# BiT's recipe: [-1, 1] pixels, the whole image resized (no crop) at the fine-tuned size; its
# ImageNet-21k files (21,843 classes) as timm evaluates them: 224 px, the central 87.5 %.
BIT_PREPROCESSING = EvalPreprocessing("inception", 448, central_fraction=None)
BIT_21K_CLASSES = 21843
BIT_21K_PREPROCESSING = EvalPreprocessing("inception", 224, central_fraction=0.875)


def _bit_preprocessing(classes) -> EvalPreprocessing:
    return BIT_21K_PREPROCESSING if classes == BIT_21K_CLASSES else BIT_PREPROCESSING


def from_timm_bit(model_name: str, state: dict, what: str, source: str) -> Mapped:
    """timm's `resnetv2_<depth>x<width>_bit` (Big Transfer: group norm, weight-standardised
    convolutions without biases) as `models.bit`'s builder."""
    units = collections.defaultdict(set)
    for key in state:
        match = re.match(r"stages\.(\d)\.blocks\.(\d+)\.", key)
        if match:
            units[int(match.group(1))].add(int(match.group(2)))
    network = "a timm Big Transfer ResNet V2"
    depth = _bit_depth(units, what, network, state)
    if "stages.0.blocks.0.norm1.weight" not in state or \
            "stages.0.blocks.0.norm1.running_mean" in state:
        raise UserError(f"weights {what} do not hold {network} (keys such as "
                        f"{sorted(state)[:4]})")
    width = int(state["stem.conv.weight"].shape[0]) // 64
    classes = int(state["head.fc.weight"].shape[0]) if "head.fc.weight" in state else None
    check_builder(model_name, f"resnet_v2_{depth}x{width}_bit", what,
                  f"a {source} BiT ResNet V2-{depth}x{width} ({classes or 'no'} classes)")
    take = _Taken(state, what)

    def key(unit, part):
        part = {"stem": "stem.conv", "downsample": "downsample.conv"}.get(part, part)
        return part if unit is None else f"stages.{unit[0]}.blocks.{unit[1]}.{part}"

    out = _bit_arrays(
        units, lambda unit, part: np.transpose(take(f"{key(unit, part)}.weight"), (2, 3, 1, 0)),
        lambda unit, part: (take(f"{key(unit, part)}.weight"), take(f"{key(unit, part)}.bias")),
        lambda unit: f"{key(unit, 'downsample')}.weight" in state)
    if classes:
        out["logits/weights"] = np.transpose(take("head.fc.weight"), (2, 3, 1, 0))
        out["logits/biases"] = take("head.fc.bias")
    take.check_all_taken(what, "tensors", f"a BiT ResNet V2-{depth}x{width}")
    return Mapped(source, "torchvision", classes or 0, _bit_preprocessing(classes), out)


def from_bit_npz(model_name: str, arrays: dict, what: str) -> Mapped:
    """Google's Big Transfer `.npz` (`BiT-M-R50x1.npz`, ...: `resnet/root_block/
    standardized_conv2d/kernel`, `resnet/block1/unit01/a/group_norm/gamma`, ...; kernels HWIO
    as slim's) as `models.bit`'s builder: unit part `a` is timm's norm1 / conv1 (its `proj` the
    shortcut), `b` norm2 / conv2, `c` norm3 / conv3; the head a 1x1 convolution `head/conv2d`."""
    units = collections.defaultdict(set)
    for key in arrays:
        match = re.match(r"resnet/block(\d)/unit(\d+)/", key)
        if match:
            units[int(match.group(1)) - 1].add(int(match.group(2)) - 1)
    network = "a Big Transfer ResNet V2 in BiT's .npz layout"
    depth = _bit_depth(units, what, network, arrays)
    stem = "resnet/root_block/standardized_conv2d/kernel"
    if stem not in arrays:
        raise UserError(f"weights {what} do not hold {network} (no {stem}; keys such as "
                        f"{sorted(arrays)[:4]})")
    width = int(arrays[stem].shape[-1]) // 64
    head = "resnet/head/conv2d"
    classes = int(arrays[f"{head}/kernel"].shape[-1]) if f"{head}/kernel" in arrays else None
    check_builder(model_name, f"resnet_v2_{depth}x{width}_bit", what,
                  f"BiT's ResNet V2-{depth}x{width} ({classes or 'no'} classes)")
    take = _Taken(arrays, what)
    letter = {"conv1": "a", "conv2": "b", "conv3": "c", "downsample": "a/proj",
              "norm1": "a", "norm2": "b", "norm3": "c"}

    def key(unit, part):
        if unit is None:
            return {"stem": "resnet/root_block", "norm": "resnet"}[part]
        return f"resnet/block{unit[0] + 1}/unit{unit[1] + 1:02d}/{letter[part]}"

    def group_norm(unit, part):  # (C,) in the files; any (1, ..., C) is taken as (C,)
        return tuple(np.reshape(take(f"{key(unit, part)}/group_norm/{name}"), (-1,))
                     for name in ("gamma", "beta"))

    out = _bit_arrays(units, lambda unit, part: take(f"{key(unit, part)}/standardized_conv2d/"
                                                     "kernel"), group_norm,
                      lambda unit: f"{key(unit, 'downsample')}/standardized_conv2d/kernel"
                      in arrays)
    if classes:
        out["logits/weights"] = take(f"{head}/kernel")
        out["logits/biases"] = take(f"{head}/bias")
    take.check_all_taken(what, "arrays", f"BiT's ResNet V2-{depth}x{width}")
    return Mapped("bit", "torchvision", classes or 0, _bit_preprocessing(classes), out)


def from_keras(model_name: str, layers: dict, what: str) -> Mapped:
    """keras.applications' ResNet / ResNetV2 weights (layer names conv2_block1_1_conv, ...),
    or tf_keras' ResNet-RS (`from_keras_rs`)."""
    if is_resnet_rs(layers):
        return from_keras_rs(model_name, layers, what)
    v2 = any(name.endswith("_preact_bn") for name in layers)
    units = collections.defaultdict(set)
    for name in layers:
        match = re.match(r"conv(\d)_block(\d+)_", name)
        if match:
            units[int(match.group(1))].add(int(match.group(2)))
    counts = tuple(len(units[i]) for i in (2, 3, 4, 5))
    depth = DEPTHS.get((counts, True))
    if depth is None or "conv1_conv" not in layers:
        raise UserError(f"weights {what} do not hold a keras.applications ResNet (blocks per "
                        f"stage {counts}; layers such as {sorted(layers)[:4]})")
    classes = int(layers["predictions"][0].shape[-1]) if "predictions" in layers else None
    family = "v2" if v2 else "v1"
    check_builder(model_name, f"resnet_{family}_{depth}", what,
                  f"a keras.applications ResNet{depth}{'V2' if v2 else ''} "
                  f"({classes or 'no'} classes)")
    out, take = {}, _Taken(layers, what)

    if v2:
        kernel, bias = take("conv1_conv")
        out["conv1/weights"], out["conv1/biases"] = kernel, bias
        _bn("postnorm", *take("post_bn"), out)
    else:
        kernel, bias = take("conv1_conv")
        out["conv1/weights"] = kernel
        _bn("conv1/BatchNorm", *take("conv1_bn"), out, bias=bias)
    for stage in (2, 3, 4, 5):
        for index in sorted(units[stage]):
            _keras_unit(f"conv{stage}_block{index}", f"block{stage - 1}/unit_{index}", v2,
                        layers, take, out)
    if classes:
        kernel, bias = take("predictions")
        out["logits/weights"], out["logits/biases"] = kernel[None, None], bias
    take.check_all_taken(what, "layers", f"a keras.applications ResNet{depth}")
    prep = (EvalPreprocessing("inception", 224, central_fraction=None) if v2 else
            EvalPreprocessing("caffe", 224, resize_side=256))
    return Mapped("keras", "keras", classes or 0, prep, out)


def _keras_unit(key, name, v2, layers, take, out) -> None:
    """One keras.applications block (`conv2_block1_*`) as slim's unit `name`'s variables."""
    if v2:
        name += "/bottleneck_v2"
        _bn(f"{name}/preact", *take(f"{key}_preact_bn"), out)
        for k in (1, 2):
            (out[f"{name}/conv{k}/weights"],) = take(f"{key}_{k}_conv")
            _bn(f"{name}/conv{k}/BatchNorm", *take(f"{key}_{k}_bn"), out)
        for k, scope in ((3, "conv3"), (0, "shortcut")):
            if f"{key}_{k}_conv" in layers:
                out[f"{name}/{scope}/weights"], out[f"{name}/{scope}/biases"] = take(
                    f"{key}_{k}_conv")
        return
    name += "/bottleneck_v1"
    for k, scope in ((0, "shortcut"), (1, "conv1"), (2, "conv2"), (3, "conv3")):
        if f"{key}_{k}_conv" in layers:
            kernel, bias = take(f"{key}_{k}_conv")
            out[f"{name}/{scope}/weights"] = kernel
            _bn(f"{name}/{scope}/BatchNorm", *take(f"{key}_{k}_bn"), out, bias=bias)


# ResNet-RS layer names in two schemes. The released files (tf_keras' URLs and MD5s are
# sebastian-sz/resnet-rs-keras's) name them `stem_conv_1`, `c2_block_0_conv_1`,
# `c2_block_0_se_reduce`; tf_keras' own code `stem_1_stem_conv_1` (a counter per model built in
# the process), `BlockGroup2__block_0__conv_1`, `BlockGroup2__block_0_batch_norm_1`,
# `BlockGroup2__block_0__se_se_reduce`. tf_keras loads either by order, not name.
_RS_STEM = re.compile(r"(?:stem_\d+_)?stem_(conv|batch_norm)_(\d)$")
_RS_UNIT = re.compile(r"(?:BlockGroup|c)(\d)_{1,2}block_(\d+)_{1,2}(conv_\d|batch_norm_\d|"
                      r"(?:se_)?se_reduce|(?:se_)?se_expand|projection_conv|"
                      r"projection_batch_norm)$")


def is_resnet_rs(layer_names) -> bool:
    """Whether a Keras `.h5`'s layers are a ResNet-RS's (either naming scheme)."""
    return any(_RS_UNIT.match(name) for name in layer_names)


def from_keras_rs(model_name: str, layers: dict, what: str) -> Mapped:
    """tf_keras' ResNet-RS weights (`tf.keras.applications.ResNetRS50`'s `.h5`) in slim's names:
    BlockGroup2-5 are blocks 1-4, `block_0` is `unit_1`."""
    units = collections.defaultdict(set)
    for name in layers:
        match = _RS_UNIT.match(name)
        if match:
            units[int(match.group(1))].add(int(match.group(2)))
    counts = tuple(len(units[g]) for g in (2, 3, 4, 5))
    depth = RS_DEPTHS.get(counts)
    if depth is None:
        raise UserError(f"weights {what} do not hold a tf_keras ResNet-RS (units per block "
                        f"{counts}; layers such as {sorted(layers)[:4]})")
    classes = int(layers["predictions"][0].shape[-1]) if "predictions" in layers else None
    check_builder(model_name, f"resnet_rs_{depth}", what,
                  f"a tf_keras ResNet-RS-{depth} ({classes or 'no'} classes)")
    out, take = {}, _Taken(layers, what)
    for layer in layers:
        stem, unit = _RS_STEM.match(layer), _RS_UNIT.match(layer)
        arrays = layers[layer]
        if stem:
            scope = f"conv1_{stem.group(2)}"
            kind = "conv" if stem.group(1) == "conv" else "batch_norm"
        elif unit:
            scope = (f"block{int(unit.group(1)) - 1}/unit_{int(unit.group(2)) + 1}/"
                     "bottleneck_v1/")
            part = unit.group(3)
            if part.endswith(("se_reduce", "se_expand")):
                scope += f"se/{part.rsplit('_', 1)[1]}"
                kind = "biased"
            else:
                scope += "shortcut" if part.startswith("projection") else f"conv{part[-1]}"
                kind = "batch_norm" if "batch_norm" in part else "conv"
        elif layer == "predictions" and classes:
            scope, kind = "logits", "biased"
            arrays = [arrays[0][None, None], arrays[1]]
        else:
            continue
        take(layer)
        if kind == "batch_norm":
            _bn(f"{scope}/BatchNorm", *arrays, out)
        elif kind == "biased":
            out[f"{scope}/weights"], out[f"{scope}/biases"] = arrays
        else:
            (out[f"{scope}/weights"],) = arrays
    take.check_all_taken(what, "layers", f"a tf_keras ResNet-RS-{depth}")
    # tf_keras normalises inside the model: x / 255, then ImageNet's mean and std.
    prep = EvalPreprocessing("torchvision", 224, resize_side=256)
    return Mapped("keras", "torchvision", classes or 0, prep, out)
