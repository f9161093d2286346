"""Every model builder of resnet_tf by name, for configs and the command line.

`MODEL_NAMES` needs no import of Keras (the command line lists it in `--help`); `MODELS` and
`create_model` import the model code on first use. `NAMED_MODELS` are the models a name alone
builds (`resnet-tf bench/export/predict/evaluate --model NAME`); `resnet_v2_stack` also needs
its `units` (a config's `units`, `base_depth`, `block_strides`).
"""

from __future__ import annotations

import importlib

from resnet_tf.errors import UserError

# name -> (the module that defines the builder, the builder's name there)
_BUILDERS = {
    **{f"resnet_v1_{d}": ("resnet_v1", f"resnet_v1_{d}") for d in (18, 34, 50, 101, 152, 200)},
    **{f"resnet_v2_{d}": ("resnet_v2", f"resnet_v2_{d}") for d in (18, 34, 50, 101, 152, 200)},
    "resnet_v2_stack": ("resnet_v2", "resnet_v2_stack"),  # a custom stack: units, base_depth
    **{name: ("cifar", name) for name in ("cifar_resnet_v1", "cifar_resnet_v2",
                                          "cifar_resnet_ablation")},
}
MODEL_NAMES = tuple(_BUILDERS)
NAMED_MODELS = tuple(name for name in MODEL_NAMES if name != "resnet_v2_stack")


def get_builder(name: str):
    """The builder function called `name` (e.g. "resnet_v2_50")."""
    if name not in _BUILDERS:
        raise UserError(f"Unknown model; known models are {sorted(MODEL_NAMES)}. "
                        f"Received: name={name!r}")
    module, builder = _BUILDERS[name]
    return getattr(importlib.import_module(f"resnet_tf.{module}"), builder)


def create_model(name: str, **kwargs):
    """Builds the model called `name` (e.g. "resnet_v2_50") with the builder's keyword arguments."""
    return get_builder(name)(**kwargs)


def __getattr__(attribute):
    if attribute == "MODELS":  # {name: builder}, importing the model code
        return {name: get_builder(name) for name in MODEL_NAMES}
    raise AttributeError(f"module 'resnet_tf.registry' has no attribute {attribute!r}")
