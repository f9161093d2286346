"""slim's variable names for a resnet_tf model (Keras only; no TensorFlow import).

A layer named `block1.unit_1.bottleneck_v2` in a model named `resnet_v2_50` has slim scope
`resnet_v2_50/block1/unit_1/bottleneck_v2`; inside it, sublayers keep slim's scope names
(`preact`, `shortcut`, `conv1`, `conv1/BatchNorm`, ...). Reading a checkpoint is TensorFlow-only
and lives in `slim/checkpoint.py`.
"""

from __future__ import annotations

import keras

from resnet_tf.models.layers import Conv2DSame
from resnet_tf.models.quantizers import ActivationQuantizer


def _batch_norm_variables(layer, prefix, out):
    if layer.scale:
        out[f"{prefix}/gamma"] = layer.gamma
    if layer.center:
        out[f"{prefix}/beta"] = layer.beta
    out[f"{prefix}/moving_mean"] = layer.moving_mean
    out[f"{prefix}/moving_variance"] = layer.moving_variance


def _group_norm_variables(layer, prefix, out):
    if layer.scale:
        out[f"{prefix}/gamma"] = layer.gamma
    if layer.center:
        out[f"{prefix}/beta"] = layer.beta


def _collect(layer, prefix, out):
    if isinstance(layer, keras.layers.BatchNormalization):
        _batch_norm_variables(layer, prefix, out)
    elif isinstance(layer, keras.layers.GroupNormalization):
        _group_norm_variables(layer, prefix, out)
    elif isinstance(layer, Conv2DSame):
        out[f"{prefix}/weights"] = layer.kernel
        if layer.bias is not None:
            out[f"{prefix}/biases"] = layer.bias
        if layer.batch_norm is not None:
            _collect(layer.batch_norm, f"{prefix}/{layer.batch_norm.name}", out)
    elif hasattr(layer, "slim_sublayers"):
        for name, sublayer in layer.slim_sublayers():
            _collect(sublayer, f"{prefix}/{name}", out)
    elif isinstance(layer, ActivationQuantizer):
        pass  # a quantization-aware model's ranges: not slim variables
    elif layer.weights:
        raise ValueError(f"Layer {layer.name!r} ({type(layer).__name__}) holds variables but has "
                         "no slim name mapping.")


def slim_variables(model: keras.Model, scope: str | None = None) -> dict:
    """Maps each slim variable name to the Keras variable that holds it.

    Args:
      model: a model built by resnet_tf (it must be built, i.e. have its variables).
      scope: the slim scope of the model's variables; default `model.name` (e.g. "resnet_v2_50").
    """
    if not model.built:
        raise ValueError(f"Model {model.name!r} is not built; call it on an input first.")
    scope = model.name if scope is None else scope
    out: dict = {}
    for layer in model.layers:
        _collect(layer, f"{scope}/{layer.name.replace('.', '/')}", out)
    return out
