"""How batch_norm_decay decides a short run's validation accuracy: the own-images example of
docs/training.md (ResNet-18 V2 at 64 px, batch 16, Adam 1e-3, cosine) trained on real
handwritten digits written as an image folder, once per decay, through `resnet-tf train`.

    python benchmarks/batch_norm_decay.py --per-class 120 --epochs 5 --json results/bn_decay.json

Prints one line per decay (val_accuracy, final training accuracy, steps, the run's warning)
and writes JSON with the CPU model.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

EXAMPLE = dict(model="resnet_v2_18", dataset="folder", validation_split=0.2, image_size=64,
               batch_size=16, optimizer="adam", learning_rate=0.001, schedule="cosine")


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines()
                    if line.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=120)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--decays", default="0.997,0.99,0.96,0.9")
    parser.add_argument("--json")
    args = parser.parse_args()
    from image_data import write_digits_folder

    work = tempfile.mkdtemp(prefix="bn-decay-")
    folder = write_digits_folder(os.path.join(work, "digits"), per_class=args.per_class)
    results = []
    for decay in [float(d) for d in args.decays.split(",")]:
        config = os.path.join(work, f"config-{decay}.yaml")
        with open(config, "w") as f:
            yaml.safe_dump(dict(EXAMPLE, train_data=folder, epochs=args.epochs,
                                batch_norm_decay=decay), f)
        run = os.path.join(work, f"run-{decay}")
        done = subprocess.run([sys.executable, "-m", "resnet_tf_cli", "train", "--config",
                               config, "--model-dir", run], capture_output=True, text=True)
        if done.returncode:
            sys.exit(done.stderr[-2000:])
        metrics = json.load(open(os.path.join(run, "metrics.json")))
        warned = "batch_norm_decay" in done.stderr
        results.append(dict(batch_norm_decay=decay, val_accuracy=metrics["val_accuracy"],
                            accuracy=metrics["accuracy"], epochs=metrics["epochs"],
                            warned=warned))
        print(f"batch_norm_decay {decay:<6g} val_accuracy {metrics['val_accuracy']:.4f}  "
              f"train accuracy {metrics['accuracy']:.4f}  warned {warned}", flush=True)
    report = dict(example=EXAMPLE, images=10 * args.per_class, epochs=args.epochs,
                  cpu=cpu_model(), results=results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
