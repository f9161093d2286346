"""resnet_tf: TF-slim's ResNet in Keras 3.

    import resnet_tf
    model = resnet_tf.resnet_v2_50(num_classes=1001)
    feats = resnet_tf.end_points(model)(images)
    resnet_tf.load_slim_checkpoint(model, "resnet_v2_50.ckpt")

The model code (`resnet_utils`, `resnet_v2`, `feature_extraction`, `slim_variables`) uses only
Keras; `load_slim_checkpoint` needs TensorFlow and imports it only when called.

`import resnet_tf` imports the model code, which registers every layer with Keras, so that
`keras.saving.load_model("m.keras")` works afterwards. The one exception is the `resnet-tf`
command itself: it must answer `--help` without importing Keras (and with it TensorFlow), so in
that process the names below load on first use, and each command imports what it needs.
"""

from __future__ import annotations

import importlib
import os
import sys

__version__ = "0.1.0"

# Every public name and the module that defines it.
_PUBLIC = {
    "end_points": "feature_extraction",
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
    **dict.fromkeys(["MODELS", "create_model"], "registry"),
    "slim_variables": "slim_variables",
}
__all__ = sorted(_PUBLIC) + ["load_slim_checkpoint", "register_layers"]


def load_slim_checkpoint(model, path, scope=None, exclude=()):
    """See `resnet_tf.slim_checkpoint.load_slim_checkpoint` (imports TensorFlow when called)."""
    from resnet_tf.slim_checkpoint import load_slim_checkpoint as _load

    return _load(model, path, scope=scope, exclude=exclude)


def register_layers() -> None:
    """Imports the model code, registering every resnet_tf layer with Keras (what
    `import resnet_tf` does, except in the `resnet-tf` command's process)."""
    for name in _PUBLIC:
        __getattr__(name)


def __getattr__(name):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'resnet_tf' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"resnet_tf.{_PUBLIC[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))


def _started_as_command() -> bool:
    """True in the process of the `resnet-tf` command (console script or `-m resnet_tf.cli`)."""
    program = os.path.basename(sys.argv[0]) if sys.argv else ""
    if program in ("resnet-tf", "resnet-tf.exe"):
        return True
    argv = list(getattr(sys, "orig_argv", []))
    return "-m" in argv and argv[argv.index("-m") + 1:argv.index("-m") + 2] == ["resnet_tf.cli"]


if not _started_as_command():
    register_layers()
