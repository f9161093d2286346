"""The learning rate of a quantization-aware fine-tune: the quickstart trained with three seeds,
then three epochs of quantization-aware training from each at learning_rate x 1, 0.1 and 0.01
(`qat_learning_rate_scale`), each run's int8 val_accuracy against its float run's on the 359
real validation digits. It chose the default `qat_learning_rate_scale` (0.1).

    python benchmarks/qat_learning_rate.py        # ~4 min on 2 cores

Writes results/qat_learning_rate.json and prints the table RESULTS.md quotes.
"""

from __future__ import annotations

import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

HERE = os.path.dirname(os.path.abspath(__file__))
SEEDS = (0, 1, 2)
SCALES = (1.0, 0.1, 0.01)


def main():
    from resnet_tf.machine import machine_description, versions
    from resnet_tf.training.config import load_config
    from resnet_tf.training.trainer import train
    from resnet_tf.utils import write_json

    work = tempfile.mkdtemp(prefix="qat-lr-")
    results = []
    for seed in SEEDS:
        float_dir = os.path.join(work, f"float-{seed}")
        float_run = train(load_config("quickstart", seed=seed), float_dir, verbose=0)
        for scale in SCALES:
            config = load_config(os.path.join(float_dir, "config.yaml"), init_from=float_dir,
                                 quantization_aware=True, epochs=3,
                                 qat_learning_rate_scale=scale)
            began = time.perf_counter()
            qat = train(config, os.path.join(work, f"qat-{seed}-{scale}"), verbose=0)
            results.append({"seed": seed, "qat_learning_rate_scale": scale,
                            "float_val_accuracy": float_run["val_accuracy"],
                            "qat_val_accuracy": qat["val_accuracy"],
                            "seconds": time.perf_counter() - began})
            print(f"seed {seed}: float {float_run['val_accuracy']:.4f}, QAT at x{scale:g} "
                  f"{qat['val_accuracy']:.4f}", flush=True)
    path = os.path.join(HERE, "results", "qat_learning_rate.json")
    write_json({"date": time.strftime("%Y-%m-%d"), "machine": machine_description(),
                "versions": versions(), "results": results}, path)
    print(f"wrote {path}\n")
    print("| qat_learning_rate_scale | " + " | ".join(f"seed {s}: QAT − float" for s in SEEDS)
          + " | worst |")
    print("|---:|" + "---:|" * (len(SEEDS) + 1))
    for scale in SCALES:
        deltas = [r["qat_val_accuracy"] - r["float_val_accuracy"] for r in results
                  if r["qat_learning_rate_scale"] == scale]
        print(f"| {scale:g} | " + " | ".join(f"{d:+.4f}" for d in deltas) +
              f" | {min(deltas):+.4f} |")


if __name__ == "__main__":
    main()
