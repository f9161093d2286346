"""int8 export, generic over the formats: layers by path, the quantizer's interface, and the
bound search that keeps the most sensitive convolutions in float.

Post-training quantization (PTQ) calibrates activation ranges on real images and quantizes
every convolution, per output channel, except the layers named in `float_layers`, by the
model's layer paths (`quantizable_layers`: "conv1", "block1.unit_1.bottleneck_v2/conv2",
"logits", ...). Each format's module (`export.formats`) has its own quantizer, which finds a
layer by the path in its own graph (TFLite: by TensorFlow name scope, `scope_regex`; ONNX: by
the Conv's weight input; OpenVINO: by the folded kernel, `layer_at`). The TFLite and ONNX
quantizers calibrate once and re-quantize with other float layers in a fraction of a second;
NNCF calibrates each time (seconds for a small model, minutes for a large one).

`bounded` then searches: the fully int8 file first; if its top-1 drop against float32 is
over the bound, the convolutions ranked by how much keeping each alone in float helps
(`rank_by_sensitivity`, by `mean_kl` on the calibration images), kept in float one at a time.

Quantization-aware models (`resnet_tf.quantization.qat`) carry their ranges as fake-quant ops,
which every format's `write_quantization_aware` reads.
"""

from __future__ import annotations

import re

import numpy as np

from resnet_tf.errors import UserError
from resnet_tf.models.layers import Conv2DSame
from resnet_tf.models.units import ResidualUnit

# --------------------------------------------------------------------------------------------
# Layers by path


def quantizable_layers(model) -> list:
    """The layer paths of every convolution of a resnet_tf model, in order: a top-level
    convolution's name ("conv1", "logits"), or "<unit>/<sublayer>" inside a residual unit."""
    paths = []
    for layer in model.layers:
        if isinstance(layer, Conv2DSame):
            paths.append(layer.name)
        elif isinstance(layer, ResidualUnit):
            paths += [f"{layer.name}/{scope}" for scope, sub in layer.slim_sublayers()
                      if isinstance(sub, Conv2DSame)]
    return paths


def layer_at(model, path: str) -> Conv2DSame:
    first, *rest = path.split("/")
    layer = model.get_layer(first)
    for part in rest:
        layer = dict(layer.slim_sublayers())[part]
    return layer


def scope_regex(model_name: str, path: str):
    """The TensorFlow name scope of a layer path inside the serving function: each part may
    carry a `_<n>` Keras added (`resnet_v2_1/block2.unit_1.bottleneck_v2_1/conv2_1/...`),
    anchored at the model so that the root's "conv1" never matches a unit's."""
    parts = [re.escape(part) + r"(?:_\d+)?" for part in [model_name] + path.split("/")]
    return re.compile("^" + "/".join(parts) + "/")


def one_match(path, found, what):
    """The one item of `found` that layer `path` names in a runtime's graph."""
    if len(found) != 1:
        raise AssertionError(f"layer {path!r} matches {len(found)} {what}: {found[:4]}")
    return found[0]


# --------------------------------------------------------------------------------------------
# Post-training quantization with float layers


class Quantizer:
    """A format's post-training quantizer, made by its module's `make_quantizer` (calibrated
    there); `write(float_layers, target)` writes the int8 model file(s) into the dir `target`
    with the layers at those paths kept in float."""

    def write(self, float_layers, target: str) -> None:
        raise NotImplementedError


# --------------------------------------------------------------------------------------------
# Measured, and bounded


def mean_kl(reference, probabilities) -> float:
    """Mean KL(reference || probabilities) over the rows: how far an int8 model's outputs are
    from float32's (label-free)."""
    reference = np.clip(np.asarray(reference, np.float64), 1e-12, 1.0)
    probabilities = np.clip(np.asarray(probabilities, np.float64), 1e-12, 1.0)
    return float(np.mean(np.sum(reference * (np.log(reference) - np.log(probabilities)), -1)))


def rank_by_sensitivity(candidates, measure) -> list:
    """`candidates` ordered by how much keeping each alone in float helps: `measure(layers)`
    is the int8 error with `layers` in float (lower is better)."""
    errors = {path: measure([path]) for path in candidates}
    return sorted(candidates, key=lambda path: (errors[path], candidates.index(path)))


def bounded(measure_drop, ranking, max_drop):
    """Keeps layers in float in the order `ranking()` gives (asked only when the fully int8
    model misses the bound), one at a time, until `measure_drop(layers)` is at most
    `max_drop`. Returns (float layers, drop, measured history); a `UserError` naming the best
    drop reached when no mix reaches it."""
    layers, history = [], []
    drop = measure_drop(layers)
    history.append((list(layers), drop))
    order = ranking() if drop > max_drop else []
    for path in order:
        if drop <= max_drop:
            break
        layers.append(path)
        drop = measure_drop(layers)
        history.append((list(layers), drop))
    if drop > max_drop:
        best_layers, best = min(history, key=lambda entry: (entry[1], len(entry[0])))
        raise UserError(f"no int8 model is within --max-accuracy-drop {max_drop:.4f} of "
                        f"float32: the best reached was a drop of {best:.4f} top-1 (with "
                        f"{len(best_layers)} of {len(order)} convolutions in float); nothing "
                        "was written")
    return layers, drop, history
