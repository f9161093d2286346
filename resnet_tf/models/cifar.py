"""The CIFAR ResNets of [1] (section 4.2) and [2], and [2]'s ablation units, from resnet_tf's Blocks.

    cifar_resnet_v1(depth=20|32|44|56|110|1202, shortcut="A")   [1]: 6n+2 layers, option A
    cifar_resnet_v2(depth, unit=None)                             [2]: full pre-activation;
        unit "basic" (6n+2) or "bottleneck" (9n+2); by default basic up to 110 layers,
        bottleneck from 164 on (ResNet-164, ResNet-1001)
    cifar_resnet_ablation(depth=110, shortcut_type=..., order=...)   [2] Tables 1 and 2

All: a 3x3 stem of 16 channels, no max-pool, three stages of 16/32/64 channels (bottleneck
outputs 64/128/256) with the stride 2 in the first unit of stages 2 and 3, global average
pooling and a fully connected (1x1 conv) layer. Only `keras.layers` / `keras.ops`.

References:
  [1] Kaiming He, Xiangyu Zhang, Shaoqing Ren, Jian Sun. Deep Residual Learning for Image
      Recognition. arXiv:1512.03385
  [2] Kaiming He, Xiangyu Zhang, Shaoqing Ren, Jian Sun. Identity Mappings in Deep Residual
      Networks. arXiv:1603.05027
"""

from __future__ import annotations

import functools

import keras
from keras import ops

from resnet_tf.errors import UserError
from resnet_tf.models.layers import PACKAGE, Conv2DSame, batch_norm
from resnet_tf.models.precision import dtype_policy
from resnet_tf.models.resnet_utils import (
    Block,
    basic_block,
    resnet_arg_scope,
    resnet_model,
)
from resnet_tf.models.resnet_v1 import BasicBlockV1
from resnet_tf.models.resnet_v2 import BasicBlockV2, Bottleneck
from resnet_tf.models.units import ResidualUnit

STAGE_DEPTHS = (16, 32, 64)
CIFAR_INPUT_SHAPE = (32, 32, 3)


def _units_per_stage(depth, layers_per_unit, name):
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < layers_per_unit * 3 + 2 \
            or (depth - 2) % (layers_per_unit * 3) != 0:
        rule = f"{layers_per_unit * 3}n+2"
        raise UserError(f"{name} depth must be {rule} for a positive integer n (e.g. "
                         f"{layers_per_unit * 3 + 2}, {layers_per_unit * 9 + 2}). "
                         f"Received: depth={depth!r}")
    return (depth - 2) // (layers_per_unit * 3)


def _stages(unit_fn, n, expansion=1, bottleneck=False):
    blocks = []
    for i, depth in enumerate(STAGE_DEPTHS):
        stride = 1 if i == 0 else 2
        if bottleneck:
            unit = {"depth": depth * expansion, "depth_bottleneck": depth}
            blocks.append(Block(f"block{i + 1}", unit_fn, [dict(unit, stride=stride)] +
                                [dict(unit, stride=1)] * (n - 1)))
        else:
            blocks.append(basic_block(f"block{i + 1}", unit_fn, depth, n, stride))
    return blocks


def _with_shortcut(blocks, shortcut):
    """Gives every unit of the blocks the shortcut option (units take it as an argument)."""
    return [Block(b.scope, functools.partial(b.unit_fn, shortcut=shortcut), b.args) for b in blocks]


def cifar_resnet_v1(depth: int = 20, shortcut: str = "A", num_classes: int = 10,
                    input_shape=CIFAR_INPUT_SHAPE, name: str | None = None,
                    weight_decay: float = 1e-4, batch_norm_decay: float = 0.9, dtype=None,
                    **arg_scope) -> keras.Model:
    """[1]'s CIFAR-10 ResNet: 6n+2 layers of basic post-activation units, option A shortcuts.

    Sizes as [1] Table 6: 20 -> 0.27M, 32 -> 0.46M, 44 -> 0.66M, 56 -> 0.85M, 110 -> 1.7M,
    1202 -> 19.4M parameters.
    """
    n = _units_per_stage(depth, 2, "cifar_resnet_v1")
    scope = resnet_arg_scope(weight_decay, batch_norm_decay, **arg_scope)
    policy = dtype_policy(dtype)
    root = [Conv2DSame(16, 3, use_batch_norm=True, activation="relu", name="conv1",
                       dtype=policy, **scope)]
    blocks = _with_shortcut(_stages(BasicBlockV1, n), shortcut)
    return resnet_model(blocks, root=root, num_classes=num_classes, input_shape=input_shape,
                        name=name or f"cifar_resnet_v1_{depth}", arg_scope=scope, dtype=policy)


def cifar_resnet_v2(depth: int = 110, unit: str | None = None, num_classes: int = 10,
                    input_shape=CIFAR_INPUT_SHAPE, name: str | None = None,
                    weight_decay: float = 1e-4, batch_norm_decay: float = 0.9, dtype=None,
                    **arg_scope) -> keras.Model:
    """[2]'s pre-activation CIFAR ResNet (units of Fig. 4(e), a final BN + ReLU).

    `unit` "basic" needs depth 6n+2, "bottleneck" 9n+2 (outputs 4x wider); None follows [2]:
    basic up to 110 layers, bottleneck from 164 on. ResNet-110 and ResNet-164 have 1.7M
    parameters, ResNet-1001 10.2M ([2] Table 3; that figure counts convolution and fc weights,
    10.18M; with batch norm and biases the model has 10.38M).
    """
    if unit is None:
        unit = "bottleneck" if isinstance(depth, int) and depth >= 164 else "basic"
    if unit not in ("basic", "bottleneck"):
        raise UserError(f"unit must be 'basic', 'bottleneck' or None. Received: unit={unit!r}")
    scope = resnet_arg_scope(weight_decay, batch_norm_decay, **arg_scope)
    if unit == "basic":
        blocks = _stages(BasicBlockV2, _units_per_stage(depth, 2, "cifar_resnet_v2 (basic)"))
    else:
        blocks = _stages(Bottleneck, _units_per_stage(depth, 3, "cifar_resnet_v2 (bottleneck)"),
                         expansion=4, bottleneck=True)
    # The stem is a plain conv: the first unit's preact applies BN + ReLU ([2] appendix).
    policy = dtype_policy(dtype)
    root = [Conv2DSame(16, 3, name="conv1", dtype=policy, **scope)]
    return resnet_model(blocks, root=root, postnorm=True, num_classes=num_classes,
                        input_shape=input_shape, name=name or f"cifar_resnet_v2_{depth}",
                        arg_scope=scope, dtype=policy)


# ----------------------------------------------------------------------------------------------
# [2]'s ablations: Table 1 (shortcut types, Fig. 2) and Table 2 (activation orders, Fig. 4).

SHORTCUT_TYPES = ("identity", "scaling", "exclusive_gating", "shortcut_gating", "conv",
                  "dropout")
ORDERS = ("original", "bn_after_addition", "relu_before_addition", "relu_preactivation",
          "full_preactivation")
PREACTIVATION_ORDERS = ("relu_preactivation", "full_preactivation")


@keras.saving.register_keras_serializable(package=PACKAGE)
class AblationUnit(ResidualUnit):
    """A basic (two 3x3 convs) unit of [2] with a selectable shortcut type and activation order.

    With h = the shortcut path (identity; a 1x1 projection + BN where the shape changes) and F
    the residual path, the unit computes, per `shortcut_type` ([2] Fig. 2):

        identity           h + F
        scaling            shortcut_scale * h + residual_scale * F
        exclusive_gating   (1 - g) * h + g * F,   g = sigmoid(conv1x1(x) + gate_bias)
        shortcut_gating    (1 - g) * h + F
        conv               conv1x1(x) + F  (a 1x1 conv + BN shortcut in every unit)
        dropout            dropout(h, dropout_rate) + F

    and per `order` ([2] Fig. 4), with conv = 3x3 convolution and BN its batch norm:

        original             F = BN(conv(relu(BN(conv(x)))));         out = relu(merge)
        bn_after_addition    F = conv(relu(BN(conv(x))));             out = relu(BN(merge))
        relu_before_addition F = relu(BN(conv(relu(BN(conv(x))))));   out = merge
        relu_preactivation   F = BN(conv(relu(BN(conv(relu(x))))));   out = merge
        full_preactivation   F = conv(relu(BN(conv(relu(BN(x))))));   out = merge
    """

    slim_scope = "ablation"
    unit_arg_names = ("depth", "stride")
    # Its gates, scalings and dropout are not operations the int8 runtimes quantize.
    int8_form = False

    def __init__(self, depth, stride=1, rate=1, shortcut_type="identity", order="original",
                 shortcut_scale=0.5, residual_scale=0.5, gate_bias=-6.0, dropout_rate=0.5,
                 **kwargs):
        if shortcut_type not in SHORTCUT_TYPES:
            raise UserError(f"shortcut_type must be one of {list(SHORTCUT_TYPES)}. "
                             f"Received: shortcut_type={shortcut_type!r}")
        if order not in ORDERS:
            raise UserError(f"order must be one of {list(ORDERS)}. Received: order={order!r}")
        if not 0.0 <= dropout_rate < 1.0:
            raise UserError(f"dropout_rate must be in [0, 1). Received: dropout_rate={dropout_rate}")
        self.shortcut_type = shortcut_type
        self.order = order
        self.shortcut_scale = float(shortcut_scale)
        self.residual_scale = float(residual_scale)
        self.gate_bias = float(gate_bias)
        self.dropout_rate = float(dropout_rate)
        kwargs.setdefault("shortcut", "C" if shortcut_type == "conv" else "B")
        super().__init__(depth, stride, rate, **kwargs)

    def _make_layers(self):
        scope = self.layer_scope
        bn = dict(scope, use_batch_norm=True)
        layers = []
        if self.order == "full_preactivation":
            layers.append(("preact", batch_norm("preact", **scope)))
        layers.append(("conv1", Conv2DSame(self.depth, 3, stride=self.stride, rate=self.rate,
                                           activation="relu", name="conv1", **bn)))
        if self.order in ("original", "relu_preactivation"):
            conv2 = Conv2DSame(self.depth, 3, rate=self.rate, name="conv2", **bn)
        elif self.order == "relu_before_addition":
            conv2 = Conv2DSame(self.depth, 3, rate=self.rate, activation="relu", name="conv2",
                               **bn)
        else:  # bn_after_addition, full_preactivation: no BN right after conv2
            conv2 = Conv2DSame(self.depth, 3, rate=self.rate, name="conv2", **scope)
        layers.append(("conv2", conv2))
        if self.order == "bn_after_addition":
            layers.append(("postadd", batch_norm("postadd", **scope)))
        if self.shortcut_type in ("exclusive_gating", "shortcut_gating"):
            layers.append(("gate", Conv2DSame(self.depth, 1, stride=self.stride, name="gate",
                                              **scope)))
        if self.shortcut_type == "dropout":
            layers.append(("dropout", keras.layers.Dropout(
                self.dropout_rate, name="dropout", dtype=self.dtype_policy)))
        return layers

    side_layers = ("gate",)  # the gate looks at the unit's input x

    def build(self, input_shape):
        super().build(input_shape)
        if hasattr(self, "gate"):  # [2]: the gate starts mostly closed, g = sigmoid(-6)
            self.gate.bias.assign(ops.full((self.depth,), self.gate_bias, self.gate.bias.dtype))

    def _branch_input(self, inputs, training):
        if self.order == "relu_preactivation":
            return ops.relu(inputs)
        if self.order == "full_preactivation":
            return ops.relu(self.preact(inputs, training=training))
        return inputs

    def _residual(self, branch, training):
        conv1 = self.conv1(branch, training=training)
        conv2 = self.conv2(conv1, training=training)
        return conv2, {"conv1": conv1, "conv2": conv2}

    def _merge(self, inputs, shortcut, residual, training):
        if self.shortcut_type == "scaling":
            merged = self.shortcut_scale * shortcut + self.residual_scale * residual
        elif self.shortcut_type in ("exclusive_gating", "shortcut_gating"):
            gate = ops.sigmoid(self.gate(inputs, training=training))
            gated = gate * residual if self.shortcut_type == "exclusive_gating" else residual
            merged = (1.0 - gate) * shortcut + gated
        elif self.shortcut_type == "dropout":
            merged = self.dropout(shortcut, training=training) + residual
        else:  # identity, conv
            merged = shortcut + residual
        if self.order == "original":
            return ops.relu(merged)
        if self.order == "bn_after_addition":
            return ops.relu(self.postadd(merged, training=training))
        return merged

    def get_config(self):
        config = super().get_config()
        config.update(shortcut_type=self.shortcut_type, order=self.order,
                      shortcut_scale=self.shortcut_scale, residual_scale=self.residual_scale,
                      gate_bias=self.gate_bias, dropout_rate=self.dropout_rate)
        return config


def cifar_resnet_ablation(depth: int = 110, shortcut_type: str = "identity",
                          order: str = "original", num_classes: int = 10,
                          input_shape=CIFAR_INPUT_SHAPE, name: str | None = None,
                          shortcut_scale: float = 0.5, residual_scale: float = 0.5,
                          gate_bias: float = -6.0, dropout_rate: float = 0.5,
                          weight_decay: float = 1e-4, batch_norm_decay: float = 0.9,
                          dtype=None, **arg_scope) -> keras.Model:
    """A 6n+2-layer CIFAR ResNet of `AblationUnit`s: one row of [2] Table 1 or Table 2."""
    n = _units_per_stage(depth, 2, "cifar_resnet_ablation")
    if order not in ORDERS:
        raise UserError(f"order must be one of {list(ORDERS)}. Received: order={order!r}")
    scope = resnet_arg_scope(weight_decay, batch_norm_decay, **arg_scope)
    preactivation = order in PREACTIVATION_ORDERS
    policy = dtype_policy(dtype)
    root = [Conv2DSame(16, 3, use_batch_norm=not preactivation,
                       activation=None if preactivation else "relu", name="conv1", dtype=policy,
                       **scope)]
    unit = functools.partial(AblationUnit, shortcut_type=shortcut_type, order=order,
                    shortcut_scale=shortcut_scale, residual_scale=residual_scale,
                    gate_bias=gate_bias, dropout_rate=dropout_rate)
    blocks = [Block(b.scope, unit, b.args) for b in _stages(AblationUnit, n)]
    return resnet_model(blocks, root=root, postnorm=order == "full_preactivation",
                        num_classes=num_classes, input_shape=input_shape,
                        name=name or f"cifar_resnet_ablation_{depth}", arg_scope=scope,
                        dtype=policy)
