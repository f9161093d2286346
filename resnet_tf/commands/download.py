"""`resnet-tf download`: released weights into the cache, said in one line (what, whose, the
preprocessing they take, where)."""

from __future__ import annotations

from resnet_tf.weights.catalog import published
from resnet_tf.weights.sources import download


def run(args) -> int:
    entry = published(args.weights, args.model)
    path = download(args.weights, args.model)
    prep = entry.preprocessing
    who = "slim" if entry.is_slim else args.weights
    print(f"{args.model}: {who}'s {entry.name} ({entry.num_classes} classes, {prep.method} "
          f"preprocessing, {prep.image_size} px; ImageNet top-1 {entry.top1} % as {who} "
          f"publishes it) at {path}")
    return 0
