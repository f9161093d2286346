"""The Keras layers behind slim's ResNet ops: `Conv2DSame` (slim's `conv2d` + `conv2d_same`,
with its optional batch norm and ReLU), `Subsample`, and slim's `batch_norm` and L2 regularizer
under `resnet_arg_scope`'s defaults.

Only `keras.layers` / `keras.ops`: these run on the TensorFlow, JAX and PyTorch backends. Every
layer is registered for Keras serialization under the package name "resnet_tf".
"""

from __future__ import annotations

import keras
from keras import ops

from resnet_tf.errors import UserError
from resnet_tf.models.quantizers import (
    ActivationQuantizer,
    check_quantize,
    check_weight_bits,
    fake_quant_weights,
    round_bias,
)
from resnet_tf.utils import check_positive_int

PACKAGE = "resnet_tf"

# A backend's own grouped convolution, where Keras' is slow: `fn(inputs, kernel, strides,
# padding, dilation_rate)` (`set_grouped_convolution`). Keras 3.15's TensorFlow backend runs
# every grouped `ops.conv` through an XLA-compiled function (for TensorFlow versions whose CPU
# kernels lacked groups); TensorFlow 2.21's own Conv2D has them: 8x faster forward and ~300x
# faster backward on a ResNeXt 3x3 here, and a plain Conv2D node the converters read (tf2onnx
# cannot convert the XLA function). `import resnet_tf` sets TensorFlow's on that backend
# (`resnet_tf.tensorflow_ops`); the model code itself stays Keras only.
_grouped_convolution = None


def set_grouped_convolution(fn) -> None:
    global _grouped_convolution
    _grouped_convolution = fn


def same_output_size(size, stride: int):
    """The spatial size after a 'SAME' convolution or pooling with `stride`: ceil(size /
    stride) (None stays None)."""
    return None if size is None else -(-size // stride)


def layer_stride(layer) -> int:
    """The spatial stride of a layer of a resnet_tf model (`stride`, or Keras' `strides`)."""
    stride = getattr(layer, "stride", None)
    if stride is None:
        stride = getattr(layer, "strides", None) or 1
        stride = stride[0] if isinstance(stride, (tuple, list)) else stride
    return int(stride)


def slim_l2_regularizer(weight_decay: float):
    """slim's `l2_regularizer(weight_decay)`: `weight_decay * tf.nn.l2_loss(w)`.

    `tf.nn.l2_loss` is `sum(w**2) / 2`, while Keras' `L2(l)` is `l * sum(w**2)`: hence the half.
    """
    return keras.regularizers.L2(weight_decay / 2.0) if weight_decay > 0 else None


# The normalisation layers a unit can use: slim's batch norm, or group norm over 32 groups
# (Wu & He, arXiv:1803.08494; Big Transfer's ResNet V2, `models.bit`), slim scope "GroupNorm".
NORMALIZERS = ("batch_norm", "group_norm")
GROUP_NORM_GROUPS = 32
# Why quantization-aware training refuses them (`Conv2DSame`, `ResidualUnit`, `quantize_model`).
NO_INT8_NORMALIZATION = ("group norm and weight standardisation are not operations the int8 "
                         "runtimes fold into a convolution")
# Weight standardisation's epsilon (Qiao et al., arXiv:1903.10520; timm's BiT `StdConv2d`).
WEIGHT_STANDARDIZATION_EPSILON = 1e-8


def check_normalizer(normalizer) -> None:
    if normalizer not in NORMALIZERS:
        raise UserError(f"normalizer must be one of {list(NORMALIZERS)}. "
                        f"Received: normalizer={normalizer!r}")


def batch_norm(name: str, batch_norm_decay=0.997, batch_norm_epsilon=1e-5, batch_norm_scale=True,
               dtype=None, normalizer="batch_norm", **unused_arg_scope):
    """slim's `batch_norm` under a `resnet_arg_scope`, as a Keras layer (or, with
    `normalizer="group_norm"`, group norm over `GROUP_NORM_GROUPS` groups with the same epsilon
    and scale: it has no moving statistics, and trains and infers alike).

    Deliberate difference from slim: in training mode slim's fused batch norm updates the moving
    variance with the Bessel-corrected (n / (n - 1)) batch variance, Keras with the biased one. The
    normalised outputs are identical; only the moving average drifts differently.
    """
    check_normalizer(normalizer)
    if normalizer == "group_norm":
        return keras.layers.GroupNormalization(groups=GROUP_NORM_GROUPS, axis=-1,
                                               epsilon=batch_norm_epsilon, center=True,
                                               scale=batch_norm_scale, name=name, dtype=dtype)
    return keras.layers.BatchNormalization(
        axis=-1,
        momentum=batch_norm_decay,
        epsilon=batch_norm_epsilon,
        center=True,
        scale=batch_norm_scale,
        name=name,
        dtype=dtype,
    )


@keras.saving.register_keras_serializable(package=PACKAGE)
class Conv2DSame(keras.layers.Layer):
    """slim's `conv2d` + `conv2d_same`: a 2-D convolution with TensorFlow 'SAME' output size.

    With stride 1 this is a 'SAME' convolution (with atrous `rate`). With stride > 1 the input is
    zero-padded explicitly by `kernel_size_effective - 1` (half before, the rest after) and the
    convolution runs 'VALID'. That differs from a strided 'SAME' convolution when the input is
    even (TF puts the extra pad after, not before), and is what makes

        conv2d_same(x, n, 3, stride=s)  ==  subsample(conv2d(x, n, 3, stride=1, 'SAME'), s)

    hold for any input size, which keeps features aligned across output strides (see
    `tests/test_resnet_utils.py::test_conv2d_same_even`).

    `groups` > 1 makes it a grouped convolution (ResNeXt's cardinality): each of `groups` groups
    of input channels feeds its own `filters / groups` outputs.

    Like slim's `conv2d`, the layer optionally applies batch norm (scope `BatchNorm`) and a ReLU
    after the convolution. Without batch norm it has a bias, with it none (slim's `normalizer_fn`
    replaces the bias). Weight decay applies to the kernel only.

    `normalizer="group_norm"` normalises with group norm instead (scope `GroupNorm`; never
    folded into the kernel). `weight_standardization=True` convolves with the kernel
    standardised per output channel, (w - mean) / sqrt(var + 1e-8) (Big Transfer's
    convolutions), and has no bias; an export holds the kernel as it is and the converters fold
    the standardisation of a constant, so runtimes see a plain convolution.

    `quantize="int8"` computes what the int8 runtimes compute (quantization-aware training,
    `resnet_tf.quantization.qat`): batch norm frozen and folded into the kernel in training too,
    the kernel on the per-channel int8 grid (`weight_bits` 8 or 7: `quantizers.WEIGHT_BITS`),
    the bias on the runtimes' int32 grid when the
    range its input was quantized to is known (`input_range` at the call, or fixed in the
    config for the network's first convolution; the logits, float in the runtimes, have none),
    and the output quantized to 8 bits unless `quantize_output` is False (the root convolution,
    whose output the first unit quantizes after the max-pool, and the logits).
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int,
        stride: int = 1,
        rate: int = 1,
        use_batch_norm: bool = False,
        activation: str | None = None,
        weight_decay: float = 1e-4,
        batch_norm_decay: float = 0.997,
        batch_norm_epsilon: float = 1e-5,
        batch_norm_scale: bool = True,
        quantize: str | None = None,
        quantize_output: bool = True,
        input_range=None,
        weight_bits: int = 8,
        groups: int = 1,
        normalizer: str = "batch_norm",
        weight_standardization: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_quantize(quantize)
        check_normalizer(normalizer)
        if quantize and (normalizer != "batch_norm" or weight_standardization):
            raise UserError(f"{self.name} has no int8 form ({NO_INT8_NORMALIZATION}); "
                            "quantization-aware training takes batch norm")
        check_weight_bits(weight_bits)
        check_positive_int("groups", groups)
        check_positive_int("filters", filters)
        check_positive_int("kernel_size", kernel_size)
        check_positive_int("stride", stride)
        check_positive_int("rate", rate)
        if stride > 1 and rate > 1:
            raise UserError(
                f"stride and rate cannot both be > 1. Received: stride={stride}, rate={rate}"
            )
        if activation not in (None, "relu"):
            raise UserError(f"activation must be None or 'relu'. Received: activation={activation!r}")
        if filters % groups:
            raise UserError(f"filters must be a multiple of groups. Received: filters={filters}, "
                            f"groups={groups}")
        self.filters = filters
        self.groups = groups
        self.normalizer = normalizer
        self.weight_standardization = bool(weight_standardization)
        self.kernel_size = kernel_size
        self.stride = stride
        self.rate = rate
        self.use_batch_norm = use_batch_norm
        self.activation = activation
        self.weight_decay = weight_decay
        self.batch_norm_decay = batch_norm_decay
        self.batch_norm_epsilon = batch_norm_epsilon
        self.batch_norm_scale = batch_norm_scale
        # The batch norm computes under the convolution's dtype policy (mixed precision is a
        # property of the whole model, sublayers included).
        self.batch_norm = (
            batch_norm("GroupNorm" if normalizer == "group_norm" else "BatchNorm",
                       batch_norm_decay, batch_norm_epsilon, batch_norm_scale,
                       dtype=self.dtype_policy, normalizer=normalizer)
            if use_batch_norm
            else None
        )
        self.quantize = quantize
        self.quantize_output = bool(quantize_output)
        self.weight_bits = int(weight_bits)
        self.input_range = None if input_range is None else tuple(float(v) for v in input_range)
        self.output_quantizer = None
        if quantize:
            if self.batch_norm is not None:  # frozen: folded into the kernel, as exported
                self.batch_norm.trainable = False
            if self.quantize_output:
                self.output_quantizer = ActivationQuantizer(name="output_quant",
                                                            dtype=self.dtype_policy)
        effective = kernel_size + (kernel_size - 1) * (rate - 1)
        pad_total = effective - 1
        self._pad = (pad_total // 2, pad_total - pad_total // 2)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise UserError(f"The channel dimension of the input to {self.name} must be known. "
                             f"Received: input_shape={input_shape}")
        if channels % self.groups:
            raise UserError(f"The input channels of {self.name} must be a multiple of groups. "
                            f"Received: channels={channels}, groups={self.groups}")
        # A grouped convolution's kernel holds each group's input channels (`ops.conv` infers
        # the groups from it, as Keras' Conv2D(groups=...) does).
        self.kernel = self.add_weight(
            name="kernel",
            shape=(self.kernel_size, self.kernel_size, channels // self.groups, self.filters),
            initializer=keras.initializers.HeNormal(),
            regularizer=slim_l2_regularizer(self.weight_decay),
        )
        self.bias = None
        if not (self.use_batch_norm or self.weight_standardization):
            self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")
        if self.batch_norm is not None:
            self.batch_norm.build(tuple(input_shape[:-1]) + (self.filters,))
        if self.output_quantizer is not None:
            self.output_quantizer.build(self.compute_output_shape(input_shape))
        self.input_spec = keras.layers.InputSpec(min_ndim=4, axes={-1: channels})

    def _conv(self, inputs, kernel, strides, padding):
        if self.groups > 1 and _grouped_convolution is not None:
            return _grouped_convolution(inputs, kernel, strides, padding, self.rate)
        return ops.conv(inputs, kernel, strides=strides, padding=padding,
                        dilation_rate=self.rate)

    def _convolve(self, inputs, kernel):
        if self.stride == 1:
            return self._conv(inputs, kernel, 1, "same")
        if self.kernel_size == 1:
            # A strided 1x1 convolution is a 1x1 convolution of every stride-th pixel; written
            # so because TensorFlow 2.21's oneDNN kernel for strided 1x1 convolutions corrupts
            # memory in training at odd batch sizes (a crash, seen on AMD Zen 5).
            inputs = ops.max_pool(inputs, pool_size=1, strides=self.stride, padding="valid")
            return self._conv(inputs, kernel, 1, "valid")
        if self._pad != (0, 0):
            inputs = ops.pad(inputs, [[0, 0], self._pad, self._pad, [0, 0]])
        return self._conv(inputs, kernel, self.stride, "valid")

    def folded_batch_norm(self):
        """Inference-mode batch norm as a kernel scale and a bias, in float32: BN(conv(x, w))
        equals conv(x, w * s) + (beta - mean * s) with s = gamma / sqrt(variance + epsilon).

        One convolution plus a bias (and ReLU) is the pattern that backends fuse (TensorFlow's
        CPU remapper, XLA); slim's graph gets the same from its fused batch-norm op. Computed
        in float32 like Keras' BatchNormalization.
        """
        norm = self.batch_norm
        scale = ops.rsqrt(ops.cast(norm.moving_variance, "float32") + norm.epsilon)
        if norm.scale:
            scale = scale * ops.cast(norm.gamma, "float32")
        offset = -ops.cast(norm.moving_mean, "float32") * scale
        if norm.center:
            offset = offset + ops.cast(norm.beta, "float32")
        return scale, offset

    @property
    def folds_batch_norm(self) -> bool:
        return self.batch_norm is not None and self.normalizer == "batch_norm"

    def inference_kernel(self):
        """The kernel the exported graph holds (batch norm folded in, weights standardised), as
        a float32 array."""
        kernel = ops.cast(self.standardized_kernel(), "float32")
        if self.folds_batch_norm:
            kernel = kernel * self.folded_batch_norm()[0]
        return ops.convert_to_numpy(kernel)

    def standardized_kernel(self):
        """The kernel, standardised per output channel where `weight_standardization` is on."""
        if not self.weight_standardization:
            return self.kernel
        kernel = ops.cast(self.kernel, "float32")
        mean = ops.mean(kernel, axis=(0, 1, 2), keepdims=True)
        variance = ops.mean(ops.square(kernel - mean), axis=(0, 1, 2), keepdims=True)
        kernel = (kernel - mean) * ops.rsqrt(variance + WEIGHT_STANDARDIZATION_EPSILON)
        return ops.cast(kernel, self.compute_dtype)

    def call(self, inputs, training=None, input_range=None):
        if self.quantize:
            return self._quantized_call(inputs, training, input_range)
        if self.folds_batch_norm and not (training and self.batch_norm.trainable):
            scale, offset = (ops.cast(v, self.compute_dtype) for v in self.folded_batch_norm())
            net = ops.add(self._convolve(inputs, ops.multiply(self.standardized_kernel(), scale)),
                          offset)
        else:
            net = self._convolve(inputs, self.standardized_kernel())
            if self.bias is not None:
                net = ops.add(net, self.bias)
            if self.batch_norm is not None:
                net = self.batch_norm(net, training=training)
        if self.activation == "relu":
            net = ops.relu(net)
        return net

    def _quantized_call(self, inputs, training, input_range):
        """The int8 arithmetic of the exported graph (class docstring), in floating point."""
        kernel, offset = ops.cast(self.kernel, "float32"), self.bias
        if self.batch_norm is not None:
            scale, offset = self.folded_batch_norm()
            kernel = kernel * scale
        input_range = input_range if input_range is not None else self.input_range
        if offset is not None:
            offset = ops.cast(offset, "float32")
            if input_range is not None:  # an int8 input: the runtimes store an int32 bias
                offset = round_bias(offset, input_range, kernel, self.weight_bits)
        kernel = ops.cast(fake_quant_weights(kernel, self.weight_bits), self.compute_dtype)
        net = self._convolve(inputs, kernel)
        if offset is not None:
            net = ops.add(net, ops.cast(offset, self.compute_dtype))
        if self.activation == "relu":
            net = ops.relu(net)
        if self.output_quantizer is not None:
            net = self.output_quantizer(net, training=training)
        return net

    def sublayers(self):
        return [layer for layer in (self.batch_norm, self.output_quantizer) if layer is not None]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], same_output_size(input_shape[1], self.stride),
                same_output_size(input_shape[2], self.stride), self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            stride=self.stride,
            rate=self.rate,
            use_batch_norm=self.use_batch_norm,
            activation=self.activation,
            weight_decay=self.weight_decay,
            batch_norm_decay=self.batch_norm_decay,
            batch_norm_epsilon=self.batch_norm_epsilon,
            batch_norm_scale=self.batch_norm_scale,
        )
        if self.groups != 1:
            config.update(groups=self.groups)
        if self.normalizer != "batch_norm":  # (files without these are slim's)
            config.update(normalizer=self.normalizer)
        if self.weight_standardization:
            config.update(weight_standardization=True)
        if self.quantize:
            config.update(quantize=self.quantize, quantize_output=self.quantize_output,
                          input_range=self.input_range, weight_bits=self.weight_bits)
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class Subsample(keras.layers.Layer):
    """slim's `subsample`: a 1x1 max-pool with stride `factor` (identity when factor == 1).

    A 1x1 max-pool with stride f keeps rows and columns 0, f, 2f, ... ('SAME' and 'VALID' agree for
    a 1x1 window). We pool 'VALID' rather than slice: its symbolic output size, (n - 1) // f + 1,
    is the one the strided convolutions produce, which JAX's shape tracing needs to add them.
    """

    def __init__(self, factor: int, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("factor", factor)
        self.factor = factor

    def call(self, inputs):
        if self.factor == 1:
            return inputs
        return ops.max_pool(inputs, pool_size=1, strides=self.factor, padding="valid")

    def compute_output_shape(self, input_shape):
        return (input_shape[0], same_output_size(input_shape[1], self.factor),
                same_output_size(input_shape[2], self.factor), input_shape[3])

    def get_config(self):
        config = super().get_config()
        config.update(factor=self.factor)
        return config


def make_divisible(value: float, divisor: int) -> int:
    """`value` rounded to the nearest multiple of `divisor`, at least `divisor` (timm's
    `make_divisible` with `round_limit=0`, as its squeeze-and-excitation uses it)."""
    return max(divisor, int(value + divisor / 2) // divisor * divisor)


@keras.saving.register_keras_serializable(package=PACKAGE)
class SqueezeExcite(keras.layers.Layer):
    """Squeeze-and-excitation (Hu et al., arXiv:1709.01507): each channel scaled by a gate
    computed from the whole image,

        x * sigmoid(expand(relu(reduce(mean over height and width of x))))

    `reduce` (to `reduced_channels`) and `expand` (back to `channels`) are 1x1 convolutions
    with biases (slim scopes `se/reduce`, `se/expand`), as timm's `SEModule` and tf_keras'
    ResNet-RS compute it.
    """

    def __init__(self, channels: int, reduced_channels: int, weight_decay: float = 1e-4,
                 **kwargs):
        super().__init__(**kwargs)
        check_positive_int("channels", channels)
        check_positive_int("reduced_channels", reduced_channels)
        self.channels = channels
        self.reduced_channels = reduced_channels
        self.weight_decay = weight_decay
        self.reduce = Conv2DSame(reduced_channels, 1, activation="relu", name="reduce",
                                 weight_decay=weight_decay, dtype=self.dtype_policy)
        self.expand = Conv2DSame(channels, 1, name="expand", weight_decay=weight_decay,
                                 dtype=self.dtype_policy)

    def build(self, input_shape):
        pooled = (input_shape[0], 1, 1, input_shape[-1])
        self.reduce.build(pooled)
        self.expand.build(self.reduce.compute_output_shape(pooled))

    def call(self, inputs):
        gate = ops.mean(inputs, axis=(1, 2), keepdims=True)
        gate = ops.sigmoid(self.expand(self.reduce(gate)))
        return ops.multiply(inputs, gate)

    def slim_sublayers(self):
        return [("reduce", self.reduce), ("expand", self.expand)]

    def sublayers(self):
        return [self.reduce, self.expand]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(channels=self.channels, reduced_channels=self.reduced_channels,
                      weight_decay=self.weight_decay)
        return config
