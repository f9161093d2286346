"""How a run spreads over devices: the strategy (`--distribute`, `--cpu-devices`, TF_CONFIG),
the replicas' batch norm statistics averaged before every validation and save, and the
multi-worker loop.

`--distribute mirrored` trains with `tf.distribute.MirroredStrategy` (local GPUs, or N logical
CPU devices with `--cpu-devices N`); `--distribute multiworker` with
`tf.distribute.MultiWorkerMirroredStrategy` and `TF_CONFIG`. Keras 3's `model.fit` fails under
the multi-worker strategy (keras-team/keras#20585), so that mode runs `MultiWorkerLoop`, a
`strategy.run` loop with the same effects: per-epoch state, resume, the CSV log and
metrics.json.

TensorFlow only.
"""

from __future__ import annotations

import json
import os
import time

import keras
import tensorflow as tf

from resnet_tf.errors import UserError
from resnet_tf.models.precision import all_layers
from resnet_tf.training.config import DISTRIBUTE, TrainConfig
from resnet_tf.training.optimization import make_loss


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


def is_chief_task(strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type == "chief" or (task_type == "worker" and task_id == 0 and
                                    "chief" not in resolver.cluster_spec().as_dict())


def task_name(strategy) -> str:
    resolver = strategy.cluster_resolver
    return f"{resolver.task_type}_{resolver.task_id}"


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
