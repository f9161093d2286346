"""Small helpers every part of resnet_tf shares: atomic file writes, argument checks, dtypes.

Keras and the standard library only (no TensorFlow), so the model code and `resnet-tf bench` on
the JAX backend can use them.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile

# The Keras dtype policies resnet_tf builds models under (configs, `--dtype`).
DTYPES = ("float32", "mixed_bfloat16", "mixed_float16")


# Set by the `resnet-tf` command unless --verbose: native libraries' start-up and progress
# messages (TensorFlow's, LiteRT's, the converters') are then kept off stderr.
QUIET_NATIVE_OUTPUT = False


@contextlib.contextmanager
def quiet_native_stderr():
    """While `QUIET_NATIVE_OUTPUT` is set, sends what native code writes to file descriptor 2
    to /dev/null (Python exceptions still carry their messages)."""
    import sys

    if not QUIET_NATIVE_OUTPUT:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


# How raw 0..255 RGB pixels become a model's input, by the preprocessing it was trained with:
# "inception" (slim's V2 checkpoints, resnet-tf train) scales to [-1, 1]; "vgg" (slim's V1
# checkpoints) subtracts the ImageNet RGB means, no scaling.
PREPROCESSINGS = ("inception", "vgg")
VGG_MEAN_RGB = (123.68, 116.78, 103.94)


def normalize_pixels(pixels, preprocessing: str = "inception"):
    """Raw float 0..255 pixels `[..., 3]` -> model input, with `keras.ops` (any backend, and
    inside a `tf.function` on TensorFlow). "inception" is exactly slim's `(x / 255 - 0.5) * 2`."""
    from keras import ops

    if preprocessing == "vgg":
        return ops.subtract(pixels, ops.cast(ops.convert_to_tensor(VGG_MEAN_RGB), pixels.dtype))
    if preprocessing != "inception":
        raise ValueError(f"preprocessing must be one of {list(PREPROCESSINGS)}. "
                         f"Received: preprocessing={preprocessing!r}")
    return ops.multiply(ops.subtract(ops.divide(pixels, 255.0), 0.5), 2.0)


def check_positive_int(name: str, value) -> None:
    """A `ValueError` naming `name` unless `value` is an int >= 1 (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer. Received: {name}={value!r}")


@contextlib.contextmanager
def dtype_policy_scope(policy: str):
    """Builds layers under a Keras dtype policy (e.g. "mixed_bfloat16"), then restores the old one."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


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
