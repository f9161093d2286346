"""slim's released ImageNet weights in one call: `resnet_v2_50(weights="imagenet")`.

research/slim released these ResNet checkpoints (its "Pre-trained Models" table), each a tarball
`http://download.tensorflow.org/models/<release>.tar.gz` holding one legacy single-file
checkpoint `<model>.ckpt` (V2 releases also `eval.graph` and `train.graph`):

    resnet_v1_50/101/152   *_2016_08_28   1000 classes   VGG preprocessing, 224 px
    resnet_v2_50/101/152   *_2017_04_14   1001 classes   Inception preprocessing, 299 px
                                                         (class 0 = background)

`weights` is None (random init), "imagenet" (that release), a URL (a release-style tarball or a
checkpoint file) or a local path (a tarball, a checkpoint prefix or single-file checkpoint, or a
dir holding one). Downloads go through `keras.utils.get_file` into `$KERAS_HOME/resnet_tf/`
(default `~/.keras/resnet_tf/`) and are unpacked beside it once; later calls use the cache and
need no network. An archive that cannot be unpacked (an interrupted or corrupt download) is
removed from the cache, downloaded once more, and refused if that fails too, so the next call
starts afresh. Loading goes through `load_slim_checkpoint`: strict (every variable, by name and
shape) and atomic (nothing is assigned unless everything is read).

TensorFlow (checkpoint reading) and Keras (downloads) only; the builders import this module only
when `weights` is given.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tarfile
import tempfile
import urllib.parse

CACHE_SUBDIR = "resnet_tf"
URL = "http://download.tensorflow.org/models/{release}.tar.gz"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


@dataclasses.dataclass(frozen=True)
class Release:
    """One of slim's released checkpoints and what it expects."""

    model: str
    release: str
    num_classes: int
    preprocessing: str  # "inception" | "vgg"
    image_size: int

    @property
    def url(self) -> str:
        return URL.format(release=self.release)

    @property
    def checkpoint_name(self) -> str:
        return f"{self.model}.ckpt"


RELEASES = {
    **{f"resnet_v1_{d}": Release(f"resnet_v1_{d}", f"resnet_v1_{d}_2016_08_28", 1000, "vgg", 224)
       for d in (50, 101, 152)},
    **{f"resnet_v2_{d}": Release(f"resnet_v2_{d}", f"resnet_v2_{d}_2017_04_14", 1001,
                                 "inception", 299) for d in (50, 101, 152)},
}


def release_of(model_name: str) -> Release:
    if model_name not in RELEASES:
        raise ValueError(f"slim released no ImageNet weights for {model_name}; "
                         f"weights='imagenet' is available for {sorted(RELEASES)} (pass "
                         "weights=URL or PATH for a checkpoint of your own)")
    return RELEASES[model_name]


def check_weights_arguments(model_name: str, weights, num_classes) -> None:
    """Before a model is built or anything downloaded: `num_classes` must fit the release."""
    if weights is None:
        return
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(f"weights must be None, 'imagenet', a URL or a path. "
                         f"Received: weights={weights!r}")
    if weights == "imagenet":
        release = release_of(model_name)
        if num_classes not in (None, release.num_classes):
            raise ValueError(
                f"weights='imagenet' for {model_name} is slim's {release.release} release, "
                f"with {release.num_classes} classes; num_classes must be "
                f"{release.num_classes} or None (no head). Received: num_classes={num_classes}")


def load_weights(model, weights, model_name: str | None = None) -> list[str]:
    """Loads `weights` ("imagenet", a URL or a path) into `model`, strictly; a model without
    a `logits` layer (num_classes=None) loads every variable but the head's. The checkpoint's
    variables are under the slim scope `model_name` (default: the model's name)."""
    from resnet_tf.slim_checkpoint import UnreadableCheckpoint, load_slim_checkpoint

    model_name = model_name or model.name
    has_head = any(layer.name == "logits" for layer in model.layers)
    exclude = () if has_head else ["logits"]
    with checkpoint_path(weights, model_name) as (checkpoint, cached_files):
        try:
            return load_slim_checkpoint(model, checkpoint, scope=model_name, exclude=exclude)
        except UnreadableCheckpoint as error:
            for path in cached_files:  # a corrupt download never stays in the cache
                shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else \
                    os.remove(path)
            if cached_files:
                raise UnreadableCheckpoint(f"{error} It was removed from the cache ("
                                           f"{cache_dir()}), so the next call downloads it "
                                           "again.") from None
            raise


@contextlib.contextmanager
def checkpoint_path(weights, model_name: str):
    """Yields (the local checkpoint `weights` names, the cache entries it came from),
    downloading and unpacking it when needed; a local tarball is unpacked into a temporary dir
    for the duration."""
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
        raise FileNotFoundError(f"weights={weights!r} is neither 'imagenet', a URL nor an "
                                "existing file or directory")
    if os.path.isfile(weights) and weights.endswith(ARCHIVE_SUFFIXES):
        with tempfile.TemporaryDirectory(prefix="resnet-tf-weights-") as directory:
            try:
                _extract(weights, directory)
            except (tarfile.TarError, EOFError, OSError) as error:
                raise ValueError(f"weights={weights!r} cannot be unpacked as a checkpoint "
                                 f"tarball ({_reason(error)})") from None
            yield find_checkpoint(directory, f"{model_name}.ckpt", weights), []
        return
    yield weights, []


def download(model_name: str) -> str:
    """Fills the cache with slim's release for `model_name` (`resnet-tf download`) and returns
    the checkpoint's path."""
    from resnet_tf.slim_checkpoint import UnreadableCheckpoint, read_checkpoint_shapes

    release = release_of(model_name)
    path, cached = _from_url(release.url, f"{release.release}.tar.gz", release.checkpoint_name)
    try:
        read_checkpoint_shapes(path)
    except UnreadableCheckpoint:
        for entry in cached:
            shutil.rmtree(entry, ignore_errors=True) if os.path.isdir(entry) else os.remove(entry)
        raise
    return path


def cache_root() -> str:
    """`$KERAS_HOME` (default `~/.keras`), where `keras.utils.get_file` caches."""
    import keras

    return os.path.expanduser(keras.config.keras_home())


def cache_dir() -> str:
    return os.path.join(cache_root(), CACHE_SUBDIR)


def _from_url(url: str, fname: str, checkpoint_name: str):
    """(checkpoint path, its cache entries) for a download, cached under `fname`."""
    import keras

    cached = os.path.join(cache_dir(), fname)
    os.makedirs(cache_dir(), exist_ok=True)  # get_file falls back to /tmp for a missing dir
    for attempt in (1, 2):
        fresh = not os.path.exists(cached)
        try:
            path = keras.utils.get_file(fname=fname, origin=url, cache_dir=cache_root(),
                                        cache_subdir=CACHE_SUBDIR)
        except Exception as error:  # noqa: BLE001  (get_file raises plain Exception)
            raise ValueError(
                f"Could not download {url} ({_reason(error)}). On a machine without network "
                f"access, download it elsewhere and place it at {cached} (or pass "
                "weights=PATH to the file)") from None
        if not fname.endswith(ARCHIVE_SUFFIXES):
            return path, [path]  # a single checkpoint file
        unpacked = _strip_archive_suffix(path)
        try:
            if not os.path.isdir(unpacked):
                _unpack_atomically(path, unpacked)
            return find_checkpoint(unpacked, checkpoint_name, url), [path, unpacked]
        except (tarfile.TarError, EOFError, OSError, ValueError) as error:
            os.remove(path)
            shutil.rmtree(unpacked, ignore_errors=True)
            if fresh or attempt == 2:
                raise ValueError(f"The download of {url} is incomplete or corrupt "
                                 f"({_reason(error)}); it was removed from the cache, so the "
                                 "next call downloads it again") from None
            # A cached archive that does not unpack (a download killed mid-way): once more.
    raise AssertionError("unreachable")


def _reason(error) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def _strip_archive_suffix(path: str) -> str:
    for suffix in ARCHIVE_SUFFIXES:
        if path.endswith(suffix):
            return path[: -len(suffix)]
    return path


def _extract(archive: str, directory: str) -> None:
    with tarfile.open(archive) as tar:
        tar.extractall(directory, filter="data")


def _unpack_atomically(archive: str, target: str) -> None:
    """Unpacks into a staging dir beside `target`, then one rename: `target` exists only
    complete."""
    staging = tempfile.mkdtemp(prefix=".unpack-", dir=os.path.dirname(target))
    try:
        _extract(archive, staging)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def find_checkpoint(directory: str, checkpoint_name: str, source: str) -> str:
    """The checkpoint in an unpacked release: `checkpoint_name` if present, else the only one
    (a single-file `.ckpt`, or the prefix of `.index` + `.data` files)."""
    found = []
    for root, _, files in os.walk(directory):
        for name in sorted(files):
            if name.endswith(".index"):
                found.append(os.path.join(root, name[: -len(".index")]))
            elif name.endswith(".ckpt"):
                found.append(os.path.join(root, name))
    preferred = [p for p in found if os.path.basename(p) == checkpoint_name]
    if preferred or len(found) == 1:
        return (preferred or found)[0]
    raise ValueError(f"{source} holds {'no' if not found else 'several'} checkpoints "
                     f"({', '.join(os.path.basename(p) for p in found) or 'none'}); expected "
                     f"{checkpoint_name}")
