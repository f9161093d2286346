"""`resnet-tf train`: a run from a config. Ctrl-C and SIGTERM, at any moment, end it with one
sentence and the conventional status (`resnet_tf_cli.interruptible`)."""

from __future__ import annotations


def run(args) -> int:
    from resnet_tf.training.trainer import config_for_run, train

    config = config_for_run(args.config, args.model_dir, epochs=args.epochs, dtype=args.dtype,
                            init_from=args.init_from, weights=args.weights,
                            quantization_aware=args.quantization_aware)
    metrics = train(config, args.model_dir, distribute=args.distribute,
                    cpu_devices=args.cpu_devices)
    if not metrics:
        print(f"{args.model_dir}: this worker is done; the chief writes metrics.json")
        return 0
    if metrics.get("nothing_to_do"):
        print(f"{args.model_dir}: already trained {metrics['epochs_done']} epochs (--epochs "
              f"{config.epochs}); nothing to do, nothing written")
        return 0
    print(f"{args.model_dir}: epochs {metrics['epochs']}, val_accuracy "
          f"{_fmt(metrics['val_accuracy'])}, val_loss {_fmt(metrics['val_loss'])}, "
          f"{metrics['replicas']} replica(s), {metrics['train_seconds']:.1f} s in all")
    return 0


def _fmt(value):
    return "n/a" if value is None else f"{value:.4f}"
