"""resnet-tf train: model.fit from configs, resume, metrics.json, devices, precision, fine-tuning."""

import json
import os
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest

from image_data import write_image_folder
from resnet_tf.config import config_from_dict
from resnet_tf.training import ModelDir, build_model, train

ROOT = os.path.join(os.path.dirname(__file__), os.pardir)
QUICKSTART = os.path.join(ROOT, "configs", "quickstart.yaml")
TINY_MODEL = dict(model="resnet_v2", units=[1, 1], base_depth=8, include_root_block=False,
                  image_size=16, augment=False, batch_norm_decay=0.9)


def cli(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "resnet_tf.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=timeout)


def tiny_config(folder, **overrides):
    values = dict(TINY_MODEL, dataset="folder", train_data=folder, validation_split=0.25,
                  batch_size=3, epochs=1, optimizer="adam", learning_rate=1e-3)
    return config_from_dict(dict(values, **overrides))


def test_fit_writes_metrics_and_resumes(tmp_path):
    folder = write_image_folder(tmp_path / "images")
    model_dir = str(tmp_path / "run")
    metrics = train(tiny_config(folder), model_dir, verbose=0)
    for key in ("val_accuracy", "val_loss", "epochs", "replicas", "train_seconds"):
        assert metrics[key] is not None
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
    from resnet_tf.slim_reference import random_slim_values, save_slim_checkpoint
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


def test_cli_errors_are_clear(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: digits\nlearning_rat: 0.1\n")
    result = cli("train", "--config", str(bad), "--model-dir", str(tmp_path / "run"))
    assert result.returncode == 2 and "unknown key(s) ['learning_rat']" in result.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    cfg = tmp_path / "folder.yaml"
    cfg.write_text(f"dataset: folder\ntrain_data: {empty}\n")
    result = cli("train", "--config", str(cfg), "--model-dir", str(tmp_path / "run"))
    assert result.returncode == 2 and "has no class sub-folders" in result.stderr
    result = cli("train", "--config", QUICKSTART, "--model-dir", str(tmp_path / "run"),
                 "--cpu-devices", "2")
    assert result.returncode == 2 and "--cpu-devices" in result.stderr


@pytest.mark.slow
def test_readme_quickstart_reaches_90_percent_and_resumes_one_epoch(tmp_path):
    model_dir = str(tmp_path / "quickstart")
    result = cli("train", "--config", QUICKSTART, "--model-dir", model_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(model_dir, "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["val_accuracy"] >= 0.90 and metrics["epochs"] == 8
    result = cli("train", "--config", QUICKSTART, "--model-dir", model_dir, "--epochs", "9")
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "Epoch 9/9" in output and "Epoch 8/9" not in output and "Epoch 1/9" not in output
    with open(os.path.join(model_dir, "metrics.json")) as f:
        resumed = json.load(f)
    assert resumed["epochs"] == 9 and resumed["train_seconds"] > metrics["train_seconds"]


@pytest.mark.slow
def test_mirrored_strategy_on_two_cpu_devices(tmp_path):
    result = cli("train", "--config", QUICKSTART, "--model-dir", str(tmp_path / "run"),
                 "--epochs", "1", "--distribute", "mirrored", "--cpu-devices", "2")
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
            [sys.executable, "-m", "resnet_tf.cli", "train", "--config", QUICKSTART,
             "--model-dir", model_dir, "--epochs", str(epochs), "--distribute", "multiworker"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs[0][-3000:] + outputs[1][-3000:]
    return outputs


@pytest.mark.slow
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
    from resnet_tf.config import load_config

    configs = sorted(f for f in os.listdir(os.path.join(ROOT, "configs"))
                     if f.startswith("cifar10_ablation_"))
    assert len(configs) == 10
    for name in configs:
        config = load_config(os.path.join(ROOT, "configs", name), depth=8)
        model = build_model(config, num_classes=10)
        units = [layer for layer in model.layers if hasattr(layer, "shortcut_type")]
        assert {(u.shortcut_type, u.order) for u in units} == {
            (config.shortcut_type, config.order)}, name
