"""resnet_tf: TF-slim's ResNet in Keras 3.

    import resnet_tf
    model = resnet_tf.resnet_v2_50(num_classes=1001, weights="imagenet")
    feats = resnet_tf.end_points(model)(images)

`import resnet_tf` imports Keras and the model code, which registers every resnet_tf layer with
Keras as its module defines it (as Keras libraries do): a `.keras` file loads after
`import resnet_tf`, whichever of Keras and resnet_tf was imported first. TensorFlow itself is
imported only by what needs it (checkpoints, data, training, exports), so the model code runs
on every Keras backend. The `resnet-tf` command lives outside the package (`resnet_tf_cli`) so
that `--help` answers without Keras.

The sub-packages, one per layer (docs/architecture.md says which may import which):
`models` (the builders and their layers, Keras only), `quantization` (quantization-aware
layers, Keras only), `slim` (slim's checkpoint format), `weights` (released weights), `data`
(datasets and the eval recipe), `training` (configs, model dirs, the training loop), `export`
(SavedModel and the runtimes' files, the int8 bound search) and `commands` (what `resnet-tf`
runs).
"""

from __future__ import annotations

import keras as _keras

from resnet_tf.errors import UserError
from resnet_tf.models.bit import (
    BIT_MODELS,
    resnet_v2_50x1_bit,
    resnet_v2_50x3_bit,
    resnet_v2_101x1_bit,
    resnet_v2_101x3_bit,
    resnet_v2_152x2_bit,
    resnet_v2_152x4_bit,
)
from resnet_tf.models.cifar import (
    AblationUnit,
    cifar_resnet_ablation,
    cifar_resnet_v1,
    cifar_resnet_v2,
)
from resnet_tf.models.feature_extraction import block_info, end_points
from resnet_tf.models.layers import Conv2DSame, SqueezeExcite, Subsample
from resnet_tf.models.layers import set_grouped_convolution as _set_grouped_convolution
from resnet_tf.models.precision import float32_model
from resnet_tf.models.registry import MODEL_NAMES, create_model
from resnet_tf.models.resnet_utils import (
    Block,
    conv2d_same,
    resnet_arg_scope,
    set_weights_resolver,
    stack_blocks_dense,
    subsample,
)
from resnet_tf.models.resnet_v1 import (
    BasicBlockV1,
    BottleneckV1,
    resnet_v1,
    resnet_v1_18,
    resnet_v1_34,
    resnet_v1_50,
    resnet_v1_101,
    resnet_v1_152,
    resnet_v1_200,
    resnet_v1_block,
    resnet_v1_blocks,
)
from resnet_tf.models.resnet_v2 import (
    BasicBlockV2,
    Bottleneck,
    bottleneck,
    resnet_v2,
    resnet_v2_18,
    resnet_v2_34,
    resnet_v2_50,
    resnet_v2_101,
    resnet_v2_152,
    resnet_v2_200,
    resnet_v2_block,
    resnet_v2_blocks,
    resnet_v2_stack,
)
from resnet_tf.models.schedules import WarmupStaircase  # noqa: F401 (registered for .keras)
from resnet_tf.models.units import (
    AveragePoolShortcut,
    ResidualUnit,
    ZeroPadShortcut,
    make_shortcut,
)
from resnet_tf.models.variants import (
    VARIANTS,
    resnet50d,
    resnet101d,
    resnet152d,
    resnet200d,
    resnet_rs_50,
    resnet_rs_101,
    resnet_rs_152,
    resnet_rs_200,
    resnet_rs_270,
    resnet_rs_350,
    resnet_rs_420,
    resnext50_32x4d,
    resnext101_32x8d,
    resnext101_64x4d,
    seresnext50_32x4d,
    seresnext101d_32x8d,
    wide_resnet50_2,
    wide_resnet101_2,
)
from resnet_tf.quantization.qat import calibrate, is_quantized, quantize_model
from resnet_tf.slim.variables import slim_variables
from resnet_tf.weights.sources import resolve_weights

set_weights_resolver(resolve_weights)  # what the builders' weights= load (docs/architecture.md)
if _keras.backend.backend() == "tensorflow":  # TensorFlow's grouped Conv2D, not Keras' XLA one
    from resnet_tf.tensorflow_ops import grouped_convolution as _grouped_convolution

    _set_grouped_convolution(_grouped_convolution)

__version__ = "0.1.0"

__all__ = [
    "AblationUnit", "BasicBlockV1", "BasicBlockV2", "Block", "Bottleneck", "BottleneckV1",
    "Conv2DSame", "MODEL_NAMES", "ResidualUnit", "Subsample", "UserError", "ZeroPadShortcut",
    "block_info", "bottleneck", "calibrate", "cifar_resnet_ablation", "cifar_resnet_v1",
    "cifar_resnet_v2", "conv2d_same", "create_model", "end_points", "float32_model",
    "is_quantized", "load_slim_checkpoint", "make_shortcut", "quantize_model",
    "resnet_arg_scope", "resnet_v1", "resnet_v1_18", "resnet_v1_34", "resnet_v1_50",
    "resnet_v1_101", "resnet_v1_152", "resnet_v1_200", "resnet_v1_block", "resnet_v1_blocks",
    "resnet_v2", "resnet_v2_18", "resnet_v2_34", "resnet_v2_50", "resnet_v2_101",
    "resnet_v2_152", "resnet_v2_200", "resnet_v2_block", "resnet_v2_blocks", "resnet_v2_stack",
    "slim_variables", "stack_blocks_dense", "subsample",
    # The stronger ResNets (`resnet_tf.models.variants`) and their parts.
    "AveragePoolShortcut", "SqueezeExcite", "VARIANTS", "resnext50_32x4d", "resnext101_32x8d",
    "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2", "resnet50d", "resnet101d",
    "resnet152d", "resnet200d", "seresnext50_32x4d", "seresnext101d_32x8d", "resnet_rs_50",
    "resnet_rs_101", "resnet_rs_152", "resnet_rs_200", "resnet_rs_270", "resnet_rs_350",
    "resnet_rs_420",
    # Big Transfer (`resnet_tf.models.bit`).
    "BIT_MODELS", "resnet_v2_50x1_bit", "resnet_v2_50x3_bit", "resnet_v2_101x1_bit",
    "resnet_v2_101x3_bit", "resnet_v2_152x2_bit", "resnet_v2_152x4_bit",
]


def load_slim_checkpoint(model, path, scope=None, exclude=(), moving_averages=False):
    """See `resnet_tf.slim.checkpoint.load_slim_checkpoint` (imports TensorFlow when called)."""
    from resnet_tf.slim.checkpoint import load_slim_checkpoint as _load

    return _load(model, path, scope=scope, exclude=exclude, moving_averages=moving_averages)


def register_layers() -> None:
    """Deprecated, and does nothing: `import resnet_tf` registers the layers itself."""
    import warnings

    warnings.warn("resnet_tf.register_layers() is deprecated and does nothing: `import "
                  "resnet_tf` registers the layers", DeprecationWarning, stacklevel=2)
