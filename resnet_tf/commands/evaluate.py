"""`resnet-tf evaluate`: slim's eval_image_classifier for every kind of model source, on a
model dir's recorded validation images, a config's, an image folder or TFRecords."""

from __future__ import annotations

import os
import sys

from resnet_tf.commands.model_source import source_runner
from resnet_tf.errors import UserError


def run(args) -> int:
    from resnet_tf.training import evaluate as evaluation

    if args.json_path and os.path.isdir(args.json_path):
        raise UserError(f"--json {args.json_path!r} is a directory; give a file path")
    if not (args.config or args.data or args.tfrecords or args.model_dir):
        raise UserError("give the labelled images: --model-dir RUN (its recorded validation "
                        "images), --config FILE, --data DIR or --tfrecords PATTERN")
    if args.export and args.model_dir and (args.config or args.data or args.tfrecords):
        raise UserError("with --export, --model-dir names the images (its run's validation "
                        "images); give it or --config/--data/--tfrecords, not both")
    runner, names = source_runner(args)
    config = None
    if args.config:
        from resnet_tf.training.config import load_config

        config = load_config(args.config)
    run_dir = args.model_dir if not (config or args.data or args.tfrecords) else None
    if args.export and run_dir:
        evaluation.check_same_classes(names, run_dir, f"--export {args.export!r}")
    images = evaluation.labelled_images(model_dir=run_dir, config=config, folder=args.data,
                                        tfrecords=args.tfrecords, class_names=names)
    if args.export and run_dir:
        print(f"Evaluating {args.export} on {images.description} ({images.count} images)")
    result = evaluation.evaluate(runner, images, args.batch_size, progress=sys.stdout.isatty())
    result["source"] = args.export or args.model_dir or args.slim_checkpoint or args.weights
    print(evaluation.format_result(result))
    if args.json_path:
        from resnet_tf.utils import write_json

        write_json(result, args.json_path)
    return 0
