"""Plots the JSON reports in benchmarks/results/: images/s per model (cpu_*.json ->
cpu_forward.png) and per runtime (runtimes_resnet_*.json -> runtimes.png)."""

import glob
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def entries(report):
    """(label, images/s) of a report: `results` is a list (bench) or a dict (older scripts)."""
    results = report["results"]
    if isinstance(results, dict):
        return [(label, r["images_per_s"]) for label, r in results.items()]
    return [(r["name"], r["images_per_s"]) for r in results]


def plot(pattern, title, output):
    paths = sorted(glob.glob(os.path.join(HERE, "results", pattern)))
    if not paths:
        return
    bars = []
    for path in paths:
        report = json.load(open(path))
        bars += [(f"{report['model']} b{report['batch_size']}\n{label}", value)
                 for label, value in entries(report)]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(bars) + 1.5))
    ax.barh([b[0] for b in bars], [b[1] for b in bars], color="#4477aa")
    for y, (_, value) in enumerate(bars):
        ax.text(value, y, f" {value:.1f}", va="center")
    ax.set_xlabel("images / s (median step, higher is better)")
    ax.set_title(title)
    ax.invert_yaxis()
    fig.tight_layout()
    path = os.path.join(HERE, "results", output)
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")


def main():
    plot("cpu_*.json", "ResNet V2 forward, 224 px, this project's 2-core CPU",
         "cpu_forward.png")
    plot("runtimes_resnet_*.json", "Forward through each runtime, 224 px, 2-core CPU",
         "runtimes.png")


if __name__ == "__main__":
    main()
