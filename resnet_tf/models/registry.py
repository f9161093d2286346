"""The one table of resnet_tf's models: every builder by name, for configs, the command line
and the released weights.

A family's depths come from `resnet_utils.RESNET_UNITS` (the units per block of each depth);
each builder's config keys come from its own signature (`model_arguments`). `NAMED_MODELS` are
the models a name alone builds (`resnet-tf bench/export/predict/evaluate --model NAME`);
`resnet_v2_stack` also needs its `units` (a config's `units`, `base_depth`, `block_strides`).
"""

from __future__ import annotations

import inspect

from resnet_tf.errors import UserError
from resnet_tf.models import bit, cifar, resnet_v1, resnet_v2, variants
from resnet_tf.models.resnet_utils import RESNET_UNITS

# name -> builder
MODELS = {
    **{f"resnet_v1_{depth}": getattr(resnet_v1, f"resnet_v1_{depth}") for depth in RESNET_UNITS},
    **{f"resnet_v2_{depth}": getattr(resnet_v2, f"resnet_v2_{depth}") for depth in RESNET_UNITS},
    "resnet_v2_stack": resnet_v2.resnet_v2_stack,  # a custom stack: units, base_depth
    **{name: getattr(cifar, name) for name in ("cifar_resnet_v1", "cifar_resnet_v2",
                                               "cifar_resnet_ablation")},
    **{name: getattr(variants, name) for name in variants.VARIANTS},
    **{name: getattr(bit, name) for name in bit.BIT_MODELS},
}
MODEL_NAMES = tuple(MODELS)
NAMED_MODELS = tuple(name for name in MODEL_NAMES if name != "resnet_v2_stack")
# The arguments every builder takes from a training config's common keys, not its own.
COMMON_ARGUMENTS = ("num_classes", "input_shape", "name", "weights", "dtype", "weight_decay",
                    "batch_norm_decay", "batch_norm_epsilon", "batch_norm_scale",
                    "activation_fn", "use_batch_norm", "global_pool", "output_stride",
                    "spatial_squeeze")


def get_builder(name: str):
    """The builder function called `name` (e.g. "resnet_v2_50")."""
    if name not in MODELS:
        raise UserError(f"Unknown model; known models are {sorted(MODEL_NAMES)}. "
                        f"Received: name={name!r}")
    return MODELS[name]


def create_model(name: str, **kwargs):
    """Builds the model called `name` (e.g. "resnet_v2_50") with the builder's keyword arguments."""
    return get_builder(name)(**kwargs)


def model_arguments(name: str, config_keys) -> tuple:
    """The keys among `config_keys` (a training config's fields) that builder `name` takes as
    its own arguments (the CIFAR nets' `depth`, `resnet_v2_stack`'s `units`, ...), in the
    builder's order."""
    parameters = inspect.signature(get_builder(name)).parameters
    return tuple(key for key in parameters
                 if key in config_keys and key not in COMMON_ARGUMENTS)
