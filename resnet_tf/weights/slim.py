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
Downloads go through `keras.utils.get_file` into the directory Keras caches its own downloads in
(`cache_root`: `$KERAS_HOME`, default `~/.keras`, `/tmp/.keras` when that is not writable), under
`resnet_tf/`, and are unpacked beside the archive once, under a lock, so processes sharing a
cache never race; later calls need no network. An archive that cannot be unpacked (an
interrupted or corrupt download) is removed from the cache, downloaded once more, and refused if
that fails too. Loading goes through `load_slim_checkpoint`: strict (every variable, by name
and shape) and atomic (nothing is assigned unless everything is read).

Keras (downloads) and TensorFlow (checkpoints, when a checkpoint is read); the builders import
this module only when `weights` is given.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tarfile
import tempfile
import urllib.parse

from resnet_tf.data.pixels import EvalPreprocessing
from resnet_tf.errors import MissingPathError, UserError

CACHE_SUBDIR = "resnet_tf"
URL = "http://download.tensorflow.org/models/{release}.tar.gz"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


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
                _remove(cached_files)
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
                _extract(weights, directory)
            except (tarfile.TarError, EOFError, OSError) as error:
                raise UserError(f"weights={weights!r} cannot be unpacked as a checkpoint "
                                f"tarball ({_reason(error)})") from None
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
        _remove(cached)
        raise
    return path


def cache_root() -> str:
    """Where `keras.utils.get_file` caches downloads: `$KERAS_HOME`, by default `~/.keras`
    (`/tmp/.keras` when the home directory is not writable), and `/tmp/.keras` when the chosen
    directory is not writable. Keras keeps its own resolver private; this is the same rule."""
    if "KERAS_HOME" in os.environ:
        root = os.environ["KERAS_HOME"]
    else:
        home = os.path.expanduser("~")
        root = os.path.join(home if os.access(home, os.W_OK) else "/tmp", ".keras")
    root = os.path.expanduser(root)
    with contextlib.suppress(OSError):
        os.makedirs(root, exist_ok=True)
    if not os.access(root, os.W_OK):
        root = os.path.join("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir(), ".keras")
    return root


def cache_dir() -> str:
    return os.path.join(cache_root(), CACHE_SUBDIR)


@contextlib.contextmanager
def _cache_lock():
    """One process at a time downloads and unpacks into the cache (POSIX advisory lock)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    os.makedirs(cache_root(), exist_ok=True)
    with open(os.path.join(cache_root(), f"{CACHE_SUBDIR}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def cached_download(url: str, fname: str, file_hash: str | None = None):
    """(path, its cache entries) of a single file downloaded once into the cache under
    `fname` (weights of other sources: `weights.sources`), checked against `file_hash` (MD5
    or SHA-256) where given; the same lock and offline sentence as slim's releases."""
    return _from_url(url, fname, None, file_hash)


def _from_url(url: str, fname: str, checkpoint_name: str | None, file_hash=None):
    """(checkpoint path, its cache entries) for a download, cached under `fname`."""
    import keras

    from resnet_tf.slim.checkpoint import find_checkpoint

    with _cache_lock():
        cached = os.path.join(cache_dir(), fname)
        os.makedirs(cache_dir(), exist_ok=True)
        for attempt in (1, 2):
            fresh = not os.path.exists(cached)
            try:
                path = keras.utils.get_file(fname=fname, origin=url, cache_dir=cache_root(),
                                            cache_subdir=CACHE_SUBDIR, file_hash=file_hash)
            except Exception as error:  # noqa: BLE001  (get_file raises plain Exception)
                raise UserError(
                    f"Could not download {url} ({_reason(error)}). On a machine without "
                    f"network access, download it elsewhere and place it at {cached} (or pass "
                    "weights=PATH to the file)") from None
            if not fname.endswith(ARCHIVE_SUFFIXES):
                return path, [path]  # a single checkpoint file
            unpacked = _strip_archive_suffix(path)
            try:
                if not os.path.isdir(unpacked):
                    _unpack_atomically(path, unpacked)
            except (tarfile.TarError, EOFError, OSError) as error:
                _remove([path, unpacked])
                if fresh or attempt == 2:
                    raise UserError(f"The download of {url} is incomplete or corrupt "
                                    f"({_reason(error)}); it was removed from the cache, so "
                                    "the next call downloads it again") from None
                # A cached archive that does not unpack (a download killed mid-way): once more.
                continue
            # A whole archive: one with other checkpoints in it is said so, and kept.
            return find_checkpoint(unpacked, checkpoint_name, url), [path, unpacked]
    raise AssertionError("unreachable")


def _remove(entries) -> None:
    for entry in entries:
        if os.path.isdir(entry):
            shutil.rmtree(entry, ignore_errors=True)
        elif os.path.exists(entry):
            os.remove(entry)


def _reason(error) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def _strip_archive_suffix(path: str) -> str:
    for suffix in ARCHIVE_SUFFIXES:
        if path.endswith(suffix):
            return path[: -len(suffix)]
    return path


def _extract(archive: str, directory: str) -> None:
    """Unpacks the regular files and folders of a checkpoint tarball into `directory`. A
    member that would land outside it (an absolute path, `..`) is refused; links and devices
    are left out (a checkpoint has none). Python's `filter="data"` (3.10.12+, 3.11.4+) checks
    the same where it exists."""
    with tarfile.open(archive) as tar:
        members = []
        for member in tar.getmembers():
            name = os.path.normpath(member.name)
            if os.path.isabs(name) or name == ".." or name.startswith(".." + os.sep):
                raise tarfile.TarError(f"the member {member.name!r} would be written outside "
                                       "the cache")
            if member.isfile() or member.isdir():
                members.append(member)
        extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(directory, members=members, **extra)


def _unpack_atomically(archive: str, target: str) -> None:
    """Unpacks into a staging dir beside `target`, then one rename: `target` exists only
    complete."""
    staging = tempfile.mkdtemp(prefix=".unpack-", dir=os.path.dirname(target))
    try:
        _extract(archive, staging)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
