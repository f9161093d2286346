"""resnet_tf: TF-slim's ResNet in Keras 3.

    import resnet_tf
    model = resnet_tf.resnet_v2_50(num_classes=1001)
    feats = resnet_tf.end_points(model)(images)
    resnet_tf.load_slim_checkpoint(model, "resnet_v2_50.ckpt")

The model code (`resnet_utils`, `resnet_v2`, `feature_extraction`, `slim_variables`) uses only
Keras; `load_slim_checkpoint` needs TensorFlow and imports it only when called.
"""

from resnet_tf.feature_extraction import end_points
from resnet_tf.resnet_utils import (
    Block,
    Conv2DSame,
    ResidualUnit,
    Subsample,
    ZeroPadShortcut,
    conv2d_same,
    resnet_arg_scope,
    stack_blocks_dense,
    subsample,
)
from resnet_tf.resnet_v1 import (
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
from resnet_tf.resnet_v2 import (
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
)
from resnet_tf.cifar import AblationUnit, cifar_resnet_ablation, cifar_resnet_v1, cifar_resnet_v2
from resnet_tf.registry import MODELS, create_model
from resnet_tf.slim_variables import slim_variables


def load_slim_checkpoint(model, path, scope=None, exclude=()):
    """See `resnet_tf.slim_checkpoint.load_slim_checkpoint` (imports TensorFlow when called)."""
    from resnet_tf.slim_checkpoint import load_slim_checkpoint as _load

    return _load(model, path, scope=scope, exclude=exclude)


__version__ = "0.1.0"
