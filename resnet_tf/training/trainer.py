"""`resnet-tf train`: model.fit from a config, with checkpoints, resume, logs and metrics.json.

The model dir's layout and its crash-safe state are `model_dir`'s; this module writes them
through `EpochEnd`, a Keras callback called at the end of every epoch.

`--distribute mirrored` trains with `tf.distribute.MirroredStrategy` (local GPUs, or N logical
CPU devices with `--cpu-devices N`); `--distribute multiworker` with
`tf.distribute.MultiWorkerMirroredStrategy` and `TF_CONFIG`. Keras 3's `model.fit` fails under
the multi-worker strategy (keras-team/keras#20585), so that mode runs `MultiWorkerLoop`, a
`strategy.run` loop with the same effects: per-epoch state, resume, the CSV log and
metrics.json.

A run interrupted by Ctrl-C or SIGTERM ends with `TrainingInterrupted` (the command prints one
sentence); its model dir is as consistent as after a kill, and the same command resumes it.

TensorFlow only.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time

import keras
import tensorflow as tf

from resnet_tf.errors import UserError
from resnet_tf.models.precision import all_layers
from resnet_tf.models.registry import create_model
from resnet_tf.training.config import (
    DISTRIBUTE,
    MODEL_ARGUMENTS,
    TrainConfig,
    load_config,
    save_config,
)
from resnet_tf.training.model_dir import (
    ModelDir,
    best_val_accuracy,
    readable_keras_file,
)
from resnet_tf.utils import sha256_of_files, write_class_names, write_json

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
# Model, optimizer, loss


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


def with_normalization(config: TrainConfig) -> TrainConfig:
    """`config` with the normalization its `weights` need filled in (recorded in the model
    dir's config.yaml, which `evaluate`, `predict` and `export` read)."""
    if config.normalization is None and config.weights:
        from resnet_tf.weights.sources import normalization

        config = dataclasses.replace(config, normalization=normalization(config.model,
                                                                         config.weights))
    elif config.normalization is None and config.init_from:  # as the run it starts from
        source = recorded_config(config.init_from)
        if source is not None and source.normalization is not None:
            config = dataclasses.replace(config, normalization=source.normalization)
    if config.quantization_aware and config.normalization not in (None, "inception"):
        raise UserError(f"quantization-aware training takes inputs scaled to [-1, 1] (its input "
                        f"range is fixed); this run's images are normalised as "
                        f"{config.normalization!r} (its weights' source): fine-tune it in float "
                        "and export it with --precision int8 (post-training) instead")
    return config


def learning_rate_schedule(config: TrainConfig, steps_per_epoch: int):
    """Keras' own schedules: constant, cosine (with linear warm-up), slim's staircase
    exponential decay (`decay_rate` every `decay_epochs`) or piecewise constant (the learning
    rate times `decay_rate` after each of `boundaries_epochs`, as the ResNet papers' CIFAR runs),
    from `config.peak_learning_rate()`. `steps_per_epoch` is always a known count
    (`data.make_datasets`)."""
    if steps_per_epoch < 1:
        raise AssertionError(f"steps_per_epoch={steps_per_epoch}: a schedule needs a count")
    rate = config.peak_learning_rate()
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    total = config.epochs * steps_per_epoch
    if config.schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup else rate, decay_steps=max(total - warmup, 1),
            warmup_target=rate if warmup else None, warmup_steps=warmup)
    if config.schedule == "piecewise":
        boundaries = [int(round(e * steps_per_epoch)) for e in config.boundaries_epochs]
        values = [rate * config.decay_rate ** i for i in range(len(boundaries) + 1)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    if config.schedule == "exponential":
        return keras.optimizers.schedules.ExponentialDecay(
            rate, decay_steps=max(int(config.decay_epochs * steps_per_epoch), 1),
            decay_rate=config.decay_rate, staircase=True)
    return rate


def make_optimizer(config: TrainConfig, steps_per_epoch: int):
    """The config's optimizer (`model.compile` wraps it in a `LossScaleOptimizer` under
    mixed_float16: the model carries its dtype policy)."""
    lr = learning_rate_schedule(config, steps_per_epoch)
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=config.momentum)
    if config.optimizer == "rmsprop":  # slim's train_image_classifier default
        return keras.optimizers.RMSprop(lr, rho=0.9, momentum=config.momentum, epsilon=1.0)
    return keras.optimizers.Adam(lr)


def make_loss(config: TrainConfig, reduction="sum_over_batch_size"):
    return keras.losses.CategoricalCrossentropy(from_logits=True,
                                                label_smoothing=config.label_smoothing,
                                                reduction=reduction)


def make_metrics(num_classes: int) -> list:
    """Accuracy, and top-5 where there are more than 5 classes (the model's outputs are
    float32 under every dtype policy, which top-5 needs on TensorFlow)."""
    metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
    if num_classes > 5:
        metrics.append(keras.metrics.TopKCategoricalAccuracy(5, name="top5_accuracy"))
    return metrics


# --------------------------------------------------------------------------------------------
# Devices


def configure_cpu_devices(count: int):
    """Splits the CPU into `count` logical devices (before TensorFlow starts its runtime)."""
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
    except RuntimeError as error:
        raise UserError(f"--cpu-devices must be set before TensorFlow starts: {error}") from None


def check_tf_config() -> dict:
    """TF_CONFIG, checked: JSON with a cluster and this process's task."""
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise UserError("--distribute multiworker needs the TF_CONFIG environment variable "
                        "(cluster and task); see the README")
    try:
        value = json.loads(text)
        cluster, task = value["cluster"], value["task"]
        int(task["index"]), task["type"]
        if not isinstance(cluster, dict) or not cluster:
            raise ValueError("an empty cluster")
    except (ValueError, KeyError, TypeError) as error:
        raise UserError(f"TF_CONFIG is not a valid cluster description ({type(error).__name__}: "
                        f"{error}); expected {{\"cluster\": {{\"worker\": [\"host:port\", ...]}}, "
                        f"\"task\": {{\"type\": \"worker\", \"index\": 0}}}}. Received: "
                        f"TF_CONFIG={text[:200]!r}") from None
    return value


def make_strategy(distribute: str, cpu_devices: int | None = None):
    if distribute not in DISTRIBUTE:
        raise UserError(f"distribute must be one of {list(DISTRIBUTE)}. "
                        f"Received: distribute={distribute!r}")
    if cpu_devices and distribute != "mirrored":
        raise UserError("--cpu-devices splits the CPU into replicas for --distribute mirrored. "
                        f"Received: distribute={distribute!r}, cpu_devices={cpu_devices}")
    if distribute == "multiworker":
        check_tf_config()
    if cpu_devices:
        configure_cpu_devices(cpu_devices)
    if distribute == "none":
        return tf.distribute.get_strategy()
    if distribute == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices=devices)


def check_batch_size(config: TrainConfig, replicas: int) -> None:
    """The global batch must split evenly over the replicas (each replica takes
    batch_size / replicas); checked before anything is written."""
    if config.batch_size % replicas:
        raise UserError(f"batch_size={config.batch_size} does not split evenly over "
                        f"{replicas} replicas; use a multiple of {replicas}")


# --------------------------------------------------------------------------------------------
# Model dir


def check_model_dir(model_dir: str, config: TrainConfig) -> tuple[ModelDir, bool]:
    """Reads only: (the model dir, whether it holds a run to resume). Refuses a dir this
    project did not write (unless absent or empty), and a run recorded with another config
    (everything but `epochs` must match)."""
    paths = ModelDir(model_dir)
    resuming = paths.check_for_training()
    if resuming:
        previous = load_config(paths.config).to_dict()
        current = config.to_dict()
        changed = sorted(k for k in current if k != "epochs" and current[k] != previous.get(k))
        if changed:
            details = ", ".join(f"{k}: {previous.get(k)!r} -> {current[k]!r}" for k in changed)
            raise UserError(f"The model dir {model_dir!r} was trained with another config "
                            f"({details}); use a new --model-dir to start over")
    return paths, resuming


def recorded_config(model_dir: str):
    """The config a model dir's run recorded, or None (no run there yet)."""
    paths = ModelDir(model_dir)
    return load_config(paths.config) if os.path.isfile(paths.config) else None


class EpochEnd(keras.callbacks.Callback):
    """Writes a model dir's per-epoch state (`model_dir`'s docstring), for `model.fit` and the
    multi-worker loop alike. `epoch` is the epoch in flight (0-based)."""

    def __init__(self, paths: ModelDir, start_epoch: int, metrics_fn=None):
        super().__init__()
        self.paths = paths
        self.metrics_fn = metrics_fn
        self.epoch = start_epoch
        self.rows = [row for row in paths.completed_epochs() if row["epoch"] < start_epoch]
        best = best_val_accuracy(self.rows)
        # The epochs of the model best.keras holds: the first to reach the best val_accuracy.
        self.best_epochs = next((int(row["epoch"]) + 1 for row in self.rows
                                 if best is not None and row.get("val_accuracy") == best), 0)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        paths, epochs = self.paths, epoch + 1
        row = {"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()
                                   if k != "learning_rate"}}
        best = best_val_accuracy(self.rows)
        self.rows.append(row)
        paths.write_log(self.rows)
        if self.metrics_fn is not None:
            write_json(self.metrics_fn(self.rows), paths.metrics)
        paths.stage_model(self.model, paths.last, epochs)
        if "val_accuracy" in row and (best is None or row["val_accuracy"] > best):
            paths.stage_model(self.model, paths.best, epochs)
            self.best_epochs = epochs
        paths.commit(self.model, epochs, self.best_epochs)
        paths.promote(epochs)


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
    is_chief = _is_chief(strategy)
    paths, resuming = check_model_dir(model_dir, config)
    # Until an epoch is committed, a re-run starts as the first run did: from the same weights.
    fresh = not resuming or paths.committed_epochs() == 0
    init = initialization(config, paths.read_init() if resuming else None) if fresh else None
    keras.utils.set_random_seed(config.seed)
    data = make_datasets(config, paths.read_data_record() if resuming else None,
                         inherit=init_from_record(config) if not resuming else None)
    if not (resuming or config.quantization_aware):  # QAT freezes its batch norm
        check_batch_norm_decay(config, data.steps_per_epoch)
    model, done, replicas = _make_model(config, strategy, data, init, paths, resuming, fresh,
                                        is_chief)
    if done >= config.epochs:
        if is_chief and not readable_keras_file(paths.model):  # killed after the last commit
            if os.path.exists(paths.model):
                print(f"resnet-tf: {paths.model} was torn; written again from the committed "
                      f"epoch {done}")
            paths.save_model(model, paths.model)
        return dict(paths.read_metrics(), nothing_to_do=True, epochs_done=done)

    # Checked: now the model dir is written.
    writer = paths if is_chief else paths.worker(_task_name(strategy))
    if is_chief:
        _record_run(paths, config, data, init, resuming)
    os.makedirs(writer.checkpoints, exist_ok=True)
    previous_seconds = paths.read_metrics().get("train_seconds", 0.0) if done else 0.0
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


def _make_model(config, strategy, data, init, paths, resuming, fresh, is_chief):
    """(the compiled model, the epochs already committed, the replica-statistics callback):
    built in the layout its starting weights need, loaded from them (or, resuming, restored
    from the committed state), quantization-aware if asked."""
    # The layout its starting weights needed (init.json keeps it, for resumes too).
    layout = (init or (paths.read_init() if resuming else None) or {}).get("layout")
    with strategy.scope():
        model = build_model(config, data.num_classes, layout)
        if init is not None:
            start_from(model, config, init, again=resuming)
        if config.quantization_aware:
            model = quantization_aware(model, data.train, calibrate=fresh)
            if config.peak_learning_rate() != config.learning_rate and fresh:
                print(f"resnet-tf: quantization-aware fine-tune at learning rate "
                      f"{config.peak_learning_rate():g} (learning_rate {config.learning_rate:g} "
                      f"x qat_learning_rate_scale {config.qat_learning_rate_scale:g})")
        model.compile(optimizer=make_optimizer(config, data.steps_per_epoch),
                      loss=make_loss(config), metrics=make_metrics(data.num_classes))
        # Every worker restores the chief's committed state (the model dir is shared).
        done = paths.restore(model, reconcile=is_chief) if resuming else 0
        return model, done, ReplicaStatistics(strategy, model)


def _record_run(paths, config, data, init, resuming) -> None:
    """What the chief records before the first epoch: the data split, the starting point,
    the config (last: it makes the dir a run to resume), the class names."""
    if not resuming:
        paths.write_data_record(data.record)  # first: it marks the dir as a model dir
        if init is not None:
            paths.write_init(init)
        save_config(config, paths.config)
        write_class_names(paths.class_names, data.class_names)
    elif init is not None and paths.read_init() is None:  # a run from before init.json was
        paths.write_init(init)  # kept, killed before its first commit


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


# --------------------------------------------------------------------------------------------
# What a run starts from


def initialization(config: TrainConfig, recorded: dict | None = None) -> dict | None:
    """The weights a run starts from, as init.json records them: {"key": "slim_checkpoint" or
    "init_from", "given": the config's value, "path": the file read, "sha256": of its
    contents}; None for a run from random weights.

    `recorded` is what a run killed before its first committed epoch recorded: its re-run
    starts from that same file, and refuses (before anything is written) if the file is gone
    or changed, since `init_from`'s best checkpoint or a slim training dir's latest checkpoint
    may have moved on meanwhile."""
    if not (config.slim_checkpoint or config.init_from or config.weights):
        return None
    if recorded is not None:
        key, path = recorded["key"], recorded["path"]
        where = f"{key}={recorded['given']!r}: this run started from {path}"
        if not all(os.path.isfile(f) for f in _init_files(key, path)):
            raise UserError(f"{where}, which is gone; no epoch was committed yet, so it cannot "
                            "start again from the same weights: put it back, or use a new "
                            "--model-dir")
        if sha256_of_files(_init_files(key, path)) != recorded["sha256"]:
            raise UserError(f"{where}, which has changed since (no epoch was committed yet, "
                            "so it would start from other weights than the first run did); "
                            "use a new --model-dir to start from the file as it is now")
        return recorded
    if config.weights:
        return _weights_initialization(config)
    if config.slim_checkpoint:
        from resnet_tf.slim.checkpoint import resolve_checkpoint_path

        key, given, path = ("slim_checkpoint", config.slim_checkpoint,
                            resolve_checkpoint_path(config.slim_checkpoint))
    else:
        from resnet_tf.training.loading import model_dir_checkpoint

        key, given, path = ("init_from", config.init_from,
                            model_dir_checkpoint(config.init_from,
                                                 initial_checkpoint(config.init_from)))
        # The layout the run it starts from was built in (its own starting weights').
        layout = (ModelDir(config.init_from).read_init() or {}).get("layout", "slim")
        return {"key": key, "given": given, "path": path, "layout": layout,
                "sha256": sha256_of_files(_init_files(key, path))}
    return {"key": key, "given": given, "path": path,
            "sha256": sha256_of_files(_init_files(key, path))}


def _weights_initialization(config: TrainConfig) -> dict:
    """init.json for a run from released `weights`: the file (downloaded once into the cache)
    and the layout it needs; slim's release is its unpacked checkpoint."""
    from resnet_tf.weights import sources

    if config.weights == "imagenet":
        from resnet_tf.weights.slim import download

        key, path, layout = "slim_checkpoint", download(config.model), "slim"
    else:
        resolved = sources.resolve_weights(config.model, config.weights, None)
        if resolved.source == "slim":
            raise UserError(f"weights={config.weights!r} is a slim checkpoint: start from it "
                            "with slim_checkpoint (and checkpoint_exclude: [logits] for a new "
                            "head)")
        key, path, layout = "weights", resolved.path, resolved.layout
    return {"key": key, "given": config.weights, "path": path, "layout": layout,
            "sha256": sha256_of_files(_init_files(key, path))}


def _init_files(key: str, path: str) -> list:
    """The files whose contents identify a starting point: a .keras file; a slim checkpoint's
    .index (it holds a CRC32C of every tensor in the data files) or its single file."""
    if key == "slim_checkpoint" and not os.path.isfile(path):
        return [path + ".index"]
    return [path]


def start_from(model, config: TrainConfig, init: dict, again: bool = False) -> None:
    """Loads a run's starting weights (`initialization`): a slim checkpoint, or another model
    dir's model; says which."""
    path = init["path"]
    how = ("no epoch was committed before the run stopped: starting again from the same file, "
           if again else "starting from ")
    print(f"resnet-tf: {how}{path} ({init['key']}, sha256 {init['sha256'][:12]})", flush=True)
    if init["key"] == "slim_checkpoint":
        from resnet_tf.slim.checkpoint import load_slim_checkpoint

        exclude = ["logits"] if config.weights else config.checkpoint_exclude  # a new head
        load_slim_checkpoint(model, path, exclude=exclude,
                             moving_averages=config.checkpoint_moving_averages)
        return
    if init["key"] == "weights":
        from resnet_tf.weights.sources import assign_strictly, resolve_weights

        resolved = resolve_weights(config.model, path, None)
        assign_strictly(model, resolved.arrays, resolved.description, exclude=["logits"])
        return
    from resnet_tf.training.loading import load_keras_file

    source = load_keras_file(path)
    try:
        model.set_weights(source.get_weights())
    except ValueError as error:
        raise UserError(f"init_from={config.init_from!r}: its model does not fit this "
                        f"config's ({str(error).splitlines()[0][:200]})") from None


def init_from_record(config: TrainConfig):
    """The data record of the run `init_from` names (None without one): a run started from it
    must not validate on the images it trained on (`data.make_datasets`)."""
    if not config.init_from:
        return None
    return ModelDir(config.init_from).read_data_record(check_files=False)


def check_batch_norm_decay(config: TrainConfig, steps_per_epoch: int) -> None:
    """Warns when a run is too short for its batch norm decay. The moving statistics are
    exponential moving averages: after T steps their starting values (mean 0, variance 1, or
    the statistics a fine-tune starts from) still weigh decay**T in them. Above
    `BATCH_NORM_LEFT` the run would validate and save statistics that never settled (slim's
    0.997 keeps 41% of them after 300 steps). Names a decay that keeps at most a tenth of
    that."""
    steps = steps_per_epoch * config.epochs
    decay = config.batch_norm_decay
    if not 0.0 <= decay < 1.0:  # the builders refuse it
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


def quantization_aware(model, train_data, calibrate: bool, batches: int = 8):
    """The quantization-aware form of a run's model (`quantization.quantize_model`); a new run
    sets its activation ranges from its first training batches (a resumed one restores
    them)."""
    from resnet_tf.quantization import qat as quantization

    model = quantization.quantize_model(model)
    if calibrate:
        quantization.calibrate(model, train_data.take(batches))
    return model


def initial_checkpoint(model_dir: str) -> str:
    """The checkpoint of a model dir that `init_from` starts from: the best (by val_accuracy)
    where there is one, else the final model."""
    return "best" if os.path.isfile(ModelDir(model_dir).best) else "final"


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


def _is_chief(strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type == "chief" or (task_type == "worker" and task_id == 0 and
                                    "chief" not in resolver.cluster_spec().as_dict())


def _task_name(strategy) -> str:
    resolver = strategy.cluster_resolver
    return f"{resolver.task_type}_{resolver.task_id}"


# --------------------------------------------------------------------------------------------
# Multi-worker: a strategy.run loop (model.fit fails under MultiWorkerMirroredStrategy)


def batch_norm_statistics(model) -> list:
    """The moving means and variances of every batch norm in `model` (sublayers included),
    and a quantization-aware model's moving activation ranges."""
    from resnet_tf.models.quantizers import ActivationQuantizer

    statistics = []
    for layer in all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            statistics += [layer.moving_mean, layer.moving_variance]
        elif isinstance(layer, ActivationQuantizer):
            statistics += [layer.min, layer.max]
    return statistics


class ReplicaStatistics(keras.callbacks.Callback):
    """Averages the batch norms' moving statistics (and a quantization-aware model's moving
    activation ranges) over the replicas of a strategy, before every validation and at every
    epoch's end, so that the model validated is the model saved.

    Under a `MirroredStrategy` each replica's batch norm assigns its own batch's statistics to
    its own copy of the moving averages: the copies diverge, validation runs each replica's
    share of the images through its own copy, and saving reads replica 0's. The moving
    averages are exponential moving averages, linear in the batch statistics, so their mean
    over replicas equals one average of every replica's updates (tf.keras' ON_READ/MEAN
    variables). Only those: other state (a dropout's seed) stays per replica. slim's
    multi-clone training ran the first clone's update ops only (`model_deploy`), so its moving
    averages saw one clone's batches. A no-op with one replica.
    """

    def __init__(self, strategy, model):
        super().__init__()
        self.strategy = strategy
        self.statistics = (batch_norm_statistics(model)
                           if strategy.num_replicas_in_sync > 1 else [])
        self._average = tf.function(self._average_statistics, autograph=False)

    def average(self) -> None:
        if self.statistics:
            self._average()

    def _average_statistics(self):
        def replica_mean():
            context = tf.distribute.get_replica_context()
            return [context.all_reduce(tf.distribute.ReduceOp.MEAN, tf.identity(v))
                    for v in self.statistics]

        means = self.strategy.experimental_local_results(self.strategy.run(replica_mean))[0]
        for variable, mean in zip(self.statistics, means):
            variable.assign(mean)

    def on_test_begin(self, logs=None):  # model.fit's validation
        self.average()

    def on_epoch_end(self, epoch, logs=None):  # before the save, also without validation
        self.average()


class MultiWorkerLoop:
    """Trains a compiled model epoch by epoch with `strategy.run`, calling the callbacks as
    `model.fit` would at each epoch's end (the same state, log and checkpoints).

    Every worker runs the same steps and saves the same state (workers other than the chief
    under `workers/`, as TensorFlow's multi-worker guide does); the chief's backup is the one a
    re-run resumes from, so the model dir must be on storage all workers share. The loss is
    scaled by the optimizer (`scale_loss`: a `LossScaleOptimizer` under mixed_float16 divides
    the gradients by the same scale). The replicas' batch norm statistics are averaged
    (`ReplicaStatistics`, one of the callbacks) after training and before validating.
    """

    def __init__(self, strategy, model, config, data):
        self.strategy, self.model, self.config, self.data = strategy, model, config, data
        self.loss_fn = make_loss(config, reduction="none")
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = \
            tf.data.experimental.AutoShardPolicy.DATA
        self.train_data = strategy.experimental_distribute_dataset(
            data.train.with_options(options))
        self.val_data = (strategy.experimental_distribute_dataset(data.val.with_options(options))
                         if data.val is not None else None)
        # Plain Python over tensors, nothing for AutoGraph to convert (its conversion cache
        # once handed `_reduce` the wrong arguments in a long test session).
        self.train_step = tf.function(self._train_step, autograph=False)
        self.eval_step = tf.function(self._eval_step, autograph=False)

    def _counts(self, logits, labels):
        """(correct, correct in the top 5, examples) of one replica's batch."""
        target = tf.argmax(labels, -1)
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1), target), tf.float32))
        in_top5 = tf.reduce_sum(tf.cast(tf.math.in_top_k(target, logits, min(
            5, self.data.num_classes)), tf.float32))
        return correct, in_top5, tf.cast(tf.shape(labels)[0], tf.float32)

    def replica_train(self, images, labels):
        model, optimizer = self.model, self.model.optimizer
        with tf.GradientTape() as tape:
            logits = tf.cast(model(images, training=True), tf.float32)
            per_example = self.loss_fn(labels, logits)
            loss = tf.nn.compute_average_loss(per_example,
                                              global_batch_size=self.config.batch_size)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(
                    tf.add_n([tf.cast(l, tf.float32) for l in model.losses]))
            scaled = optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return (loss,) + self._counts(logits, labels)

    def replica_eval(self, images, labels):
        logits = tf.cast(self.model(images, training=False), tf.float32)
        return (tf.reduce_sum(self.loss_fn(labels, logits)),) + self._counts(logits, labels)

    def _reduce(self, values):
        return [self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for v in values]

    def _train_step(self, images, labels):
        return self._reduce(self.strategy.run(self.replica_train, args=(images, labels)))

    def _eval_step(self, images, labels):
        return self._reduce(self.strategy.run(self.replica_eval, args=(images, labels)))

    def run_epoch(self, iterator, steps, callbacks) -> dict:
        totals = [0.0, 0.0, 0.0, 0.0]  # loss sum (per-step mean), correct, in top 5, count
        for _ in range(steps):
            totals = [a + float(b) for a, b in zip(totals, self.train_step(*next(iterator)))]
        top5 = self.data.num_classes > 5
        logs = {"loss": totals[0] / steps, "accuracy": totals[1] / totals[3]}
        if top5:
            logs["top5_accuracy"] = totals[2] / totals[3]
        if self.val_data is not None:
            callbacks.on_test_begin()  # as model.fit's validation: ReplicaStatistics averages
            v = [0.0, 0.0, 0.0, 0.0]
            for images, labels in self.val_data:
                v = [a + float(b) for a, b in zip(v, self.eval_step(images, labels))]
            logs.update(val_loss=v[0] / v[3], val_accuracy=v[1] / v[3])
            if top5:
                logs["val_top5_accuracy"] = v[2] / v[3]
            callbacks.on_test_end(logs)
        return logs

    def run(self, initial_epoch, callbacks):
        with self.strategy.scope():
            self.model.optimizer.build(self.model.trainable_variables)
        callbacks = keras.callbacks.CallbackList(callbacks, model=self.model)
        callbacks.on_train_begin()
        iterator = iter(self.train_data)  # the pipeline repeats: one iterator for the run
        for epoch in range(initial_epoch, self.config.epochs):
            callbacks.on_epoch_begin(epoch)
            began = time.perf_counter()
            logs = self.run_epoch(iterator, self.data.steps_per_epoch, callbacks)
            print(f"Epoch {epoch + 1}/{self.config.epochs} - {time.perf_counter() - began:.1f}s - "
                  + " - ".join(f"{k}: {v:.4f}" for k, v in logs.items()), flush=True)
            # Every worker saves (reading mirrored variables may need all of them); the
            # chief's files are the real ones.
            callbacks.on_epoch_end(epoch, logs)
        callbacks.on_train_end()
