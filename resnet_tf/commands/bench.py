"""`resnet-tf bench`: the seed's forward-pass timing (`benchmark.run_benchmark`), inference
runtimes side by side (`--runtimes`), or export dirs side by side (`--exports`)."""

from __future__ import annotations

from resnet_tf.commands import benchmark
from resnet_tf.errors import UserError
from resnet_tf.utils import require_tensorflow_backend


def run(args) -> int:
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
            require_tensorflow_backend("bench --runtimes with a runtime other than keras")
        benchmark.run_runtimes_benchmark(
            runtimes=args.runtimes, batch_size=args.batch_size, num_batches=args.num_batches,
            burn_in=args.burn_in, json_path=args.json_path, **model)
        return 0
    benchmark.run_benchmark(batch_size=args.batch_size, num_batches=args.num_batches,
                            burn_in=args.burn_in, mode=args.mode, dtype=args.dtype,
                            jit_compile=args.jit_compile, compare=args.compare,
                            json_path=args.json_path, **model)
    return 0
