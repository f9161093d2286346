"""slim's released ImageNet weights in one call: `resnet_v2_50(weights="imagenet")`, and any
slim checkpoint by URL or path, loaded by slim's variable names.

research/slim released these ResNet checkpoints (its "Pre-trained Models" table), each a tarball
`http://download.tensorflow.org/models/<release>.tar.gz` holding one legacy single-file
checkpoint `<model>.ckpt` (V2 releases also `eval.graph` and `train.graph`):

    resnet_v1_50/101/152   *_2016_08_28   1000 classes   VGG preprocessing, 224 px
    resnet_v2_50/101/152   *_2017_04_14   1001 classes   Inception preprocessing, 299 px
                                                         (class 0 = background)

Their rows are in `weights.catalog` (beside the other sources'); any slim checkpoint of a
family follows its family's conventions (`catalog.slim_conventions`).

`weights` is None (random init), "imagenet" (that release), a URL (a release-style tarball or a
checkpoint file) or a local path (a tarball, a checkpoint prefix or file, or a dir holding one).
Downloads go through the cache (`weights.cache`: Keras' cache directory, unpacked once, under
a lock). An archive that cannot be unpacked (an interrupted or corrupt download) is removed
from the cache, downloaded once more, and refused if that fails too. Loading goes through
`load_slim_checkpoint`: strict (every variable, by name and shape) and atomic (nothing is
assigned unless everything is read).

Keras (downloads) and TensorFlow (checkpoints, when a checkpoint is read); the dispatcher
(`weights.sources`) imports this module when slim's weights are loaded.
"""

from __future__ import annotations

import contextlib
import os
import tarfile
import tempfile
import urllib.parse

from resnet_tf.errors import MissingPathError, UserError, one_line
from resnet_tf.weights.cache import ARCHIVE_SUFFIXES, cache_dir, extract, fetch, remove
from resnet_tf.weights.catalog import Published, published


def check_weights_arguments(model_name: str, weights, num_classes) -> None:
    """Before a model is built or anything downloaded: `num_classes` must fit the release."""
    if weights is None:
        return
    if not isinstance(weights, (str, os.PathLike)):
        raise UserError(f"weights must be None, 'imagenet', a URL or a path. "
                        f"Received: weights={weights!r}")
    if weights == "imagenet":
        release = published("imagenet", model_name)
        expected = release.num_classes
        if num_classes not in (None, expected):
            raise UserError(
                f"weights='imagenet' for {model_name} is slim's {release.name} release, "
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
        release = published("imagenet", model_name)
        yield _from_url(release.url, release.fname, f"{model_name}.ckpt")
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
                                f"tarball ({one_line(error)})") from None
            yield find_checkpoint(directory, f"{model_name}.ckpt", weights), []
        return
    yield weights, []


def download_release(release: Published) -> str:
    """Fills the cache with one of slim's releases (a catalog row) and returns its checkpoint's
    path, checked readable."""
    from resnet_tf.slim.checkpoint import UnreadableCheckpoint, read_checkpoint_shapes

    path, cached = _from_url(release.url, release.fname, f"{release.model}.ckpt")
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
