"""Inference runtimes on this CPU: speed (ResNet-50 V2 and the seed's ResNet-152 V2) and accuracy
(the trained quickstart on its real validation digits).

Speed: `resnet-tf bench --runtimes` (the same random weights converted to every runtime, all in
one process, interleaved round by round, medians). Accuracy: the quickstart trained, exported in
every format and precision (int8 calibrated on its own training images), each export evaluated
with its own runtime, and its probabilities compared with the Keras model's.

    python benchmarks/runtimes.py                  # both, ~15 min on 2 cores
    python benchmarks/runtimes.py --only accuracy

Writes results/runtimes_<model>_b<batch>.json and results/runtimes_accuracy.json.
"""

from __future__ import annotations

import argparse
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from resnet_tf.commands.benchmark import run_runtimes_benchmark  # noqa: E402
from resnet_tf.machine import machine_description, versions  # noqa: E402
from resnet_tf.utils import write_json  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RUNTIMES = ("keras:float32,keras:bfloat16,tflite:float32,tflite:float16,tflite:int8,"
            "onnxruntime:float32,onnxruntime:int8,openvino:float32,openvino:float16,"
            "openvino:bfloat16,openvino:int8")
EXPORTS = [("tflite", "float32"), ("tflite", "float16"), ("tflite", "int8"),
           ("onnx", "float32"), ("onnx", "int8"),
           ("openvino", "float32"), ("openvino", "float16"), ("openvino", "int8")]


def speed(model, batch_size, num_batches, burn_in):
    path = os.path.join(HERE, "results", f"runtimes_{model}_b{batch_size}.json")
    run_runtimes_benchmark(model_name=model, runtimes=RUNTIMES, batch_size=batch_size,
                           image_size=224, num_batches=num_batches, burn_in=burn_in,
                           num_classes=1000, json_path=path)
    print(f"wrote {path}")


def accuracy():
    import tensorflow as tf

    from resnet_tf.data import preprocessing
    from resnet_tf.data.datasets import digits_arrays
    from resnet_tf.export.runtimes import keras_runner, open_export
    from resnet_tf.training.config import load_config
    from resnet_tf.training.evaluate import evaluate, labelled_images
    from resnet_tf.training.loading import load_model_source
    from resnet_tf.training.trainer import train
    from resnet_tf_cli import main as cli

    work = tempfile.mkdtemp(prefix="runtimes-accuracy-")
    model_dir = os.path.join(work, "quickstart")
    config = load_config("quickstart")
    trained = train(config, model_dir, verbose=0)
    source = load_model_source(model_dir=model_dir)
    _, (x_val, _) = digits_arrays(0.2, config.seed)
    pixels = preprocessing.prepare_pixels(tf.constant(x_val), source.prep).numpy()
    keras = keras_runner(source.model, prep=source.prep)
    reference = keras(pixels)
    images = labelled_images(model_dir=model_dir)
    rows = [dict(evaluate(keras, images, progress=False), max_abs_diff=0.0)]
    for fmt, precision in EXPORTS:
        output = os.path.join(work, f"{fmt}-{precision}")
        assert cli(["export", "--model-dir", model_dir, "--output", output, "--format", fmt,
                    "--precision", precision]) == 0
        runner, _, _ = open_export(output)
        row = evaluate(runner, images, progress=False)
        row["max_abs_diff"] = float(np.max(np.abs(runner(pixels) - reference)))
        row["file_bytes"] = sum(os.path.getsize(os.path.join(output, f))
                                for f in os.listdir(output))
        rows.append(row)
    print(f"quickstart (trained: val_accuracy {trained['val_accuracy']:.4f}), "
          f"{rows[0]['count']} validation digits:")
    print(f"{'runtime':<12} {'precision':<9} {'top-1':>7} {'max |p - keras|':>16} {'bytes':>9}")
    for row in rows:
        print(f"{row['runtime']:<12} {row['precision']:<9} {row['top1']:>7.4f} "
              f"{row['max_abs_diff']:>16.2e} {row.get('file_bytes', 0):>9}")
    path = os.path.join(HERE, "results", "runtimes_accuracy.json")
    write_json({"model_dir_val_accuracy": trained["val_accuracy"], "results": rows,
                "machine": machine_description(), "versions": versions()}, path)
    print(f"wrote {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("speed", "accuracy"))
    parser.add_argument("--num-batches", type=int, default=30)
    args = parser.parse_args()
    if args.only != "speed":
        accuracy()
    if args.only != "accuracy":
        speed("resnet_v2_50", 8, args.num_batches, 3)
        speed("resnet_v2_152", 32, max(args.num_batches // 3, 5), 2)


if __name__ == "__main__":
    main()
