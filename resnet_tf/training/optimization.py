"""A run's optimizer, learning-rate schedule, loss and metrics, from its config (Keras only)."""

from __future__ import annotations

import keras

from resnet_tf.models.schedules import WarmupStaircase, bit_hyperrule_steps
from resnet_tf.training.config import TrainConfig


def learning_rate_schedule(config: TrainConfig, steps_per_epoch: int,
                           train_examples: int | None = None):
    """Keras' own schedules: constant, cosine (with linear warm-up), slim's staircase
    exponential decay (`decay_rate` every `decay_epochs`) or piecewise constant (the learning
    rate times `decay_rate` after each of `boundaries_epochs`, as the ResNet papers' CIFAR runs),
    from `config.peak_learning_rate()`; or "bit_hyperrule": BiT-HyperRule's shape
    (`bit_hyperrule_steps`, by the run's `train_examples`, else the examples an epoch sees)
    stretched over the run's `epochs`. `steps_per_epoch` is always a known count
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
    if config.schedule == "bit_hyperrule":
        supports = bit_hyperrule_steps(train_examples or steps_per_epoch * config.batch_size)
        at = [int(round(total * s / supports[-1])) for s in supports]
        return WarmupStaircase(rate, at[0], at[1:4], 0.1)
    if config.schedule == "piecewise":
        boundaries = [int(round(e * steps_per_epoch)) for e in config.boundaries_epochs]
        values = [rate * config.decay_rate ** i for i in range(len(boundaries) + 1)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    if config.schedule == "exponential":
        return keras.optimizers.schedules.ExponentialDecay(
            rate, decay_steps=max(int(config.decay_epochs * steps_per_epoch), 1),
            decay_rate=config.decay_rate, staircase=True)
    return rate


def make_optimizer(config: TrainConfig, steps_per_epoch: int, train_examples: int | None = None):
    """The config's optimizer (`model.compile` wraps it in a `LossScaleOptimizer` under
    mixed_float16: the model carries its dtype policy)."""
    lr = learning_rate_schedule(config, steps_per_epoch, train_examples)
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
