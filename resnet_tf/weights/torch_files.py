"""PyTorch's `.pth` state dicts read into NumPy without PyTorch, and without running code.

A `.pth` written by `torch.save(state_dict, path)` is a pickle whose objects are rebuilt from
raw storages: since PyTorch 1.6 a zip (`<name>/data.pkl`, one file per storage under
`<name>/data/`, `<name>/byteorder`), before that the legacy format (a magic number, the
protocol, the system info, the pickle, the list of storage keys, then each storage as a
little-endian element count and its bytes). The pickle names a few globals: the tensor rebuild
functions, the storage types, `collections.OrderedDict`. `torch.load(weights_only=True)` accepts
a list of such globals; `read_torch_file` accepts the part of it a state dict needs and nothing
else (`ALLOWED`), so a file that names any other global (a pickled whole model, a callable) is
refused before anything of it runs. What the file says is checked before it is trusted: the
legacy magic number is compared as bytes, storages' sizes against the file, tensors' views
against their storages, and zip records must be stored (PyTorch never compresses them).

Training checkpoints that wrap a state dict (`{"model": state_dict, "epoch": 3, ...}`, as
torchvision's reference `train.py` writes them) give the wrapped state dict (`WRAPPERS`), and
say which key they used.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile

import numpy as np

from resnet_tf.errors import UserError, torn_file

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
# What a legacy file begins with: the magic number pickled (protocol 2, a 10-byte LONG1).
LEGACY_HEAD = b"\x80\x02\x8a\x0a" + LEGACY_MAGIC.to_bytes(10, "little") + b"."
# storage type -> NumPy dtype (bfloat16 is read as its 16 bits, then widened to float32).
STORAGES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
            "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
            "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
            "BoolStorage": np.bool_}
# How many times its storage's elements a tensor viewing it may hold (overlapping views).
VIEW_LIMIT = 16
# The keys under which training checkpoints keep a model's state dict, most wanted first.
WRAPPERS = ("model_ema", "state_dict_ema", "state_dict", "model")


class _Storage:
    def __init__(self, dtype, key):
        self.dtype, self.key, self.array = dtype, key, None


class _Tensor:
    """A tensor to build once its storage is read: storage, offset, size and stride in
    elements (`torch._utils._rebuild_tensor_v2`'s arguments)."""

    def __init__(self, storage, offset, size, stride, *_):
        numbers = [offset, *size, *stride]
        if not (isinstance(storage, _Storage) and len(size) == len(stride) and all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in numbers)):
            raise ValueError("a tensor with a malformed storage, offset, size or stride")
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), stride

    def array(self) -> np.ndarray:
        """The tensor's elements, copied out of its storage; a view that reaches past the
        storage, or holds more than `VIEW_LIMIT` times its elements (stride 0), is refused."""
        data = self.storage.array
        count = int(np.prod(self.size, dtype=np.int64)) if self.size else 1
        if count == 0:
            return np.zeros(self.size, data.dtype)
        end = self.offset + 1 + sum((n - 1) * s for n, s in zip(self.size, self.stride))
        # Views may overlap (as_strided), but one far larger than its storage is a bomb
        # (stride 0 over a huge size), not weights.
        if end > len(data) or count > VIEW_LIMIT * len(data):
            raise ValueError(f"a tensor of {count} elements reaching element {end} of a "
                             f"storage of {len(data)}")
        strides = tuple(s * data.itemsize for s in self.stride)
        return np.lib.stride_tricks.as_strided(data[self.offset:], self.size, strides).copy()


def _parameter(tensor, *_):  # torch._utils._rebuild_parameter(data, requires_grad, hooks)
    return tensor


ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _Tensor,
    ("torch._utils", "_rebuild_parameter"): _parameter,
    **{("torch", name): name for name in STORAGES},
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, storage_of):
        super().__init__(file)
        self.storage_of = storage_of

    def find_class(self, module, name):
        if (module, name) not in ALLOWED:
            raise _Refused(f"{module}.{name}")
        return ALLOWED[(module, name)]

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise _Refused(f"a persistent object {pid!r:.60}")
        storage_type, key = pid[1], str(pid[2])
        if storage_type not in STORAGES:
            raise _Refused(f"torch.{storage_type}")
        if len(pid) > 5 and pid[5] is not None:  # the legacy format's storage views
            raise ValueError("a storage view (PyTorch before 1.0's format), which resnet_tf "
                             "does not read: save the state dict again with a newer PyTorch")
        return self.storage_of(STORAGES[storage_type], key)


class _Refused(Exception):
    """The pickle names a global outside `ALLOWED` (the argument): nothing of it ran."""


def read_torch_file(path: str, what: str) -> dict:
    """{name: array} of the state dict in the `.pth` at `path` (float tensors as float32); one
    sentence naming `what` for a file that is not one."""
    try:
        with open(path, "rb") as f:
            zipped = f.read(4) == b"PK\x03\x04"
        state = _state_dict(_read_zip(path) if zipped else _read_legacy(path), what)
    except _Refused as refused:
        name = str(refused)
        if name.startswith(("torch.nn.", "torchvision.", "timm.")) or "models" in name:
            raise UserError(f"weights {what} is a whole pickled model ({name}), not a state "
                            "dict; save its state dict instead (torch.save(model.state_dict(), "
                            "path)), or give the source's .safetensors file") from None
        raise UserError(f"weights {what} names {name}, which a state dict of tensors never "
                        "holds; resnet_tf reads only tensors from a .pth (as "
                        "torch.load(weights_only=True) does) and ran nothing of it") from None
    except (pickle.UnpicklingError, EOFError, ValueError, KeyError, IndexError, TypeError,
            AttributeError, zipfile.BadZipFile, OSError, MemoryError, OverflowError,
            RecursionError) as error:
        raise torn_file(what, "PyTorch .pth", error) from None
    return state


def _read_zip(path: str):
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise ValueError(f"{len(pickles)} data.pkl records in the zip")
        prefix = pickles[0][: -len("data.pkl")]
        for info in archive.infolist():  # PyTorch stores its records: no inflating bombs
            if info.compress_type != zipfile.ZIP_STORED or info.file_size > info.compress_size:
                raise ValueError(f"a compressed record {info.filename!r}, which PyTorch never "
                                 "writes")
        order = archive.read(prefix + "byteorder").decode() if (
            prefix + "byteorder") in names else "little"
        storages = {}

        def storage_of(dtype, key):
            if key not in storages:
                storages[key] = _Storage(dtype, key)
                storages[key].array = _array(archive.read(f"{prefix}data/{key}"), dtype, order)
            return storages[key]

        state = _Unpickler(io.BytesIO(archive.read(pickles[0])), storage_of).load()
    return _build(state)


def _read_legacy(path: str):
    with open(path, "rb") as f:
        if f.read(len(LEGACY_HEAD)) != LEGACY_HEAD:  # compared, not unpickled
            raise ValueError("neither a zip nor PyTorch's legacy format (no magic number)")
        for _ in range(2):  # the protocol version, the system info: plain ints and dicts
            _Unpickler(f, None).load()
        storages = {}

        def storage_of(dtype, key):
            return storages.setdefault(key, _Storage(dtype, key))

        state = _Unpickler(f, storage_of).load()
        keys = _Unpickler(f, None).load()
        left = os.fstat(f.fileno()).st_size - f.tell()
        for key in keys:
            storage = storages[str(key)]
            count = int.from_bytes(_exactly(f, 8), "little")
            itemsize = 2 if storage.dtype == "bfloat16" else np.dtype(storage.dtype).itemsize
            if count * itemsize > left:
                raise EOFError(f"a storage of {count} elements in {left} bytes")
            storage.array = _array(_exactly(f, count * itemsize), storage.dtype, "little")
            left -= 8 + count * itemsize
    return _build(state)


def _exactly(f, count: int) -> bytes:
    data = f.read(count)
    if len(data) != count:
        raise EOFError(f"the file ends {count - len(data)} bytes early")
    return data


def _array(data: bytes, dtype, order: str) -> np.ndarray:
    if dtype == "bfloat16":  # the upper 16 bits of a float32
        bits = np.frombuffer(data, np.dtype("<u2" if order == "little" else ">u2"))
        return (bits.astype(np.uint32) << 16).view(np.float32)
    array = np.frombuffer(data, np.dtype(dtype).newbyteorder("<" if order == "little" else ">"))
    return array.astype(array.dtype.newbyteorder("="))


def _build(value):
    """The unpickled dict with its tensors made arrays, one level down too (the wrappers of
    `WRAPPERS`); deeper structures are left as they are (a state dict is flat)."""
    def built(item):
        return item.array() if isinstance(item, _Tensor) else item

    if not isinstance(value, dict):
        return value
    return {key: (type(item)((k, built(v)) for k, v in item.items())
                  if isinstance(item, dict) and key in WRAPPERS else built(item))
            for key, item in value.items()}


def _is_state_dict(value) -> bool:
    return isinstance(value, dict) and bool(value) and all(
        isinstance(k, str) and isinstance(v, np.ndarray) for k, v in value.items())


def _state_dict(state, what: str) -> dict:
    if not _is_state_dict(state) and isinstance(state, dict):
        for key in WRAPPERS:
            if _is_state_dict(state.get(key)):
                others = sorted(map(str, set(state) - {key}))
                print(f"resnet-tf: weights {what}: using the state dict under {key!r} (the "
                      f"file also holds {', '.join(map(repr, others))})")
                state = state[key]
                break
    if not _is_state_dict(state):
        holds = (f"a dict with keys {sorted(map(str, state))[:6]}" if isinstance(state, dict)
                 else f"a {type(state).__name__}")
        raise UserError(f"weights {what} holds {holds}, not a state dict of tensors (nor one "
                        f"under {', '.join(map(repr, WRAPPERS))})")
    return {key: value.astype(np.float32) if value.dtype.kind == "f" else value
            for key, value in state.items()}
