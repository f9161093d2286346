"""The parser of `resnet-tf`: its commands, options and choices, and the dispatch to
`resnet_tf.commands.<command>.run(args)`.

Building and using the parser imports nothing of the library: `--help` answers at once, and a
command's first import of TensorFlow happens under `native_output`'s filter. The choices it
offers are written here and are the library's own (tests/test_cli.py checks that they are
equal); a model name is checked against `resnet_tf.models.registry` when the command runs.
"""

from __future__ import annotations

import argparse
import importlib

# The library's choices (resnet_tf.commands.benchmark, .training.config, .export.export_dir,
# .training.model_dir, .weights.catalog), written here so that the parser does not import Keras.
MODES = ("forward", "forward-backward")
COMPARE = ("none", "keras-applications")
DISTRIBUTE = ("none", "mirrored", "multiworker")
DTYPES = ("float32", "mixed_bfloat16", "mixed_float16")
FORMATS = ("saved_model", "tflite", "onnx", "openvino")
PRECISIONS = ("float32", "float16", "int8")
CHECKPOINTS = ("final", "last", "best")
WEIGHT_SOURCES = ("imagenet", "torchvision", "timm", "keras", "bit-m", "bit-m-in1k")


def command(name: str, parser):
    """The handler of a command: `resnet_tf.commands.<name>.run(args)`, imported when it runs;
    an unknown `--model` is `parser`'s usage error, as a wrong choice is."""
    def handler(args):
        model = getattr(args, "model", None)
        if model is not None:
            from resnet_tf.models.registry import NAMED_MODELS

            if model not in NAMED_MODELS:
                parser.error(f"argument --model: invalid choice: {model!r} (choose from "
                             f"{', '.join(sorted(NAMED_MODELS))})")
        return importlib.import_module(f"resnet_tf.commands.{name}").run(args)

    handler.__name__ = f"run_{name}"
    return handler


def _int_at_least(minimum):
    """An argparse type: an integer >= `minimum`, or argparse's usage error."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _fraction(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value}")
    return value


def _common_options(suppress: bool):
    """--verbose and --debug, accepted before or after the command."""
    parser = argparse.ArgumentParser(add_help=False)
    default = argparse.SUPPRESS if suppress else False
    parser.add_argument("--verbose", action="store_true", default=default,
                        help="keep TensorFlow's and the runtimes' native logging on stderr")
    parser.add_argument("--debug", action="store_true", default=default,
                        help="show the traceback of an error instead of one sentence")
    return parser


def add_train_parser(subparsers, common):
    parser = subparsers.add_parser(
        "train", parents=[common],
        help="train a model with model.fit from a YAML config",
        description="Trains the model a YAML config describes with Keras' model.fit: progress "
                    "bar, checkpoints (last and best), crash-safe state, TensorBoard and CSV "
                    "logs, and DIR/metrics.json at the end. Re-running the same command "
                    "continues where training stopped (also after a crash, a kill, Ctrl-C or "
                    "SIGTERM); a larger --epochs trains only the added epochs. A new run needs "
                    "an absent or empty --model-dir.")
    parser.add_argument("--config", required=True,
                        help="a YAML config file, or the name of a shipped one (quickstart, "
                             "imagenet_resnet_v2_50, finetune_folder, cifar10_...)")
    parser.add_argument("--model-dir", required=True, metavar="DIR",
                        help="where checkpoints, logs and metrics.json go (re-use it to resume)")
    parser.add_argument("--epochs", type=_positive_int, help="overrides the config's epochs")
    parser.add_argument("--distribute", choices=DISTRIBUTE, default="none",
                        help="mirrored: tf.distribute.MirroredStrategy over local GPUs (or "
                             "--cpu-devices CPUs); multiworker: MultiWorkerMirroredStrategy "
                             "with TF_CONFIG")
    parser.add_argument("--cpu-devices", type=_positive_int, metavar="N",
                        help="with --distribute mirrored: split the CPU into N replicas")
    parser.add_argument("--dtype", choices=DTYPES,
                        help="Keras dtype policy (overrides the config; a resumed run keeps "
                             "the one it was trained with)")
    parser.add_argument("--init-from", metavar="MODEL_DIR",
                        help="start from another run's model (its best checkpoint, else its "
                             "final one); overrides the config's init_from")
    parser.add_argument("--weights", metavar="SOURCE|URL|PATH",
                        help="start from released ImageNet weights, all but the head: "
                             "imagenet (slim's), torchvision, timm, keras, bit-m (Big "
                             "Transfer's ImageNet-21k) or bit-m-in1k, or a URL or path "
                             "of such a file; the model takes their layout and images their "
                             "normalisation; overrides the config's weights")
    parser.add_argument("--quantization-aware", action="store_true", default=None,
                        help="fine-tune with int8 rounding simulated (quantization-aware "
                             "training); usually with --init-from a float run")
    parser.set_defaults(handler=command("train", parser))


def _add_source_arguments(parser, what, export=False, export_on_model_dir=False):
    """The options that name a model. `export_on_model_dir` (evaluate): --export may come
    with --model-dir, whose run then gives the images (its recorded validation images)."""
    group = parser.add_argument_group(f"the model to {what}")
    source = group.add_mutually_exclusive_group(required=not export_on_model_dir)
    source.add_argument("--model-dir", metavar="DIR",
                        help="a `resnet-tf train` model dir" + (
                            " (with --export: the run whose validation images to use)"
                            if export_on_model_dir else ""))
    source.add_argument("--slim-checkpoint", metavar="CKPT",
                        help="a slim checkpoint (with --model and --num-classes)")
    source.add_argument("--weights", metavar="SOURCE|URL|PATH",
                        help="with --model: released ImageNet weights, downloaded once, then "
                             "cached: imagenet (slim's), torchvision, timm, keras "
                             "(keras.applications'), bit-m or bit-m-in1k (Big Transfer's); or "
                             "a URL or path of such a file (a slim tarball or checkpoint, .pth, "
                             ".safetensors, .h5, .npz)")
    if export or export_on_model_dir:
        (group if export_on_model_dir else source).add_argument(
            "--export", metavar="EXPORT",
            help="a `resnet-tf export` dir of any format, run by its own runtime")
    group.add_argument("--model", metavar="NAME",
                       help="with --slim-checkpoint or --weights: the registry name (default "
                            "resnet_v2_50)")
    group.add_argument("--num-classes", type=_positive_int,
                       help="with --slim-checkpoint or --weights: default slim's releases' "
                            "(1000 for V1, 1001 for V2, whose class 0 is background)")
    group.add_argument("--checkpoint", choices=CHECKPOINTS,
                       help="with --model-dir: model.keras (final, the default; an interrupted "
                            "run's last epoch), or checkpoints/last or best (val_accuracy)")
    group.add_argument("--image-size", type=_positive_int,
                       help="with --slim-checkpoint or --weights: the input size (default: "
                            "the weights' own: slim's 299 for V2, 224 for V1; torchvision's and "
                            "keras' 224; timm's 288); a model dir's model has its own")
    group.add_argument("--moving-averages", action="store_true",
                       help="with --slim-checkpoint: load its ExponentialMovingAverage "
                            "shadows (slim's eval with --moving_average_decay)")
    return group


def add_export_parser(subparsers, common):
    parser = subparsers.add_parser(
        "export", parents=[common],
        help="write a SavedModel, TFLite, ONNX or OpenVINO model (float32, float16, int8)",
        description="Writes the model to --output in the format of an inference runtime. "
                    "saved_model (default): serving_default takes `images` (float32 [N, H, W, "
                    "3], raw 0..255 pixels; the eval preprocessing inside) and returns "
                    "`probabilities` and `classes`; serving_bytes takes encoded images. tflite, "
                    "onnx, openvino: input `images` float32 [N, S, S, 3], raw 0..255 pixels "
                    "already cropped and resized to the model's size S (preprocessing.json says "
                    "how), output `probabilities` [N, C]. int8 is calibrated on real images: "
                    "the model dir's training data, or --calibration-data.")
    _add_source_arguments(parser, "export")
    parser.add_argument("--output", required=True, metavar="DIR", help="the export dir")
    parser.add_argument("--format", choices=FORMATS, default="saved_model")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32",
                        help="float32 (default), float16 weights (tflite, openvino), or full "
                             "int8 quantization (tflite, onnx, openvino)")
    parser.add_argument("--calibration-data", metavar="DIR",
                        help="int8: an image folder (one sub-folder per class) to calibrate "
                             "on; default with --model-dir: its training images")
    parser.add_argument("--calibration-images", type=_positive_int, metavar="N",
                        help="int8: how many images to calibrate on (default 300)")
    parser.add_argument("--validation-data", metavar="DIR",
                        help="int8: labelled images (an image folder named as the model's "
                             "classes) to measure the int8 file's accuracy on, beside float32; "
                             "default with --model-dir: its run's validation images. The "
                             "figures go to accuracy.json")
    parser.add_argument("--max-accuracy-drop", type=_fraction, metavar="D",
                        help="int8: the most top-1 the int8 file may lose against float32 "
                             "(default 0.01 where there are validation images); convolutions "
                             "are kept in float, most sensitive first, until it holds, or the "
                             "export is refused")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier export at --output (anything else is refused)")
    parser.set_defaults(handler=command("export", parser))


def add_predict_parser(subparsers, common):
    parser = subparsers.add_parser(
        "predict", parents=[common],
        help="top-5 classes of image files",
        description="Prints the most probable classes (names and probabilities) of each image, "
                    "from a model dir, an export of any format or a slim checkpoint (slim's "
                    "1001-class background offset included; ImageNet's names ship with "
                    "resnet_tf). A file that cannot be read is reported on stderr and the "
                    "others are predicted; the status is 1 if any failed.")
    _add_source_arguments(parser, "predict with", export=True)
    parser.add_argument("--top", type=_positive_int, default=5, help="how many classes (5)")
    parser.add_argument("images", nargs="+", help="JPEG/PNG/BMP/GIF/WebP files")
    parser.set_defaults(handler=command("predict", parser))


def add_evaluate_parser(subparsers, common):
    parser = subparsers.add_parser(
        "evaluate", parents=[common],
        help="top-1 / top-5 accuracy of a model or an export on labelled images",
        description="slim's eval_image_classifier for every kind of model: a model dir, an "
                    "export of any format (run by its own runtime) or a slim checkpoint, on a "
                    "model dir's recorded validation images (the default for --model-dir), a "
                    "config's validation data, an image folder or slim-format TFRecords. Prints "
                    "top-1, top-5, the count and images/s.")
    _add_source_arguments(parser, "evaluate", export_on_model_dir=True)
    data = parser.add_argument_group("the labelled images (one of; default with --model-dir, "
                                     "also beside --export: the validation images its run "
                                     "recorded)")
    one = data.add_mutually_exclusive_group()
    one.add_argument("--config", help="a training config (file or shipped name): its "
                                      "validation data")
    one.add_argument("--data", metavar="DIR",
                     help="an image folder, one sub-folder per class named as the model's classes")
    one.add_argument("--tfrecords", metavar="PATTERN",
                     help="slim-format TFRecords (image/encoded, image/class/label 1..1000)")
    parser.add_argument("--batch-size", type=_positive_int, default=32)
    parser.add_argument("--json", dest="json_path", metavar="PATH",
                        help="also write top1, top5, count, runtime, precision, images_per_s")
    parser.set_defaults(handler=command("evaluate", parser))


def add_download_parser(subparsers, common):
    parser = subparsers.add_parser(
        "download", parents=[common],
        help="fill the cache with released ImageNet weights (e.g. before going offline)",
        description="Downloads released weights for --model once into the directory Keras "
                    "caches downloads in ($KERAS_HOME/resnet_tf/, default ~/.keras/resnet_tf/) "
                    "(slim's tarballs are unpacked); `--weights SOURCE` and "
                    "`weights=\"SOURCE\"` then need no network.")
    parser.add_argument("--model", required=True,
                        metavar="NAME", help="a model with released weights, e.g. resnet_v2_50 "
                                             "(docs/models.md lists them)")
    parser.add_argument("--weights", choices=WEIGHT_SOURCES, default="imagenet",
                        help="whose weights: imagenet (slim's releases, the default), "
                             "torchvision, timm, keras (keras.applications'), bit-m or "
                             "bit-m-in1k (Big Transfer's own files)")
    parser.set_defaults(handler=command("download", parser))


def add_bench_parser(subparsers, common):
    parser = subparsers.add_parser(
        "bench", parents=[common],
        help="time the forward pass or a training step (the seed's time_tensorflow_run)",
        description="Times a model the way the seed's time_tensorflow_run does: burn-in steps, "
                    "then timed steps, a line every 10 steps and 'mean +/- sd sec / batch'. "
                    "The defaults reproduce the seed: ResNet-152 V2, batch 32, 224x224 uniform "
                    "random images, 10 burn-in steps, 100 timed. Keras runs on the TensorFlow "
                    "(tf.function) and JAX (jax.jit) backends; set KERAS_BACKEND to choose. "
                    "--runtimes times the same weights through inference runtimes, "
                    "interleaved round by round.")
    parser.add_argument("--model", metavar="NAME",
                        help="a registry name (default resnet_v2_152)")
    parser.add_argument("--batch-size", type=_positive_int, default=32)
    parser.add_argument("--image-size", type=_positive_int, help="default 224")
    parser.add_argument("--num-batches", type=_positive_int, default=100)
    parser.add_argument("--burn-in", type=_non_negative_int, default=10)
    parser.add_argument("--num-classes", type=_positive_int, help="default 1000")
    parser.add_argument("--mode", choices=MODES, default="forward",
                        help="forward, or forward-backward (a full SGD training step)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32",
                        help="Keras dtype policy for the model")
    parser.add_argument("--jit-compile", action="store_true",
                        help="XLA-compile the TensorFlow step (JAX steps are always jitted)")
    parser.add_argument("--compare", choices=COMPARE, default="none",
                        help="also time keras.applications' ResNet of the same depth, "
                             "interleaved step by step, and print the ratio")
    parser.add_argument("--runtimes", metavar="LIST",
                        help="comma-separated runtime:precision entries, e.g. keras:float32,"
                             "keras:bfloat16,tflite:int8,onnxruntime:int8,openvino:bfloat16,"
                             "openvino:int8 (runtimes: keras, tflite, onnxruntime, openvino); "
                             "the forward pass only, compared with the first entry")
    parser.add_argument("--exports", metavar="DIR,...",
                        help="comma-separated `resnet-tf export` dirs (any format, each run by "
                             "its own runtime), timed interleaved against the first, e.g. a "
                             "fully int8 export beside a bounded one with layers in float")
    parser.add_argument("--json", dest="json_path", metavar="PATH",
                        help="write every step's duration, images/s, device and versions here")
    parser.set_defaults(handler=command("bench", parser))


def build_parser():
    parser = argparse.ArgumentParser(
        prog="resnet-tf", parents=[_common_options(suppress=False)],
        description="TF-slim's ResNet in Keras 3: train, export, predict, evaluate, download, "
                    "bench.")
    common = _common_options(suppress=True)
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_train_parser(subparsers, common)
    add_export_parser(subparsers, common)
    add_predict_parser(subparsers, common)
    add_evaluate_parser(subparsers, common)
    add_download_parser(subparsers, common)
    add_bench_parser(subparsers, common)
    return parser
