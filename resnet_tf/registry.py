"""Every model builder of resnet_tf by name, for configs and the command line."""

from __future__ import annotations

from resnet_tf.cifar import cifar_resnet_ablation, cifar_resnet_v1, cifar_resnet_v2
from resnet_tf.resnet_v1 import (resnet_v1_18, resnet_v1_34, resnet_v1_50, resnet_v1_101,
                                 resnet_v1_152, resnet_v1_200)
from resnet_tf.resnet_v2 import (resnet_v2_18, resnet_v2_34, resnet_v2_50, resnet_v2_101,
                                 resnet_v2_152, resnet_v2_200)

MODELS = {
    builder.__name__: builder
    for builder in (
        resnet_v1_18, resnet_v1_34, resnet_v1_50, resnet_v1_101, resnet_v1_152, resnet_v1_200,
        resnet_v2_18, resnet_v2_34, resnet_v2_50, resnet_v2_101, resnet_v2_152, resnet_v2_200,
        cifar_resnet_v1, cifar_resnet_v2, cifar_resnet_ablation,
    )
}


def create_model(name: str, **kwargs):
    """Builds the model called `name` (e.g. "resnet_v2_50") with the builder's keyword arguments."""
    if name not in MODELS:
        raise ValueError(f"Unknown model; known models are {sorted(MODELS)}. Received: name={name!r}")
    return MODELS[name](**kwargs)
