"""The model that `export`, `predict` and `evaluate` take: a model dir, an export, a slim
checkpoint or released weights, as their shared options name it (`resnet_tf_cli.parser`)."""

from __future__ import annotations

from resnet_tf.errors import UserError
from resnet_tf.training.loading import load_model_source

# Why an option that names a model's facts does not apply to a source that has its own.
OWN_FACTS = {"--model-dir": "a model dir's model has its own name, classes and image size",
             "--export": "an export has its own model, classes and preprocessing "
                         "(preprocessing.json)"}


def check_source_options(args) -> None:
    """Options that do not apply to the chosen source are refused, never ignored."""
    refused = []
    if not (args.slim_checkpoint or args.weights):
        refused += [name for name, value in (("--model", args.model),
                                             ("--num-classes", args.num_classes),
                                             ("--image-size", args.image_size)) if value]
    if not args.slim_checkpoint and args.moving_averages:
        refused.append("--moving-averages")
    export = getattr(args, "export", None)
    if export and (args.slim_checkpoint or args.weights):
        other = "--slim-checkpoint" if args.slim_checkpoint else "--weights"
        raise UserError(f"--export and {other} both name the model; give one")
    if not (export or args.model_dir or args.slim_checkpoint or args.weights):
        raise UserError("give the model: --model-dir, --export, --slim-checkpoint or --weights")
    if (not args.model_dir or export) and args.checkpoint:
        refused.append("--checkpoint")
    if refused:
        source = ("--export" if export else "--model-dir" if args.model_dir
                  else "--slim-checkpoint" if args.slim_checkpoint else "--weights")
        raise UserError(f"{', '.join(refused)} do{'es' if len(refused) == 1 else ''} not apply "
                        f"to {source}" + (f": {OWN_FACTS[source]}" if source in OWN_FACTS
                                          else ""))


def load_source(args):
    """The Keras model (`loading.ModelSource`) the options name."""
    return load_model_source(model_dir=args.model_dir, slim_checkpoint=args.slim_checkpoint,
                             weights=args.weights, model_name=args.model or "resnet_v2_50",
                             num_classes=args.num_classes, image_size=args.image_size,
                             checkpoint=args.checkpoint or "final",
                             moving_averages=args.moving_averages)


def source_runner(args):
    """(runner, class names) of --export (its own runtime) or a Keras model source."""
    check_source_options(args)
    if getattr(args, "export", None):
        from resnet_tf.export.runtimes import open_export

        runner, _, names = open_export(args.export)
        return runner, names
    from resnet_tf.export.runtimes import keras_runner

    source = load_source(args)
    return keras_runner(source.model, prep=source.prep), source.class_names
