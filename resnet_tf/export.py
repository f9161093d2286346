"""`resnet-tf export`: a SavedModel that plain TensorFlow serves, written with Keras' ExportArchive.

Signatures (inference mode: batch norm uses its moving statistics, so an image scores the same
alone or in a batch):

  serving_default(images: float32 [N, H, W, 3], raw 0..255 pixels)
      -> probabilities float32 [N, C], classes int64 [N]
  serving_bytes(image_bytes: string [N], encoded JPEG/PNG/BMP/GIF)
      -> probabilities, classes

Preprocessing is inside: slim's Inception eval (central crop, bilinear resize to the model's
image size, values to [-1, 1]). Class names, when known, go along as `assets/class_names.txt`,
one per line, line i for class i.

    loaded = tf.saved_model.load("export")
    out = loaded.signatures["serving_default"](images=tf.constant(pixels, tf.float32))

TensorFlow only.
"""

from __future__ import annotations

import dataclasses
import os
import sys

import keras
import tensorflow as tf

from resnet_tf import preprocessing
from resnet_tf.utils import write_text

CLASS_NAMES_ASSET = "class_names.txt"
SLIM_EVAL_IMAGE_SIZE = 299  # slim's ResNet V2 checkpoints are evaluated at 299 px


def export_saved_model(model: keras.Model, output: str, image_size: int,
                       central_fraction: float = preprocessing.EVAL_CENTRAL_FRACTION,
                       class_names=None, overwrite: bool = False) -> str:
    """Writes `model` with the two serving signatures to `output` (refused if it exists,
    unless `overwrite` and it is an earlier export); assembled in a staging dir, so a failure
    leaves nothing behind. `deploy.export_model(format="saved_model")`."""
    from resnet_tf.deploy import export_model

    return export_model(model, output, format="saved_model", image_size=image_size,
                        central_fraction=central_fraction, class_names=class_names,
                        overwrite=overwrite)


def write_saved_model(model: keras.Model, target: str, image_size: int,
                      central_fraction: float = preprocessing.EVAL_CENTRAL_FRACTION,
                      class_names=None, method: str = "inception") -> None:
    """Writes the SavedModel to the new dir `target` (no checks: `deploy.export_model` makes
    them)."""

    def classify(images):
        logits = tf.cast(model(images, training=False), tf.float32)
        probabilities = tf.nn.softmax(logits, axis=-1)
        return {"probabilities": probabilities, "classes": tf.argmax(probabilities, axis=-1)}

    def serve_images(images):
        if method == "inception":  # floats in [0, 1], as slim's preprocessing takes them
            images = preprocessing.scale_pixels(images)
        return classify(preprocessing.slim_eval_preprocessing(images, image_size,
                                                              central_fraction, method))

    def serve_bytes(image_bytes):
        def one(encoded):
            image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
            return preprocessing.slim_eval_preprocessing(image, image_size, central_fraction,
                                                         method)

        images = tf.map_fn(one, image_bytes, fn_output_signature=tf.TensorSpec(
            [image_size, image_size, 3], tf.float32))
        return classify(images)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve_images, input_signature=[
        tf.TensorSpec([None, None, None, 3], tf.float32, name="images")])
    archive.add_endpoint("serving_bytes", serve_bytes, input_signature=[
        tf.TensorSpec([None], tf.string, name="image_bytes")])
    archive.write_out(target, verbose=False)
    if class_names is not None:
        write_text(os.path.join(target, "assets", CLASS_NAMES_ASSET),
                   "\n".join(class_names) + "\n")


@dataclasses.dataclass
class ModelSource:
    """A Keras model to export, predict with or evaluate, and how its inputs are prepared."""

    model: keras.Model
    image_size: int
    central_fraction: float | None
    class_names: list | None
    preprocessing: str = "inception"  # or "vgg" (slim's V1 checkpoints)
    config: object = None  # the TrainConfig of a model dir
    description: str = ""


def load_model_source(model_dir=None, slim_checkpoint=None, model_name="resnet_v2_50",
                      num_classes=None, image_size=None, checkpoint="final",
                      weights=None) -> ModelSource:
    """The model of a `resnet-tf train` model dir, or a registry model loaded strictly from a
    slim checkpoint or `weights` ("imagenet", a URL or a path: `resnet_tf.weights`), with the
    preprocessing and image size slim's releases expect (V1: VGG, 224 px; V2: Inception,
    299 px) unless `image_size`. `num_classes` defaults to the releases' (1000 for V1, 1001 for
    V2)."""
    if sum(source is not None for source in (model_dir, slim_checkpoint, weights)) != 1:
        raise ValueError("give exactly one of model_dir, slim_checkpoint and weights")
    if model_dir is not None:
        model, config, names = load_model_dir(model_dir, checkpoint)
        return ModelSource(model, image_size or config.image_size, config.central_fraction,
                           names, "inception", config, f"model dir {model_dir}")
    if num_classes is None:
        num_classes = 1000 if model_name.startswith("resnet_v1") else 1001
    if weights is not None:
        from resnet_tf.data import imagenet_class_names
        from resnet_tf.registry import create_model

        model = create_model(model_name, num_classes=num_classes, weights=weights)
        names = imagenet_class_names(num_classes) if num_classes in (1000, 1001) else None
        return slim_model_source(model, names, image_size, f"weights {weights}")
    model, names = model_from_slim_checkpoint(slim_checkpoint, model_name, num_classes)
    return slim_model_source(model, names, image_size, f"slim checkpoint {slim_checkpoint}")


def slim_model_source(model, class_names, image_size=None, description="") -> ModelSource:
    """A model with slim's released weights: V1 checkpoints expect VGG preprocessing at 224 px,
    V2 checkpoints Inception preprocessing at 299 px."""
    if model.name.startswith("resnet_v1"):
        return ModelSource(model, image_size or 224, None, class_names, "vgg",
                           description=description)
    return ModelSource(model, image_size or SLIM_EVAL_IMAGE_SIZE,
                       preprocessing.EVAL_CENTRAL_FRACTION, class_names, "inception",
                       description=description)


CHECKPOINTS = ("final", "last", "best")


def load_model_dir(model_dir: str, checkpoint: str = "final"):
    """(model, config, class names) of a `resnet-tf train` model dir.

    `checkpoint`: "final" is model.keras, written when a run finishes (a run that was
    interrupted has none yet: then the last epoch's checkpoint is used); "last" and "best" are
    checkpoints/last.keras and checkpoints/best.keras (best val_accuracy).
    """
    from resnet_tf.config import load_config
    from resnet_tf.data import read_class_names
    from resnet_tf.model_dir import ModelDir

    import resnet_tf

    resnet_tf.register_layers()  # for deserialisation
    if checkpoint not in CHECKPOINTS:
        raise ValueError(f"checkpoint must be one of {list(CHECKPOINTS)}. "
                         f"Received: checkpoint={checkpoint!r}")
    paths = ModelDir(model_dir)
    if not os.path.isdir(model_dir) or not os.path.isfile(paths.config):
        raise FileNotFoundError(f"No trained model in {model_dir!r} (no config.yaml: run "
                                "`resnet-tf train` first)")
    path = {"final": paths.model, "last": paths.last, "best": paths.best}[checkpoint]
    if checkpoint == "final" and not os.path.isfile(path) and os.path.isfile(paths.last):
        print(f"resnet-tf: {paths.model} is not written yet (the run did not finish); using "
              f"the last epoch's checkpoint {paths.last}", file=sys.stderr)
        path = paths.last
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No trained model in {model_dir!r} (expected {path}; run "
                                "`resnet-tf train` first)")
    config = load_config(paths.config)
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as error:  # noqa: BLE001  (Keras reports a torn zip in several ways)
        raise ValueError(f"{path!r} cannot be read as a .keras model ({type(error).__name__}); "
                         "it may be truncated: use another --checkpoint (last, best) or train "
                         "again") from None
    names = read_class_names(paths.class_names) if os.path.isfile(paths.class_names) else None
    return model, config, names


def model_from_slim_checkpoint(checkpoint: str, model_name: str, num_classes: int):
    """A registry model loaded strictly from a slim checkpoint, with slim's class names for
    ImageNet-sized heads."""
    from resnet_tf.data import imagenet_class_names
    from resnet_tf.registry import create_model
    from resnet_tf.slim_checkpoint import load_slim_checkpoint

    model = create_model(model_name, num_classes=num_classes)
    load_slim_checkpoint(model, checkpoint)
    names = imagenet_class_names(num_classes) if num_classes in (1000, 1001) else None
    return model, names
