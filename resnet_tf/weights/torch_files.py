"""PyTorch's `.pth` state dicts read into NumPy without PyTorch, and without running code.

A `.pth` written by `torch.save(state_dict, path)` is a pickle whose objects are rebuilt from
raw storages: since PyTorch 1.6 a zip (`<name>/data.pkl`, one file per storage under
`<name>/data/`, `<name>/byteorder`), before that the legacy format (a magic number, the
protocol, the system info, the pickle, the list of storage keys, then each storage as a
little-endian element count and its bytes). The pickle names a few globals: the tensor rebuild
functions, the storage types, `collections.OrderedDict`. `torch.load(weights_only=True)` accepts
exactly such a list; `read_torch_file` accepts the same list and nothing else (`ALLOWED`), so a
file that names any other global (a pickled whole model, a callable) is refused before
anything of it runs.

Training checkpoints that wrap a state dict (`{"model": state_dict, "epoch": 3, ...}`, as
torchvision's reference `train.py` writes them) give the wrapped state dict (`WRAPPERS`), and
say which key they used.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile

import numpy as np

from resnet_tf.errors import UserError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
# storage type -> NumPy dtype (bfloat16 is read as its 16 bits, then widened to float32).
STORAGES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
            "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
            "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
            "BoolStorage": np.bool_}
# The keys under which training checkpoints keep a model's state dict, most wanted first.
WRAPPERS = ("model_ema", "state_dict_ema", "state_dict", "model")


class _Storage:
    def __init__(self, dtype, key):
        self.dtype, self.key, self.array = dtype, key, None


class _Tensor:
    """A tensor to build once its storage is read: storage, offset, size and stride in
    elements (`torch._utils._rebuild_tensor_v2`'s arguments)."""

    def __init__(self, storage, offset, size, stride, *_):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), stride

    def array(self) -> np.ndarray:
        data = self.storage.array
        count = int(np.prod(self.size)) if self.size else 1
        if count == 0:
            return np.zeros(self.size, data.dtype)
        end = self.offset + 1 + sum((n - 1) * s for n, s in zip(self.size, self.stride))
        if end > len(data):
            raise ValueError(f"a tensor reaches element {end} of a storage of {len(data)}")
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
        return self.storage_of(STORAGES[storage_type], key)


class _Refused(Exception):
    """The pickle names a global outside `ALLOWED` (the argument): nothing of it ran."""


def read_torch_file(path: str, what: str) -> dict:
    """{name: array} of the state dict in the `.pth` at `path` (float tensors as float32); one
    sentence naming `what` for a file that is not one."""
    try:
        if zipfile.is_zipfile(path):
            state = _read_zip(path)
        else:
            state = _read_legacy(path)
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
            AttributeError, zipfile.BadZipFile, OSError) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise UserError(f"weights {what} is not a complete PyTorch .pth file ({reason}); a "
                        "download cut short or a damaged file: fetch it again") from None
    return _state_dict(state, what)


def _read_zip(path: str):
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise ValueError(f"{len(pickles)} data.pkl records in the zip")
        prefix = pickles[0][: -len("data.pkl")]
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
        magic = _Unpickler(f, None).load()  # restricted too: the first pickle is code as well
        if magic != LEGACY_MAGIC:
            raise ValueError("neither a zip nor PyTorch's legacy format (no magic number)")
        for _ in range(2):  # the protocol version, the system info: plain ints and dicts
            _Unpickler(f, None).load()
        storages = {}

        def storage_of(dtype, key):
            return storages.setdefault(key, _Storage(dtype, key))

        state = _Unpickler(f, storage_of).load()
        keys = _Unpickler(f, None).load()
        for key in keys:
            storage = storages[str(key)]
            count = int.from_bytes(_exactly(f, 8), "little")
            itemsize = 2 if storage.dtype == "bfloat16" else np.dtype(storage.dtype).itemsize
            storage.array = _array(_exactly(f, count * itemsize), storage.dtype, "little")
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
    """The unpickled structure with every `_Tensor` made an array."""
    if isinstance(value, _Tensor):
        return value.array()
    if isinstance(value, dict):
        return type(value)((k, _build(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(_build(v) for v in value)
    return value


def _is_state_dict(value) -> bool:
    return isinstance(value, dict) and bool(value) and all(
        isinstance(k, str) and isinstance(v, np.ndarray) for k, v in value.items())


def _state_dict(state, what: str) -> dict:
    if not _is_state_dict(state) and isinstance(state, dict):
        for key in WRAPPERS:
            if _is_state_dict(state.get(key)):
                print(f"resnet-tf: weights {what}: using the state dict under {key!r} (the "
                      f"file also holds {', '.join(map(repr, sorted(set(state) - {key})))})")
                state = state[key]
                break
    if not _is_state_dict(state):
        holds = (f"a dict with keys {sorted(map(str, state))[:6]}" if isinstance(state, dict)
                 else f"a {type(state).__name__}")
        raise UserError(f"weights {what} holds {holds}, not a state dict of tensors (nor one "
                        f"under {', '.join(map(repr, WRAPPERS))})")
    return {key: value.astype(np.float32) if value.dtype.kind == "f" else value
            for key, value in state.items()}
