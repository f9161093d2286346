"""Every source of weights `weights=` takes, in one call, proven equal to the source's own code.

    resnet_v1_50(num_classes=1000, weights="torchvision")   # IMAGENET1K_V2, 80.86 % (theirs)
    resnet_v1_50(num_classes=1000, weights="timm")          # resnet50.a1_in1k
    resnet_v2_50(num_classes=1000, weights="keras")         # keras.applications' ResNet50V2
    resnet_v2_50(num_classes=1001, weights="imagenet")      # slim's release (`weights.slim`)
    resnet_v2_50x1_bit(num_classes=None, weights="bit-m")   # Google's Big Transfer .npz
    resnet_v1_50(weights="/path/or/https/url/of/a/file.h5")  # recognised by its contents

Each source's ResNets are slim's networks given the right layout (`models.resnet_utils.LAYOUTS`):
torchvision and timm put a block's stride in its first unit on the 3x3 ("V1.5"), keras'
ResNet V1 on the first 1x1, and both pad the root max-pool 1 + 1. The builder builds that
layout, so the model's `.keras` file and exports record it. Weights load strictly: every
variable of the model from the file, every tensor of the file used, shapes equal; keras'
convolution biases before a batch norm are folded into its moving mean (exact in inference).

The rows of named weights are `weights.catalog`'s. Files (`weights.readers`): torchvision's
`.pth` (read without PyTorch by `weights.torch_files`, which unpickles tensors and nothing
else), timm's `.safetensors` (`safetensors`, no PyTorch), keras.applications' `.h5` (h5py: what
tf_keras' and Keras 2's `save_weights` write, or a whole-model `.h5`), Big Transfer's `.npz`
(NumPy, arrays only). Downloads go into Keras'
cache, checked against the catalog's hash (`weights.cache`: one lock, one offline sentence).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import urllib.parse

import numpy as np

from resnet_tf.data.pixels import EvalPreprocessing
from resnet_tf.errors import MissingPathError, UserError
from resnet_tf.weights.cache import fetch
from resnet_tf.weights.catalog import CATALOG, NAMED, published, slim_conventions
from resnet_tf.weights.mappings import (
    Mapped,
    from_bit_npz,
    from_keras,
    from_torch,
)
from resnet_tf.weights.readers import (
    file_kind,
    read_keras_h5,
    read_npz,
    read_safetensors,
    read_torch,
)

# The file names of the sources' formats (a local file is recognised by its contents).
SOURCE_SUFFIXES = (".h5", ".hdf5", ".pth", ".pt", ".bin", ".safetensors", ".npz")



@dataclasses.dataclass(frozen=True)
class Weights:
    """Weights for a builder, resolved before it builds: the layout they need, their classes,
    how their images are prepared, and how to load them into the built model."""

    source: str  # "slim" | "torchvision" | "timm" | "keras" | "bit" | "bit-m" | "bit-m-in1k"
    layout: str
    num_classes: int
    preprocessing: EvalPreprocessing
    description: str
    arrays: dict | None = None  # slim name (below the model's scope) -> array; None: slim's
    weights: object = None  # slim's `weights` argument
    model_name: str | None = None  # slim's: the checkpoint's scope
    path: str | None = None  # the file read (a source's)

    def load(self, model) -> list:
        """Into a model built by the builder: all of them, or all but the head for a model
        without one (num_classes=None)."""
        if self.source == "slim":
            from resnet_tf.weights.slim import load_weights

            return load_weights(model, self.weights, self.model_name)
        has_head = any(layer.name == "logits" for layer in model.layers)
        return assign_strictly(model, self.arrays, self.description,
                               exclude=() if has_head else ["logits"])


def resolve_weights(model_name: str, weights, num_classes, layout=None) -> Weights:
    """What `weights` names for builder `model_name`: slim's release ("imagenet") or any slim
    checkpoint, a source's named weights ("torchvision", "timm", "keras", "bit-m", ...), or a
    file (a path or
    a URL) of any of them, recognised by its contents. Checks `num_classes` and `layout`
    against them before anything is built."""
    if isinstance(weights, Weights):
        resolved = weights
    elif isinstance(weights, str) and weights in NAMED:
        resolved = _named(model_name, weights)
    else:
        resolved = _from_file(model_name, weights)
    if resolved.source == "slim":
        from resnet_tf.weights.slim import check_weights_arguments

        check_weights_arguments(model_name, resolved.weights, num_classes)
    if resolved.source != "slim" and num_classes not in (None, resolved.num_classes):
        raise UserError(f"{resolved.description} has {resolved.num_classes} classes; "
                        f"num_classes must be {resolved.num_classes} or None (no head). "
                        f"Received: num_classes={num_classes}")
    if layout is not None and layout != resolved.layout:
        raise UserError(f"{resolved.description} needs layout={resolved.layout!r}; leave "
                        f"layout out or pass that. Received: layout={layout!r}")
    return resolved


def normalization(model_name: str, weights) -> str:
    """How the source of `weights` normalised pixels (`pixels.normalize_pixels`): a name's
    published recipe; a file's, as its mapping says (the file read as it will be loaded, so the
    two never differ: keras' V1 "caffe", V2 "inception", ResNet-RS "torchvision"; PyTorch's and
    safetensors' "torchvision", but "inception" for timm's BiT; BiT's .npz "inception");
    slim's: its family's."""
    if isinstance(weights, Weights):
        return weights.preprocessing.method
    if weights in CATALOG:
        return published(weights, model_name).preprocessing.method
    path = source_file(weights)
    if path is None:
        return slim_conventions(model_name).preprocessing
    return _read(model_name, path, repr(os.fspath(weights))).preprocessing.method


def download(source: str, model_name: str) -> str:
    """The cached file of a source's named weights (`resnet-tf download --weights SOURCE`):
    slim's release unpacked, its checkpoint's path."""
    entry = published(source, model_name)
    if entry.is_slim:
        from resnet_tf.weights.slim import download_release

        return download_release(entry)
    return fetch(entry.url, entry.fname, entry.file_hash, entry.former_fname)[0]


def _named(model_name: str, source: str) -> Weights:
    if source == "imagenet":
        return _slim(model_name, "imagenet")
    entry = published(source, model_name)
    path = download(source, model_name)
    resolved = _read(model_name, path, f"{source}'s {entry.name} ({path})")
    return dataclasses.replace(resolved, source=source, preprocessing=entry.preprocessing)


def _slim(model_name: str, weights) -> Weights:
    conventions = slim_conventions(model_name)
    return Weights("slim", "slim", conventions.num_classes, conventions.eval_preprocessing(),
                   f"slim's weights {weights!r}", weights=weights, model_name=model_name)


def _from_file(model_name: str, weights) -> Weights:
    """A URL or a path: downloaded once into the cache (a URL), then read by its contents."""
    path = source_file(weights)
    if path is None:
        return _slim(model_name, weights)  # slim's tarballs, checkpoints and dirs
    return _read(model_name, path, repr(os.fspath(weights)))


def _weights(mapped: Mapped, what: str, path: str) -> Weights:
    return Weights(mapped.source, mapped.layout, mapped.num_classes, mapped.preprocessing,
                   f"weights {what}", mapped.arrays, path=path)


def source_file(weights) -> str | None:
    """The local file of `weights` (a URL or a path) in a source's format: a local file by its
    contents (or its name), a URL by its name, downloaded once into the cache; None for slim's
    tarballs, checkpoints and dirs."""
    weights = os.fspath(weights)
    if urllib.parse.urlparse(weights).scheme not in ("http", "https", "ftp"):
        if os.path.isfile(weights) and (file_kind(weights) is not None or
                                        weights.endswith(SOURCE_SUFFIXES)):
            return weights  # (`_read` names what it is not)
        if weights.endswith(SOURCE_SUFFIXES) and not os.path.isfile(weights):
            raise MissingPathError(f"weights={weights!r} is not an existing file")
        return None
    name = os.path.basename(urllib.parse.urlparse(weights).path) or "weights"
    if not name.endswith(SOURCE_SUFFIXES):
        return None  # a slim tarball or checkpoint file
    # Cached under the URL's hash too: many hubs name every file alike (model.safetensors).
    digest = hashlib.sha256(weights.encode()).hexdigest()[:12]
    return fetch(weights, f"url-{digest}-{name}")[0]


def _read(model_name: str, path: str, what: str) -> Weights:
    kind = file_kind(path)
    if kind == "hdf5":
        return _weights(from_keras(model_name, read_keras_h5(path, what), what), what, path)
    if kind in ("safetensors", "torch"):
        state = (read_safetensors if kind == "safetensors" else read_torch)(path, what)
        return _weights(from_torch(model_name, state, what, "timm" if kind == "safetensors"
                                   else "torchvision"), what, path)
    if kind == "npz":
        return _weights(from_bit_npz(model_name, read_npz(path, what), what), what, path)
    raise UserError(f"weights {what} is neither a keras.applications .h5 file, a torchvision "
                    ".pth file, a timm .safetensors file nor a Big Transfer .npz file (its "
                    f"first bytes are {open(path, 'rb').read(8)!r})")


# --------------------------------------------------------------------------------------------
# Loading


def assign_strictly(model, arrays: dict, what: str, exclude=()) -> list:
    """Assigns `arrays` (slim names below the model's scope) to the model's variables: all of
    them or none, every array used, shapes equal; a `UserError` names what does not fit.
    `exclude`: scopes left out on both sides (e.g. ["logits"] for a new head)."""
    from resnet_tf.slim.variables import slim_variables

    scope = model.name
    skipped = tuple(f"{e.strip('/')}/" for e in exclude)
    targets = {name[len(scope) + 1:]: variable
               for name, variable in slim_variables(model, scope).items()
               if not name[len(scope) + 1:].startswith(skipped)}
    arrays = {name: value for name, value in arrays.items() if not name.startswith(skipped)}
    missing = sorted(set(targets) - set(arrays))
    unused = sorted(set(arrays) - set(targets))
    misshapen = [f"{name} (file {tuple(arrays[name].shape)}, model "
                 f"{tuple(targets[name].shape)})" for name in sorted(set(targets) & set(arrays))
                 if tuple(arrays[name].shape) != tuple(targets[name].shape)]
    if missing or unused or misshapen:
        problems = [f"{len(items)} {kind}: {', '.join(items[:5])}" for kind, items in (
            ("missing from the file", missing), ("in the file but not in the model", unused),
            ("with another shape", misshapen)) if items]
        raise UserError(f"{what} do not fit model {model.name!r}: " + "; ".join(problems)
                        + ". No weight was changed.")
    for name, variable in targets.items():
        variable.assign(np.asarray(arrays[name]).astype(variable.dtype))
    return sorted(targets)
