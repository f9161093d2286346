"""Infrastructure shared by every ResNet family: slim's `resnet_utils.py` in Keras 3.

The names are TF-slim's, so a reader who knows `tf_slim.nets.resnet_utils` finds each piece here:
`Block`, `subsample`, `conv2d_same`, `stack_blocks_dense` and `resnet_arg_scope`, and the
`resnet_model` body every family shares. The Keras layers behind them (`Conv2DSame`,
`Subsample`, slim's batch norm and L2 regularizer) live in `layers.py`, the residual-unit
machinery (`ResidualUnit`, `make_shortcut`, `ZeroPadShortcut`) in `units.py`.

Where slim uses implicit global state (`arg_scope`, graph collections), this module uses plain
arguments: `resnet_arg_scope()` returns a dict of keyword arguments that the layers take, and
`stack_blocks_dense` fills an `end_points` dict that the caller passes in.

Keras layer names may not contain "/", so a layer whose slim scope is
`block1/unit_1/bottleneck_v2` is named `block1.unit_1.bottleneck_v2`: replacing "." by "/" gives
the slim scope back (see `slim/variables.py`).

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
import functools

import keras

from resnet_tf.errors import UserError
from resnet_tf.models.layers import Conv2DSame, Subsample, batch_norm, layer_stride
from resnet_tf.models.precision import dtype_policy, dtype_policy_scope, output_policy
from resnet_tf.utils import check_positive_int


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
        raise UserError(f"weight_decay must be >= 0. Received: weight_decay={weight_decay}")
    if not 0.0 <= batch_norm_decay < 1.0:
        raise UserError(
            f"batch_norm_decay must be in [0, 1). Received: batch_norm_decay={batch_norm_decay}"
        )
    if batch_norm_epsilon <= 0:
        raise UserError(
            f"batch_norm_epsilon must be > 0. Received: batch_norm_epsilon={batch_norm_epsilon}"
        )
    return dict(
        weight_decay=float(weight_decay),
        batch_norm_decay=float(batch_norm_decay),
        batch_norm_epsilon=float(batch_norm_epsilon),
        batch_norm_scale=bool(batch_norm_scale),
    )


def conv2d_same(inputs, num_outputs, kernel_size, stride, rate=1, name=None, **conv_kwargs):
    """slim's `conv2d_same(inputs, num_outputs, kernel_size, stride, rate)`, functional style.

    By default a plain convolution with bias (slim's `conv2d` with `normalizer_fn=None,
    activation_fn=None`); pass `use_batch_norm=True, activation="relu"` for slim's arg-scoped conv.
    """
    return Conv2DSame(num_outputs, kernel_size, stride=stride, rate=rate, name=name,
                      **conv_kwargs)(inputs)


def subsample(inputs, factor, name=None):
    """slim's `subsample(inputs, factor)`, functional style."""
    if factor == 1:
        return inputs
    return Subsample(factor, name=name)(inputs)


def unit_class(unit_fn):
    """The residual-unit class a Block's `unit_fn` names: the class itself, or the class a
    `functools.partial` of it (fixed keyword arguments, e.g. `shortcut="A"`) wraps."""
    return unit_fn.func if isinstance(unit_fn, functools.partial) else unit_fn


class Block(collections.namedtuple("Block", ["scope", "unit_fn", "args"])):
    """A named tuple describing a ResNet block, as in slim.

    Its parts are:
      scope: the block's name, e.g. "block1".
      unit_fn: the residual unit: its class (`Bottleneck`), or a `functools.partial` of it with
        fixed keyword arguments. slim's function form (`bottleneck`) is accepted and stored as
        its class, so a Block always holds one of those two.
      args: one entry per unit, either slim's dict form
        `{"depth": 256, "depth_bottleneck": 64, "stride": 1}` or the seed's tuple form
        `(depth, depth_bottleneck, stride)`. They are normalised to dicts and validated here.
    """

    __slots__ = ()

    def __new__(cls, scope, unit_fn, args):
        if not isinstance(scope, str) or not scope or "/" in scope or "." in scope:
            raise UserError(f"Block scope must be a non-empty name without '/' or '.'. "
                             f"Received: scope={scope!r}")
        unit_fn = getattr(unit_fn, "layer_class", unit_fn)  # slim's `bottleneck` -> its class
        arg_names = getattr(unit_class(unit_fn), "unit_arg_names", None)
        if arg_names is None:
            raise UserError(f"unit_fn must be a residual unit of resnet_tf (with "
                             f"`unit_arg_names`). Received: unit_fn={unit_fn!r}")
        if isinstance(args, (str, bytes)) or not hasattr(args, "__iter__"):
            raise UserError(f"Block args must be a list of units. Received: args={args!r}")
        units = []
        for i, unit in enumerate(args):
            if isinstance(unit, dict):
                unknown = set(unit) - set(arg_names)
                if unknown:
                    raise UserError(f"Block {scope!r} unit {i + 1} has unknown keys "
                                     f"{sorted(unknown)}; expected {list(arg_names)}. "
                                     f"Received: {unit!r}")
                unit = dict(unit)
            elif isinstance(unit, (tuple, list)):
                if len(unit) != len(arg_names):
                    raise UserError(f"Block {scope!r} unit {i + 1} must be a tuple "
                                     f"{tuple(arg_names)}. Received: {tuple(unit)!r}")
                unit = dict(zip(arg_names, unit))
            else:
                raise UserError(f"Block {scope!r} unit {i + 1} must be a dict or tuple. "
                                 f"Received: {unit!r}")
            unit.setdefault("stride", 1)
            for key, value in unit.items():
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise UserError(f"Block {scope!r} unit {i + 1}: {key} must be a positive "
                                     f"integer. Received: {key}={value!r}")
            missing = set(arg_names) - set(unit)
            if missing:
                raise UserError(f"Block {scope!r} unit {i + 1} is missing {sorted(missing)}. "
                                 f"Received: {unit!r}")
            units.append(unit)
        if not units:
            raise UserError(f"Block {scope!r} must have at least one unit. Received: args={args!r}")
        return super().__new__(cls, scope, unit_fn, units)


# Units per block for each depth: [1]'s, and ResNet-200 from [2]. 18 and 34 use basic units with
# the stride in the FIRST unit of blocks 2-4 (as [1] and torchvision); the bottleneck depths put
# it in a block's LAST unit (slim). The base depths double per block from `base_depth`.
RESNET_UNITS = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
    200: (3, 24, 36, 3),
}
BASIC_DEPTHS = (18, 34)
BLOCK_STRIDES = (2, 2, 2, 1)

# Where the layers sit in the ResNets of other weight sources (`resnet_tf.weights`), each the
# same network as slim's given its layout:
#   "slim"         slim's: a bottleneck block's stride in its last unit, a V1 unit's on its 3x3
#                  convolution; the root's 3x3/2 max-pool pads "SAME" (0 before, 1 after at
#                  even sizes).
#   "torchvision"  torchvision's and timm's: a bottleneck block's stride in its first unit (the
#                  blocks stride 1, 2, 2, 2), on the 3x3 ("ResNet V1.5"); the max-pool pads 1 on
#                  every side (with zeros: its input is a ReLU's, so as PyTorch's -inf).
#   "keras"        keras.applications': V1 as "torchvision" but the stride on the first 1x1;
#                  V2 as slim; the max-pool pads 1 on every side with zeros; batch norm's
#                  epsilon 1.001e-5.
LAYOUTS = ("slim", "torchvision", "keras")
KERAS_BATCH_NORM_EPSILON = 1.001e-5


def check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise UserError(f"layout must be one of {list(LAYOUTS)}. Received: layout={layout!r}")


def layout_epsilon(layout: str, epsilon):
    """Batch norm's epsilon: `epsilon`, or by default slim's 1e-5 (keras.applications'
    1.001e-5 under its layout)."""
    if epsilon is not None:
        return epsilon
    return KERAS_BATCH_NORM_EPSILON if layout == "keras" else 1e-5


def root_pool(layout: str, dtype) -> list:
    """The root's 3x3/2 max-pool ("pool1") as `layout` pads it."""
    check_layout(layout)
    if layout == "slim":
        return [keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool1",
                                          dtype=dtype)]
    return [keras.layers.ZeroPadding2D(1, name="pool1_pad", dtype=dtype),
            keras.layers.MaxPooling2D(3, strides=2, padding="valid", name="pool1", dtype=dtype)]


def first_unit_strides(blocks, **unit_args) -> list:
    """`blocks` with each block's stride moved from its last unit to the first unit of the
    next block (slim's 2, 2, 2, 1 become 1, 2, 2, 2), as torchvision and keras.applications
    place it; `unit_args` are given to every unit (e.g. `stride_in="conv1"`)."""
    if all(unit_class(block.unit_fn).expansion == 1 for block in blocks):
        return list(blocks)  # basic units: [1]'s blocks have it there already
    strides = [1] + [max(unit["stride"] for unit in block.args) for block in blocks[:-1]]
    moved = []
    for block, stride in zip(blocks, strides):
        args = [dict(unit, stride=1) for unit in block.args]
        args[0] = dict(args[0], stride=stride)
        unit_fn = functools.partial(unit_class(block.unit_fn), **{
            **(block.unit_fn.keywords if isinstance(block.unit_fn, functools.partial) else {}),
            **unit_args}) if unit_args else block.unit_fn
        moved.append(Block(block.scope, unit_fn, args))
    return moved


def bottleneck_block(scope: str, unit_fn, base_depth: int, num_units: int, stride: int) -> Block:
    """slim's `resnet_v1_block` / `resnet_v2_block` for any bottleneck unit: `num_units` units of
    depth `unit_fn.expansion * base_depth`, the stride in the last."""
    for key, value in (("base_depth", base_depth), ("num_units", num_units), ("stride", stride)):
        check_positive_int(key, value)
    unit = {"depth": base_depth * unit_class(unit_fn).expansion, "depth_bottleneck": base_depth}
    return Block(scope, unit_fn,
                 [dict(unit, stride=1)] * (num_units - 1) + [dict(unit, stride=stride)])


def basic_block(scope: str, unit_fn, depth: int, num_units: int, stride: int) -> Block:
    """`num_units` basic units of `depth` channels with the stride in the FIRST unit, as [1] and
    torchvision place it for ResNet-18/34 (slim's bottleneck blocks put it in the last)."""
    for key, value in (("depth", depth), ("num_units", num_units), ("stride", stride)):
        check_positive_int(key, value)
    return Block(scope, unit_fn, [{"depth": depth, "stride": stride}] +
                 [{"depth": depth, "stride": 1}] * (num_units - 1))


def resnet_blocks(depth: int, bottleneck_unit, basic_unit, base_depth: int = 64,
                  family: str = "") -> list[Block]:
    """The four blocks of ResNet-`depth` (`RESNET_UNITS`) made of a family's units."""
    if depth not in RESNET_UNITS:
        raise UserError(f"Unknown ResNet {family} depth; known depths are "
                         f"{sorted(RESNET_UNITS)}. Received: depth={depth!r}")
    units = RESNET_UNITS[depth]
    if depth in BASIC_DEPTHS:
        return [basic_block(f"block{i + 1}", basic_unit, base_depth * 2 ** i, n,
                            1 if i == 0 else 2) for i, n in enumerate(units)]
    return [bottleneck_block(f"block{i + 1}", bottleneck_unit, base_depth * 2 ** i, n, stride)
            for i, (n, stride) in enumerate(zip(units, BLOCK_STRIDES))]


def check_output_stride(blocks, output_stride, initial_stride=1):
    """Validates `output_stride` against the blocks before anything is built (slim checks late).

    Returns the output stride the blocks must produce (None: nominal).
    """
    if output_stride is None:
        return None
    if isinstance(output_stride, bool) or not isinstance(output_stride, int) or output_stride < 1:
        raise UserError(f"output_stride must be a positive integer or None. "
                         f"Received: output_stride={output_stride!r}")
    reachable = [initial_stride]
    for block in blocks:
        for unit in block.args:
            reachable.append(reachable[-1] * unit["stride"])
    if output_stride not in reachable:
        raise UserError(
            f"The target output_stride cannot be reached: the unit strides give "
            f"{sorted(set(reachable))}. Received: output_stride={output_stride}")
    return output_stride


# What `stack_blocks_dense` can add to `end_points`, as slim's `outputs_collections` name them
# through `arg_scope`: each unit's convolutions, each unit's output, each block's output.
END_POINT_KINDS = ("convolutions", "units", "blocks")


def stack_blocks_dense(net, blocks, output_stride=None, end_points=None, block_info=None,
                       current_stride=1, collect=END_POINT_KINDS, drop_path_rate=0.0,
                       **arg_scope):
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
      end_points: optional dict; as slim's end-point collection, it receives each unit's inner
        end points (`block1/unit_1/bottleneck_v2/conv1`, ...), each unit's output and each
        block's output, under slim's names relative to the model's scope.
      collect: which of those it receives (`END_POINT_KINDS`), as the collections a slim caller
        puts in `outputs_collections`: a caller that collects only convolution outputs
        (`arg_scope([conv2d], outputs_collections=...)`) gets `("convolutions",)`.
      block_info: optional dict; each block's `{"stride": s, "channels": c}` is stored under its
        scope name (for feature pyramids).
      drop_path_rate: stochastic depth in training: unit k of n (from 0) drops its residual
        with probability `drop_path_rate * k / (n - 1)` (timm's rule; `ResidualUnit`).
      **arg_scope: `resnet_arg_scope()` keywords given to every unit.

    Returns:
      The output of the last block.
    """
    check_output_stride(blocks, output_stride, current_stride)
    unknown = sorted(set(collect) - set(END_POINT_KINDS))
    if unknown:
        raise UserError(f"collect takes {list(END_POINT_KINDS)}. Received: collect={collect!r}")
    if not 0.0 <= drop_path_rate < 1.0:
        raise UserError(f"drop_path_rate must be in [0, 1). "
                        f"Received: drop_path_rate={drop_path_rate!r}")
    rate = 1
    count, index = sum(len(block.args) for block in blocks), 0
    for block in blocks:
        for i, unit in enumerate(block.args):
            name = f"{block.scope}.unit_{i + 1}.{unit_class(block.unit_fn).slim_scope}"
            extra = {}
            if drop_path_rate:
                extra["drop_path_rate"] = drop_path_rate * index / max(count - 1, 1)
            index += 1
            if output_stride is not None and current_stride == output_stride:
                # Target reached: stride 1 here, and later units dilate by this unit's stride.
                if unit["stride"] > 1:
                    extra["dilated_stride"] = unit["stride"]
                layer = block.unit_fn(**dict(unit, stride=1), rate=rate, name=name,
                                      **extra, **arg_scope)
                rate *= unit["stride"]
            else:
                layer = block.unit_fn(**unit, rate=1, name=name, **extra, **arg_scope)
                current_stride *= unit["stride"]
            # Every unit returns its end points too, in every call, so that the model and
            # `end_points(model)` call each unit with one output structure (Keras checks a
            # functional graph against a layer's first call).
            net, inner = layer(net, return_end_points=True)
            if end_points is not None:
                scope = name.replace(".", "/")
                if "convolutions" in collect:
                    end_points.update({f"{scope}/{key}": value for key, value in inner.items()})
                if "units" in collect:
                    end_points[scope] = net
        if end_points is not None and "blocks" in collect:
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
        raise UserError("input_shape must be (height, width, channels) with positive sizes "
                         f"(height and width may be None). Received: input_shape={input_shape}")
    return input_shape


def resnet_model(blocks, *, root=None, postnorm=False, num_classes=None, global_pool=True,
                 output_stride=None, spatial_squeeze=True, input_shape=None, name="resnet",
                 arg_scope=None, dtype=None, dropout_rate=0.0,
                 drop_path_rate=0.0, normalizer="batch_norm") -> keras.Model:
    """The functional model every ResNet family shares (slim's `resnet_v1` / `resnet_v2` body).

    images -> `root` layers (each may have a `stride`/`strides`) -> `stack_blocks_dense` ->
    optional `postnorm` (BN + ReLU, for pre-activation units) -> `pool5` (global mean,
    keepdims) -> [`dropout`, training only, where `dropout_rate` > 0] -> `logits` (1x1 conv
    with bias) -> `spatial_squeeze`. `drop_path_rate`: stochastic depth (`stack_blocks_dense`);
    `normalizer`: postnorm's (`layers.NORMALIZERS`).

    Every layer takes the dtype policy `dtype` (None: Keras' global policy), except the last:
    under a mixed policy `spatial_squeeze` runs in float32 (`precision.output_policy`), so a
    classifier's outputs are float32, as Keras' mixed-precision guide has it.
    """
    arg_scope = resnet_arg_scope() if arg_scope is None else arg_scope
    policy = dtype_policy(dtype)
    if num_classes is not None and (isinstance(num_classes, bool) or
                                    not isinstance(num_classes, int) or num_classes < 1):
        raise UserError(f"num_classes must be a positive integer or None. "
                         f"Received: num_classes={num_classes!r}")
    if num_classes and spatial_squeeze and not global_pool:
        raise UserError("spatial_squeeze=True squeezes [N, 1, 1, C] logits and needs "
                         "global_pool=True; pass spatial_squeeze=False for dense logits. "
                         f"Received: global_pool={global_pool}, spatial_squeeze={spatial_squeeze}")
    if not blocks or not all(isinstance(b, Block) for b in blocks):
        raise UserError(f"blocks must be a non-empty list of Block. Received: blocks={blocks!r}")
    if not isinstance(name, str) or not name or "/" in name:
        raise UserError(f"name must be a non-empty string without '/'. Received: name={name!r}")
    root = list(root or [])
    root_stride = 1
    for layer in root:
        root_stride *= layer_stride(layer)
    if root_stride > 1 and output_stride is not None and (
        not isinstance(output_stride, int) or output_stride % root_stride != 0
    ):
        raise UserError(f"The output_stride needs to be a multiple of {root_stride} (the root "
                         f"block's stride). Received: output_stride={output_stride!r}")
    check_output_stride(blocks, output_stride, root_stride)
    input_shape = _check_input_shape(input_shape)

    images = keras.Input(shape=input_shape, name="images")
    net = images
    for layer in root:
        net = layer(net)
    if not 0.0 <= dropout_rate < 1.0:
        raise UserError(f"dropout_rate must be in [0, 1). Received: dropout_rate={dropout_rate!r}")
    net = stack_blocks_dense(net, blocks, output_stride, current_stride=root_stride,
                             drop_path_rate=drop_path_rate, dtype=policy, **arg_scope)
    if postnorm:
        net = batch_norm("postnorm", dtype=policy, normalizer=normalizer, **arg_scope)(net)
        net = keras.layers.ReLU(name="postnorm.relu", dtype=policy)(net)
    if global_pool:
        net = keras.layers.GlobalAveragePooling2D(keepdims=True, name="pool5", dtype=policy)(net)
    if num_classes and dropout_rate:
        net = keras.layers.Dropout(dropout_rate, name="dropout", dtype=policy)(net)
    if num_classes:
        net = Conv2DSame(num_classes, 1, name="logits", dtype=policy, **arg_scope)(net)
        if spatial_squeeze:
            net = keras.layers.Reshape((num_classes,), name="spatial_squeeze",
                                       dtype=output_policy(policy))(net)
    with dtype_policy_scope(policy):  # Keras' functional Model takes the global policy
        return keras.Model(images, net, name=name)


# What resolves a builder's `weights=`: `resolve(model_name, weights, num_classes, layout)` ->
# an object with the `layout` the weights need and `load(model)`. The weights layer sits above
# the model code, so the model code never imports it: `import resnet_tf` hands it over
# (`set_weights_resolver(resnet_tf.weights.sources.resolve_weights)`), as a composition root.
_weights_resolver = None


def set_weights_resolver(resolve) -> None:
    global _weights_resolver
    _weights_resolver = resolve


def build_with_weights(model_name: str, weights, num_classes, layout, build) -> keras.Model:
    """`build(layout)`, then `weights` loaded into it: None (random init, `layout` or slim's),
    or a name or file `resnet_tf.weights` knows (slim's releases, torchvision's, timm's,
    keras.applications'), which sets the layout the weights need. `num_classes` is checked
    against the weights before anything is built or downloaded."""
    if weights is None:
        return build(layout or "slim")
    source = _weights_resolver(model_name, weights, num_classes, layout)
    model = build(source.layout)
    source.load(model)
    return model


def resnet_factory(family: str, depth: int, generator, blocks_fn):
    """The builder `resnet_<family>_<depth>(num_classes=None, ..., weights=None)`: `generator`
    (slim's `resnet_v1` / `resnet_v2`) over `blocks_fn(depth)` with the root block."""
    model_name = f"resnet_{family}_{depth}"

    def build(num_classes=None, global_pool=True, output_stride=None, spatial_squeeze=True,
              input_shape=None, name=model_name, weights=None, dtype=None, layout=None,
              **arg_scope):
        if layout is not None:
            check_layout(layout)
        return build_with_weights(model_name, weights, num_classes, layout, lambda layout: (
            generator(blocks_fn(depth), num_classes=num_classes, global_pool=global_pool,
                      output_stride=output_stride, include_root_block=True,
                      spatial_squeeze=spatial_squeeze, input_shape=input_shape, name=name,
                      dtype=dtype, layout=layout, **arg_scope)))

    kind = "basic" if depth in BASIC_DEPTHS else "bottleneck"
    build.__name__ = build.__qualname__ = model_name
    build.__doc__ = (f"ResNet-{depth} {family.upper()} (blocks of {RESNET_UNITS[depth]} {kind} "
                     f"units). See `resnet_{family}` for the arguments; `weights`: None, "
                     "\"imagenet\" (slim's release), \"torchvision\", \"timm\", \"keras\", or a "
                     "URL or path of such a file (`resnet_tf.weights`), which sets `layout`; "
                     "`layout`: where the layers sit (`LAYOUTS`; default \"slim\"); "
                     "`dtype`: the Keras dtype policy (None: the global one).")
    return build
