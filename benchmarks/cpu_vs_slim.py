"""ResNet V2 forward on this CPU: resnet_tf vs TF-slim's own graph vs keras.applications.

All models run in one process, interleaved step by step (`benchmark.time_interleaved`: the
order rotates every step) so the machine's drift affects all alike; medians are reported. TF-slim runs as the seed ran it (a TF1
graph and `session.run`); the Keras models run as `tf.function`s. Every step waits for its
result. Writes a JSON report (every duration) and prints a table.

    python benchmarks/cpu_vs_slim.py --depth 50 --batch-size 8 --steps 30
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from datetime import datetime

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TF-slim's graph, the reference, is the tests' harness (tests/slim_reference.py).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tests"))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import resnet_tf  # noqa: E402
from resnet_tf.commands.benchmark import (  # noqa: E402
    KERAS_APPLICATIONS,
    device_description,
    make_step,
    time_interleaved,
)
from resnet_tf.machine import versions  # noqa: E402
from resnet_tf.models.precision import dtype_policy_scope  # noqa: E402
from resnet_tf.utils import write_json  # noqa: E402


def slim_step(depth, images, num_classes):
    from slim_reference import import_tf_slim

    tf_slim, slim_utils, _, slim_v2 = import_tf_slim()
    graph = tf.Graph()
    with graph.as_default():
        inputs = tf.constant(images)
        with tf_slim.arg_scope(slim_utils.resnet_arg_scope()):
            net, _ = getattr(slim_v2, f"resnet_v2_{depth}")(inputs, num_classes,
                                                             is_training=False)
        session = tf.compat.v1.Session(graph=graph)
        session.run(tf.compat.v1.global_variables_initializer())
    return lambda: session.run(net)


def keras_forward(builder, images, dtype="float32", jit_compile=False):
    with dtype_policy_scope(dtype):
        model = builder()
    return make_step(model, images, None, "forward", jit_compile)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--depth", type=int, default=50, choices=[50, 101, 152])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--burn-in", type=int, default=3)
    parser.add_argument("--no-bf16", action="store_true", help="skip the mixed_bfloat16 run")
    parser.add_argument("--xla", action="store_true", help="also time ours with XLA")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    name = f"resnet_v2_{args.depth}"
    images = np.random.default_rng(0).uniform(
        0, 1, (args.batch_size, args.image_size, args.image_size, 3)).astype(np.float32)
    shape = (args.image_size, args.image_size, 3)
    apps = getattr(keras.applications, KERAS_APPLICATIONS[name])

    def ours():
        return resnet_tf.create_model(name, num_classes=1000, input_shape=shape)

    steps = {
        "tf_slim graph (fp32)": slim_step(args.depth, images, 1000),
        "resnet_tf (fp32)": keras_forward(ours, images),
        "keras.applications (fp32)": keras_forward(
            lambda: apps(weights=None, input_shape=shape, classes=1000), images),
    }
    if args.xla:
        steps["resnet_tf (fp32, XLA)"] = keras_forward(ours, images, jit_compile=True)
    if not args.no_bf16:
        steps["resnet_tf (mixed_bfloat16)"] = keras_forward(ours, images, "mixed_bfloat16")

    timings = time_interleaved(steps, "Forward", args.steps, args.burn_in, log=lambda line: None)
    durations = {label: timing.durations for label, timing in timings.items()}
    baseline = timings["resnet_tf (fp32)"].median
    print(f"{name} forward, batch {args.batch_size}, {args.image_size} px, "
          f"{args.steps} interleaved steps; {device_description()}")
    print(f"{'model':32s} {'median s/batch':>15s} {'images/s':>10s} {'vs resnet_tf fp32':>18s}")
    results = {}
    for label, values in durations.items():
        median = statistics.median(values)
        results[label] = {"median_s": median, "mean_s": statistics.fmean(values),
                          "images_per_s": args.batch_size / median, "durations_s": values}
        print(f"{label:32s} {median:15.4f} {args.batch_size / median:10.1f} "
              f"{baseline / median:17.3f}x")
    report = {"date": datetime.now().isoformat(timespec="seconds"), "model": name,
              "batch_size": args.batch_size, "image_size": args.image_size,
              "steps": args.steps, "device": device_description(), "cpu_count": os.cpu_count(),
              "versions": versions(), "results": results}
    path = args.json or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                     f"cpu_{name}_b{args.batch_size}.json")
    write_json(report, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
