"""`resnet-tf train`: a run from a config, ended by Ctrl-C or SIGTERM with one sentence and the
conventional status (130, 143)."""

from __future__ import annotations

import signal
import sys


class _Stop(KeyboardInterrupt):
    """SIGTERM, delivered as an interrupt."""


def run(args) -> int:
    from resnet_tf.training.trainer import config_for_run, train

    received = {}

    def on_sigterm(number, frame):
        received["signal"] = number
        raise _Stop()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        config = config_for_run(args.config, args.model_dir, epochs=args.epochs,
                                dtype=args.dtype, init_from=args.init_from,
                                weights=args.weights,
                                quantization_aware=args.quantization_aware)
        metrics = train(config, args.model_dir, distribute=args.distribute,
                        cpu_devices=args.cpu_devices)
    except KeyboardInterrupt as interrupted:  # TrainingInterrupted, or before it could begin
        number = received.get("signal", signal.SIGINT)
        why = str(interrupted) or "interrupted before training began; re-run the same command"
        print(f"resnet-tf train: {args.model_dir}: {why}", file=sys.stderr)
        return 128 + number
    finally:
        signal.signal(signal.SIGTERM, previous)
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
