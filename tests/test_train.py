"""resnet-tf train: model.fit from configs, resume, metrics.json, devices, precision, fine-tuning."""

import json
import os
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import copy_run, resnet_tf_command
from image_data import write_image_folder

from resnet_tf.models.precision import all_layers
from resnet_tf.training.config import config_from_dict
from resnet_tf.training.trainer import ModelDir, build_model, train

ROOT = os.path.join(os.path.dirname(__file__), os.pardir)
QUICKSTART = os.path.join(ROOT, "configs", "quickstart.yaml")
TINY_MODEL = dict(model="resnet_v2_stack", units=[1, 1], base_depth=8, include_root_block=False,
                  image_size=16, augment=False, batch_norm_decay=0.9)


def tiny_config(folder, **overrides):
    values = dict(TINY_MODEL, dataset="folder", train_data=folder, validation_split=0.25,
                  batch_size=3, epochs=1, optimizer="adam", learning_rate=1e-3)
    return config_from_dict(dict(values, **overrides))


def test_fit_writes_metrics_and_resumes(tmp_path):
    folder = write_image_folder(tmp_path / "images")
    model_dir = str(tmp_path / "run")
    metrics = train(tiny_config(folder), model_dir, verbose=0)
    assert 0.0 <= metrics["val_accuracy"] <= 1.0 and np.isfinite(metrics["val_loss"])
    assert metrics["train_seconds"] > 0 and metrics["history"][-1]["val_loss"] == \
        metrics["val_loss"]
    assert metrics["epochs"] == 1 and metrics["replicas"] == 1
    paths = ModelDir(model_dir)
    for path in (paths.model, paths.last, paths.best, paths.csv, paths.config,
                 paths.class_names):
        assert os.path.isfile(path), path
    assert os.listdir(paths.logs) and os.listdir(paths.backup)
    with open(paths.metrics) as f:
        assert json.load(f)["val_accuracy"] == metrics["val_accuracy"]
    # A larger --epochs continues: one more epoch, not two.
    metrics = train(tiny_config(folder, epochs=2), model_dir, verbose=0)
    assert metrics["epochs"] == 2 and [r["epoch"] for r in paths.completed_epochs()] == [0, 1]
    # The same epochs again: nothing left to do.
    assert train(tiny_config(folder, epochs=2), model_dir, verbose=0)["epochs"] == 2


def test_resume_with_another_config_is_refused(tmp_path):
    folder = write_image_folder(tmp_path / "images")
    train(tiny_config(folder), str(tmp_path / "run"), verbose=0)
    with pytest.raises(ValueError, match=r"another config \(base_depth: 8 -> 16\)"):
        train(tiny_config(folder, base_depth=16), str(tmp_path / "run"), verbose=0)


@pytest.mark.parametrize("dtype", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_trains(tmp_path, dtype):
    folder = write_image_folder(tmp_path / "images")
    metrics = train(tiny_config(folder, dtype=dtype), str(tmp_path / "run"), verbose=0)
    assert np.isfinite(metrics["loss"]) and np.isfinite(metrics["val_loss"])
    model = keras.saving.load_model(ModelDir(str(tmp_path / "run")).model, compile=False)
    assert model.layers[-2].dtype_policy.name == dtype
    assert all(w.dtype == "float32" for w in model.weights)


def test_finetune_starts_from_a_slim_checkpoint(tmp_path):
    from slim_reference import random_slim_values, save_slim_checkpoint

    from resnet_tf import slim_variables

    folder = write_image_folder(tmp_path / "images")
    donor = build_model(tiny_config(folder), num_classes=1001)
    values = {k: v * 0.1 for k, v in random_slim_values(donor).items()}
    checkpoint = save_slim_checkpoint(values, str(tmp_path / "donor.ckpt"))
    config = tiny_config(folder, slim_checkpoint=checkpoint, checkpoint_exclude=["logits"],
                         optimizer="sgd", learning_rate=1e-9, momentum=0.0)
    train(config, str(tmp_path / "run"), verbose=0)
    model = keras.saving.load_model(ModelDir(str(tmp_path / "run")).model, compile=False)
    tuned = slim_variables(model)
    assert tuned["resnet_v2/logits/weights"].shape[-1] == 3  # a new head for three classes
    name = "resnet_v2/block1/unit_1/bottleneck_v2/conv1/weights"
    np.testing.assert_allclose(tuned[name], values[name], rtol=1e-5)
    # A mismatched checkpoint (not excluding the 1001-class head) is refused up front.
    with pytest.raises(ValueError, match="logits"):
        train(tiny_config(folder, slim_checkpoint=checkpoint), str(tmp_path / "run2"), verbose=0)


@pytest.mark.large
def test_cli_errors_are_clear(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: digits\nlearning_rat: 0.1\n")
    result = resnet_tf_command("train", "--config", str(bad), "--model-dir", str(tmp_path / "run"))
    assert result.returncode == 2 and "unknown key(s) ['learning_rat']" in result.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    cfg = tmp_path / "folder.yaml"
    cfg.write_text(f"dataset: folder\ntrain_data: {empty}\n")
    result = resnet_tf_command("train", "--config", str(cfg), "--model-dir", str(tmp_path / "run"))
    assert result.returncode == 2 and "has no class sub-folders" in result.stderr
    result = resnet_tf_command("train", "--config", QUICKSTART, "--model-dir",
                               str(tmp_path / "run"), "--cpu-devices", "2")
    assert result.returncode == 2 and "--cpu-devices" in result.stderr


@pytest.mark.large
def test_readme_quickstart_reaches_90_percent_and_resumes_one_epoch(quickstart_run, tmp_path):
    """The session's quickstart (trained by `resnet-tf train` as the README says), then a copy
    of it resumed for one more epoch."""
    with open(os.path.join(quickstart_run, "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["val_accuracy"] >= 0.90 and metrics["epochs"] == 8
    model_dir = copy_run(quickstart_run, tmp_path / "quickstart")
    result = resnet_tf_command("train", "--config", QUICKSTART, "--model-dir", model_dir,
                               "--epochs", "9")
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "Epoch 9/9" in output and "Epoch 8/9" not in output and "Epoch 1/9" not in output
    assert f"resuming at epoch 9 of 9 from the epoch 8 committed in {model_dir}" in output
    with open(os.path.join(model_dir, "metrics.json")) as f:
        resumed = json.load(f)
    assert resumed["epochs"] == 9 and resumed["train_seconds"] > metrics["train_seconds"]


@pytest.mark.large
def test_mirrored_strategy_on_two_cpu_devices(tmp_path):
    result = resnet_tf_command("train", "--config", QUICKSTART, "--model-dir",
                               str(tmp_path / "run"), "--epochs", "1", "--distribute", "mirrored",
                               "--cpu-devices", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "run" / "metrics.json") as f:
        assert json.load(f)["replicas"] == 2


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two_workers(model_dir, epochs):
    """The quickstart on two MultiWorkerMirroredStrategy workers on 127.0.0.1."""
    ports = [free_port(), free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    workers = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}}))
        workers.append(subprocess.Popen(
            [sys.executable, "-m", "resnet_tf_cli", "train", "--config", QUICKSTART,
             "--model-dir", model_dir, "--epochs", str(epochs), "--distribute", "multiworker"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs[0][-3000:] + outputs[1][-3000:]
    return outputs


@pytest.mark.large
def test_multiworker_two_processes_end_with_identical_weights(tmp_path):
    model_dir = str(tmp_path / "run")
    outputs = run_two_workers(model_dir, epochs=1)
    with open(os.path.join(model_dir, "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["replicas"] == 2 and metrics["epochs"] == 1 and metrics["val_accuracy"] > 0.5
    chief = keras.saving.load_model(os.path.join(model_dir, "model.keras"), compile=False)
    worker = keras.saving.load_model(
        os.path.join(model_dir, "workers", "worker_1", "model.keras"), compile=False)
    for a, b in zip(chief.weights, worker.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)
    assert "Epoch 1/1" in outputs[0]
    # A larger --epochs resumes from the chief's backup: only the added epoch runs.
    outputs = run_two_workers(model_dir, epochs=2)
    assert "Epoch 2/2" in outputs[0] and "Epoch 1/2" not in outputs[0]
    with open(os.path.join(model_dir, "metrics.json")) as f:
        assert json.load(f)["epochs"] == 2


def test_cifar_ablation_model_trains_from_a_config(tmp_path):
    folder = write_image_folder(tmp_path / "images")
    config = config_from_dict(dict(
        model="cifar_resnet_ablation", depth=8, shortcut_type="exclusive_gating",
        order="full_preactivation", dataset="folder", train_data=folder, validation_split=0.25,
        preprocessing="cifar", image_size=16, batch_size=3, epochs=1, schedule="piecewise",
        boundaries_epochs=[0.5], decay_rate=0.1, learning_rate=0.01))
    metrics = train(config, str(tmp_path / "run"), verbose=0)
    assert metrics["epochs"] == 1 and np.isfinite(metrics["val_loss"])


def test_every_ablation_config_builds(tmp_path):
    from resnet_tf.training.config import load_config

    configs = sorted(f for f in os.listdir(os.path.join(ROOT, "configs"))
                     if f.startswith("cifar10_ablation_"))
    assert len(configs) == 10
    for name in configs:
        config = load_config(os.path.join(ROOT, "configs", name), depth=8)
        model = build_model(config, num_classes=10)
        units = [layer for layer in model.layers if hasattr(layer, "shortcut_type")]
        assert {(u.shortcut_type, u.order) for u in units} == {
            (config.shortcut_type, config.order)}, name


# --------------------------------------------------------------------------------------------
# Users' own data: what a run records, and nothing silently wrong


def write_yaml(path, **values):
    path.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in values.items()))
    return str(path)


TINY_YAML = dict(model="resnet_v2_stack", units=[1, 1], base_depth=8, include_root_block=False,
                 image_size=16, augment=False, batch_norm_decay=0.9, batch_size=8,
                 optimizer="adam", learning_rate=0.003)


@pytest.mark.large
def test_tfrecords_without_train_examples_learn_as_with_them(tmp_path):
    """The records are counted once (and recorded); a schedule is never built from an unknown
    length: a cosine run without train_examples learns as well as one with them."""
    from image_data import write_colour_tfrecords

    write_colour_tfrecords(tmp_path / "train-00000", 400, num_classes=5)
    write_colour_tfrecords(tmp_path / "val-00000", 100, num_classes=5, seed=1)
    common = dict(TINY_YAML, dataset="tfrecord", train_data=str(tmp_path / "train-*"),
                  val_data=str(tmp_path / "val-*"), num_classes=5, epochs=4, schedule="cosine")
    counted = resnet_tf_command("train", "--config", write_yaml(tmp_path / "a.yaml", **common),
                                "--model-dir", str(tmp_path / "counted"))
    assert counted.returncode == 0, counted.stderr[-3000:]
    assert "counting the records of 1 files once" in counted.stdout
    config = write_yaml(tmp_path / "b.yaml", train_examples=400, val_examples=100, **common)
    given = resnet_tf_command("train", "--config", config, "--model-dir", str(tmp_path / "given"))
    assert given.returncode == 0, given.stderr[-3000:]
    results = [json.load(open(tmp_path / run / "metrics.json")) for run in ("counted", "given")]
    assert results[0]["val_accuracy"] >= 0.9 and results[1]["val_accuracy"] >= 0.9
    with open(tmp_path / "counted" / "data.json") as f:
        record = json.load(f)
    assert record["counts"] == {"train": 400, "val": 100}
    assert record["tfrecords"]["train"]["labels"] == [0, 4]


def test_tfrecord_labels_outside_num_classes_are_refused_before_anything(tmp_path):
    from image_data import write_colour_tfrecords

    write_colour_tfrecords(tmp_path / "train-00000", 20, num_classes=5, label_base=1)  # 1..5
    config = write_yaml(tmp_path / "c.yaml", **dict(TINY_YAML, dataset="tfrecord", epochs=1,
                                                     train_data=str(tmp_path / "train-*"),
                                                     num_classes=5))
    result = resnet_tf_command("train", "--config", config, "--model-dir", str(tmp_path / "run"))
    assert result.returncode == 2
    assert "labels 1..5 do not fit num_classes=5" in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.large
def test_the_validation_split_is_the_one_the_run_recorded(tmp_path):
    """Images added to the folder later are not part of the run: evaluate, resume and export
    see the split the run made."""
    from image_data import write_digits_folder

    folder = write_digits_folder(tmp_path / "digits", per_class=12)
    config = write_yaml(tmp_path / "c.yaml", **dict(TINY_YAML, dataset="folder",
                                                     train_data=folder, validation_split=0.25,
                                                     epochs=2))
    run = str(tmp_path / "run")
    assert resnet_tf_command("train", "--config", config, "--model-dir", run).returncode == 0
    before = resnet_tf_command("evaluate", "--model-dir", run, "--json", str(tmp_path / "a.json"))
    assert before.returncode == 0, before.stderr[-3000:]
    recorded = open(os.path.join(run, "files", "val.txt")).read()
    write_digits_folder(tmp_path / "digits", per_class=14)  # two more images per class
    (tmp_path / "digits" / "3" / "extra.png").write_bytes(
        open(os.path.join(folder, "3", "0.png"), "rb").read())
    after = resnet_tf_command("evaluate", "--model-dir", run, "--json", str(tmp_path / "b.json"))
    assert after.returncode == 0, after.stderr[-3000:]
    a, b = (json.load(open(tmp_path / f"{x}.json")) for x in "ab")
    assert (a["count"], a["top1"]) == (b["count"], b["top1"]) == (30, a["top1"])
    resumed = resnet_tf_command("train", "--config", config, "--model-dir", run, "--epochs", "3")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert open(os.path.join(run, "files", "val.txt")).read() == recorded


@pytest.mark.large
def test_nested_folders_and_webp_are_used_and_counted(tmp_path):
    from image_data import write_digits_folder

    folder = write_digits_folder(tmp_path / "digits", per_class=10, fmt="webp", nested_every=3)
    (tmp_path / "digits" / "0" / "notes.txt").write_text("not an image")
    config = write_yaml(tmp_path / "c.yaml", **dict(TINY_YAML, dataset="folder",
                                                     train_data=folder, epochs=1))
    result = resnet_tf_command("train", "--config", config, "--model-dir", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (f"train_data {folder}: 100 images in 10 classes (40 in nested folders; 1 other "
            "files left out") in result.stdout
    assert "folder: 100 training images, no validation images, 10 classes" in result.stdout


@pytest.mark.large
def test_a_run_started_in_one_directory_resumes_evaluates_and_exports_from_another(tmp_path):
    from image_data import write_digits_folder

    project = tmp_path / "project"
    write_digits_folder(project / "data" / "digits", per_class=8)
    write_yaml(project / "c.yaml", **dict(TINY_YAML, dataset="folder", epochs=1,
                                          train_data="data/digits", validation_split=0.25))
    result = resnet_tf_command("train", "--config", "c.yaml", "--model-dir", "runs/a", cwd=project)
    assert result.returncode == 0, result.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = str(project / "runs" / "a")
    for args in (["train", "--config", str(project / "c.yaml"), "--model-dir", run,
                  "--epochs", "2"],
                 ["evaluate", "--model-dir", run],
                 ["export", "--model-dir", run, "--output", "e", "--format", "tflite",
                  "--precision", "int8", "--max-accuracy-drop", "0.5"]):
        result = resnet_tf_command(*args, cwd=elsewhere)
        assert result.returncode == 0, (args, result.stderr[-3000:])
    with open(os.path.join(run, "config.yaml")) as f:
        assert f"train_data: {project / 'data' / 'digits'}" in f.read()


def test_a_replica_split_that_cannot_work_is_refused_before_anything(tmp_path):
    result = resnet_tf_command("train", "--config", QUICKSTART, "--model-dir",
                               str(tmp_path / "run"), "--distribute", "mirrored", "--cpu-devices",
                               "3")
    assert result.returncode == 2
    assert "batch_size=32 does not split evenly over 3 replicas" in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.large
def test_mirrored_replicas_with_a_partial_last_batch(tmp_path):
    config = write_yaml(tmp_path / "c.yaml", dataset="digits", image_size=16, augment=False,
                        model="resnet_v2_stack", units=[1], base_depth=8,
                        include_root_block=False, batch_size=30, epochs=1, optimizer="adam",
                        learning_rate=0.002)
    result = resnet_tf_command("train", "--config", config, "--model-dir", str(tmp_path / "run"),
                               "--distribute", "mirrored", "--cpu-devices", "3")
    assert result.returncode == 0, result.stderr[-3000:]  # 359 = 11 x 30 + 29
    assert json.load(open(tmp_path / "run" / "metrics.json"))["replicas"] == 3


# --------------------------------------------------------------------------------------------
# Mixed precision, the evaluation recipe, resume settings


LOAD_AND_LIST_POLICIES = r"""
import json, sys
import keras, resnet_tf
from resnet_tf.models.precision import all_layers
model = keras.saving.load_model(sys.argv[1], compile=False)
print(json.dumps({"global": keras.config.dtype_policy().name,
                  "policies": [[layer.name, layer.dtype_policy.name]
                               for layer in all_layers(model) if layer is not model]}))
"""


@pytest.mark.large
@pytest.mark.parametrize("dtype", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_quickstart_trains_resumes_evaluates_exports(tmp_path, dtype):
    """The quickstart's 10 classes (a top-5 metric) under a mixed policy, through the command:
    train, resume without --dtype (the run keeps its own), evaluate, export every format; the
    .keras holds the policy in every layer; the SavedModel computes what the TFLite float32
    file computes."""
    run = str(tmp_path / "run")
    first = resnet_tf_command("train", "--config", "quickstart", "--model-dir", run, "--dtype",
                              dtype, "--epochs", "1")
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = resnet_tf_command("train", "--config", "quickstart", "--model-dir", run, "--epochs",
                                "2")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Epoch 2/2" in resumed.stdout
    metrics = json.load(open(os.path.join(run, "metrics.json")))
    assert metrics["dtype"] == dtype and metrics["epochs"] == 2
    assert "top5_accuracy" in metrics["history"][-1]
    evaluated = resnet_tf_command("evaluate", "--model-dir", run, "--json",
                                  str(tmp_path / "e.json"))
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.load(open(tmp_path / "e.json"))["top1"] == pytest.approx(
        metrics["val_accuracy"], abs=1e-6)
    loaded = subprocess.run([sys.executable, "-c", LOAD_AND_LIST_POLICIES,
                             os.path.join(run, "model.keras")], capture_output=True, text=True,
                            timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    policies = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert policies["global"] == "float32"
    # Every layer computes under the run's policy, the sublayers of the units included; the
    # one exception is the last layer, which casts the outputs to float32 (Keras' guidance).
    layers = [(name, policy) for name, policy in policies["policies"]
              if name not in ("images", "spatial_squeeze")]
    # 3 units, each with preact, conv1-3, the batch norms of conv1-2 and a shortcut; postnorm,
    # its ReLU, pool5 and logits
    assert len(layers) == 3 * 8 + 4 and {policy for _, policy in layers} == {dtype}, policies
    assert dict(policies["policies"])["spatial_squeeze"] == "float32"
    for fmt, precision in (("saved_model", "float32"), ("tflite", "float32"),
                           ("onnx", "float32"), ("openvino", "float16"), ("tflite", "int8")):
        exported = resnet_tf_command("export", "--model-dir", run, "--output",
                                     str(tmp_path / f"{fmt}-{precision}"), "--format", fmt,
                                     "--precision", precision)
        assert exported.returncode == 0, (fmt, exported.stderr[-3000:])
    from resnet_tf.data import preprocessing
    from resnet_tf.data.datasets import digits_arrays
    from resnet_tf.data.pixels import EvalPreprocessing
    from resnet_tf.export.runtimes import open_export

    x_val = digits_arrays(0.2, 0)[1][0][:64]
    saved, _, _ = open_export(str(tmp_path / "saved_model-float32"))
    lite, _, _ = open_export(str(tmp_path / "tflite-float32"))
    pixels = preprocessing.prepare_pixels(x_val, EvalPreprocessing("inception", 16, 1.0)).numpy()
    np.testing.assert_allclose(saved(x_val.astype(np.float32)), lite(pixels), atol=1e-4)


@pytest.mark.large
def test_a_cifar_preprocessing_run_is_evaluated_and_exported_as_it_was_validated(tmp_path):
    """`preprocessing: cifar` validates on whole images (no crop): evaluate --model-dir, and a
    TFLite export run by LiteRT, give training's own val_accuracy."""
    from resnet_tf.data.datasets import digits_arrays

    config = write_yaml(tmp_path / "c.yaml", dataset="digits", image_size=32,
                        preprocessing="cifar", model="cifar_resnet_v2", depth=11,
                        unit="bottleneck", batch_size=32, epochs=2, optimizer="adam",
                        learning_rate=0.002, central_fraction=0.875)
    run = str(tmp_path / "run")
    assert resnet_tf_command("train", "--config", config, "--model-dir", run).returncode == 0
    val_accuracy = json.load(open(os.path.join(run, "metrics.json")))["val_accuracy"]
    evaluated = resnet_tf_command("evaluate", "--model-dir", run, "--json",
                                  str(tmp_path / "e.json"))
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.load(open(tmp_path / "e.json"))["top1"] == pytest.approx(val_accuracy, abs=1e-6)
    exported = resnet_tf_command("export", "--model-dir", run, "--output", str(tmp_path / "lite"),
                                 "--format", "tflite")
    assert exported.returncode == 0, exported.stderr[-3000:]
    info = json.load(open(tmp_path / "lite" / "preprocessing.json"))
    assert info["central_fraction"] is None
    lite = resnet_tf_command("evaluate", "--export", str(tmp_path / "lite"), "--config", config,
                             "--json", str(tmp_path / "l.json"))
    assert lite.returncode == 0, lite.stderr[-3000:]
    assert json.load(open(tmp_path / "l.json"))["top1"] == pytest.approx(val_accuracy, abs=1e-6)
    assert len(digits_arrays(0.2, 0)[1][1]) == json.load(open(tmp_path / "l.json"))["count"]


def test_the_multi_worker_step_scales_the_loss_under_mixed_float16(tmp_path):
    """The loop's train step under mixed_float16 (a LossScaleOptimizer) moves the weights as
    the same step in float32 does; unscaled, the update would be divided by the loss scale."""
    import tensorflow as tf

    from resnet_tf.data.datasets import make_datasets
    from resnet_tf.training.distribute import MultiWorkerLoop
    from resnet_tf.training.optimization import make_loss, make_optimizer

    folder = write_image_folder(tmp_path / "images")
    updates = {}
    for dtype in ("float32", "mixed_float16"):
        config = tiny_config(folder, dtype=dtype, optimizer="sgd", learning_rate=0.1,
                             momentum=0.0, weight_decay=0.0, batch_size=3)
        keras.utils.set_random_seed(0)
        data = make_datasets(config)
        model = build_model(config, data.num_classes)
        model.compile(optimizer=make_optimizer(config, data.steps_per_epoch),
                      loss=make_loss(config))  # as train() compiles it
        before = [np.array(v) for v in model.trainable_variables]
        loop = MultiWorkerLoop(tf.distribute.get_strategy(), model, config, data)
        images, labels = next(iter(data.train))
        loop.train_step(images, labels)
        updates[dtype] = [np.array(v) - b for v, b in zip(model.trainable_variables, before)]
    assert type(model.optimizer).__name__ == "LossScaleOptimizer"
    for a, b in zip(updates["float32"], updates["mixed_float16"]):
        scale = np.abs(a).max()
        if scale > 1e-6:
            assert np.abs(a - b).max() < 0.1 * scale


def test_the_multi_worker_loop_averages_batch_norm_statistics_only(tmp_path):
    from resnet_tf.training.distribute import batch_norm_statistics

    config = config_from_dict(dict(model="cifar_resnet_ablation", depth=8,
                                   shortcut_type="dropout", dataset="digits", image_size=16))
    model = build_model(config, num_classes=10)
    statistics = batch_norm_statistics(model)
    names = {v.path.split("/")[-1] for v in statistics}
    assert names == {"moving_mean", "moving_variance"}
    assert len(statistics) == 2 * sum(isinstance(layer, keras.layers.BatchNormalization)
                                      for layer in all_layers(model))
    assert len(model.non_trainable_variables) > len(statistics)  # the dropouts' seeds are left


def test_init_from_starts_from_another_runs_best_model(tmp_path):
    folder = write_image_folder(tmp_path / "images")
    first = str(tmp_path / "first")
    train(tiny_config(folder, epochs=2), first, verbose=0)
    from resnet_tf.training.loading import load_model_dir

    best, _, _ = load_model_dir(first, "best")
    second = tiny_config(folder, init_from=first, learning_rate=1e-9, optimizer="sgd",
                         momentum=0.0)
    train(second, str(tmp_path / "second"), verbose=0)
    tuned, _, _ = load_model_dir(str(tmp_path / "second"), "final")
    for a, b in zip(best.trainable_weights, tuned.trainable_weights):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    with pytest.raises(ValueError, match="init_from=.*does not fit"):
        train(tiny_config(folder, init_from=first, base_depth=4), str(tmp_path / "third"),
              verbose=0)


@pytest.mark.parametrize("schedule", ["constant", "cosine", "piecewise", "exponential"])
def test_a_quantization_aware_fine_tune_starts_at_a_fraction_of_the_learning_rate(schedule):
    """From trained weights, QAT trains at learning_rate x qat_learning_rate_scale (at the
    full rate one of three quickstart seeds ended 1.4 points under its float run); from
    scratch, or without QAT, the rate is the config's."""
    from resnet_tf.training.optimization import learning_rate_schedule

    def first_rate(**values):
        extra = {"boundaries_epochs": [1]} if schedule == "piecewise" else {}
        config = config_from_dict(dict(dataset="digits", learning_rate=0.002, schedule=schedule,
                                       **extra, **values))
        rate = learning_rate_schedule(config, steps_per_epoch=10)
        return float(rate(0)) if callable(rate) else rate

    assert first_rate() == pytest.approx(0.002)
    assert first_rate(quantization_aware=True) == pytest.approx(0.002)
    assert first_rate(init_from="/runs/float") == pytest.approx(0.002)
    assert first_rate(quantization_aware=True, init_from="/runs/float") == pytest.approx(0.0002)
    assert first_rate(quantization_aware=True, slim_checkpoint="/ckpt/model.ckpt",
                      qat_learning_rate_scale=0.5) == pytest.approx(0.001)
