"""Which calibration settings keep int8 accuracy best, per runtime, at the same speed; and what
quantization-aware training gives where post-training int8 loses accuracy.

Models, each trained twice (seeds 0 and 1) on scikit-learn's real handwritten digits:
  quickstart   the README's quickstart (ResNet V2 bottleneck stack, 16 px);
  cifar20      [1]'s CIFAR ResNet-20 (V1, option A) at 32 px, the digits upscaled (a larger net).
For every runtime and setting, the trained model is quantized with 300 of its training images
and evaluated with the runtime on the 359 validation digits (no bound: the fully int8 file);
each file's speed is timed on one batch of 32, interleaved. Then each model is fine-tuned with
quantization-aware training (3 epochs from the float run) and its int8 exports evaluated.

    python benchmarks/int8_settings.py            # ~20 min on 2 cores
    python benchmarks/int8_settings.py --quick    # one seed, fewer settings

Writes results/int8_settings.json and prints the table RESULTS.md quotes (reordered there).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


HERE = os.path.dirname(os.path.abspath(__file__))

SETTINGS = {
    "tflite": {
        "new quantizer, per-channel": {},
        "per-tensor weights": {"_experimental_disable_per_channel": True},
        "old quantizer": {"experimental_new_quantizer": False},
    },
    "onnx": {
        "MinMax, per-channel": {"calibrate_method": "MinMax", "per_channel": True},
        "Entropy": {"calibrate_method": "Entropy"},
        "Percentile 99.999": {"calibrate_method": "Percentile"},
        "Percentile 99.99": {"calibrate_method": "Percentile",
                             "extra_options": {"CalibPercentile": 99.99}},
        "per-tensor weights": {"per_channel": False},
        "reduce_range": {"reduce_range": True},
        "symmetric activations": {"extra_options": {"ActivationSymmetric": True}},
    },
    "openvino": {
        "PERFORMANCE, fast bias correction": {"preset": "PERFORMANCE",
                                              "fast_bias_correction": True},
        "MIXED preset": {"preset": "MIXED", "fast_bias_correction": True},
        "full bias correction": {"preset": "PERFORMANCE", "fast_bias_correction": False},
        "no bias correction": {"preset": "PERFORMANCE", "fast_bias_correction": True,
                               "advanced": {"disable_bias_correction": True}},
    },
}


def is_default(fmt, settings) -> bool:
    """Whether `settings` are what the format's quantizer uses when none are given."""
    from resnet_tf.export.formats import FORMATS

    defaults = FORMATS[fmt].SETTINGS
    return dict(defaults, **settings) == defaults


MODELS = {
    "quickstart": dict(config="quickstart", overrides={}),
    "cifar20": dict(config=None, overrides=dict(
        dataset="digits", image_size=32, preprocessing="cifar", model="cifar_resnet_v1",
        depth=20, shortcut="A", batch_size=32, epochs=12, optimizer="sgd", momentum=0.9,
        learning_rate=0.05, schedule="cosine", weight_decay=0.0001, batch_norm_decay=0.9)),
}


def train_run(name, seed, work):
    from resnet_tf.training.config import config_from_dict, default_values, load_config
    from resnet_tf.training.trainer import train

    spec = MODELS[name]
    if spec["config"]:
        config = load_config(spec["config"], seed=seed)
    else:
        values = {k: v for k, v in dict(spec["overrides"], seed=seed).items()
                  if k in default_values()}
        config = config_from_dict(values)
    model_dir = os.path.join(work, f"{name}-{seed}")
    began = time.perf_counter()
    metrics = train(config, model_dir, verbose=0)
    print(f"{name} seed {seed}: val_accuracy {metrics['val_accuracy']:.4f} "
          f"({time.perf_counter() - began:.0f} s)", flush=True)
    return model_dir, metrics


def export_and_measure(source, fmt, settings, calibration, validation, work):
    """The fully int8 file with these settings, its top-1 with its own runtime."""
    from resnet_tf.export.deploy import serving_function, write_serving_saved_model
    from resnet_tf.export.formats import FORMATS
    from resnet_tf.export.runtimes import open_runner
    from resnet_tf.training.evaluate import evaluate

    staging = tempfile.mkdtemp(dir=work)
    serve = serving_function(source.model, source.prep)
    saved_model = os.path.join(staging, "saved_model")
    write_serving_saved_model(serve, source.model, saved_model)
    quantizer = FORMATS[fmt].make_quantizer(source.model, serve, saved_model, calibration,
                                            staging, settings)
    target = os.path.join(staging, "int8")
    os.makedirs(target)
    began = time.perf_counter()
    quantizer.write([], target)
    seconds = time.perf_counter() - began
    runner = open_runner(fmt, target, "int8", source.prep)
    return evaluate(runner, validation, progress=False)["top1"], runner, seconds


def time_runners(runners, pixels, rounds=30):
    """Median seconds per batch of each runner, interleaved round by round."""
    for runner in runners.values():
        for _ in range(3):
            runner(pixels)
    durations = {name: [] for name in runners}
    names = list(runners)
    for i in range(rounds):
        for name in names[i % len(names):] + names[:i % len(names)]:
            start = time.perf_counter()
            runners[name](pixels)
            durations[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in durations.items()}


def bound_cost(name, source, calibration, validation, work, results):
    """The speed a bound costs: each runtime's fully int8 file beside the one `--max-accuracy-
    drop 0` makes (convolutions kept in float until int8 loses nothing), timed interleaved."""
    from resnet_tf.errors import UserError
    from resnet_tf.export.deploy import export_model
    from resnet_tf.export.int8 import Int8Options
    from resnet_tf.export.runtimes import open_export

    for fmt in SETTINGS:
        paths = {}
        for label, bound in (("fully int8", None), ("bounded (drop <= 0)", 0.0)):
            path = os.path.join(work, f"{name}-{fmt}-{'full' if bound is None else 'bounded'}")
            try:
                export_model(source.model, path, source.prep, format=fmt, precision="int8",
                             log=lambda *a: None, quantization=Int8Options(
                                 calibration=calibration, validation=validation,
                                 max_accuracy_drop=bound if bound is not None else 0.999))
            except UserError as error:
                print(f"  {fmt:9s} {label}: {error}", flush=True)
                continue
            paths[label] = path
        runners = {label: open_export(path)[0] for label, path in paths.items()}
        seconds = time_runners(runners, calibration[:32])
        for label, path in paths.items():
            with open(os.path.join(path, "accuracy.json")) as f:
                accuracy = json.load(f)
            results.append({"model": name, "seed": 0, "format": fmt, "setting": label,
                            "bound": True, "top1": accuracy["top1"], "drop": accuracy["drop"],
                            "float_layers": accuracy["float_layers"],
                            "batch_seconds": seconds[label]})
            print(f"  {fmt:9s} {label:22s} drop {accuracy['drop']:+.4f}, "
                  f"{len(accuracy['float_layers'])} float layers, "
                  f"{32 / seconds[label]:.0f} images/s", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    from resnet_tf.export.deploy import export_model
    from resnet_tf.export.int8 import Int8Options, calibration_pixels
    from resnet_tf.machine import machine_description, versions
    from resnet_tf.training.evaluate import labelled_images
    from resnet_tf.training.loading import load_model_source
    from resnet_tf.utils import write_json

    seeds = [0] if args.quick else [0, 1]
    work = tempfile.mkdtemp(prefix="int8-settings-")
    results = []
    for name in MODELS:
        for seed in seeds:
            model_dir, metrics = train_run(name, seed, work)
            source = load_model_source(model_dir=model_dir)
            calibration = calibration_pixels(source, count=300)
            validation = labelled_images(model_dir=model_dir)
            pixels = calibration[:32]
            for fmt, options in SETTINGS.items():
                runners = {}
                for label, settings in options.items():
                    if args.quick and not is_default(fmt, settings) and label not in (
                            "Entropy", "MIXED preset", "PERFORMANCE, fast bias correction"):
                        continue
                    top1, runner, seconds = export_and_measure(source, fmt, settings,
                                                               calibration, validation, work)
                    if is_default(fmt, settings):
                        label += " (default)"
                    runners[label] = runner
                    results.append({"model": name, "seed": seed, "format": fmt,
                                    "setting": label, "settings": settings, "top1": top1,
                                    "float32_top1": metrics["val_accuracy"],
                                    "drop": metrics["val_accuracy"] - top1,
                                    "quantize_seconds": seconds})
                    print(f"  {fmt:9s} {label:45s} top-1 {top1:.4f} "
                          f"(drop {metrics['val_accuracy'] - top1:+.4f}, quantized in "
                          f"{seconds:.1f} s)", flush=True)
                for label, seconds in time_runners(runners, pixels).items():
                    next(r for r in results if r["model"] == name and r["seed"] == seed and
                         r["format"] == fmt and r["setting"] == label)["batch_seconds"] = seconds
            if seed == seeds[0]:
                bound_cost(name, source, calibration, validation, work, results)
            # Quantization-aware training: 3 epochs from the float run, then each int8 file.
            from resnet_tf.training.config import load_config
            from resnet_tf.training.trainer import train

            config = load_config(os.path.join(model_dir, "config.yaml"),
                                 quantization_aware=True, init_from=model_dir, epochs=3)
            qat_dir = model_dir + "-qat"
            qat = train(config, qat_dir, verbose=0)
            qat_source = load_model_source(model_dir=qat_dir)
            for fmt in SETTINGS:
                output = os.path.join(work, f"{name}-{seed}-qat-{fmt}")
                export_model(qat_source.model, output, qat_source.prep, format=fmt,
                             precision="int8", log=lambda *a: None,
                             quantization=Int8Options(validation=validation))
                with open(os.path.join(output, "accuracy.json")) as f:
                    top1 = json.load(f)["top1"]
                results.append({"model": name, "seed": seed, "format": fmt,
                                "setting": "quantization-aware (3 epochs)", "top1": top1,
                                "float32_top1": metrics["val_accuracy"],
                                "qat_val_accuracy": qat["val_accuracy"],
                                "drop": metrics["val_accuracy"] - top1})
                print(f"  {fmt:9s} {'quantization-aware':45s} top-1 {top1:.4f} (QAT run "
                      f"{qat['val_accuracy']:.4f})", flush=True)
    report = {"date": time.strftime("%Y-%m-%d"), "machine": machine_description(),
              "versions": versions(), "results": results}
    path = os.path.join(HERE, "results", "int8_settings.json")
    write_json(report, path)
    print(f"wrote {path}")
    print_tables(results)


def print_tables(results):
    print("\n| model | runtime | setting | " + " | ".join(
        f"top-1 (seed {s})" for s in sorted({r['seed'] for r in results})) +
          " | mean drop | ms / batch of 32 | quantize s |")
    print("|---|---|---|" + "---:|" * (len({r['seed'] for r in results}) + 3))
    results = [r for r in results if not r.get("bound")]
    for model in MODELS:
        floats = {r["seed"]: r["float32_top1"] for r in results if r["model"] == model}
        print(f"| {model} | keras | float32 | " +
              " | ".join(f"{floats[s]:.4f}" for s in sorted(floats)) + " | | | |")
    keys = sorted(dict.fromkeys((r["model"], r["format"], r["setting"]) for r in results),
                  key=lambda k: (list(MODELS).index(k[0]), list(SETTINGS).index(k[1])))
    for model, fmt, setting in keys:
        rows = [r for r in results if (r["model"], r["format"], r["setting"]) ==
                (model, fmt, setting)]
        tops = " | ".join(f"{r['top1']:.4f}" for r in sorted(rows, key=lambda r: r["seed"]))
        speed = [r["batch_seconds"] * 1000 for r in rows if "batch_seconds" in r]
        quantize = [r["quantize_seconds"] for r in rows if "quantize_seconds" in r]
        print(f"| {model} | {fmt} | {setting} | {tops} | "
              f"{statistics.mean(r['drop'] for r in rows):+.4f} | "
              f"{f'{statistics.median(speed):.2f}' if speed else '—'} | "
              f"{f'{statistics.median(quantize):.1f}' if quantize else '—'} |")


if __name__ == "__main__":
    main()
