"""Dtype policies: mixed precision as a property of the whole model, and its float32 copy.

A model is built under one Keras dtype policy (`dtype=` of every builder; by default the global
`keras.config.dtype_policy()`), and every layer in it, sublayers of the residual units included,
takes that policy, so a model saved under `mixed_bfloat16` loads with the same policies in any
process. The last layer of a classifier is the exception, as in Keras' mixed-precision guide:
under a mixed policy `spatial_squeeze` runs in float32 (`output_policy`), so the model's outputs
are float32 for the loss, the metrics (top-5 needs float32 on TensorFlow) and every caller.
Variables are float32 under every policy offered here.

Keras only.
"""

from __future__ import annotations

import contextlib

import keras

from resnet_tf.errors import UserError


def dtype_policy(dtype=None) -> keras.DTypePolicy:
    """The `keras.DTypePolicy` of `dtype` (a name or a policy); None: the global policy."""
    if dtype is None:
        return keras.config.dtype_policy()
    if isinstance(dtype, keras.DTypePolicy):
        return dtype
    try:
        return keras.dtype_policies.get(dtype)
    except ValueError:
        raise UserError(f"dtype must be a Keras dtype policy (float32, mixed_bfloat16, "
                        f"mixed_float16, ...). Received: dtype={dtype!r}") from None


def output_policy(policy: keras.DTypePolicy):
    """The policy of a classifier's last layer: float32 under a mixed policy (it casts the
    outputs), else the model's."""
    return "float32" if policy.compute_dtype != policy.variable_dtype else policy


@contextlib.contextmanager
def dtype_policy_scope(policy: str):
    """Builds layers under a global Keras dtype policy (e.g. "mixed_bfloat16"), then restores
    the old one (for models built by code that does not take `dtype=`)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def all_layers(layer):
    """`layer` and every layer inside it, depth first: a model's layers, a residual unit's
    sublayers (`ResidualUnit.sublayers`), a convolution's batch norm."""
    yield layer
    children = layer.layers if isinstance(layer, keras.Model) else \
        getattr(layer, "sublayers", lambda: [])()
    for child in children:
        yield from all_layers(child)


def float32_model(model: keras.Model) -> keras.Model:
    """`model` itself when every layer computes in float32, else a float32 copy with the same
    weights (a model trained under a mixed policy keeps float32 variables): what every export
    format is made from."""
    if all(layer.dtype_policy.name == "float32" for layer in all_layers(model)):
        return model

    def to_float32(value):
        if isinstance(value, dict):
            if value.get("class_name") in ("DTypePolicy", "FloatDTypePolicy") and \
                    isinstance(value.get("config"), dict):
                return dict(value, config=dict(value["config"], name="float32"))
            return {k: to_float32(v) for k, v in value.items()}
        if isinstance(value, list):
            return [to_float32(v) for v in value]
        return value

    config = to_float32(keras.saving.serialize_keras_object(model))
    copy = keras.saving.deserialize_keras_object(config)
    copy.set_weights(model.get_weights())
    return copy
