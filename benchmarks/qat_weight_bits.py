"""What 7-bit weights cost quantization-aware int8, and what 8-bit weights cost on x86 CPUs
without VNNI.

Without VNNI (AVX2 only, or AVX-512 without VNNI), x86 int8 convolutions multiply u8 activations
by s8 weights in pairs and add each pair into a saturating int16 (`vpmaddubsw`): 8-bit weights
can overflow it, 7-bit ones (codes -63..63) cannot. OpenVINO's CPU plugin has no other path.
oneDNN (inside OpenVINO and TensorFlow) takes the kernels of a CPU without VNNI when its ISA is
capped with `ONEDNN_MAX_CPU_ISA=AVX2`, so one machine with VNNI measures both kinds of CPU.

Models, each trained with seeds 0 and 1 on scikit-learn's real handwritten digits (as
int8_settings.py): the quickstart and [1]'s CIFAR ResNet-20. From each float run:
  - 3 quantization-aware epochs with `qat_weight_bits` 8 and 7; each run's int8 TFLite, ONNX
    Runtime and OpenVINO files evaluated by their runtimes on the 359 validation digits, and
    the OpenVINO file again under `ONEDNN_MAX_CPU_ISA=AVX2`;
  - post-training int8 OpenVINO (NNCF's defaults, `--max-accuracy-drop` off), natively and
    capped.
Each evaluation runs `resnet-tf evaluate` in a process of its own (the cap is read when oneDNN
first runs).

    python benchmarks/qat_weight_bits.py            # ~40 min on 2 cores
    python benchmarks/qat_weight_bits.py --quick    # seed 0 only

Writes results/qat_weight_bits.json and prints the table RESULTS.md quotes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
AVX2 = {"ONEDNN_MAX_CPU_ISA": "AVX2"}
FORMATS = ("tflite", "onnx", "openvino")


def resnet_tf(*args, env=None) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "resnet_tf_cli", *args], capture_output=True,
                            text=True, env=dict(os.environ, **(env or {})), check=False)
    if result.returncode:
        raise SystemExit(f"resnet-tf {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result


def top1(export, model_dir, work, env=None) -> float:
    path = os.path.join(work, "evaluate.json")
    resnet_tf("evaluate", "--export", export, "--model-dir", model_dir, "--json", path, env=env)
    with open(path) as f:
        return json.load(f)["top1"]


def measure(name, seed, work, results) -> None:
    from int8_settings import train_run

    model_dir, metrics = train_run(name, seed, work)

    def record(setting, fmt, cpu, value, reference):
        results.append({"model": name, "seed": seed, "setting": setting, "format": fmt,
                        "cpu": cpu, "top1": value, "reference": reference,
                        "float32_top1": metrics["val_accuracy"]})
        print(f"  {setting:28s} {fmt:9s} {cpu:13s} top-1 {value:.4f} "
              f"(reference {reference:.4f}, {round((value - reference) * 359):+d} images)",
              flush=True)

    for bits in (8, 7):
        qat_dir = f"{model_dir}-qat{bits}"
        began = time.perf_counter()
        _qat(model_dir, qat_dir, bits)
        with open(os.path.join(qat_dir, "metrics.json")) as f:
            qat = json.load(f)["val_accuracy"]
        print(f"{name} seed {seed}: {bits}-bit QAT val_accuracy {qat:.4f} "
              f"({time.perf_counter() - began:.0f} s)", flush=True)
        for fmt in FORMATS:
            export = os.path.join(work, f"{name}-{seed}-qat{bits}-{fmt}")
            resnet_tf("export", "--model-dir", qat_dir, "--output", export, "--format", fmt,
                      "--precision", "int8")
            record(f"quantization-aware {bits}-bit", fmt, "native", top1(export, qat_dir, work),
                   qat)
            if fmt == "openvino":
                record(f"quantization-aware {bits}-bit", fmt, "AVX2 (capped)",
                       top1(export, qat_dir, work, AVX2), qat)
    export = os.path.join(work, f"{name}-{seed}-ptq-openvino")
    resnet_tf("export", "--model-dir", model_dir, "--output", export, "--format", "openvino",
              "--precision", "int8")
    for cpu, env in (("native", None), ("AVX2 (capped)", AVX2)):
        record("post-training (NNCF)", "openvino", cpu, top1(export, model_dir, work, env),
               metrics["val_accuracy"])


def _qat(model_dir, qat_dir, bits) -> None:
    """3 quantization-aware epochs from the float run, with `qat_weight_bits` = `bits`."""
    import yaml

    config = os.path.join(os.path.dirname(qat_dir), f"qat{bits}.yaml")
    with open(os.path.join(model_dir, "config.yaml")) as f:
        values = yaml.safe_load(f)
    values.update(qat_weight_bits=bits)
    with open(config, "w") as f:
        yaml.safe_dump(values, f)
    resnet_tf("train", "--config", config, "--model-dir", qat_dir, "--quantization-aware",
              "--init-from", model_dir, "--epochs", "3")


def print_table(results) -> None:
    rows = {}
    for r in results:
        key = (r["model"], r["setting"], r["format"], r["cpu"])
        rows.setdefault(key, {})[r["seed"]] = (r["top1"], r["reference"])
    seeds = sorted({r["seed"] for r in results})
    print("| model | int8 | runtime | CPU | " + " | ".join(f"seed {s}" for s in seeds) +
          " | images off (each seed) |")
    print("|---|---|---|---|" + "---:|" * (len(seeds) + 1))
    for (model, setting, fmt, cpu), by_seed in rows.items():
        cells = [f"{by_seed[s][0]:.4f}" if s in by_seed else "" for s in seeds]
        off = ", ".join(f"{round((by_seed[s][0] - by_seed[s][1]) * 359):+d}"
                        for s in seeds if s in by_seed)
        print(f"| {model} | {setting} | {fmt} | {cpu} | " + " | ".join(cells) + f" | {off} |")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--models", nargs="+", default=["quickstart", "cifar20"])
    args = parser.parse_args()
    from resnet_tf.machine import machine_description, versions
    from resnet_tf.utils import write_json

    work = tempfile.mkdtemp(prefix="qat-weight-bits-")
    results = []
    for name in args.models:
        for seed in [0] if args.quick else [0, 1]:
            measure(name, seed, work, results)
    report = {"date": time.strftime("%Y-%m-%d"), "machine": machine_description(),
              "versions": versions(), "results": results}
    path = os.path.join(HERE, "results", "qat_weight_bits.json")
    write_json(report, path)
    print(f"wrote {path}")
    print_table(results)


if __name__ == "__main__":
    main()
