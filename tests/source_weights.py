"""Random ResNet weights in other libraries' own names and formats, the same from a seed with
numpy alone: torchvision's / timm's state dict (`torch_state`) and keras.applications' models
written by tf_keras (`keras_applications_h5`). `tests/make_source_outputs.py` runs the real
torchvision and timm on the same weights and stores their logits in tests/data/sources/."""

import os

import numpy as np

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "sources")
UNITS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3),
         152: (3, 8, 36, 3)}


def torch_state_shapes(depth, num_classes=1000):
    """{key: shape} of torchvision's `resnet<depth>()` state dict (timm's `resnet<depth>` has
    the same keys), in torchvision's order, without num_batches_tracked."""
    bottleneck = depth >= 50
    shapes = {"conv1.weight": (64, 3, 7, 7)}

    def bn(key, channels):
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{key}.{name}"] = (channels,)

    bn("bn1", 64)
    channels_in = 64
    for stage, count in enumerate(UNITS[depth], start=1):
        width = 64 * 2 ** (stage - 1)
        out = width * 4 if bottleneck else width
        for unit in range(count):
            key = f"layer{stage}.{unit}"
            if bottleneck:
                convs = [(width, channels_in, 1, 1), (width, width, 3, 3), (out, width, 1, 1)]
            else:
                convs = [(width, channels_in, 3, 3), (width, width, 3, 3)]
            for k, shape in enumerate(convs, start=1):
                shapes[f"{key}.conv{k}.weight"] = shape
                bn(f"{key}.bn{k}", shape[0])
            if unit == 0 and (channels_in != out or stage > 1):
                shapes[f"{key}.downsample.0.weight"] = (out, channels_in, 1, 1)
                bn(f"{key}.downsample.1", out)
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


def torch_state(depth, seed=0, num_classes=1000):
    return random_arrays(torch_state_shapes(depth, num_classes), seed)


def images(size, seed=1, count=2):
    """Model inputs (already normalised), NHWC float32."""
    return np.random.default_rng(seed).normal(0.0, 1.0, (count, size, size, 3)).astype(
        np.float32)


def write_safetensors(state, path):
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(path))
    return path


def keras_applications_h5(name, path, seed=0):
    """keras.applications' `name` ("ResNet50", "ResNet50V2", ...) built by tf_keras with random
    weights and batch-norm statistics, its weights saved in Keras 2's `.h5` format (as
    keras.applications' released files are); returns the tf_keras model (logits, no softmax)."""
    import tf_keras

    model = getattr(tf_keras.applications, name)(weights=None, classifier_activation=None)
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
