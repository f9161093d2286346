"""Forward and training-step timing: the seed's `time_tensorflow_run`, in TF2 / Keras 3.

The seed times `session.run` of ResNet-152 V2 at batch 32 on 224x224 uniform random images: 10
burn-in steps, then 100 timed, a line every 10 steps and a final `mean +/- sd sec / batch`, with
sd = sqrt(E[d^2] - E[d]^2). `time_run` reproduces that loop and those lines exactly. The step is
a `tf.function` on the TensorFlow backend and a `jax.jit` function on JAX; each step waits for
its result (`.numpy()` / `block_until_ready`) so asynchronous dispatch is never what is timed.
The inputs are drawn once, outside the timed step (the seed drew them inside the graph).
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

DTYPES = ("float32", "mixed_bfloat16", "mixed_float16")
MODES = ("forward", "forward-backward")
COMPARE = ("none", "keras-applications")


@dataclass
class Timing:
    """The durations of one `time_run` and the seed's statistics over them."""

    info: str
    durations: list = field(default_factory=list)  # the timed steps only, in seconds

    @property
    def mean(self) -> float:
        return sum(self.durations) / len(self.durations)

    @property
    def sd(self) -> float:
        """The seed's formula: sqrt(E[d^2] - E[d]^2) (population sd; clamped at 0 for rounding)."""
        n = len(self.durations)
        mean = self.mean
        variance = sum(d * d for d in self.durations) / n - mean * mean
        return math.sqrt(max(variance, 0.0))

    @property
    def median(self) -> float:
        return statistics.median(self.durations)


def seed_step_line(step: int, duration: float, now=None) -> str:
    return "%s: step %d, duration = %.3f" % (now or datetime.now(), step, duration)


def seed_summary_line(info: str, num_batches: int, mean: float, sd: float, now=None) -> str:
    return "%s: %s across %d steps, %.3f +/- %.3f sec / batch" % (
        now or datetime.now(), info, num_batches, mean, sd)


def time_run(step, info: str, num_batches: int = 100, burn_in: int = 10, log=print) -> Timing:
    """The seed's `time_tensorflow_run(session, target, info_string)` for any synchronous `step`.

    Like the seed, a step line is printed when the overall step index (burn-in included) is a
    multiple of 10, numbered from the first timed step.
    """
    if num_batches < 1:
        raise ValueError(f"num_batches must be >= 1. Received: num_batches={num_batches}")
    if burn_in < 0:
        raise ValueError(f"burn_in must be >= 0. Received: burn_in={burn_in}")
    timing = Timing(info)
    for i in range(num_batches + burn_in):
        start = time.perf_counter()
        step()
        duration = time.perf_counter() - start
        if i >= burn_in:
            if not i % 10:
                log(seed_step_line(i - burn_in, duration))
            timing.durations.append(duration)
    log(seed_summary_line(info, num_batches, timing.mean, timing.sd))
    return timing


KERAS_APPLICATIONS = {"resnet_v2_50": "ResNet50V2", "resnet_v2_101": "ResNet101V2",
                      "resnet_v2_152": "ResNet152V2", "resnet_v1_50": "ResNet50",
                      "resnet_v1_101": "ResNet101", "resnet_v1_152": "ResNet152"}


def _keras_applications_builder(model_name: str):
    import keras

    if model_name not in KERAS_APPLICATIONS:
        raise ValueError(f"keras.applications has no counterpart of model={model_name!r}; "
                         f"it has {sorted(KERAS_APPLICATIONS)}")
    return getattr(keras.applications, KERAS_APPLICATIONS[model_name])


def make_step(model, images, labels, mode: str, jit_compile: bool):
    """A synchronous step (forward, or forward + backward + SGD update) on the current backend."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        # Tensors made once: a numpy argument would be copied into a tensor on every step.
        images = tf.constant(images)
        labels = None if labels is None else tf.constant(labels)
        if mode == "forward":
            @tf.function(jit_compile=jit_compile)
            def forward(x):
                return model(x, training=False)

            return lambda: forward(images).numpy()

        optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
        if model.dtype_policy.name == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

        @tf.function(jit_compile=jit_compile)
        def train_step(x, y):
            with tf.GradientTape() as tape:
                logits = model(x, training=True)
                loss = loss_fn(y, keras.ops.reshape(logits, (keras.ops.shape(logits)[0], -1)))
                if model.losses:
                    loss = loss + keras.ops.cast(keras.ops.sum(model.losses), loss.dtype)
                scaled = optimizer.scale_loss(loss)
            grads = tape.gradient(scaled, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        return lambda: train_step(images, labels).numpy()

    if backend == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        x = jax.device_put(images)
        if mode == "forward":
            @jax.jit
            def forward(trainable, non_trainable, x):
                logits, _ = model.stateless_call(trainable, non_trainable, x, training=False)
                return logits

            return lambda: jax.block_until_ready(forward(trainable, non_trainable, x))

        optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
        optimizer.build(model.trainable_variables)
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        y = jax.device_put(labels)
        state = {"t": trainable, "n": non_trainable,
                 "o": [v.value for v in optimizer.variables]}

        def loss_and_updates(trainable, non_trainable, x, y):
            logits, non_trainable, losses = model.stateless_call(
                trainable, non_trainable, x, training=True, return_losses=True)
            logits = logits.reshape(logits.shape[0], -1)
            loss = loss_fn(y, logits)
            if losses:  # weight decay, as in the TensorFlow step
                loss = loss + sum(losses).astype(loss.dtype)
            return loss, non_trainable

        grad_fn = jax.value_and_grad(loss_and_updates, has_aux=True)

        @jax.jit
        def train_step(trainable, non_trainable, optimizer_vars, x, y):
            (loss, non_trainable), grads = grad_fn(trainable, non_trainable, x, y)
            trainable, optimizer_vars = optimizer.stateless_apply(optimizer_vars, grads, trainable)
            return loss, trainable, non_trainable, optimizer_vars

        def step():
            loss, state["t"], state["n"], state["o"] = train_step(
                state["t"], state["n"], state["o"], x, y)
            jax.block_until_ready(loss)

        return step

    raise ValueError(f"resnet-tf bench runs on the tensorflow and jax backends. "
                     f"Received: KERAS_BACKEND={backend!r}")


def device_description() -> str:
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        return f"{device.platform}:{getattr(device, 'device_kind', device)}"
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            return f"gpu:{details.get('device_name', gpus[0].name)}"
    return f"cpu:{platform.processor() or platform.machine()}"


def versions() -> dict:
    import keras

    out = {"python": platform.python_version(), "keras": keras.__version__,
           "numpy": np.__version__}
    for name in ("tensorflow", "jax"):
        module = sys.modules.get(name)
        if module is not None:
            out[name] = module.__version__
    return out


def run_benchmark(model_name="resnet_v2_152", batch_size=32, image_size=224, num_batches=100,
                  burn_in=10, mode="forward", dtype="float32", jit_compile=False,
                  num_classes=1000, compare="none", json_path=None, log=print) -> dict:
    """Builds the model(s), times them and returns (and optionally writes) the report."""
    import keras

    from resnet_tf.registry import create_model
    from resnet_tf.resnet_utils import dtype_policy_scope

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}. Received: mode={mode!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}. Received: dtype={dtype!r}")
    if compare not in COMPARE:
        raise ValueError(f"compare must be one of {COMPARE}. Received: compare={compare!r}")
    for name, value in (("batch_size", batch_size), ("image_size", image_size),
                        ("num_classes", num_classes)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1. Received: {name}={value}")

    theirs_builder = (_keras_applications_builder(model_name)
                      if compare == "keras-applications" else None)

    with dtype_policy_scope(dtype):
        ours = create_model(model_name, num_classes=num_classes,
                            input_shape=(image_size, image_size, 3))
        theirs = None
        if theirs_builder is not None:
            theirs = theirs_builder(weights=None, input_shape=(image_size, image_size, 3),
                                    classes=num_classes, classifier_activation=None)

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (batch_size, image_size, image_size, 3)).astype(np.float32)
    labels = rng.integers(0, num_classes, (batch_size,)).astype(np.int32)
    info = "Forward" if mode == "forward" else "Forward-backward"

    steps = {"resnet_tf": make_step(ours, images, labels, mode, jit_compile)}
    if theirs is not None:
        steps["keras.applications"] = make_step(theirs, images, labels, mode, jit_compile)

    timings = {}
    if len(steps) == 1:
        timings["resnet_tf"] = time_run(steps["resnet_tf"], info, num_batches, burn_in, log)
    else:
        # Interleave the two models step by step (alternating which goes first) so that the
        # machine's drift affects both alike; each keeps the seed's report.
        order = list(steps)
        per_model = {name: [] for name in order}
        for name in order:
            for _ in range(burn_in):
                steps[name]()
        for i in range(num_batches):
            for name in (order if i % 2 == 0 else order[::-1]):
                start = time.perf_counter()
                steps[name]()
                per_model[name].append(time.perf_counter() - start)
        for name in order:
            timing = Timing(f"{info} ({name})", per_model[name])
            for i in range(0, num_batches, 10):
                log(seed_step_line(i, timing.durations[i]))
            log(seed_summary_line(timing.info, num_batches, timing.mean, timing.sd))
            timings[name] = timing
        ratio = timings["keras.applications"].median / timings["resnet_tf"].median
        log(f"median sec / batch: resnet_tf {timings['resnet_tf'].median:.4f}, "
            f"keras.applications {timings['keras.applications'].median:.4f}; "
            f"resnet_tf is {ratio:.3f}x the speed of keras.applications")

    report = {
        "date": datetime.now().isoformat(timespec="seconds"),
        "model": model_name, "batch_size": batch_size, "image_size": image_size,
        "num_batches": num_batches, "burn_in": burn_in, "mode": mode, "dtype": dtype,
        "jit_compile": jit_compile, "num_classes": num_classes,
        "backend": keras.backend.backend(), "device": device_description(),
        "versions": versions(),
        "results": {
            name: {
                "mean_s": t.mean, "sd_s": t.sd, "median_s": t.median,
                "images_per_s": batch_size / t.median, "durations_s": t.durations,
            }
            for name, t in timings.items()
        },
    }
    if json_path:
        write_json(report, json_path)
    return report


def write_json(report: dict, path) -> None:
    """Writes `report` to `path` whole or not at all: an earlier report survives a failure."""
    temporary = f"{path}.tmp"
    with open(temporary, "w") as handle:
        json.dump(report, handle, indent=2)
    os.replace(temporary, path)
