"""The `resnet-tf` command line: train, export, predict, evaluate, bench.

Building the parser imports nothing heavy (no Keras, no TensorFlow): `--help` answers at once,
and each command imports what it needs when it runs. TensorFlow's start-up logging is silenced
unless `--verbose` is given or `TF_CPP_MIN_LOG_LEVEL` asks for it (0 or 1). A user error (a wrong path, a bad
value, a refused overwrite) is one sentence on stderr and exit status 2; `--debug` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys

from resnet_tf.registry import MODEL_NAMES
from resnet_tf.utils import DTYPES

FORMATS = ("saved_model", "tflite", "onnx", "openvino")  # = deploy.FORMATS (tested)
PRECISIONS = ("float32", "float16", "int8")  # = deploy.PRECISIONS (tested)
BENCH_MODES = ("forward", "forward-backward")  # = benchmark.MODES (tested)
BENCH_COMPARE = ("none", "keras-applications")  # = benchmark.COMPARE (tested)
DISTRIBUTE = ("none", "mirrored", "multiworker")  # = training.DISTRIBUTE (tested)


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


# --------------------------------------------------------------------------------------------
# train


def add_train_parser(subparsers):
    parser = subparsers.add_parser(
        "train",
        help="train a model with model.fit from a YAML config",
        description="Trains the model a YAML config describes with Keras' model.fit: progress "
                    "bar, checkpoints (last and best), BackupAndRestore, TensorBoard and CSV "
                    "logs, and DIR/metrics.json at the end. Re-running the same command "
                    "continues where training stopped (also after a crash or a kill); a larger "
                    "--epochs trains only the added epochs.")
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
    parser.add_argument("--dtype", choices=DTYPES, help="Keras dtype policy (overrides the config)")
    parser.set_defaults(handler=run_train)


def run_train(args):
    from resnet_tf.config import load_config
    from resnet_tf.training import train

    config = load_config(args.config, epochs=args.epochs, dtype=args.dtype)
    metrics = train(config, args.model_dir, distribute=args.distribute,
                    cpu_devices=args.cpu_devices)
    if not metrics:
        print(f"{args.model_dir}: this worker is done; the chief writes metrics.json")
        return 0
    if metrics.get("nothing_to_do"):
        print(f"{args.model_dir}: already trained {metrics['epochs_done']} epochs (--epochs "
              f"{config.epochs}); nothing to do, nothing written")
        return 0
    print(f"{args.model_dir}: epochs {metrics['epochs']}, val_accuracy "
          f"{_fmt(metrics['val_accuracy'])}, val_loss {_fmt(metrics['val_loss'])}, "
          f"{metrics['replicas']} replica(s), {metrics['train_seconds']:.1f} s in all")
    return 0


def _fmt(value):
    return "n/a" if value is None else f"{value:.4f}"


# --------------------------------------------------------------------------------------------
# Model sources (export, predict, evaluate)


def _add_source_arguments(parser, what, export=False):
    group = parser.add_argument_group(f"the model to {what}")
    source = group.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-dir", metavar="DIR", help="a `resnet-tf train` model dir")
    source.add_argument("--slim-checkpoint", metavar="CKPT",
                        help="a slim checkpoint (with --model and --num-classes)")
    source.add_argument("--weights", metavar="imagenet|URL|PATH",
                        help="with --model: slim's released ImageNet weights (downloaded once, "
                             "then cached), or a release-style tarball or checkpoint")
    if export:
        source.add_argument("--export", metavar="EXPORT",
                            help="a `resnet-tf export` dir of any format, run by its own runtime")
    group.add_argument("--model", default="resnet_v2_50", choices=MODEL_NAMES, metavar="NAME",
                       help="with --slim-checkpoint or --weights: the registry name (default "
                            "resnet_v2_50)")
    group.add_argument("--num-classes", type=_positive_int,
                       help="with --slim-checkpoint or --weights: default slim's releases' "
                            "(1000 for V1, 1001 for V2, whose class 0 is background)")
    group.add_argument("--checkpoint", choices=("final", "last", "best"), default="final",
                       help="with --model-dir: model.keras (final, the default; an interrupted "
                            "run's last epoch), or checkpoints/last or best (val_accuracy)")
    group.add_argument("--image-size", type=_positive_int,
                       help="input size after preprocessing (default: the model dir's; 299 "
                            "for slim's V2 checkpoints, 224 for V1)")
    return group


def _load_source(args):
    from resnet_tf.export import load_model_source

    return load_model_source(model_dir=args.model_dir, slim_checkpoint=args.slim_checkpoint,
                             weights=args.weights, model_name=args.model,
                             num_classes=args.num_classes, image_size=args.image_size,
                             checkpoint=args.checkpoint)


# --------------------------------------------------------------------------------------------
# export


def add_export_parser(subparsers):
    parser = subparsers.add_parser(
        "export",
        help="write a SavedModel, TFLite, ONNX or OpenVINO model (float32, float16, int8)",
        description="Writes the model to --output in the format of an inference runtime. "
                    "saved_model (default): serving_default takes `images` (float32 [N, H, W, "
                    "3], raw 0..255 pixels; slim's eval preprocessing inside) and returns "
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
                             "on; default with --model-dir: its training data")
    parser.add_argument("--calibration-images", type=_positive_int, default=300, metavar="N",
                        help="int8: how many images to calibrate on (default 300)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier export at --output (anything else is refused)")
    parser.set_defaults(handler=run_export)


def run_export(args):
    from resnet_tf.deploy import check_format, check_output

    check_format(args.format, args.precision)
    check_output(args.output, args.overwrite)  # before loading anything
    if args.precision == "int8" and not args.model_dir and not args.calibration_data:
        raise ValueError("--precision int8 from --slim-checkpoint or --weights needs "
                         "--calibration-data DIR (real images to calibrate on)")
    if args.calibration_data and args.precision != "int8":
        raise ValueError(f"--calibration-data is for --precision int8. Received: --precision "
                         f"{args.precision}")
    source = _load_source(args)
    calibration = None
    if args.precision == "int8":
        calibration = _calibration_pixels(args, source)
        print(f"Calibrating int8 on {len(calibration)} images")
    from resnet_tf.deploy import export_model

    path = export_model(source.model, args.output, format=args.format, precision=args.precision,
                        image_size=source.image_size, central_fraction=source.central_fraction,
                        class_names=source.class_names, calibration=calibration,
                        overwrite=args.overwrite, preprocessing=source.preprocessing)
    print(f"Exported {source.model.name} ({args.format}, {args.precision}, "
          f"{source.image_size}x{source.image_size} inputs) to {path}")
    return 0


def _calibration_pixels(args, source):
    from resnet_tf import data

    if args.calibration_data:
        paths, labels, _ = data.list_image_folder(args.calibration_data)
        raw = data.image_files_dataset(paths, labels).shuffle(len(paths), seed=0)
    else:  # the model dir's own training images, through the eval preprocessing
        raw = data.raw_datasets(source.config).train.shuffle(10000, seed=0)
    return data.calibration_pixels(raw, source.image_size, source.central_fraction,
                                   args.calibration_images, source.preprocessing)


# --------------------------------------------------------------------------------------------
# predict


def add_predict_parser(subparsers):
    parser = subparsers.add_parser(
        "predict",
        help="top-5 classes of image files",
        description="Prints the most probable classes (names and probabilities) of each image, "
                    "from a model dir, an export of any format or a slim checkpoint (slim's "
                    "1001-class background offset included; ImageNet's names ship with "
                    "resnet_tf).")
    _add_source_arguments(parser, "predict with", export=True)
    parser.add_argument("--top", type=_positive_int, default=5, help="how many classes (5)")
    parser.add_argument("images", nargs="+", help="JPEG/PNG/BMP/GIF files")
    parser.set_defaults(handler=run_predict)


def run_predict(args):
    from resnet_tf.predict import format_results, predict_files

    for path in args.images:  # before the model loads
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No image file at {path!r}")
    runner, names = _runner(args)
    print(format_results(predict_files(args.images, runner, names, args.top)))
    return 0


def _runner(args):
    """(runner, class names) of --export (its own runtime) or a Keras model source."""
    if getattr(args, "export", None):
        from resnet_tf.runtimes import open_export

        runner, _, names = open_export(args.export)
        return runner, names
    from resnet_tf.runtimes import keras_runner

    source = _load_source(args)
    return keras_runner(source.model, preprocessing=source.preprocessing,
                        image_size=source.image_size,
                        central_fraction=source.central_fraction), source.class_names


# --------------------------------------------------------------------------------------------
# evaluate


def add_evaluate_parser(subparsers):
    parser = subparsers.add_parser(
        "evaluate",
        help="top-1 / top-5 accuracy of a model or an export on labelled images",
        description="slim's eval_image_classifier for every kind of model: a model dir, an "
                    "export of any format (run by its own runtime) or a slim checkpoint, on a "
                    "config's validation data (the default for --model-dir: its own config), "
                    "an image folder or slim-format TFRecords. Prints top-1, top-5, the count "
                    "and images/s.")
    _add_source_arguments(parser, "evaluate", export=True)
    data = parser.add_argument_group("the labelled images (one of; default with --model-dir: "
                                     "its config's validation data)")
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
    parser.set_defaults(handler=run_evaluate)


def run_evaluate(args):
    from resnet_tf import evaluate as evaluate_lib

    runner, names = _runner(args)
    num_classes = len(names) if names else None
    if args.data:
        dataset, count = evaluate_lib.folder_dataset(args.data, names)
    elif args.tfrecords:
        dataset, count = evaluate_lib.tfrecord_dataset(args.tfrecords, num_classes)
    else:
        from resnet_tf.config import load_config
        from resnet_tf.model_dir import ModelDir

        if args.config:
            config = load_config(args.config)
        elif args.model_dir:
            config = load_config(ModelDir(args.model_dir).config)
        else:
            raise ValueError("give the labelled images: --config FILE, --data DIR or "
                             "--tfrecords PATTERN")
        dataset, count = evaluate_lib.config_dataset(config)
    result = evaluate_lib.evaluate(runner, dataset, count, args.batch_size,
                                   progress=sys.stdout.isatty())
    result["source"] = args.export or args.model_dir or args.slim_checkpoint or args.weights
    print(evaluate_lib.format_result(result))
    if args.json_path:
        from resnet_tf.utils import write_json

        write_json(result, args.json_path)
    return 0


# --------------------------------------------------------------------------------------------
# download


def add_download_parser(subparsers):
    parser = subparsers.add_parser(
        "download",
        help="fill the cache with slim's released ImageNet weights (e.g. before going offline)",
        description="Downloads slim's released checkpoint for --model once into "
                    "$KERAS_HOME/resnet_tf/ (default ~/.keras/resnet_tf/) and unpacks it; "
                    "`--weights imagenet` and `weights=\"imagenet\"` then need no network.")
    parser.add_argument("--model", required=True, choices=MODEL_NAMES, metavar="NAME",
                        help="resnet_v1_50/101/152 or resnet_v2_50/101/152")
    parser.set_defaults(handler=run_download)


def run_download(args):
    from resnet_tf.weights import download, release_of

    release = release_of(args.model)
    path = download(args.model)
    print(f"{args.model}: slim's {release.release} ({release.num_classes} classes, "
          f"{release.preprocessing} preprocessing, {release.image_size} px) at {path}")
    return 0


# --------------------------------------------------------------------------------------------
# bench


def add_bench_parser(subparsers):
    parser = subparsers.add_parser(
        "bench",
        help="time the forward pass or a training step (the seed's time_tensorflow_run)",
        description="Times a model the way the seed's time_tensorflow_run does: burn-in steps, "
                    "then timed steps, a line every 10 steps and 'mean +/- sd sec / batch'. "
                    "The defaults reproduce the seed: ResNet-152 V2, batch 32, 224x224 uniform "
                    "random images, 10 burn-in steps, 100 timed. Keras runs on the TensorFlow "
                    "(tf.function) and JAX (jax.jit) backends; set KERAS_BACKEND to choose. "
                    "--runtimes times the same weights through inference runtimes, "
                    "interleaved round by round.")
    parser.add_argument("--model", default="resnet_v2_152", choices=MODEL_NAMES, metavar="NAME",
                        help="a registry name (default resnet_v2_152)")
    parser.add_argument("--batch-size", type=_positive_int, default=32)
    parser.add_argument("--image-size", type=_positive_int, default=224)
    parser.add_argument("--num-batches", type=_positive_int, default=100)
    parser.add_argument("--burn-in", type=_non_negative_int, default=10)
    parser.add_argument("--num-classes", type=_positive_int, default=1000)
    parser.add_argument("--mode", choices=BENCH_MODES, default="forward",
                        help="forward, or forward-backward (a full SGD training step)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32",
                        help="Keras dtype policy for the model")
    parser.add_argument("--jit-compile", action="store_true",
                        help="XLA-compile the TensorFlow step (JAX steps are always jitted)")
    parser.add_argument("--compare", choices=BENCH_COMPARE, default="none",
                        help="also time keras.applications' ResNet of the same depth, "
                             "interleaved step by step, and print the ratio")
    parser.add_argument("--runtimes", metavar="LIST",
                        help="comma-separated runtime:precision entries, e.g. keras:float32,"
                             "keras:bfloat16,tflite:int8,onnxruntime:int8,openvino:bfloat16,"
                             "openvino:int8 (runtimes: keras, tflite, onnxruntime, openvino); "
                             "the forward pass only, compared with the first entry")
    parser.add_argument("--json", dest="json_path", metavar="PATH",
                        help="write every step's duration, images/s, device and versions here")
    parser.set_defaults(handler=run_bench)


def run_bench(args):
    from resnet_tf import benchmark

    if args.runtimes:
        if args.mode != "forward" or args.compare != "none" or args.dtype != "float32" or \
                args.jit_compile:
            raise ValueError("--runtimes times the forward pass of each runtime:precision; "
                             "leave out --mode, --compare, --dtype and --jit-compile")
        benchmark.run_runtimes_benchmark(
            model_name=args.model, runtimes=args.runtimes, batch_size=args.batch_size,
            image_size=args.image_size, num_batches=args.num_batches, burn_in=args.burn_in,
            num_classes=args.num_classes, json_path=args.json_path)
        return 0
    benchmark.run_benchmark(model_name=args.model, batch_size=args.batch_size,
                            image_size=args.image_size, num_batches=args.num_batches,
                            burn_in=args.burn_in, mode=args.mode, dtype=args.dtype,
                            jit_compile=args.jit_compile, num_classes=args.num_classes,
                            compare=args.compare, json_path=args.json_path)
    return 0


# --------------------------------------------------------------------------------------------


def build_parser():
    parser = argparse.ArgumentParser(
        prog="resnet-tf",
        description="TF-slim's ResNet in Keras 3: train, export, predict, evaluate, download, "
                    "bench.")
    parser.add_argument("--verbose", action="store_true",
                        help="keep TensorFlow's start-up and runtime logging on stderr")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error instead of one sentence")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_train_parser(subparsers)
    add_export_parser(subparsers)
    add_predict_parser(subparsers)
    add_evaluate_parser(subparsers)
    add_download_parser(subparsers)
    add_bench_parser(subparsers)
    return parser


def user_errors():
    """The exceptions that mean a user error (a sentence, no traceback)."""
    from resnet_tf.deploy import MissingRuntime

    return (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError,
            IsADirectoryError, PermissionError, MissingRuntime)


def _quiet_tensorflow(args):
    """Keeps TensorFlow's and the runtimes' native start-up messages off stderr: TensorFlow
    2.21's C++ logging ignores TF_CPP_MIN_LOG_LEVEL before absl is initialised, so its first
    import runs with file descriptor 2 pointed at /dev/null."""
    import importlib.util

    from resnet_tf import utils

    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    utils.QUIET_NATIVE_OUTPUT = True
    if args.command == "bench" and os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        return  # bench on JAX or PyTorch: TensorFlow may not even be installed
    try:
        if importlib.util.find_spec("tensorflow") is None:
            return
    except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules
        return
    with utils.quiet_native_stderr():
        import tensorflow as tf

        tf.config.list_physical_devices()  # CUDA's probe ("failed call to cuInit") says its piece
    tf.get_logger().setLevel("ERROR")


def main(argv=None):
    args = build_parser().parse_args(argv)
    if not args.verbose and os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3") not in ("0", "1"):
        _quiet_tensorflow(args)
    try:
        return args.handler(args)
    except user_errors() as error:
        if args.debug:
            raise
        print(f"resnet-tf {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
