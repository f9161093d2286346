"""Quantization-aware training (QAT): a resnet_tf model in the form whose int8 arithmetic the
exports compute, to fine-tune with `model.fit` so that what is trained is what is deployed.

    qat = quantize_model(model)                       # same weights, int8 simulated
    calibrate(qat, batches)                           # the activation ranges, from real images
    qat.compile(...); qat.fit(...)                    # BN frozen and folded, ranges tracked
    export_model(qat, "exports/q", EvalPreprocessing("inception", S), format="tflite",
                 precision="int8")

Where the int8 runtimes quantize, the QAT model fake-quantizes (`quantizers`):

  - every convolution's kernel, with its batch norm folded in (batch norm is frozen: it runs
    on its moving statistics, in training too, exactly as the exported graph computes it), per
    output channel, on 7-bit codes by default (`weight_bits`: what no x86 CPU's int8 kernels
    can saturate, VNNI or not; 8 for CPUs with VNNI only); its bias on the int32 grid the
    runtimes store it on; its output, 8 bits
    (inside residual units);
  - the network's input (a fixed range for slim's [-1, 1] inputs,
    `quantizers.INCEPTION_INPUT_RANGE`), each residual unit's input (the previous unit's or the
    root's output), and a pre-activation unit's `relu(preact(x))`;
  - the last unit's output, `postnorm`'s output and `pool5`'s output (the logits' input).

The logits and the softmax stay float (probabilities are not in 1/256 steps); max-pooling,
padding and reshapes keep their input's grid. The quantized model saves and loads as a `.keras`
file like any other: `quantize="int8"` is part of each layer's config.

Supported: the V1 and V2 units (bottleneck and basic), the root blocks and the CIFAR nets built
from them. [2]'s ablation units are refused: their gates, scalings and dropout have no int8
counterpart in the runtimes.

Keras only.
"""

from __future__ import annotations

import keras
import numpy as np

from resnet_tf.errors import UserError
from resnet_tf.models.feature_extraction import layer_chain
from resnet_tf.models.layers import NO_INT8_NORMALIZATION, Conv2DSame
from resnet_tf.models.precision import all_layers, dtype_policy_scope
from resnet_tf.models.quantizers import (
    INCEPTION_INPUT_RANGE,
    ActivationQuantizer,
    check_weight_bits,
)
from resnet_tf.models.units import ResidualUnit, no_int8_form

# Layers a quantized chain copies as they are (their outputs keep their input's grid, or are
# quantized by the layer after them).
_PASS_THROUGH = (keras.layers.MaxPooling2D, keras.layers.Reshape, keras.layers.ReLU,
                 keras.layers.BatchNormalization, keras.layers.GlobalAveragePooling2D,
                 keras.layers.Dropout)


def is_quantized(model) -> bool:
    """Whether `model` is a quantization-aware model (`quantize_model`)."""
    return any(isinstance(layer, ActivationQuantizer) for layer in all_layers(model))


def quantize_model(model: keras.Model, input_range=INCEPTION_INPUT_RANGE,
                   weight_bits: int = 7) -> keras.Model:
    """The quantization-aware form of a resnet_tf model, with its weights.

    `input_range`: the range of the model's input, fixed (default: slim's inception inputs,
    [-1, 1]); None tracks it like the other activations (e.g. for VGG-preprocessed inputs).
    `weight_bits`: 7 (codes -63..63: the exports equal the model on every x86 CPU) or 8
    (-127..127: one bit finer, but int8 kernels without VNNI saturate on it: OpenVINO on
    AVX2-only CPUs, `quantizers.WEIGHT_BITS`).
    The activation ranges start empty: `calibrate` sets them from real images (training then
    keeps them up to date).
    """
    check_weight_bits(weight_bits)
    if is_quantized(model):
        raise UserError(f"model {model.name!r} is quantization-aware already")
    chain = layer_chain(model)
    images = keras.Input(shape=model.input_shape[1:], name="images")
    net, previous = images, None
    first = True
    for index, layer in enumerate(chain):
        config = layer.get_config()
        if isinstance(layer, ResidualUnit):
            if not layer.int8_form:
                raise UserError(f"cannot quantize model {model.name!r}: {no_int8_form(layer)}")
            config.update(quantize="int8", input_range=input_range if first else None,
                          weight_bits=weight_bits)
            net = type(layer).from_config(config)(net, return_end_points=True)[0]
        elif isinstance(layer, Conv2DSame):
            if layer.normalizer != "batch_norm" or layer.weight_standardization:
                raise UserError(f"cannot quantize model {model.name!r}: its convolution "
                                f"{layer.name!r} has no int8 form ({NO_INT8_NORMALIZATION})")
            if layer.name == "logits":  # the logits and the softmax stay float
                config.update(quantize="int8", quantize_output=False, weight_bits=weight_bits)
            else:
                if not first and layer.name.startswith("conv1_"):
                    raise UserError(f"cannot quantize model {model.name!r}: its deep stem "
                                    f"({layer.name!r}) has no int8 form here; quantization-"
                                    "aware training takes slim's one-convolution root")
                if not first:
                    raise UserError(f"cannot quantize model {model.name!r}: convolution "
                                    f"{layer.name!r} outside a residual unit, after the root")
                # The root convolution: its input is the network's; its output is quantized by
                # the first unit, after the max-pool (which keeps its input's grid).
                net = ActivationQuantizer(fixed_range=input_range, name="images_quant")(net)
                config.update(quantize="int8", input_range=input_range, quantize_output=False,
                              weight_bits=weight_bits)
            net = type(layer).from_config(config)(net)
        elif isinstance(layer, _PASS_THROUGH):
            if isinstance(previous, ResidualUnit):  # the last unit's output
                net = ActivationQuantizer(name="blocks_quant")(net)
            if isinstance(layer, keras.layers.BatchNormalization):
                config["trainable"] = False  # frozen, as every batch norm of a QAT model
            net = type(layer).from_config(config)(net)
            if layer.name in ("postnorm.relu", "pool5") and any(
                    later.name == "logits" for later in chain[index + 1:]):
                net = ActivationQuantizer(name=f"{layer.name}_quant")(net)
        else:
            raise UserError(f"cannot quantize model {model.name!r}: its layer {layer.name!r} "
                            f"({type(layer).__name__}) has no int8 form")
        first = first and not isinstance(layer, (ResidualUnit, Conv2DSame))
        previous = layer
    with dtype_policy_scope(model.dtype_policy):  # the functional Model takes the global one
        quantized = keras.Model(images, net, name=model.name)
    copy_weights(model, quantized)
    return quantized


def copy_weights(source: keras.Model, target: keras.Model) -> None:
    """Every variable of `source` into the variable of `target` with the same path (the
    quantizers' ranges, which `source` lacks, are left as they are)."""
    targets = {variable.path: variable for variable in target.weights}
    missing = [v.path for v in source.weights if v.path not in targets]
    if missing:
        raise AssertionError(f"the quantized model lacks variables {missing[:5]}")
    for variable in source.weights:
        targets[variable.path].assign(variable)


def quantizers(model) -> list:
    """Every `ActivationQuantizer` of a quantization-aware model."""
    return [layer for layer in all_layers(model) if isinstance(layer, ActivationQuantizer)]


def calibrate(model, batches) -> int:
    """Sets a quantization-aware model's activation ranges from real images: `batches` of
    model inputs (preprocessed, e.g. a tf.data dataset of (images, labels) or arrays). Each
    range is the moving average of the batches' min and max, starting at the first batch's.
    Returns the number of batches seen. Nothing else changes (batch norm is frozen)."""
    seen = 0
    for batch in batches:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        model(images, training=True)
        seen += 1
    if not seen:
        raise UserError("calibrate needs at least one batch of images")
    return seen


def uncalibrated(model) -> list:
    """The names of the quantizers that have seen no data yet (a fixed range counts as set)."""
    return [q.name for q in quantizers(model)
            if q.fixed_range is None and float(np.asarray(q.batches)) == 0.0]
