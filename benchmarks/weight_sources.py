"""Weights from other sources in slim's models: parity with each source's own code, and the
time to build a model with its weights, per source file format.

For each case, random weights with random batch-norm statistics are written in the source's
own format (keras.applications' `.h5` by tf_keras; a torchvision `.pth` by PyTorch; timm's
`.safetensors`), the source's own code computes the reference logits (tf_keras; torchvision
and timm where PyTorch is installed, else the logits stored in tests/data/sources), and
resnet_tf builds the model from the file (`weights=PATH`, median of `--repeats` builds).

    python benchmarks/weight_sources.py --json benchmarks/results/weight_sources.json
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from source_weights import (  # noqa: E402
    images,
    keras_applications_h5,
    relative_error,
    torch_state,
    write_safetensors,
)


def cpu_model() -> str:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def timed_build(builder, path, repeats, **kwargs):
    seconds, model = [], None
    for _ in range(repeats):
        began = time.perf_counter()
        model = builder(num_classes=1000, weights=path, **kwargs)
        seconds.append(time.perf_counter() - began)
    return model, statistics.median(seconds)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import resnet_tf

    work = tempfile.mkdtemp(prefix="weight-sources-")
    results = []
    for name, family in (("ResNet50V2", "v2"), ("ResNet50", "v1")):
        path = os.path.join(work, f"{name}.h5")
        reference = keras_applications_h5(name, path)
        model, seconds = timed_build(getattr(resnet_tf, f"resnet_{family}_50"), path,
                                     args.repeats)
        for size in (224, 225):
            x = images(size)
            results.append(dict(source="keras", file=".h5", model=f"resnet_{family}_50",
                                size=size, output_stride=None, reference="tf_keras",
                                relative_error=relative_error(model.predict(x, verbose=0),
                                                              reference.predict(x, verbose=0)),
                                build_and_load_seconds=seconds))
            print(results[-1], flush=True)
    try:
        import torch

        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                        "tests"))
        from make_source_outputs import source_logits
    except ImportError:
        torch = None
    for source, suffix in (("torchvision", ".pth"), ("timm", ".safetensors")):
        for size, output_stride in ((224, None), (225, 16)):
            state = torch_state(50)
            path = os.path.join(work, f"resnet50-{source}{suffix}")
            if suffix == ".pth":
                if torch is None:
                    continue
                torch.save({k: torch.from_numpy(v) for k, v in state.items()}, path)
            else:
                write_safetensors(state, path)
            model, seconds = timed_build(resnet_tf.resnet_v1_50, path, args.repeats,
                                         output_stride=output_stride)
            if torch is not None:
                expected, reference = source_logits(source, 50, size, output_stride), source
            else:
                from make_source_outputs import case_path

                stored = case_path(source, 50, size, output_stride)
                if not os.path.isfile(stored):
                    continue
                expected, reference = np.load(stored)["logits"], "stored"
            results.append(dict(source=source, file=suffix, model="resnet_v1_50", size=size,
                                output_stride=output_stride, reference=reference,
                                relative_error=relative_error(
                                    model.predict(images(size), verbose=0), expected),
                                build_and_load_seconds=seconds))
            print(results[-1], flush=True)
    report = dict(cpu=cpu_model(), python=platform.python_version(), results=results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
