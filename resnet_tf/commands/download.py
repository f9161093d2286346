"""`resnet-tf download`: released weights into the cache, said in one line (what, whose, the
preprocessing they take, where)."""

from __future__ import annotations


def run(args) -> int:
    if args.weights != "imagenet":
        from resnet_tf.weights.sources import download, published

        entry = published(args.weights, args.model)
        path = download(args.weights, args.model)
        prep = entry.preprocessing
        print(f"{args.model}: {args.weights}'s {entry.name} (ImageNet top-1 {entry.top1} % as "
              f"{args.weights} publishes it; {prep.method} preprocessing, {prep.image_size} "
              f"px) at {path}")
        return 0
    from resnet_tf.weights.slim import download, release_of

    release = release_of(args.model)
    path = download(args.model)
    facts = release.conventions
    print(f"{args.model}: slim's {release.release} ({facts.num_classes} classes, "
          f"{facts.preprocessing} preprocessing, {facts.image_size} px) at {path}")
    return 0
