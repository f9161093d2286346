"""The int8 arithmetic of the exported models, simulated in Keras (quantization-aware training).

The int8 runtimes (LiteRT, ONNX Runtime, OpenVINO) compute a convolution as: int8 input codes,
int8 weights per output channel (symmetric, codes -127..127), an int32 bias in units of
`input scale * weight scale`, int32 accumulation, then the output requantized to 8 bits with its
own scale and zero point. Fake quantization computes the same numbers in floating point:

  weights      `fake_quant_weights`: per output channel, symmetric, applied to the kernel with
               batch norm folded in (as the exported graph holds it), on 8 bits (codes
               -127..127, scale max|w_c| / 127) or 7 (codes -63..63, scale max|w_c| / 63,
               stored as int8: `WEIGHT_BITS`);
  bias         `round_bias`: rounded to the int32 grid the runtimes store it on;
  activations  `ActivationQuantizer`: 8 bits per tensor, asymmetric, its range tracked as a
               moving average of the batches' min and max while training (or fixed, for the
               network's input), always containing 0.

`keras.quantizers.fake_quant_with_min_max_vars` does the rounding (TensorFlow's own FakeQuant op
on the TensorFlow backend, which every converter reads as quantization; straight-through
gradients). Keras only (`keras.ops`), so quantization-aware models train on every backend.
"""

from __future__ import annotations

import keras
from keras import ops

from resnet_tf.errors import UserError

PACKAGE = "resnet_tf"
QUANTIZE_MODES = (None, "int8")
# slim's inception inputs are in [-1, 1]. A range of exactly [-1, 1] puts every 8-bit pixel
# on a rounding tie (scale 2/255, zero point 127.5), which each runtime breaks its own way; one
# step more at the top (scale 1/127, zero point 127) has no ties.
INCEPTION_INPUT_RANGE = (-1.0, 1.0 + 1.0 / 127.0)


# The bits of a quantized kernel's int8 codes. On x86 CPUs without VNNI (AVX2 only, or AVX-512
# without VNNI), int8 convolutions multiply u8 activations by s8 weights in pairs and add each
# pair into a saturating int16 (`vpmaddubsw`): 255 * 127 * 2 exceeds 32767, 255 * 63 * 2 does
# not. 7-bit weights (NNCF's "overflow fix") therefore give the same numbers on every x86 CPU;
# 8-bit weights only on CPUs with VNNI (OpenVINO has no other path; ONNX Runtime's is
# `session.x64quantprecision`). The runtimes store both as int8 with a per-channel scale.
WEIGHT_BITS = (7, 8)


def check_quantize(quantize) -> None:
    if quantize not in QUANTIZE_MODES:
        raise UserError(f"quantize must be None or 'int8'. Received: quantize={quantize!r}")


def check_weight_bits(weight_bits) -> None:
    if isinstance(weight_bits, bool) or weight_bits not in WEIGHT_BITS:
        raise UserError(f"weight_bits must be 7 or 8. Received: weight_bits={weight_bits!r}")


def weight_codes(weight_bits: int) -> int:
    """The largest |code| of a `weight_bits` kernel: 127 for 8 bits, 63 for 7."""
    return 2 ** (weight_bits - 1) - 1


def weight_bound(kernel):
    """max |w| of each output channel of `kernel` [..., out]: the range of its int8 grid."""
    kernel = ops.cast(kernel, "float32")
    reduce = tuple(range(len(kernel.shape) - 1))
    return ops.stop_gradient(ops.maximum(ops.max(ops.abs(kernel), axis=reduce), 1e-12))


def fake_quant_weights(kernel, weight_bits: int = 8):
    """`kernel` [..., out] on the symmetric per-output-channel grid of `weight_bits` codes
    (-127..127 or -63..63). Always an 8-bit narrow-range fake quantization, the op every
    converter reads as int8 weights: for 7 bits its range is widened to 127/63 of max|w|, so
    the codes stay within -63..63 in every runtime's file."""
    bound = weight_bound(kernel) * (127.0 / weight_codes(weight_bits))
    return keras.quantizers.fake_quant_with_min_max_vars(ops.cast(kernel, "float32"), -bound,
                                                         bound, num_bits=8, narrow_range=True,
                                                         axis=-1)


def round_bias(bias, input_range, kernel, weight_bits: int = 8):
    """The bias as the runtimes store it: int32 in units of input scale * weight scale (the
    rounding is simulated; gradients pass straight through)."""
    low, high = input_range
    step = (high - low) / 255.0 * weight_bound(kernel) / weight_codes(weight_bits)
    return bias + ops.stop_gradient(ops.round(bias / step) * step - bias)


@keras.saving.register_keras_serializable(package=PACKAGE)
class ActivationQuantizer(keras.layers.Layer):
    """8-bit fake quantization of a tensor, with one range per tensor.

    Args:
      fixed_range: `(low, high)`: a range that never changes (the network's input); None: the
        range follows the data, a moving average (`decay`) of each training batch's min and
        max, the first batch's own (so a fresh quantizer calibrates itself).
      decay: the moving average's decay per training step.

    The range always contains 0 (so 0 is exact, as after a ReLU or in padding).
    """

    def __init__(self, fixed_range=None, decay: float = 0.99, **kwargs):
        super().__init__(**kwargs)
        if fixed_range is not None:
            fixed_range = (float(fixed_range[0]), float(fixed_range[1]))
            if not fixed_range[0] <= 0.0 <= fixed_range[1] or fixed_range[0] == fixed_range[1]:
                raise UserError(f"fixed_range must contain 0 and be non-empty. "
                                f"Received: fixed_range={fixed_range}")
        if not 0.0 <= decay < 1.0:
            raise UserError(f"decay must be in [0, 1). Received: decay={decay}")
        self.fixed_range = fixed_range
        self.decay = float(decay)

    def build(self, input_shape):
        low, high = self.fixed_range or (0.0, 0.0)
        self.min = self.add_weight(name="min", shape=(), trainable=False, autocast=False,
                                   initializer=keras.initializers.Constant(low),
                                   aggregation="mean")
        self.max = self.add_weight(name="max", shape=(), trainable=False, autocast=False,
                                   initializer=keras.initializers.Constant(high),
                                   aggregation="mean")
        self.batches = self.add_weight(name="batches", shape=(), trainable=False, autocast=False,
                                       initializer="zeros", aggregation="mean")

    def range(self):
        """(low, high) as float32 tensors: the tracked range widened to contain 0."""
        low = ops.minimum(ops.cast(self.min, "float32"), 0.0)
        high = ops.maximum(ops.cast(self.max, "float32"), 0.0)
        return low, ops.maximum(high, low + 1e-6)

    def call(self, inputs, training=None):
        if training and self.fixed_range is None:
            values = ops.cast(inputs, "float32")
            low, high = ops.min(values), ops.max(values)
            first = ops.equal(self.batches, 0.0)
            self.min.assign(ops.where(first, low, self.decay * self.min +
                                      (1.0 - self.decay) * low))
            self.max.assign(ops.where(first, high, self.decay * self.max +
                                      (1.0 - self.decay) * high))
            self.batches.assign(self.batches + 1.0)
        low, high = self.range()
        return keras.quantizers.fake_quant_with_min_max_vars(inputs, low, high, num_bits=8,
                                                             narrow_range=False)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(fixed_range=self.fixed_range, decay=self.decay)
        return config
