"""`resnet-tf train`: model.fit from a config, with checkpoints, resume, logs and metrics.json.

The model dir's layout and its crash-safe state are `model_dir`'s; this module writes them
through `EpochEnd`, a Keras callback called at the end of every epoch. What a run starts from
is `start`'s, its optimizer and loss `optimization`'s, its devices and the multi-worker loop
`distribute`'s.

A run interrupted by Ctrl-C or SIGTERM ends with `TrainingInterrupted` (the command prints one
sentence); its model dir is as consistent as after a kill, and the same command resumes it.

TensorFlow only.
"""

from __future__ import annotations

import math
import os
import sys
import time

import keras
import tensorflow as tf

from resnet_tf.errors import UserError
from resnet_tf.models.registry import create_model
from resnet_tf.training.config import (
    MODEL_ARGUMENTS,
    TrainConfig,
    load_config,
    load_recorded_config,
    save_config,
)
from resnet_tf.training.distribute import (
    MultiWorkerLoop,
    ReplicaStatistics,
    check_batch_size,
    is_chief_task,
    make_strategy,
    task_name,
)
from resnet_tf.training.model_dir import (
    ModelDir,
    best_val_accuracy,
    readable_keras_file,
)
from resnet_tf.models.schedules import (
    BIT_BATCH_SIZE,
    bit_hyperrule_epochs,
    bit_hyperrule_steps,
)
from resnet_tf.training.optimization import make_loss, make_metrics, make_optimizer
from resnet_tf.training.start import (
    init_from_record,
    initialization,
    quantization_aware,
    recorded_config,
    start_from,
    with_normalization,
)
from resnet_tf.utils import write_class_names, write_json

# The most weight the starting values of batch norm's moving statistics may keep in them at a
# run's end (batch_norm_decay ** steps); `check_batch_norm_decay` warns above it.
BATCH_NORM_LEFT = 0.01


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on Ctrl-C or SIGTERM during `epoch` (1-based; None: before the first
    epoch began); the model dir holds the epochs committed before it, and the same command
    resumes."""

    def __init__(self, epoch: int | None):
        super().__init__("interrupted before training began; re-run the same command"
                         if epoch is None else f"interrupted during epoch {epoch}; re-run the "
                         "same command to resume")
        self.epoch = epoch


# --------------------------------------------------------------------------------------------
# The model


def build_model(config: TrainConfig, num_classes: int, layout: str | None = None) -> keras.Model:
    """The model a config names, for `num_classes` classes and `image_size` inputs, with the
    builder's own config keys (`config.MODEL_ARGUMENTS`), under the config's dtype policy;
    `layout` (`resnet_utils.LAYOUTS`) is the one its starting `weights` need."""
    arg_scope = dict(weight_decay=config.weight_decay, batch_norm_decay=config.batch_norm_decay)
    extra = {k: getattr(config, k) for k in MODEL_ARGUMENTS.get(config.model, ())
             if getattr(config, k) is not None}
    if layout not in (None, "slim"):
        extra["layout"] = layout
    return create_model(config.model, num_classes=num_classes,
                        input_shape=(config.image_size, config.image_size, 3),
                        dtype=config.dtype, **extra, **arg_scope)


# --------------------------------------------------------------------------------------------
# Model dir


# The settings of a run that the command line gives (`--dtype`, `--init-from`, `--weights`,
# `--quantization-aware`), and `qat_weight_bits` (a quantization-aware run recorded before it
# existed trained 8-bit weights): a resume that leaves one out keeps the run's own (the config
# file's value would otherwise be refused as another config).
RUN_SETTINGS = ("dtype", "init_from", "weights", "quantization_aware", "qat_weight_bits")


def config_for_run(config_file: str, model_dir: str, epochs: int | None = None,
                   **given) -> TrainConfig:
    """The config `resnet-tf train --config CONFIG_FILE --model-dir MODEL_DIR` trains with:
    the file's, with `epochs` and the `RUN_SETTINGS` given (None: not given) over it. Resuming
    a run, a setting not given is the run's own, and a value that differs from the file's is
    said."""
    given = {key: given.get(key) for key in RUN_SETTINGS}
    recorded = recorded_config(model_dir)
    if recorded is not None:
        in_file = load_config(config_file)
        for key in RUN_SETTINGS:
            if given[key] is None:
                given[key] = getattr(recorded, key)
                if getattr(in_file, key) != given[key]:
                    print(f"resnet-tf: resuming with the run's own {key} {given[key]!r} (the "
                          f"config says {getattr(in_file, key)!r})")
    return load_config(config_file, epochs=epochs, **given)


def check_model_dir(model_dir: str, config: TrainConfig) -> tuple[ModelDir, bool]:
    """Reads only: (the model dir, whether it holds a run to resume). Refuses a dir this
    project did not write (unless absent or empty), and a run recorded with another config
    (everything but `epochs` must match)."""
    run_dir = ModelDir(model_dir)
    resuming = run_dir.check_for_training()
    if resuming:
        previous = load_recorded_config(run_dir.config).to_dict()
        current = config.to_dict()
        changed = sorted(k for k in current if k != "epochs" and current[k] != previous.get(k))
        if changed:
            details = ", ".join(f"{k}: {previous.get(k)!r} -> {current[k]!r}" for k in changed)
            raise UserError(f"The model dir {model_dir!r} was trained with another config "
                            f"({details}); use a new --model-dir to start over")
    return run_dir, resuming


class EpochEnd(keras.callbacks.Callback):
    """Writes a model dir's per-epoch state (`model_dir`'s docstring), for `model.fit` and the
    multi-worker loop alike. `epoch` is the epoch in flight (0-based)."""

    def __init__(self, run_dir: ModelDir, start_epoch: int, metrics_fn=None):
        super().__init__()
        self.run_dir = run_dir
        self.metrics_fn = metrics_fn
        self.epoch = start_epoch
        self.rows = [row for row in run_dir.completed_epochs() if row["epoch"] < start_epoch]
        best = best_val_accuracy(self.rows)
        # The epochs of the model best.keras holds: the first to reach the best val_accuracy.
        self.best_epochs = next((int(row["epoch"]) + 1 for row in self.rows
                                 if best is not None and row.get("val_accuracy") == best), 0)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        run_dir, epochs = self.run_dir, epoch + 1
        row = {"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()
                                   if k != "learning_rate"}}
        best = best_val_accuracy(self.rows)
        self.rows.append(row)
        run_dir.write_log(self.rows)
        if self.metrics_fn is not None:
            write_json(self.metrics_fn(self.rows), run_dir.metrics)
        run_dir.stage_model(self.model, run_dir.last, epochs)
        if "val_accuracy" in row and (best is None or row["val_accuracy"] > best):
            run_dir.stage_model(self.model, run_dir.best, epochs)
            self.best_epochs = epochs
        run_dir.commit(self.model, epochs, self.best_epochs)
        run_dir.promote(epochs)


# --------------------------------------------------------------------------------------------
# Training


def train(config: TrainConfig, model_dir: str, distribute: str = "none",
          cpu_devices: int | None = None, verbose: int | None = None) -> dict:
    """Trains as `config` says into `model_dir` and returns the metrics written to metrics.json.

    Everything a run needs (the model dir, the data and its images, the model, a checkpoint to
    start from, the replicas) is checked before anything is written: a failed start leaves the
    model dir as it was. A new run records its data first (`DataRecord`); a re-run reads that
    record, restores the last committed epoch (`ModelDir.restore`) and trains the rest; with
    nothing left to train it writes nothing and returns the recorded metrics with
    `"nothing_to_do": True`. Ctrl-C or SIGTERM (delivered as `KeyboardInterrupt`), at any
    moment, end it with `TrainingInterrupted`.
    """
    in_flight = {}
    try:
        return _train(config, model_dir, distribute, cpu_devices, verbose, in_flight)
    except KeyboardInterrupt:
        epoch_end = in_flight.get("epoch_end")
        raise TrainingInterrupted(None if epoch_end is None else epoch_end.epoch + 1) from None


def _train(config, model_dir, distribute, cpu_devices, verbose, in_flight) -> dict:
    """A run as a few steps: check the model dir, the data and the starting point; make the
    model (restored when resuming); record the run; fit; save."""
    from resnet_tf.data.datasets import make_datasets

    strategy = make_strategy(distribute, cpu_devices)
    config = with_normalization(config)
    check_batch_size(config, strategy.num_replicas_in_sync)
    is_chief = is_chief_task(strategy)
    run_dir, resuming = check_model_dir(model_dir, config)
    # Until an epoch is committed, a re-run starts as the first run did: from the same weights.
    fresh = not resuming or run_dir.committed_epochs() == 0
    init = initialization(config, run_dir.read_init() if resuming else None) if fresh else None
    keras.utils.set_random_seed(config.seed)
    data = make_datasets(config, run_dir.read_data_record() if resuming else None,
                         inherit=init_from_record(config) if not resuming else None)
    if not (resuming or config.quantization_aware):  # QAT freezes its batch norm
        check_batch_norm_decay(config, data.steps_per_epoch)
    if config.schedule == "bit_hyperrule" and not resuming:
        print(bit_hyperrule_note(config, data.steps_per_epoch, data.record.counts["train"]),
              flush=True)
    model, done, replicas = _make_model(config, strategy, data, init, run_dir, resuming, fresh,
                                        is_chief)
    if done >= config.epochs:
        if is_chief and not readable_keras_file(run_dir.model):  # killed after the last commit
            if os.path.exists(run_dir.model):
                print(f"resnet-tf: {run_dir.model} was torn; written again from the committed "
                      f"epoch {done}")
            run_dir.save_model(model, run_dir.model)
        return dict(run_dir.read_metrics(), nothing_to_do=True, epochs_done=done)

    if done:
        print(f"resnet-tf: resuming at epoch {done + 1} of {config.epochs} from the epoch "
              f"{done} committed in {run_dir.root}", flush=True)
    # Checked: now the model dir is written.
    writer = run_dir if is_chief else run_dir.worker(task_name(strategy))
    if is_chief:
        _record_run(run_dir, config, data, init, resuming)
    os.makedirs(writer.checkpoints, exist_ok=True)
    previous_seconds = run_dir.read_metrics().get("train_seconds", 0.0) if done else 0.0
    start = time.perf_counter()

    def metrics_of(rows):
        return epoch_metrics(rows, strategy, config, previous_seconds,
                             time.perf_counter() - start)

    epoch_end = in_flight["epoch_end"] = EpochEnd(writer, done, metrics_of)
    # The replicas' statistics are averaged before each validation and each save, so that
    # what is validated is what is saved (ahead of EpochEnd).
    callbacks = [keras.callbacks.TensorBoard(writer.logs), replicas, epoch_end]
    _fit(model, config, data, strategy, distribute, done, callbacks, verbose)
    writer.save_model(model, writer.model)
    result = metrics_of(writer.completed_epochs())
    write_json(result, writer.metrics)
    return result if is_chief else {}


def _make_model(config, strategy, data, init, run_dir, resuming, fresh, is_chief):
    """(the compiled model, the epochs already committed, the replica-statistics callback):
    built in the layout its starting weights need, loaded from them (or, resuming, restored
    from the committed state), quantization-aware if asked."""
    # The layout its starting weights needed (init.json keeps it, for resumes too).
    layout = (init or (run_dir.read_init() if resuming else None) or {}).get("layout")
    with strategy.scope():
        model = build_model(config, data.num_classes, layout)
        if init is not None:
            start_from(model, config, init, again=resuming)
        if config.quantization_aware:
            model = quantization_aware(model, data.train, calibrate=fresh,
                                       weight_bits=config.qat_weight_bits)
            if config.peak_learning_rate() != config.learning_rate and fresh:
                print(f"resnet-tf: quantization-aware fine-tune at learning rate "
                      f"{config.peak_learning_rate():g} (learning_rate {config.learning_rate:g} "
                      f"x qat_learning_rate_scale {config.qat_learning_rate_scale:g}), "
                      f"{config.qat_weight_bits}-bit weights (qat_weight_bits)")
        model.compile(optimizer=make_optimizer(config, data.steps_per_epoch,
                                               data.record.counts["train"]),
                      loss=make_loss(config), metrics=make_metrics(data.num_classes))
        # Every worker restores the chief's committed state (the model dir is shared).
        done = run_dir.restore(model, reconcile=is_chief) if resuming else 0
        return model, done, ReplicaStatistics(strategy, model)


def _record_run(run_dir, config, data, init, resuming) -> None:
    """What the chief records before the first epoch: the data split, the starting point,
    the config (last: it makes the dir a run to resume), the class names."""
    if not resuming:
        run_dir.write_data_record(data.record)  # first: it marks the dir as a model dir
        if init is not None:
            run_dir.write_init(init)
        save_config(config, run_dir.config)
        write_class_names(run_dir.class_names, data.class_names)
    elif init is not None and run_dir.read_init() is None:  # a run from before init.json was
        run_dir.write_init(init)  # kept, killed before its first commit


def _fit(model, config, data, strategy, distribute, done, callbacks, verbose) -> None:
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    try:
        if distribute == "multiworker":
            MultiWorkerLoop(strategy, model, config, data).run(done, callbacks)
        else:
            model.fit(data.train, epochs=config.epochs, initial_epoch=done,
                      steps_per_epoch=data.steps_per_epoch, validation_data=data.val,
                      validation_steps=data.validation_steps, callbacks=callbacks,
                      verbose=verbose, shuffle=False)  # the pipeline shuffles
    except tf.errors.InvalidArgumentError as error:
        if "resnet-tf: a label" in str(error):  # TFRecords whose counts were given, unchecked
            raise UserError(f"train_data/val_data: a TFRecord label is outside 0.."
                            f"{data.num_classes - 1} (num_classes={data.num_classes}); the "
                            "epochs before it are kept") from None
        raise


def bit_hyperrule_note(config: TrainConfig, steps_per_epoch: int, examples: int) -> str:
    """What BiT-HyperRule would train for this run's `examples` images, beside what the run
    trains."""
    steps = bit_hyperrule_steps(examples)
    mixup = ("; BiT also mixes images (mixup 0.1) at this size, which resnet_tf does not"
             if examples >= 20_000 else "")
    return (f"resnet-tf: bit_hyperrule: BiT trains {examples} images for {steps[-1]} steps "
            f"of {BIT_BATCH_SIZE} (about {bit_hyperrule_epochs(examples):.0f} epochs) at "
            f"learning rate 0.003; this run: {config.epochs} epochs of {steps_per_epoch} "
            f"steps of {config.batch_size} at {config.peak_learning_rate():g}, warm-up over "
            f"the first {steps[0] / steps[-1]:.1%}, / 10 at "
            f"{', '.join(f'{s / steps[-1]:.0%}' for s in steps[1:4])}{mixup}")


def check_batch_norm_decay(config: TrainConfig, steps_per_epoch: int) -> None:
    """Warns when a run is too short for its batch norm decay. The moving statistics are
    exponential moving averages: after T steps their starting values (mean 0, variance 1, or
    the statistics a fine-tune starts from) still weigh decay**T in them. Above
    `BATCH_NORM_LEFT` the run would validate and save statistics that never settled (slim's
    0.997 keeps 41% of them after 300 steps). Names a decay that keeps at most a tenth of
    that. Big Transfer's models (group norm) have no moving statistics."""
    from resnet_tf.models.bit import BIT_MODELS

    steps = steps_per_epoch * config.epochs
    decay = config.batch_norm_decay
    if not 0.0 <= decay < 1.0 or config.model in BIT_MODELS:  # (the builders refuse it)
        return
    left = decay ** steps
    if left <= BATCH_NORM_LEFT:
        return
    fits = max(0.5, math.floor(100 * (BATCH_NORM_LEFT / 10) ** (1.0 / steps)) / 100)
    print(f"resnet-tf: warning: batch_norm_decay {decay:g} leaves {left:.0%} of the moving "
          f"statistics' starting values in them after this run's {steps} steps "
          f"({config.epochs} epochs of {steps_per_epoch}; they average over about "
          f"{1.0 / (1.0 - decay):.0f} steps): it would validate and save statistics that "
          f"never settled. Set batch_norm_decay: {fits:g} (or lower) in the config, or train "
          "longer", file=sys.stderr, flush=True)


def epoch_metrics(rows, strategy, config, previous_seconds, seconds) -> dict:
    """metrics.json: the last completed epoch's numbers, the count, the time, the history."""
    last = rows[-1] if rows else {}
    return {
        "val_accuracy": last.get("val_accuracy"),
        "val_loss": last.get("val_loss"),
        "accuracy": last.get("accuracy"),
        "loss": last.get("loss"),
        "epochs": len(rows),
        "replicas": int(strategy.num_replicas_in_sync),
        "train_seconds": round(previous_seconds + seconds, 3),
        "last_run_seconds": round(seconds, 3),
        "best_val_accuracy": best_val_accuracy(rows),
        "model": config.model,
        "dtype": config.dtype,
        "quantization_aware": config.quantization_aware,
        "history": rows,
    }
