"""Every model builder of resnet_tf by name, for configs and the command line."""

from __future__ import annotations

from resnet_tf.resnet_v2 import resnet_v2_50, resnet_v2_101, resnet_v2_152, resnet_v2_200

MODELS = {builder.__name__: builder
          for builder in (resnet_v2_50, resnet_v2_101, resnet_v2_152, resnet_v2_200)}


def create_model(name: str, **kwargs):
    """Builds the model called `name` (e.g. "resnet_v2_50") with the builder's keyword arguments."""
    if name not in MODELS:
        raise ValueError(f"Unknown model; known models are {sorted(MODELS)}. Received: name={name!r}")
    return MODELS[name](**kwargs)
