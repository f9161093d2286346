"""The residual-unit machinery every family shares: `ResidualUnit` (argument checks, slim's arg
scope, the shortcut, end points, slim sublayer names, config) and [1]'s shortcut options
(`make_shortcut`, `ZeroPadShortcut`).

Only `keras.layers` / `keras.ops`.

References:
  [1] Kaiming He, Xiangyu Zhang, Shaoqing Ren, Jian Sun. Deep Residual Learning for Image
      Recognition. arXiv:1512.03385
"""

from __future__ import annotations

import keras
from keras import ops

from resnet_tf.errors import UserError
from resnet_tf.models.layers import PACKAGE, Conv2DSame, Subsample, same_output_size
from resnet_tf.models.quantizers import ActivationQuantizer, check_quantize
from resnet_tf.models.resnet_utils import resnet_arg_scope
from resnet_tf.utils import check_positive_int

SHORTCUT_OPTIONS = ("A", "B", "C")


@keras.saving.register_keras_serializable(package=PACKAGE)
class ZeroPadShortcut(keras.layers.Layer):
    """Option A of [1]: a parameter-free shortcut that subsamples and zero-pads new channels."""

    def __init__(self, factor: int, extra_channels: int, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("factor", factor)
        if isinstance(extra_channels, bool) or not isinstance(extra_channels, int) or \
                extra_channels < 0:
            raise UserError(f"extra_channels must be an integer >= 0. "
                             f"Received: extra_channels={extra_channels!r}")
        self.factor = factor
        self.extra_channels = extra_channels

    def call(self, inputs):
        if self.factor > 1:
            inputs = ops.max_pool(inputs, pool_size=1, strides=self.factor, padding="valid")
        if self.extra_channels:
            inputs = ops.pad(inputs, [[0, 0], [0, 0], [0, 0], [0, self.extra_channels]])
        return inputs

    def compute_output_shape(self, input_shape):
        return (input_shape[0], same_output_size(input_shape[1], self.factor),
                same_output_size(input_shape[2], self.factor),
                input_shape[3] + self.extra_channels)

    def get_config(self):
        config = super().get_config()
        config.update(factor=self.factor, extra_channels=self.extra_channels)
        return config


def make_shortcut(option, depth_in, depth, stride, batch_norm_projection, layer_scope):
    """The shortcut of a residual unit under [1]'s options (named "shortcut", slim's scope).

      A: identity, or subsample + zero-padded channels where the depth grows (no parameters);
      B: identity / subsample, and a 1x1 projection only where the depth changes (slim's rule);
      C: a 1x1 projection in every unit.
    Projections have batch norm and no bias in post-activation units (`batch_norm_projection`),
    a bias and no batch norm in pre-activation ones (slim's `bottleneck_v2`). `layer_scope`:
    the arg scope and the unit's dtype policy.
    """
    dtype = layer_scope.get("dtype")
    if option not in SHORTCUT_OPTIONS:
        raise UserError(f"shortcut must be one of {list(SHORTCUT_OPTIONS)}. "
                         f"Received: shortcut={option!r}")
    if option == "C" or (option == "B" and depth != depth_in):
        return Conv2DSame(depth, 1, stride=stride, use_batch_norm=batch_norm_projection,
                          name="shortcut", **layer_scope)
    if option == "A" and depth != depth_in:
        if depth < depth_in:
            raise UserError(f"Shortcut option A pads channels and cannot reduce them. "
                            f"Received: depth_in={depth_in}, depth={depth}")
        return ZeroPadShortcut(stride, depth - depth_in, name="shortcut", dtype=dtype)
    return Subsample(stride, name="shortcut", dtype=dtype)


def no_int8_form(unit) -> str:
    return (f"{type(unit).__name__} units have no int8 form (e.g. [2]'s ablations: their gates, "
            "scalings and dropout are not operations the int8 runtimes quantize); "
            "quantization-aware training takes the V1 and V2 units")


class ResidualUnit(keras.layers.Layer):
    """Shared plumbing of resnet_tf's residual units: argument checks, slim's arg scope, the
    shortcut (`make_shortcut`), slim end points and sublayer names, and the config.

    A unit computes, through four hooks that subclasses override as needed:

        branch   = _branch_input(x)          relu(preact(x)) in pre-activation units, else x
        shortcut = shortcut(_shortcut_input(x, branch))     make_shortcut's option A, B or C
        residual, end points = _residual(branch)            the unit's convolutions
        output   = _merge(x, shortcut, residual)            shortcut + residual (then ReLU in
                                                            post-activation units)

    Subclasses set `slim_scope`, `unit_arg_names`, `expansion`, `preactivation`, implement
    `_make_layers()` (sublayers in slim order, as (scope, layer)) and `_residual` (calling each
    convolution through `_conv`); sublayers that take the unit's input rather than the previous
    convolution's output are named in `side_layers` (they are built on the input's shape).

    `quantize="int8"` (`resnet_tf.quantization.qat`) quantizes the unit's input (to `input_range`
    when fixed: the network's input), `relu(preact(x))` in pre-activation units, and every
    convolution (its kernel, bias and output); batch norm is frozen.
    """

    slim_scope = None
    unit_arg_names = ("depth", "stride")
    expansion = 1
    preactivation = False  # pre-activation units take a projection shortcut from `preact`
    side_layers = ()  # sublayers fed the unit's input (e.g. a gate), not the branch
    int8_form = True  # whether `quantize="int8"` (quantization-aware training) applies

    def __init__(self, depth, stride=1, rate=1, depth_bottleneck=None, shortcut="B",
                 weight_decay=1e-4, batch_norm_decay=0.997, batch_norm_epsilon=1e-5,
                 batch_norm_scale=True, quantize=None, input_range=None, **kwargs):
        super().__init__(**kwargs)
        check_quantize(quantize)
        if quantize and not self.int8_form:
            raise UserError(no_int8_form(self))
        for key, value in (("depth", depth), ("stride", stride), ("rate", rate)) + (
                (("depth_bottleneck", depth_bottleneck),) if "depth_bottleneck" in
                self.unit_arg_names else ()):
            check_positive_int(key, value)
        if stride > 1 and rate > 1:
            raise UserError(f"stride and rate cannot both be > 1. "
                            f"Received: stride={stride}, rate={rate}")
        if shortcut not in SHORTCUT_OPTIONS:
            raise UserError(f"shortcut must be one of {list(SHORTCUT_OPTIONS)}. "
                            f"Received: shortcut={shortcut!r}")
        self.depth = depth
        self.depth_bottleneck = depth_bottleneck
        self.stride = stride
        self.rate = rate
        self.shortcut_option = shortcut
        self.arg_scope = resnet_arg_scope(weight_decay, batch_norm_decay, batch_norm_epsilon,
                                          batch_norm_scale)
        self.quantize = quantize
        self.input_range = None if input_range is None else tuple(float(v) for v in input_range)
        # What every sublayer is built with: slim's arg scope and this unit's dtype policy
        # (each sublayer computes as the unit does, also in a model loaded elsewhere).
        self.layer_scope = dict(self.arg_scope, dtype=self.dtype_policy)
        if quantize:
            self.layer_scope["quantize"] = quantize
        named = self._make_layers()
        for scope, layer in named:
            setattr(self, scope, layer)
        self.sublayer_scopes = tuple(scope for scope, _ in named)
        self.shortcut = None  # known once the input depth is (build)
        self.quantizers = []
        if quantize:
            self.input_quant = ActivationQuantizer(fixed_range=self.input_range,
                                                   name="input_quant", dtype=self.dtype_policy)
            self.quantizers.append(self.input_quant)
            if self.preactivation:
                self.preact_quant = ActivationQuantizer(name="preact_quant",
                                                        dtype=self.dtype_policy)
                self.quantizers.append(self.preact_quant)
            for _, layer in named:  # frozen, as the exported graph computes them
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.trainable = False

    @property
    def named_layers(self):
        """(slim scope, layer) of the residual path's sublayers, in slim's order."""
        return [(scope, getattr(self, scope)) for scope in self.sublayer_scopes]

    def _make_layers(self):
        raise NotImplementedError

    def _branch_input(self, inputs, training):
        """The residual branch's input: slim's `preact = relu(BN(x))` in pre-activation units."""
        if self.preactivation:
            branch = ops.relu(self.preact(inputs, training=training))
            return self.preact_quant(branch, training=training) if self.quantize else branch
        return inputs

    @property
    def branch_quantizer(self):
        """The quantizer of the residual branch's input (quantized units)."""
        return self.preact_quant if self.preactivation else self.input_quant

    def _conv(self, conv, inputs, training, source=None):
        """`conv(inputs)`; in a quantized unit, also given the range `inputs` were quantized to:
        `source` is the quantizer or the convolution that produced them (default: the
        branch's)."""
        if not self.quantize:
            return conv(inputs, training=training)
        source = self.branch_quantizer if source is None else source
        quantizer = source if isinstance(source, ActivationQuantizer) else source.output_quantizer
        return conv(inputs, training=training, input_range=quantizer.range())

    def _shortcut_input(self, inputs, branch):
        """slim's bottleneck_v2 projects from `preact`; identity shortcuts take x itself."""
        return branch if (self.preactivation and self.projection_shortcut) else inputs

    def _residual(self, branch, training):
        """Returns (residual, {end point name: tensor})."""
        raise NotImplementedError

    def _merge(self, inputs, shortcut, residual, training):
        output = ops.add(shortcut, residual)
        return output if self.preactivation else ops.relu(output)

    def build(self, input_shape):
        depth_in = input_shape[-1]
        self.shortcut = make_shortcut(self.shortcut_option, depth_in, self.depth, self.stride,
                                      not self.preactivation, self.layer_scope)
        self.shortcut.build(input_shape)
        for quantizer in self.quantizers:
            quantizer.build(input_shape)
        shape = input_shape
        for scope, layer in self.named_layers:
            if scope in self.side_layers:
                layer.build(input_shape)
                continue
            layer.build(shape)
            if isinstance(layer, Conv2DSame):
                shape = layer.compute_output_shape(shape)
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: depth_in})

    @property
    def projection_shortcut(self) -> bool:
        return isinstance(self.shortcut, Conv2DSame)

    def call(self, inputs, training=None, return_end_points=False):
        if self.quantize:
            inputs = self.input_quant(inputs, training=training)
        branch = self._branch_input(inputs, training)
        source = self._shortcut_input(inputs, branch)
        if self.projection_shortcut:
            shortcut = self._conv(self.shortcut, source, training, None if source is branch
                                  else self.input_quant if self.quantize else None)
        else:
            shortcut = self.shortcut(source)
        residual, points = self._residual(branch, training)
        output = self._merge(inputs, shortcut, residual, training)
        if not return_end_points:
            return output
        if self.projection_shortcut:
            points["shortcut"] = shortcut
        return output, points

    def sublayers(self):
        """Every layer inside the unit (the shortcut once it is built)."""
        return [layer for _, layer in self.named_layers] + (
            [self.shortcut] if self.shortcut is not None else []) + self.quantizers

    def slim_sublayers(self):
        named = list(self.named_layers)
        if self.projection_shortcut:
            named.insert(1 if self.preactivation else 0, ("shortcut", self.shortcut))
        return named

    def get_config(self):
        config = super().get_config()
        config.update(depth=self.depth, stride=self.stride, rate=self.rate,
                      shortcut=self.shortcut_option, **self.arg_scope)
        if "depth_bottleneck" in self.unit_arg_names:
            config.update(depth_bottleneck=self.depth_bottleneck)
        if self.quantize:
            config.update(quantize=self.quantize, input_range=self.input_range)
        return config
