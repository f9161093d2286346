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


def build_parser():
    parser = argparse.ArgumentParser(
        prog="resnet-tf", description="TF-slim's ResNet in Keras 3: benchmark, train, serve.")
    subparsers = parser.add_subparsers(dest="command", required=True)
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
