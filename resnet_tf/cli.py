"""The `resnet-tf` command line."""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def add_bench_parser(subparsers):
    from resnet_tf.benchmark import COMPARE, DTYPES, MODES
    from resnet_tf.registry import MODELS

    parser = subparsers.add_parser(
        "bench",
        help="time the forward pass or a training step (the seed's time_tensorflow_run)",
        description="Times a model the way the seed's time_tensorflow_run does: burn-in steps, "
                    "then timed steps, a line every 10 steps and 'mean +/- sd sec / batch'. "
                    "The defaults reproduce the seed: ResNet-152 V2, batch 32, 224x224 uniform "
                    "random images, 10 burn-in steps, 100 timed. Runs on the TensorFlow "
                    "(tf.function) and JAX (jax.jit) backends; set KERAS_BACKEND to choose.")
    parser.add_argument("--model", default="resnet_v2_152", choices=sorted(MODELS))
    parser.add_argument("--batch-size", type=_positive_int, default=32)
    parser.add_argument("--image-size", type=_positive_int, default=224)
    parser.add_argument("--num-batches", type=_positive_int, default=100)
    parser.add_argument("--burn-in", type=_non_negative_int, default=10)
    parser.add_argument("--num-classes", type=_positive_int, default=1000)
    parser.add_argument("--mode", choices=MODES, default="forward",
                        help="forward, or forward-backward (a full SGD training step)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32",
                        help="Keras dtype policy for the model")
    parser.add_argument("--jit-compile", action="store_true",
                        help="XLA-compile the TensorFlow step (JAX steps are always jitted)")
    parser.add_argument("--compare", choices=COMPARE, default="none",
                        help="also time keras.applications' ResNetV2 of the same depth, "
                             "interleaved step by step, and print the ratio")
    parser.add_argument("--json", dest="json_path", metavar="PATH",
                        help="write every step's duration, images/s, device and versions here")
    parser.set_defaults(handler=run_bench)


def run_bench(args):
    from resnet_tf.benchmark import run_benchmark

    run_benchmark(model_name=args.model, batch_size=args.batch_size, image_size=args.image_size,
                  num_batches=args.num_batches, burn_in=args.burn_in, mode=args.mode,
                  dtype=args.dtype, jit_compile=args.jit_compile, num_classes=args.num_classes,
                  compare=args.compare, json_path=args.json_path)
    return 0


def add_train_parser(subparsers):
    from resnet_tf.config import DTYPES
    from resnet_tf.training import DISTRIBUTE

    parser = subparsers.add_parser(
        "train",
        help="train a model with model.fit from a YAML config",
        description="Trains the model a YAML config describes (configs/*.yaml) with Keras' "
                    "model.fit: progress bar, checkpoints (last and best), BackupAndRestore, "
                    "TensorBoard and CSV logs, and DIR/metrics.json at the end. Re-running the "
                    "same command continues where training stopped; a larger --epochs trains "
                    "only the added epochs.")
    parser.add_argument("--config", required=True, help="a YAML config, e.g. configs/quickstart.yaml")
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
    print(f"{args.model_dir}: epochs {metrics['epochs']}, val_accuracy "
          f"{_fmt(metrics['val_accuracy'])}, val_loss {_fmt(metrics['val_loss'])}, "
          f"{metrics['replicas']} replica(s), {metrics['train_seconds']:.1f} s in all")
    return 0


def _fmt(value):
    return "n/a" if value is None else f"{value:.4f}"


def _add_source_arguments(parser, what):
    source = parser.add_argument_group(f"the model to {what} (one of)")
    source.add_argument("--model-dir", metavar="DIR", help="a `resnet-tf train` model dir")
    source.add_argument("--slim-checkpoint", metavar="CKPT",
                        help="a slim checkpoint (with --model and --num-classes)")
    parser.add_argument("--model", default="resnet_v2_50",
                        help="with --slim-checkpoint: the registry name (default resnet_v2_50)")
    parser.add_argument("--num-classes", type=_positive_int, default=1001,
                        help="with --slim-checkpoint: 1001 for slim's V2 releases (default)")
    parser.add_argument("--image-size", type=_positive_int,
                        help="input size after preprocessing (default: the model dir's; 299 "
                             "for slim's V2 checkpoints)")
    return source


def _load_source(args):
    """(model, image size, central fraction, class names) from --model-dir or --slim-checkpoint."""
    from resnet_tf.export import SLIM_EVAL_IMAGE_SIZE, load_model_dir, model_from_slim_checkpoint
    from resnet_tf.preprocessing import EVAL_CENTRAL_FRACTION

    if args.model_dir:
        model, config, names = load_model_dir(args.model_dir)
        return model, args.image_size or config.image_size, config.central_fraction, names
    model, names = model_from_slim_checkpoint(args.slim_checkpoint, args.model, args.num_classes)
    return model, args.image_size or SLIM_EVAL_IMAGE_SIZE, EVAL_CENTRAL_FRACTION, names


def _one_source(args, options):
    given = [o for o in options if getattr(args, o.lstrip("-").replace("-", "_"))]
    if len(given) != 1:
        raise ValueError(f"give exactly one of {', '.join(options)}. Received: "
                         f"{', '.join(given) or 'none'}")


def add_export_parser(subparsers):
    parser = subparsers.add_parser(
        "export",
        help="write a SavedModel that plain TensorFlow serves",
        description="Writes a SavedModel (Keras' ExportArchive) whose serving_default takes "
                    "`images` (float32 [N, H, W, 3], raw 0..255 pixels; slim's eval "
                    "preprocessing inside) and returns `probabilities` [N, C] and `classes` [N]; "
                    "`serving_bytes` takes encoded JPEG/PNG bytes. Class names go to "
                    "assets/class_names.txt.")
    _add_source_arguments(parser, "export")
    parser.add_argument("--output", required=True, metavar="EXPORT", help="the SavedModel dir")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing export dir (refused otherwise)")
    parser.set_defaults(handler=run_export)


def run_export(args):
    from resnet_tf.export import export_saved_model

    _one_source(args, ["--model-dir", "--slim-checkpoint"])
    if os.path.exists(args.output) and not args.overwrite:  # before loading anything
        raise FileExistsError(f"The export dir {args.output!r} exists; pass --overwrite to "
                              "replace it")
    model, image_size, central_fraction, names = _load_source(args)
    path = export_saved_model(model, args.output, image_size, central_fraction, names,
                              overwrite=args.overwrite)
    print(f"Exported {model.name} ({image_size}x{image_size} inputs) to {path}")
    return 0


def add_predict_parser(subparsers):
    parser = subparsers.add_parser(
        "predict",
        help="top-5 classes of image files",
        description="Prints the most probable classes (names and probabilities) of each image, "
                    "from a model dir, an export or a slim checkpoint (slim's 1001-class "
                    "background offset included; ImageNet's names ship with resnet_tf).")
    source = _add_source_arguments(parser, "predict with")
    source.add_argument("--export", metavar="EXPORT", help="a `resnet-tf export` SavedModel")
    parser.add_argument("--top", type=_positive_int, default=5, help="how many classes (5)")
    parser.add_argument("images", nargs="+", help="JPEG/PNG/BMP/GIF files")
    parser.set_defaults(handler=run_predict)


def run_predict(args):
    from resnet_tf.predict import (export_classifier, format_results, keras_classifier,
                                   predict_files)

    _one_source(args, ["--model-dir", "--slim-checkpoint", "--export"])
    if args.export:
        classify, names = export_classifier(args.export)
    else:
        model, image_size, central_fraction, names = _load_source(args)
        classify = keras_classifier(model, image_size, central_fraction)
    print(format_results(predict_files(args.images, classify, names, args.top)))
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="resnet-tf", description="TF-slim's ResNet in Keras 3: benchmark, train, serve.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_train_parser(subparsers)
    add_export_parser(subparsers)
    add_predict_parser(subparsers)
    add_bench_parser(subparsers)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"resnet-tf {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
