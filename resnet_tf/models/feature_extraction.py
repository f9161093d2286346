"""`end_points(model)`: slim's end points of a resnet_tf model, as a functional Keras model, and
`block_info(model)`: each block's output stride and channels.

slim collects end points in a graph collection while it builds. Here every residual unit
returns its inner end points in the model's own graph as it is built (`stack_blocks_dense`
calls each with `return_end_points=True`), so `end_points` only gathers the tensors the model
already has (each layer's `output`) into a functional `keras.Model` over the same input: no
layer is called again. It shares the model's layers, and so its weights; it saves to and loads
from `.keras` files like any functional model; it works on a model loaded from a `.keras`
file. Public Keras API only, so it runs on the TensorFlow, JAX and PyTorch backends.
"""

from __future__ import annotations

import keras

from resnet_tf.errors import UserError
from resnet_tf.models.layers import PACKAGE, layer_stride
from resnet_tf.models.units import ResidualUnit

# Layers of the model body whose output is a slim end point, under their own scope.
NAMED_END_POINTS = ("conv1", "conv1_1", "conv1_2", "conv1_3", "conv1_4", "logits",
                    "spatial_squeeze")


def main_output(layer):
    """A layer's output in its model's graph; a residual unit's without its end points."""
    output = layer.output
    return output[0] if isinstance(output, (list, tuple)) else output


def layer_chain(model) -> list:
    """The layers of a resnet_tf model after its input, checked to form a chain (each layer
    takes the previous one's output): anything else was not built by resnet_tf."""
    if not isinstance(model, keras.Model) or not hasattr(model, "inputs") or \
            not model.inputs or len(model.inputs) != 1:
        raise UserError(f"end_points() needs a functional model built by resnet_tf (one "
                         f"input, a chain of layers). Received: {model!r}")
    layers = model.layers
    for previous, layer in zip(layers, layers[1:]):
        try:
            follows = layer.input is main_output(previous)
        except (AttributeError, ValueError):  # a layer called more than once, or never
            follows = False
        if not follows:
            raise UserError(f"end_points() needs a model built by resnet_tf (a chain of "
                             f"layers); layer {layer.name!r} of model {model.name!r} does "
                             f"not follow {previous.name!r}.")
    return layers[1:]


def unit_end_points(unit) -> tuple:
    """(output, {end point: tensor}) of a residual unit in its model's graph: its `output`,
    which Keras keeps flat, packed back into the structure the unit returns."""
    structure = unit.compute_output_spec(unit.input, return_end_points=True)
    return keras.tree.pack_sequence_as(structure, keras.tree.flatten(unit.output))


def block_info(model: keras.Model, scope: str | None = None) -> dict:
    """{"<scope>/blockN": {"stride": s, "channels": c}}: each block's output stride relative to
    the input image and its channels (for feature pyramids), derived from the model's layers
    (a model, or its `end_points` model: they share them)."""
    scope = scope or getattr(model, "scope", None) or model.name
    info, stride = {}, 1
    for layer in model.layers:
        stride *= layer_stride(layer)
        if isinstance(layer, ResidualUnit):
            info[f"{scope}/{layer.name.split('.')[0]}"] = {"stride": stride,
                                                           "channels": int(layer.depth)}
    return info


@keras.saving.register_keras_serializable(package=PACKAGE)
class EndPoints(keras.Model):
    """The functional model `end_points` returns: slim's end points by slim's names, and
    `block_info`, derived from its layers (so it survives a `.keras` round trip)."""

    def __init__(self, *args, scope: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self.scope = scope

    @property
    def block_info(self) -> dict:
        return block_info(self, self.scope)

    def get_config(self):
        return dict(super().get_config(), scope=self.scope)


def end_points(model: keras.Model, scope: str | None = None) -> keras.Model:
    """A functional model returning a dict of slim's end points for `model`.

    Keys are exactly slim's: `<scope>/conv1`, `<scope>/blockN/unit_K/bottleneck_v2` with its
    `/shortcut` (projection units only), `/conv1`, `/conv2`, `/conv3`, `<scope>/blockN`,
    `<scope>/logits` and `predictions`, plus research/slim's `global_pool` and
    `<scope>/spatial_squeeze` where the model has them. Call it like the model:
    `end_points(model)(images, training=False)`.

    The returned model's `block_info` maps each `<scope>/blockN` to its output `stride` relative
    to the input image and its `channels` (for feature pyramids; `block_info(model)`).
    """
    scope = model.name if scope is None else scope
    points = {}
    for layer in layer_chain(model):
        slim_name = f"{scope}/{layer.name.replace('.', '/')}"
        if isinstance(layer, ResidualUnit):
            net, inner = unit_end_points(layer)
            points.update({f"{slim_name}/{key}": value for key, value in inner.items()})
            points[slim_name] = net
            points[f"{scope}/{layer.name.split('.')[0]}"] = net  # the block's: last unit wins
            continue
        net = layer.output
        if layer.name in NAMED_END_POINTS:
            points[slim_name] = net
        elif layer.name == "pool5":
            points["global_pool"] = net  # research/slim's name
    if f"{scope}/logits" in points:
        points["predictions"] = keras.layers.Softmax(name="predictions")(net)
    return EndPoints(model.inputs[0], points, name=f"{model.name}_end_points", scope=scope)
