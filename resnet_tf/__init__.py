"""resnet_tf: TF-slim's ResNet in Keras 3.

    import resnet_tf
    model = resnet_tf.resnet_v2_50(num_classes=1001, weights="imagenet")
    feats = resnet_tf.end_points(model)(images)

`import resnet_tf` is cheap and the same in every process: it imports neither Keras nor
TensorFlow. The public names below load on first use, and resnet_tf's layers are registered
with Keras as soon as Keras is imported (now, if it already is; otherwise when it first is), so
`keras.saving.load_model("m.keras")` finds them after `import resnet_tf` whatever the order.
The `resnet-tf` command answers `--help` without Keras for the same reason.

Model code (`layers`, `units`, `resnet_utils`, `resnet_v1`, `resnet_v2`, `cifar`,
`feature_extraction`, `slim_variables`, `quantizers`, `quantization`, `precision`, `registry`,
`pixels`) uses only Keras; the TensorFlow-specific modules (`data`, `preprocessing`,
`training`, `slim_checkpoint`, `deploy`, `int8`, `evaluate`, `predict`) are imported only by
what needs them (tests/test_layout.py checks both).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types

__version__ = "0.1.0"

# Every public name and the module that defines it.
_PUBLIC = {
    **dict.fromkeys(["end_points", "block_info"], "feature_extraction"),
    **dict.fromkeys(["Block", "conv2d_same", "resnet_arg_scope", "stack_blocks_dense",
                     "subsample"], "resnet_utils"),
    **dict.fromkeys(["Conv2DSame", "Subsample"], "layers"),
    **dict.fromkeys(["ResidualUnit", "ZeroPadShortcut", "make_shortcut"], "units"),
    **dict.fromkeys(["BasicBlockV1", "BottleneckV1", "resnet_v1", "resnet_v1_18", "resnet_v1_34",
                     "resnet_v1_50", "resnet_v1_101", "resnet_v1_152", "resnet_v1_200",
                     "resnet_v1_block", "resnet_v1_blocks"], "resnet_v1"),
    **dict.fromkeys(["BasicBlockV2", "Bottleneck", "bottleneck", "resnet_v2", "resnet_v2_18",
                     "resnet_v2_34", "resnet_v2_50", "resnet_v2_101", "resnet_v2_152",
                     "resnet_v2_200", "resnet_v2_block", "resnet_v2_blocks", "resnet_v2_stack"],
                    "resnet_v2"),
    **dict.fromkeys(["AblationUnit", "cifar_resnet_ablation", "cifar_resnet_v1",
                     "cifar_resnet_v2"], "cifar"),
    **dict.fromkeys(["quantize_model", "calibrate", "is_quantized"], "quantization"),
    **dict.fromkeys(["MODEL_NAMES", "create_model"], "registry"),
    "float32_model": "precision",
    "slim_variables": "slim_variables",
    "UserError": "errors",
}
# The modules that define Keras layers (imported to register them).
_LAYER_MODULES = ("quantizers", "layers", "units", "resnet_v1", "resnet_v2", "cifar",
                  "feature_extraction")
__all__ = sorted(_PUBLIC) + ["load_slim_checkpoint", "register_layers"]


def load_slim_checkpoint(model, path, scope=None, exclude=(), moving_averages=False):
    """See `resnet_tf.slim_checkpoint.load_slim_checkpoint` (imports TensorFlow when called)."""
    from resnet_tf.slim_checkpoint import load_slim_checkpoint as _load

    return _load(model, path, scope=scope, exclude=exclude, moving_averages=moving_averages)


def register_layers() -> None:
    """Registers every resnet_tf layer with Keras (imports the model code, and Keras)."""
    if _state["registered"] or _state["registering"]:
        return
    _state["registering"] = True
    try:
        for module in _LAYER_MODULES:
            importlib.import_module(f"resnet_tf.{module}")
        _state["registered"] = True
    finally:
        _state["registering"] = False
    if _hook in sys.meta_path:
        sys.meta_path.remove(_hook)


def __getattr__(name):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'resnet_tf' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"resnet_tf.{_PUBLIC[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))


_state = {"depth": 0, "registered": False, "registering": False}


class _RegisterWhenKerasLoads(importlib.abc.MetaPathFinder):
    """Registers resnet_tf's layers with Keras once Keras is imported, at a moment when no
    resnet_tf module is half-imported: it counts the imports of Keras and of resnet_tf's modules
    in flight (wrapping their loaders in `_CountingLoader`) and, when the count falls to zero
    with Keras loaded, registers the layers. Removes itself once they are."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras" and not fullname.startswith("resnet_tf."):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _CountingLoader(spec.loader)
        return spec


class _CountingLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def __getattr__(self, name):  # get_code, is_package, ... (runpy asks for them)
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__spec__.loader = self.loader
        _state["depth"] += 1
        try:
            self.loader.exec_module(module)
        finally:
            _state["depth"] -= 1
        if _state["depth"] == 0 and "keras" in sys.modules:
            register_layers()


class _Package(types.ModuleType):
    """The package module: `resnet_tf.resnet_v1`, `resnet_v2` and `slim_variables` are slim's
    functions, though modules of those names define them; the import system sets a package
    attribute to each submodule it loads, and this keeps the function there instead (the
    modules stay importable by name: `from resnet_tf.resnet_v2 import Bottleneck`)."""

    def __setattr__(self, name, value):
        if isinstance(value, types.ModuleType) and name in _PUBLIC and hasattr(value, name):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
_hook = next((f for f in sys.meta_path if type(f).__name__ == "_RegisterWhenKerasLoads"),
             None) or _RegisterWhenKerasLoads()
if "keras" in sys.modules:
    register_layers()
elif _hook not in sys.meta_path:
    sys.meta_path.insert(0, _hook)
