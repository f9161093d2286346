"""Random ResNet weights in other libraries' own names and formats, the same from a seed with
numpy alone: torchvision's / timm's state dict (`torch_state`) and keras.applications' models
written by tf_keras (`keras_applications_h5`), and timm's BiT in Google's `.npz` layout
(`write_bit_npz`). `tests/make_source_outputs.py` runs the real
torchvision and timm on the same weights and stores their logits in tests/data/sources/."""

import os
import re

import numpy as np

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "sources")
UNITS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3),
         152: (3, 8, 36, 3)}


# The stronger ResNets' options in torchvision's and timm's state dicts (`torch_state`).
TORCH_VARIANTS = {
    "resnext50_32x4d": dict(depth=50, groups=32, width_per_group=4),
    "resnext101_64x4d": dict(depth=101, groups=64, width_per_group=4),
    "wide_resnet50_2": dict(depth=50, width_per_group=128),
    "resnet50d": dict(depth=50, deep=True, avg_down=True),
    "resnet101d": dict(depth=101, deep=True, avg_down=True),
    "seresnext50_32x4d": dict(depth=50, groups=32, width_per_group=4, se=True),
    "seresnext101d_32x8d": dict(depth=101, groups=32, width_per_group=8, deep=True,
                                avg_down=True, se=True),
}


def torch_state_shapes(depth, num_classes=1000, groups=1, width_per_group=64, deep=False,
                       avg_down=False, se=False):
    """{key: shape} of torchvision's `resnet<depth>()` state dict (timm's `resnet<depth>` has
    the same keys), in torchvision's order, without num_batches_tracked; with ResNeXt's
    `groups`, a wider bottleneck, timm's deep stem (`deep`), average-pool shortcuts
    (`avg_down`) and squeeze-and-excitation (`se`)."""
    bottleneck = depth >= 50
    shapes = {}

    def bn(key, channels):
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{key}.{name}"] = (channels,)

    if deep:  # timm's Sequential(conv, bn, relu, conv, bn, relu, conv)
        shapes["conv1.0.weight"] = (32, 3, 3, 3)
        bn("conv1.1", 32)
        shapes["conv1.3.weight"] = (32, 32, 3, 3)
        bn("conv1.4", 32)
        shapes["conv1.6.weight"] = (64, 32, 3, 3)
    else:
        shapes["conv1.weight"] = (64, 3, 7, 7)
    bn("bn1", 64)
    channels_in = 64
    for stage, count in enumerate(UNITS[depth], start=1):
        planes = 64 * 2 ** (stage - 1)
        width = int(planes * width_per_group / 64) * groups if bottleneck else planes
        out = planes * 4 if bottleneck else planes
        for unit in range(count):
            key = f"layer{stage}.{unit}"
            if bottleneck:
                convs = [(width, channels_in, 1, 1), (width, width // groups, 3, 3),
                         (out, width, 1, 1)]
            else:
                convs = [(width, channels_in, 3, 3), (width, width, 3, 3)]
            for k, shape in enumerate(convs, start=1):
                shapes[f"{key}.conv{k}.weight"] = shape
                bn(f"{key}.bn{k}", shape[0])
            if se:
                reduced = max(8, int(out / 16 + 4) // 8 * 8)
                shapes[f"{key}.se.fc1.weight"] = (reduced, out, 1, 1)
                shapes[f"{key}.se.fc1.bias"] = (reduced,)
                shapes[f"{key}.se.fc2.weight"] = (out, reduced, 1, 1)
                shapes[f"{key}.se.fc2.bias"] = (out,)
            if unit == 0 and (channels_in != out or stage > 1):
                first = 1 if avg_down else 0
                shapes[f"{key}.downsample.{first}.weight"] = (out, channels_in, 1, 1)
                bn(f"{key}.downsample.{first + 1}", out)
            channels_in = out
    shapes["fc.weight"] = (num_classes, channels_in)
    shapes["fc.bias"] = (num_classes,)
    return shapes


def random_arrays(shapes, seed):
    """Random weights for `{name: shape}` in that order: convolutions and dense kernels scaled
    by their fan-in, batch norms with random statistics (so that folding and epsilons show)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, shape in shapes.items():
        leaf = name.replace(":0", "").split("/")[-1].split(".")[-1]
        if leaf in ("running_var", "moving_variance"):
            value = rng.uniform(0.5, 1.5, shape)
        elif leaf in ("running_mean", "moving_mean", "bias", "beta"):
            value = rng.normal(0.0, 0.1, shape)
        elif leaf == "gamma" or (leaf == "weight" and len(shape) == 1):
            value = rng.uniform(0.5, 1.5, shape)
        else:  # a kernel: torch's [out, in, h, w] / [out, in], keras' [h, w, in, out] / [in, out]
            fan_in = int(np.prod(shape[1:])) if "." in name else int(np.prod(shape[:-1]))
            value = rng.normal(0.0, np.sqrt(1.0 / fan_in), shape)
        arrays[name] = value.astype(np.float32)
    return arrays


# timm's Big Transfer ResNet V2s: name -> (depth, width factor).
BIT = {"resnetv2_50x1_bit": (50, 1), "resnetv2_101x1_bit": (101, 1)}


def bit_state_shapes(depth, width, num_classes=1000):
    """{key: shape} of timm's `resnetv2_<depth>x<width>_bit` state dict (group norms: no
    running statistics; standardised convolutions: no biases; the head a 1x1 convolution)."""
    shapes = {"stem.conv.weight": (64 * width, 3, 7, 7)}
    channels_in = 64 * width
    for stage, count in enumerate(UNITS[depth]):
        planes = 64 * width * 2 ** stage
        out = 4 * planes
        for unit in range(count):
            key = f"stages.{stage}.blocks.{unit}"
            if unit == 0:
                shapes[f"{key}.downsample.conv.weight"] = (out, channels_in, 1, 1)
            for norm, channels in (("norm1", channels_in), ("norm2", planes), ("norm3", planes)):
                shapes[f"{key}.{norm}.weight"] = shapes[f"{key}.{norm}.bias"] = (channels,)
            shapes[f"{key}.conv1.weight"] = (planes, channels_in, 1, 1)
            shapes[f"{key}.conv2.weight"] = (planes, planes, 3, 3)
            shapes[f"{key}.conv3.weight"] = (out, planes, 1, 1)
            channels_in = out
    shapes["norm.weight"] = shapes["norm.bias"] = (channels_in,)
    shapes["head.fc.weight"] = (num_classes, channels_in, 1, 1)
    shapes["head.fc.bias"] = (num_classes,)
    return shapes


def bit_npz_arrays(state):
    """timm's BiT state dict (`torch_state`) in Google's BiT `.npz` layout: the names timm's
    npz loader (`timm.models.resnetv2._load_weights`) reads, kernels HWIO, group norms (C,)."""
    def hwio(x):
        return np.ascontiguousarray(np.transpose(x, (2, 3, 1, 0)))

    arrays = {"resnet/root_block/standardized_conv2d/kernel": hwio(state["stem.conv.weight"]),
              "resnet/group_norm/gamma": state["norm.weight"],
              "resnet/group_norm/beta": state["norm.bias"]}
    if "head.fc.weight" in state:
        arrays["resnet/head/conv2d/kernel"] = hwio(state["head.fc.weight"])
        arrays["resnet/head/conv2d/bias"] = state["head.fc.bias"]
    for key, value in state.items():
        match = re.match(r"stages\.(\d)\.blocks\.(\d+)\.(.+)\.(weight|bias)$", key)
        if not match:
            continue
        stage, block, part, kind = match.groups()
        unit = f"resnet/block{int(stage) + 1}/unit{int(block) + 1:02d}"
        if part == "downsample.conv":
            arrays[f"{unit}/a/proj/standardized_conv2d/kernel"] = hwio(value)
        elif part.startswith("conv"):
            arrays[f"{unit}/{'abc'[int(part[-1]) - 1]}/standardized_conv2d/kernel"] = hwio(value)
        else:  # norm1..3
            name = "gamma" if kind == "weight" else "beta"
            arrays[f"{unit}/{'abc'[int(part[-1]) - 1]}/group_norm/{name}"] = value
    return arrays


def write_bit_npz(state, path):
    np.savez(path, **bit_npz_arrays(state))
    return path


def torch_state(arch, seed=0, num_classes=1000):
    """Random weights of a torchvision/timm ResNet: `arch` a depth (the plain ones) or a name
    of `TORCH_VARIANTS` or `BIT`."""
    if arch in BIT:
        return random_arrays(bit_state_shapes(*BIT[arch], num_classes), seed)
    options = TORCH_VARIANTS[arch] if isinstance(arch, str) else {"depth": arch}
    return random_arrays(torch_state_shapes(num_classes=num_classes, **options), seed)


def images(size, seed=1, count=2):
    """Model inputs (already normalised), NHWC float32."""
    return np.random.default_rng(seed).normal(0.0, 1.0, (count, size, size, 3)).astype(
        np.float32)


def write_safetensors(state, path):
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(path))
    return path


def keras_applications_h5(name, path, seed=0, **kwargs):
    """keras.applications' `name` ("ResNet50", "ResNet50V2", "ResNetRS50", ...) built by
    tf_keras with random weights and batch-norm statistics (and `kwargs`, e.g. `input_shape`),
    its weights saved in Keras 2's `.h5` format (as keras.applications' released files are);
    returns the tf_keras model (logits, no softmax)."""
    import tf_keras

    model = getattr(tf_keras.applications, name)(weights=None, classifier_activation=None,
                                                 **kwargs)
    shapes = {f"{layer.name}/{i}/{w.name.split('/')[-1].split(':')[0]}": tuple(w.shape)
              for layer in model.layers for i, w in enumerate(layer.weights)}
    values = random_arrays(shapes, seed)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights([values[f"{layer.name}/{i}/{w.name.split('/')[-1].split(':')[0]}"]
                               for i, w in enumerate(layer.weights)])
    model.save_weights(str(path), save_format="h5")
    return model


def relative_error(actual, expected):
    return float(np.max(np.abs(np.asarray(actual) - expected)) / np.max(np.abs(expected)))
