"""`resnet-tf train`: model.fit from a config, with checkpoints, resume, logs and metrics.json.

A model dir holds:

    config.yaml          the resolved config (a re-run must use the same one)
    class_names.txt      one name per class
    model.keras          the model after the last completed run
    checkpoints/last.keras, checkpoints/best.keras (best val_accuracy)
    backup/              BackupAndRestore: re-running continues where training stopped
    logs/                TensorBoard
    training_log.csv     one row per epoch, across runs
    metrics.json         val_accuracy, val_loss, epochs, replicas, train_seconds, ...

`--distribute mirrored` trains with `tf.distribute.MirroredStrategy` (local GPUs, or N logical
CPU devices with `--cpu-devices N`); `--distribute multiworker` with
`tf.distribute.MultiWorkerMirroredStrategy` and `TF_CONFIG`. Keras 3's `model.fit` fails under
the multi-worker strategy (keras-team/keras#20585), so that mode runs a custom `strategy.run`
loop with the same effects: per-epoch checkpoints, resume, the CSV log and metrics.json.

TensorFlow only.
"""

from __future__ import annotations

import os
import sys
import time

import keras
import tensorflow as tf

from resnet_tf.config import MODEL_ARGUMENTS, TrainConfig, load_config, save_config
from resnet_tf.model_dir import ModelDir, best_val_accuracy, epoch_end_callback
from resnet_tf.registry import create_model
from resnet_tf.utils import dtype_policy_scope, write_json, write_text

DISTRIBUTE = ("none", "mirrored", "multiworker")


# --------------------------------------------------------------------------------------------
# Model, optimizer, loss


def build_model(config: TrainConfig, num_classes: int) -> keras.Model:
    """The model a config names, for `num_classes` classes and `image_size` inputs, with the
    builder's own config keys (`config.MODEL_ARGUMENTS`)."""
    arg_scope = dict(weight_decay=config.weight_decay, batch_norm_decay=config.batch_norm_decay)
    extra = {k: getattr(config, k) for k in MODEL_ARGUMENTS.get(config.model, ())
             if getattr(config, k) is not None}
    with dtype_policy_scope(config.dtype):
        return create_model(config.model, num_classes=num_classes,
                            input_shape=(config.image_size, config.image_size, 3),
                            **extra, **arg_scope)


def learning_rate_schedule(config: TrainConfig, steps_per_epoch: int):
    """Keras' own schedules: constant, cosine (with linear warm-up), slim's staircase
    exponential decay (`decay_rate` every `decay_epochs`) or piecewise constant (the learning
    rate times `decay_rate` after each of `boundaries_epochs`, as the ResNet papers' CIFAR runs)."""
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    total = config.epochs * steps_per_epoch
    if config.schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup else config.learning_rate,
            decay_steps=max(total - warmup, 1), warmup_target=config.learning_rate if warmup
            else None, warmup_steps=warmup)
    if warmup:
        raise ValueError(f"warmup_epochs={config.warmup_epochs} needs schedule 'cosine'. "
                         f"Received: schedule={config.schedule!r}")
    if config.schedule == "piecewise":
        boundaries = [int(e * steps_per_epoch) for e in config.boundaries_epochs]
        values = [config.learning_rate * config.decay_rate ** i
                  for i in range(len(boundaries) + 1)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    if config.schedule == "exponential":
        return keras.optimizers.schedules.ExponentialDecay(
            config.learning_rate, decay_steps=max(int(config.decay_epochs * steps_per_epoch), 1),
            decay_rate=config.decay_rate, staircase=True)
    return config.learning_rate


def make_optimizer(config: TrainConfig, steps_per_epoch: int):
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


# --------------------------------------------------------------------------------------------
# Devices


def configure_cpu_devices(count: int):
    """Splits the CPU into `count` logical devices (before TensorFlow starts its runtime)."""
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
    except RuntimeError as error:
        raise ValueError(f"--cpu-devices must be set before TensorFlow starts: {error}") from None


def make_strategy(distribute: str, cpu_devices: int | None = None):
    if distribute not in DISTRIBUTE:
        raise ValueError(f"distribute must be one of {list(DISTRIBUTE)}. "
                         f"Received: distribute={distribute!r}")
    if cpu_devices and distribute != "mirrored":
        raise ValueError("--cpu-devices splits the CPU into replicas for --distribute mirrored. "
                         f"Received: distribute={distribute!r}, cpu_devices={cpu_devices}")
    if cpu_devices:
        configure_cpu_devices(cpu_devices)
    if distribute == "none":
        return tf.distribute.get_strategy()
    if distribute == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("--distribute multiworker needs the TF_CONFIG environment variable "
                             "(cluster and task); see the README")
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices=devices)


# --------------------------------------------------------------------------------------------
# Model dir


def check_model_dir(model_dir: str, config: TrainConfig) -> ModelDir:
    """Reads only: refuses a model dir that is a file, or that was trained with another config
    (everything but `epochs` must match: resuming with another model or data is refused)."""
    paths = ModelDir(model_dir)
    if os.path.exists(model_dir) and not os.path.isdir(model_dir):
        raise ValueError(f"--model-dir {model_dir!r} is a file, not a directory")
    if os.path.isfile(paths.config):
        previous = load_config(paths.config).to_dict()
        current = config.to_dict()
        changed = sorted(k for k in current if k != "epochs" and current[k] != previous.get(k))
        if changed:
            details = ", ".join(f"{k}: {previous.get(k)!r} -> {current[k]!r}" for k in changed)
            raise ValueError(f"The model dir {model_dir!r} was trained with another config "
                             f"({details}); use a new --model-dir to start over")
    return paths


# --------------------------------------------------------------------------------------------
# Training


def train(config: TrainConfig, model_dir: str, distribute: str = "none",
          cpu_devices: int | None = None, verbose: int | None = None) -> dict:
    """Trains as `config` says into `model_dir` and returns the metrics written to metrics.json.

    Everything a run needs (the model dir, the data and its images, the model, a slim
    checkpoint) is checked before anything is written: a failed start leaves the model dir as
    it was. A re-run restores the last committed epoch (`ModelDir.restore`) and trains the
    rest; with nothing left to train it writes nothing and returns the recorded metrics with
    `"nothing_to_do": True`.
    """
    from resnet_tf.data import make_datasets

    strategy = make_strategy(distribute, cpu_devices)
    is_chief = _is_chief(strategy)
    paths = check_model_dir(model_dir, config)
    keras.utils.set_random_seed(config.seed)
    data = make_datasets(config)
    steps = data.steps_per_epoch or int(data.train.cardinality().numpy())
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2

    with strategy.scope():
        model = build_model(config, data.num_classes)
        optimizer = make_optimizer(config, steps)
        metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
        if data.num_classes > 5:
            metrics.append(keras.metrics.TopKCategoricalAccuracy(5, name="top5_accuracy"))
        model.compile(optimizer=optimizer, loss=make_loss(config), metrics=metrics)
        # Every worker restores the chief's committed state (the model dir is shared).
        done = paths.restore(model, reconcile=is_chief)
        if config.slim_checkpoint and not done:
            from resnet_tf.slim_checkpoint import load_slim_checkpoint

            load_slim_checkpoint(model, config.slim_checkpoint, exclude=config.checkpoint_exclude)

    if done >= config.epochs:
        if is_chief and not os.path.isfile(paths.model):  # killed after the last commit
            paths.save_model(model, paths.model)
        return dict(paths.read_metrics(), nothing_to_do=True, epochs_done=done)

    # Checked: now the model dir is written.
    writer = paths if is_chief else paths.worker(_task_name(strategy))
    if is_chief:
        os.makedirs(paths.checkpoints, exist_ok=True)
        save_config(config, paths.config)
        write_text(paths.class_names, "\n".join(data.class_names) + "\n")
    previous_seconds = paths.read_metrics().get("train_seconds", 0.0) if done else 0.0
    start = time.perf_counter()

    def metrics_of(rows):
        return epoch_metrics(rows, strategy, config, previous_seconds,
                             time.perf_counter() - start)

    callbacks = [keras.callbacks.TensorBoard(writer.logs),
                 epoch_end_callback(writer, done, metrics_of)]
    if distribute == "multiworker":
        custom_loop(strategy, model, config, data, steps, done, callbacks)
    else:
        model.fit(data.train, epochs=config.epochs, initial_epoch=done,
                  steps_per_epoch=data.steps_per_epoch, validation_data=data.val,
                  validation_steps=data.validation_steps, callbacks=callbacks,
                  verbose=verbose, shuffle=False)  # the pipeline shuffles
    writer.save_model(model, writer.model)
    result = metrics_of(writer.completed_epochs())
    write_json(result, writer.metrics)
    return result if is_chief else {}


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


def custom_loop(strategy, model, config, data, steps, initial_epoch, callbacks):
    """Trains `model` (compiled, for its optimizer and loss) epoch by epoch with `strategy.run`,
    from `initial_epoch`, calling `callbacks` as `model.fit` would at each epoch's end (the
    same state, log and checkpoints).

    Every worker runs the same steps and saves the same state (workers other than the chief
    under `workers/`, as TensorFlow's multi-worker guide does); the chief's backup is the one a
    re-run resumes from, so the model dir must be on storage all workers share.
    """
    optimizer = model.optimizer
    loss_fn = make_loss(config, reduction="none")
    global_batch = config.batch_size
    top5 = data.num_classes > 5
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    train_ds = strategy.experimental_distribute_dataset(data.train.with_options(options))
    val_ds = (strategy.experimental_distribute_dataset(data.val.with_options(options))
              if data.val is not None else None)

    def counts(logits, labels):
        """(correct, correct in the top 5, examples) of one replica's batch."""
        target = tf.argmax(labels, -1)
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1), target), tf.float32))
        in_top5 = tf.reduce_sum(tf.cast(tf.math.in_top_k(target, logits, min(
            5, data.num_classes)), tf.float32))
        return correct, in_top5, tf.cast(tf.shape(labels)[0], tf.float32)

    def replica_train(images, labels):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            per_example = loss_fn(labels, tf.cast(logits, tf.float32))
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return (loss,) + counts(tf.cast(logits, tf.float32), labels)

    def replica_eval(images, labels):
        logits = tf.cast(model(images, training=False), tf.float32)
        return (tf.reduce_sum(loss_fn(labels, logits)),) + counts(logits, labels)

    def reduce(values):
        return [strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for v in values]

    @tf.function
    def train_step(images, labels):
        return reduce(strategy.run(replica_train, args=(images, labels)))

    @tf.function
    def eval_step(images, labels):
        return reduce(strategy.run(replica_eval, args=(images, labels)))

    # Each replica's batch norm updates its own moving statistics. They are exponential moving
    # averages, linear in the batch statistics, so averaging them over replicas equals averaging
    # every step's update (tf.keras' ON_READ/MEAN semantics); done before each save.
    statistics = list(model.non_trainable_variables)

    @tf.function
    def average_statistics():
        def replica_mean():
            context = tf.distribute.get_replica_context()
            return [context.all_reduce(tf.distribute.ReduceOp.MEAN, tf.identity(v))
                    for v in statistics]

        means = strategy.experimental_local_results(strategy.run(replica_mean))[0]
        for variable, mean in zip(statistics, means):
            variable.assign(mean)

    with strategy.scope():
        optimizer.build(model.trainable_variables)
    callbacks = keras.callbacks.CallbackList(callbacks, model=model)
    callbacks.on_train_begin()
    for epoch in range(initial_epoch, config.epochs):
        began = time.perf_counter()
        totals = [0.0, 0.0, 0.0, 0.0]  # loss sum (per-step mean), correct, in top 5, count
        iterator = iter(train_ds)
        for _ in range(steps):
            totals = [a + float(b) for a, b in zip(totals, train_step(*next(iterator)))]
        logs = {"loss": totals[0] / steps, "accuracy": totals[1] / totals[3]}
        if top5:
            logs["top5_accuracy"] = totals[2] / totals[3]
        if val_ds is not None:
            v = [0.0, 0.0, 0.0, 0.0]
            for images, labels in val_ds:
                v = [a + float(b) for a, b in zip(v, eval_step(images, labels))]
            logs.update(val_loss=v[0] / v[3], val_accuracy=v[1] / v[3])
            if top5:
                logs["val_top5_accuracy"] = v[2] / v[3]
        print(f"Epoch {epoch + 1}/{config.epochs} - {time.perf_counter() - began:.1f}s - " +
              " - ".join(f"{k}: {v:.4f}" for k, v in logs.items()), flush=True)
        if statistics:
            average_statistics()
        # Every worker saves (reading mirrored variables may need all of them); the chief's
        # files are the real ones.
        callbacks.on_epoch_end(epoch, logs)
    callbacks.on_train_end()
