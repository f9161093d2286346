"""`end_points(model)`: slim's end points of a resnet_tf model, as a Keras model (Keras only).

slim collects end points in a graph collection while it builds; here a small model runs the
resnet_tf model's layers in order and collects the same tensors, asking each residual unit for its
inner end points. It shares the original's layers, and so its weights.
"""

from __future__ import annotations

import keras


def _stride_of(layer) -> int:
    stride = getattr(layer, "stride", None)
    if stride is None:
        strides = getattr(layer, "strides", 1)
        stride = strides[0] if isinstance(strides, (tuple, list)) else strides
    return int(stride or 1)


def _check_chain(model):
    """resnet_tf models are a chain of layers; anything else was not built here."""
    if not isinstance(model, keras.Model) or not hasattr(model, "_inbound_nodes"):
        raise ValueError(f"end_points() needs a keras.Model built by resnet_tf. Received: {model!r}")
    for previous, layer in zip(model.layers, model.layers[1:]):
        nodes = layer._inbound_nodes
        if len(nodes) != 1 or [t._keras_history[0] for t in nodes[0].input_tensors] != [previous]:
            raise ValueError(f"end_points() needs a model built by resnet_tf (a chain of layers); "
                             f"layer {layer.name!r} of model {model.name!r} does not follow "
                             f"{previous.name!r}.")


class EndPoints(keras.Model):
    """Runs a resnet_tf model and returns a dict of slim's end points (see `end_points`)."""

    def __init__(self, model: keras.Model, scope: str | None = None, **kwargs):
        _check_chain(model)
        super().__init__(name=kwargs.pop("name", f"{model.name}_end_points"), **kwargs)
        self.source = model
        self.scope = model.name if scope is None else scope
        self.block_info = self._block_info()
        self.built = True

    def _slim_name(self, layer):
        return f"{self.scope}/{layer.name.replace('.', '/')}"

    def _block_info(self):
        info, stride = {}, 1
        for layer in self.source.layers[1:]:
            stride *= _stride_of(layer)
            if hasattr(layer, "slim_scope"):  # a residual unit: the block's last one wins
                block = f"{self.scope}/{layer.name.split('.')[0]}"
                info[block] = {"stride": stride, "channels": int(layer.depth)}
        return info

    def call(self, images, training=None):
        points, net = {}, images
        for layer in self.source.layers[1:]:
            slim_name = self._slim_name(layer)
            if hasattr(layer, "slim_scope"):  # a residual unit
                net, inner = layer(net, training=training, return_end_points=True)
                points.update({f"{slim_name}/{key}": value for key, value in inner.items()})
                points[slim_name] = net
                points[f"{self.scope}/{layer.name.split('.')[0]}"] = net  # block: last unit wins
                continue
            net = layer(net, training=training)
            if layer.name in ("conv1", "logits", "spatial_squeeze"):
                points[slim_name] = net
            elif layer.name == "pool5":
                points["global_pool"] = net  # research/slim's name
        if f"{self.scope}/logits" in points:
            points["predictions"] = keras.ops.softmax(net, axis=-1)
        return points


def end_points(model: keras.Model, scope: str | None = None) -> EndPoints:
    """A model that returns a dict of slim's end points for `model`.

    Keys are exactly slim's: `<scope>/conv1`, `<scope>/blockN/unit_K/bottleneck_v2` with its
    `/shortcut` (projection units only), `/conv1`, `/conv2`, `/conv3`, `<scope>/blockN`,
    `<scope>/logits` and `predictions`, plus research/slim's `global_pool` and
    `<scope>/spatial_squeeze` where the model has them. Call it like the model:
    `end_points(model)(images, training=False)`.

    The returned model's `block_info` maps each `<scope>/blockN` to its output `stride` relative
    to the input image and its `channels` (for feature pyramids).
    """
    return EndPoints(model, scope)
