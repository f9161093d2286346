"""Infrastructure shared by every ResNet family: slim's `resnet_utils.py` in Keras 3.

The names are TF-slim's, so a reader who knows `tf_slim.nets.resnet_utils` finds each piece here:
`Block`, `subsample`, `conv2d_same`, `stack_blocks_dense` and `resnet_arg_scope`.

Where slim uses implicit global state (`arg_scope`, graph collections), this module uses plain
arguments: `resnet_arg_scope()` returns a dict of keyword arguments that the layers take, and
`stack_blocks_dense` fills an `end_points` dict that the caller passes in.

Keras layer names may not contain "/", so a layer whose slim scope is
`block1/unit_1/bottleneck_v2` is named `block1.unit_1.bottleneck_v2`: replacing "." by "/" gives
the slim scope back (see `slim_variables.py`).

Only `keras.layers` / `keras.ops` are used: this module runs on the TensorFlow, JAX and PyTorch
backends.

References:
  [1] Kaiming He, Xiangyu Zhang, Shaoqing Ren, Jian Sun. Deep Residual Learning for Image
      Recognition. arXiv:1512.03385
  [2] Kaiming He, Xiangyu Zhang, Shaoqing Ren, Jian Sun. Identity Mappings in Deep Residual
      Networks. arXiv:1603.05027
"""

from __future__ import annotations

import collections

import keras
from keras import ops

from resnet_tf.utils import check_positive_int

PACKAGE = "resnet_tf"


def resnet_arg_scope(
    weight_decay: float = 1e-4,
    batch_norm_decay: float = 0.997,
    batch_norm_epsilon: float = 1e-5,
    batch_norm_scale: bool = True,
) -> dict:
    """slim's `resnet_arg_scope`, as keyword arguments for the layers of this package.

    The defaults are slim's (appropriate for the reference models of [1, 2]):
    L2 weight decay on conv weights only, He (variance-scaling, fan-in, factor 2) init, biases
    zero, and batch norm with decay 0.997, epsilon 1e-5 and a learned scale (gamma).
    """
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0. Received: weight_decay={weight_decay}")
    if not 0.0 <= batch_norm_decay < 1.0:
        raise ValueError(
            f"batch_norm_decay must be in [0, 1). Received: batch_norm_decay={batch_norm_decay}"
        )
    if batch_norm_epsilon <= 0:
        raise ValueError(
            f"batch_norm_epsilon must be > 0. Received: batch_norm_epsilon={batch_norm_epsilon}"
        )
    return dict(
        weight_decay=float(weight_decay),
        batch_norm_decay=float(batch_norm_decay),
        batch_norm_epsilon=float(batch_norm_epsilon),
        batch_norm_scale=bool(batch_norm_scale),
    )


def slim_l2_regularizer(weight_decay: float):
    """slim's `l2_regularizer(weight_decay)`: `weight_decay * tf.nn.l2_loss(w)`.

    `tf.nn.l2_loss` is `sum(w**2) / 2`, while Keras' `L2(l)` is `l * sum(w**2)`: hence the half.
    """
    return keras.regularizers.L2(weight_decay / 2.0) if weight_decay > 0 else None


def batch_norm(name: str, batch_norm_decay=0.997, batch_norm_epsilon=1e-5, batch_norm_scale=True,
               **unused_arg_scope):
    """slim's `batch_norm` under a `resnet_arg_scope`, as a Keras layer.

    Deliberate difference from slim: in training mode slim's fused batch norm updates the moving
    variance with the Bessel-corrected (n / (n - 1)) batch variance, Keras with the biased one. The
    normalised outputs are identical; only the moving average drifts differently.
    """
    return keras.layers.BatchNormalization(
        axis=-1,
        momentum=batch_norm_decay,
        epsilon=batch_norm_epsilon,
        center=True,
        scale=batch_norm_scale,
        name=name,
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

    Like slim's `conv2d`, the layer optionally applies batch norm (scope `BatchNorm`) and a ReLU
    after the convolution. Without batch norm it has a bias, with it none (slim's `normalizer_fn`
    replaces the bias). Weight decay applies to the kernel only.
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
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_int("filters", filters)
        check_positive_int("kernel_size", kernel_size)
        check_positive_int("stride", stride)
        check_positive_int("rate", rate)
        if stride > 1 and rate > 1:
            raise ValueError(
                f"stride and rate cannot both be > 1. Received: stride={stride}, rate={rate}"
            )
        if activation not in (None, "relu"):
            raise ValueError(f"activation must be None or 'relu'. Received: activation={activation!r}")
        self.filters = filters
        self.kernel_size = kernel_size
        self.stride = stride
        self.rate = rate
        self.use_batch_norm = use_batch_norm
        self.activation = activation
        self.weight_decay = weight_decay
        self.batch_norm_decay = batch_norm_decay
        self.batch_norm_epsilon = batch_norm_epsilon
        self.batch_norm_scale = batch_norm_scale
        self.batch_norm = (
            batch_norm("BatchNorm", batch_norm_decay, batch_norm_epsilon, batch_norm_scale)
            if use_batch_norm
            else None
        )
        effective = kernel_size + (kernel_size - 1) * (rate - 1)
        pad_total = effective - 1
        self._pad = (pad_total // 2, pad_total - pad_total // 2)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"The channel dimension of the input to {self.name} must be known. "
                             f"Received: input_shape={input_shape}")
        self.kernel = self.add_weight(
            name="kernel",
            shape=(self.kernel_size, self.kernel_size, channels, self.filters),
            initializer=keras.initializers.HeNormal(),
            regularizer=slim_l2_regularizer(self.weight_decay),
        )
        self.bias = None
        if not self.use_batch_norm:
            self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")
        if self.batch_norm is not None:
            self.batch_norm.build(tuple(input_shape[:-1]) + (self.filters,))
        self.input_spec = keras.layers.InputSpec(min_ndim=4, axes={-1: channels})

    def _convolve(self, inputs, kernel):
        if self.stride == 1:
            return ops.conv(inputs, kernel, strides=1, padding="same", dilation_rate=self.rate)
        if self._pad != (0, 0):
            inputs = ops.pad(inputs, [[0, 0], self._pad, self._pad, [0, 0]])
        return ops.conv(inputs, kernel, strides=self.stride, padding="valid")

    def _folded_batch_norm(self):
        """Inference-mode batch norm as a kernel scale and a bias: BN(conv(x, w)) equals
        conv(x, w * s) + (beta - mean * s) with s = gamma / sqrt(variance + epsilon).

        One convolution plus a bias (and ReLU) is the pattern that backends fuse (TensorFlow's
        CPU remapper, XLA); slim's graph gets the same from its fused batch-norm op. Computed
        in float32 like Keras' BatchNormalization, then cast to the compute dtype.
        """
        norm = self.batch_norm
        scale = ops.rsqrt(ops.cast(norm.moving_variance, "float32") + norm.epsilon)
        if norm.scale:
            scale = scale * ops.cast(norm.gamma, "float32")
        offset = -ops.cast(norm.moving_mean, "float32") * scale
        if norm.center:
            offset = offset + ops.cast(norm.beta, "float32")
        return ops.cast(scale, self.compute_dtype), ops.cast(offset, self.compute_dtype)

    def call(self, inputs, training=None):
        if self.batch_norm is not None and not (training and self.batch_norm.trainable):
            scale, offset = self._folded_batch_norm()
            net = ops.add(self._convolve(inputs, ops.multiply(self.kernel, scale)), offset)
        else:
            net = self._convolve(inputs, self.kernel)
            if self.bias is not None:
                net = ops.add(net, self.bias)
            if self.batch_norm is not None:
                net = self.batch_norm(net, training=training)
        if self.activation == "relu":
            net = ops.relu(net)
        return net

    def compute_output_shape(self, input_shape):
        def out(size):
            if size is None:
                return None
            return -(-size // self.stride)  # ceil: 'SAME' output size

        return (input_shape[0], out(input_shape[1]), out(input_shape[2]), self.filters)

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
        return config


def conv2d_same(inputs, num_outputs, kernel_size, stride, rate=1, name=None, **conv_kwargs):
    """slim's `conv2d_same(inputs, num_outputs, kernel_size, stride, rate)`, functional style.

    By default a plain convolution with bias (slim's `conv2d` with `normalizer_fn=None,
    activation_fn=None`); pass `use_batch_norm=True, activation="relu"` for slim's arg-scoped conv.
    """
    return Conv2DSame(num_outputs, kernel_size, stride=stride, rate=rate, name=name,
                      **conv_kwargs)(inputs)


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
        def out(size):
            return None if size is None else -(-size // self.factor)

        return (input_shape[0], out(input_shape[1]), out(input_shape[2]), input_shape[3])

    def get_config(self):
        config = super().get_config()
        config.update(factor=self.factor)
        return config


def subsample(inputs, factor, name=None):
    """slim's `subsample(inputs, factor)`, functional style."""
    if factor == 1:
        return inputs
    return Subsample(factor, name=name)(inputs)


def _unit_layer_class(unit_fn):
    """A Block's `unit_fn` may be a unit layer class or its slim-style function."""
    return getattr(unit_fn, "layer_class", unit_fn)


class Block(collections.namedtuple("Block", ["scope", "unit_fn", "args"])):
    """A named tuple describing a ResNet block, as in slim.

    Its parts are:
      scope: the block's name, e.g. "block1".
      unit_fn: the residual unit, e.g. `Bottleneck` (or slim-style `bottleneck`).
      args: one entry per unit, either slim's dict form
        `{"depth": 256, "depth_bottleneck": 64, "stride": 1}` or the seed's tuple form
        `(depth, depth_bottleneck, stride)`. They are normalised to dicts and validated here.
    """

    __slots__ = ()

    def __new__(cls, scope, unit_fn, args):
        if not isinstance(scope, str) or not scope or "/" in scope or "." in scope:
            raise ValueError(f"Block scope must be a non-empty name without '/' or '.'. "
                             f"Received: scope={scope!r}")
        layer_class = _unit_layer_class(unit_fn)
        arg_names = getattr(layer_class, "unit_arg_names", None)
        if arg_names is None:
            raise ValueError(f"unit_fn must be a residual unit of resnet_tf (with "
                             f"`unit_arg_names`). Received: unit_fn={unit_fn!r}")
        if isinstance(args, (str, bytes)) or not hasattr(args, "__iter__"):
            raise ValueError(f"Block args must be a list of units. Received: args={args!r}")
        units = []
        for i, unit in enumerate(args):
            if isinstance(unit, dict):
                unknown = set(unit) - set(arg_names)
                if unknown:
                    raise ValueError(f"Block {scope!r} unit {i + 1} has unknown keys "
                                     f"{sorted(unknown)}; expected {list(arg_names)}. "
                                     f"Received: {unit!r}")
                unit = dict(unit)
            elif isinstance(unit, (tuple, list)):
                if len(unit) != len(arg_names):
                    raise ValueError(f"Block {scope!r} unit {i + 1} must be a tuple "
                                     f"{tuple(arg_names)}. Received: {tuple(unit)!r}")
                unit = dict(zip(arg_names, unit))
            else:
                raise ValueError(f"Block {scope!r} unit {i + 1} must be a dict or tuple. "
                                 f"Received: {unit!r}")
            unit.setdefault("stride", 1)
            for key, value in unit.items():
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ValueError(f"Block {scope!r} unit {i + 1}: {key} must be a positive "
                                     f"integer. Received: {key}={value!r}")
            missing = set(arg_names) - set(unit)
            if missing:
                raise ValueError(f"Block {scope!r} unit {i + 1} is missing {sorted(missing)}. "
                                 f"Received: {unit!r}")
            units.append(unit)
        if not units:
            raise ValueError(f"Block {scope!r} must have at least one unit. Received: args={args!r}")
        return super().__new__(cls, scope, unit_fn, units)


def check_output_stride(blocks, output_stride, initial_stride=1):
    """Validates `output_stride` against the blocks before anything is built (slim checks late).

    Returns the output stride the blocks must produce (None: nominal).
    """
    if output_stride is None:
        return None
    if isinstance(output_stride, bool) or not isinstance(output_stride, int) or output_stride < 1:
        raise ValueError(f"output_stride must be a positive integer or None. "
                         f"Received: output_stride={output_stride!r}")
    reachable = [initial_stride]
    for block in blocks:
        for unit in block.args:
            reachable.append(reachable[-1] * unit["stride"])
    if output_stride not in reachable:
        raise ValueError(
            f"The target output_stride cannot be reached: the unit strides give "
            f"{sorted(set(reachable))}. Received: output_stride={output_stride}")
    return output_stride


def stack_blocks_dense(net, blocks, output_stride=None, end_points=None, block_info=None,
                       current_stride=1, **arg_scope):
    """Stacks ResNet `Block`s and controls output feature density, as slim does.

    Units are named `<block.scope>.unit_<i>.<unit scope>` (slim: `block1/unit_1/bottleneck_v2`).
    With `output_stride` set, units that would take the running stride past it run with stride 1
    and a growing atrous rate instead ([2]; cf. DeepLab). `current_stride` is the stride of `net`
    relative to the image (slim divides output_stride by 4 for the root block instead).

    Args:
      net: a `[batch, height, width, channels]` Keras tensor.
      blocks: a list of `Block`.
      output_stride: None (nominal) or the requested ratio of input to output resolution; it must
        equal the running product of unit strides at some unit (a `ValueError` otherwise).
      end_points: optional dict; each block's output is stored under its scope name.
      block_info: optional dict; each block's `{"stride": s, "channels": c}` is stored under its
        scope name (for feature pyramids).
      **arg_scope: `resnet_arg_scope()` keywords given to every unit.

    Returns:
      The output of the last block.
    """
    check_output_stride(blocks, output_stride, current_stride)
    rate = 1
    for block in blocks:
        layer_class = _unit_layer_class(block.unit_fn)
        for i, unit in enumerate(block.args):
            name = f"{block.scope}.unit_{i + 1}.{layer_class.slim_scope}"
            if output_stride is not None and current_stride == output_stride:
                # Target reached: stride 1 here, and later units dilate by this unit's stride.
                layer = layer_class(**dict(unit, stride=1), rate=rate, name=name, **arg_scope)
                rate *= unit["stride"]
            else:
                layer = layer_class(**unit, rate=1, name=name, **arg_scope)
                current_stride *= unit["stride"]
            net = layer(net)
        if end_points is not None:
            end_points[block.scope] = net
        if block_info is not None:
            block_info[block.scope] = {"stride": current_stride,
                                       "channels": int(net.shape[-1])}
    return net



def _check_input_shape(input_shape):
    if input_shape is None:
        return (None, None, 3)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or any(
        d is not None and (isinstance(d, bool) or not isinstance(d, int) or d < 1)
        for d in input_shape
    ) or input_shape[-1] is None:
        raise ValueError("input_shape must be (height, width, channels) with positive sizes "
                         f"(height and width may be None). Received: input_shape={input_shape}")
    return input_shape


def resnet_model(blocks, *, root=None, postnorm=False, num_classes=None, global_pool=True,
                 output_stride=None, spatial_squeeze=True, input_shape=None, name="resnet",
                 arg_scope=None) -> keras.Model:
    """The functional model every ResNet family shares (slim's `resnet_v1` / `resnet_v2` body).

    images -> `root` layers (each may have a `stride`/`strides`) -> `stack_blocks_dense` ->
    optional `postnorm` (BN + ReLU, for pre-activation units) -> `pool5` (global mean,
    keepdims) -> `logits` (1x1 conv with bias) -> `spatial_squeeze`.
    """
    arg_scope = resnet_arg_scope() if arg_scope is None else arg_scope
    if num_classes is not None and (isinstance(num_classes, bool) or
                                    not isinstance(num_classes, int) or num_classes < 1):
        raise ValueError(f"num_classes must be a positive integer or None. "
                         f"Received: num_classes={num_classes!r}")
    if num_classes and spatial_squeeze and not global_pool:
        raise ValueError("spatial_squeeze=True squeezes [N, 1, 1, C] logits and needs "
                         "global_pool=True; pass spatial_squeeze=False for dense logits. "
                         f"Received: global_pool={global_pool}, spatial_squeeze={spatial_squeeze}")
    if not blocks or not all(isinstance(b, Block) for b in blocks):
        raise ValueError(f"blocks must be a non-empty list of Block. Received: blocks={blocks!r}")
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"name must be a non-empty string without '/'. Received: name={name!r}")
    root = list(root or [])
    root_stride = 1
    for layer in root:
        strides = getattr(layer, "stride", None) or getattr(layer, "strides", 1)
        root_stride *= strides[0] if isinstance(strides, (tuple, list)) else strides
    if root_stride > 1 and output_stride is not None and (
        not isinstance(output_stride, int) or output_stride % root_stride != 0
    ):
        raise ValueError(f"The output_stride needs to be a multiple of {root_stride} (the root "
                         f"block's stride). Received: output_stride={output_stride!r}")
    check_output_stride(blocks, output_stride, root_stride)
    input_shape = _check_input_shape(input_shape)

    images = keras.Input(shape=input_shape, name="images")
    net = images
    for layer in root:
        net = layer(net)
    net = stack_blocks_dense(net, blocks, output_stride, current_stride=root_stride, **arg_scope)
    if postnorm:
        net = batch_norm("postnorm", **arg_scope)(net)
        net = keras.layers.ReLU(name="postnorm.relu")(net)
    if global_pool:
        net = keras.layers.GlobalAveragePooling2D(keepdims=True, name="pool5")(net)
    if num_classes:
        net = Conv2DSame(num_classes, 1, name="logits", **arg_scope)(net)
        if spatial_squeeze:
            net = keras.layers.Reshape((num_classes,), name="spatial_squeeze")(net)
    return keras.Model(images, net, name=name)


SHORTCUT_OPTIONS = ("A", "B", "C")


@keras.saving.register_keras_serializable(package=PACKAGE)
class ZeroPadShortcut(keras.layers.Layer):
    """Option A of [1]: a parameter-free shortcut that subsamples and zero-pads new channels."""

    def __init__(self, factor: int, extra_channels: int, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("factor", factor)
        if isinstance(extra_channels, bool) or not isinstance(extra_channels, int) or \
                extra_channels < 0:
            raise ValueError(f"extra_channels must be an integer >= 0. "
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
        def out(size):
            return None if size is None else -(-size // self.factor)

        return (input_shape[0], out(input_shape[1]), out(input_shape[2]),
                input_shape[3] + self.extra_channels)

    def get_config(self):
        config = super().get_config()
        config.update(factor=self.factor, extra_channels=self.extra_channels)
        return config


def make_shortcut(option, depth_in, depth, stride, batch_norm_projection, arg_scope):
    """The shortcut of a residual unit under [1]'s options (named "shortcut", slim's scope).

      A: identity, or subsample + zero-padded channels where the depth grows (no parameters);
      B: identity / subsample, and a 1x1 projection only where the depth changes (slim's rule);
      C: a 1x1 projection in every unit.
    Projections have batch norm and no bias in post-activation units (`batch_norm_projection`),
    a bias and no batch norm in pre-activation ones (slim's `bottleneck_v2`).
    """
    if option not in SHORTCUT_OPTIONS:
        raise ValueError(f"shortcut must be one of {list(SHORTCUT_OPTIONS)}. "
                         f"Received: shortcut={option!r}")
    if option == "C" or (option == "B" and depth != depth_in):
        return Conv2DSame(depth, 1, stride=stride, use_batch_norm=batch_norm_projection,
                          name="shortcut", **arg_scope)
    if option == "A" and depth != depth_in:
        if depth < depth_in:
            raise ValueError(f"Shortcut option A pads channels and cannot reduce them. "
                             f"Received: depth_in={depth_in}, depth={depth}")
        return ZeroPadShortcut(stride, depth - depth_in, name="shortcut")
    return Subsample(stride, name="shortcut")


class ResidualUnit(keras.layers.Layer):
    """Shared plumbing of resnet_tf's residual units: argument checks, slim's arg scope, the
    shortcut (`make_shortcut`), slim end points and sublayer names, and the config.

    Subclasses set `slim_scope`, `unit_arg_names`, `expansion`, `preactivation`, and implement
    `_make_layers()` (sublayers in slim order, as (scope, layer)) and `_residual(...)`.
    """

    slim_scope = None
    unit_arg_names = ("depth", "stride")
    expansion = 1
    preactivation = False  # pre-activation units take a projection shortcut from `preact`

    def __init__(self, depth, stride=1, rate=1, depth_bottleneck=None, shortcut="B",
                 weight_decay=1e-4, batch_norm_decay=0.997, batch_norm_epsilon=1e-5,
                 batch_norm_scale=True, **kwargs):
        super().__init__(**kwargs)
        for key, value in (("depth", depth), ("stride", stride), ("rate", rate)) + (
                (("depth_bottleneck", depth_bottleneck),) if "depth_bottleneck" in
                self.unit_arg_names else ()):
            check_positive_int(key, value)
        if stride > 1 and rate > 1:
            raise ValueError(f"stride and rate cannot both be > 1. "
                             f"Received: stride={stride}, rate={rate}")
        if shortcut not in SHORTCUT_OPTIONS:
            raise ValueError(f"shortcut must be one of {list(SHORTCUT_OPTIONS)}. "
                             f"Received: shortcut={shortcut!r}")
        self.depth = depth
        self.depth_bottleneck = depth_bottleneck
        self.stride = stride
        self.rate = rate
        self.shortcut_option = shortcut
        self.arg_scope = resnet_arg_scope(weight_decay, batch_norm_decay, batch_norm_epsilon,
                                          batch_norm_scale)
        named = self._make_layers()
        for scope, layer in named:
            setattr(self, scope, layer)
        self.sublayer_scopes = tuple(scope for scope, _ in named)
        self.shortcut = None  # known once the input depth is (build)

    @property
    def named_layers(self):
        """(slim scope, layer) of the residual path's sublayers, in slim's order."""
        return [(scope, getattr(self, scope)) for scope in self.sublayer_scopes]

    def _make_layers(self):
        raise NotImplementedError

    def _residual(self, inputs, preact, training):
        """Returns (residual, {end point name: tensor})."""
        raise NotImplementedError

    def build(self, input_shape):
        depth_in = input_shape[-1]
        self.shortcut = make_shortcut(self.shortcut_option, depth_in, self.depth, self.stride,
                                      not self.preactivation, self.arg_scope)
        self.shortcut.build(input_shape)
        shape = input_shape
        for _, layer in self.named_layers:
            layer.build(shape)
            if isinstance(layer, Conv2DSame):
                shape = layer.compute_output_shape(shape)
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: depth_in})

    @property
    def projection_shortcut(self) -> bool:
        return isinstance(self.shortcut, Conv2DSame)

    def call(self, inputs, training=None, return_end_points=False):
        preact = None
        if self.preactivation:
            preact = ops.relu(self.preact(inputs, training=training))
        source = preact if (self.preactivation and self.projection_shortcut) else inputs
        shortcut = self.shortcut(source, training=training) if self.projection_shortcut \
            else self.shortcut(source)
        residual, points = self._residual(inputs, preact, training)
        output = self._merge(shortcut, residual)
        if not return_end_points:
            return output
        if self.projection_shortcut:
            points["shortcut"] = shortcut
        return output, points

    def _merge(self, shortcut, residual):
        output = ops.add(shortcut, residual)
        return output if self.preactivation else ops.relu(output)

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
        return config
