"""SavedModel: what TensorFlow Serving and plain TensorFlow load; the preprocessing is inside.

Keras' `ExportArchive` writes `serving_default(images)`, float32 `[N, H, W, 3]` raw 0..255
pixels of any size (it crops, resizes and normalises them itself), and `serving_bytes(
image_bytes)`, encoded images; both return `probabilities` and `classes`. float32 only: the
model's own weights. The protocol every format module follows is in `resnet_tf.export.formats`.
"""

from __future__ import annotations

from resnet_tf.data.pixels import EvalPreprocessing
from resnet_tf.errors import UserError, require
from resnet_tf.export.contract import OUTPUT_NAME
from resnet_tf.export.runner import Runner, loading

NAME = "saved_model"
RUNTIME = "saved_model"
FILES = ("saved_model.pb",)
RUNTIME_PRECISIONS: tuple = ()  # not one of bench's --runtimes: Keras itself is
UNSUPPORTED = {
    "float16": "the SavedModel export keeps the model's float32 weights; choose --format "
               "tflite or openvino for float16 weights",
    "int8": "the SavedModel export keeps the model's float32 weights; choose --format tflite, "
            "onnx or openvino for int8",
}
CONVERTERS: tuple = ()
FROM_SERVING_FUNCTION = False  # written from the model itself, with its preprocessing
PREPARES_IMAGES = True  # crops, resizes and normalises raw images itself
CLASS_NAMES_DIR = "assets"
STORED_PRECISION = {}


def write_model(model, target: str, prep: EvalPreprocessing) -> None:
    """Writes the SavedModel with `serving_default` (raw pixels of any size) and
    `serving_bytes` (encoded images) to the new dir `target`."""
    import keras
    import tensorflow as tf

    from resnet_tf.data import preprocessing

    def classify(inputs):
        logits = tf.cast(model(inputs, training=False), tf.float32)
        probabilities = tf.nn.softmax(logits, axis=-1)
        return {OUTPUT_NAME: probabilities, "classes": tf.argmax(probabilities, axis=-1)}

    def serve_images(images):
        if prep.crop == "central":  # floats in [0, 1], as slim's central crop takes them
            images = preprocessing.scale_pixels(images)
        return classify(preprocessing.prepare_input(images, prep))

    def serve_bytes(image_bytes):
        def one(encoded):
            image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
            return preprocessing.prepare_input(image, prep)

        images = tf.map_fn(one, image_bytes, fn_output_signature=tf.TensorSpec(
            [prep.image_size, prep.image_size, 3], tf.float32))
        return classify(images)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve_images, input_signature=[
        tf.TensorSpec([None, None, None, 3], tf.float32, name="images")])
    archive.add_endpoint("serving_bytes", serve_bytes, input_signature=[
        tf.TensorSpec([None], tf.string, name="image_bytes")])
    archive.write_out(target, verbose=False)


def open_runner(path: str, precision: str = "float32", prep=None, threads=None) -> Runner:
    """`serving_default` of the export dir `path` (raw images of any size)."""
    return saved_model_runner(path, prep)


def saved_model_runner(path: str, prep=None) -> Runner:
    """`serving_default` of a `resnet-tf export` SavedModel: raw images of any size (it crops
    and resizes itself)."""
    tf = require("tensorflow", "TensorFlow")
    with loading(path, "TensorFlow"):
        loaded = tf.saved_model.load(path)
    if "serving_default" not in loaded.signatures:
        raise UserError(f"{path!r} has no 'serving_default' signature (signatures: "
                        f"{sorted(loaded.signatures)}); export it with `resnet-tf export`")
    signature = loaded.signatures["serving_default"]
    return Runner("saved_model", "float32",
                  lambda pixels: signature(images=tf.constant(pixels))[OUTPUT_NAME].numpy(),
                  prep, takes_any_size=True)
