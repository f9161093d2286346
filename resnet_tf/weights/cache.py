"""The download cache every weight source shares: files fetched once with
`keras.utils.get_file` into the directory Keras caches its own downloads in (`cache_root`:
`$KERAS_HOME`, default `~/.keras`, `/tmp/.keras` when that is not writable), under
`resnet_tf/`, tarballs unpacked beside the archive once, all under one lock so that processes
sharing a cache never race; later calls need no network.

A file already in the cache (downloaded earlier, or placed there by hand for a machine without
network) is checked against the hash the catalog knows before it is used: a mismatch is one
sentence naming the file and the hash it should have, and the file is left where it is (it may
be the user's). Standard library and Keras only.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tarfile
import tempfile

from resnet_tf.errors import UserError, one_line

CACHE_SUBDIR = "resnet_tf"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


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


def hash_matches(path: str, file_hash: str) -> bool:
    """Whether the file's digest is `file_hash`: an MD5 (32 hex digits, keras.applications'),
    a SHA-256 (64), or the first hex digits of the SHA-256 (torchvision's file names)."""
    digest = hashlib.md5() if len(file_hash) == 32 else hashlib.sha256()  # noqa: S324
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest().startswith(file_hash.lower())


def hash_name(file_hash: str) -> str:
    return {32: "MD5", 64: "SHA-256"}.get(len(file_hash), "SHA-256 beginning")


@contextlib.contextmanager
def cache_lock():
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


def fetch(url: str, fname: str, file_hash: str | None = None, former: str | None = None):
    """(path, its cache entries) of `url`, downloaded once into the cache under `fname`; a
    tarball's path is the folder it was unpacked into. A file already there is checked against
    `file_hash` (`hash_matches`) first and refused, not removed, when it differs; a fresh
    download that differs is removed and refused. `former`: the name an earlier version cached
    the file under, taken over."""
    import keras

    with cache_lock():
        cached = os.path.join(cache_dir(), fname)
        os.makedirs(cache_dir(), exist_ok=True)
        if former and not os.path.exists(cached) and os.path.isfile(
                os.path.join(cache_dir(), former)):  # the name an earlier version cached it as
            os.replace(os.path.join(cache_dir(), former), cached)
        for attempt in (1, 2):
            fresh = not os.path.exists(cached)
            if not fresh and file_hash and not hash_matches(cached, file_hash):
                raise UserError(f"The cached file {cached} is not {url} (a download cut short, "
                                f"or another file): its {hash_name(file_hash)} should be "
                                f"{file_hash}. It was left where it is; move it away (the next "
                                "call downloads the file again), or replace it with the real "
                                "one")
            try:
                path = keras.utils.get_file(fname=fname, origin=url, cache_dir=cache_root(),
                                            cache_subdir=CACHE_SUBDIR)
            except Exception as error:  # noqa: BLE001  (get_file raises plain Exception)
                raise UserError(
                    f"Could not download {url} ({one_line(error)}). On a machine without "
                    f"network access, download it elsewhere and place it at {cached} (or pass "
                    "weights=PATH to the file)") from None
            if fresh and file_hash and not hash_matches(path, file_hash):
                remove([path])
                raise UserError(f"The download of {url} is not the published file (its "
                                f"{hash_name(file_hash)} should be {file_hash}); it was "
                                "removed from the cache")
            if not fname.endswith(ARCHIVE_SUFFIXES):
                return path, [path]
            unpacked = _strip_archive_suffix(path)
            try:
                if not os.path.isdir(unpacked):
                    _unpack_atomically(path, unpacked)
            except (tarfile.TarError, EOFError, OSError) as error:
                remove([path, unpacked])
                if fresh or attempt == 2:
                    raise UserError(f"The download of {url} is incomplete or corrupt "
                                    f"({one_line(error)}); it was removed from the cache, so "
                                    "the next call downloads it again") from None
                # A cached archive that does not unpack (a download killed mid-way): once more.
                continue
            return unpacked, [path, unpacked]
    raise AssertionError("unreachable")


def remove(entries) -> None:
    for entry in entries:
        if os.path.isdir(entry):
            shutil.rmtree(entry, ignore_errors=True)
        elif os.path.exists(entry):
            os.remove(entry)


def _strip_archive_suffix(path: str) -> str:
    for suffix in ARCHIVE_SUFFIXES:
        if path.endswith(suffix):
            return path[: -len(suffix)]
    return path


def extract(archive: str, directory: str) -> None:
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
        extract(archive, staging)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
