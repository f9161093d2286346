"""ImageNet's class names in slim's label order, shipped with the package."""

from __future__ import annotations

import os

from resnet_tf.errors import UserError


def imagenet_class_names(num_classes: int = 1001) -> list:
    """The 1000 ImageNet class names in slim's label order (synset ids sorted), shipped with the
    package; with 1001 classes, slim's "background" is class 0."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "imagenet_class_names.txt")
    with open(path) as f:
        names = [line.strip() for line in f if line.strip()]
    if num_classes == 1001:
        return ["background"] + names
    if num_classes == 1000:
        return names
    raise UserError(f"ImageNet has 1000 classes (1001 with slim's background). "
                    f"Received: num_classes={num_classes}")


def default_class_names(num_classes: int):
    """ImageNet's names (slim's order) for a 1000- or 1001-class model, else None."""
    return imagenet_class_names(num_classes) if num_classes in (1000, 1001) else None
