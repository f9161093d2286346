"""A run's optimizer, learning-rate schedule, loss and metrics, from its config (Keras only)."""

from __future__ import annotations

import keras

from resnet_tf.training.config import TrainConfig


# BiT-HyperRule's schedule (Kolesnikov et al., "Big Transfer", section 3.3; BiT's
# `bit_hyperrule.py`): its steps (of batches of 512) by the number of training examples: a
# linear warm-up to the first, the learning rate / 10 at each of the next three, the end at
# the last.
BIT_HYPERRULE_STEPS = ((20_000, (100, 200, 300, 400, 500)),
                       (500_000, (500, 3000, 6000, 9000, 10_000)),
                       (None, (500, 6000, 12_000, 18_000, 20_000)))
BIT_BATCH_SIZE = 512


def bit_hyperrule_steps(train_examples: int) -> tuple:
    """BiT-HyperRule's warm-up end, three decays and length, in steps of 512 examples."""
    return next(steps for below, steps in BIT_HYPERRULE_STEPS
                if below is None or train_examples < below)


def bit_hyperrule_epochs(train_examples: int) -> float:
    """The epochs BiT-HyperRule trains `train_examples` images for: its length in examples."""
    return bit_hyperrule_steps(train_examples)[-1] * BIT_BATCH_SIZE / train_examples


@keras.saving.register_keras_serializable(package="resnet_tf")
class WarmupStaircase(keras.optimizers.schedules.LearningRateSchedule):
    """A linear warm-up from 0 to `learning_rate` over `warmup_steps`, then the rate times
    `decay_rate` once past each of `boundaries` (steps): BiT-HyperRule's shape, step for step
    as BiT's `get_lr`."""

    def __init__(self, learning_rate, warmup_steps, boundaries, decay_rate=0.1):
        self.learning_rate = float(learning_rate)
        self.warmup_steps = int(warmup_steps)
        self.boundaries = [int(b) for b in boundaries]
        self.decay_rate = float(decay_rate)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        decays = sum(keras.ops.cast(step > boundary, "float32") for boundary in self.boundaries)
        rate = self.learning_rate * keras.ops.power(self.decay_rate, decays)
        if self.warmup_steps:
            rate = rate * keras.ops.minimum(step / self.warmup_steps, 1.0)
        return rate

    def get_config(self):
        return {"learning_rate": self.learning_rate, "warmup_steps": self.warmup_steps,
                "boundaries": self.boundaries, "decay_rate": self.decay_rate}


def learning_rate_schedule(config: TrainConfig, steps_per_epoch: int):
    """Keras' own schedules: constant, cosine (with linear warm-up), slim's staircase
    exponential decay (`decay_rate` every `decay_epochs`) or piecewise constant (the learning
    rate times `decay_rate` after each of `boundaries_epochs`, as the ResNet papers' CIFAR runs),
    from `config.peak_learning_rate()`; or "bit_hyperrule": BiT-HyperRule's shape
    (`bit_hyperrule_steps`, by the examples an epoch sees) stretched over the run's
    `epochs`. `steps_per_epoch` is always a known count (`data.make_datasets`)."""
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
        supports = bit_hyperrule_steps(steps_per_epoch * config.batch_size)
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
