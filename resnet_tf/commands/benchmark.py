"""Forward and training-step timing: the seed's `time_tensorflow_run`, in TF2 / Keras 3.

The seed times `session.run` of ResNet-152 V2 at batch 32 on 224x224 uniform random images: 10
burn-in steps, then 100 timed, a line every 10 steps and a final `mean +/- sd sec / batch`, with
sd = sqrt(E[d^2] - E[d]^2). `time_run` reproduces that loop and those lines exactly. The step is
a `tf.function` on the TensorFlow backend and a `jax.jit` function on JAX; each step waits for
its result (`.numpy()` / `block_until_ready`) so asynchronous dispatch is never what is timed.
The inputs are drawn once, outside the timed step (the seed drew them inside the graph).
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from resnet_tf.errors import UserError
from resnet_tf.machine import machine_description, versions
from resnet_tf.training.config import DTYPES
from resnet_tf.utils import check_positive_int, write_json
from resnet_tf.weights.catalog import CATALOG

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
        raise UserError(f"num_batches must be >= 1. Received: num_batches={num_batches}")
    if burn_in < 0:
        raise UserError(f"burn_in must be >= 0. Received: burn_in={burn_in}")
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


# Keras 3's keras.applications model of each builder (its published weights' source): the
# plain ResNets only (ResNet-RS is in tf_keras' keras.applications, not Keras 3's).
KERAS_APPLICATIONS = {model: entry.name for model, entry in CATALOG["keras"].items()
                      if model.startswith("resnet_v")}


def _keras_applications_builder(model_name: str):
    import keras

    if model_name not in KERAS_APPLICATIONS:
        raise UserError(f"keras.applications has no counterpart of model={model_name!r}; "
                         f"it has {sorted(KERAS_APPLICATIONS)}")
    return getattr(keras.applications, KERAS_APPLICATIONS[model_name])


def make_step(model, images, labels, mode: str, jit_compile: bool):
    """A synchronous step (forward, or forward + backward + SGD update) on the current backend."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        return (_tensorflow_forward(model, images, jit_compile) if mode == "forward" else
                _tensorflow_train_step(model, images, labels, jit_compile))
    if backend == "jax":
        return (_jax_forward(model, images) if mode == "forward" else
                _jax_train_step(model, images, labels))
    raise UserError(f"resnet-tf bench runs on the tensorflow and jax backends. "
                    f"Received: KERAS_BACKEND={backend!r}")


def _sgd(model):
    import keras

    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    if model.dtype_policy.name == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(model.trainable_variables)
    return optimizer


def _tensorflow_forward(model, images, jit_compile):
    import tensorflow as tf

    images = tf.constant(images)  # made once: a numpy argument is copied on every step

    @tf.function(jit_compile=jit_compile)
    def forward(x):
        return model(x, training=False)

    return lambda: forward(images).numpy()


def _tensorflow_train_step(model, images, labels, jit_compile):
    import keras
    import tensorflow as tf

    images, labels = tf.constant(images), tf.constant(labels)
    optimizer = _sgd(model)
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


def _jax_forward(model, images):
    import jax

    from resnet_tf.export.runtimes import jax_forward

    forward, x = jax_forward(model), jax.device_put(images)
    return lambda: jax.block_until_ready(forward(x))


def _jax_train_step(model, images, labels):
    import jax
    import keras

    optimizer = _sgd(model)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    x, y = jax.device_put(images), jax.device_put(labels)
    state = {"t": [v.value for v in model.trainable_variables],
             "n": [v.value for v in model.non_trainable_variables],
             "o": [v.value for v in optimizer.variables]}

    def loss_and_updates(trainable, non_trainable, x, y):
        logits, non_trainable, losses = model.stateless_call(
            trainable, non_trainable, x, training=True, return_losses=True)
        loss = loss_fn(y, logits.reshape(logits.shape[0], -1))
        if losses:  # weight decay, as in the TensorFlow step
            loss = loss + sum(losses).astype(loss.dtype)
        return optimizer.scale_loss(loss), (loss, non_trainable)

    grad_fn = jax.value_and_grad(loss_and_updates, has_aux=True)

    @jax.jit
    def train_step(trainable, non_trainable, optimizer_vars, x, y):
        (_, (loss, non_trainable)), grads = grad_fn(trainable, non_trainable, x, y)
        trainable, optimizer_vars = optimizer.stateless_apply(optimizer_vars, grads, trainable)
        return loss, trainable, non_trainable, optimizer_vars

    def step():
        loss, state["t"], state["n"], state["o"] = train_step(
            state["t"], state["n"], state["o"], x, y)
        jax.block_until_ready(loss)

    return step


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


def time_interleaved(steps: dict, info: str, num_batches: int = 100, burn_in: int = 10,
                     log=print) -> dict:
    """Times several synchronous steps round by round: each round runs every step once, the
    order rotating from round to round, so the machine's drift affects all alike. Each step
    keeps the seed's report (a line every 10 steps, then `mean +/- sd`). Returns name -> Timing.
    """
    if num_batches < 1:
        raise UserError(f"num_batches must be >= 1. Received: num_batches={num_batches}")
    if burn_in < 0:
        raise UserError(f"burn_in must be >= 0. Received: burn_in={burn_in}")
    if len(steps) == 1:
        (name, step), = steps.items()
        return {name: time_run(step, info, num_batches, burn_in, log)}
    names = list(steps)
    for name in names:
        for _ in range(burn_in):
            steps[name]()
    durations = {name: [] for name in names}
    for i in range(num_batches):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            steps[name]()
            durations[name].append(time.perf_counter() - start)
    timings = {}
    for name in names:
        timing = Timing(f"{info} ({name})", durations[name])
        for i in range(0, num_batches, 10):
            log(seed_step_line(i, timing.durations[i]))
        log(seed_summary_line(timing.info, num_batches, timing.mean, timing.sd))
        timings[name] = timing
    return timings


def parse_runtimes(text: str) -> list:
    """"keras:float32,openvino:int8" -> [("keras", "float32"), ("openvino", "int8")]."""
    from resnet_tf.export.runtimes import RUNTIME_PRECISIONS

    specs = []
    for item in (part.strip() for part in text.split(",")):
        runtime, _, precision = item.partition(":")
        precision = precision or "float32"
        if runtime not in RUNTIME_PRECISIONS or precision not in RUNTIME_PRECISIONS[runtime]:
            known = ", ".join(f"{r}:{p}" for r, ps in RUNTIME_PRECISIONS.items() for p in ps)
            raise UserError(f"--runtimes: unknown entry {item!r}; known: {known}")
        if (runtime, precision) in specs:
            raise UserError(f"--runtimes: {item!r} is given twice")
        specs.append((runtime, precision))
    return specs


KERAS_POLICY = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
RANDOM_CALIBRATION_IMAGES = 32


def runtime_runners(model_name, specs, image_size, num_classes, workdir, log=print):
    """{"runtime:precision": Runner} for one set of random weights: Keras entries are the model
    under each dtype policy (same weights), the others converted from it into `workdir`."""
    from resnet_tf.export.runtimes import keras_runner
    from resnet_tf.models.registry import create_model

    def build(dtype="float32"):
        return create_model(model_name, num_classes=num_classes,
                            input_shape=(image_size, image_size, 3), dtype=dtype)

    model = build()
    runners = {}
    for runtime, precision in specs:
        name = f"{runtime}:{precision}"
        if runtime == "keras":
            if precision == "float32":
                runners[name] = keras_runner(model)
                continue
            copy = build(KERAS_POLICY[precision])
            copy.set_weights(model.get_weights())
            runners[name] = keras_runner(copy, precision)
        else:
            runners[name] = _converted_runner(model, runtime, precision, image_size, workdir,
                                              log)
    return runners


def _converted_runner(model, runtime, precision, image_size, workdir, log):
    from resnet_tf.data.pixels import EvalPreprocessing
    from resnet_tf.export.deploy import export_model
    from resnet_tf.export.formats import FORMATS
    from resnet_tf.export.int8 import Int8Options
    from resnet_tf.export.runtimes import FORMAT_OF_RUNTIME, open_export

    format = FORMAT_OF_RUNTIME[runtime]
    stored = FORMATS[format].STORED_PRECISION.get(precision, precision)
    path = os.path.join(workdir, f"{format}-{stored}")
    if not os.path.isdir(path):
        calibration = None
        if stored == "int8":
            log(f"note: {runtime}:int8 is calibrated on {RANDOM_CALIBRATION_IMAGES} random "
                "images: its speed is real, its accuracy means nothing (export with real "
                "calibration data for that)")
            calibration = np.random.default_rng(1).uniform(
                0, 255, (RANDOM_CALIBRATION_IMAGES, image_size, image_size, 3)).astype(np.float32)
        began = time.perf_counter()
        export_model(model, path, EvalPreprocessing("inception", image_size, 1.0),
                     format=format, precision=stored,
                     quantization=Int8Options(calibration) if stored == "int8" else None)
        log(f"converted to {format} {stored} in {time.perf_counter() - began:.1f} s")
    if stored != precision:
        return FORMATS[format].open_runner(path, precision)
    return open_export(path)[0]


def run_runtimes_benchmark(model_name="resnet_v2_152", runtimes="keras:float32",
                           batch_size=32, image_size=224, num_batches=100, burn_in=10,
                           num_classes=1000, json_path=None, log=print) -> dict:
    """`resnet-tf bench --runtimes`: the forward pass of one model (random weights) through
    each runtime, interleaved round by round, then a table against the first entry."""
    import tempfile

    import keras

    specs = parse_runtimes(runtimes)
    _check_sizes(batch_size, image_size, num_classes)
    pixels = np.random.default_rng(0).uniform(
        0, 255, (batch_size, image_size, image_size, 3)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="resnet-tf-bench-") as workdir:
        runners = runtime_runners(model_name, specs, image_size, num_classes, workdir, log)
        steps = {name: (lambda runner=runner: runner(pixels)) for name, runner in runners.items()}
        timings = time_interleaved(steps, "Forward", num_batches, burn_in, log)
    first = next(iter(timings.values()))
    log(f"{model_name}, batch {batch_size}, {image_size}x{image_size}, median of {num_batches} "
        f"interleaved steps:")
    log(f"{'runtime':<24} {'median s':>10} {'images/s':>10} {'speed-up':>9}")
    results = []
    for (runtime, precision), (name, timing) in zip(specs, timings.items()):
        log(f"{name:<24} {timing.median:>10.4f} {batch_size / timing.median:>10.1f} "
            f"{first.median / timing.median:>8.2f}x")
        results.append(_result(name, timing, batch_size, runtime=runtime, precision=precision))
    report = _report(model_name, batch_size, image_size, num_batches, burn_in, "forward",
                     num_classes, results, runtimes=runtimes,
                     backend=keras.backend.backend())
    if json_path:
        write_json(report, json_path)
    return report


def run_exports_benchmark(exports, batch_size=32, num_batches=100, burn_in=10, json_path=None,
                          log=print) -> dict:
    """`resnet-tf bench --exports`: the forward pass of export dirs (any format, each run by its
    own runtime) on the same random pixels, interleaved round by round, then a table against
    the first: e.g. a fully int8 file beside one with layers kept in float."""
    from resnet_tf.export.runtimes import open_export

    if not exports:
        raise UserError("--exports needs at least one export dir")
    runners = {path: open_export(path)[0] for path in exports}
    sizes = {runner.prep.image_size for runner in runners.values()}
    if len(sizes) != 1:
        raise UserError(f"--exports: the exports take different image sizes {sorted(sizes)}; "
                        "compare exports of one size")
    size = sizes.pop()
    pixels = np.random.default_rng(0).uniform(
        0, 255, (batch_size, size, size, 3)).astype(np.float32)
    steps = {path: (lambda runner=runner: runner(pixels)) for path, runner in runners.items()}
    timings = time_interleaved(steps, "Forward", num_batches, burn_in, log)
    first = next(iter(timings.values()))
    log(f"batch {batch_size}, {size}x{size}, median of {num_batches} interleaved steps:")
    log(f"{'export':<40} {'runtime:precision':<20} {'images/s':>10} {'speed-up':>9}")
    results = []
    for path, timing in timings.items():
        runner = runners[path]
        log(f"{path:<40} {runner.runtime + ':' + runner.precision:<20} "
            f"{batch_size / timing.median:>10.1f} {first.median / timing.median:>8.2f}x")
        results.append(_result(path, timing, batch_size, runtime=runner.runtime,
                               precision=runner.precision))
    report = _report(None, batch_size, size, num_batches, burn_in, "forward", None, results,
                     exports=list(exports))
    if json_path:
        write_json(report, json_path)
    return report


def _check_sizes(batch_size, image_size, num_classes):
    for name, value in (("batch_size", batch_size), ("image_size", image_size),
                        ("num_classes", num_classes)):
        check_positive_int(name, value)


def _result(name, timing, batch_size, **extra):
    return {"name": name, **extra, "median_s": timing.median, "mean_s": timing.mean,
            "sd_s": timing.sd, "images_per_s": batch_size / timing.median,
            "durations": timing.durations}


def _report(model_name, batch_size, image_size, num_batches, burn_in, mode, num_classes,
            results, **extra):
    return {
        "date": datetime.now().isoformat(timespec="seconds"),
        "model": model_name, "batch_size": batch_size, "image_size": image_size,
        "num_batches": num_batches, "burn_in": burn_in, "mode": mode,
        "num_classes": num_classes, **extra,
        "device": device_description(), "machine": machine_description(),
        "versions": versions(), "results": results,
    }


def run_benchmark(model_name="resnet_v2_152", batch_size=32, image_size=224, num_batches=100,
                  burn_in=10, mode="forward", dtype="float32", jit_compile=False,
                  num_classes=1000, compare="none", json_path=None, log=print) -> dict:
    """Builds the model(s), times them and returns (and optionally writes) the report."""
    import keras

    from resnet_tf.models.precision import dtype_policy_scope
    from resnet_tf.models.registry import create_model

    if mode not in MODES:
        raise UserError(f"mode must be one of {MODES}. Received: mode={mode!r}")
    if dtype not in DTYPES:
        raise UserError(f"dtype must be one of {DTYPES}. Received: dtype={dtype!r}")
    if compare not in COMPARE:
        raise UserError(f"compare must be one of {COMPARE}. Received: compare={compare!r}")
    _check_sizes(batch_size, image_size, num_classes)

    theirs_builder = (_keras_applications_builder(model_name)
                      if compare == "keras-applications" else None)

    ours = create_model(model_name, num_classes=num_classes,
                        input_shape=(image_size, image_size, 3), dtype=dtype)
    theirs = None
    if theirs_builder is not None:
        with dtype_policy_scope(dtype):  # keras.applications builders take no dtype=
            theirs = theirs_builder(weights=None, input_shape=(image_size, image_size, 3),
                                    classes=num_classes, classifier_activation=None)

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (batch_size, image_size, image_size, 3)).astype(np.float32)
    labels = rng.integers(0, num_classes, (batch_size,)).astype(np.int32)
    info = "Forward" if mode == "forward" else "Forward-backward"

    steps = {"resnet_tf": make_step(ours, images, labels, mode, jit_compile)}
    if theirs is not None:
        steps["keras.applications"] = make_step(theirs, images, labels, mode, jit_compile)
    timings = time_interleaved(steps, info, num_batches, burn_in, log)
    if theirs is not None:
        ratio = timings["keras.applications"].median / timings["resnet_tf"].median
        log(f"median sec / batch: resnet_tf {timings['resnet_tf'].median:.4f}, "
            f"keras.applications {timings['keras.applications'].median:.4f}; "
            f"resnet_tf is {ratio:.3f}x the speed of keras.applications")

    results = [_result(name, t, batch_size, runtime="keras", precision=dtype)
               for name, t in timings.items()]
    report = _report(model_name, batch_size, image_size, num_batches, burn_in, mode,
                     num_classes, results, dtype=dtype, jit_compile=jit_compile,
                     backend=keras.backend.backend())
    if json_path:
        write_json(report, json_path)
    return report
