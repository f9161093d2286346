"""Runs TF-slim's own ResNet graph (tf_slim.nets) as the reference: the parity tests and
`benchmarks/cpu_vs_slim.py` use it (it needs `tf-slim` and `tf-keras`, from the `dev` extra).

tf_slim 1.1.0 imports `tf_keras.legacy_tf_layers`, which tf-keras 2.21 ships only as
`tf_keras.src.legacy_tf_layers`: registering the latter under the former name makes it import
(see ../shared/REFERENCE.md). The graph runs in `tf.compat.v1` graph mode inside its own
`tf.Graph`, so it coexists with eager Keras in one process.
"""

from __future__ import annotations

import importlib
import sys

import numpy as np
import tensorflow as tf

from resnet_tf.slim.variables import slim_variables


def import_tf_slim():
    if "tf_keras.legacy_tf_layers" not in sys.modules:
        legacy = importlib.import_module("tf_keras.src.legacy_tf_layers")
        sys.modules["tf_keras.legacy_tf_layers"] = legacy
        for sub in ("base", "core", "convolutional", "normalization", "pooling",
                    "variable_scope_shim"):
            sys.modules[f"tf_keras.legacy_tf_layers.{sub}"] = importlib.import_module(
                f"tf_keras.src.legacy_tf_layers.{sub}")
    import tf_slim
    from tf_slim.nets import resnet_utils, resnet_v1, resnet_v2

    return tf_slim, resnet_utils, resnet_v1, resnet_v2


def random_value(name: str, shape, rng: np.random.Generator) -> np.ndarray:
    """A random value for a slim variable, so a swapped or skipped variable cannot go unnoticed."""
    leaf = name.rsplit("/", 1)[-1]
    if leaf in ("moving_variance", "gamma"):
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    if leaf in ("moving_mean", "beta", "biases"):
        return (0.1 * rng.standard_normal(shape)).astype(np.float32)
    if leaf == "weights":
        fan_in = int(np.prod(shape[:-1]))
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    raise ValueError(f"No random value rule for slim variable {name!r}")


def run_slim(family: str, images: np.ndarray, checkpoint_path: str, *, depth=None, blocks=None,
             num_classes=None, is_training=False, global_pool=True, output_stride=None,
             include_root_block=True, scope="resnet", seed=0, legacy_format=False,
             graph_path=None):
    """Builds slim's `resnet_<family>` under `resnet_arg_scope()`, gives every variable a random
    value, saves them as a slim checkpoint at `checkpoint_path` and evaluates the graph.

    Either `depth` (slim's `resnet_v2_50` etc.) or `blocks` (resnet_tf `Block`s, translated to
    slim's) selects the network. `legacy_format` writes the single-file (V1) checkpoint format
    slim's released tarballs hold; `graph_path` also writes the GraphDef (their `eval.graph`).

    Returns:
      (net, end_points, regularization_loss) as numpy values.
    """
    tf_slim, slim_utils, slim_v1, slim_v2 = import_tf_slim()
    module = {"v1": slim_v1, "v2": slim_v2}[family]
    rng = np.random.default_rng(seed)
    graph = tf.Graph()
    with graph.as_default():
        inputs = tf.compat.v1.placeholder(tf.float32, images.shape)
        with tf_slim.arg_scope(slim_utils.resnet_arg_scope()):
            if depth is not None:
                net, points = getattr(module, f"resnet_{family}_{depth}")(
                    inputs, num_classes, is_training=is_training, global_pool=global_pool,
                    output_stride=output_stride, scope=scope)
            else:
                slim_blocks = [slim_utils.Block(b.scope, module.bottleneck, list(b.args))
                               for b in blocks]
                net, points = getattr(module, f"resnet_{family}")(
                    inputs, slim_blocks, num_classes, is_training=is_training,
                    global_pool=global_pool, output_stride=output_stride,
                    include_root_block=include_root_block, scope=scope)
        regularization = tf.compat.v1.losses.get_regularization_loss()
        variables = tf.compat.v1.global_variables()
        saver = tf.compat.v1.train.Saver(variables, write_version=(
            tf.compat.v1.train.SaverDef.V1 if legacy_format else tf.compat.v1.train.SaverDef.V2))
        if graph_path:
            with open(graph_path, "wb") as f:
                f.write(graph.as_graph_def().SerializeToString())
        values = [random_value(v.op.name, v.shape.as_list(), rng) for v in variables]
        placeholders = [tf.compat.v1.placeholder(v.dtype.base_dtype, v.shape) for v in variables]
        assign_all = tf.group(*[v.assign(p) for v, p in zip(variables, placeholders)])
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(assign_all, dict(zip(placeholders, values)))
            saver.save(session, checkpoint_path, write_meta_graph=False)
            net_value, point_values, reg_value = session.run(
                [net, points, regularization], {inputs: images})
    return net_value, point_values, float(reg_value)


def relative_error(actual, expected) -> float:
    """max |actual - expected| / max |expected|: an error relative to the tensor's scale."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    scale = max(float(np.max(np.abs(expected))), 1e-12)
    return float(np.max(np.abs(actual - expected))) / scale


def save_slim_checkpoint(values: dict, path: str):
    """Writes a TF1 name-based checkpoint, as slim's Saver does, with exactly these names."""
    with tf.Graph().as_default():
        variables = [tf.compat.v1.Variable(value, name=name) for name, value in values.items()]
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            tf.compat.v1.train.Saver(variables).save(session, path, write_meta_graph=False)
    return path


def random_slim_values(model, seed=0):
    rng = np.random.default_rng(seed)
    return {name: rng.uniform(0.5, 1.5, tuple(var.shape)).astype(np.float32)
            for name, var in slim_variables(model).items()}


def run_slim_training_checkpoint(images: np.ndarray, checkpoint_path: str, *, blocks,
                                 num_classes, scope="resnet_v2", seed=0):
    """A checkpoint as slim's `train_image_classifier.py` writes it: TF-slim's resnet_v2 graph
    (blocks translated), a `MomentumOptimizer` train op (its `<var>/Momentum` slots),
    `global_step`, and `ExponentialMovingAverage` shadows of the trainable and moving-average
    variables (`--moving_average_decay`). Every variable, slot and shadow gets a random value.

    Returns (logits with the variables, logits with the moving averages) as numpy values.
    """
    tf_slim, slim_utils, _, slim_v2 = import_tf_slim()
    rng = np.random.default_rng(seed)
    graph = tf.Graph()
    with graph.as_default():
        inputs = tf.compat.v1.placeholder(tf.float32, images.shape)
        with tf_slim.arg_scope(slim_utils.resnet_arg_scope()):
            slim_blocks = [slim_utils.Block(b.scope, slim_v2.bottleneck, list(b.args))
                           for b in blocks]
            net, _ = slim_v2.resnet_v2(inputs, slim_blocks, num_classes, is_training=False,
                                       include_root_block=False, scope=scope)
        model_variables = tf.compat.v1.global_variables()
        global_step = tf.compat.v1.train.get_or_create_global_step()
        loss = tf.reduce_mean(tf.square(net))
        tf.compat.v1.train.MomentumOptimizer(0.01, 0.9).minimize(loss, global_step=global_step)
        averages = tf.compat.v1.train.ExponentialMovingAverage(0.9999, global_step)
        averages.apply(tf.compat.v1.trainable_variables() +
                       tf.compat.v1.moving_average_variables())
        variables = tf.compat.v1.global_variables()
        values = {}
        for v in model_variables:
            values[v.op.name] = random_value(v.op.name, v.shape.as_list(), rng)
        for v in variables:
            name = v.op.name
            if name in values:
                continue
            if name.endswith("/ExponentialMovingAverage"):
                base = values[name[: -len("/ExponentialMovingAverage")]]
                values[name] = (base * rng.uniform(0.8, 1.2, base.shape)).astype(np.float32)
            elif v.dtype.base_dtype == tf.int64:
                values[name] = np.int64(12345)
            else:
                values[name] = rng.standard_normal(v.shape.as_list()).astype(np.float32)
        placeholders = [tf.compat.v1.placeholder(v.dtype.base_dtype, v.shape) for v in variables]
        assign_all = tf.group(*[v.assign(p) for v, p in zip(variables, placeholders)])
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(assign_all, dict(zip(placeholders, [values[v.op.name]
                                                            for v in variables])))
            tf.compat.v1.train.Saver(variables).save(session, checkpoint_path,
                                                     write_meta_graph=False)
            plain = session.run(net, {inputs: images})
            swap = {v.op.name: values[v.op.name + "/ExponentialMovingAverage"]
                    for v in model_variables if v.op.name + "/ExponentialMovingAverage" in values}
            session.run(assign_all, dict(zip(placeholders, [swap.get(v.op.name,
                                                                     values[v.op.name])
                                                            for v in variables])))
            averaged = session.run(net, {inputs: images})
    return plain, averaged
