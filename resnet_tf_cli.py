"""The `resnet-tf` command line: train, export, predict, evaluate, download, bench.

A module beside the package, not in it: `import resnet_tf` imports Keras (to register its
layers), and building the parser imports nothing heavy, so `--help` answers at once; each
command imports from `resnet_tf` what it needs when it runs. The choices the parser offers are
the library's own (tests/test_cli.py checks that they are equal); a model name is checked
against `resnet_tf.models.registry` when a command runs. While a command runs, native libraries'
start-up and progress chatter (TensorFlow's C++ logging, LiteRT's, the converters') is kept
off stderr unless `--verbose` is given or `TF_CPP_MIN_LOG_LEVEL` asks for it (0 or 1); their
other messages, a fatal error's included, still get through (`quiet_native_output`). A user
error (`errors.UserError`: a wrong path, a bad value, a refused overwrite) or an `OSError`
(permissions, a full disk) is one sentence on stderr and exit status 2; anything else is a bug
and keeps its traceback. `--debug` shows the traceback of a user error too. Ctrl-C or SIGTERM during `train` end it with one
sentence and the conventional status (130, 143).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import subprocess
import sys

# The library's choices (resnet_tf.commands.benchmark, .training.config, .export.export_dir,
# .training.model_dir), written here so that the parser does not import Keras.
MODES = ("forward", "forward-backward")
COMPARE = ("none", "keras-applications")
DISTRIBUTE = ("none", "mirrored", "multiworker")
DTYPES = ("float32", "mixed_bfloat16", "mixed_float16")
FORMATS = ("saved_model", "tflite", "onnx", "openvino")
PRECISIONS = ("float32", "float16", "int8")
CHECKPOINTS = ("final", "last", "best")
WEIGHT_SOURCES = ("imagenet", "torchvision", "timm", "keras")  # resnet_tf.weights.sources.NAMED


def UserError(message: str) -> Exception:  # noqa: N802 (raised like the class it returns)
    """`resnet_tf.errors.UserError(message)`, imported when a command raises one."""
    from resnet_tf.errors import UserError as user_error

    return user_error(message)


def _model_name(module: str, names: str):
    """An argparse type: a name in `<module>.<names>` (checked when a command runs, as the
    library imports Keras), or argparse's usage error."""
    def parse(text):
        import importlib

        choices = sorted(getattr(importlib.import_module(module), names))
        if text not in choices:
            raise argparse.ArgumentTypeError(
                f"invalid choice: {text!r} (choose from {', '.join(choices)})")
        return text

    parse.__name__ = "model name"
    return parse


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


def _ensure_tensorflow_backend(what: str) -> None:
    import keras

    if keras.backend.backend() != "tensorflow":
        raise UserError(f"{what} needs the TensorFlow backend (its converters and SavedModels "
                        f"are TensorFlow's); run it with KERAS_BACKEND=tensorflow. Received: "
                        f"KERAS_BACKEND={keras.backend.backend()}")


# --------------------------------------------------------------------------------------------
# train


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
                             "imagenet (slim's), torchvision, timm or keras, or a URL or path "
                             "of such a file; the model takes their layout and images their "
                             "normalisation; overrides the config's weights")
    parser.add_argument("--quantization-aware", action="store_true", default=None,
                        help="fine-tune with int8 rounding simulated (quantization-aware "
                             "training); usually with --init-from a float run")
    parser.set_defaults(handler=run_train)


class _Stop(KeyboardInterrupt):
    """SIGTERM, delivered as an interrupt."""


# The settings of a run that the command line gives: a resume that leaves one out keeps the
# run's own (the config file's value would otherwise be refused as another config).
RUN_SETTINGS = ("dtype", "init_from", "weights", "quantization_aware")


def run_train(args):
    received = {}

    def on_sigterm(number, frame):
        received["signal"] = number
        raise _Stop()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        metrics, config = _train(args)
    except KeyboardInterrupt as interrupted:  # TrainingInterrupted, or before it could begin
        number = received.get("signal", signal.SIGINT)
        why = str(interrupted) or "interrupted before training began; re-run the same command"
        print(f"resnet-tf train: {args.model_dir}: {why}", file=sys.stderr)
        return 128 + number
    finally:
        signal.signal(signal.SIGTERM, previous)
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


def _train(args):
    from resnet_tf.training.config import load_config
    from resnet_tf.training.trainer import recorded_config, train

    given = {"dtype": args.dtype, "init_from": args.init_from, "weights": args.weights,
             "quantization_aware": args.quantization_aware}
    recorded = recorded_config(args.model_dir)
    if recorded is not None:
        in_file = load_config(args.config)
        for key in RUN_SETTINGS:
            if given[key] is None:
                given[key] = getattr(recorded, key)
                if getattr(in_file, key) != given[key]:
                    print(f"resnet-tf: resuming with the run's own {key} {given[key]!r} (the "
                          f"config says {getattr(in_file, key)!r})")
    config = load_config(args.config, epochs=args.epochs, **given)
    return train(config, args.model_dir, distribute=args.distribute,
                 cpu_devices=args.cpu_devices), config


def _fmt(value):
    return "n/a" if value is None else f"{value:.4f}"


# --------------------------------------------------------------------------------------------
# Model sources (export, predict, evaluate)


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
                             "cached: imagenet (slim's), torchvision, timm or keras "
                             "(keras.applications'); or a URL or path of such a file (a slim "
                             "tarball or checkpoint, .pth, .safetensors, .h5)")
    if export or export_on_model_dir:
        (group if export_on_model_dir else source).add_argument(
            "--export", metavar="EXPORT",
            help="a `resnet-tf export` dir of any format, run by its own runtime")
    group.add_argument("--model", type=_model_name("resnet_tf.models.registry", "NAMED_MODELS"), metavar="NAME",
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


def _check_source_options(args):
    """Options that do not apply to the chosen source are refused, never ignored."""
    slim = args.slim_checkpoint or args.weights
    refused = []
    if not slim:
        refused += [name for name, value in (("--model", args.model),
                                             ("--num-classes", args.num_classes),
                                             ("--image-size", args.image_size)) if value]
    if not args.slim_checkpoint and args.moving_averages:
        refused.append("--moving-averages")
    export = getattr(args, "export", None)
    if export and (args.slim_checkpoint or args.weights):
        other = "--slim-checkpoint" if args.slim_checkpoint else "--weights"
        raise UserError(f"--export and {other} both name the model; give one")
    if not (export or args.model_dir or args.slim_checkpoint or args.weights):
        raise UserError("give the model: --model-dir, --export, --slim-checkpoint or --weights")
    if (not args.model_dir or export) and args.checkpoint:
        refused.append("--checkpoint")
    if refused:
        source = ("--export" if export else "--model-dir" if args.model_dir
                  else "--slim-checkpoint" if args.slim_checkpoint else "--weights")
        reasons = {"--model-dir": "a model dir's model has its own name, classes and image "
                                  "size", "--export": "an export has its own model, classes and "
                                  "preprocessing (preprocessing.json)"}
        raise UserError(f"{', '.join(refused)} do{'es' if len(refused) == 1 else ''} not apply "
                        f"to {source}" + (f": {reasons[source]}" if source in reasons else ""))


def _load_source(args):
    from resnet_tf.training.loading import load_model_source

    return load_model_source(model_dir=args.model_dir, slim_checkpoint=args.slim_checkpoint,
                             weights=args.weights, model_name=args.model or "resnet_v2_50",
                             num_classes=args.num_classes, image_size=args.image_size,
                             checkpoint=args.checkpoint or "final",
                             moving_averages=args.moving_averages)


def _runner(args):
    """(runner, class names) of --export (its own runtime) or a Keras model source."""
    _check_source_options(args)
    if getattr(args, "export", None):
        from resnet_tf.export.runtimes import open_export

        runner, _, names = open_export(args.export)
        return runner, names
    from resnet_tf.export.runtimes import keras_runner

    source = _load_source(args)
    return keras_runner(source.model, prep=source.prep), source.class_names


# --------------------------------------------------------------------------------------------
# export


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
    parser.set_defaults(handler=run_export)


def run_export(args):
    from resnet_tf.export.export_dir import check_format, check_output

    _check_source_options(args)
    check_format(args.format, args.precision)
    check_output(args.output, args.overwrite)  # before loading anything
    if args.precision == "int8" and not args.model_dir and not args.calibration_data:
        raise UserError("--precision int8 from --slim-checkpoint or --weights needs "
                        "--calibration-data DIR (real images to calibrate on)")
    for option, value in (("--calibration-data", args.calibration_data),
                          ("--calibration-images", args.calibration_images),
                          ("--validation-data", args.validation_data),
                          ("--max-accuracy-drop", args.max_accuracy_drop)):
        if value is not None and args.precision != "int8":
            raise UserError(f"{option} is for --precision int8. Received: --precision "
                            f"{args.precision}")
    _ensure_tensorflow_backend("resnet-tf export")
    source = _load_source(args)
    from resnet_tf.export.deploy import (
        Int8Options,
        calibration_pixels,
        export_model,
        validation_images,
    )
    from resnet_tf.quantization.qat import is_quantized

    calibration = validation = None
    if args.precision == "int8":
        if is_quantized(source.model):
            if args.calibration_data or args.calibration_images:
                raise UserError("--calibration-data/--calibration-images: the model is "
                                "quantization-aware; its int8 ranges are the ones it trained, "
                                "no calibration is needed")
            print("Exporting the quantization-aware model's own int8 ranges (no calibration)")
        else:
            calibration = calibration_pixels(source, args.calibration_data,
                                             args.calibration_images or 300)
            print(f"Calibrating int8 on {len(calibration)} images")
        validation = validation_images(source, args.validation_data)
    quantization = (Int8Options(calibration, validation, args.max_accuracy_drop)
                    if args.precision == "int8" else None)
    path = export_model(source.model, args.output, source.prep, format=args.format,
                        precision=args.precision, class_names=source.class_names,
                        quantization=quantization, overwrite=args.overwrite)
    print(f"Exported {source.model.name} ({args.format}, {args.precision}, "
          f"{source.prep.image_size}x{source.prep.image_size} inputs) to {path}")
    return 0


# --------------------------------------------------------------------------------------------
# predict


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
    parser.set_defaults(handler=run_predict)


def run_predict(args):
    from resnet_tf.commands.predict import format_results, predict_files

    if not any(os.path.isfile(path) for path in args.images):  # before the model loads
        path = args.images[0]
        raise UserError(f"{path!r} is a directory, not an image file" if os.path.isdir(path)
                        else f"No image file at {path!r}")
    runner, names = _runner(args)
    results, failures = predict_files(args.images, runner, names, args.top)
    if results:
        print(format_results(results))
    for path, why in failures.items():
        print(f"resnet-tf predict: error: {why}", file=sys.stderr)
    return 1 if failures else 0


# --------------------------------------------------------------------------------------------
# evaluate


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
    parser.set_defaults(handler=run_evaluate)


def run_evaluate(args):
    from resnet_tf.training import evaluate as evaluate_lib

    if args.json_path and os.path.isdir(args.json_path):
        raise UserError(f"--json {args.json_path!r} is a directory; give a file path")
    if not (args.config or args.data or args.tfrecords or args.model_dir):
        raise UserError("give the labelled images: --model-dir RUN (its recorded validation "
                        "images), --config FILE, --data DIR or --tfrecords PATTERN")
    if args.export and args.model_dir and (args.config or args.data or args.tfrecords):
        raise UserError("with --export, --model-dir names the images (its run's validation "
                        "images); give it or --config/--data/--tfrecords, not both")
    runner, names = _runner(args)
    config = None
    if args.config:
        from resnet_tf.training.config import load_config

        config = load_config(args.config)
    run = args.model_dir if not (config or args.data or args.tfrecords) else None
    if args.export and run:
        evaluate_lib.check_same_classes(names, run, f"--export {args.export!r}")
    images = evaluate_lib.labelled_images(
        model_dir=run, config=config, folder=args.data, tfrecords=args.tfrecords,
        class_names=names)
    if args.export and run:
        print(f"Evaluating {args.export} on {images.description} ({images.count} images)")
    result = evaluate_lib.evaluate(runner, images, args.batch_size,
                                   progress=sys.stdout.isatty())
    result["source"] = args.export or args.model_dir or args.slim_checkpoint or args.weights
    print(evaluate_lib.format_result(result))
    if args.json_path:
        from resnet_tf.utils import write_json

        write_json(result, args.json_path)
    return 0


# --------------------------------------------------------------------------------------------
# download


def add_download_parser(subparsers, common):
    parser = subparsers.add_parser(
        "download", parents=[common],
        help="fill the cache with released ImageNet weights (e.g. before going offline)",
        description="Downloads released weights for --model once into the directory Keras "
                    "caches downloads in ($KERAS_HOME/resnet_tf/, default ~/.keras/resnet_tf/) "
                    "(slim's tarballs are unpacked); `--weights SOURCE` and "
                    "`weights=\"SOURCE\"` then need no network.")
    parser.add_argument("--model", required=True,
                        type=_model_name("resnet_tf.models.registry", "NAMED_MODELS"),
                        metavar="NAME", help="a model with released weights, e.g. resnet_v2_50 "
                                             "(docs/models.md lists them)")
    parser.add_argument("--weights", choices=WEIGHT_SOURCES, default="imagenet",
                        help="whose weights: imagenet (slim's releases, the default), "
                             "torchvision, timm or keras (keras.applications')")
    parser.set_defaults(handler=run_download)


def run_download(args):
    if args.weights != "imagenet":
        from resnet_tf.weights.sources import download, published

        entry = published(args.weights, args.model)
        path = download(args.weights, args.model)
        prep = entry.preprocessing
        print(f"{args.model}: {args.weights}'s {entry.name} (ImageNet top-1 {entry.top1} % as "
              f"{args.weights} publishes it; {prep.method} preprocessing, {prep.image_size} "
              f"px) at {path}")
        return 0
    from resnet_tf.weights.slim import download, release_of

    release = release_of(args.model)
    path = download(args.model)
    facts = release.conventions
    print(f"{args.model}: slim's {release.release} ({facts.num_classes} classes, "
          f"{facts.preprocessing} preprocessing, {facts.image_size} px) at {path}")
    return 0


# --------------------------------------------------------------------------------------------
# bench


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
    parser.add_argument("--model", type=_model_name("resnet_tf.models.registry", "NAMED_MODELS"), metavar="NAME",
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
    parser.set_defaults(handler=run_bench)


def run_bench(args):
    from resnet_tf.commands import benchmark

    if args.exports:
        if args.runtimes or args.model or args.image_size or args.num_classes or \
                args.mode != "forward" or args.compare != "none" or args.dtype != "float32" or \
                args.jit_compile:
            raise UserError("--exports times the forward pass of export dirs, each with its own "
                            "model and size; leave out --runtimes, --model, --image-size, "
                            "--num-classes, --mode, --compare, --dtype and --jit-compile")
        benchmark.run_exports_benchmark([p for p in args.exports.split(",") if p],
                                        batch_size=args.batch_size, num_batches=args.num_batches,
                                        burn_in=args.burn_in, json_path=args.json_path)
        return 0
    # The defaults of the options --exports refuses (each export has its own model and size).
    model = dict(model_name=args.model or "resnet_v2_152", image_size=args.image_size or 224,
                 num_classes=args.num_classes or 1000)
    if args.runtimes:
        if args.mode != "forward" or args.compare != "none" or args.dtype != "float32" or \
                args.jit_compile:
            raise UserError("--runtimes times the forward pass of each runtime:precision; "
                            "leave out --mode, --compare, --dtype and --jit-compile")
        specs = benchmark.parse_runtimes(args.runtimes)
        if any(runtime != "keras" for runtime, _ in specs):
            _ensure_tensorflow_backend("bench --runtimes with a runtime other than keras")
        benchmark.run_runtimes_benchmark(
            runtimes=args.runtimes, batch_size=args.batch_size, num_batches=args.num_batches,
            burn_in=args.burn_in, json_path=args.json_path, **model)
        return 0
    benchmark.run_benchmark(batch_size=args.batch_size, num_batches=args.num_batches,
                            burn_in=args.burn_in, mode=args.mode, dtype=args.dtype,
                            jit_compile=args.jit_compile, compare=args.compare,
                            json_path=args.json_path, **model)
    return 0


# --------------------------------------------------------------------------------------------


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


# What native libraries write to stderr that the command keeps off it unless --verbose:
# TensorFlow's start-up logging (its absl lines ignore TF_CPP_MIN_LOG_LEVEL until absl starts),
# CUDA probes on machines without a GPU, LiteRT's delegate notice, the TFLite converter's
# settings line. Everything else, a fatal error included, goes through.
NATIVE_CHATTER = re.compile(
    r"^(?:[IW]\d{4} \d\d:\d\d|E\d{4} .*(?:cuInit|cuda|CUDA)|WARNING: All log messages before absl"
    r"|To enable the following instructions|fully_quantize: )")
NATIVE_NOTICE = re.compile(r"INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.")  # no \n

# The filter process: reads what native code writes to file descriptor 2 and passes on what
# is not chatter. A process of its own, so that the last words of a crash still get through.
_FILTER = r"""
import re, sys
chatter, notice = re.compile(sys.argv[1]), re.compile(sys.argv[2])
for line in sys.stdin.buffer:
    text = notice.sub("", line.decode("utf-8", "replace"))
    if text.strip() and not chatter.match(text):
        sys.stderr.write(text if text.endswith("\n") else text + "\n")
        sys.stderr.flush()
"""


@contextlib.contextmanager
def quiet_native_output():
    """While a command runs, what native libraries write to file descriptor 2 goes through a
    filter process that drops their known chatter (`NATIVE_CHATTER`, `NATIVE_NOTICE`) and
    passes the rest; Python's `sys.stderr` (the command's sentences, warnings, tracebacks)
    goes straight to the real stderr. Restored afterwards."""
    import logging

    saved_env = {key: os.environ.get(key) for key in ("TF_CPP_MIN_LOG_LEVEL", "GRPC_VERBOSITY")}
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    loggers = {name: logging.getLogger(name) for name in ("tensorflow", "tf2onnx", "absl",
                                                          "nncf", "openvino")}
    saved_levels = {name: logger.level for name, logger in loggers.items()}
    for logger in loggers.values():
        logger.setLevel(logging.ERROR)
    saved_stderr = sys.stderr
    saved_stderr.flush()
    try:
        on_fd2 = saved_stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # a capturing stream (tests)
        on_fd2 = False
    saved_fd = os.dup(2)
    read_end, write_end = os.pipe()
    chatter_filter = subprocess.Popen(
        [sys.executable, "-c", _FILTER, NATIVE_CHATTER.pattern, NATIVE_NOTICE.pattern],
        stdin=read_end, stdout=subprocess.DEVNULL, stderr=saved_fd)
    os.close(read_end)
    os.dup2(write_end, 2)
    os.close(write_end)
    if on_fd2:
        sys.stderr = os.fdopen(os.dup(saved_fd), "w", buffering=1,
                               encoding=saved_stderr.encoding, errors="backslashreplace")
    try:
        yield
    finally:
        sys.stderr.flush()
        if on_fd2:
            sys.stderr.close()
            sys.stderr = saved_stderr
        os.dup2(saved_fd, 2)  # the pipe's last writer here: the filter sees its end
        os.close(saved_fd)
        try:
            chatter_filter.wait(timeout=10)
        except subprocess.TimeoutExpired:  # a child of the command still holds the pipe
            pass
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for name, logger in loggers.items():
            logger.setLevel(saved_levels[name])


def main(argv=None):
    return run(build_parser().parse_args(argv))


def run(args):
    """Runs a parsed command: a user error is one sentence and status 2, a bug a traceback."""
    quiet = not args.verbose and os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3") not in ("0", "1")
    try:
        with quiet_native_output() if quiet else contextlib.nullcontext():
            return args.handler(args)
    except Exception as error:
        from resnet_tf.errors import UserError as user_error

        if not isinstance(error, (user_error, OSError)) or args.debug:
            raise
        print(f"resnet-tf {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
