"""What every part of resnet_tf shares: atomic file writes, class-name files, argument checks.

Standard library only (no Keras, no TensorFlow), so the model code, the command line's `--help`
and `resnet-tf bench` on the JAX backend can use it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile

from resnet_tf.errors import MissingPathError, UserError

# The process's umask, read once (reading it means setting it, which other threads would see).
_UMASK = os.umask(0)
os.umask(_UMASK)


def check_positive_int(name: str, value) -> None:
    """A `UserError` naming `name` unless `value` is an int >= 1 (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{name} must be a positive integer. Received: {name}={value!r}")


@contextlib.contextmanager
def atomic_path(path, suffix: str = ".tmp"):
    """Yields a temporary path beside `path` (ending in `suffix`, for writers that insist on
    one); on success it replaces `path` (one rename), on failure it is removed. A reader sees
    the old file or the new one, never a torn one."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=suffix,
                                         dir=directory)
    os.close(handle)
    try:
        yield temporary
        with open(temporary, "rb") as f:  # flush the data to disk before the rename
            os.fsync(f.fileno())
        os.chmod(temporary, 0o666 & ~_UMASK)  # as open() would make it, not mkstemp's 0600
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise


def write_text(path, text: str) -> None:
    """Writes `text` to `path` whole or not at all."""
    with atomic_path(path) as temporary:
        with open(temporary, "w") as f:
            f.write(text)


def write_json(value, path) -> None:
    """Writes `value` as JSON to `path` whole or not at all: an earlier file survives a failure."""
    text = json.dumps(value, indent=2)  # fails before anything is written
    write_text(path, text + "\n")


def read_json(path, what: str = "file"):
    """The JSON value in `path`; a `UserError` naming the file if it is not JSON."""
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError as error:
        raise UserError(f"The {what} {os.fspath(path)!r} is not valid JSON ({error})") from None


def sha256_of_files(paths) -> str:
    """One SHA-256 over the contents of `paths`, in order (read in chunks)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


# class_names.txt (model dirs, export dirs): one name per line, line i names class i.


def write_class_names(path, names) -> None:
    write_text(path, "".join(f"{name}\n" for name in names))


def read_class_names(path) -> list:
    if not os.path.isfile(path):
        raise MissingPathError(f"No class-names file at {os.fspath(path)!r}")
    with open(path) as f:
        names = [line.rstrip("\n") for line in f]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise UserError(f"The class-names file {os.fspath(path)!r} is empty")
    return names


def require_tensorflow_backend(what: str) -> None:
    """A `UserError` naming `what` unless Keras runs on TensorFlow (converters, SavedModels)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        raise UserError(f"{what} needs the TensorFlow backend (its converters and SavedModels "
                        f"are TensorFlow's); run it with KERAS_BACKEND=tensorflow. Received: "
                        f"KERAS_BACKEND={keras.backend.backend()}")
