"""Plots every JSON report in benchmarks/results/ as images/s per model (one PNG)."""

import glob
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    reports = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(HERE, "results", "*.json")))]
    bars = [(f"{r['model']} b{r['batch_size']}\n{label}", result["images_per_s"])
            for r in reports for label, result in r["results"].items()]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(bars) + 1.5))
    ax.barh([b[0] for b in bars], [b[1] for b in bars], color="#4477aa")
    for y, (_, value) in enumerate(bars):
        ax.text(value, y, f" {value:.1f}", va="center")
    ax.set_xlabel("images / s (median step, higher is better)")
    ax.set_title("ResNet V2 forward, 224 px, this project's 2-core CPU")
    ax.invert_yaxis()
    fig.tight_layout()
    path = os.path.join(HERE, "results", "cpu_forward.png")
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
