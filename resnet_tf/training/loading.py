"""Loading the models that `predict`, `evaluate` and `export` work on: a `resnet-tf train` model
dir, a slim checkpoint, or slim's released weights, each with how its images are prepared.

    source = load_model_source(model_dir="runs/quickstart")
    source = load_model_source(weights="imagenet", model_name="resnet_v2_50")
    source.model, source.prep, source.class_names

A model dir's images are prepared as its training validated them (`TrainConfig.
eval_preprocessing`); a slim checkpoint's as slim evaluates its family (`weights.
slim_conventions`: V1 VGG at 224 px, V2 Inception at 299 px).

Keras; TensorFlow only through the slim checkpoint reader, when one is read.
"""

from __future__ import annotations

import dataclasses
import os

import keras

from resnet_tf.data.pixels import EvalPreprocessing
from resnet_tf.errors import UserError
from resnet_tf.training.model_dir import ModelDir, readable_keras_file
from resnet_tf.utils import read_class_names


@dataclasses.dataclass
class ModelSource:
    """A Keras model to export, predict with or evaluate, and how its inputs are prepared."""

    model: keras.Model
    prep: EvalPreprocessing
    class_names: list | None
    model_dir: ModelDir | None = None  # a model dir's records (config, data)
    config: object = None  # the TrainConfig of a model dir


def load_model_source(model_dir=None, slim_checkpoint=None, weights=None,
                      model_name="resnet_v2_50", num_classes=None, image_size=None,
                      checkpoint="final", moving_averages=False) -> ModelSource:
    """The model of a `resnet-tf train` model dir (`checkpoint`: final, last or best), or a
    registry model loaded strictly from a slim checkpoint or `weights` ("imagenet",
    "torchvision", "timm", "keras", "bit-m", "bit-m-in1k", a URL or a path:
    `resnet_tf.weights.sources`), with the preprocessing and image size its source evaluates
    at (slim: its family's) unless `image_size`; `num_classes` defaults to the weights'
    (slim's releases: 1000 for V1, 1001 for V2)."""
    if sum(source is not None for source in (model_dir, slim_checkpoint, weights)) != 1:
        raise UserError("give exactly one of model_dir, slim_checkpoint and weights")
    if model_dir is not None:
        if image_size is not None:
            raise UserError(f"a model dir's model takes the image size it was trained at "
                            f"(its config's image_size); leave out --image-size. Received: "
                            f"image_size={image_size}")
        if moving_averages:
            raise UserError("moving averages are for slim checkpoints; a model dir has none")
        model, config, names = load_model_dir(model_dir, checkpoint)
        return ModelSource(model, config.eval_preprocessing(), names, ModelDir(model_dir),
                           config)
    if checkpoint != "final":
        raise UserError(f"--checkpoint {checkpoint} picks a model dir's checkpoint; it does "
                        "not apply to a slim checkpoint or weights")
    from resnet_tf.data.class_names import default_class_names
    from resnet_tf.models.registry import create_model
    from resnet_tf.weights.catalog import slim_conventions

    if weights is not None:
        if moving_averages:
            raise UserError("--moving-averages is for --slim-checkpoint (released weights "
                            "hold no moving averages)")
        from resnet_tf.weights.sources import resolve_weights

        resolved = resolve_weights(model_name, weights, num_classes)
        if num_classes is None:
            num_classes = resolved.num_classes or None  # a file without a head: features
        model = create_model(model_name, num_classes=num_classes, weights=resolved)
        prep = resolved.preprocessing
        if image_size is not None:
            prep = dataclasses.replace(prep, image_size=image_size, resize_side=None)
        return ModelSource(model, prep, default_class_names(num_classes))
    from resnet_tf.slim.checkpoint import load_slim_checkpoint

    conventions = slim_conventions(model_name)
    num_classes = conventions.num_classes if num_classes is None else num_classes
    model = create_model(model_name, num_classes=num_classes)
    load_slim_checkpoint(model, slim_checkpoint, moving_averages=moving_averages)
    return ModelSource(model, conventions.eval_preprocessing(image_size),
                       default_class_names(num_classes))


def load_model_dir(model_dir: str, checkpoint: str = "final"):
    """(model, config, class names) of a `resnet-tf train` model dir.

    `checkpoint`: "final" is model.keras, written when a run finishes (a run that was
    interrupted has none yet: then the last epoch's checkpoint is used); "last" and "best" are
    checkpoints/last.keras and checkpoints/best.keras (best val_accuracy).
    """
    from resnet_tf.training.config import load_config

    run_dir = ModelDir(model_dir)
    path = run_dir.checkpoint_path(checkpoint)
    config = load_config(run_dir.config)
    model = load_keras_file(path)
    names = read_class_names(run_dir.class_names) if os.path.isfile(run_dir.class_names) else None
    return model, config, names


def load_keras_file(path: str) -> keras.Model:
    """`keras.saving.load_model(path)`, with a sentence for a torn file (naming the other
    checkpoints) and for a whole file Keras cannot load (naming Keras' reason)."""
    # resnet_tf's layers are registered for deserialisation: importing this module imported
    # the package, and `import resnet_tf` imports every layer.
    if not readable_keras_file(path):
        raise UserError(f"{path!r} cannot be read as a .keras model: it is truncated or "
                        "corrupt; use another --checkpoint (last, best) or train again")
    try:
        return keras.saving.load_model(path, compile=False)
    except (ValueError, TypeError, KeyError) as error:
        reason = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
        raise UserError(f"{path!r} is a whole .keras file that this Keras "
                        f"({keras.__version__}) cannot load: {type(error).__name__}: "
                        f"{reason}") from None
