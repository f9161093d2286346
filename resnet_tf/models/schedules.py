"""Learning-rate schedules a run's optimizer carries, Keras only. A `.keras` file of a run
holds its optimizer, so `import resnet_tf` registers these (as it registers the layers), and
`keras.saving.load_model` of the file compiles it again.
"""

from __future__ import annotations

import keras

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
