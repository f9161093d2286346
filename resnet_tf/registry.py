"""Every model builder of resnet_tf by name, for configs and the command line.

`MODEL_NAMES` needs no import of Keras (the command line lists it in `--help`); `MODELS` and
`create_model` import the model code on first use.
"""

from __future__ import annotations

import importlib

# name -> the module that defines the builder
_MODULES = {
    **{f"resnet_v1_{d}": "resnet_v1" for d in (18, 34, 50, 101, 152, 200)},
    **{f"resnet_v2_{d}": "resnet_v2" for d in (18, 34, 50, 101, 152, 200)},
    **dict.fromkeys(["cifar_resnet_v1", "cifar_resnet_v2", "cifar_resnet_ablation"], "cifar"),
}
MODEL_NAMES = tuple(_MODULES)


def get_builder(name: str):
    """The builder function called `name` (e.g. "resnet_v2_50")."""
    if name not in _MODULES:
        raise ValueError(f"Unknown model; known models are {sorted(MODEL_NAMES)}. "
                         f"Received: name={name!r}")
    return getattr(importlib.import_module(f"resnet_tf.{_MODULES[name]}"), name)


def create_model(name: str, **kwargs):
    """Builds the model called `name` (e.g. "resnet_v2_50") with the builder's keyword arguments."""
    return get_builder(name)(**kwargs)


def __getattr__(attribute):
    if attribute == "MODELS":  # {name: builder}, importing the model code
        return {name: get_builder(name) for name in MODEL_NAMES}
    raise AttributeError(f"module 'resnet_tf.registry' has no attribute {attribute!r}")
