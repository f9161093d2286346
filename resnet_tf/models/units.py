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
from resnet_tf.models.layers import (
    NO_INT8_NORMALIZATION,
    PACKAGE,
    Conv2DSame,
    Subsample,
    check_normalizer,
    same_output_size,
)
from resnet_tf.models.quantizers import (
    ActivationQuantizer,
    check_quantize,
    check_weight_bits,
)
from resnet_tf.models.resnet_utils import resnet_arg_scope
from resnet_tf.utils import check_positive_int

SHORTCUT_OPTIONS = ("A", "B", "C", "D")


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


def make_shortcut(option, depth_in, depth, stride, batch_norm_projection, layer_scope,
                  dilated_stride=1):
    """The shortcut of a residual unit under [1]'s options (named "shortcut", slim's scope).

      A: identity, or subsample + zero-padded channels where the depth grows (no parameters);
      B: identity / subsample, and a 1x1 projection only where the depth changes (slim's rule);
      C: a 1x1 projection in every unit;
      D: ResNet-D's (Bag of Tricks, arXiv:1812.01187; timm's `avg_down`): as B, projecting also
         where the unit strides (or would, but for `output_stride`: `dilated_stride`), with the
         1x1 projection at stride 1 after a 2x2 average pool (`AveragePoolShortcut`, which the
         unit applies) that strides instead.
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
    if option == "D" and (depth != depth_in or stride > 1 or dilated_stride > 1):
        return Conv2DSame(depth, 1, use_batch_norm=batch_norm_projection, name="shortcut",
                          **layer_scope)
    if option == "A" and depth != depth_in:
        if depth < depth_in:
            raise UserError(f"Shortcut option A pads channels and cannot reduce them. "
                            f"Received: depth_in={depth_in}, depth={depth}")
        return ZeroPadShortcut(stride, depth - depth_in, name="shortcut", dtype=dtype)
    return Subsample(stride, name="shortcut", dtype=dtype)


@keras.saving.register_keras_serializable(package=PACKAGE)
class AveragePoolShortcut(keras.layers.Layer):
    """The average pool before a ResNet-D projection shortcut (shortcut option D), as timm's
    `downsample_avg` computes it: a 2x2 pool with stride `stride`, the windows past the edge
    averaging the pixels they hold ('SAME'). Where `output_stride` made the unit atrous
    (`dilated_stride` > 1, stride 1), the pool keeps every position: each averages its pixel
    and those `rate` pixels below and right of it, zeros past the edge (timm's
    `AvgPool2dSame(2, 1)` at rate 1; at larger rates the pixels the nominal pool averages, so
    that atrous features equal the nominal ones where timm's would not)."""

    def __init__(self, stride: int = 1, dilated_stride: int = 1, rate: int = 1, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("stride", stride)
        check_positive_int("dilated_stride", dilated_stride)
        check_positive_int("rate", rate)
        self.stride = stride
        self.dilated_stride = dilated_stride
        self.rate = rate

    def call(self, inputs):
        if self.stride > 1:
            return ops.average_pool(inputs, 2, strides=self.stride, padding="same")
        r = self.rate
        padded = ops.pad(inputs, [[0, 0], [0, r], [0, r], [0, 0]])
        total = (padded[:, :-r, :-r] + padded[:, r:, :-r] + padded[:, :-r, r:] +
                 padded[:, r:, r:])
        return total * ops.cast(0.25, total.dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], same_output_size(input_shape[1], self.stride),
                same_output_size(input_shape[2], self.stride), input_shape[3])

    def get_config(self):
        config = super().get_config()
        config.update(stride=self.stride, dilated_stride=self.dilated_stride, rate=self.rate)
        return config


def no_int8_form(unit) -> str:
    reason = getattr(unit, "no_int8_reason", None)
    if reason:
        return (f"unit {unit.name!r} has no int8 form ({reason}); quantization-aware training "
                "takes V1 and V2 units without it")
    return (f"{type(unit).__name__} units have no int8 form (e.g. [2]'s ablations: their "
            "gates, scalings and dropout are not operations the int8 runtimes quantize); "
            "quantization-aware training takes the V1 and V2 units")


class ResidualUnit(keras.layers.Layer):
    """Shared plumbing of resnet_tf's residual units: argument checks, slim's arg scope, the
    shortcut (`make_shortcut`), slim end points and sublayer names, and the config.

    A unit computes, through four hooks that subclasses override as needed:

        branch   = _branch_input(x)          relu(preact(x)) in pre-activation units, else x
        shortcut = shortcut(_shortcut_input(x, branch))     make_shortcut's option A-D
        residual, end points = _residual(branch)            the unit's convolutions
        output   = _merge(x, shortcut, residual)            shortcut + residual (then ReLU in
                                                            post-activation units)

    `drop_path_rate` > 0: stochastic depth (Huang et al., arXiv:1603.09382), in training only:
    each image's residual is dropped with that probability, and kept ones scaled by 1 / (1 -
    rate) (timm's `DropPath`); inference, exports and `evaluate` never see it.
    `dilated_stride`: the stride `output_stride` replaced by atrous convolution in this unit
    (`stack_blocks_dense`; only shortcut D's average pool depends on it).

    Subclasses set `slim_scope`, `unit_arg_names`, `expansion`, `preactivation`, implement
    `_make_layers()` (sublayers in slim order, as (scope, layer)) and `_residual` (calling each
    convolution through `_conv`); sublayers that take the unit's input rather than the previous
    convolution's output are named in `side_layers` (they are built on the input's shape).

    `quantize="int8"` (`resnet_tf.quantization.qat`) quantizes the unit's input (to `input_range`
    when fixed: the network's input), `relu(preact(x))` in pre-activation units, and every
    convolution (its kernel on `weight_bits` codes, bias and output); batch norm is frozen.
    """

    slim_scope = None
    unit_arg_names = ("depth", "stride")
    expansion = 1
    preactivation = False  # pre-activation units take a projection shortcut from `preact`
    side_layers = ()  # sublayers fed the unit's input (e.g. a gate), not the branch
    int8_form = True  # whether `quantize="int8"` (quantization-aware training) applies

    def __init__(self, depth, stride=1, rate=1, depth_bottleneck=None, shortcut="B",
                 weight_decay=1e-4, batch_norm_decay=0.997, batch_norm_epsilon=1e-5,
                 batch_norm_scale=True, quantize=None, input_range=None, weight_bits=8,
                 drop_path_rate=0.0, dilated_stride=1, normalizer="batch_norm",
                 weight_standardization=False, **kwargs):
        super().__init__(**kwargs)
        check_normalizer(normalizer)
        if normalizer != "batch_norm" or weight_standardization:
            self.no_int8_reason = NO_INT8_NORMALIZATION
        check_quantize(quantize)
        check_weight_bits(weight_bits)
        check_positive_int("dilated_stride", dilated_stride)
        if not 0.0 <= drop_path_rate < 1.0:
            raise UserError(f"drop_path_rate must be in [0, 1). "
                            f"Received: drop_path_rate={drop_path_rate!r}")
        if shortcut == "D":
            self.no_int8_reason = ("ResNet-D's average-pool shortcut is not on the grid the "
                                   "int8 runtimes keep")
        if getattr(self, "no_int8_reason", None):
            self.int8_form = False
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
        self.drop_path_rate = float(drop_path_rate)
        self.dilated_stride = dilated_stride
        self.shortcut_pool = None  # shortcut D's average pool, where it projects (build)
        self.drop_path = keras.layers.Dropout(
            self.drop_path_rate, noise_shape=(None, 1, 1, 1), name="drop_path",
            dtype=self.dtype_policy) if self.drop_path_rate else None
        self.arg_scope = resnet_arg_scope(weight_decay, batch_norm_decay, batch_norm_epsilon,
                                          batch_norm_scale)
        self.quantize = quantize
        self.input_range = None if input_range is None else tuple(float(v) for v in input_range)
        self.weight_bits = int(weight_bits)
        # What every sublayer is built with: slim's arg scope and this unit's dtype policy
        # (each sublayer computes as the unit does, also in a model loaded elsewhere).
        self.layer_scope = dict(self.arg_scope, dtype=self.dtype_policy)
        self.normalizer = normalizer
        self.weight_standardization = bool(weight_standardization)
        if normalizer != "batch_norm":  # (a tracked dict: one key at a time)
            self.layer_scope["normalizer"] = normalizer
        if weight_standardization:
            self.layer_scope["weight_standardization"] = True
        if quantize:
            self.layer_scope["quantize"] = quantize  # (a tracked dict: no update(**kwargs))
            self.layer_scope["weight_bits"] = self.weight_bits
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
                                      not self.preactivation, self.layer_scope,
                                      self.dilated_stride)
        shortcut_shape = input_shape
        if self.shortcut_option == "D" and isinstance(self.shortcut, Conv2DSame) and (
                self.stride > 1 or self.dilated_stride > 1):
            self.shortcut_pool = AveragePoolShortcut(self.stride, self.dilated_stride,
                                                     self.rate, name="shortcut_pool",
                                                     dtype=self.dtype_policy)
            shortcut_shape = self.shortcut_pool.compute_output_shape(input_shape)
        self.shortcut.build(shortcut_shape)
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
        if self.shortcut_pool is not None:
            source = self.shortcut_pool(source)
        if self.projection_shortcut:
            shortcut = self._conv(self.shortcut, source, training, None if source is branch
                                  else self.input_quant if self.quantize else None)
        else:
            shortcut = self.shortcut(source)
        residual, points = self._residual(branch, training)
        if self.drop_path is not None:
            residual = self.drop_path(residual, training=training)
        output = self._merge(inputs, shortcut, residual, training)
        if not return_end_points:
            return output
        if self.projection_shortcut:
            points["shortcut"] = shortcut
        return output, points

    def sublayers(self):
        """Every layer inside the unit (the shortcut once it is built)."""
        return [layer for _, layer in self.named_layers] + (
            [self.shortcut] if self.shortcut is not None else []) + self.quantizers + [
            layer for layer in (self.shortcut_pool, self.drop_path) if layer is not None]

    def slim_sublayers(self):
        named = list(self.named_layers)
        if self.projection_shortcut:
            named.insert(1 if self.preactivation else 0, ("shortcut", self.shortcut))
        return named

    def get_config(self):
        config = super().get_config()
        config.update(depth=self.depth, stride=self.stride, rate=self.rate,
                      shortcut=self.shortcut_option, **self.arg_scope)
        if self.drop_path_rate:  # files without these keys are units without them
            config.update(drop_path_rate=self.drop_path_rate)
        if self.dilated_stride != 1:
            config.update(dilated_stride=self.dilated_stride)
        if self.normalizer != "batch_norm":
            config.update(normalizer=self.normalizer)
        if self.weight_standardization:
            config.update(weight_standardization=True)
        if "depth_bottleneck" in self.unit_arg_names:
            config.update(depth_bottleneck=self.depth_bottleneck)
        if self.quantize:
            config.update(quantize=self.quantize, input_range=self.input_range,
                          weight_bits=self.weight_bits)
        return config
