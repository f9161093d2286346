"""Weight files as the sources write them, read into NumPy: keras.applications' legacy `.h5`,
timm's safetensors, PyTorch's `.pth` and Big Transfer's `.npz` (NumPy's zip of arrays), each
recognised by its bytes (`file_kind`), not its name. A reader gives {name: array} (Keras
`.h5`: {layer: [arrays]}) or one sentence that names the file."""

from __future__ import annotations

import os
import zipfile

import numpy as np

from resnet_tf.errors import UserError, torn_file


def file_kind(path: str) -> str | None:
    """"hdf5", "safetensors", "torch" (PyTorch's zip or legacy pickle), "npz" (a zip of `.npy`
    arrays only: NumPy's `savez`, as Google's BiT files are) or None, from the bytes."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "hdf5"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError):  # torn: its reader names what is wrong with it
            return "npz" if path.endswith(".npz") else "torch"
        return "npz" if names and all(n.endswith(".npy") for n in names) else "torch"
    if len(head) >= 9 and head[8:9] == b"{":  # a little-endian header size, then its JSON
        size = int.from_bytes(head[:8], "little")
        if 2 <= size <= os.path.getsize(path) - 8:
            with open(path, "rb") as f:
                f.seek(8 + size - 1)
                if f.read(1) in (b"}", b" "):  # the JSON header ends there (space-padded)
                    return "safetensors"
    if head[:1] == b"\x80":  # PyTorch's legacy (pickle) format
        return "torch"
    return None


def read_safetensors(path: str, what: str) -> dict:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as error:
        raise torn_file(what, ".safetensors", error) from None


def read_npz(path: str, what: str) -> dict:
    """{name: array} of NumPy's `.npz` (arrays only: a pickled object is refused, not run)."""
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return {name: arrays[name] for name in arrays.files}
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise UserError(f"weights {what} is an .npz file holding pickled Python objects, "
                            "not only arrays; resnet_tf does not unpickle them") from None
        raise torn_file(what, ".npz", error) from None
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise torn_file(what, ".npz", error) from None


def read_torch(path: str, what: str) -> dict:
    """A `.pth` state dict, read without PyTorch (`torch_files`: only tensors, no code runs)."""
    from resnet_tf.weights.torch_files import read_torch_file

    return read_torch_file(path, what)


def read_keras_h5(path: str, what: str) -> dict:
    """{layer name: [arrays in the layer's weight order]} of a legacy Keras `.h5` (weights, or a
    whole model's `model_weights`)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            group = f["model_weights"] if "model_weights" in f else f
            if "layer_names" not in group.attrs:
                raise UserError(f"weights {what} is an HDF5 file but not a Keras .h5 weights "
                                "file (no layer_names)")
            layers = {}
            for layer in group.attrs["layer_names"]:
                layer = layer.decode() if isinstance(layer, bytes) else layer
                names = [n.decode() if isinstance(n, bytes) else n
                         for n in group[layer].attrs.get("weight_names", [])]
                if names:
                    layers[layer] = [np.asarray(group[layer][n]) for n in names]
            return layers
    except OSError as error:
        raise UserError(f"weights {what} cannot be read as HDF5 ({error})") from None
