"""`resnet-tf download`: released weights into the cache, said in one line (what, whose, the
preprocessing they take, where)."""

from __future__ import annotations

from resnet_tf.weights.catalog import published
from resnet_tf.weights.sources import download


def run(args) -> int:
    entry = published(args.weights, args.model)
    path = download(args.weights, args.model)
    prep = entry.preprocessing
    if entry.is_slim or entry.top1 is None:  # slim's carry their classes (V2: a background)
        facts = f"{entry.num_classes} classes, {prep.method} preprocessing"
    else:
        said = "timm measures it" if args.weights == "bit-m-in1k" else \
            f"{args.weights} publishes it"
        facts = f"ImageNet top-1 {entry.top1} % as {said}; {prep.method} preprocessing"
    whose = "slim" if entry.is_slim else args.weights
    print(f"{args.model}: {whose}'s {entry.name} ({facts}, {prep.image_size} px) at {path}")
    return 0
