"""slim's released ImageNet weights in one call: `resnet_v2_50(weights="imagenet")`, and the
facts of slim's releases that every other module asks here.

research/slim released these ResNet checkpoints (its "Pre-trained Models" table), each a tarball
`http://download.tensorflow.org/models/<release>.tar.gz` holding one legacy single-file
checkpoint `<model>.ckpt` (V2 releases also `eval.graph` and `train.graph`):

    resnet_v1_50/101/152   *_2016_08_28   1000 classes   VGG preprocessing, 224 px
    resnet_v2_50/101/152   *_2017_04_14   1001 classes   Inception preprocessing, 299 px
                                                         (class 0 = background)

Any slim checkpoint of a family follows its family's conventions (`slim_conventions`).

`weights` is None (random init), "imagenet" (that release), a URL (a release-style tarball or a
checkpoint file) or a local path (a tarball, a checkpoint prefix or file, or a dir holding one).
Downloads go through the cache (`weights.cache`: Keras' cache directory, unpacked once, under
a lock). An archive that cannot be unpacked (an interrupted or corrupt download) is removed
from the cache, downloaded once more, and refused if that fails too. Loading goes through `load_slim_checkpoint`: strict (every variable, by name
and shape) and atomic (nothing is assigned unless everything is read).

Keras (downloads) and TensorFlow (checkpoints, when a checkpoint is read); the builders import
this module only when `weights` is given.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tarfile
import tempfile
import urllib.parse

from resnet_tf.data.pixels import EvalPreprocessing
from resnet_tf.errors import MissingPathError, UserError
from resnet_tf.weights.cache import ARCHIVE_SUFFIXES, cache_dir, extract, fetch, reason, remove

URL = "http://download.tensorflow.org/models/{release}.tar.gz"


@dataclasses.dataclass(frozen=True)
class SlimConventions:
    """What a slim checkpoint of a family expects: its classes and its eval preprocessing."""

    num_classes: int
    preprocessing: str  # "inception" | "vgg"
    image_size: int

    def eval_preprocessing(self, image_size=None) -> EvalPreprocessing:
        return EvalPreprocessing(self.preprocessing, image_size or self.image_size)


FAMILIES = {
    "resnet_v1": SlimConventions(1000, "vgg", 224),
    "resnet_v2": SlimConventions(1001, "inception", 299),
}


def slim_conventions(model_name: str) -> SlimConventions:
    """The conventions of slim's checkpoints for `model_name` (its family's)."""
    for family, conventions in FAMILIES.items():
        if model_name.startswith(family + "_"):
            return conventions
    raise UserError(f"slim released no checkpoints of {model_name!r}'s family; slim "
                    f"checkpoints are {sorted(FAMILIES)} models")


@dataclasses.dataclass(frozen=True)
class Release:
    """One of slim's released checkpoints."""

    model: str
    release: str

    @property
    def conventions(self) -> SlimConventions:
        return slim_conventions(self.model)

    @property
    def url(self) -> str:
        return URL.format(release=self.release)

    @property
    def checkpoint_name(self) -> str:
        return f"{self.model}.ckpt"


RELEASES = {
    **{f"resnet_v1_{d}": Release(f"resnet_v1_{d}", f"resnet_v1_{d}_2016_08_28")
       for d in (50, 101, 152)},
    **{f"resnet_v2_{d}": Release(f"resnet_v2_{d}", f"resnet_v2_{d}_2017_04_14")
       for d in (50, 101, 152)},
}


def release_of(model_name: str) -> Release:
    if model_name not in RELEASES:
        raise UserError(f"slim released no ImageNet weights for {model_name}; "
                        f"weights='imagenet' is available for {sorted(RELEASES)} (pass "
                        "weights=URL or PATH for a checkpoint of your own)")
    return RELEASES[model_name]


def check_weights_arguments(model_name: str, weights, num_classes) -> None:
    """Before a model is built or anything downloaded: `num_classes` must fit the release."""
    if weights is None:
        return
    if not isinstance(weights, (str, os.PathLike)):
        raise UserError(f"weights must be None, 'imagenet', a URL or a path. "
                        f"Received: weights={weights!r}")
    if weights == "imagenet":
        release = release_of(model_name)
        expected = release.conventions.num_classes
        if num_classes not in (None, expected):
            raise UserError(
                f"weights='imagenet' for {model_name} is slim's {release.release} release, "
                f"with {expected} classes; num_classes must be {expected} or None (no head). "
                f"Received: num_classes={num_classes}")


def load_weights(model, weights, model_name: str | None = None) -> list[str]:
    """Loads `weights` ("imagenet", a URL or a path) into `model`, strictly; a model without
    a `logits` layer (num_classes=None) loads every variable but the head's. The checkpoint's
    variables are under the slim scope `model_name` (default: the model's name)."""
    from resnet_tf.slim.checkpoint import UnreadableCheckpoint, load_slim_checkpoint

    model_name = model_name or model.name
    has_head = any(layer.name == "logits" for layer in model.layers)
    exclude = () if has_head else ["logits"]
    with checkpoint_path(weights, model_name) as (checkpoint, cached_files):
        try:
            return load_slim_checkpoint(model, checkpoint, scope=model_name, exclude=exclude)
        except UnreadableCheckpoint as error:
            if cached_files:  # a corrupt download never stays in the cache
                remove(cached_files)
                raise UnreadableCheckpoint(f"{error} It was removed from the cache ("
                                           f"{cache_dir()}), so the next call downloads it "
                                           "again.") from None
            raise


@contextlib.contextmanager
def checkpoint_path(weights, model_name: str):
    """Yields (the local checkpoint `weights` names, the cache entries it came from),
    downloading and unpacking it when needed; a local tarball is unpacked into a temporary dir
    for the duration."""
    from resnet_tf.slim.checkpoint import find_checkpoint

    weights = os.fspath(weights)
    if weights == "imagenet":
        release = release_of(model_name)
        yield _from_url(release.url, f"{release.release}.tar.gz", release.checkpoint_name)
        return
    if urllib.parse.urlparse(weights).scheme in ("http", "https", "ftp"):
        name = os.path.basename(urllib.parse.urlparse(weights).path) or "weights"
        yield _from_url(weights, name, f"{model_name}.ckpt")
        return
    if not os.path.exists(weights) and not os.path.exists(weights + ".index"):
        raise MissingPathError(f"weights={weights!r} is neither 'imagenet', a URL nor an "
                               "existing file or directory")
    if os.path.isfile(weights) and weights.endswith(ARCHIVE_SUFFIXES):
        with tempfile.TemporaryDirectory(prefix="resnet-tf-weights-") as directory:
            try:
                extract(weights, directory)
            except (tarfile.TarError, EOFError, OSError) as error:
                raise UserError(f"weights={weights!r} cannot be unpacked as a checkpoint "
                                f"tarball ({reason(error)})") from None
            yield find_checkpoint(directory, f"{model_name}.ckpt", weights), []
        return
    yield weights, []


def download(model_name: str) -> str:
    """Fills the cache with slim's release for `model_name` (`resnet-tf download`) and returns
    the checkpoint's path."""
    from resnet_tf.slim.checkpoint import UnreadableCheckpoint, read_checkpoint_shapes

    release = release_of(model_name)
    path, cached = _from_url(release.url, f"{release.release}.tar.gz", release.checkpoint_name)
    try:
        read_checkpoint_shapes(path)
    except UnreadableCheckpoint:
        remove(cached)
        raise
    return path


def _from_url(url: str, fname: str, checkpoint_name: str):
    """(checkpoint path, its cache entries) of a download cached under `fname`: the
    checkpoint file itself, or the one inside an unpacked tarball."""
    from resnet_tf.slim.checkpoint import find_checkpoint

    path, entries = fetch(url, fname)
    if not fname.endswith(ARCHIVE_SUFFIXES):
        return path, entries  # a single checkpoint file
    # A whole archive: one with other checkpoints in it is said so, and kept.
    return find_checkpoint(path, checkpoint_name, url), entries
